-- credit: add prepaid credits to a user's balance, a fact (ledger KIND_CREDIT).
--
-- KEYS[1] - idempotency key (generated when the caller gave none)
-- ARGV[1] - now_ms
-- ARGV[2] - amount, micro-units
-- ARGV[3] - fingerprint of the arguments
-- ARGV[4] - entry id (fresh, unique)
-- ARGV[5] - user id
-- ARGV[6] - metadata JSON, ""
-- ARGV[7] - the caller's idempotency key, "" when it was generated
-- return {R_OK, "entry|now_ms|balance"} when credited, {R_REPLAYED, same
--        payload} for a replay, {R_CONFLICT} for an idempotency conflict

local ikey = KEYS[1]
local now_ms = ARGV[1]
local fingerprint = ARGV[3]
local entry = ARGV[4]
local user = ARGV[5]

local seen = idem_lookup(ikey, fingerprint)
if seen then return seen end

local balance = redis.call('INCRBY', BASE .. K_BALANCE .. user, ARGV[2])
ledger_append(F_ENTRY_ID, entry, F_KIND, KIND_CREDIT, F_OCCURRED_AT, now_ms,
              F_USER_ID, user, F_AMOUNT, ARGV[2], F_METADATA, ARGV[6],
              F_IDEMPOTENCY_KEY, ARGV[7])

local payload = entry .. '|' .. now_ms .. '|' .. fmt(balance)
idem_store(ikey, fingerprint, payload)
return {R_OK, payload}
