-- Helpers of the sliding minute, linked only into the scripts of a
-- deployment with VELOCITY "1" (see _windows.lua); the kill switch's trip
-- is in _kill.lua, called only when KILL_SWITCH_MS is not "0".
--
-- A minute (K_MINUTE, one hash per scope with a per-minute cap) is per-second
-- buckets: field = the second since the epoch, value = micro-units spent (or
-- held) in it; "t" the latest second written (the head), "s" the sum of the
-- buckets, "k" until when the scope's kill switch refuses (ms). The minute
-- at second now_s is the 60 seconds up to and including it: spend made in
-- second x counts until (x + 60) * 1000 ms, between 59 and 60 seconds. The
-- buckets that left the minute are dropped (and taken off "s") whenever the
-- head moves on, so the hash holds the buckets of (t - 60, t] only, at most
-- 60, and expires a minute after its last write. Reading a minute is O(1):
-- "s" less the one bucket that leaves when the head is a second behind.

-- The minute hash of the i-th of n scopes.
local function minute_key(i, n, user, project)
  if i == 1 then return BASE .. K_MINUTE .. S_USER .. user end
  if i == n then return BASE .. K_MINUTE .. S_GLOBAL end
  return BASE .. K_MINUTE .. S_PROJECT .. project
end

-- A minute at second now_s, read with one HMGET (head, sum, kill time, the
-- bucket that leaves when the head is one second behind, the current
-- second's); a head 2 to 59 seconds behind needs the buckets it left
-- behind: one HGETALL then. Returns the minute as a table: key, used (the
-- minute's spend), head and kill (nil when absent), sum (as stored), now_s,
-- current (the current second's bucket), gone (the fields of the buckets
-- that left) and gone_sum (their total), all = true when every bucket left.
local function minute_read(key, now_s)
  local v = redis.call('HMGET', key, 't', 's', 'k', fmt(now_s - 60), fmt(now_s))
  local m = {key = key, head = tonumber(v[1]), sum = tonumber(v[2]) or 0,
             kill = tonumber(v[3]), now_s = now_s, current = tonumber(v[5]) or 0,
             gone = {}, gone_sum = 0}
  local gap = m.head and now_s - m.head or 0
  if gap <= 0 then
    m.used = m.sum
  elseif gap == 1 then
    if v[4] then m.gone, m.gone_sum = {fmt(now_s - 60)}, tonumber(v[4]) end
    m.used = m.sum - m.gone_sum
  elseif gap >= 60 then
    m.all, m.gone_sum, m.used = true, m.sum, 0
  else
    local raw = redis.call('HGETALL', key)
    for j = 1, #raw, 2 do
      local x = tonumber(raw[j])  -- nil for "t", "s" and "k"
      if x and x <= now_s - 60 then
        m.gone[#m.gone + 1] = raw[j]
        m.gone_sum = m.gone_sum + tonumber(raw[j + 1])
      end
    end
    m.used = m.sum - m.gone_sum
  end
  return m
end

-- When a request refused by the minute `m` (minute_read's) fits again, ms:
-- buckets leave the minute oldest first, second x at (x + 60) * 1000. Reads
-- the buckets (one HGETALL: a refusal's cost only). A request above the
-- cap never fits: then when the minute has emptied.
local function minute_free_at(m, cap, requested)
  local raw = redis.call('HGETALL', m.key)
  local seconds, amounts = {}, {}
  for j = 1, #raw, 2 do
    local x = tonumber(raw[j])  -- nil for "t", "s" and "k"
    if x and x > m.now_s - 60 then
      seconds[#seconds + 1] = x
      amounts[x] = tonumber(raw[j + 1])
    end
  end
  table.sort(seconds)
  local left = m.used
  for j = 1, #seconds do
    left = left - amounts[seconds[j]]
    local room = cap - left
    if room >= requested and (requested > 0 or room > 0) then
      return (seconds[j] + 60) * 1000
    end
  end
  return ((seconds[#seconds] or m.now_s) + 60) * 1000
end

-- The per-minute rule of the i-th of n scopes, whose cap is `cap`: refused
-- while its kill switch runs, or when minute + requested > cap (minute >=
-- cap when nothing is requested; reaching the cap trips the kill switch,
-- when there is one). Returns the refusal {R_REFUSED, i, W_MINUTE, cap,
-- minute, 0, free_ms}, else nil, the room left in the minute, and the
-- minute as read (count_admitted_minutes writes it).
local function minute_admit(now_ms, i, n, user, project, cap, requested)
  local now = tonumber(now_ms)
  local m = minute_read(minute_key(i, n, user, project), math.floor(now / 1000))
  if m.kill and m.kill > now then
    return {R_REFUSED, i, W_MINUTE, cap, m.used, 0, m.kill}
  end
  local room = cap - m.used
  if room >= requested and (requested > 0 or room > 0) then
    return nil, room, m
  end
  local free_ms
  if m.used >= cap and KILL_SWITCH_MS ~= '0' then
    free_ms = kill_trip(m.key, now, i, n, user, project, cap, m.used)
  else
    free_ms = minute_free_at(m, cap, requested)
  end
  return {R_REFUSED, i, W_MINUTE, cap, m.used, 0, free_ms}
end

-- Counts `amount` (`text`: its text, micro-units) in the minute `m`, as
-- minute_read read it at now_ms. In the head's second, one HSET of the
-- bucket and the sum; when the head moves on, the buckets that left are
-- dropped with it (all of them after a minute's gap) and the TTL renewed:
-- a minute past this write, or when the kill switch ends if later. A
-- caller whose clock is behind the head's counts in the oldest second
-- still in the minute.
local function minute_add(m, now_ms, amount, text)
  local key, now_s, head = m.key, m.now_s, m.head
  local sum = fmt(m.sum - m.gone_sum + amount)
  if head and now_s <= head then
    if now_s > head - 60 then
      redis.call('HSET', key, 's', sum, fmt(now_s), fmt(m.current + amount))
    else
      redis.call('HINCRBY', key, fmt(head - 59), text)
      redis.call('HSET', key, 's', sum)
    end
    return
  end
  local now = tonumber(now_ms)
  local kill = m.kill
  if m.all then
    redis.call('DEL', key)
    if kill and kill > now then redis.call('HSET', key, 'k', fmt(kill)) end
  elseif #m.gone > 0 then
    redis.call('HDEL', key, unpack(m.gone))
  end
  redis.call('HSET', key, 't', fmt(now_s), 's', sum, fmt(now_s), text)
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
    minute_add(minutes[j], now_ms, amount, text)
  end
end

-- Counts a fact's amount (`text`: its text) in the minute of every scope
-- with a per-minute cap, with VELOCITY: a fact is not admitted, so with
-- MINUTE_OVERRIDES the scopes' overrides are read here (one MGET; without,
-- the defaults decide), and each capped scope's minute (minute_read).
-- Without VELOCITY it reads and writes nothing.
local function count_minutes(now_ms, user, project, amount, text)
  if VELOCITY ~= '1' or amount <= 0 then return end
  local l = BASE .. K_LIMITS
  local n, overrides = 2, {}
  if project ~= '' then n = 3 end
  if MINUTE_OVERRIDES ~= '1' then
    -- (no override can exist: every scope has its default)
  elseif n == 2 then
    overrides = redis.call('MGET', l .. S_USER .. user, l .. S_GLOBAL)
  else
    overrides = redis.call('MGET', l .. S_USER .. user,
                           l .. S_PROJECT .. project, l .. S_GLOBAL)
  end
  local now_s = math.floor(tonumber(now_ms) / 1000)
  for i = 1, n do
    local _, _, more = caps(overrides[i], '', '')
    local per_minute = more_caps(more, default_more_caps(i, n))
    if tonumber(per_minute) >= 0 then
      local m = minute_read(minute_key(i, n, user, project), now_s)
      minute_add(m, now_ms, amount, text)
    end
  end
end
