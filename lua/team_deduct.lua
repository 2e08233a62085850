-- team_deduct: deduct on a team's shared pool, in one step: the user must be
-- a member; the user's caps (and the project's and global caps; not the
-- user's balance: the pool pays), the member's caps on the team and the pool
-- (its balance never goes below 0) are checked, then the amount is charged
-- (team_charge) and one ledger entry names the team; or the call is refused
-- and nothing changes.
--
-- KEYS[1] - idempotency key, or for none the charge's refund record (K_CHARGE
--           .. entry), as in deduct.lua
-- KEYS[2] - the team        KEYS[3] - its members   KEYS[4] - members' held
-- KEYS[5] - its pending holds    KEYS[6] - members' day    KEYS[7] - month
--           (see _teams.lua)
-- ARGV[1..13] - as in deduct.lua (now_ms, day, day TTL, month, month TTL,
--               amount, fingerprint, entry, user, project, model, metadata,
--               the caller's idempotency key)
-- ARGV[14] - the price book version the amount was priced with, "" for none
-- ARGV[15] - the user's plan check, as deduct.lua's ARGV[16]
-- ARGV[16] - team id
-- return {R_OK, "entry|now_ms|pool balance|amount|version"} when charged,
--        {R_REPLAYED, same payload}, {R_CONFLICT}, the refusal (a team's
--        names scope SC_MEMBER or SC_TEAM), {R_STALE_PRICE, ...} as
--        deduct.lua, {R_NOT_A_MEMBER} or {R_UNKNOWN_TEAM}
-- (with MODEL_CAPS, the model's caps admit the charge too, ARGV[11] its  --@models
-- model: refused as deduct.lua's model refusal)  --@models
-- (with cap actions, a charge's reply adds the thresholds it took the  --@cap_actions
-- user's warn scopes to, as deduct.lua's, kept for its replay)  --@cap_actions

local ikey = KEYS[1]
local T = {KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7]}
local now_ms, fingerprint = ARGV[1], ARGV[7]
local entry, user, project = ARGV[8], ARGV[9], ARGV[10]
if ikey == BASE .. K_CHARGE .. entry then ikey = '' end  -- no idempotency key

local seen = idem_lookup(ikey, fingerprint)
if seen then return seen end

local role, daily, monthly = team_member(T[2], user)
if not role then return team_refusal(T[1]) end

local version = ARGV[14]
if version ~= '' then
  local active = redis.call('GET', BASE .. K_PRICE_ACTIVE)
  if active ~= version then return {R_STALE_PRICE, active or ''} end
end
local plan = ARGV[15]
if plan ~= '' then
  local assigned = redis.call('GET', BASE .. K_USER_PLAN .. user) or ''
  if '=' .. assigned ~= plan then return {R_STALE_PRICE, version, assigned} end
end

local amount = tonumber(ARGV[6])
local verdict, _, _, _, minutes = admit(now_ms, ARGV[2], ARGV[4], user, project,
                                        amount, team_user_floor())
verdict = model_admit(verdict, ARGV[2], ARGV[4], user, project, amount, ARGV[11])  --@models
if verdict[1] ~= R_OK then return verdict end
local team = team_admit(now_ms, T, user, daily, monthly, amount)
if team[1] ~= R_OK then return team end

local balance = team_charge(ARGV, T, user, project, entry, ARGV[11], true)  --@!cap_actions
local balance, crossed = team_charge(ARGV, T, user, project, entry, ARGV[11], true)  --@cap_actions
if WEEKLY == '1' then count_weeks(ARGV, user, project) end
if minutes then count_admitted_minutes(minutes, now_ms, amount, ARGV[6]) end
ledger_append(F_ENTRY_ID, entry, F_KIND, KIND_SPEND, F_OCCURRED_AT, now_ms,
              F_USER_ID, user, F_AMOUNT, ARGV[6], F_PROJECT_ID, project,
              F_MODEL, ARGV[11], F_METADATA, ARGV[12], F_IDEMPOTENCY_KEY, ARGV[13],
              F_PRICE_VERSION, version, F_TEAM_ID, ARGV[16])

local payload = entry .. '|' .. now_ms .. '|' .. fmt(balance) .. '|' .. ARGV[6]
                .. '|' .. version
idem_store(ikey, fingerprint, payload)  --@!cap_actions
idem_store(ikey, fingerprint, cap_payload(payload, crossed))  --@cap_actions
return {R_OK, payload, crossed}  --@cap_actions
return {R_OK, payload}  --@!cap_actions
