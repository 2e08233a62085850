-- credit: a grant of prepaid credits to a user, a fact (ledger KIND_GRANT).
-- The grant pays the user's debt first (a negative balance outside grants);
-- what is left of it is drawn on by charges in its order (_grants.lua) until
-- it is used up or expires. Its id is the entry id.
--
-- KEYS[1] - idempotency key (generated when the caller gave none)
-- ARGV[1] - now_ms
-- ARGV[2] - amount, micro-units
-- ARGV[3] - fingerprint of the arguments
-- ARGV[4] - entry id (fresh, unique): the grant's id
-- ARGV[5] - user id
-- ARGV[6] - metadata JSON, ""
-- ARGV[7] - the caller's idempotency key, "" when it was generated
-- ARGV[8] - expires_ms: when the grant stops counting, "" for never
-- ARGV[9] - priority (an integer: lower is drawn on first)
-- ARGV[10] - the grant's kind ("purchase", "promo", ...)
-- return {R_OK, "entry|now_ms|balance"} when credited, {R_REPLAYED, same
--        payload} for a replay, {R_CONFLICT} for an idempotency conflict,
--        {R_PAST_EXPIRY} when the expiry is not after now_ms and the key
--        names no earlier credit (only a retry with its key is sent so: a
--        grant made before its expiry is then answered, not refused)

local ikey = KEYS[1]
local now_ms = ARGV[1]
local fingerprint = ARGV[3]
local entry = ARGV[4]
local user = ARGV[5]

local seen = idem_lookup(ikey, fingerprint)
if seen then return seen end
if ARGV[8] ~= '' and tonumber(ARGV[8]) <= tonumber(now_ms) then return {R_PAST_EXPIRY} end

local G = grants()
local bkey = BASE .. K_BALANCE .. user
local raw = redis.call('GET', bkey)
local balance, granted, nx = 0, 0, GRANT_NEVER
if raw then
  local b, g, x = G.parts(raw)
  if g then
    balance, granted, nx = G.expire(now_ms, user, b, g, x, GRANTS_PER_CALL)
  else
    balance = b
  end
end

local amount = tonumber(ARGV[2])
-- the debt first: what the balance owes outside grants
local rest = math.min(amount, math.max(0, amount - (granted - balance)))
if rest > 0 then
  local expires, priority = GRANT_NEVER, ARGV[9]
  if ARGV[8] ~= '' then expires = tonumber(ARGV[8]) end
  local member = string.format('%013.0f', expires) .. ':' .. entry .. ':' .. priority
                 .. ':' .. ARGV[10]
  redis.call('HSET', BASE .. K_GRANTS .. user, member, fmt(rest))
  redis.call('ZADD', BASE .. K_GRANT_ORDER .. user, priority, member)
  if expires ~= GRANT_NEVER then
    redis.call('ZADD', BASE .. K_GRANT_EXPIRY .. user, ARGV[8], member)
    if expires < nx then
      nx = expires
      redis.call('ZADD', BASE .. K_GRANTS_DUE, ARGV[8], user)
    end
  end
  granted = granted + rest
end
balance = balance + amount
redis.call('SET', bkey, G.text(balance, granted, nx))
ledger_append(F_ENTRY_ID, entry, F_KIND, KIND_GRANT, F_OCCURRED_AT, now_ms,
              F_USER_ID, user, F_AMOUNT, ARGV[2], F_METADATA, ARGV[6],
              F_IDEMPOTENCY_KEY, ARGV[7], F_GRANT_ID, entry)

local payload = entry .. '|' .. now_ms .. '|' .. fmt(balance)
idem_store(ikey, fingerprint, payload)
return {R_OK, payload}
