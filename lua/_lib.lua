-- Shared helpers: spendgate.scripts prepends the ones each script uses to it, so
-- each operation still runs as one self-contained, atomic EVALSHA.
--
-- Money is in integer micro-units (1e-6 of the unit) and time in milliseconds
-- since the Unix epoch, everywhere in these scripts. Lua numbers are doubles:
-- exact for integers up to 2^53 (about 9e9 units), far above any documented
-- amount or limit.
--
-- Key layout, below the deployment's base "<prefix>:{sg}:" (one hash tag, so
-- every key of a deployment lives on one cluster slot: the global scope is
-- touched by every call anyway). Ids always come last, after a fixed-format
-- structural part, so no id can alias another entity's key.
--   e:<s>:<id>             hash: h (held), b (balance), dl / ml (limit overrides)
--   d:<yyyymmdd>:<s>:<id>  string: spent in that UTC day
--   m:<yyyymm>:<s>:<id>    string: spent in that UTC month
--   h:<lease>              hash: one hold (st = p pending, s settled, v voided, x expired)
--   holds                  zset: pending lease ids scored by expiry
--   i:<ns>:<key>           string: "<fingerprint>|<result payload>"
--   ledger                 stream: one entry per fact
-- <s> is u (user), p (project) or g (global, whose id is empty).

-- string.format keeps large integers out of Lua's %.14g tostring (1e+15).
local function fmt(n)
  return string.format('%.0f', n)
end

local function entity_key(base, scope, id)
  return base .. 'e:' .. scope .. ':' .. id
end

local function day_key(base, day, scope, id)
  return base .. 'd:' .. day .. ':' .. scope .. ':' .. id
end

local function month_key(base, month, scope, id)
  return base .. 'm:' .. month .. ':' .. scope .. ':' .. id
end

-- The scopes one charge or hold touches: user, the project when there is one,
-- and global, as {scope letter, id} pairs in reporting order.
local function scopes_of(user, project)
  if project ~= '' then
    return {{'u', user}, {'p', project}, {'g', ''}}
  end
  return {{'u', user}, {'g', ''}}
end

-- Moves the held amount of every scope of a hold. A user's or project's
-- field is dropped at zero, so an idle entity costs no memory; the global
-- entity is one key, so its field stays (one command less per settle). A zero
-- move is skipped: negated, it would be Lua's -0, which Redis sends as "-0"
-- and HINCRBY rejects.
-- (The entity keys are entity_key's, written out: this runs on every hold.)
local function add_held(base, user, project, delta)
  if delta == 0 then return end
  local ukey = base .. 'e:u:' .. user
  if redis.call('HINCRBY', ukey, 'h', delta) <= 0 then
    redis.call('HDEL', ukey, 'h')
  end
  if project ~= '' then
    local pkey = base .. 'e:p:' .. project
    if redis.call('HINCRBY', pkey, 'h', delta) <= 0 then
      redis.call('HDEL', pkey, 'h')
    end
  end
  redis.call('HINCRBY', base .. 'e:g:', 'h', delta)
end

-- Holds stop counting once their expiry passes: every script that reads held
-- amounts first purges the expired ones. A pending hold record has no TTL of
-- its own, so it is always there to be purged. Bounded per call; a larger
-- backlog drains over the next calls and, meanwhile, only over-counts (it
-- refuses, it never overshoots).
local function purge_expired_holds(base, now_ms, max_n)
  local zkey = base .. 'holds'
  -- No pending hold at all (always so for callers without leases): EXISTS
  -- costs a fraction of an empty range scan, on every admission call.
  if redis.call('EXISTS', zkey) == 0 then return end
  local ids = redis.call('ZRANGEBYSCORE', zkey, '-inf', now_ms, 'LIMIT', 0, max_n)
  for i = 1, #ids do
    local hkey = base .. 'h:' .. ids[i]
    local h = redis.call('HMGET', hkey, 'st', 'a', 'u', 'p', 'r')
    if h[1] == 'p' then
      add_held(base, h[3], h[4], -tonumber(h[2]))
      redis.call('HSET', hkey, 'st', 'x')
      redis.call('PEXPIRE', hkey, h[5])
    end
  end
  if #ids > 0 then
    redis.call('ZREM', zkey, unpack(ids))
  end
end

-- Admission for every scope and window: spent + held + requested <= limit
-- (spent + held < limit when nothing is requested) and, for the user with
-- balances enforced, balance - held - requested >= min_balance (> when
-- nothing is requested). Limits of -1 mean "no cap"; a per-entity override in
-- the entity hash wins over the default passed in. `args` is the admission
-- argument list of check.lua and reserve.lua (ARGV[1..16]: base, now, day,
-- month, requested, enforce_balance, min_balance, purge_max, user, project,
-- then the default limits, daily and monthly, of user, project and global).
-- Every scope's day and month counters are read in one MGET. No table is
-- made here but the replies: this runs on every admission.
-- Returns {0, room} when admitted, room being the smallest amount still
-- available over all capped windows (-1 when nothing is capped), or the
-- refusal {1, scope index, window (1 daily, 2 monthly, 3 balance), limit,
-- spent, held}.
local function admit(args, requested)
  local base, user, project = args[1], args[9], args[10]
  local d = base .. 'd:' .. args[3] .. ':'
  local m = base .. 'm:' .. args[4] .. ':'
  local spent
  if project == '' then
    spent = redis.call('MGET', d .. 'u:' .. user, m .. 'u:' .. user, d .. 'g:', m .. 'g:')
  else
    spent = redis.call('MGET', d .. 'u:' .. user, m .. 'u:' .. user,
                       d .. 'p:' .. project, m .. 'p:' .. project, d .. 'g:', m .. 'g:')
  end
  local n = #spent / 2
  local tightest = -1
  for i = 1, n do
    -- the entity key (entity_key's), and where the scope's default limits
    -- are in args
    local ekey, defaults
    if i == 1 then
      ekey, defaults = base .. 'e:u:' .. user, 11
    elseif i < n then
      ekey, defaults = base .. 'e:p:' .. project, 13
    else
      ekey, defaults = base .. 'e:g:', 15
    end
    local e = redis.call('HMGET', ekey, 'h', 'b', 'dl', 'ml')
    local held = tonumber(e[1]) or 0
    for w = 1, 2 do
      local limit = e[w + 2] or args[defaults + w - 1]
      limit = tonumber(limit)
      if limit >= 0 then
        local used = tonumber(spent[2 * i + w - 2]) or 0
        local room = limit - used - held
        if room < requested or (requested == 0 and room <= 0) then
          return {1, i, w, limit, used, held}
        end
        if tightest < 0 or room < tightest then tightest = room end
      end
    end
    if i == 1 and args[6] == '1' then
      local available = (tonumber(e[2]) or 0) - tonumber(args[7])
      local room = available - held
      if room < requested or (requested == 0 and room <= 0) then
        return {1, i, 3, available, 0, held}
      end
      if tightest < 0 or room < tightest then tightest = room end
    end
  end
  return {0, tightest}
end

-- Adds amount to one day or month counter; a counter made by this call gets
-- its TTL. Counters expire on their own a retention period after their
-- window ends: the TTL is relative (computed from the caller's clock), so the
-- server's clock plays no part.
local function count(key, amount, ttl_ms)
  if redis.call('INCRBY', key, amount) == amount then
    redis.call('PEXPIRE', key, ttl_ms)
  end
end

-- Adds one fact's amount to the day and month counters of every scope, and
-- takes it off the user's balance where balances are kept. `head` is the
-- argument list shared by record.lua and settle.lua (ARGV[1..8]: base, now,
-- day, day TTL, month, month TTL, amount, track_balance). The keys are
-- day_key/month_key's, built from shared prefixes (this runs on every fact).
local function charge(head, user, project)
  local amount = tonumber(head[7])
  if amount <= 0 then return false end
  local base, day_ttl, month_ttl = head[1], head[4], head[6]
  local day = base .. 'd:' .. head[3] .. ':'
  local month = base .. 'm:' .. head[5] .. ':'
  count(day .. 'u:' .. user, amount, day_ttl)
  count(month .. 'u:' .. user, amount, month_ttl)
  if project ~= '' then
    count(day .. 'p:' .. project, amount, day_ttl)
    count(month .. 'p:' .. project, amount, month_ttl)
  end
  count(day .. 'g:', amount, day_ttl)
  count(month .. 'g:', amount, month_ttl)
  local ekey = base .. 'e:u:' .. user
  if head[8] == '1' or redis.call('HEXISTS', ekey, 'b') == 1 then
    return redis.call('HINCRBY', ekey, 'b', -amount)
  end
  return false
end

-- Idempotency: what an idempotency record ("<fingerprint>|<payload>", or
-- false when there is none) answers a call: nil when the key is unused (or
-- there is none), {2, payload} for a replay with the same fingerprint, {3}
-- for the same key with other arguments.
local function idem_answer(record, fingerprint)
  if not record then return nil end
  local sep = string.find(record, '|', 1, true)
  if string.sub(record, 1, sep - 1) == fingerprint then
    return {2, string.sub(record, sep + 1)}
  end
  return {3}
end

local function idem_lookup(ikey, fingerprint)
  if ikey == '' then return nil end
  return idem_answer(redis.call('GET', ikey), fingerprint)
end

local function idem_store(ikey, fingerprint, payload, ttl_ms)
  if ikey ~= '' then
    redis.call('SET', ikey, fingerprint .. '|' .. payload, 'PX', ttl_ms)
  end
end

-- Idempotency for a fact, in one command: SET NX GET stores
-- "<fingerprint>|<payload>" unless the key is taken, and answers what was
-- there. nil when the call is new (its record now stands), {2, payload} for
-- a replay with the same fingerprint, {3} for the same key with other
-- arguments. Called before the fact's first other write: a script that fails
-- on its first write (an out-of-memory Redis) has then written nothing.
local function idem_claim(ikey, fingerprint, payload, ttl_ms)
  return idem_answer(redis.call('SET', ikey, fingerprint .. '|' .. payload,
                                'NX', 'GET', 'PX', ttl_ms), fingerprint)
end

-- Appends one fact to the ledger stream: `fields` as they are, then each
-- name/value pair of `optional` whose value is not empty (the flusher reads
-- an absent field as empty; leaving them out saves the stream's memory and
-- the script's time). maxlen 0 means no cap (a flusher drains it), otherwise
-- the stream is trimmed approximately.
local function ledger_append(base, maxlen, fields, optional)
  local n = #fields
  for i = 1, #optional, 2 do
    if optional[i + 1] ~= '' then
      fields[n + 1] = optional[i]
      fields[n + 2] = optional[i + 1]
      n = n + 2
    end
  end
  if maxlen > 0 then
    return redis.call('XADD', base .. 'ledger', 'MAXLEN', '~', maxlen, '*', unpack(fields))
  end
  return redis.call('XADD', base .. 'ledger', '*', unpack(fields))
end
