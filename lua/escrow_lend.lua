-- escrow_lend: lend part of a project's or the platform's cap (one window
-- of it) to one bucket of a sharded deployment. The root keeps, per scope
-- and window, how much of the cap it has lent; a bucket admits against the
-- loans deposited with it (see spendgate.ops.escrow). A loan id already
-- lent answers the same loan again: a resent call does not borrow twice.
-- With nothing left to lend it changes nothing and lends 0.
--
-- KEYS[1] - the scope's loans in this window, at the root (escrow_keys)
-- ARGV[1] - the cap (micro-units)
-- ARGV[2] - the shortfall the bucket met (micro-units)
-- ARGV[3] - the chunk lent at the least (micro-units)
-- ARGV[4] - the window's key lifetime (ms)
-- ARGV[5] - the loan id
-- return {R_OK, lent now (micro-units), lent in all after it}

local field = 'l:' .. ARGV[5]
local prior = redis.call('HGET', KEYS[1], field)
local lent = tonumber(redis.call('HGET', KEYS[1], 'lent') or '0')
if prior then
  return {R_OK, tonumber(prior), lent}
end
local left = tonumber(ARGV[1]) - lent
local amount = math.min(math.max(tonumber(ARGV[2]), tonumber(ARGV[3])), left)
if amount <= 0 then
  return {R_OK, 0, lent}
end
redis.call('HINCRBY', KEYS[1], 'lent', amount)
redis.call('HSET', KEYS[1], field, amount)
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return {R_OK, amount, lent + amount}
