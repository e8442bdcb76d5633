-- The learner's commit, atomic and fenced by its lease (streams/learner.py).
-- KEYS: lease, versions, snapshot, stats, drift events, then n_models model keys, then n_logs
--       log keys
-- ARGV: token, n_models, n_logs, with_snapshot ("1"/"0"), snapshot bytes, log max,
--       n_stats, now (epoch ms), drift events kept, then n_stats (name, value) pairs, then
--       n_models (name, bytes) pairs, then per log: n_rows followed by its rows
-- Publishes every model (bytes + a bumped version), appends each log's rows (trimmed to the
-- newest `log max`), and, with a snapshot, stores the learner's state and offsets with them:
-- what a restarted learner resumes from is exactly what was published and logged.
-- A drift counter (a stat named "drift:<model>") only rises: when it passes the highest value
-- committed so far, one event {at, model, detections} is appended to the drift events (capped),
-- so a learner restarted from an older snapshot that detects the same drift again adds none.
-- Returns the new versions as a flat list (name, version), or false when the lease is not ours.
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return false
end
local n_models = tonumber(ARGV[2])
local n_logs = tonumber(ARGV[3])
local log_max = tonumber(ARGV[6])
local n_stats = tonumber(ARGV[7])
local now = tonumber(ARGV[8])
local drift_keep = tonumber(ARGV[9])
local a = 10
for _ = 1, n_stats do
  local name, value = ARGV[a], ARGV[a + 1]
  if string.sub(name, 1, 6) == 'drift:' then
    local had = redis.call('HGET', KEYS[4], name)
    local old = tonumber(had or '0')
    if not had or tonumber(value) > old then
      redis.call('HSET', KEYS[4], name, value)
    end
    if tonumber(value) > old then
      redis.call('RPUSH', KEYS[5], cjson.encode({at = now, model = string.sub(name, 7),
                                                 detections = tonumber(value)}))
      redis.call('LTRIM', KEYS[5], -drift_keep, -1)
    end
  else
    redis.call('HSET', KEYS[4], name, value)
  end
  a = a + 2
end
local out = {}
for i = 1, n_models do
  local name = ARGV[a]
  redis.call('SET', KEYS[5 + i], ARGV[a + 1])
  local v = redis.call('HINCRBY', KEYS[2], name, 1)
  out[#out + 1] = name
  out[#out + 1] = v
  a = a + 2
end
for i = 1, n_logs do
  local key = KEYS[5 + n_models + i]
  local n = tonumber(ARGV[a])
  a = a + 1
  for j = 0, n - 1, 500 do
    local last = math.min(n - 1, j + 499)
    redis.call('RPUSH', key, unpack(ARGV, a + j, a + last))
  end
  a = a + n
  redis.call('LTRIM', key, -log_max, -1)
end
if ARGV[4] == '1' then
  redis.call('SET', KEYS[3], ARGV[5])
end
return out
