-- Helpers of the weekly and per-minute windows that both use: the caps of
-- an override after its monthly part, admission's and usage's rules for
-- those windows. Linked into a script like the helpers of _lib.lua
-- (spendgate.scripts links a script's helpers from every library, each
-- after the helpers it calls), but only into the scripts of a deployment
-- with weekly counters (WEEKLY) or per-minute caps (VELOCITY): an
-- unconfigured deployment's scripts do not carry them at all. _week.lua
-- and _minute.lua hold each window's own helpers, linked only with its
-- constant on; the calls to them are behind WEEKLY/VELOCITY checks.

-- The per-minute and weekly caps in force: the parts of an override after
-- its monthly one (`more`, as caps returned it:
-- "<per_minute>[|<weekly>[|<action>]]",
-- nil for none) over the given defaults, as text.
local function more_caps(more, per_minute, weekly)
  if not more then return per_minute, weekly end
  local sep = string.find(more, '|', 1, true)
  local p, w = more, ''
  if sep then p, w = string.sub(more, 1, sep - 1), string.sub(more, sep + 1) end
  sep = string.find(w, '|', 1, true)  -- (a cap action follows: _actions.lua)
  if sep then w = string.sub(w, 1, sep - 1) end
  if p == '' then p = per_minute end
  if w == '' then w = weekly end
  return p, w
end

-- The configured default per-minute and weekly caps of the i-th of n scopes
-- in reporting order (as default_caps in _lib.lua).
local function default_more_caps(i, n)
  if i == 1 then return USER_PER_MINUTE, USER_WEEKLY end
  if i == n then return GLOBAL_PER_MINUTE, GLOBAL_WEEKLY end
  return PROJECT_PER_MINUTE, PROJECT_WEEKLY
end

-- admit's weekly and per-minute rules for the i-th of n scopes: `more` is
-- what caps() left of its override, `held` its held amount, `week_spent`
-- its week counter as read (with WEEKLY). Returns a refusal, else nil, the
-- room left under these caps (-1 when none applies) and, when a per-minute
-- cap applies, the scope's minute as read.
local function admit_more(now_ms, i, n, user, project, more, held, week_spent,
                          requested)
  local per_minute, weekly = more_caps(more, default_more_caps(i, n))
  local room = -1
  weekly = tonumber(weekly)  -- corrupt: nil, and the script fails
  if WEEKLY == '1' and weekly >= 0 then
    local used = tonumber(week_spent) or 0
    room = weekly - used - held
    if room < requested or (requested == 0 and room <= 0) then
      return {R_REFUSED, i, W_WEEKLY, weekly, used, held}
    end
  end
  per_minute = tonumber(per_minute)
  if VELOCITY ~= '1' or per_minute < 0 then return nil, room end
  local refusal, left, minute = minute_admit(now_ms, i, n, user, project,
                                             per_minute, requested)
  if refusal then return refusal end
  if room < 0 or left < room then room = left end
  return nil, room, minute
end

-- What usage reports of the weekly and per-minute windows of the i-th of n
-- scopes, appended to `out`: the weekly cap (NO_CAP without WEEKLY), spent
-- this week (`week_spent`, as read), the per-minute cap (NO_CAP without
-- VELOCITY), the minute's spend, when that spend has all left the minute
-- (ms; 0 when none) and until when the kill switch refuses (ms; 0 when it
-- does not). `more` is what caps() left of the scope's override.
local function usage_more(out, now_ms, i, n, user, project, more, week_spent)
  local per_minute, weekly = more_caps(more, default_more_caps(i, n))
  if WEEKLY ~= '1' then weekly = NO_CAP end
  out[#out + 1] = weekly
  out[#out + 1] = week_spent or '0'
  if VELOCITY ~= '1' or tonumber(per_minute) < 0 then
    for _, value in ipairs({NO_CAP, '0', 0, 0}) do out[#out + 1] = value end
    return
  end
  local now = tonumber(now_ms)
  local m = minute_read(minute_key(i, n, user, project), math.floor(now / 1000))
  out[#out + 1] = per_minute
  out[#out + 1] = fmt(m.used)
  -- (what the minute holds has all left it a minute after its head)
  if m.used > 0 then out[#out + 1] = (m.head + 60) * 1000 else out[#out + 1] = 0 end
  if m.kill and m.kill > now then out[#out + 1] = m.kill else out[#out + 1] = 0 end
end
