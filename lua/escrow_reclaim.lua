-- escrow_reclaim: take back from one bucket the allowance of a project's or
-- the platform's cap it has not used in one window (allowance - spent -
-- held, never below 0), for the root to lend again (escrow_return.lua). A
-- reclaim id already taken answers what it took and takes nothing more.
-- The bucket's expired holds are purged first: a bucket no call has run in
-- since its holds expired would otherwise keep them counted, and refuse
-- the others what it does not use.
--
-- KEYS[1] - the scope's allowance in this window, in the bucket (escrow_keys)
-- KEYS[2] - the scope's spent counter of this window, in the bucket
-- KEYS[3] - what the bucket's pending holds keep of the scope
-- ARGV[1] - the reclaim id
-- ARGV[2] - now_ms
-- return {R_OK, taken (micro-units), the allowance after it}

local field = 'c:' .. ARGV[1]
local allowance = tonumber(redis.call('HGET', KEYS[1], 'allowance') or '0')
local prior = redis.call('HGET', KEYS[1], field)
if prior then return {R_OK, tonumber(prior), allowance} end
purge_expired_holds(ARGV[2], redis.call('GET', BASE .. K_DUE))
local spent = tonumber(redis.call('GET', KEYS[2]) or '0')
local held = tonumber(redis.call('GET', KEYS[3]) or '0')
local taken = math.max(allowance - spent - held, 0)
if taken == 0 then return {R_OK, 0, allowance} end
redis.call('HINCRBY', KEYS[1], 'allowance', -taken)
redis.call('HSET', KEYS[1], field, taken)
return {R_OK, taken, allowance - taken}
