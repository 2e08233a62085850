-- team_credit: add credits to a team's shared pool, a fact (a grant ledger
-- entry naming the team, no user). Idempotent as credit.lua.
--
-- KEYS[1] - idempotency key (generated when the caller gave none)
-- KEYS[2] - the team (K_TEAM)
-- ARGV[1] - now_ms      ARGV[2] - amount, micro-units
-- ARGV[3] - fingerprint of the arguments, "" when the key was generated
-- ARGV[4] - entry id (fresh, unique)     ARGV[5] - metadata JSON, ""
-- ARGV[6] - the caller's idempotency key, ""      ARGV[7] - team id
-- return {R_OK, "entry|now_ms|balance"} when credited, {R_REPLAYED, same
--        payload}, {R_CONFLICT}, or {R_UNKNOWN_TEAM} (nothing changed)

local ikey, team = KEYS[1], KEYS[2]
local now_ms, fingerprint, entry = ARGV[1], ARGV[3], ARGV[4]
local seen = idem_lookup(ikey, fingerprint)
if seen then return seen end
if redis.call('EXISTS', team) == 0 then return {R_UNKNOWN_TEAM} end

local balance = redis.call('HINCRBY', team, 'b', ARGV[2])
local payload = entry .. '|' .. now_ms .. '|' .. fmt(balance)
idem_store(ikey, fingerprint, payload)
ledger_append(F_ENTRY_ID, entry, F_KIND, KIND_GRANT, F_OCCURRED_AT, now_ms,
              F_AMOUNT, ARGV[2], F_METADATA, ARGV[5], F_IDEMPOTENCY_KEY, ARGV[6],
              F_TEAM_ID, ARGV[7])
return {R_OK, payload}
