-- credit: add prepaid credits to a user's balance, a fact (ledger kind "credit").
--
-- KEYS[1] - idempotency key (generated when the caller gave none)
-- ARGV[1] - now_ms
-- ARGV[2] - amount, micro-units
-- ARGV[3] - fingerprint of the arguments
-- ARGV[4] - entry id (fresh, unique)
-- ARGV[5] - user id
-- ARGV[6] - metadata JSON, ""
-- ARGV[7] - the caller's idempotency key, "" when it was generated
-- return {0, "entry|now_ms|balance"} when credited, {2, same payload} for a
--        replay, {3} for an idempotency conflict

local ikey = KEYS[1]
local now_ms = ARGV[1]
local fingerprint = ARGV[3]
local entry = ARGV[4]
local user = ARGV[5]

local seen = idem_lookup(ikey, fingerprint)
if seen then return seen end

local balance = redis.call('INCRBY', BASE .. 'b:u:' .. user, ARGV[2])
ledger_append('e', entry, 'k', 'credit', 't', now_ms, 'u', user, 'a', ARGV[2],
              'md', ARGV[6], 'i', ARGV[7])

local payload = entry .. '|' .. now_ms .. '|' .. fmt(balance)
idem_store(ikey, fingerprint, payload)
return {0, payload}
