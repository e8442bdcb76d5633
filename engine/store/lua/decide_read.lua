-- Everything one decision reads, in one round trip (engine/store/decide_read.py).
-- KEYS[1] the visitor's alias key
-- ARGV[1] the visitor's own profile id   [2] the user's profile id ('' = anonymous call)
--      [3] profile key format, [4] campaign state key format, [5] campaign session key format
--          (from engine/store/keys.py, `%s` = profile id)
--      [6..] campaign stats keys whose counters the caller wants refreshed
-- Returns {profile id read, profile blob or false, state hash (flat), session hash (flat),
--          {stats hash (flat), ...}}
local pid = ARGV[2]
local blob = false
if pid ~= '' then
  blob = redis.call('GET', string.format(ARGV[3], pid))
end
if not blob then
  -- anonymous, or a user not merged yet: the visitor's current profile (alias, else own)
  local p = redis.call('GET', KEYS[1]) or ARGV[1]
  local b = redis.call('GET', string.format(ARGV[3], p))
  if b or pid == '' then pid, blob = p, b end
end
local state = redis.call('HGETALL', string.format(ARGV[4], pid))
local session = redis.call('HGETALL', string.format(ARGV[5], pid))
local stats = {}
for i = 6, #ARGV do stats[#stats + 1] = redis.call('HGETALL', ARGV[i]) end
return {pid, blob, state, session, stats}
