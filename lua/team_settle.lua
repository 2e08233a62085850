-- team_settle: post a team hold (team_reserve) at the actual cost, a fact.
-- As settle.lua, but the hold also stops counting in the team's and the
-- member's held amounts, and the cost is charged to the team's pool
-- (team_charge), not to the user's balance; the ledger entry names the team.
--
-- KEYS[1] - the hold record (K_HOLD)
-- KEYS[2] - the team        KEYS[3] - its members   KEYS[4] - members' held
-- KEYS[5] - its pending holds    KEYS[6] - members' day    KEYS[7] - month
--           (see _teams.lua)
-- ARGV[1..10] - as in settle.lua (now_ms, day, day TTL, month, month TTL,
--               actual cost, entry, model, metadata, lease id)
-- ARGV[11] - team id
-- (with MODEL_CAPS, model "" stands for the hold's model, if it has one, and  --@models
-- the hold stops counting in that model's held amounts, as in settle.lua;  --@models
-- each reply ends with the model the cost counted at, as settle.lua's)  --@models
-- return as settle.lua (with cap actions too; the allowance used is always 0:
--        a team charge draws on the pool, not the user's plan allowance)

local hkey = KEYS[1]
local T = {KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7]}
local h = redis.call('HMGET', hkey, 'st', 'a', 'u', 'p', 'x', 'r', 'c', 'pl', 't')
local state = h[1]
if not state or h[9] ~= ARGV[11] then return {R_UNKNOWN_LEASE} end
if state == HOLD_VOIDED then return {R_LEASE_RELEASED} end
local cost = ARGV[6]
if state == HOLD_SETTLED then
  if h[7] == cost then return {R_REPLAYED, h[3], h[4], h[8]} end  --@!models
  if h[7] == cost then return {R_REPLAYED, h[3], h[4], h[8], redis.call('HGET', hkey, 'm') or ''} end  --@models
  return {R_CONFLICT, h[7]}
end

local now_ms, entry, lease = ARGV[1], ARGV[7], ARGV[10]
local held_for = redis.call('HGET', hkey, 'm')  --@models
if ARGV[8] == '' and held_for then ARGV[8] = held_for end  --@models
local user, project = h[3], h[4]
local late = '0'
if tonumber(now_ms) >= tonumber(h[5]) then late = '1' end
if state == HOLD_PENDING and redis.call('ZREM', BASE .. K_HOLDS, lease) == 1 then
  remove_held(user, project, tonumber(h[2]))
  pool_unhold(user, tonumber(h[2]))
  model_unhold(held_for, user, project, tonumber(h[2]))  --@models
end
team_unhold(T, lease, user, h[2])

local pool = redis.call('EXISTS', T[1]) == 1
-- (crossed: nil without cap actions)
local _, crossed = team_charge(ARGV, T, user, project, entry, ARGV[8], pool)
if WEEKLY == '1' then count_weeks(ARGV, user, project) end
if VELOCITY == '1' then
  local above = tonumber(cost) - tonumber(h[2])
  if above > 0 then count_minutes(now_ms, user, project, above, fmt(above)) end
end
ledger_append(F_ENTRY_ID, entry, F_KIND, KIND_SETTLE, F_OCCURRED_AT, now_ms,
              F_USER_ID, user, F_AMOUNT, cost, F_LEASE_ID, lease, F_ESTIMATE, h[2],
              F_LATE, late, F_PROJECT_ID, project, F_MODEL, ARGV[8],
              F_METADATA, ARGV[9], F_TEAM_ID, ARGV[11])

local payload = entry .. '|' .. now_ms .. '|' .. late .. '|' .. h[2]
redis.call('HSET', hkey, 'st', HOLD_SETTLED, 'c', cost, 'pl', payload)  --@!cap_actions
redis.call('HSET', hkey, 'st', HOLD_SETTLED, 'c', cost, 'pl', cap_payload(payload, crossed))  --@cap_actions
if ARGV[8] ~= (held_for or '') then redis.call('HSET', hkey, 'm', ARGV[8]) end  --@models
redis.call('PEXPIRE', hkey, h[6])
do return {R_OK, user, project, tonumber(late), tonumber(h[2]), 0, crossed or false, false, ARGV[8]} end  --@models
return {R_OK, user, project, tonumber(late), tonumber(h[2]), 0, crossed}  --@cap_actions
return {R_OK, user, project, tonumber(late), tonumber(h[2])}  --@!cap_actions
