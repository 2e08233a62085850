-- ledger_ack: the flusher's last step for one batch, after the Postgres commit:
-- acknowledge the entries in the consumer group and delete them from the
-- stream, in one atomic step (an entry is never acknowledged but left behind).
-- The ids come as one comma-separated argument: packing thousands of separate
-- arguments costs the client far more than splitting one string here.
-- Loaded by spendgate.flusher on its own (it does not use _lib.lua).
--
-- KEYS[1] - the ledger stream, "<prefix>:{sg}:ledger"
-- ARGV[1] - the consumer group
-- ARGV[2] - stream ids, comma-separated ("1700000000000-0,1700000000000-1")
-- return the number of entries deleted

local stream = KEYS[1]
local group = ARGV[1]
local ids = {}
for id in string.gmatch(ARGV[2], '[^,]+') do
  ids[#ids + 1] = id
end

-- Bounded unpack: Lua's stack takes a few thousand values at most.
local deleted = 0
for i = 1, #ids, 1000 do
  local last = math.min(i + 999, #ids)
  redis.call('XACK', stream, group, unpack(ids, i, last))
  deleted = deleted + redis.call('XDEL', stream, unpack(ids, i, last))
end
return deleted
