-- pricing_mirror: tell one bucket of a sharded deployment which price book
-- is active. deduct.lua checks the version a charge was priced with against
-- the active one in the charge's own bucket, so every bucket keeps a copy of
-- the root's (which pricing_activate sets); see spendgate.core.shards.
--
-- KEYS[1] - the bucket's active version (K_PRICE_ACTIVE)
-- ARGV[1] - the version active at the root
-- return {R_OK}

redis.call('SET', KEYS[1], ARGV[1])
return {R_OK}
