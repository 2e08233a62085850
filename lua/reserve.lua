-- reserve: admit `requested` and hold it against every scope until the hold is
-- settled, released, or its expiry passes.
--
-- KEYS[1] - idempotency key, "" for none
-- ARGV[1..16] - as in check.lua (base, now_ms, day, month, requested, user,
--               project, enforce_balance, min_balance, purge_max, 6 limits)
-- ARGV[17] - fingerprint of the arguments (for the idempotency key)
-- ARGV[18] - lease id (fresh, unique)
-- ARGV[19] - expires_ms: when the hold stops counting
-- ARGV[20] - idempotency TTL, ms
-- ARGV[21] - retention_ms: how long the hold record is kept once it is final
-- return {0, "lease|expires_ms"} for a new hold, {2, same payload} for an
--        idempotent replay, {3} for an idempotency conflict, or the refusal
--        {1, scope, window, limit, spent, held}

local ikey = KEYS[1]
local fingerprint = ARGV[17]
local seen = idem_lookup(ikey, fingerprint)
if seen then return seen end

local base, user, project = ARGV[1], ARGV[6], ARGV[7]
local requested = tonumber(ARGV[5])
local verdict, due = admit(ARGV, requested)
if verdict[1] ~= 0 then return verdict end

local lease, expires_ms = ARGV[18], ARGV[19]
redis.call('HSET', base .. 'h:' .. lease, 'st', 'p', 'a', ARGV[5], 'u', user,
           'p', project, 'x', expires_ms, 'r', ARGV[21])
redis.call('ZADD', base .. 'holds', expires_ms, lease)
if tonumber(expires_ms) < tonumber(due) then
  redis.call('SET', base .. 'due', expires_ms)  -- the earliest pending expiry now
end
add_held(base, user, project, requested, ARGV[5])

local payload = lease .. '|' .. expires_ms
idem_store(ikey, fingerprint, payload, ARGV[20])
return {0, payload}
