-- stream_ack: a consumer's last step for one batch, once it has done with the
-- entries (the flusher: after the Postgres commit; the event dispatcher: after
-- delivery): acknowledge them in the consumer group and delete what no group
-- still needs, in one atomic step (an entry is never acknowledged but left
-- behind, nor deleted while another group has yet to read it).
--
-- When the group is the stream's only one, the batch is deleted (XDEL), as it
-- always was. When other groups read the stream too (the event dispatcher
-- reads the ledger beside the flusher), an entry goes only once every group
-- has acknowledged it: each group's horizon is its oldest pending entry, or
-- the entry after the last one it was given; everything below the lowest
-- horizon has been acknowledged by all of them and is trimmed (XTRIM MINID),
-- which also takes entries kept earlier for a slower group.
-- Called with no ids, it only trims (the flusher's sweep when idle).
-- The ids come as one comma-separated argument: packing thousands of separate
-- arguments costs the client far more than splitting one string here.
-- Loaded on its own (it does not use _lib.lua).
--
-- KEYS[1] - the stream ("<prefix>:{sg}:ledger", "<prefix>:{sg}:events")
-- ARGV[1] - the consumer group
-- ARGV[2] - stream ids, comma-separated ("1700000000000-0,1700000000000-1")
-- return {entries deleted, groups reading the stream}

local stream = KEYS[1]
local group = ARGV[1]
local ids = {}
for id in string.gmatch(ARGV[2], '[^,]+') do
  ids[#ids + 1] = id
end

-- Bounded unpack: Lua's stack takes a few thousand values at most.
for i = 1, #ids, 1000 do
  redis.call('XACK', stream, group, unpack(ids, i, math.min(i + 999, #ids)))
end

if redis.call('EXISTS', stream) == 0 then
  return {0, 0}
end
local groups = redis.call('XINFO', 'GROUPS', stream)
if #groups <= 1 then
  local deleted = 0
  for i = 1, #ids, 1000 do
    deleted = deleted + redis.call('XDEL', stream, unpack(ids, i, math.min(i + 999, #ids)))
  end
  return {deleted, #groups}
end

-- Stream ids compared as numbers: "<ms>-<seq>".
local function parse(id)
  local ms, seq = string.match(id, '^(%d+)-(%d+)$')
  return tonumber(ms), tonumber(seq)
end
local function older(a, b)
  local a_ms, a_seq = parse(a)
  local b_ms, b_seq = parse(b)
  return a_ms < b_ms or (a_ms == b_ms and a_seq < b_seq)
end

local horizon = nil
for _, info in ipairs(groups) do
  local fields = {}
  for i = 1, #info, 2 do
    fields[info[i]] = info[i + 1]
  end
  local mark
  if tonumber(fields['pending']) > 0 then
    mark = redis.call('XPENDING', stream, fields['name'])[2]
  else
    local ms, seq = parse(fields['last-delivered-id'])
    mark = string.format('%.0f-%.0f', ms, seq + 1)
  end
  if horizon == nil or older(mark, horizon) then
    horizon = mark
  end
end
return {redis.call('XTRIM', stream, 'MINID', horizon), #groups}
