-- The served session-kNN in one call with a bounded cost (engine/store/reco_read.py
-- `session_knn`): the same sampling and STAN scores as models/reco/sessionknn.py (`neighbours_of`
-- with `sampling="recent"`, then `score_sessions`), on the tables streams/hooks/reco.py keeps,
-- so the request reads ~n rows instead of the sampled sessions' items.
-- KEYS = the session index (keys.session_index) of each item of the current session, oldest
-- first. ARGV = the current session's name ('' for none: it is never its own neighbour),
-- sample size, rows read per index, k (neighbours kept), lambda_pos, lambda_time_s,
-- lambda_neigh, n, now (ms), S (keys.SHARDS), then the current items (as many as KEYS).
-- Reads at most #KEYS x per_item index rows and `sample` sessions (each <= max_session_items).
-- Returns flat [item, score (%.17g), via, ...] of every item scored at least the n-th best
-- score (ties at the edge included, unordered): the caller breaks ties by item id as
-- models/reco/base.py `top_n` does, since Lua's string order follows the server's locale.
-- (On a Redis Cluster the reader does not use this script: a session's key has its own slot.)
local exclude = ARGV[1]
local sample, per_item, k = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local lpos, ltime, lneigh = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
local n, now, S = tonumber(ARGV[8]), tonumber(ARGV[9]), tonumber(ARGV[10])
local size = #KEYS
if size == 0 then return {} end

-- A session's shard, as keys.session_shard: its name's first 8 hex digits modulo S (names are
-- hashes); any other name, CRC-32 modulo S (keys.shard).
local function crc_shard(s)
  local T = {}
  for i = 0, 15 do
    local c = i
    for _ = 1, 4 do
      if bit.band(c, 1) == 1 then c = bit.bxor(bit.rshift(c, 1), 0xEDB88320) else c = bit.rshift(c, 1) end
    end
    T[i] = c
  end
  local c = bit.bnot(0)
  for i = 1, #s do
    c = bit.bxor(c, string.byte(s, i))
    c = bit.bxor(bit.rshift(c, 4), T[bit.band(c, 15)])
    c = bit.bxor(bit.rshift(c, 4), T[bit.band(c, 15)])
  end
  c = bit.bnot(c)
  if c < 0 then c = c + 4294967296 end
  return c % S
end
local function shard(s)
  if string.find(s, '^%x%x%x%x%x%x%x%x') then return tonumber(string.sub(s, 1, 8), 16) % S end
  return crc_shard(s)
end

-- the current session: position (1 = oldest) and weight of each item
local pos, w1 = {}, {}
for p = 1, size do
  local iid = ARGV[10 + p]
  pos[iid] = p
  w1[iid] = lpos > 0 and math.exp((p - size) / lpos) or 1.0
end

-- sampling ("recent"): the `sample` most recent sessions of the items' indexes
local seen, uids = {}, {}
for i = 1, size do
  local rows = redis.call('ZREVRANGE', KEYS[i], 0, per_item - 1, 'WITHSCORES')
  for j = 1, #rows, 2 do
    local u, ts = rows[j], math.floor(tonumber(rows[j + 1]))
    if u ~= exclude then
      local old = seen[u]
      if old == nil then uids[#uids + 1] = u; seen[u] = ts
      elseif ts > old then seen[u] = ts end
    end
  end
end
table.sort(uids, function(a, b)  -- session names are hex digits: byte order in any locale
  local ta, tb = seen[a], seen[b]
  if ta ~= tb then return ta > tb end
  return a < b
end)

-- similarity of each sampled session (STAN)
local scored = {}
for o = 1, math.min(sample, #uids) do
  local u = uids[o]
  local items = redis.call('ZRANGE', 'kss:{k' .. shard(u) .. '}:' .. u, 0, -1)
  local m = #items
  if m > 0 then
    local shared, anchor, best_pos = 0.0, -1, 0
    for idx = 1, m do
      local p = pos[items[idx]]
      if p then
        shared = shared + w1[items[idx]]
        if p > best_pos then best_pos, anchor = p, idx end
      end
    end
    if anchor > 0 then
      local sim = shared / math.sqrt(size * m)
      if ltime > 0 then sim = sim * math.exp(-math.max(0, now - seen[u]) / (ltime * 1000.0)) end
      if sim > 0 then scored[#scored + 1] = {sim, o, items, anchor} end
    end
  end
end
table.sort(scored, function(a, b)
  if a[1] ~= b[1] then return a[1] > b[1] end
  return a[2] < b[2]
end)

-- the items of the k most similar, each scored by the similarity and its distance to the anchor
local decay = {}  -- by distance to the anchor: the same exp() of the same operands as Python
local function far(d)
  local e = decay[d]
  if e == nil then e = math.exp(-d / lneigh); decay[d] = e end
  return e
end
local scores, best, via, order = {}, {}, {}, {}
for r = 1, math.min(k, #scored) do
  local sim, items, anchor = scored[r][1], scored[r][3], scored[r][4]
  local from = items[anchor]
  for idx = 1, #items do
    local w = sim
    if lneigh > 0 then w = w * far(math.abs(idx - anchor)) end
    if w > 0 then
      local iid = items[idx]
      local s = scores[iid]
      if s == nil then order[#order + 1] = iid; s = 0.0 end
      scores[iid] = s + w
      if w > (best[iid] or 0.0) then best[iid], via[iid] = w, from end
    end
  end
end

local edge = -1.0
if #order > n then
  local vals = {}
  for i = 1, #order do vals[i] = scores[order[i]] end
  table.sort(vals, function(a, b) return a > b end)
  edge = vals[n]
end
local out = {}
for i = 1, #order do
  local iid = order[i]
  if scores[iid] >= edge then
    out[#out + 1] = iid
    out[#out + 1] = string.format('%.17g', scores[iid])
    out[#out + 1] = via[iid]
  end
end
return out
