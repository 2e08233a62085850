-- Holds' helpers: a hold's record and expiry index, the held amounts of its
-- scopes, and the purge of expired holds, shared by every script that takes,
-- ends or reads holds (spendgate.scripts links the ones each script uses,
-- as _lib.lua's). A hold record (K_HOLD) is a hash: st (its HOLD_ state), a
-- (amount), u (user), p (project), x (expires_ms), r (how long to keep it
-- once final, ms), once settled c (the cost) and pl (the replay payload);
-- a team's also t (the team: _teams.lua), one taken for a model m
-- (_models.lua). "due" holds a time (ms) no later than the earliest pending
-- expiry: nothing to purge before it (absent: unknown; 2^53 - 1 when
-- nothing is pending).

-- A new hold: adds `amount` (and its text, `text`: redis.call would format
-- the number with snprintf on every call) to each scope's held amount.
local function add_held(user, project, amount, text)
  if amount == 0 then return end  -- a zero hold keeps no key
  local r = BASE .. K_HELD
  redis.call('INCRBY', r .. S_USER .. user, text)
  if project ~= '' then redis.call('INCRBY', r .. S_PROJECT .. project, text) end
  redis.call('INCRBY', r .. S_GLOBAL, text)
end

-- A new hold of `amount` (its text: `text`) for lease `lease`, pending until
-- expires_ms (text): its record, its place in the expiry index, the due
-- time brought forward when it is the earliest, and each scope's held amount.
-- `due` is the due time admission read. The record is kept
-- IDEMPOTENCY_TTL_MS once it is final.
local function hold_create(lease, amount, text, user, project, expires_ms, due)
  redis.call('HSET', BASE .. K_HOLD .. lease, 'st', HOLD_PENDING, 'a', text,
             'u', user, 'p', project, 'x', expires_ms, 'r', IDEMPOTENCY_TTL_MS)
  redis.call('ZADD', BASE .. K_HOLDS, expires_ms, lease)
  if tonumber(expires_ms) < tonumber(due) then
    redis.call('SET', BASE .. K_DUE, expires_ms)  -- the earliest pending expiry now
  end
  add_held(user, project, amount, text)
end

-- A hold ends (settled, released or expired): takes `amount` off each of its
-- scopes' held amounts, with one MGET, then one MSET of what stays held and
-- one DEL of what drops to zero, so an idle scope keeps no key. The user's
-- balance is read in the same MGET and returned (false when none is kept;
-- nil for a zero hold, which reads nothing): settle charges it next.
local function remove_held(user, project, amount)
  if amount == 0 then return nil end  -- nothing held, nothing read
  local r = BASE .. K_HELD
  local u, b = r .. S_USER .. user, BASE .. K_BALANCE .. user
  local keys
  if project == '' then
    keys = {u, r .. S_GLOBAL, b}
  else
    keys = {u, r .. S_PROJECT .. project, r .. S_GLOBAL, b}
  end
  local seen = redis.call('MGET', unpack(keys))
  local n = #keys - 1  -- the held amounts; the balance is last
  local kept, gone = {}, {}
  for i = 1, n do
    local left = (tonumber(seen[i]) or 0) - amount
    if left > 0 then
      kept[#kept + 1] = keys[i]
      kept[#kept + 1] = left
    else
      gone[#gone + 1] = keys[i]
    end
  end
  if #kept > 0 then redis.call('MSET', unpack(kept)) end
  if #gone > 0 then redis.call('DEL', unpack(gone)) end
  return seen[n + 1]
end

-- A hold on a team's pool ends (settled, released, expired): what the
-- user's holds on team pools keep (K_POOL_HELD, the part of the user's held
-- amount that keeps none of the user's balance: admit's balance rule leaves
-- it out) goes down by `amount`, the key going at zero (never below: a hold
-- taken before the key was kept is not in it).
local function pool_unhold(user, amount)
  if amount == 0 then return end
  local key = BASE .. K_POOL_HELD .. user
  if redis.call('DECRBY', key, fmt(amount)) <= 0 then redis.call('DEL', key) end
end

-- Holds stop counting once their expiry passes: every script that reads held
-- amounts first purges the expired ones. `due` is the "due" key as the
-- caller read it (false when absent): no pending hold expires before it, so
-- until then nothing is run at all (the common case, with holds pending or
-- not). Otherwise the expired holds are purged, bounded per call (a larger
-- backlog drains over the next calls and meanwhile only over-counts: it
-- refuses, it never overshoots), and "due" becomes the earliest expiry still
-- pending. A pending hold record has no TTL of its own, so it is always there
-- to be purged. now_ms is the argument's text; at most PURGE_MAX holds are
-- purged. Returns whether a hold was purged (the held amounts read before are
-- stale then) and the due time in force after the call.
local function purge_expired_holds(now_ms, due)
  if due and tonumber(due) > tonumber(now_ms) then return false, due end
  local zkey = BASE .. K_HOLDS
  local ids = redis.call('ZRANGEBYSCORE', zkey, '-inf', now_ms, 'LIMIT', '0', PURGE_MAX)
  for i = 1, #ids do
    local hkey = BASE .. K_HOLD .. ids[i]
    local h = redis.call('HMGET', hkey, 'st', 'a', 'u', 'p', 'r', 't')
    if h[1] == HOLD_PENDING then
      remove_held(h[3], h[4], tonumber(h[2]))
      if h[6] then pool_unhold(h[3], tonumber(h[2])) end
      model_unhold(redis.call('HGET', hkey, 'm'), h[3], h[4], tonumber(h[2]))  --@models
      redis.call('HSET', hkey, 'st', HOLD_EXPIRED)
      redis.call('PEXPIRE', hkey, h[5])
    end
  end
  if #ids > 0 then
    redis.call('ZREM', zkey, unpack(ids))
  end
  -- (a settled or released hold leaves "due" early: harmless, it only
  -- brings this recomputation forward)
  due = redis.call('ZRANGE', zkey, '0', '0', 'WITHSCORES')[2] or '9007199254740991'
  redis.call('SET', BASE .. K_DUE, due)
  return #ids > 0, due
end

-- What a call naming a hold whose record is not there answers:
-- {R_MOVED, bucket} when a rebucketing moved the (finished) hold to its
-- user's bucket, which the lease id does not name (K_FORWARD, written by
-- spendgate.rebucket), else {R_UNKNOWN_LEASE}.
local function hold_missing(lease)
  local moved = redis.call('GET', BASE .. K_FORWARD .. lease)
  if moved then return {R_MOVED, moved} end
  return {R_UNKNOWN_LEASE}
end
