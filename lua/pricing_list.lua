-- pricing_list: the metadata of published price book versions, a page at a
-- time (bounded: a long history is listed in pages).
--
-- KEYS[1] - the last version published (K_PRICE_NEXT)
-- ARGV[1] - the first version of the page
-- ARGV[2] - how many versions at most (the caller bounds it)
-- return {active version or false, last version or false, then each
--        version's metadata JSON (false where none), from the first on}

local last = redis.call('GET', KEYS[1])
local active = redis.call('GET', BASE .. K_PRICE_ACTIVE)
local out = {active, last}
if not last then return out end
local first = tonumber(ARGV[1])
local stop = math.min(tonumber(last), first + tonumber(ARGV[2]) - 1)
if stop < first then return out end
local keys = {}
for v = first, stop do keys[#keys + 1] = BASE .. K_PRICE_META .. v end
local metas = redis.call('MGET', unpack(keys))
for i = 1, #metas do out[#out + 1] = metas[i] end
return out
