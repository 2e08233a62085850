-- holds_purge: purge one home's expired holds, as every admitting script
-- does before it reads held amounts (purge_expired_holds in _holds.lua: at
-- most PURGE_MAX per call), for a rebucketing (spendgate.rebucket), which
-- moves no key while a hold is pending.
--
-- KEYS[1] - the home's pending holds (K_HOLDS)
-- ARGV[1] - now_ms
-- return {R_OK, holds still pending, the earliest one's expiry (ms, "" for
--        none)}: an expiry at or before now_ms means more to purge

purge_expired_holds(ARGV[1], false)
local first = redis.call('ZRANGE', KEYS[1], '0', '0', 'WITHSCORES')
return {R_OK, redis.call('ZCARD', KEYS[1]), first[2] or ''}
