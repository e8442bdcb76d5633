-- A worker takes partitions (engine/store/profiles.py `claim`): in each fence hash given
-- (KEYS: a shard's `keys.fence`), raise every partition's owner epoch `e<p>` to the new epoch,
-- so that a commit of the previous owner is refused from now on, and read the offsets.
-- ARGV[1] = msgpack { {partition, epoch}, ... }: epoch 0 = one more than the highest epoch the
-- given hashes hold (on one server every shard is given at once; a cluster's caller reads the
-- epochs first and passes the new one to each shard).
-- Returns per partition {epoch, applied offset (a<p>, '' = none), {o<p> per key, '' = none}}.
local parts = cmsgpack.unpack(ARGV[1])
local out = {}
for i = 1, #parts do
  local p, epoch = parts[i][1], tonumber(parts[i][2])
  if epoch == 0 then
    for j = 1, #KEYS do
      local e = tonumber(redis.call('HGET', KEYS[j], 'e' .. p) or '0')
      if e > epoch then epoch = e end
    end
    epoch = epoch + 1
  end
  local applied, offsets = '', {}
  for j = 1, #KEYS do
    local cur = tonumber(redis.call('HGET', KEYS[j], 'e' .. p) or '0')
    if cur < epoch then redis.call('HSET', KEYS[j], 'e' .. p, tostring(epoch)) end
    offsets[j] = redis.call('HGET', KEYS[j], 'o' .. p) or ''
    local a = redis.call('HGET', KEYS[j], 'a' .. p)
    if a then applied = a end
  end
  out[i] = {tostring(epoch), applied, offsets}
end
return out
