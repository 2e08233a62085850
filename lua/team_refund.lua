-- team_refund: give back all or part of a charge on a team's pool, a fact
-- (ledger KIND_REFUND, linked to the charge, naming the team). As
-- refund.lua (its helpers are _refunds.lua's), but the money goes back to
-- the team's pool, not to the user's balance, and the member's spending on
-- the team of the charge's own day and month goes down by it too. The
-- refunds of a charge never add up to more than it, so the pool never gets
-- back more than the charge took; a refused refund changes nothing.
--
-- A team charge's entry id is "<id>.<team>" (the id's first 12 hex digits
-- its time, ms), so the caller knows the team and the charge's day without
-- asking and declares their keys: one round trip.
--
-- KEYS[1] - idempotency key (generated when the caller gave none; checked
--           before, stored after: a refusal leaves nothing behind)
-- KEYS[2] - the team    KEYS[3] - members' day (the charge's)
-- KEYS[4] - members' month (the charge's)    (see _teams.lua)
-- ARGV[1..7] - as in refund.lua (now_ms, the charge's entry id, amount,
--              fingerprint, entry, metadata, the caller's idempotency key)
-- ARGV[8] - team id
-- ARGV[9] - the charge's day (yyyymmdd) KEYS[3] and KEYS[4] are of
-- return as refund.lua, the balance being the pool's after ("" when the
--        team is not there), or {R_CHARGE_DAY, day} when the charge was
--        counted in another day than ARGV[9] (the window time zone changed
--        since): nothing changed, the caller calls again with that day's keys
--        ({R_MOVED, ...}: never, a team's charges are never rebucketed)

local ikey, pool = KEYS[1], KEYS[2]

local c, answer = refund_open(ikey, ARGV)
if not c then return answer end
if c.day ~= ARGV[9] then return {R_CHARGE_DAY, c.day} end
local amount, left = refund_amount(c, ARGV[3])
if not amount then return {R_REFUND_EXCEEDS, fmt(left)} end

refund_count(ARGV, c, amount, ARGV[8])
team_uncount(KEYS[3], c.user, amount)
team_uncount(KEYS[4], c.user, amount)
local balance = false
if redis.call('EXISTS', pool) == 1 then
  balance = redis.call('HINCRBY', pool, 'b', fmt(amount))
end
return refund_done(ikey, ARGV, c, amount, left, balance)
