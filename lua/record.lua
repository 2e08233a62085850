-- record: a direct charge, a fact. Never refused for being over a limit: the
-- money was already spent. Moves the counters and appends the ledger entry in
-- one step, so the two can never disagree.
--
-- KEYS[1] - idempotency key (every fact has one; generated when the caller gave none)
-- ARGV[1] - now_ms
-- ARGV[2] - day (yyyymmdd, UTC)       ARGV[3] - day counters' TTL when created, ms
-- ARGV[4] - month (yyyymm, UTC)       ARGV[5] - month counters' TTL when created, ms
-- ARGV[6] - amount, micro-units
-- ARGV[7] - fingerprint of the arguments, "" when the key was generated (only
--           this very call, replayed from the spool, can meet that key)
-- ARGV[8] - entry id (fresh, unique)
-- ARGV[9] - user id        ARGV[10] - project id, "" for none
-- ARGV[11] - model, ""     ARGV[12] - metadata JSON, ""
-- ARGV[13] - the caller's idempotency key, "" when it was generated
-- ARGV[14] - the plan argument (_allowance.lua): the user's plan expected
--            and its allowance's period; lenient ("~") when replayed from
--            the spool; "" for a fact spooled before allowances
-- (the user's balance is charged when ENFORCE_BALANCE is "1", else only if
-- the user has one, drawing on the user's grants; the week counters with
-- WEEKLY, the minute of every scope with a per-minute cap with VELOCITY;
-- unless REFUND_WINDOW_MS is "0" the charge keeps a refund record)
-- (the plan's allowance pays first, then the grants and the balance)
-- return {R_OK, "entry|now_ms|amount|allowance used"} when recorded, {R_REPLAYED,
--        same payload} for a replay, {R_CONFLICT} for an idempotency
--        conflict, {R_STALE_PRICE, the user's plan} when it is not the one
--        expected (strict plan argument: nothing was written); sharded,
--        {R_OK, payload, crossed or false, deficits} when the bucket now
--        spends past its allowance of a shared cap (_escrow.lua)
-- (with cap actions, a recorded charge's reply adds the thresholds it took  --@cap_actions
-- warn scopes to: {R_OK, payload, crossed}, crossed as cap_events returns  --@cap_actions
-- them; its replay answers them again: the idempotency record keeps them,  --@cap_actions
-- cap_payload)  --@cap_actions

local ikey = KEYS[1]
local now_ms = ARGV[1]
local entry, user, project = ARGV[8], ARGV[9], ARGV[10]

-- (the balance is read with the user's plan: charge need not look again)
local plan, balance, assigned = ARGV[14], nil, nil
if plan ~= '' then
  local seen = redis.call('MGET', BASE .. K_BALANCE .. user, BASE .. K_USER_PLAN .. user)
  balance, assigned = seen[1], seen[2]
end
local stale, start, left, ttl_ms = plan_allowance(plan, user, assigned)
if stale then return {R_STALE_PRICE, stale} end
-- (what the allowance will pay is known before the first write)
local used, amount = '', tonumber(ARGV[6])
if start and amount > 0 then used = fmt(math.min(left, amount)) end
-- (the amount: a deduct spooled as this fact is answered it on its retry)
local payload = entry .. '|' .. now_ms .. '|' .. ARGV[6] .. '|' .. used
local seen = idem_claim(ikey, ARGV[7], payload)
if seen then return seen end

-- (crossed: nil without cap actions)
local _, _, crossed = charge(ARGV, user, project, balance, false, entry, ARGV[11],
                             start, left, ttl_ms)
if crossed then idem_store(ikey, ARGV[7], cap_payload(payload, crossed)) end  --@cap_actions
if WEEKLY == '1' then count_weeks(ARGV, user, project) end
if VELOCITY == '1' then count_minutes(now_ms, user, project, amount, ARGV[6]) end
ledger_append(F_ENTRY_ID, entry, F_KIND, KIND_SPEND, F_OCCURRED_AT, now_ms,
              F_USER_ID, user, F_AMOUNT, ARGV[6], F_PROJECT_ID, project,
              F_MODEL, ARGV[11], F_METADATA, ARGV[12], F_IDEMPOTENCY_KEY, ARGV[13],
              F_ALLOWANCE_USED, used)
-- (sharded: what the bucket now spends past its allowance, to borrow)  --@sharded
local deficits = escrow_deficits(ARGV[2], ARGV[4], project)  --@sharded
if deficits then return {R_OK, payload, crossed or false, deficits} end  --@sharded
return {R_OK, payload, crossed}  --@cap_actions
return {R_OK, payload}  --@!cap_actions
