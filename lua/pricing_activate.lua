-- pricing_activate: make a published version the active price book (rolling
-- back is activating an older one).
--
-- KEYS[1] - the active version (K_PRICE_ACTIVE)
-- ARGV[1] - the version
-- return {R_OK, the version active before, "" for none}, or
--        {R_UNKNOWN_VERSION} when no such version was published

if redis.call('EXISTS', BASE .. K_PRICE_BOOK .. ARGV[1]) == 0 then
  return {R_UNKNOWN_VERSION}
end
local before = redis.call('GET', KEYS[1]) or ''
redis.call('SET', KEYS[1], ARGV[1])
return {R_OK, before}
