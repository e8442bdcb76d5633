-- One round trip for the tables a recommendation reads (engine/store/reco_read.py).
-- KEYS = n neighbour tables, then ranked (trending) tables, then the S popularity tables
-- (keys.popularity(0..S-1)), then m session item sets (keys.session_items), then (optional)
-- the visitor's CF vector; ARGV = n, rows per neighbour table, rows per ranked table, number
-- of tables, S, m. Returns each table's flat [member, score, ...], then the distinct neighbour
-- ids, their popularity counts, the CF vector (or false) and each session's items oldest
-- first (an empty list for a session gone). A neighbour's popularity is in the table of its
-- shard: CRC-32 of its id modulo S (engine/store/keys.py `shard`).
-- (On a Redis Cluster the reader does not use this script: its keys span many slots.)
local n, kn, kt, t, S, m = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]),
  tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local T = {}
for i = 0, 15 do
  local c = i
  for _ = 1, 4 do
    if bit.band(c, 1) == 1 then c = bit.bxor(bit.rshift(c, 1), 0xEDB88320) else c = bit.rshift(c, 1) end
  end
  T[i] = c
end
local function shard(s)
  local c = bit.bnot(0)
  for i = 1, #s do
    c = bit.bxor(c, string.byte(s, i))
    c = bit.bxor(bit.rshift(c, 4), T[bit.band(c, 15)])
    c = bit.bxor(bit.rshift(c, 4), T[bit.band(c, 15)])
  end
  c = bit.bnot(c)
  if c < 0 then c = c + 4294967296 end
  return c % S
end
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
for j = 1, #ids do pops[j] = redis.call('ZSCORE', KEYS[t + 1 + shard(ids[j])], ids[j]) end
out[t + 1] = ids
out[t + 2] = pops
out[t + 3] = KEYS[t + S + m + 1] and redis.call('GET', KEYS[t + S + m + 1]) or false
local sessions = {}
for j = 1, m do sessions[j] = redis.call('ZRANGE', KEYS[t + S + j], 0, -1) end
out[t + 4] = sessions
return out
