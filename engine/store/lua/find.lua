-- One profile found by visitor or user id, in one round trip (engine/store/profiles.py `find`;
-- the pipeline of three reads it replaces, then a second read for an alias's profile, cost the
-- API more client work and, for an alias, a round trip more). KEYS[1] the id's alias key, [2]
-- its visitor profile, [3] its user profile; ARGV[1] the profile key format
-- (engine/store/keys.py `template`, `%s` = profile id: the alias's profile is only known
-- here). Returns {profile id or 1 (the visitor's) or 2 (the user's), blob}, or false: the
-- aliased profile when both the alias and that profile exist, else the visitor's own, else the
-- user's (the order of `find_many`).
-- (On a Redis Cluster the store does not use this script: the keys span many slots.)
local function blob(key)
  local b = redis.call('GET', key)
  if b and #b > 0 then return b end
  return nil
end
local a = redis.call('GET', KEYS[1])
if a and #a > 0 then
  local b = blob(string.format(ARGV[1], a))
  if b then return {a, b} end
end
local v = blob(KEYS[2])
if v then return {1, v} end
local u = blob(KEYS[3])
if u then return {2, u} end
return false
