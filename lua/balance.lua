-- balance: a user's balance, what admission counts of it, what holds keep,
-- and the user's live grants in the order charges draw on them. Grants
-- whose expiry passed are expired first, and expired holds purged, as any
-- call of the user's would.
--
-- KEYS[1] - the user's balance key (routes the call; all keys share one slot)
-- ARGV[1] - now_ms
-- ARGV[2] - user id
-- ARGV[3] - the most grants to list
-- return {balance key's value (false: none kept), counted, held (by the
--        user's own holds: a hold on a team's pool keeps the pool's balance,
--        not the user's), then each grant listed: its member and remaining}

local bkey, now_ms, user = KEYS[1], ARGV[1], ARGV[2]
purge_expired_holds(now_ms, redis.call('GET', BASE .. K_DUE))
local G = grants()
local counted, raw = G.counted(now_ms, user, redis.call('GET', bkey))
local seen = redis.call('MGET', BASE .. K_HELD .. S_USER .. user,
                        BASE .. K_POOL_HELD .. user)
local held = fmt(math.max((tonumber(seen[1]) or 0) - (tonumber(seen[2]) or 0), 0))
local out = {raw, fmt(counted), held}
if raw and string.find(raw, '|', 1, true) then
  local members = redis.call('ZRANGE', BASE .. K_GRANT_ORDER .. user, 0,
                             tonumber(ARGV[3]) - 1)
  if #members > 0 then
    local rests = redis.call('HMGET', BASE .. K_GRANTS .. user, unpack(members))
    for i = 1, #members do
      out[#out + 1] = members[i]
      out[#out + 1] = rests[i]
    end
  end
end
return out
