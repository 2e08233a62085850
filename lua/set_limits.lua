-- set_limits: per-entity cap overrides, effective on the next call.
--
-- KEYS[1] - the daily override, "<base>l:d:<scope>:<id>"
-- KEYS[2] - the monthly override, "<base>l:m:<scope>:<id>"
-- ARGV[1] - daily: "" keeps it, "-" clears the override (back to the
--           configured default), -1 = no cap, else the cap in micro-units
-- ARGV[2] - monthly: the same
-- return {daily, monthly} overrides now in force, false where there is none

local overrides = {KEYS[1], KEYS[2]}
for i = 1, 2 do
  local change = ARGV[i]
  if change == '-' then
    redis.call('DEL', overrides[i])
  elseif change ~= '' then
    redis.call('SET', overrides[i], change)
  end
end
return redis.call('MGET', KEYS[1], KEYS[2])
