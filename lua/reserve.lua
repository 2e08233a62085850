-- reserve: admit `requested` and hold it against every scope until the hold is
-- settled, released, or its expiry passes.
--
-- KEYS[1] - idempotency key, or for none the new hold's record (K_HOLD ..
--           lease: every declared key in the deployment's slot, as Redis
--           Cluster routes by it, and "" has a slot of its own)
-- ARGV[1..6] - as in check.lua (now_ms, day, month, requested, user, project)
-- ARGV[7] - fingerprint of the arguments (for the idempotency key)
-- ARGV[8] - lease id (fresh, unique)
-- ARGV[9] - expires_ms: when the hold stops counting
-- ARGV[10] - the plan argument (_allowance.lua): what is left of the user's
--            plan allowance counts as balance; "" when balances are not
--            enforced (then nothing is read)
-- ARGV[11] - model, "", with MODEL_CAPS only (the hold remembers it)  --@models
-- (the hold record is kept IDEMPOTENCY_TTL_MS once it is final)
-- return {R_OK, "lease|expires_ms"} for a new hold, {R_REPLAYED, same
--        payload} for an idempotent replay, {R_CONFLICT} for an idempotency
--        conflict, or the refusal {R_REFUSED, scope, window, limit, spent,
--        held[, free_ms]} (free_ms: a per-minute refusal's), or
--        {R_STALE_PRICE, the user's plan} when it is not the one expected

local ikey = KEYS[1]
if ikey == BASE .. K_HOLD .. ARGV[8] then ikey = '' end  -- no idempotency key
local fingerprint = ARGV[7]
local seen = idem_lookup(ikey, fingerprint)
if seen then return seen end

local user, project = ARGV[5], ARGV[6]
local requested = tonumber(ARGV[4])
local stale, _, left = plan_allowance(ARGV[10], user)
if stale then return {R_STALE_PRICE, stale} end
local verdict, due, _, _, minutes = admit(ARGV[1], ARGV[2], ARGV[3], user,
                                          project, requested, nil,
                                          left)
verdict = model_admit(verdict, ARGV[2], ARGV[3], user, project, requested, ARGV[11])  --@models
if verdict[1] ~= R_OK then return verdict end

local lease, expires_ms = ARGV[8], ARGV[9]
hold_create(lease, requested, ARGV[4], user, project, expires_ms, due)
model_hold(lease, ARGV[11], user, project, requested, ARGV[4])  --@models
-- (a hold counts in the minute of a scope with a per-minute cap when taken)
if minutes then count_admitted_minutes(minutes, ARGV[1], requested, ARGV[4]) end

local payload = lease .. '|' .. expires_ms
idem_store(ikey, fingerprint, payload)
return {R_OK, payload}
