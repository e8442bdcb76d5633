-- Many catalog items in one command (a pipeline of HGETALLs costs the client ~20 us per
-- command). KEYS = the items' hashes (engine.store.keys.catalog_item). Returns each hash flat.
-- The keys are global catalog keys; on a Redis Cluster, group them by slot before calling.
local out = {}
for i, k in ipairs(KEYS) do out[i] = redis.call('HGETALL', k) end
return out
