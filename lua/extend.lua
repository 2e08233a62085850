-- extend: top a live hold up by `more`, under the same admission rule as
-- reserve (every scope's daily and monthly caps, held amounts included, and
-- the balance where enforced, with what is left of the user's plan
-- allowance counted as balance), and optionally move its expiry later. A
-- refusal changes nothing. Only a pending hold whose expiry has not passed
-- can grow: a settled, released or expired one is refused by its state.
--
-- KEYS[1] - the hold record (K_HOLD)
-- KEYS[2] - idempotency key, or for none the hold record's again (every
--           declared key in the deployment's slot: Redis Cluster refuses a
--           script whose keys span slots, and "" has a slot of its own)
-- ARGV[1] - now_ms
-- ARGV[2] - day (yyyymmdd, UTC)       ARGV[3] - month (yyyymm, UTC)
-- ARGV[4] - more: the amount to add to the hold, micro-units (0 adds nothing
--           and is not admitted: it only moves the expiry)
-- ARGV[5] - lease id
-- ARGV[6] - fingerprint of the arguments (for the idempotency key)
-- ARGV[7] - the new expires_ms, "" to keep the hold's (an earlier one than
--           the hold's is ignored: extend never shortens a hold)
-- ARGV[8] - the plan argument (_allowance.lua) for the hold's user, as
--           reserve's: what is left of the plan's allowance counts as
--           balance ("=" when the caller does not know the user); "" when
--           balances are not enforced or nothing is added (then nothing is
--           read)
-- return {R_OK, "amount|expires_ms", user, project} with the hold's new
--        amount, {R_REPLAYED, the first call's payload, user, project} for an
--        idempotent replay, {R_CONFLICT}, {R_UNKNOWN_LEASE}, {R_MOVED,
--        bucket} when a rebucketing moved the (finished) hold there,
--        {R_LEASE_RELEASED}, {R_LEASE_SETTLED}, {R_LEASE_EXPIRED}, or the
--        refusal {R_REFUSED, scope, window, limit, spent, held[, free_ms],
--        user, project} (free_ms for a per-minute refusal, as admit answers),
--        or {R_STALE_PRICE, user, the user's plan} when it is not the one
--        expected (nothing was written)

local hkey, ikey = KEYS[1], KEYS[2]
if ikey == hkey then ikey = '' end  -- no idempotency key
local h = redis.call('HMGET', hkey, 'st', 'a', 'u', 'p', 'x')
local user, project = h[3], h[4]
local fingerprint = ARGV[6]
local seen = idem_lookup(ikey, fingerprint)
if seen then
  if seen[1] == R_REPLAYED then seen[3], seen[4] = user or '', project or '' end
  return seen
end

local state = h[1]
if not state then return hold_missing(ARGV[5]) end
if state == HOLD_VOIDED then return {R_LEASE_RELEASED} end
if state == HOLD_SETTLED then return {R_LEASE_SETTLED} end
local now_ms = ARGV[1]
if state ~= HOLD_PENDING or tonumber(now_ms) >= tonumber(h[5]) then
  return {R_LEASE_EXPIRED}
end

local more = tonumber(ARGV[4])
if more > 0 then
  -- The hold's own amount is among the held amounts admission reads, so the
  -- rule is reserve's for the hold's new total: the allowance left counts
  -- as balance, as it does for a reserve (settle draws on it first).
  local stale, _, left = plan_allowance(ARGV[8], user)
  if stale then return {R_STALE_PRICE, user, stale} end
  local verdict, _, _, _, minutes = admit(now_ms, ARGV[2], ARGV[3], user,
                                          project, more, nil, left)
  local held_for = redis.call('HGET', hkey, 'm') or ''  --@models
  verdict = model_admit(verdict, ARGV[2], ARGV[3], user, project, more, held_for)  --@models
  if verdict[1] ~= R_OK then
    local at = #verdict + 1
    verdict[at], verdict[at + 1] = user, project
    return verdict
  end
  add_held(user, project, more, ARGV[4])
  model_add_held(held_for, user, project, more, ARGV[4])  --@models
  -- (a top-up counts in the minute of a scope with a per-minute cap, as a
  -- new hold does)
  if minutes then count_admitted_minutes(minutes, now_ms, more, ARGV[4]) end
end

local amount = fmt(tonumber(h[2]) + more)
local expires_ms = h[5]
local lease = ARGV[5]
if ARGV[7] ~= '' and tonumber(ARGV[7]) > tonumber(expires_ms) then
  -- A later expiry only: "due" (no pending expiry before it) stays true.
  expires_ms = ARGV[7]
  redis.call('ZADD', BASE .. K_HOLDS, expires_ms, lease)
end
redis.call('HSET', hkey, 'a', amount, 'x', expires_ms)

local payload = amount .. '|' .. expires_ms
idem_store(ikey, fingerprint, payload)
return {R_OK, payload, user, project}
