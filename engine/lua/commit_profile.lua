-- Commit one planned profile write atomically, with compare-and-set.
-- KEYS[1]            the profile to write
-- KEYS[2..1+D]       anonymous profiles merged into it (deleted), D = ARGV[4]
-- KEYS[2+D..]        aliases of visitors now linked to it (set to ARGV values)
-- ARGV[1]            expected 4-byte revision of KEYS[1] ('' = must not exist)
-- ARGV[2]            new value (next revision .. snapshot)
-- ARGV[3]            time to live, ms
-- ARGV[4]            D
-- ARGV[5..4+D]       expected revisions of the merged profiles
-- ARGV[5+D..]        alias targets
-- Returns 1 when written, 0 when a revision did not match (nothing is changed then).
local function rev(key)
  local cur = redis.call('GET', key)
  if cur then return string.sub(cur, 1, 4) end
  return ''
end
if rev(KEYS[1]) ~= ARGV[1] then return 0 end
local d = tonumber(ARGV[4])
for i = 1, d do
  if rev(KEYS[1 + i]) ~= ARGV[4 + i] then return 0 end
end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
for i = 1, d do
  redis.call('DEL', KEYS[1 + i])
end
for i = 2 + d, #KEYS do
  redis.call('SET', KEYS[i], ARGV[3 + i], 'PX', ARGV[3])
end
return 1
