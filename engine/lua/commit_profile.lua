-- Commit one planned profile write atomically, with compare-and-set.
-- KEYS: the profile; D anonymous profiles merged into it (deleted); A aliases of visitors
--       now linked to it; N keys of derived-state ops (one per op)
-- ARGV: [1] expected 4-byte revision of KEYS[1] ('' = must not exist)
--       [2] new value (next revision .. snapshot)   [3] time to live, ms
--       [4] D  [5] A  [6] N
--       then D expected revisions, A alias targets, and per op: command, nargs, args...
-- Returns 1 when written, 0 when a revision did not match (nothing is changed then).
local ALLOWED = {ZINCRBY=1, ZADD=1, ZREM=1, ZREMRANGEBYRANK=1, HINCRBY=1, HINCRBYFLOAT=1,
  HSET=1, HDEL=1, INCRBY=1, PFADD=1, SADD=1, SREM=1, PEXPIRE=1, DEL=1, SET=1}
local function rev(key)
  local cur = redis.call('GET', key)
  if cur then return string.sub(cur, 1, 4) end
  return ''
end
local d, a, n = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
if rev(KEYS[1]) ~= ARGV[1] then return 0 end
for i = 1, d do
  if rev(KEYS[1 + i]) ~= ARGV[6 + i] then return 0 end
end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
for i = 1, d do
  redis.call('DEL', KEYS[1 + i])
end
for j = 1, a do
  redis.call('SET', KEYS[1 + d + j], ARGV[6 + d + j], 'PX', ARGV[3])
end
local argi = 7 + d + a
for j = 1, n do
  local cmd = ARGV[argi]
  local nargs = tonumber(ARGV[argi + 1])
  if not ALLOWED[cmd] then return redis.error_reply('op not allowed: ' .. tostring(cmd)) end
  local args = {}
  for k = 1, nargs do args[k] = ARGV[argi + 1 + k] end
  redis.call(cmd, KEYS[1 + d + a + j], unpack(args))
  argi = argi + 2 + nargs
end
return 1
