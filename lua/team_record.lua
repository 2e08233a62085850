-- team_record: a direct charge on a team's shared pool, a fact (as
-- record.lua: never refused for a cap or the pool). The user's, project's
-- and global counters move (not the user's balance: the pool pays), the
-- member's day and month on the team and the pool's balance, and one ledger
-- entry names the team; all in one step.
--
-- KEYS[1] - idempotency key (every fact has one; generated when the caller gave none)
-- KEYS[2] - the team        KEYS[3] - its members   KEYS[4] - members' held
-- KEYS[5] - its pending holds    KEYS[6] - members' day    KEYS[7] - month
--           (see _teams.lua)
-- ARGV[1..13] - as in record.lua (now_ms, day, day TTL, month, month TTL,
--               amount, fingerprint, entry, user, project, model, metadata,
--               the caller's idempotency key)
-- ARGV[14] - team id
-- ARGV[15] - "1" for the caller's call: a user who is not a member (or a
--            team that is not there) is refused and nothing changes; "0"
--            for the spool's replay of a fact already made: it is recorded
--            whoever is a member now (the pool moves if the team is there)
-- return {R_OK, "entry|now_ms|amount"} when recorded, {R_REPLAYED, same payload}
--        for a replay, {R_CONFLICT}, {R_NOT_A_MEMBER} or {R_UNKNOWN_TEAM}
-- (with cap actions, a recorded charge's reply adds the thresholds it took  --@cap_actions
-- the user's warn scopes to, as record.lua's, kept for its replay)  --@cap_actions

local ikey = KEYS[1]
local T = {KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7]}
local now_ms, fingerprint = ARGV[1], ARGV[7]
local entry, user, project = ARGV[8], ARGV[9], ARGV[10]

local seen = idem_lookup(ikey, fingerprint)
if seen then return seen end
local pool = true
if ARGV[15] == '1' then
  if not team_member(T[2], user) then return team_refusal(T[1]) end
else
  pool = redis.call('EXISTS', T[1]) == 1
end

-- (the amount: a deduct spooled as this fact is answered it on its retry)
local payload = entry .. '|' .. now_ms .. '|' .. ARGV[6]
idem_store(ikey, fingerprint, payload)
team_charge(ARGV, T, user, project, entry, ARGV[11], pool)  --@!cap_actions
local _, crossed = team_charge(ARGV, T, user, project, entry, ARGV[11], pool)  --@cap_actions
if crossed then idem_store(ikey, fingerprint, cap_payload(payload, crossed)) end  --@cap_actions
if WEEKLY == '1' then count_weeks(ARGV, user, project) end
if VELOCITY == '1' then count_minutes(now_ms, user, project, tonumber(ARGV[6]), ARGV[6]) end
ledger_append(F_ENTRY_ID, entry, F_KIND, KIND_SPEND, F_OCCURRED_AT, now_ms,
              F_USER_ID, user, F_AMOUNT, ARGV[6], F_PROJECT_ID, project,
              F_MODEL, ARGV[11], F_METADATA, ARGV[12], F_IDEMPOTENCY_KEY, ARGV[13],
              F_TEAM_ID, ARGV[14])
return {R_OK, payload, crossed}  --@cap_actions
return {R_OK, payload}  --@!cap_actions
