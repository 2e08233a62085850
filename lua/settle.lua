-- settle: post a hold at the actual cost, a fact. The hold stops counting and
-- the actual cost (which may exceed the estimate) is charged and appended to
-- the ledger. Settling again with the same cost replays the first result; a
-- hold whose expiry passed is still settled (the money was spent), marked late.
--
-- KEYS[1] - the hold record, "<base>h:<lease>"
-- ARGV[1] - now_ms
-- ARGV[2] - day (yyyymmdd, UTC)       ARGV[3] - day counters' TTL when created, ms
-- ARGV[4] - month (yyyymm, UTC)       ARGV[5] - month counters' TTL when created, ms
-- ARGV[6] - actual cost, micro-units
-- ARGV[7] - entry id (fresh, unique)
-- ARGV[8] - model, ""      ARGV[9] - metadata JSON, ""
-- ARGV[10] - lease id
-- return {0, user, project, late (1 or 0), estimate} when settled now (the
--        entry and time are the caller's), {2, user, project,
--        "entry|settled_ms|late|estimate"} when it already was, at this cost;
--        {3, actual} when it was settled at another cost; {4} unknown lease;
--        {5} the lease was released

local hkey = KEYS[1]
local h = redis.call('HMGET', hkey, 'st', 'a', 'u', 'p', 'x', 'r', 'c', 'pl')
local state = h[1]
if not state then return {4} end
if state == 'v' then return {5} end
local cost = ARGV[6]
if state == 's' then
  if h[7] == cost then return {2, h[3], h[4], h[8]} end
  return {3, h[7]}
end

local now_ms, entry, lease = ARGV[1], ARGV[7], ARGV[10]
local user, project = h[3], h[4]
local late = '0'
if tonumber(now_ms) >= tonumber(h[5]) then late = '1' end
-- The balance is read with the held amounts: charge need not look again.
local balance
if state == 'p' and redis.call('ZREM', BASE .. 'holds', lease) == 1 then
  balance = remove_held(user, project, tonumber(h[2]))
end

charge(ARGV, user, project, balance)
ledger_append('e', entry, 'k', 'settle', 't', now_ms, 'u', user, 'a', cost,
              'l', lease, 'est', h[2], 'late', late, 'p', project, 'm', ARGV[8],
              'md', ARGV[9])

local payload = entry .. '|' .. now_ms .. '|' .. late .. '|' .. h[2]
redis.call('HSET', hkey, 'st', 's', 'c', cost, 'pl', payload)
redis.call('PEXPIRE', hkey, h[6])
return {0, user, project, tonumber(late), tonumber(h[2])}
