-- set_limits: per-entity cap overrides, effective on the next call.
--
-- KEYS[1] - the entity hash, "<base>e:<scope>:<id>"
-- ARGV[1] - daily: "" keeps it, "-" clears the override (back to the
--           configured default), -1 = no cap, else the cap in micro-units
-- ARGV[2] - monthly: the same
-- return {daily, monthly} overrides now in force, false where there is none

local ekey = KEYS[1]
local changes = {{'dl', ARGV[1]}, {'ml', ARGV[2]}}

for _, c in ipairs(changes) do
  if c[2] == '-' then
    redis.call('HDEL', ekey, c[1])
  elseif c[2] ~= '' then
    redis.call('HSET', ekey, c[1], c[2])
  end
end
return redis.call('HMGET', ekey, 'dl', 'ml')
