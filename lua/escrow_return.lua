-- escrow_return: give back to the root what a bucket reclaimed of its
-- loans (allowance it will not use), so the root can lend it again. A
-- return id already taken changes nothing: a resent return counts once.
--
-- KEYS[1] - the scope's loans in this window, at the root (escrow_keys)
-- ARGV[1] - the amount given back (micro-units)
-- ARGV[2] - the return id
-- return {R_OK, lent in all after it}

local field = 'r:' .. ARGV[2]
local lent = tonumber(redis.call('HGET', KEYS[1], 'lent') or '0')
if redis.call('HEXISTS', KEYS[1], field) == 1 or lent == 0 then
  return {R_OK, lent}
end
local back = math.min(tonumber(ARGV[1]), lent)
redis.call('HINCRBY', KEYS[1], 'lent', -back)
redis.call('HSET', KEYS[1], field, back)
return {R_OK, lent - back}
