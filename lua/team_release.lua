-- team_release: void a team hold; it stops counting at once in every scope,
-- the team's and the member's held amounts, and nothing is charged.
-- Releasing twice, or releasing a hold that already expired, changes nothing.
--
-- KEYS[1] - the hold record (K_HOLD)
-- KEYS[2] - the team    KEYS[3] - its members' held    KEYS[4] - its pending holds
-- ARGV[1] - lease id       ARGV[2] - team id
-- return as release.lua

local hkey = KEYS[1]
local lease = ARGV[1]

local h = redis.call('HMGET', hkey, 'st', 'a', 'u', 'p', 'r', 't')
local state = h[1]
if not state or h[6] ~= ARGV[2] then return {R_UNKNOWN_LEASE} end
if state == HOLD_SETTLED then return {R_LEASE_SETTLED} end
-- (the team's own count, whatever the global purge did: see _teams.lua)
team_unhold({KEYS[2], nil, KEYS[3], KEYS[4]}, lease, h[3], h[2])
if state ~= HOLD_PENDING then
  redis.call('HSET', hkey, 'st', HOLD_VOIDED)
  return {R_OK, 0}
end

if redis.call('ZREM', BASE .. K_HOLDS, lease) == 1 then
  remove_held(h[3], h[4], tonumber(h[2]))
  pool_unhold(h[3], tonumber(h[2]))
  model_unhold(redis.call('HGET', hkey, 'm'), h[3], h[4], tonumber(h[2]))  --@models
end
redis.call('HSET', hkey, 'st', HOLD_VOIDED)
redis.call('PEXPIRE', hkey, h[5])
return {R_OK, 1}
