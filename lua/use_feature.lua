-- use_feature: count one call of a plan's feature in its calendar period,
-- against the feature's limit. At max_calls, "deny" refuses (nothing
-- counted); "warn" and "notify" admit and, the first time in the period,
-- write one EV_CAP_WARNING event (a flag in the same hash makes it once,
-- whatever the retries or the concurrency). The caller computed the limit
-- from the plan it expects the user to have; when the user has another, the
-- script answers R_STALE_PRICE with it and the caller tries again.
--
-- KEYS[1] - idempotency key, or for none the user's plan key again (every
--           declared key in the deployment's slot: Redis Cluster refuses a
--           script whose keys span slots, and "" has a slot of its own);
--           checked before, stored after: a refusal leaves nothing behind
-- KEYS[2] - the user's plan (K_USER_PLAN)
-- KEYS[3] - the user's feature calls in this period (K_FEATURE_USE, a hash:
--           "c:<feature>" counted, "w:<feature>" the event written)
-- ARGV[1] - now_ms         ARGV[2] - fingerprint of the call ("" without a key)
-- ARGV[3] - user id        ARGV[4] - feature
-- ARGV[5] - the user's plan expected (K_USER_PLAN's value, "" for none)
-- ARGV[6] - max_calls, "" to count nothing (the feature is not limited, or
--           not the plan's: only the plan is checked)
-- ARGV[7] - the limit's action: "deny", "warn" or "notify"
-- ARGV[8] - the period's name (the event's window: "monthly"...)
-- ARGV[9] - the hash's TTL, ms (the period's end plus the retention, from now)
-- ARGV[10] - the event's data JSON up to the count: '{"feature":...,"used":'
-- return {R_OK, "used|over|now_ms"} (used: the calls counted this period,
--        this one included; over: 1 when admitted past max_calls; now_ms
--        ARGV[1], so that a replay in a later period names the call's own),
--        {R_REPLAYED, same payload}, {R_CONFLICT}, {R_REFUSED, used,
--        max_calls} at the limit with "deny", or {R_STALE_PRICE, the user's
--        plan} when it is not the one expected

local ikey, pkey, fkey = KEYS[1], KEYS[2], KEYS[3]
if ikey == pkey then ikey = '' end  -- no idempotency key
local fingerprint, user, feature = ARGV[2], ARGV[3], ARGV[4]

local seen = idem_lookup(ikey, fingerprint)
if seen then return seen end

local assigned = redis.call('GET', pkey) or ''
if assigned ~= ARGV[5] then return {R_STALE_PRICE, assigned} end
if ARGV[6] == '' then return {R_OK, '0|0'} end

local max_calls = tonumber(ARGV[6])
local field = 'c:' .. feature
local used = tonumber(redis.call('HGET', fkey, field) or '0')
if used >= max_calls and ARGV[7] == 'deny' then
  return {R_REFUSED, used, max_calls}
end

used = redis.call('HINCRBY', fkey, field, 1)
redis.call('PEXPIRE', fkey, ARGV[9])
local over = '0'
if used > max_calls then
  over = '1'
  if redis.call('HSETNX', fkey, 'w:' .. feature, '1') == 1 then
    -- (a user's feature limit: scope "user", the feature in the data)
    redis.call('XADD', BASE .. K_EVENTS, '*', EF_TYPE, EV_CAP_WARNING,
               EF_OCCURRED_AT, ARGV[1], EF_USER_ID, user, EF_SCOPE, 'user',
               EF_SCOPE_ID, user, EF_WINDOW, ARGV[8],
               EF_DATA, ARGV[10] .. used .. '}')
  end
end
local payload = used .. '|' .. over .. '|' .. ARGV[1]
idem_store(ikey, fingerprint, payload)
return {R_OK, payload}
