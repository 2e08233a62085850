-- release: void a hold; it stops counting at once and nothing is charged.
-- Releasing twice, or releasing a hold that already expired, changes nothing.
--
-- KEYS[1] - the hold record, "<base>h:<lease>"
-- ARGV[1] - lease id
-- return {0, 1} when a counting hold was released, {0, 0} when it had already
--        been released or had expired, {4} unknown lease, {6} already settled

local hkey = KEYS[1]
local lease = ARGV[1]

local h = redis.call('HMGET', hkey, 'st', 'a', 'u', 'p', 'r')
local state = h[1]
if not state then return {4} end
if state == 's' then return {6} end
if state ~= 'p' then
  redis.call('HSET', hkey, 'st', 'v')
  return {0, 0}
end

if redis.call('ZREM', BASE .. 'holds', lease) == 1 then
  remove_held(h[3], h[4], tonumber(h[2]))
end
redis.call('HSET', hkey, 'st', 'v')
redis.call('PEXPIRE', hkey, h[5])
return {0, 1}
