-- Commit (part of) one batch of the stream, all or nothing (engine/store/profiles.py).
-- On one server a batch is one call; on a Redis Cluster one call per slot, every key of a call
-- in that slot. Every key the call touches is in KEYS; ARGV[1] is one msgpack array
--   { fences, writes, tables }
-- whose entries name keys by their index in KEYS:
--   fences: { {fence, partition, epoch, expected offset, new offset, set applied (0|1)}, ... }
--     the fence hash of a shard (keys.fence): the partition's owner epoch `e<p>` must be
--     `epoch` (else an older owner is writing: refused) and its offset `o<p>` must be
--     `expected` ('' = none yet), else the caller's marks are stale; then `o<p>` (and `a<p>`)
--     become the new offset (read with one HMGET and written with one HSET per fence hash)
--   writes: { {profile, expected rev, new value, ttl ms, tombstone, deletes, aliases, ops}, ... }
--     compare-and-set on the profile's 4-byte revision ('' = must not exist); refused while
--     the tombstone key exists (index 0: no profile, no tombstone: the second step of an
--     identity merge on a cluster, which only deletes and sets aliases); deletes = { {profile, expected rev}, ... } (anonymous profiles
--     merged into it), aliases = { {alias key, profile id}, ... }, ops = { {command, key, args...}, ... }
--     on the profile's own keys; an `LTRIM key 0 stop` whose key's previous op in the write
--     was an LPUSH is skipped when the push's reply (the list's length) is at most stop + 1
--   tables: { {key, kind, cap or keep, ttl ms, field, value, field, value, ...}, ... }
--     kind 'm': ZADD GT value field (a member's score only rises), trimmed as 'z';
--     kind 'z': ZINCRBY value field; then with a cap > 0 the set's size is checked: above
--       the cap it is trimmed to the cap (lowest first); 'h': HINCRBY; 's': HSET, and the
--       expiry is not set while the hash holds the field `keep` (a curated catalog record)
--     a ttl > 0 sets the key's expiry. The caller sends a cap and a ttl only when that step is
--     due (engine/store/writes.py `Upkeep`: not on every batch), 0 otherwise
-- Returns {1, sizes} when written (sizes: each checked set's size after its trim, in order);
-- {0, {conflicting write indices}, {erased write indices}} when a revision did not match or a
-- tombstone exists; {-1, fence index} when fenced. In both
-- refusals nothing at all is written.
local ALLOWED = {ZINCRBY=1, ZADD=1, ZREM=1, ZREMRANGEBYRANK=1, HINCRBY=1, HINCRBYFLOAT=1,
  HSET=1, HDEL=1, INCRBY=1, SADD=1, SREM=1, PEXPIRE=1, DEL=1, SET=1, LPUSH=1, LTRIM=1}
local K = KEYS
local plan = cmsgpack.unpack(ARGV[1])
local fences, writes, tables = plan[1], plan[2], plan[3]

-- a variadic command over many arguments, in slices (Lua's unpack takes a few thousand at most);
-- returns the last slice's reply
local function chunked(cmd, key, args, from, step)
  local reply
  for i = from, #args, step do
    local slice = {}
    for j = i, math.min(#args, i + step - 1) do slice[#slice + 1] = args[j] end
    reply = redis.call(cmd, key, unpack(slice))
  end
  return reply
end

-- the 4-byte revision a profile blob starts with ('' when absent), without reading the blob
local function rev(key)
  return redis.call('GETRANGE', key, 0, 3)
end

-- the fences by fence hash, in first-seen order: one HMGET and one HSET per hash, not one
-- call per field (a call fences every shard it writes for every partition of the batch: 64
-- entries on 16 shards and 4 partitions, whatever the number of events)
local hashes, by_hash = {}, {}
for i = 1, #fences do
  local idx = fences[i][1]
  local list = by_hash[idx]
  if not list then
    list = {}
    by_hash[idx] = list
    hashes[#hashes + 1] = idx
  end
  list[#list + 1] = i
end

-- 1. check everything; write nothing unless all holds
for h = 1, #hashes do
  local list = by_hash[hashes[h]]
  local fields = {}
  for j = 1, #list do
    local p = fences[list[j]][2]
    fields[2 * j - 1] = 'e' .. p
    fields[2 * j] = 'o' .. p
  end
  local got = redis.call('HMGET', K[hashes[h]], unpack(fields))
  for j = 1, #list do
    local i = list[j]
    local f = fences[i]
    if (got[2 * j - 1] or '') ~= f[3] or (got[2 * j] or '') ~= f[4] then return {-1, i} end
  end
end
local conflicts, erased = {}, {}
for i = 1, #writes do
  local w = writes[i]
  if w[1] > 0 and rev(K[w[1]]) ~= w[2] then
    conflicts[#conflicts + 1] = i
  elseif w[5] > 0 and redis.call('EXISTS', K[w[5]]) == 1 then
    erased[#erased + 1] = i
  else
    local dels = w[6]
    for j = 1, #dels do
      if rev(K[dels[j][1]]) ~= dels[j][2] then conflicts[#conflicts + 1] = i; break end
    end
  end
  local ops = w[8]
  for j = 1, #ops do
    if not ALLOWED[ops[j][1]] then
      return redis.error_reply('op not allowed: ' .. tostring(ops[j][1]))
    end
  end
end
if #conflicts > 0 or #erased > 0 then return {0, conflicts, erased} end

-- 2. the shared tables
local sizes = {}
for i = 1, #tables do
  local t = tables[i]
  local key, kind, ttl = K[t[1]], t[2], tonumber(t[4])
  if kind == 'z' or kind == 'm' then
    if kind == 'z' then
      for j = 5, #t, 2 do redis.call('ZINCRBY', key, t[j + 1], t[j]) end
    else
      for j = 5, #t, 2 do redis.call('ZADD', key, 'GT', t[j + 1], t[j]) end
    end
    local cap = tonumber(t[3])
    if cap > 0 then
      local n = redis.call('ZCARD', key)
      if n > cap then
        redis.call('ZREMRANGEBYRANK', key, 0, n - cap - 1)
        n = cap
      end
      sizes[#sizes + 1] = n
    end
    if ttl > 0 then redis.call('PEXPIRE', key, ttl) end
  elseif kind == 'h' then
    for j = 5, #t, 2 do redis.call('HINCRBY', key, t[j], t[j + 1]) end
    if ttl > 0 then redis.call('PEXPIRE', key, ttl) end
  elseif kind == 's' then
    chunked('HSET', key, t, 5, 1000)
    if ttl > 0 and (t[3] == '' or redis.call('HEXISTS', key, t[3]) == 0) then
      redis.call('PEXPIRE', key, ttl)
    end
  else
    return redis.error_reply('unknown table kind: ' .. tostring(kind))
  end
end

-- 3. the profiles and their own keys
for i = 1, #writes do
  local w = writes[i]
  if w[1] > 0 then redis.call('SET', K[w[1]], w[3], 'PX', w[4]) end
  local dels, aliases, ops = w[6], w[7], w[8]
  for j = 1, #dels do redis.call('DEL', K[dels[j][1]]) end
  for j = 1, #aliases do redis.call('SET', K[aliases[j][1]], aliases[j][2], 'PX', w[4]) end
  local lengths = {}  -- list key -> its length after this write's last LPUSH
  for j = 1, #ops do
    local op = ops[j]
    local n = lengths[op[2]]
    lengths[op[2]] = nil
    if op[1] == 'LPUSH' then
      lengths[op[2]] = chunked(op[1], K[op[2]], op, 3, 1000)
    elseif op[1] == 'HSET' then
      chunked(op[1], K[op[2]], op, 3, 1000)
    elseif op[1] == 'LTRIM' and n and tonumber(op[3]) == 0 and n <= tonumber(op[4]) + 1 then
      -- LTRIM 0 stop of a list no longer than stop + 1 (as the push just said) keeps it whole
    else
      local args = {}
      for k = 3, #op do args[k - 2] = op[k] end
      redis.call(op[1], K[op[2]], unpack(args))
    end
  end
end

-- 4. the offset marks, one HSET per fence hash
for h = 1, #hashes do
  local list = by_hash[hashes[h]]
  local fields = {}
  for j = 1, #list do
    local f = fences[list[j]]
    fields[#fields + 1] = 'o' .. f[2]
    fields[#fields + 1] = f[5]
    if f[6] == 1 then
      fields[#fields + 1] = 'a' .. f[2]
      fields[#fields + 1] = f[5]
    end
  end
  redis.call('HSET', K[hashes[h]], unpack(fields))
end
return {1, sizes}
