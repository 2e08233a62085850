-- Shared helpers: spendgate.scripts prepends the ones each script uses to it, so
-- each operation still runs as one self-contained, atomic EVALSHA. The
-- weekly and per-minute windows' helpers live in _windows.lua, _week.lua
-- and _minute.lua, linked only into the scripts of a deployment that uses
-- them (the calls to them here are behind WEEKLY/VELOCITY checks).
-- Idempotency records and the ledger stream's appends are _records.lua's,
-- holds' _holds.lua's.
--
-- The manager's configuration is not sent with each call: spendgate.scripts
-- writes these constants' values into every script when the scripts are
-- loaded (each configuration is its own script, its own SHA):
--   BASE              the deployment's key base, "<prefix>:{sg}:"
--   ENFORCE_BALANCE   "1" when balances are enforced (a user's balance is then
--                     always kept and checked), else "0"
--   MIN_BALANCE       the lowest balance a user may reach, micro-units
--   PURGE_MAX         expired holds purged at most per call
--   USER_DAILY, USER_MONTHLY, PROJECT_DAILY, PROJECT_MONTHLY, GLOBAL_DAILY,
--   GLOBAL_MONTHLY, USER_WEEKLY, ..., USER_PER_MINUTE, ...
--                     the default caps, micro-units, "-1" = no cap
--   WEEKLY            "1" when weekly counters are kept, else "0" (no week
--                     key is then read or written)
--   VELOCITY          "1" when spend is counted per minute where a
--                     per-minute cap applies, else "0" (no minute key is
--                     then read or written, no override part parsed)
--   MINUTE_OVERRIDES  "1" when per-entity per-minute caps may be set
--                     (per_minute_caps): facts then read the scopes'
--                     overrides to know which minutes to count; "0": the
--                     defaults alone decide
--   KILL_SWITCH_MS    how long a scope that reached its per-minute cap is
--                     refused, ms; "0" = no kill switch
--   IDEMPOTENCY_TTL_MS how long idempotency and finished hold records are kept
--   LEDGER_MAXLEN     the ledger's approximate cap, "0" = uncapped
--   GRANTS_PER_CALL   grants one call expires, and draws on, at most
--   REFUND_WINDOW_MS  how long a charge keeps its refund record (K_CHARGE),
--                     "0" = none: refunds are off
--   CAP_ACTIONS       "1" when scopes may carry a cap action (warn, notify,
--                     deny) and thresholds (_actions.lua), else "0"
--   LOW_BALANCE       the balance below which a charge writes the low
--                     balance event, micro-units, "-1" (NO_CAP) = none
-- The last two are hooks: the lines that use them end in a tag naming the
-- hook and are linked in only when it is on (spendgate.core.scripts.HOOKS).
-- All are text, as arguments would be.
--
-- The protocol shared with Python is not written here either: it comes as
-- constants too, from spendgate.core.protocol and spendgate.core.keys,
-- written in the same way:
--   R_OK, R_REFUSED, R_REPLAYED, R_CONFLICT, R_UNKNOWN_LEASE, R_LEASE_RELEASED,
--   R_LEASE_SETTLED   reply codes, the first element of every reply
--   W_DAILY, W_MONTHLY, W_BALANCE, W_WEEKLY, W_MINUTE   the window a refusal
--                     names; WN_MINUTE... its name (as events name it)
--   HOLD_PENDING, HOLD_SETTLED, HOLD_VOIDED, HOLD_EXPIRED   a hold's state
--   KIND_SPEND, KIND_SETTLE, KIND_GRANT, ...   ledger entry kinds
--   GRANT_NEVER       a never-expiring grant's expiry (ms)
--   F_ENTRY_ID, F_KIND, F_OCCURRED_AT, ...   ledger entry field names
--   K_DAY, K_MONTH, K_HELD, K_LIMITS, K_BALANCE, K_HOLD, K_HOLDS, K_DUE,
--   K_LEDGER, ...     the key layout's parts, below BASE
--   S_USER, S_PROJECT, S_GLOBAL   a scope's letter and separator ("u:")
--   SN_USER, SN_PROJECT, SN_GLOBAL   a scope's name
--   EV_CAP_REACHED, EF_TYPE, ...   event types and events stream fields
--
-- Money is in integer micro-units (1e-6 of the unit) and time in milliseconds
-- since the Unix epoch, everywhere in these scripts. Lua numbers are doubles:
-- exact for integers up to 2^53 (about 9e9 units), far above any documented
-- amount or limit.
--
-- The key layout is spendgate.core.keys' (its docstring draws it); ids always
-- come last, after a fixed-format structural part, so no id can alias
-- another entity's key. Everything an admission reads is a string, so it is
-- read with one MGET. Holds (their records, held amounts and purge) are
-- _holds.lua's; a user's balance (K_BALANCE) and grants are _grants.lua's.

-- string.format keeps large integers out of Lua's %.14g tostring (1e+15).
local function fmt(n)
  return string.format('%.0f', n)
end

-- What admission knows of each scope, as the keys of one MGET: for each scope
-- in reporting order (user, the project when there is one, global), spent
-- today, spent this month, held, and its cap overrides (4 keys). Returned as
-- values, not a table: they go straight into MGET (a caller that needs the
-- user's balance too passes its key before them).
local function scope_keys(day, month, user, project)
  local d, m = BASE .. K_DAY .. day .. ':', BASE .. K_MONTH .. month .. ':'
  local r, l = BASE .. K_HELD, BASE .. K_LIMITS
  local u, g = S_USER .. user, S_GLOBAL
  if project == '' then
    return d .. u, m .. u, r .. u, l .. u, d .. g, m .. g, r .. g, l .. g
  end
  local p = S_PROJECT .. project
  return d .. u, m .. u, r .. u, l .. u, d .. p, m .. p, r .. p, l .. p,
         d .. g, m .. g, r .. g, l .. g
end

-- The caps in force: a scope's overrides ("<daily>|<monthly>", then
-- optionally "|<per_minute>|<weekly>"; false when it has none) over the
-- given defaults, as text, and what follows the monthly part (nil when
-- nothing does: see more_caps). A corrupt override (no "|") fails the
-- script: it is never ignored.
local function caps(override, daily, monthly)
  if not override then return daily, monthly end
  local sep = string.find(override, '|', 1, true)
  local d, m = string.sub(override, 1, sep - 1), string.sub(override, sep + 1)
  local more
  sep = string.find(m, '|', 1, true)
  if sep then m, more = string.sub(m, 1, sep - 1), string.sub(m, sep + 1) end
  if d == '' then d = daily end
  if m == '' then m = monthly end
  return d, m, more
end

-- The configured default caps of the i-th of n scopes in reporting order:
-- the user first, global last, the project (when there is one) between.
local function default_caps(i, n)
  if i == 1 then return USER_DAILY, USER_MONTHLY end
  if i == n then return GLOBAL_DAILY, GLOBAL_MONTHLY end
  return PROJECT_DAILY, PROJECT_MONTHLY
end

-- The one MGET of read_scopes: the holds' due time, the user's balance and
-- what the user's holds on team pools keep (K_POOL_HELD) when asked for
-- (with WEEKLY, the week counters: weekly_mget), then scope_keys; and how
-- many values come before the scopes'.
local function scopes_mget(day, month, user, project, with_balance)
  if WEEKLY == '1' then
    return weekly_mget(day, month, user, project, with_balance)
  end
  if with_balance then
    return redis.call('MGET', BASE .. K_DUE, BASE .. K_BALANCE .. user,
                      BASE .. K_POOL_HELD .. user, scope_keys(day, month, user, project)), 3
  end
  return redis.call('MGET', BASE .. K_DUE, scope_keys(day, month, user, project)), 1
end

-- What admission (and usage) reads, with one MGET (now_ms, day, month, user
-- and project are the arguments' text). Expired holds are purged first
-- (purge_expired_holds), and everything read again when a purge changed the
-- held amounts. Returns the values, how many come before the scopes' (the
-- first scope's first value is at that + 1), and the holds' due time.
local function read_scopes(now_ms, day, month, user, project, with_balance)
  local seen, first = scopes_mget(day, month, user, project, with_balance)
  local purged, due = purge_expired_holds(now_ms, seen[1])
  if purged then seen = scopes_mget(day, month, user, project, with_balance) end
  return seen, first, due
end

-- Admission for every scope and window: spent + held + requested <= limit
-- (spent + held < limit when nothing is requested) and, for the user with
-- balances enforced, balance - held - requested >= min_balance (> when
-- nothing is requested), held there being the user's own holds' (a hold on
-- a team's pool keeps the pool's balance, not the user's: K_POOL_HELD);
-- with WEEKLY the same for each week, and with VELOCITY minute + requested
-- <= the per-minute cap (admit_more). Limits of -1 mean "no cap"; a
-- per-entity override wins over the configured default.
-- now_ms, day, month, user and project are the arguments' text, read with
-- read_scopes; `floor` is nil for the configured balance rule
-- (ENFORCE_BALANCE, MIN_BALANCE), else the balance is enforced above that
-- floor (deduct: the prepaid operation always is). `free` is what is left
-- of the user's plan allowance (_allowance.lua; nil: none): a charge draws
-- on it before the balance, so the balance rule counts it as balance.
-- Returns {R_OK, room} when admitted, room being the smallest amount still
-- available over all capped windows (-1 when nothing is capped), or the
-- refusal {R_REFUSED, scope index, window (a W_ code), limit, spent, held}
-- (a W_MINUTE one adds when the scope frees up, ms), or, sharded, the
-- ESCROW answer of the project's and the platform's windows short of the
-- bucket's allowance (_escrow.lua: a bucket admits against that, not the
-- cap, and the room it reports is the allowance's); then the holds' due
-- time, what read_scopes read (its values and how many come before the
-- scopes'), for a caller that charges next, and the minutes of the scopes
-- with a per-minute cap (nil when none: count_admitted_minutes counts what
-- the caller then holds or charges in them).
local function admit(now_ms, day, month, user, project, requested, floor, free)
  local enforce = floor ~= nil or ENFORCE_BALANCE == '1'
  floor = floor or MIN_BALANCE
  local seen, first, due = read_scopes(now_ms, day, month, user, project, enforce)
  local n = 2
  if project ~= '' then n = 3 end
  local tightest, minutes = -1, nil
  local short  -- (the scopes short of their bucket's allowance: _escrow.lua)  --@sharded
  for i = 1, n do
    local at = first + 4 * i - 4
    local held = tonumber(seen[at + 3]) or 0
    local daily, monthly, more = caps(seen[at + 4], default_caps(i, n))
    local soft = cap_soft(more)  --@cap_actions
    for w = W_DAILY, W_MONTHLY do
      local limit = daily
      if w == W_MONTHLY then limit = monthly end
      -- a corrupt override is nil here, and fails the script: never ignored
      limit = tonumber(limit)
      if limit >= 0 then
        local used = tonumber(seen[at + w - W_DAILY + 1]) or 0
        local room = limit - used - held
        if i > 1 then room = escrow_room(i, n, project, w, day, month, used, held) end  --@sharded
        -- (a warn or notify cap neither refuses nor limits: cap_soft)  --@cap_actions
        if not soft then  --@cap_actions
        if room < requested or (requested == 0 and room <= 0) then
          if i > 1 then  --@sharded
          short = escrow_short(short or {R_ESCROW}, i, n, project, w, day, month, limit, requested, room, used, held)  --@sharded
          else  --@sharded
          return {R_REFUSED, i, w, limit, used, held}
          end  --@sharded
        end
        if tightest < 0 or room < tightest then tightest = room end
        end  --@cap_actions
      end
    end
    if i == 1 and enforce then
      local balance = tonumber(seen[2])
      if not balance and seen[2] then  -- a user holding grants (_grants.lua)
        balance, seen[2] = grants_counted(now_ms, user, seen[2])
      end
      local available = (balance or 0) - tonumber(floor) + (free or 0)
      local own = math.max(held - (tonumber(seen[3]) or 0), 0)
      local room = available - own
      if room < requested or (requested == 0 and room <= 0) then
        return {R_REFUSED, i, W_BALANCE, available, 0, own}
      end
      if tightest < 0 or room < tightest then tightest = room end
    end
    if WEEKLY == '1' or VELOCITY == '1' then
      -- (with WEEKLY, the week counters come just before the scopes' keys)
      local week = WEEKLY == '1' and seen[first - n + i] or nil
      local refusal, room, minute = admit_more(now_ms, i, n, user, project, more,
                                               held, week, requested)
      if refusal then return refusal end
      if room >= 0 and (tightest < 0 or room < tightest) then tightest = room end
      if minute then
        minutes = minutes or {}
        minutes[#minutes + 1] = minute
      end
    end
  end
  if short then return short end  --@sharded
  return {R_OK, tightest}, due, seen, first, minutes
end

-- Adds amount to one day or month counter (sent as its text: redis.call
-- formats a Lua number with snprintf on every call); a counter made by this
-- call gets its TTL. Counters expire on their own a retention period after
-- their window ends: the TTL is relative (computed from the caller's clock),
-- so the server's clock plays no part.
local function count(key, amount, text, ttl_ms)
  if redis.call('INCRBY', key, text) == amount then
    redis.call('PEXPIRE', key, ttl_ms)
  end
end

-- Adds one fact's amount to the day and month counters of every scope, and
-- takes it off the user's balance where balances are kept: always when they
-- are enforced, else only for a user who has one (a user holding grants
-- draws on them: draw_grants). `head` is the argument list shared by
-- record.lua and settle.lua (ARGV[1..6]: now, day, day TTL, month, month
-- TTL, amount). `balance` is the balance key's value when the caller has
-- read it already (false: none kept), nil when not; `debit` true takes the
-- amount off the balance whatever the configuration (deduct). `entry` is the
-- fact's entry id, `model` its model (""): unless REFUND_WINDOW_MS is "0",
-- the charge keeps what a refund needs for that long (K_CHARGE, one string:
-- "<refunded>|<amount>|<day>|<draws>|<length of the user id>|<length of the
-- project id>|<user id><project id><model>", draws as
-- draw_grants returns them, "L" for all from a balance without grants, ""
-- for none; an allowance drawn on comes first, "A<period start>=<amount>").
-- `start`, `left`, `ttl_ms` are plan_allowance's (start nil: no allowance
-- applies): the allowance pays first, min(left, amount), and only the rest
-- is taken off the grants and the balance; the spent counters count the
-- whole amount. The keys are scope_keys', built from shared prefixes.
-- Returns the balance after (false when none is kept), what the allowance
-- paid and, with cap actions, the thresholds crossed (cap_events).
local function charge(head, user, project, balance, debit, entry, model, start,
                      left, ttl_ms)
  local text = head[6]
  local amount = tonumber(text)
  if amount <= 0 then return false, 0 end
  local day_ttl, month_ttl = head[3], head[5]
  local day = BASE .. K_DAY .. head[2] .. ':'
  local month = BASE .. K_MONTH .. head[4] .. ':'
  count(day .. S_USER .. user, amount, text, day_ttl)
  count(month .. S_USER .. user, amount, text, month_ttl)
  if project ~= '' then
    count(day .. S_PROJECT .. project, amount, text, day_ttl)
    count(month .. S_PROJECT .. project, amount, text, month_ttl)
  end
  count(day .. S_GLOBAL, amount, text, day_ttl)
  count(month .. S_GLOBAL, amount, text, month_ttl)
  model_count(head, user, project, model)  --@models
  local crossed = cap_events(head, user, project)  --@cap_actions
  local drawn, free = 0, ''
  if start then
    drawn, free = draw_allowance(user, start, left, ttl_ms, amount)
    amount = amount - drawn
    text = fmt(amount)
  end
  local bkey = BASE .. K_BALANCE .. user
  local enforced = debit or ENFORCE_BALANCE == '1'
  local after, draws = false, ''
  if balance == nil then balance = redis.call('GET', bkey) end
  if amount == 0 then  -- (all paid by the allowance: the balance as it is)
    if balance then after = tonumber(string.match(balance, '^[^|]+')) end
    if enforced and not after then after = 0 end
  elseif balance and string.find(balance, '|', 1, true) then  -- a user holding grants
    after, draws = draw_grants(head[1], user, balance, amount)
  elseif balance or enforced then
    after, draws = redis.call('DECRBY', bkey, text), 'L'
  end
  if free ~= '' then
    if draws == 'L' then draws = 'L=' .. text end
    if draws == '' then draws = free else draws = free .. ',' .. draws end
  end
  low_balance(head[1], user, after, amount)  --@low_balance
  if REFUND_WINDOW_MS ~= '0' then
    redis.call('SET', BASE .. K_CHARGE .. entry, '0|' .. head[6] .. '|' .. head[2] .. '|'
               .. draws .. '|' .. #user .. '|' .. #project .. '|' .. user .. project
               .. model, 'PX', REFUND_WINDOW_MS)
  end
  -- (with cap actions, and the thresholds warn scopes reached: cap_events)  --@cap_actions
  do return after, drawn, crossed end  --@cap_actions
  return after, drawn
end
