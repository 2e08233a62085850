-- ledger_claim: hand the entries pending on a flusher whose heartbeat expired
-- to this flusher at once (rather than after the claim-idle time), and forget
-- that flusher once it holds none: drop it from the consumer group and from
-- the set of flushers. One atomic step, so two flushers never both claim an
-- entry, a flusher whose heartbeat came back keeps its entries, and no
-- consumer is dropped while it holds one (DELCONSUMER would lose them).
-- Loaded by spendgate.ledger.stream on its own (it does not use _lib.lua).
--
-- KEYS[1] - the ledger stream
-- KEYS[2] - the set of flushers that keep a heartbeat
-- KEYS[3] - the dead flusher's heartbeat key
-- ARGV[1] - the consumer group
-- ARGV[2] - the dead flusher's consumer name
-- ARGV[3] - this flusher's consumer name
-- ARGV[4] - entries claimed at most (keeps the unpack below Lua's stack limit)
-- return {-1, {}} when the heartbeat is back; else {entries it held,
-- the entries now this flusher's}; {0, {}}: it held none, and is forgotten

local stream, flushers, heartbeat = KEYS[1], KEYS[2], KEYS[3]
local group, dead, me = ARGV[1], ARGV[2], ARGV[3]

if redis.call('EXISTS', heartbeat) == 1 then
  return {-1, {}}
end
local pending = redis.call('XPENDING', stream, group, '-', '+', tonumber(ARGV[4]), dead)
if #pending == 0 then
  redis.call('XGROUP', 'DELCONSUMER', stream, group, dead)
  redis.call('SREM', flushers, dead)
  return {0, {}}
end
local ids = {}
for i, entry in ipairs(pending) do
  ids[i] = entry[1]
end
-- An entry deleted meanwhile leaves the list without being returned.
return {#ids, redis.call('XCLAIM', stream, group, me, 0, unpack(ids))}
