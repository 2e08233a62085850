-- release: void a hold; it stops counting at once and nothing is charged.
-- Releasing twice, or releasing a hold that already expired, changes nothing.
--
-- KEYS[1] - the hold record (K_HOLD)
-- ARGV[1] - lease id
-- return {R_OK, 1} when a counting hold was released, {R_OK, 0} when it had
--        already been released or had expired, {R_UNKNOWN_LEASE},
--        {R_MOVED, bucket} when a rebucketing moved the hold there, or
--        {R_LEASE_SETTLED} when it was settled

local hkey = KEYS[1]
local lease = ARGV[1]

local h = redis.call('HMGET', hkey, 'st', 'a', 'u', 'p', 'r')
local state = h[1]
if not state then return hold_missing(lease) end
if state == HOLD_SETTLED then return {R_LEASE_SETTLED} end
if state ~= HOLD_PENDING then
  redis.call('HSET', hkey, 'st', HOLD_VOIDED)
  return {R_OK, 0}
end

if redis.call('ZREM', BASE .. K_HOLDS, lease) == 1 then
  remove_held(h[3], h[4], tonumber(h[2]))
  model_unhold(redis.call('HGET', hkey, 'm'), h[3], h[4], tonumber(h[2]))  --@models
end
redis.call('HSET', hkey, 'st', HOLD_VOIDED)
redis.call('PEXPIRE', hkey, h[5])
return {R_OK, 1}
