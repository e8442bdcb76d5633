-- What the stream reads for one batch besides the aliases (engine/store/profiles.py), in one
-- call: KEYS = n profiles, then their n tombstones, then m per-visitor hashes; ARGV = n, m.
-- Returns {profile blobs (false when absent), tombstone flags (0|1), hashes (flat)}.
local n, m = tonumber(ARGV[1]), tonumber(ARGV[2])
local blobs, tombs, hashes = {}, {}, {}
for i = 1, n do
  blobs[i] = redis.call('GET', KEYS[i])
  tombs[i] = redis.call('EXISTS', KEYS[n + i])
end
for i = 1, m do hashes[i] = redis.call('HGETALL', KEYS[2 * n + i]) end
return {blobs, tombs, hashes}
