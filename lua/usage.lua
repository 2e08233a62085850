-- usage: spent, held, limits and balance of every scope of a user (and
-- project), after purging expired holds.
--
-- KEYS[1] - the user's entity hash (routes the call; all keys share one slot)
-- ARGV[1] - base: "<prefix>:{sg}:"
-- ARGV[2] - now_ms
-- ARGV[3] - day (yyyymmdd, UTC)
-- ARGV[4] - month (yyyymm, UTC)
-- ARGV[5] - purge_max
-- ARGV[6] - user id
-- ARGV[7] - project id, "" for none
-- ARGV[8..13] - default limits as in check.lua
-- return per scope (user, [project,] global) six values: held, balance (false
--        when the entity has none), daily limit, monthly limit (-1 = no cap),
--        daily spent, monthly spent

local base = ARGV[1]
local now_ms = tonumber(ARGV[2])
local day = ARGV[3]
local month = ARGV[4]
local purge_max = tonumber(ARGV[5])
local user = ARGV[6]
local project = ARGV[7]
local defaults = {
  u = {ARGV[8], ARGV[9]},
  p = {ARGV[10], ARGV[11]},
  g = {ARGV[12], ARGV[13]},
}

purge_expired_holds(base, now_ms, purge_max)
local out = {}
for _, sc in ipairs(scopes_of(user, project)) do
  local s, id = sc[1], sc[2]
  local e = redis.call('HMGET', entity_key(base, s, id), 'h', 'b', 'dl', 'ml')
  out[#out + 1] = e[1] or '0'
  out[#out + 1] = e[2]
  out[#out + 1] = e[3] or defaults[s][1]
  out[#out + 1] = e[4] or defaults[s][2]
  out[#out + 1] = redis.call('GET', day_key(base, day, s, id)) or '0'
  out[#out + 1] = redis.call('GET', month_key(base, month, s, id)) or '0'
end
return out
