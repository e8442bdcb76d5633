-- Commit one planned profile write atomically, with compare-and-set.
-- KEYS: the profile; D anonymous profiles merged into it (deleted); A aliases of visitors
--       now linked to it (the ops' keys travel inside the ops: see README, Redis Cluster)
-- ARGV: [1] expected 4-byte revision of KEYS[1] ('' = must not exist)
--       [2] new value (next revision .. snapshot)   [3] time to live, ms
--       [4] D  [5] A  [6] N
--       then D expected revisions, A alias targets, and (when N > 0) one msgpack array of the
--       N ops, each [command, key, args...] (one argument instead of hundreds: packing
--       arguments is what a client pays for most)
-- Returns 1 when written, 0 when a revision did not match (nothing is changed then).
local ALLOWED = {ZINCRBY=1, ZADD=1, ZREM=1, ZREMRANGEBYRANK=1, HINCRBY=1, HINCRBYFLOAT=1,
  HSET=1, HDEL=1, INCRBY=1, PFADD=1, SADD=1, SREM=1, PEXPIRE=1, DEL=1, SET=1, CAMPAIGN=1, LPUSH=1, LTRIM=1}
-- CAMPAIGN: one reaction to a campaign, applied to the visitor's campaign state hash (the op's
-- key) and the campaign's stats hash; the server-side twin of engine/logic/decisions/caps.py.
-- args: kind (decision|impression|click|dismiss|conversion), campaign, arm, event ms,
--       day (campaign time zone), goal window ms, stats key, session key, session ttl ms,
--       state ttl ms, event id (unused here: it keeps the ops of two events distinct)
local function campaign(kc, a)
  local kind, c, arm, ts, day = a[1], a[2], a[3], tonumber(a[4]), a[5]
  local win, kst, kss, sttl, cttl = tonumber(a[6]), a[7], a[8], a[9], a[10]
  local stat, stat_arm = nil, redis.call('HGET', kc, c .. ':arm')
  if kind == 'decision' then
    if not stat_arm then
      redis.call('HSET', kc, c .. ':arm', arm, c .. ':at', a[4])
      stat, stat_arm = 'assigned', arm
    end
  elseif kind == 'conversion' then
    local at = tonumber(redis.call('HGET', kc, c .. ':at'))
    if stat_arm and at and redis.call('HEXISTS', kc, c .. ':converted') == 0
        and ts >= at and ts - at <= win then
      redis.call('HSET', kc, c .. ':converted', '1')
      stat = 'conversions'
    end
  else
    stat_arm = stat_arm or arm
    if kind == 'impression' then
      if redis.call('HGET', kc, c .. ':day') == day then
        redis.call('HINCRBY', kc, c .. ':today', 1)
      else
        redis.call('HSET', kc, c .. ':day', day, c .. ':today', '1')
      end
      redis.call('HINCRBY', kss, c, 1)
      redis.call('PEXPIRE', kss, sttl)
      stat = 'impressions'
    elseif kind == 'click' then
      redis.call('HSET', kc, c .. ':clicked', '1')
      stat = 'clicks'
    elseif kind == 'dismiss' then
      redis.call('HSET', kc, c .. ':dismissed', '1')
      stat = 'dismissals'
    end
  end
  if stat then redis.call('HINCRBY', kst, stat_arm .. ':' .. stat, 1) end
  if redis.call('EXISTS', kc) == 1 then redis.call('PEXPIRE', kc, cttl) end
end
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
-- every op is checked before anything is written: a bad op changes nothing
local ops = {}
if n > 0 then
  ops = cmsgpack.unpack(ARGV[7 + d + a])
  for j = 1, n do
    if not ALLOWED[ops[j][1]] then
      return redis.error_reply('op not allowed: ' .. tostring(ops[j][1]))
    end
  end
end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
for i = 1, d do
  redis.call('DEL', KEYS[1 + i])
end
for j = 1, a do
  redis.call('SET', KEYS[1 + d + j], ARGV[6 + d + j], 'PX', ARGV[3])
end
for j = 1, n do
  local op = ops[j]
  local cmd, key = op[1], op[2]
  local args = {}
  for k = 3, #op do args[k - 2] = op[k] end
  if cmd == 'CAMPAIGN' then
    campaign(key, args)
  else
    redis.call(cmd, key, unpack(args))
  end
end
return 1
