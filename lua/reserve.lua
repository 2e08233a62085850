-- reserve: admit `requested` and hold it against every scope until the hold is
-- settled, released, or its expiry passes.
--
-- KEYS[1] - idempotency key, "" for none
-- ARGV[1..16] - as in check.lua (base, now_ms, day, month, requested,
--               enforce_balance, min_balance, purge_max, user, project, 6 limits)
-- ARGV[17] - fingerprint of the arguments (for the idempotency key)
-- ARGV[18] - idempotency TTL, ms
-- ARGV[19] - lease id (fresh, unique)
-- ARGV[20] - expires_ms: when the hold stops counting
-- ARGV[21] - retention_ms: how long the hold record is kept once it is final
-- return {0, "lease|expires_ms"} for a new hold, {2, same payload} for an
--        idempotent replay, {3} for an idempotency conflict, or the refusal
--        {1, scope, window, limit, spent, held}

local ikey = KEYS[1]
local base = ARGV[1]
local now_ms = tonumber(ARGV[2])
local day = ARGV[3]
local month = ARGV[4]
local requested = tonumber(ARGV[5])
local enforce_balance = ARGV[6] == '1'
local min_balance = tonumber(ARGV[7])
local purge_max = tonumber(ARGV[8])
local user = ARGV[9]
local project = ARGV[10]
local defaults = {
  u = {tonumber(ARGV[11]), tonumber(ARGV[12])},
  p = {tonumber(ARGV[13]), tonumber(ARGV[14])},
  g = {tonumber(ARGV[15]), tonumber(ARGV[16])},
}
local fingerprint = ARGV[17]
local idem_ttl_ms = ARGV[18]
local lease = ARGV[19]
local expires_ms = ARGV[20]
local retention_ms = ARGV[21]

local seen = idem_lookup(ikey, fingerprint)
if seen then return seen end

purge_expired_holds(base, now_ms, purge_max)
local verdict = admit(base, day, month, user, project, defaults, requested,
                      enforce_balance, min_balance)
if verdict[1] ~= 0 then return verdict end

redis.call('HSET', base .. 'h:' .. lease, 'st', 'p', 'a', fmt(requested),
           'u', user, 'p', project, 'x', expires_ms, 'r', retention_ms)
redis.call('ZADD', base .. 'holds', expires_ms, lease)
add_held(base, user, project, requested)

local payload = lease .. '|' .. expires_ms
idem_store(ikey, fingerprint, payload, idem_ttl_ms)
return {0, payload}
