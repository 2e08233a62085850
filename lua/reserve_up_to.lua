-- reserve_up_to: hold the most that fits, between a floor and a ceiling
-- (TigerBeetle's balancing debit): at least `min` must fit under every scope,
-- window and (where enforced) the balance, or the call is refused and
-- nothing changes; then the hold is the smaller of `max` and the tightest
-- room left.
--
-- KEYS[1] - idempotency key, or for none the new hold's record (K_HOLD ..
--           lease: every declared key in the deployment's slot, as Redis
--           Cluster routes by it, and "" has a slot of its own)
-- ARGV[1..6] - as in check.lua (now_ms, day, month, min, user, project):
--              ARGV[4] is the least that must fit, micro-units
-- ARGV[7] - fingerprint of the arguments (for the idempotency key)
-- ARGV[8] - lease id (fresh, unique)
-- ARGV[9] - expires_ms: when the hold stops counting
-- ARGV[10] - the most to hold, micro-units
-- ARGV[11] - the plan argument (_allowance.lua): what is left of the user's
--            plan allowance counts as balance; "" when balances are not
--            enforced (then nothing is read)
-- ARGV[12] - model, "", with MODEL_CAPS only (the hold remembers it)  --@models
-- return {R_OK, "lease|expires_ms|granted"} for a new hold, {R_REPLAYED, same
--        payload} for an idempotent replay, {R_CONFLICT}, or the refusal
--        {R_REFUSED, scope, window, limit, spent, held[, free_ms]} when not
--        even `min` fits, or {R_STALE_PRICE, the user's plan} when it is
--        not the one expected

local ikey = KEYS[1]
if ikey == BASE .. K_HOLD .. ARGV[8] then ikey = '' end  -- no idempotency key
local fingerprint = ARGV[7]
local seen = idem_lookup(ikey, fingerprint)
if seen then return seen end

local user, project = ARGV[5], ARGV[6]
local stale, _, left = plan_allowance(ARGV[11], user)
if stale then return {R_STALE_PRICE, stale} end
local verdict, due, _, _, minutes = admit(ARGV[1], ARGV[2], ARGV[3], user,
                                          project, tonumber(ARGV[4]), nil,
                                          left)
verdict = model_admit(verdict, ARGV[2], ARGV[3], user, project, tonumber(ARGV[4]), ARGV[12])  --@models
if verdict[1] ~= R_OK then return verdict end

-- the tightest room before this hold (-1: nothing is capped): it fits `min`
local granted = tonumber(ARGV[10])
if verdict[2] >= 0 and verdict[2] < granted then granted = verdict[2] end
local text = fmt(granted)

local lease, expires_ms = ARGV[8], ARGV[9]
hold_create(lease, granted, text, user, project, expires_ms, due)
model_hold(lease, ARGV[12], user, project, granted, text)  --@models
if minutes then count_admitted_minutes(minutes, ARGV[1], granted, text) end

local payload = lease .. '|' .. expires_ms .. '|' .. text
idem_store(ikey, fingerprint, payload)
return {R_OK, payload}
