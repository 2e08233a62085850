-- events_claim: hand the events pending on a dispatcher whose heartbeat
-- expired to this dispatcher at once (rather than after the claim-idle
-- time), on every stream the group reads, and forget that dispatcher once it
-- holds none: drop it from the consumer group on each stream and from the
-- group's set of dispatchers. One atomic step, so two dispatchers never both
-- claim an event, a dispatcher whose heartbeat came back keeps its events,
-- and no consumer is dropped while it holds one (DELCONSUMER would lose it).
-- Loaded by spendgate.events.streams on its own (it does not use _lib.lua).
--
-- KEYS[1] - the group's set of dispatchers that keep a heartbeat
-- KEYS[2] - the dead dispatcher's heartbeat key
-- KEYS[3..] - the streams the group reads (each has the group)
-- ARGV[1] - the consumer group
-- ARGV[2] - the dead dispatcher's consumer name
-- ARGV[3] - this dispatcher's consumer name
-- ARGV[4] - entries claimed at most per stream (keeps the unpack below
--           Lua's stack limit)
-- return {-1} when the heartbeat is back; else {entries it held, then the
-- entries now this dispatcher's, one list per stream of KEYS[3..]};
-- {0, {}, ...}: it held none, and is forgotten

local dispatchers, heartbeat = KEYS[1], KEYS[2]
local group, dead, me = ARGV[1], ARGV[2], ARGV[3]
local count = tonumber(ARGV[4])

if redis.call('EXISTS', heartbeat) == 1 then
  return {-1}
end
local reply = {0}
local held = 0
for k = 3, #KEYS do
  local pending = redis.call('XPENDING', KEYS[k], group, '-', '+', count, dead)
  if #pending == 0 then
    reply[#reply + 1] = {}
  else
    local ids = {}
    for i, entry in ipairs(pending) do
      ids[i] = entry[1]
    end
    held = held + #ids
    -- An entry deleted meanwhile leaves the list without being returned.
    reply[#reply + 1] = redis.call('XCLAIM', KEYS[k], group, me, 0, unpack(ids))
  end
end
if held == 0 then
  for k = 3, #KEYS do
    redis.call('XGROUP', 'DELCONSUMER', KEYS[k], group, dead)
  end
  redis.call('SREM', dispatchers, dead)
end
reply[1] = held
return reply
