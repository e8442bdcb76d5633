-- The items of many sessions in one round trip (engine/store/reco_read.py `sessions`).
-- KEYS = the sessions' item sets (keys.session_items). Returns, per key, its members oldest
-- first (an empty list for a session gone). (On a Redis Cluster the reader uses a pipeline.)
local out = {}
for i = 1, #KEYS do out[i] = redis.call('ZRANGE', KEYS[i], 0, -1) end
return out
