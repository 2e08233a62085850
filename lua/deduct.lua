-- deduct: price, check and charge in one step (bursar's deduct). The caps
-- (Part 1's rule) and the balance above its floor are checked, then the
-- amount is charged to every scope's counters and debited from the user's
-- balance, and one ledger entry appended; or the call is refused and nothing
-- changes. Always enforces the balance (the prepaid operation), whatever
-- ENFORCE_BALANCE says.
--
-- KEYS[1] - idempotency key (checked before, stored after: a refusal leaves
--           nothing behind), or for none the charge's refund record (K_CHARGE
--           .. entry: every declared key in the deployment's slot, as Redis
--           Cluster routes by it, and "" has a slot of its own)
-- ARGV[1] - now_ms
-- ARGV[2] - day (yyyymmdd, UTC)       ARGV[3] - day counters' TTL when created, ms
-- ARGV[4] - month (yyyymm, UTC)       ARGV[5] - month counters' TTL when created, ms
-- ARGV[6] - amount, micro-units (the price, computed by the caller)
-- ARGV[7] - fingerprint of the arguments ("" without a key)
-- ARGV[8] - entry id (fresh, unique)
-- ARGV[9] - user id        ARGV[10] - project id, "" for none
-- ARGV[11] - model, ""     ARGV[12] - metadata JSON (the breakdown), ""
-- ARGV[13] - the caller's idempotency key, ""
-- ARGV[14] - the price book version the amount was priced with, "" for none
-- ARGV[15] - the balance floor, micro-units (the book's min_balance), ""
--            for the configured MIN_BALANCE
-- ARGV[16] - the plan argument (_allowance.lua): the user's plan the usage
--            was priced for and its allowance's period, or "" when no plan
--            exists (then nothing is read)
-- (the plan's allowance pays first, then the grants and the balance; the
-- balance rule counts what is left of the allowance as balance)
-- return {R_OK, "entry|now_ms|balance|amount|version|allowance used"} when
--        charged,
--        {R_REPLAYED, same payload} for a replay, {R_CONFLICT}, the refusal {R_REFUSED, scope,
--        window, limit, spent, held[, free_ms]}, {R_STALE_PRICE, active
--        version} when the version priced with is not the active one any
--        more, or {R_STALE_PRICE, version, the user's plan} when the user's
--        plan is not the one priced for
-- (with cap actions, a charge's reply adds the thresholds it took warn  --@cap_actions
-- scopes to: {R_OK, payload, crossed}, as cap_events returns them; the  --@cap_actions
-- idempotency record keeps them for a replay: cap_payload)  --@cap_actions

local ikey = KEYS[1]
local now_ms, fingerprint = ARGV[1], ARGV[7]
local entry, user, project = ARGV[8], ARGV[9], ARGV[10]
if ikey == BASE .. K_CHARGE .. entry then ikey = '' end  -- no idempotency key

local seen = idem_lookup(ikey, fingerprint)
if seen then return seen end

local version = ARGV[14]
if version ~= '' then
  local active = redis.call('GET', BASE .. K_PRICE_ACTIVE)
  if active ~= version then return {R_STALE_PRICE, active or ''} end
end
local stale, start, left, ttl_ms = plan_allowance(ARGV[16], user)
if stale then return {R_STALE_PRICE, version, stale} end

local floor = ARGV[15]
if floor == '' then floor = MIN_BALANCE end
local verdict, _, seen, _, minutes = admit(now_ms, ARGV[2], ARGV[4], user,
                                          project, tonumber(ARGV[6]), floor, left)
verdict = model_admit(verdict, ARGV[2], ARGV[4], user, project, tonumber(ARGV[6]), ARGV[11])  --@models
if verdict[1] ~= R_OK then return verdict end

local balance, drawn = charge(ARGV, user, project, seen[2], true, entry, ARGV[11],  --@!cap_actions
                              start, left, ttl_ms)  --@!cap_actions
local balance, drawn, crossed = charge(ARGV, user, project, seen[2], true, entry,  --@cap_actions
                                       ARGV[11], start, left, ttl_ms)  --@cap_actions
local used = ''
if drawn > 0 then used = fmt(drawn) end
if WEEKLY == '1' then count_weeks(ARGV, user, project) end
if minutes then count_admitted_minutes(minutes, now_ms, tonumber(ARGV[6]), ARGV[6]) end
ledger_append(F_ENTRY_ID, entry, F_KIND, KIND_SPEND, F_OCCURRED_AT, now_ms,
              F_USER_ID, user, F_AMOUNT, ARGV[6], F_PROJECT_ID, project,
              F_MODEL, ARGV[11], F_METADATA, ARGV[12], F_IDEMPOTENCY_KEY, ARGV[13],
              F_PRICE_VERSION, version, F_ALLOWANCE_USED, used)

local payload = entry .. '|' .. now_ms .. '|' .. fmt(balance) .. '|' .. ARGV[6]
                .. '|' .. version .. '|' .. used
idem_store(ikey, fingerprint, payload)  --@!cap_actions
idem_store(ikey, fingerprint, cap_payload(payload, crossed))  --@cap_actions
return {R_OK, payload, crossed}  --@cap_actions
return {R_OK, payload}  --@!cap_actions
