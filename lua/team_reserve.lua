-- team_reserve: reserve on a team's shared pool. The user must be a member;
-- then the user's own caps (and the project's and global caps, as reserve
-- checks them; not the user's balance: the pool pays), the member's caps on
-- the team and the pool are checked, and the hold counts against all of
-- them until settled (team_settle), released (team_release) or expired.
--
-- KEYS[1] - idempotency key, or for none the new hold's record (K_HOLD ..
--           lease), as in reserve.lua
-- KEYS[2] - the team        KEYS[3] - its members   KEYS[4] - members' held
-- KEYS[5] - its pending holds    KEYS[6] - members' day    KEYS[7] - month
--           (see _teams.lua)
-- ARGV[1..6] - as in check.lua (now_ms, day, month, requested, user, project)
-- ARGV[7] - fingerprint of the arguments (for the idempotency key)
-- ARGV[8] - lease id (fresh, unique)
-- ARGV[9] - expires_ms: when the hold stops counting
-- ARGV[10] - team id
-- ARGV[11] - model, "", with MODEL_CAPS only: its caps admit the hold too,  --@models
--            and the hold remembers it (as reserve.lua's)  --@models
-- return as reserve.lua, or {R_NOT_A_MEMBER} / {R_UNKNOWN_TEAM} (nothing
--        changed); a refusal by the team names scope SC_MEMBER or SC_TEAM
--        (a model's cap refuses as reserve.lua's model refusal)  --@models

local ikey = KEYS[1]
if ikey == BASE .. K_HOLD .. ARGV[8] then ikey = '' end  -- no idempotency key
local fingerprint = ARGV[7]
local seen = idem_lookup(ikey, fingerprint)
if seen then return seen end

local T = {KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7]}
local user, project = ARGV[5], ARGV[6]
local role, daily, monthly = team_member(T[2], user)
if not role then return team_refusal(T[1]) end

local requested = tonumber(ARGV[4])
local verdict, due, _, _, minutes = admit(ARGV[1], ARGV[2], ARGV[3], user,
                                          project, requested, team_user_floor())
verdict = model_admit(verdict, ARGV[2], ARGV[3], user, project, requested, ARGV[11])  --@models
if verdict[1] ~= R_OK then return verdict end
local team = team_admit(ARGV[1], T, user, daily, monthly, requested)
if team[1] ~= R_OK then return team end

local lease, expires_ms = ARGV[8], ARGV[9]
hold_create(lease, requested, ARGV[4], user, project, expires_ms, due)
team_hold(T, lease, user, requested, ARGV[4], expires_ms, ARGV[10])
model_hold(lease, ARGV[11], user, project, requested, ARGV[4])  --@models
if minutes then count_admitted_minutes(minutes, ARGV[1], requested, ARGV[4]) end

local payload = lease .. '|' .. expires_ms
idem_store(ikey, fingerprint, payload)
return {R_OK, payload}
