-- One round trip for the tables a recommendation reads (engine/store/reco_read.py).
-- KEYS = n neighbour tables, then ranked (trending) tables, then the popularity hash, then
-- (optional) the visitor's CF vector; ARGV = n, rows per neighbour table, rows per ranked
-- table, number of tables. Returns each table's flat [member, score, ...], then the distinct
-- neighbour ids, their popularity counts and the CF vector (or false).
-- (Global keys: on a Redis Cluster, split by slot.)
local n, kn, kt, t = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local out, seen, ids = {}, {}, {}
for i = 1, t do
  local rows = redis.call('ZREVRANGE', KEYS[i], 0, (i <= n and kn or kt) - 1, 'WITHSCORES')
  out[i] = rows
  if i <= n then
    for j = 1, #rows, 2 do
      local m = rows[j]
      if not seen[m] then seen[m] = true; ids[#ids + 1] = m end
    end
  end
end
local pops = {}
if #ids > 0 then pops = redis.call('HMGET', KEYS[t + 1], unpack(ids)) end
out[t + 1] = ids
out[t + 2] = pops
out[t + 3] = KEYS[t + 2] and redis.call('GET', KEYS[t + 2]) or false
return out
