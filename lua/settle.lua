-- settle: post a hold at the actual cost, a fact. The hold stops counting and
-- the actual cost (which may exceed the estimate) is charged and appended to
-- the ledger. Settling again with the same cost replays the first result; a
-- hold whose expiry passed is still settled (the money was spent), marked late.
--
-- KEYS[1] - the hold record (K_HOLD)
-- ARGV[1] - now_ms
-- ARGV[2] - day (yyyymmdd, UTC)       ARGV[3] - day counters' TTL when created, ms
-- ARGV[4] - month (yyyymm, UTC)       ARGV[5] - month counters' TTL when created, ms
-- ARGV[6] - actual cost, micro-units
-- ARGV[7] - entry id (fresh, unique)
-- ARGV[8] - model, ""      ARGV[9] - metadata JSON, ""
-- (with MODEL_CAPS, "" stands for the hold's model, if it has one)  --@models
-- ARGV[10] - lease id
-- ARGV[11] - the plan argument (_allowance.lua) for the hold's user: the
--            plan expected and its allowance's period ("=" when the caller
--            does not know the user); lenient ("~") when replayed from the
--            spool; "" for a settle spooled before allowances
-- (the plan's allowance pays first, then the grants and the balance)
-- return {R_OK, user, project, late (1 or 0), estimate, allowance used} when
--        settled now (the entry and time are the caller's), {R_REPLAYED,
--        user, project, "entry|settled_ms|late|estimate|allowance used"}
--        when it already was, at this cost; {R_CONFLICT, actual} when it was
--        settled at another cost; {R_UNKNOWN_LEASE}; {R_MOVED, bucket}
--        when a rebucketing moved the hold there; {R_LEASE_RELEASED} when
--        the lease was released; {R_STALE_PRICE, user, the user's plan}
--        when it is not the one expected (strict: nothing was written);
--        sharded, {R_OK, ..., allowance used, crossed or false, deficits,
--        model} when the bucket now spends past its allowance of a shared
--        cap (_escrow.lua)
-- (with cap actions, a settle's reply adds the thresholds it took warn  --@cap_actions
-- scopes to: {R_OK, user, project, late, estimate, allowance used,  --@cap_actions
-- crossed}, as cap_events returns them; the replay payload keeps them:  --@cap_actions
-- cap_payload)  --@cap_actions
-- (with MODEL_CAPS, the model the cost counted at ends each reply: {R_OK,  --@models
-- user, project, late, estimate, allowance used, crossed or false,  --@models
-- deficits or false, model} and {R_REPLAYED, user, project, payload,  --@models
-- model}, the settled hold's m keeping it, "" for none)  --@models

local hkey = KEYS[1]
local h = redis.call('HMGET', hkey, 'st', 'a', 'u', 'p', 'x', 'r', 'c', 'pl')
local state = h[1]
if not state then return hold_missing(ARGV[10]) end
if state == HOLD_VOIDED then return {R_LEASE_RELEASED} end
local cost = ARGV[6]
if state == HOLD_SETTLED then
  if h[7] == cost then return {R_REPLAYED, h[3], h[4], h[8]} end  --@!models
  if h[7] == cost then return {R_REPLAYED, h[3], h[4], h[8], redis.call('HGET', hkey, 'm') or ''} end  --@models
  return {R_CONFLICT, h[7]}
end

local now_ms, entry, lease = ARGV[1], ARGV[7], ARGV[10]
local held_for = redis.call('HGET', hkey, 'm')  --@models
if ARGV[8] == '' and held_for then ARGV[8] = held_for end  --@models
local user, project = h[3], h[4]
local stale, start, left, ttl_ms = plan_allowance(ARGV[11], user)
if stale then return {R_STALE_PRICE, user, stale} end
local late = '0'
if tonumber(now_ms) >= tonumber(h[5]) then late = '1' end
-- The balance is read with the held amounts: charge need not look again.
local balance
if state == HOLD_PENDING and redis.call('ZREM', BASE .. K_HOLDS, lease) == 1 then
  balance = remove_held(user, project, tonumber(h[2]))
  model_unhold(held_for, user, project, tonumber(h[2]))  --@models
end

-- (crossed: nil without cap actions)
local _, drawn, crossed = charge(ARGV, user, project, balance, false, entry,
                                 ARGV[8], start, left, ttl_ms)
local used = ''
if drawn > 0 then used = fmt(drawn) end
if WEEKLY == '1' then count_weeks(ARGV, user, project) end
-- The hold counted in the minute when it was taken: only a cost above it
-- counts now.
if VELOCITY == '1' then
  local above = tonumber(cost) - tonumber(h[2])
  if above > 0 then count_minutes(now_ms, user, project, above, fmt(above)) end
end
ledger_append(F_ENTRY_ID, entry, F_KIND, KIND_SETTLE, F_OCCURRED_AT, now_ms,
              F_USER_ID, user, F_AMOUNT, cost, F_LEASE_ID, lease, F_ESTIMATE, h[2],
              F_LATE, late, F_PROJECT_ID, project, F_MODEL, ARGV[8],
              F_METADATA, ARGV[9], F_ALLOWANCE_USED, used)

local payload = entry .. '|' .. now_ms .. '|' .. late .. '|' .. h[2] .. '|' .. used
redis.call('HSET', hkey, 'st', HOLD_SETTLED, 'c', cost, 'pl', payload)  --@!cap_actions
redis.call('HSET', hkey, 'st', HOLD_SETTLED, 'c', cost, 'pl', cap_payload(payload, crossed))  --@cap_actions
if ARGV[8] ~= (held_for or '') then redis.call('HSET', hkey, 'm', ARGV[8]) end  --@models
redis.call('PEXPIRE', hkey, h[6])
-- (sharded: what the bucket now spends past its allowance, to borrow)  --@sharded
local deficits = escrow_deficits(ARGV[2], ARGV[4], project)  --@sharded
if deficits then  --@sharded
  return {R_OK, user, project, tonumber(late), tonumber(h[2]), drawn, crossed or false,  --@sharded
          deficits, ARGV[8]}  --@sharded
end  --@sharded
do return {R_OK, user, project, tonumber(late), tonumber(h[2]), drawn, crossed or false, false, ARGV[8]} end  --@models
return {R_OK, user, project, tonumber(late), tonumber(h[2]), drawn, crossed}  --@cap_actions
return {R_OK, user, project, tonumber(late), tonumber(h[2]), drawn}  --@!cap_actions
