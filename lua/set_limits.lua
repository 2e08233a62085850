-- set_limits: per-entity cap overrides, effective on the next call.
--
-- KEYS[1] - the entity's overrides (K_LIMITS)
-- ARGV[1] - daily: LIMIT_KEEP keeps it, LIMIT_DEFAULT clears the override
--           (back to the configured default), NO_CAP = no cap, else the cap
--           in micro-units
-- ARGV[2] - monthly: the same
-- return {daily, monthly} overrides now in force, false where there is none

local key = KEYS[1]
-- (in the stored override, an empty part means "the default")
local daily, monthly = caps(redis.call('GET', key), '', '')
local now = {daily, monthly}
for i = 1, 2 do
  local change = ARGV[i]
  if change == LIMIT_DEFAULT then
    now[i] = ''
  elseif change ~= LIMIT_KEEP then
    now[i] = change
  end
end
if now[1] == '' and now[2] == '' then
  redis.call('DEL', key)  -- no override left: the entity keeps no key
else
  redis.call('SET', key, now[1] .. '|' .. now[2])
end
return {now[1] ~= '' and now[1], now[2] ~= '' and now[2]}
