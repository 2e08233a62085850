-- credit: add prepaid credits to a user's balance, a fact (ledger kind "credit").
--
-- KEYS[1] - idempotency key (generated when the caller gave none)
-- ARGV[1] - base: "<prefix>:{sg}:"
-- ARGV[2] - now_ms
-- ARGV[3] - amount, micro-units
-- ARGV[4] - fingerprint of the arguments
-- ARGV[5] - idempotency TTL, ms
-- ARGV[6] - ledger maxlen, 0 = uncapped
-- ARGV[7] - entry id (fresh, unique)
-- ARGV[8] - user id
-- ARGV[9] - metadata JSON, ""
-- ARGV[10] - the caller's idempotency key, "" when it was generated
-- return {0, "entry|now_ms|balance"} when credited, {2, same payload} for a
--        replay, {3} for an idempotency conflict

local ikey = KEYS[1]
local base = ARGV[1]
local now_ms = ARGV[2]
local fingerprint = ARGV[4]
local idem_ttl_ms = ARGV[5]
local maxlen = ARGV[6]
local entry = ARGV[7]
local user = ARGV[8]

local seen = idem_lookup(ikey, fingerprint)
if seen then return seen end

local balance = redis.call('INCRBY', base .. 'b:u:' .. user, ARGV[3])
ledger_append(base, maxlen, 'e', entry, 'k', 'credit', 't', now_ms, 'u', user,
              'a', ARGV[3], 'md', ARGV[9], 'i', ARGV[10])

local payload = entry .. '|' .. now_ms .. '|' .. fmt(balance)
idem_store(ikey, fingerprint, payload, idem_ttl_ms)
return {0, payload}
