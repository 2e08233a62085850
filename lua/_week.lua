-- Helpers of the weekly window (ISO weeks, from Monday 00:00 in the window
-- time zone), linked only into the scripts of a deployment with WEEKLY "1"
-- (see _windows.lua). A week counter (K_WEEK) is a string per scope and
-- week, like the day and month counters.

-- The ISO week a day falls in: the yyyymmdd of its Monday, and how many days
-- of the week follow `day` (6 on a Monday, 0 on a Sunday). `day` (yyyymmdd)
-- is already the date in the window time zone, so this is calendar
-- arithmetic alone (days_from_civil and civil_from_days, H. Hinnant).
local function week_of(day)
  local y = tonumber(string.sub(day, 1, 4))
  local m = tonumber(string.sub(day, 5, 6))
  local d = tonumber(string.sub(day, 7, 8))
  if m <= 2 then y = y - 1 end
  local era = math.floor(y / 400)
  local yoe = y - era * 400
  local doy = math.floor((153 * ((m + 9) % 12) + 2) / 5) + d - 1
  local days = era * 146097 + yoe * 365 + math.floor(yoe / 4)
               - math.floor(yoe / 100) + doy
  -- days since 0000-03-01; 1970-01-01 (719468 of them) was a Thursday
  local weekday = (days - 719468 + 3) % 7  -- 0 on a Monday
  days = days - weekday
  era = math.floor(days / 146097)
  local doe = days - era * 146097
  yoe = math.floor((doe - math.floor(doe / 1460) + math.floor(doe / 36524)
                    - math.floor(doe / 146096)) / 365)
  doy = doe - (365 * yoe + math.floor(yoe / 4) - math.floor(yoe / 100))
  local mp = math.floor((5 * doy + 2) / 153)
  d = doy - math.floor((153 * mp + 2) / 5) + 1
  if mp < 10 then m = mp + 3 else m = mp - 9 end
  y = yoe + era * 400
  if m <= 2 then y = y + 1 end
  return string.format('%04d%02d%02d', y, m, d), 6 - weekday
end

-- scopes_mget when weekly counters are kept: the same MGET with the week
-- counter of each scope (in reporting order) just before the scopes' keys,
-- so the scopes' four keys stay where `first` says and every caller reads
-- them as without weeks (the balance stays the second value, what the
-- user's holds on team pools keep the third). Returns the values and how
-- many come before the scopes' (the weeks are the last n of those).
local function weekly_mget(day, month, user, project, with_balance)
  local w = BASE .. K_WEEK .. week_of(day) .. ':'
  local head = {BASE .. K_DUE}
  if with_balance then
    head[2], head[3] = BASE .. K_BALANCE .. user, BASE .. K_POOL_HELD .. user
  end
  head[#head + 1] = w .. S_USER .. user
  if project ~= '' then head[#head + 1] = w .. S_PROJECT .. project end
  head[#head + 1] = w .. S_GLOBAL
  local h = #head
  if h == 3 then
    return redis.call('MGET', head[1], head[2], head[3],
                      scope_keys(day, month, user, project)), h
  elseif h == 4 then
    return redis.call('MGET', head[1], head[2], head[3], head[4],
                      scope_keys(day, month, user, project)), h
  elseif h == 5 then
    return redis.call('MGET', head[1], head[2], head[3], head[4], head[5],
                      scope_keys(day, month, user, project)), h
  end
  return redis.call('MGET', head[1], head[2], head[3], head[4], head[5], head[6],
                    scope_keys(day, month, user, project)), h
end

-- Adds a fact's amount to the week counter of every scope, with WEEKLY
-- (without, it reads and writes nothing). `head` is the fact head
-- (ARGV[1..6], as charge takes it). The counter's TTL is the day counter's
-- plus the days left in the week, plus 2 hours: a local day across a DST
-- change is up to an hour longer, so a week counter never expires before
-- the retention past its week's end (and at most 3 hours after it).
local function count_weeks(head, user, project)
  if WEEKLY ~= '1' then return end
  local text = head[6]
  local amount = tonumber(text)
  if amount <= 0 then return end
  local week, left = week_of(head[2])
  local ttl = fmt(tonumber(head[3]) + left * 86400000 + 7200000)
  local w = BASE .. K_WEEK .. week .. ':'
  count(w .. S_USER .. user, amount, text, ttl)
  if project ~= '' then count(w .. S_PROJECT .. project, amount, text, ttl) end
  count(w .. S_GLOBAL, amount, text, ttl)
end
