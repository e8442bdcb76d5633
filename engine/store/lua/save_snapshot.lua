-- Save one partition's model snapshot under the partition's fence (engine/store/snapshots.py):
-- KEYS = the fence hash of the partition's home shard, the snapshot key, the item-vector hash
-- (all in that shard's slot); ARGV = partition, the epoch the saver holds ('' = unfenced),
-- the snapshot, then the item ids to drop from the hash. A saver whose epoch is not the
-- partition's current one (it lost the partition) changes nothing. Returns 1 when saved.
local p, epoch = ARGV[1], ARGV[2]
if epoch ~= '' and (redis.call('HGET', KEYS[1], 'e' .. p) or '') ~= epoch then return 0 end
redis.call('SET', KEYS[2], ARGV[3])
for i = 4, #ARGV, 1000 do
  local last = math.min(#ARGV, i + 999)
  local batch = {}
  for j = i, last do batch[#batch + 1] = ARGV[j] end
  redis.call('HDEL', KEYS[3], unpack(batch))
end
return 1
