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

local base = ARGV[1]
local user, project = ARGV[6], ARGV[7]

local function read()
  return redis.call('MGET', base .. 'due', KEYS[1],
                    scope_keys(base, ARGV[3], ARGV[4], user, project))
end
local seen = read()
if purge_expired_holds(base, ARGV[2], ARGV[5], seen[1]) then seen = read() end
local out = {}
local n = (#seen - 2) / 4
for i = 1, n do
  local at = 4 * i - 2  -- seen[1] is the holds' due time, seen[2] the balance
  -- where the scope's default limits are in ARGV
  local defaults = 10
  if i == 1 then defaults = 8 elseif i == n then defaults = 12 end
  out[#out + 1] = seen[at + 3] or '0'
  if i == 1 then out[#out + 1] = seen[2] else out[#out + 1] = false end
  local daily, monthly = caps(seen[at + 4], ARGV[defaults], ARGV[defaults + 1])
  out[#out + 1] = daily
  out[#out + 1] = monthly
  out[#out + 1] = seen[at + 1] or '0'
  out[#out + 1] = seen[at + 2] or '0'
end
return out
