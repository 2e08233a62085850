-- record: a direct charge, a fact. Never refused for being over a limit: the
-- money was already spent. Moves the counters and appends the ledger entry in
-- one step, so the two can never disagree.
--
-- KEYS[1] - idempotency key (every fact has one; generated when the caller gave none)
-- ARGV[1] - base: "<prefix>:{sg}:"
-- ARGV[2] - now_ms
-- ARGV[3] - day (yyyymmdd, UTC)       ARGV[4] - day counters' TTL when created, ms
-- ARGV[5] - month (yyyymm, UTC)       ARGV[6] - month counters' TTL when created, ms
-- ARGV[7] - amount, micro-units
-- ARGV[8] - track_balance: "1" when balances are enforced (the user's balance
--           is then always kept), else it is kept only if the user has one
-- ARGV[9] - fingerprint of the arguments, "" when the key was generated (only
--           this very call, replayed from the spool, can meet that key)
-- ARGV[10] - idempotency TTL, ms
-- ARGV[11] - ledger maxlen, 0 = uncapped
-- ARGV[12] - entry id (fresh, unique)
-- ARGV[13] - user id       ARGV[14] - project id, "" for none
-- ARGV[15] - model, ""     ARGV[16] - metadata JSON, ""
-- ARGV[17] - the caller's idempotency key, "" when it was generated
-- return {0, "entry|now_ms"} when recorded, {2, same payload} for a replay,
--        {3} for an idempotency conflict

local ikey = KEYS[1]
local now_ms = ARGV[2]
local entry, user, project = ARGV[12], ARGV[13], ARGV[14]

local payload = entry .. '|' .. now_ms
local seen = idem_claim(ikey, ARGV[9], payload, ARGV[10])
if seen then return seen end

charge(ARGV, user, project)
ledger_append(ARGV[1], ARGV[11], 'e', entry, 'k', 'spend', 't', now_ms,
              'u', user, 'a', ARGV[7], 'p', project, 'm', ARGV[15], 'md', ARGV[16],
              'i', ARGV[17])
return {0, payload}
