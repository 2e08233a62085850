-- pricing_publish: a new, immutable price book version (and, when asked,
-- the active one from now on).
--
-- KEYS[1] - the last version published (K_PRICE_NEXT)
-- ARGV[1] - the price book, JSON (validated by the caller)
-- ARGV[2] - its label, time and digest, JSON
-- ARGV[3] - "1" to activate it at once, else "0"
-- return {R_OK, version}

local version = redis.call('INCR', KEYS[1])
redis.call('SET', BASE .. K_PRICE_BOOK .. version, ARGV[1])
redis.call('SET', BASE .. K_PRICE_META .. version, ARGV[2])
if ARGV[3] == '1' then
  redis.call('SET', BASE .. K_PRICE_ACTIVE, version)
end
return {R_OK, version}
