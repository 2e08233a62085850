-- team_reserve_up_to: reserve_up_to on a team's shared pool: at least `min`
-- must fit under the user's caps (not the user's balance: the pool pays),
-- the member's caps and the pool, or the call is refused and nothing
-- changes; then the hold is the smaller of `max` and the tightest room left
-- over all of them.
--
-- KEYS[1] - idempotency key, or for none the new hold's record (K_HOLD ..
--           lease), as in reserve_up_to.lua
-- KEYS[2] - the team        KEYS[3] - its members   KEYS[4] - members' held
-- KEYS[5] - its pending holds    KEYS[6] - members' day    KEYS[7] - month
--           (see _teams.lua)
-- ARGV[1..6] - as in check.lua (now_ms, day, month, min, user, project)
-- ARGV[7] - fingerprint of the arguments (for the idempotency key)
-- ARGV[8] - lease id (fresh, unique)
-- ARGV[9] - expires_ms: when the hold stops counting
-- ARGV[10] - the most to hold, micro-units
-- ARGV[11] - team id
-- ARGV[12] - model, "", with MODEL_CAPS only: its caps bound the hold too,  --@models
--            and the hold remembers it (as reserve_up_to.lua's)  --@models
-- return as reserve_up_to.lua, or {R_NOT_A_MEMBER} / {R_UNKNOWN_TEAM}

local ikey = KEYS[1]
if ikey == BASE .. K_HOLD .. ARGV[8] then ikey = '' end  -- no idempotency key
local fingerprint = ARGV[7]
local seen = idem_lookup(ikey, fingerprint)
if seen then return seen end

local T = {KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7]}
local user, project = ARGV[5], ARGV[6]
local role, daily, monthly = team_member(T[2], user)
if not role then return team_refusal(T[1]) end

local least = tonumber(ARGV[4])
local verdict, due, _, _, minutes = admit(ARGV[1], ARGV[2], ARGV[3], user,
                                          project, least, team_user_floor())
verdict = model_admit(verdict, ARGV[2], ARGV[3], user, project, least, ARGV[12])  --@models
if verdict[1] ~= R_OK then return verdict end
local team = team_admit(ARGV[1], T, user, daily, monthly, least)
if team[1] ~= R_OK then return team end

local granted = tonumber(ARGV[10])
for _, room in ipairs({verdict[2], team[2]}) do
  if room >= 0 and room < granted then granted = room end
end
local text = fmt(granted)

local lease, expires_ms = ARGV[8], ARGV[9]
hold_create(lease, granted, text, user, project, expires_ms, due)
team_hold(T, lease, user, granted, text, expires_ms, ARGV[11])
model_hold(lease, ARGV[12], user, project, granted, text)  --@models
if minutes then count_admitted_minutes(minutes, ARGV[1], granted, text) end

local payload = lease .. '|' .. expires_ms .. '|' .. text
idem_store(ikey, fingerprint, payload)
return {R_OK, payload}
