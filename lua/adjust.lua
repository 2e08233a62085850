-- adjust: an operator's correction of one counter, a scope's spent in one day
-- or month, up or down; a fact (ledger KIND_ADJUST, never a silent reset). A
-- lowering stops at zero: the counter never goes negative, and the entry
-- records the amount applied (the one asked for is in its metadata).
--
-- KEYS[1] - idempotency key (generated when the caller gave none)
-- ARGV[1] - now_ms
-- ARGV[2] - amount, signed micro-units (+ raises the counter, - lowers it)
-- ARGV[3] - the counter's TTL when this call creates it, ms
-- ARGV[4] - fingerprint of the arguments, "" when the key was generated
-- ARGV[5] - entry id (fresh, unique)
-- ARGV[6] - scope: "user", "project" or "global"
-- ARGV[7] - the user or project id, "" for global
-- ARGV[8] - window: "daily" or "monthly"
-- ARGV[9] - the window's key part: yyyymmdd (daily) or yyyymm (monthly), UTC
-- ARGV[10] - the window as the ledger names it: YYYY-MM-DD or YYYY-MM
-- ARGV[11] - metadata JSON
-- ARGV[12] - the caller's idempotency key, "" when it was generated
-- return {R_OK, "entry|now_ms|applied|after"} when applied (applied: signed
--        micro-units; after: the counter), {R_REPLAYED, same payload} for a
--        replay, {R_CONFLICT} for an idempotency conflict

local ikey = KEYS[1]
local now_ms = ARGV[1]
local amount = tonumber(ARGV[2])
local fingerprint, entry = ARGV[4], ARGV[5]
local scope, scope_id, window = ARGV[6], ARGV[7], ARGV[8]

local seen = idem_lookup(ikey, fingerprint)
if seen then return seen end

local letters = {user = S_USER, project = S_PROJECT, global = S_GLOBAL}
local part = K_DAY
if window == 'monthly' then part = K_MONTH end
local key = BASE .. part .. ARGV[9] .. ':' .. letters[scope] .. scope_id

local before = tonumber(redis.call('GET', key) or '0')
local applied = amount
if before + applied < 0 then applied = 0 - before end  -- (not -before: "-0")
local after = before
if applied ~= 0 then
  after = redis.call('INCRBY', key, fmt(applied))
  if after == applied then redis.call('PEXPIRE', key, ARGV[3]) end  -- created now
end

local user, project = '', ''
if scope == 'user' then user = scope_id end
if scope == 'project' then project = scope_id end
ledger_append(F_ENTRY_ID, entry, F_KIND, KIND_ADJUST, F_OCCURRED_AT, now_ms,
              F_USER_ID, user, F_PROJECT_ID, project, F_AMOUNT, fmt(applied),
              F_SCOPE, scope, F_WINDOW, ARGV[10], F_METADATA, ARGV[11],
              F_IDEMPOTENCY_KEY, ARGV[12])

local payload = entry .. '|' .. now_ms .. '|' .. fmt(applied) .. '|' .. fmt(after)
idem_store(ikey, fingerprint, payload)
return {R_OK, payload}
