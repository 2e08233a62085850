-- Helpers of the sliding minute and the kill switch, linked only into the
-- scripts of a deployment with VELOCITY "1" (see _windows.lua).
--
-- A minute (K_MINUTE, one hash per scope with a per-minute cap) is per-second
-- buckets: field = the second since the epoch, value = micro-units spent (or
-- held) in it; "t" the latest second written (the head), "k" until when the
-- scope's kill switch refuses (ms). The buckets of seconds that left the
-- minute are dropped whenever the head moves on, so the hash never holds
-- more than 60 of them; it expires a minute after its last write.

-- The i-th of n scopes in reporting order: its name and id ("" for global).
local function scope_of(i, n, user, project)
  if i == 1 then return SN_USER, user end
  if i == n then return SN_GLOBAL, '' end
  return SN_PROJECT, project
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
-- Returns the minute's spend, the head and kill time (nil when absent),
-- what was read (minute_free_at walks it) and the buckets that have left
-- the minute (their fields: minute_add drops them).
local function minute_read(key, now_s)
  local raw = redis.call('HGETALL', key)
  local used, head, kill, stale = 0, nil, nil, {}
  for j = 1, #raw, 2 do
    local field, value = raw[j], tonumber(raw[j + 1])
    if field == 't' then
      head = value
    elseif field == 'k' then
      kill = value
    elseif tonumber(field) > now_s - 60 then
      used = used + value
    else
      stale[#stale + 1] = field
    end
  end
  return used, head, kill, raw, stale
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
-- minute as read ({key, head, kill, stale}: count_admitted_minutes writes
-- it).
local function minute_admit(now_ms, i, n, user, project, cap, requested)
  local key = minute_key(i, n, user, project)
  local now = tonumber(now_ms)
  local now_s = math.floor(now / 1000)
  local used, head, kill, raw, stale = minute_read(key, now_s)
  if kill and kill > now then
    return {R_REFUSED, i, W_MINUTE, cap, used, 0, kill}
  end
  local room = cap - used
  if room >= requested and (requested > 0 or room > 0) then
    return nil, room, {key, head, kill, stale}
  end
  local free_ms
  if used >= cap and KILL_SWITCH_MS ~= '0' then
    free_ms = kill_trip(key, now, i, n, user, project, cap, used)
  else
    free_ms = minute_free_at(raw, now_s, used, cap, requested)
  end
  return {R_REFUSED, i, W_MINUTE, cap, used, 0, free_ms}
end

-- Counts `text` (an amount, micro-units) in a minute hash at now_ms (text),
-- the hash's head and kill time being `head` and `kill` as read (nil when
-- absent) and `stale` the fields of the buckets that have left the minute.
-- When the head moves on, those are dropped and the TTL renewed, so the
-- hash holds at most the last minute's seconds and dies a minute after its
-- last write (or when its kill switch ends, if later). A caller whose clock
-- is behind the head's counts in the oldest second still in the minute.
local function minute_add(key, head, kill, stale, now_ms, text)
  local now = tonumber(now_ms)
  local now_s = math.floor(now / 1000)
  if head and now_s <= head then
    redis.call('HINCRBY', key, fmt(math.max(now_s, head - 59)), text)
    return
  end
  if #stale > 0 then redis.call('HDEL', key, unpack(stale)) end
  redis.call('HSET', key, 't', fmt(now_s), fmt(now_s), text)
  local keep = 61000
  if kill and kill - now > keep then keep = kill - now end
  redis.call('PEXPIRE', key, fmt(keep))
end

-- The fields of a minute hash whose buckets have left the minute at now_s,
-- for a writer that has read only its head (`head`; a fact): none while the
-- head has not moved on; after a short gap the seconds the head moved past
-- (the buckets that could have left: no HKEYS needed), after a longer one
-- those HKEYS finds.
local function minute_stale(key, head, now_s)
  local stale = {}
  if not head or now_s <= head then return stale end
  if now_s - head <= 4 then
    for s = head - 59, math.min(head, now_s - 60) do stale[#stale + 1] = fmt(s) end
    return stale
  end
  local fields = redis.call('HKEYS', key)
  for j = 1, #fields do
    local s = tonumber(fields[j])  -- nil for "t" and "k"
    if s and s <= now_s - 60 then stale[#stale + 1] = fields[j] end
  end
  return stale
end

-- Counts an admitted amount (`text`: its text) in the minute of every scope
-- admit found a per-minute cap on (`minutes`: admit's last value, nil when
-- none): holds when they are taken, deducts when charged.
local function count_admitted_minutes(minutes, now_ms, amount, text)
  if not minutes or amount <= 0 then return end
  for j = 1, #minutes do
    local m = minutes[j]
    minute_add(m[1], m[2], m[3], m[4], now_ms, text)
  end
end

-- Counts a fact's amount (`text`: its text) in the minute of every scope
-- with a per-minute cap, with VELOCITY: a fact is not admitted, so the
-- scopes' overrides are read here (one MGET), and each capped scope's head
-- (HMGET; minute_stale). Without VELOCITY it reads and writes nothing.
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
      local head = tonumber(h[1])
      local stale = minute_stale(key, head, math.floor(tonumber(now_ms) / 1000))
      minute_add(key, head, tonumber(h[2]), stale, now_ms, text)
    end
  end
end
