-- pricing_get: one price book version (by default the active one).
--
-- KEYS[1] - the active version (K_PRICE_ACTIVE)
-- ARGV[1] - the version, "" for the active one
-- return {active version or false, version or false, the book's JSON or
--        false, its metadata JSON or false, the plans' revision or false}
--        (read with the active book: an instance reloads the plans set with
--        set_plan when it moves)

local active = redis.call('GET', KEYS[1])
local rev = redis.call('GET', BASE .. K_PLANS_REV)
local version = ARGV[1]
if version == '' then version = active end
if not version then return {false, false, false, false, rev} end
local found = redis.call('MGET', BASE .. K_PRICE_BOOK .. version,
                         BASE .. K_PRICE_META .. version)
return {active, version, found[1], found[2], rev}
