-- Helpers of the weekly and per-minute windows and the kill switch, linked
-- into a script like those of _lib.lua (spendgate.scripts links a script's
-- helpers from both files, each after the helpers it calls).
--
-- They cost nothing unless configured: WEEKLY "0" keeps no week counter and
-- VELOCITY "0" no minute (see _lib.lua for the constants), and every helper
-- here returns at once then, or is not called.
--
-- A minute (K_MINUTE, one hash per scope with a per-minute cap) is per-second
-- buckets: field = the second since the epoch, value = micro-units spent (or
-- held) in it; "t" the latest second written (the head), "k" until when the
-- scope's kill switch refuses (ms). The buckets of seconds that left the
-- minute are dropped whenever the head moves on, so the hash never holds
-- more than 60 of them; it expires a minute after its last write.

-- The per-minute and weekly caps in force: the parts of an override after
-- its monthly one (`more`, as caps returned it: "<per_minute>[|<weekly>]",
-- nil for none) over the given defaults, as text.
local function more_caps(more, per_minute, weekly)
  if not more then return per_minute, weekly end
  local sep = string.find(more, '|', 1, true)
  local p, w = more, ''
  if sep then p, w = string.sub(more, 1, sep - 1), string.sub(more, sep + 1) end
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

-- The i-th of n scopes in reporting order: its name and id ("" for global).
local function scope_of(i, n, user, project)
  if i == 1 then return SN_USER, user end
  if i == n then return SN_GLOBAL, '' end
  return SN_PROJECT, project
end

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

-- scopes_mget's keys when weekly counters are kept: the same keys, then the
-- week counter of each scope in reporting order (after every scope's four,
-- which so stay where they are).
local function weekly_mget(day, month, user, project, with_balance)
  local keys = {BASE .. K_DUE}
  if with_balance then keys[2] = BASE .. K_BALANCE .. user end
  local first = #keys
  for _, key in ipairs({scope_keys(day, month, user, project)}) do
    keys[#keys + 1] = key
  end
  local w = BASE .. K_WEEK .. week_of(day) .. ':'
  keys[#keys + 1] = w .. S_USER .. user
  if project ~= '' then keys[#keys + 1] = w .. S_PROJECT .. project end
  keys[#keys + 1] = w .. S_GLOBAL
  return redis.call('MGET', unpack(keys)), first
end

-- The minute hash of the i-th of n scopes (K_MINUTE: see minute_read).
local function minute_key(i, n, user, project)
  if i == 1 then return BASE .. K_MINUTE .. S_USER .. user end
  if i == n then return BASE .. K_MINUTE .. S_GLOBAL end
  return BASE .. K_MINUTE .. S_PROJECT .. project
end

-- A scope's sliding minute, with one HGETALL of its hash: per-second
-- buckets (field: the second since the epoch, value: micro-units), "t" the
-- latest second written (the head), "k" until when its kill switch refuses
-- (ms). The minute is the 60 seconds up to and including now_s: spend made
-- in second s counts until (s + 60) * 1000 ms, between 59 and 60 seconds.
-- Returns the minute's spend, the head and kill time (nil when absent) and
-- what was read (minute_free_at walks it).
local function minute_read(key, now_s)
  local raw = redis.call('HGETALL', key)
  local used, head, kill = 0, nil, nil
  for j = 1, #raw, 2 do
    local field, value = raw[j], tonumber(raw[j + 1])
    if field == 't' then
      head = value
    elseif field == 'k' then
      kill = value
    elseif tonumber(field) > now_s - 60 then
      used = used + value
    end
  end
  return used, head, kill, raw
end

-- When a request refused by the minute fits again, ms: seconds leave the
-- minute oldest first, second s at (s + 60) * 1000. `raw` is what
-- minute_read read, `used` the minute's spend. A request above the cap
-- never fits: then when the minute has emptied.
local function minute_free_at(raw, now_s, used, cap, requested)
  local seconds, amounts = {}, {}
  for j = 1, #raw, 2 do
    local s = tonumber(raw[j])  -- nil for "t" and "k"
    if s and s > now_s - 60 then
      seconds[#seconds + 1] = s
      amounts[s] = tonumber(raw[j + 1])
    end
  end
  table.sort(seconds)
  local left = used
  for j = 1, #seconds do
    left = left - amounts[seconds[j]]
    local room = cap - left
    if room >= requested and (requested > 0 or room > 0) then
      return (seconds[j] + 60) * 1000
    end
  end
  return ((seconds[#seconds] or now_s) + 60) * 1000
end

-- An amount in micro-units as the API writes it: a decimal string ("2.5").
local function decimal(micros)
  local units = math.floor(micros / 1000000)
  local frac = micros - units * 1000000
  if frac == 0 then return fmt(units) end
  return (string.gsub(fmt(units) .. '.' .. string.format('%06d', frac), '0+$', ''))
end

-- Trips the kill switch of the i-th of n scopes, whose minute (`key`)
-- reached its per-minute cap: the scope is refused until now +
-- KILL_SWITCH_MS ("k" in its minute hash, which lives at least that long),
-- and one EV_CAP_REACHED event names the minute (data: limit, spent, until
-- ms). Admission finds the switch before anything else of a minute, so a
-- trip is written once. Returns until when (ms).
local function kill_trip(key, now, i, n, user, project, cap, used)
  local until_ms = now + tonumber(KILL_SWITCH_MS)
  redis.call('HSET', key, 'k', fmt(until_ms))
  redis.call('PEXPIRE', key, fmt(math.max(tonumber(KILL_SWITCH_MS), 61000)))
  local scope, id = scope_of(i, n, user, project)
  local data = '{"limit":"' .. decimal(cap) .. '","spent":"' .. decimal(used)
               .. '","until":' .. fmt(until_ms) .. '}'
  redis.call('XADD', BASE .. K_EVENTS, '*', EF_TYPE, EV_CAP_REACHED,
             EF_OCCURRED_AT, fmt(now), EF_USER_ID, user, EF_SCOPE, scope,
             EF_SCOPE_ID, id, EF_WINDOW, WN_MINUTE, EF_DATA, data)
  return until_ms
end

-- The per-minute rule of the i-th of n scopes, whose cap is `cap`: refused
-- while its kill switch runs, or when minute + requested > cap (minute >=
-- cap when nothing is requested; reaching the cap trips the kill switch,
-- when there is one). Returns the refusal {R_REFUSED, i, W_MINUTE, cap,
-- minute, 0, free_ms}, else nil, the room left in the minute, and the
-- minute as read ({key, head, kill}: count_admitted_minutes writes it).
local function minute_admit(now_ms, i, n, user, project, cap, requested)
  local key = minute_key(i, n, user, project)
  local now = tonumber(now_ms)
  local now_s = math.floor(now / 1000)
  local used, head, kill, raw = minute_read(key, now_s)
  if kill and kill > now then
    return {R_REFUSED, i, W_MINUTE, cap, used, 0, kill}
  end
  local room = cap - used
  if room >= requested and (requested > 0 or room > 0) then
    return nil, room, {key, head, kill}
  end
  local free_ms
  if used >= cap and KILL_SWITCH_MS ~= '0' then
    free_ms = kill_trip(key, now, i, n, user, project, cap, used)
  else
    free_ms = minute_free_at(raw, now_s, used, cap, requested)
  end
  return {R_REFUSED, i, W_MINUTE, cap, used, 0, free_ms}
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

-- Counts `text` (an amount, micro-units) in a minute hash at now_ms (text),
-- the hash's head and kill time being `head` and `kill` as read (nil when
-- absent). When the head moves on, the buckets that left the minute are
-- dropped (at most 60 fields, whatever the gap) and the TTL renewed, so the
-- hash holds at most the last minute's seconds and dies a minute after its
-- last write (or when its kill switch ends, if later). A caller whose clock
-- is behind the head's counts in the oldest second still in the minute.
local function minute_add(key, head, kill, now_ms, text)
  local now = tonumber(now_ms)
  local now_s = math.floor(now / 1000)
  if head and now_s <= head then
    redis.call('HINCRBY', key, fmt(math.max(now_s, head - 59)), text)
    return
  end
  if head then
    local gone = {}
    for s = head - 59, math.min(head, now_s - 60) do gone[#gone + 1] = fmt(s) end
    if #gone > 0 then redis.call('HDEL', key, unpack(gone)) end
  end
  redis.call('HSET', key, 't', fmt(now_s), fmt(now_s), text)
  local keep = 61000
  if kill and kill - now > keep then keep = kill - now end
  redis.call('PEXPIRE', key, fmt(keep))
end

-- Counts an admitted amount (`text`: its text) in the minute of every scope
-- admit found a per-minute cap on (`minutes`: admit's last value, nil when
-- none): holds when they are taken, deducts when charged.
local function count_admitted_minutes(minutes, now_ms, amount, text)
  if not minutes or amount <= 0 then return end
  for j = 1, #minutes do
    local m = minutes[j]
    minute_add(m[1], m[2], m[3], now_ms, text)
  end
end

-- Counts a fact's amount (`text`: its text) in the minute of every scope
-- with a per-minute cap, with VELOCITY: a fact is not admitted, so the
-- scopes' overrides are read here (one MGET), and each capped scope's head
-- (HMGET). Without VELOCITY it reads and writes nothing.
local function count_minutes(now_ms, user, project, amount, text)
  if VELOCITY ~= '1' or amount <= 0 then return end
  local l = BASE .. K_LIMITS
  local n, overrides = 2, nil
  if project == '' then
    overrides = redis.call('MGET', l .. S_USER .. user, l .. S_GLOBAL)
  else
    n = 3
    overrides = redis.call('MGET', l .. S_USER .. user,
                           l .. S_PROJECT .. project, l .. S_GLOBAL)
  end
  for i = 1, n do
    local _, _, more = caps(overrides[i], '', '')
    local per_minute = more_caps(more, default_more_caps(i, n))
    if tonumber(per_minute) >= 0 then
      local key = minute_key(i, n, user, project)
      local h = redis.call('HMGET', key, 't', 'k')
      minute_add(key, tonumber(h[1]), tonumber(h[2]), now_ms, text)
    end
  end
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
  local used, head, kill = minute_read(minute_key(i, n, user, project),
                                       math.floor(now / 1000))
  out[#out + 1] = per_minute
  out[#out + 1] = fmt(used)
  if used > 0 then out[#out + 1] = (head + 60) * 1000 else out[#out + 1] = 0 end
  if kill and kill > now then out[#out + 1] = kill else out[#out + 1] = 0 end
end
