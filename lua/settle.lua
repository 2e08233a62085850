-- settle: post a hold at the actual cost, a fact. The hold stops counting and
-- the actual cost (which may exceed the estimate) is charged and appended to
-- the ledger. Settling again with the same cost replays the first result; a
-- hold whose expiry passed is still settled (the money was spent), marked late.
--
-- KEYS[1] - the hold record, "<base>h:<lease>"
-- ARGV[1] - base: "<prefix>:{sg}:"
-- ARGV[2] - now_ms
-- ARGV[3] - day (yyyymmdd, UTC)       ARGV[4] - day counters' TTL when created, ms
-- ARGV[5] - month (yyyymm, UTC)       ARGV[6] - month counters' TTL when created, ms
-- ARGV[7] - actual cost, micro-units
-- ARGV[8] - track_balance: "1" or "0", as in record.lua
-- ARGV[9] - ledger maxlen, 0 = uncapped
-- ARGV[10] - entry id (fresh, unique)
-- ARGV[11] - model, ""     ARGV[12] - metadata JSON, ""
-- ARGV[13] - lease id
-- return {0, "entry|settled_ms|late|estimate", user, project} when settled,
--        {2, same payload, user, project} when it already was, at this cost;
--        {3, actual} when it was settled at another cost; {4} unknown lease;
--        {5} the lease was released

local hkey = KEYS[1]
local base = ARGV[1]
local now_ms = tonumber(ARGV[2])
local win = {ARGV[3], tonumber(ARGV[4]), ARGV[5], tonumber(ARGV[6])}
local actual = tonumber(ARGV[7])
local track_balance = ARGV[8] == '1'
local maxlen = tonumber(ARGV[9])
local entry = ARGV[10]
local lease = ARGV[13]

local h = redis.call('HMGET', hkey, 'st', 'a', 'u', 'p', 'x', 'r', 'c', 'pl')
local state = h[1]
if not state then return {4} end
if state == 'v' then return {5} end
if state == 's' then
  if tonumber(h[7]) == actual then return {2, h[8], h[3], h[4]} end
  return {3, h[7]}
end

local estimate = tonumber(h[2])
local user, project = h[3], h[4]
local late = '0'
if now_ms >= tonumber(h[5]) then late = '1' end
if state == 'p' and redis.call('ZREM', base .. 'holds', lease) == 1 then
  add_held(base, user, project, -estimate)
end

charge(base, win, user, project, actual, track_balance)
ledger_append(base, maxlen, {'e', entry, 'k', 'settle', 't', ARGV[2], 'u', user,
                             'a', ARGV[7], 'l', lease, 'est', h[2], 'late', late},
              {'p', project, 'm', ARGV[11], 'md', ARGV[12]})

local payload = entry .. '|' .. ARGV[2] .. '|' .. late .. '|' .. h[2]
redis.call('HSET', hkey, 'st', 's', 'c', ARGV[7], 'pl', payload)
redis.call('PEXPIRE', hkey, h[6])
return {0, payload, user, project}
