-- usage: spent, held, limits and balance of every scope of a user (and
-- project), after purging expired holds.
--
-- KEYS[1] - the user's balance key (routes the call; all keys share one slot)
-- ARGV[1] - base: "<prefix>:{sg}:"
-- ARGV[2] - now_ms
-- ARGV[3] - day (yyyymmdd, UTC)
-- ARGV[4] - month (yyyymm, UTC)
-- ARGV[5] - purge_max
-- ARGV[6] - user id
-- ARGV[7] - project id, "" for none
-- ARGV[8..13] - default limits as in check.lua
-- return per scope (user, [project,] global) six values: held, balance (false
--        but for a user who has one), daily limit, monthly limit (-1 = no cap),
--        daily spent, monthly spent

local seen, first = read_scopes(ARGV, true, ARGV[5])
local out = {}
local n = (#seen - first) / 4
for i = 1, n do
  local at = first + 4 * i - 4
  -- where the scope's default limits are in ARGV
  local defaults = 10
  if i == 1 then defaults = 8 elseif i == n then defaults = 12 end
  out[#out + 1] = seen[at + 3] or '0'
  if i == 1 then out[#out + 1] = seen[2] else out[#out + 1] = false end  -- the balance
  local daily, monthly = caps(seen[at + 4], ARGV[defaults], ARGV[defaults + 1])
  out[#out + 1] = daily
  out[#out + 1] = monthly
  out[#out + 1] = seen[at + 1] or '0'
  out[#out + 1] = seen[at + 2] or '0'
end
return out
