-- refund: give back all or part of a charge, a fact (ledger KIND_REFUND,
-- linked to the charge). Reads the charge's refund record (K_CHARGE, written
-- by charge in _lib.lua; _refunds.lua's helpers read and write it): the
-- spent counters of the charge's day and month go down by the amount in
-- every scope it counted in, and the money goes back where it came from
-- (grants().give_back in _grants.lua). The refunds of a charge never add up
-- to more than it; a refused refund changes nothing. A team charge's refund
-- is team_refund.lua's.
--
-- KEYS[1] - idempotency key (generated when the caller gave none; checked
--           before, stored after: a refusal leaves nothing behind)
-- ARGV[1] - now_ms
-- ARGV[2] - the charge's entry id
-- ARGV[3] - amount, micro-units; "" for all that is left to refund
-- ARGV[4] - fingerprint of the arguments
-- ARGV[5] - entry id (fresh, unique)
-- ARGV[6] - metadata JSON (the reason), ""
-- ARGV[7] - the caller's idempotency key, "" when it was generated
-- return {R_OK, "entry|now_ms|refunded|refundable left|balance"} when
--        refunded (balance "" when the charge took nothing off a balance),
--        {R_REPLAYED, same payload} for a replay, {R_CONFLICT},
--        {R_UNKNOWN_ENTRY} when no refund record of that charge is kept,
--        {R_REFUND_EXCEEDS, refundable left} when the amount is above it,
--        {R_MOVED, bucket} when a rebucketing moved the record there
--        (nothing changed: the caller calls that bucket)

local ikey = KEYS[1]

local c, answer = refund_open(ikey, ARGV)
if not c then return answer end
local amount, left = refund_amount(c, ARGV[3])
if not amount then return {R_REFUND_EXCEEDS, fmt(left)} end

refund_count(ARGV, c, amount, '')
local balance = grants().give_back(ARGV[1], ARGV[5], c.user, c.draws, c.charged,
                                   c.refunded, amount)
return refund_done(ikey, ARGV, c, amount, left, balance)
