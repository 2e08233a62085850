-- A plan's free allowance, as the charge scripts (deduct, record, settle)
-- and the admissions (check, reserve, reserve_up_to, extend) see it: linked
-- like the helpers of _lib.lua (and using its).
--
-- The scripts do no calendar arithmetic: the caller knows the plans and
-- computes, from the user's plan as it last read it (a guess), the period
-- of the user's cycle the call falls in, and sends it as one argument, the
-- plan argument:
--   ""    no plan can apply (deduct, when no plan exists in the deployment;
--         a fact spooled before allowances): nothing is read
--   "=" then what the caller expects: "" for no plan, else
--         "<period start ms>|<allowance>|<counter TTL ms>|<assignment>"
--         (the allowance in micro-units, the assignment K_USER_PLAN's value
--         "<anchor_ms>|<plan id>"); the script reads the user's plan
--         (K_USER_PLAN) and, when it is not the one expected, answers
--         R_STALE_PRICE with it: the caller computes the period again and
--         retries
--   "~" then the same: lenient (a fact replayed from the spool, or a last
--         try): when the user's plan is not the one expected, no allowance
--         is drawn and the call goes on (a fact is never refused)
-- The allowance used in a period is K_ALLOWANCE .. <period start> .. ':' ..
-- user (micro-units), kept the TTL sent (the period's end plus the
-- retention), made by the first charge that draws on it.

-- The plan argument `arg` of `user`, checked: nil and then the period's
-- start (text), what is left of its allowance (micro-units, above 0) and
-- the counter's TTL (text) when an allowance applies, nil alone when none
-- does; or the user's plan (K_USER_PLAN's value, "" for none) when it is
-- not the one expected and the argument is strict ("="). `assigned` is the
-- user's plan when the caller read it already (false: none), nil when not.
local function plan_allowance(arg, user, assigned)
  if arg == '' then return nil end
  if assigned == nil then assigned = redis.call('GET', BASE .. K_USER_PLAN .. user) end
  assigned = assigned or ''
  local strict = string.byte(arg) == 61  -- '='
  if #arg == 1 then  -- no plan expected
    if assigned == '' or not strict then return nil end
    return assigned
  end
  local i = string.find(arg, '|', 2, true)
  local j = string.find(arg, '|', i + 1, true)
  local k = string.find(arg, '|', j + 1, true)
  if string.sub(arg, k + 1) ~= assigned then
    if strict then return assigned end
    return nil
  end
  local start = string.sub(arg, 2, i - 1)
  local left = tonumber(string.sub(arg, i + 1, j - 1))
  if left <= 0 then return nil end
  left = left - (tonumber(redis.call('GET', BASE .. K_ALLOWANCE .. start .. ':' .. user)) or 0)
  if left <= 0 then return nil end
  return nil, start, left, string.sub(arg, j + 1, k - 1)
end

-- Draws min(left, amount) of `user`'s allowance of the period starting at
-- `start` (plan_allowance's values; start nil: none applies). Returns what
-- was drawn (0 for nothing) and its draw as a refund record lists it,
-- "A<start>=<drawn>" ("" for none).
local function draw_allowance(user, start, left, ttl_ms, amount)
  if not start then return 0, '' end
  local drawn = math.min(left, amount)
  local text = fmt(drawn)
  count(BASE .. K_ALLOWANCE .. start .. ':' .. user, drawn, text, ttl_ms)
  return drawn, 'A' .. start .. '=' .. text
end

-- A refund gives `back` to the allowance of the period starting at `start`
-- (a charge's draw "A<start>=..."): that period's counter only, never
-- below zero, and only while it is kept (a period long gone has nothing to
-- give back to).
local function give_back_allowance(user, start, back)
  local key = BASE .. K_ALLOWANCE .. start .. ':' .. user
  local used = tonumber(redis.call('GET', key))
  if used then
    redis.call('SET', key, fmt(math.max(0, used - back)), 'KEEPTTL')
  end
end
