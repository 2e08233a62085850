-- usage: spent, held, limits and balance of every scope of a user (and
-- project), after purging expired holds and expiring the user's grants whose
-- expiry passed.
--
-- KEYS[1] - the user's balance key (routes the call; all keys share one slot)
-- ARGV[1] - now_ms
-- ARGV[2] - day (yyyymmdd, in the window time zone)
-- ARGV[3] - month (yyyymm, in the window time zone)
-- ARGV[4] - user id
-- ARGV[5] - project id, "" for none
-- ARGV[6] - model, "", with MODEL_CAPS only: 5 more values per scope  --@models
-- return per scope (user, [project,] global) twelve values: held, balance
--        (the balance key's value, its user's grants expired first; false but
--        for a user who has one), daily limit, monthly limit (-1 =
--        no cap), daily spent, monthly spent; weekly limit (-1 also without
--        week counters), weekly spent, per-minute limit, the minute's spend,
--        when that spend has all left the minute (ms, 0 when none), until
--        when the kill switch refuses (ms, 0 when it does not)
-- (with cap actions, a thirteenth: the scope's action part, false for  --@cap_actions
-- none: see _actions.lua)  --@cap_actions

local user, project = ARGV[4], ARGV[5]
local seen, first = read_scopes(ARGV[1], ARGV[2], ARGV[3], user, project, true)
local balance = seen[2]
if balance and string.find(balance, '|', 1, true) then  -- grants expired first
  local _
  _, balance = grants().counted(ARGV[1], user, balance)
end
local out = {}
local n = 2
if project ~= '' then n = 3 end
for i = 1, n do
  local at = first + 4 * i - 4
  out[#out + 1] = seen[at + 3] or '0'
  if i == 1 then out[#out + 1] = balance else out[#out + 1] = false end
  local daily, monthly, more = caps(seen[at + 4], default_caps(i, n))
  out[#out + 1] = daily
  out[#out + 1] = monthly
  out[#out + 1] = seen[at + 1] or '0'
  out[#out + 1] = seen[at + 2] or '0'
  if WEEKLY == '1' or VELOCITY == '1' then
    local week = WEEKLY == '1' and seen[first - n + i] or nil
    usage_more(out, ARGV[1], i, n, user, project, more, week)
  else
    for _, value in ipairs({NO_CAP, '0', NO_CAP, '0', 0, 0}) do out[#out + 1] = value end
  end
  out[#out + 1] = cap_part(more) or false  --@cap_actions
end
if ARGV[6] and ARGV[6] ~= '' then model_usage(out, ARGV[2], ARGV[3], user, project, ARGV[6]) end  --@models
return out
