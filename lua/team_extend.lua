-- team_extend: top a live team hold (team_reserve) up by `more`, under
-- team_reserve's admission rule for the extra amount, and optionally move
-- its expiry later, as extend.lua does for a hold of the user's own. The
-- hold's user must still be a member of the team (a member removed keeps
-- their open leases to settle or release, but takes no more from the pool,
-- not even time); then the user's own caps and the project's and global
-- caps (not the user's balance: the pool pays; nor the plan allowance), the
-- model's caps at the hold's model, the member's caps on the team and the
-- pool admit `more`, the hold's own amount counting as held. Admitted, the
-- hold grows wherever team_reserve wrote it: its record, the scopes' (and
-- the model's) held amounts, the pool's and the member's held amounts and
-- its entry among the team's holds, so that its settle, release or expiry
-- gives back the whole. A refusal changes nothing.
--
-- KEYS[1] - the hold record (K_HOLD)
-- KEYS[2] - idempotency key, or for none the hold record's again (as in
--           extend.lua)
-- KEYS[3] - the team        KEYS[4] - its members   KEYS[5] - members' held
-- KEYS[6] - its pending holds    KEYS[7] - members' day    KEYS[8] - month
--           (see _teams.lua)
-- ARGV[1..7] - as in extend.lua (now_ms, day, month, more, lease id,
--              fingerprint, the new expires_ms or "")
-- ARGV[8] - team id
-- (with MODEL_CAPS, a hold taken for a model grows under that model's caps  --@models
-- and in its held amounts, as in extend.lua)  --@models
-- return as extend.lua (no plan: never R_STALE_PRICE), or
--        {R_NOT_A_MEMBER, user, project} / {R_UNKNOWN_TEAM, user, project};
--        a refusal by the team names scope SC_MEMBER or SC_TEAM, as
--        team_reserve.lua's. {R_LEASE_EXPIRED} too for a hold the team's
--        own purge already let go (a caller whose clock ran ahead)

local hkey, ikey = KEYS[1], KEYS[2]
if ikey == hkey then ikey = '' end  -- no idempotency key
local T = {KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7], KEYS[8]}
local h = redis.call('HMGET', hkey, 'st', 'a', 'u', 'p', 'x', 't')
local user, project = h[3], h[4]
local fingerprint = ARGV[6]
local seen = idem_lookup(ikey, fingerprint)
if seen then
  if seen[1] == R_REPLAYED then seen[3], seen[4] = user or '', project or '' end
  return seen
end

local state = h[1]
if not state or h[6] ~= ARGV[8] then return {R_UNKNOWN_LEASE} end
if state == HOLD_VOIDED then return {R_LEASE_RELEASED} end
if state == HOLD_SETTLED then return {R_LEASE_SETTLED} end
local now_ms = ARGV[1]
if state ~= HOLD_PENDING or tonumber(now_ms) >= tonumber(h[5]) then
  return {R_LEASE_EXPIRED}
end

local role, daily, monthly = team_member(T[2], user)
if not role then
  local refusal = team_refusal(T[1])
  refusal[2], refusal[3] = user, project
  return refusal
end

local more = tonumber(ARGV[4])
if more > 0 then
  local held_for = redis.call('HGET', hkey, 'm') or ''  --@models
  local verdict, _, _, _, minutes = admit(now_ms, ARGV[2], ARGV[3], user, project,
                                          more, team_user_floor())
  verdict = model_admit(verdict, ARGV[2], ARGV[3], user, project, more, held_for)  --@models
  if verdict[1] == R_OK then verdict = team_admit(now_ms, T, user, daily, monthly, more) end
  if verdict[1] ~= R_OK then
    local at = #verdict + 1
    verdict[at], verdict[at + 1] = user, project
    return verdict
  end
  -- (a pending hold unexpired by this clock is among the team's holds,
  -- unless another caller's clock, ahead, purged it there: gone for the team)
  local amount = tonumber(h[2])
  local entry = team_hold_entry(h[2], ARGV[5], user)
  if amount > 0 and redis.call('ZREM', T[4], entry) == 0 then return {R_LEASE_EXPIRED} end
  add_held(user, project, more, ARGV[4])
  pool_hold(user, ARGV[4])
  model_add_held(held_for, user, project, more, ARGV[4])  --@models
  if minutes then count_admitted_minutes(minutes, now_ms, more, ARGV[4]) end
  redis.call('HINCRBY', T[1], 'h', ARGV[4])
  redis.call('HINCRBY', T[3], user, ARGV[4])
end

local amount = fmt(tonumber(h[2]) + more)
local expires_ms = h[5]
local lease = ARGV[5]
if ARGV[7] ~= '' and tonumber(ARGV[7]) > tonumber(expires_ms) then
  expires_ms = ARGV[7]  -- (later only: "due" stays true, as in extend.lua)
  redis.call('ZADD', BASE .. K_HOLDS, expires_ms, lease)
end
-- The hold's entry among the team's: its new amount, scored by its expiry
-- (nothing added: only its expiry moves, XX as a zero hold has none).
if more > 0 then
  redis.call('ZADD', T[4], expires_ms, team_hold_entry(amount, lease, user))
elseif expires_ms ~= h[5] then
  redis.call('ZADD', T[4], 'XX', expires_ms, team_hold_entry(h[2], lease, user))
end
redis.call('HSET', hkey, 'a', amount, 'x', expires_ms)

local payload = amount .. '|' .. expires_ms
idem_store(ikey, fingerprint, payload)
return {R_OK, payload, user, project}
