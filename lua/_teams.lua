-- Teams' helpers: a team's shared pool and its members' caps. Only the team
-- scripts (team_*.lua) call them, so no other script links them in: a
-- deployment that never charges a team runs exactly the scripts it ran
-- before teams existed.
--
-- A team's keys come declared (spendgate.core.keys.Keys.team_keys), as the
-- table `T` the helpers take, in this order:
--   T[1] team     hash: n (name), c (created, ms), b (the pool's balance),
--                 h (what the team's pending holds keep of it)
--   T[2] members  hash: user id -> "<role>|<daily cap>|<monthly cap>" (-1:
--                 no cap)
--   T[3] held     hash: user id -> what that member's pending holds keep
--   T[4] holds    zset: "<amount>|<length of the lease id>|<lease><user>" of
--                 each pending team hold (team_hold_entry), scored by its
--                 expiry (ms)
--   T[5] day      hash: user id -> spent on the pool that day
--   T[6] month    hash: user id -> spent on the pool that month
-- Money in micro-units, time in ms, as everywhere. A team's holds are also
-- ordinary holds (hold_create in _holds.lua: the user's, project's and
-- global held amounts, purged by every script), and the user's part held
-- on pools (K_POOL_HELD, pool_unhold in _holds.lua) keeps them out of the
-- user's balance rule; the team keeps its own
-- count of them beside, and purges its own expired ones whenever a team
-- script reads it (team_purge): no other script needs to know of teams.
-- A team hold taken for a model (with MODEL_CAPS) names it on its record
-- (m, model_hold in _models.lua) like any hold: the global purge takes it
-- off the model's held amount (mr:) on expiry, and a team script that ends
-- or grows such a hold does as settle.lua, release.lua and extend.lua do.

-- The member's role and caps (numbers, -1 for none), or nil for a user
-- who is not a member.
local function team_member(members, user)
  local m = redis.call('HGET', members, user)
  if not m then return nil end
  local a = string.find(m, '|', 1, true)
  local b = string.find(m, '|', a + 1, true)
  return string.sub(m, 1, a - 1), tonumber(string.sub(m, a + 1, b - 1)),
         tonumber(string.sub(m, b + 1))
end

-- Why a user may not charge a team: no such team, or not its member.
local function team_refusal(team)
  if redis.call('EXISTS', team) == 0 then return {R_UNKNOWN_TEAM} end
  return {R_NOT_A_MEMBER}
end

-- A pending team hold's member of the team's holds: its amount (text), then
-- the lease id's length, the lease and the user (either may hold any
-- character: the length keeps them apart).
local function team_hold_entry(text, lease, user)
  return text .. '|' .. #lease .. '|' .. lease .. user
end

-- A member's held amount goes down by `amount` (its field goes at zero).
local function team_unhold_member(held, user, amount)
  if redis.call('HINCRBY', held, user, fmt(-amount)) <= 0 then
    redis.call('HDEL', held, user)
  end
end

-- The team's holds whose expiry passed stop counting: its held amount and
-- each member's go down by them (at most PURGE_MAX per call; a backlog only
-- over-counts meanwhile: it refuses, it never overshoots).
local function team_purge(now_ms, T)
  local gone = redis.call('ZRANGEBYSCORE', T[4], '-inf', now_ms, 'LIMIT', '0', PURGE_MAX)
  if #gone == 0 then return end
  local total = 0
  for i = 1, #gone do
    local m = gone[i]
    local a = string.find(m, '|', 1, true)
    local b = string.find(m, '|', a + 1, true)
    local amount = tonumber(string.sub(m, 1, a - 1))
    local user = string.sub(m, b + 1 + tonumber(string.sub(m, a + 1, b - 1)))
    total = total + amount
    team_unhold_member(T[3], user, amount)
  end
  redis.call('ZREM', T[4], unpack(gone))
  redis.call('HINCRBY', T[1], 'h', fmt(-total))
end

-- The floor admit() (in _lib.lua) is given for a team charge: the team's
-- pool pays, not the user's balance, so the user's balance is not checked
-- (nil: none is read unless ENFORCE_BALANCE; with it, a floor no balance
-- can be below). The user's caps still hold.
local function team_user_floor()
  if ENFORCE_BALANCE == '1' then return '-9007199254740991' end
  return nil
end

-- Team admission, after the user's (admit): the member's daily and monthly
-- caps (spent on the pool + held by the member's pending holds + requested
-- <= cap) and the pool (balance - held - requested >= 0), with admit's
-- rule for requested = 0 (the room must be above zero). Expired team holds
-- are purged first. Returns {R_OK, room} (room: the tightest over the
-- member's caps and the pool) or the refusal {R_REFUSED, SC_MEMBER or
-- SC_TEAM, window, limit, spent, held}.
local function team_admit(now_ms, T, user, daily, monthly, requested)
  team_purge(now_ms, T)
  local held = tonumber(redis.call('HGET', T[3], user)) or 0
  local tightest = -1
  for w = W_DAILY, W_MONTHLY do
    local limit = daily
    if w == W_MONTHLY then limit = monthly end
    if limit >= 0 then
      local counter = T[5]
      if w == W_MONTHLY then counter = T[6] end
      local used = tonumber(redis.call('HGET', counter, user)) or 0
      local room = limit - used - held
      if room < requested or (requested == 0 and room <= 0) then
        return {R_REFUSED, SC_MEMBER, w, limit, used, held}
      end
      if tightest < 0 or room < tightest then tightest = room end
    end
  end
  local pool = redis.call('HMGET', T[1], 'b', 'h')
  local balance, pending = tonumber(pool[1]) or 0, tonumber(pool[2]) or 0
  local room = balance - pending
  if room < requested or (requested == 0 and room <= 0) then
    return {R_REFUSED, SC_TEAM, W_BALANCE, balance, 0, pending}
  end
  if tightest < 0 or room < tightest then tightest = room end
  return {R_OK, tightest}
end

-- A team hold (or its top-up) of `text` (an amount's text) counts in what
-- the user's holds on team pools keep (K_POOL_HELD: the part of the user's
-- held amount admit's balance rule leaves out; pool_unhold in _holds.lua
-- takes it off when the hold ends).
local function pool_hold(user, text)
  redis.call('INCRBY', BASE .. K_POOL_HELD .. user, text)
end

-- A new team hold of `amount` (its text `text`) for `lease`, until
-- expires_ms: counted in the pool's and the member's held amounts and in
-- the user's part held on pools (pool_hold), indexed for the team's purge,
-- and named on the hold record (its `t`: the global purge then lowers the
-- part held on pools too). A zero hold keeps nothing.
local function team_hold(T, lease, user, amount, text, expires_ms, team_id)
  redis.call('HSET', BASE .. K_HOLD .. lease, 't', team_id)
  if amount == 0 then return end
  redis.call('HINCRBY', T[1], 'h', text)
  redis.call('HINCRBY', T[3], user, text)
  pool_hold(user, text)
  redis.call('ZADD', T[4], expires_ms, team_hold_entry(text, lease, user))
end

-- A team hold ends (settled, released): it stops counting in the pool and
-- the member's held amounts, unless the team's purge already took it.
-- `text` is the hold's amount as its record keeps it.
local function team_unhold(T, lease, user, text)
  if redis.call('ZREM', T[4], team_hold_entry(text, lease, user)) == 1 then
    local amount = tonumber(text)
    redis.call('HINCRBY', T[1], 'h', fmt(-amount))
    team_unhold_member(T[3], user, amount)
  end
end

-- A member's spending on the pool that day or month: a counter made by this
-- call gets the window's TTL (relative, from the caller's clock).
local function team_count(counter, user, amount, text, ttl_ms)
  if redis.call('HINCRBY', counter, user, text) == amount then
    redis.call('PEXPIRE', counter, ttl_ms)
  end
end

-- A charge on a team's pool, a fact: the spent counters of every scope (as
-- charge in _lib.lua does, but nothing is taken off the user's balance),
-- the member's day and month on the team, and the pool's balance. `head`
-- is the fact's ARGV[1..6] (now, day, day TTL, month, month TTL, amount).
-- Unless REFUND_WINDOW_MS is "0" the charge keeps its refund record, with
-- no draws (a refund lowers the counters and gives nothing back to a
-- user's balance). With `pool` false (a replayed fact of a team that is not
-- there) only the counters move. Returns the pool's balance after (false
-- without a pool) and, with cap actions, the thresholds the user's scopes
-- reached (cap_events in _actions.lua: the user's caps' events are written
-- as for any charge).
local function team_charge(head, T, user, project, entry, model, pool)
  local text = head[6]
  local amount = tonumber(text)
  if amount <= 0 then
    if not pool then return false end
    return tonumber(redis.call('HGET', T[1], 'b')) or 0
  end
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
  if REFUND_WINDOW_MS ~= '0' then
    redis.call('SET', BASE .. K_CHARGE .. entry, '0|' .. text .. '|' .. head[2] .. '||'
               .. #user .. '|' .. #project .. '|' .. user .. project .. model,
               'PX', REFUND_WINDOW_MS)
  end
  team_count(T[5], user, amount, text, day_ttl)
  team_count(T[6], user, amount, text, month_ttl)
  local after = false
  if pool then after = redis.call('HINCRBY', T[1], 'b', '-' .. text) end
  -- (with cap actions, the thresholds warn scopes reached: cap_events)  --@cap_actions
  do return after, crossed end  --@cap_actions
  return after
end

-- A refund of a team charge lowers the member's spending on the pool that
-- day or month by `amount`, where it is still kept (never below zero: the
-- field goes at zero; a counter that expired is not made again).
local function team_uncount(counter, user, amount)
  local spent = tonumber(redis.call('HGET', counter, user))
  if not spent then return end
  if spent > amount then
    redis.call('HSET', counter, user, fmt(spent - amount))
  else
    redis.call('HDEL', counter, user)
  end
end
