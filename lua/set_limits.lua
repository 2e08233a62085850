-- set_limits: per-entity cap overrides, effective on the next call.
--
-- KEYS[1] - the entity's overrides (K_LIMITS)
-- ARGV[1] - daily: LIMIT_KEEP keeps it, LIMIT_DEFAULT clears the override
--           (back to the configured default), NO_CAP = no cap, else the cap
--           in micro-units
-- ARGV[2] - monthly: the same
-- ARGV[3] - per_minute: the same
-- ARGV[4] - weekly: the same
-- ARGV[5] - the cap action: LIMIT_KEEP keeps it, LIMIT_DEFAULT drops it
--           (refused at the caps, no events), else its letter and
--           thresholds ("w500000,800000,1000000": see _actions.lua)
-- return {daily, monthly, per_minute, weekly, action} overrides now in
--        force, false where there is none

local key = KEYS[1]
-- (in the stored override, an empty part means "the default"; the parts
-- after the monthly one are written only when one of them is set, so an
-- override of the daily and monthly caps reads as it always did)
local override = redis.call('GET', key)
local daily, monthly, more = caps(override, '', '')
local now = {daily, monthly, '', '', ''}
if more then
  local i = 3
  for part in string.gmatch(more .. '|', '([^|]*)|') do
    if i <= 5 then now[i] = part end
    i = i + 1
  end
end
for i = 1, 5 do
  local change = ARGV[i]
  if change == LIMIT_DEFAULT then
    now[i] = ''
  elseif change ~= LIMIT_KEEP then
    now[i] = change
  end
end
local last = 5
while last > 2 and now[last] == '' do last = last - 1 end
if last == 2 and now[1] == '' and now[2] == '' then
  redis.call('DEL', key)  -- no override left: the entity keeps no key
else
  redis.call('SET', key, table.concat(now, '|', 1, last))
end
return {now[1] ~= '' and now[1], now[2] ~= '' and now[2],
        now[3] ~= '' and now[3], now[4] ~= '' and now[4], now[5] ~= '' and now[5]}
