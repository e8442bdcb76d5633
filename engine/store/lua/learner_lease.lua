-- The learner's lease: take it when free, keep it when it is ours.
-- KEYS[1] lease   ARGV[1] token   ARGV[2] TTL in ms
-- Returns 1 when the caller holds the lease (for the next TTL), else 0.
local holder = redis.call('GET', KEYS[1])
if holder == false then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
if holder == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
