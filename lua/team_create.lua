-- team_create: a new team, with its shared pool at `balance` (a grant
-- ledger entry naming the team records a balance above 0). A team that
-- exists already is left as it is.
--
-- KEYS[1] - the team (K_TEAM)
-- ARGV[1] - now_ms      ARGV[2] - team id     ARGV[3] - name, ""
-- ARGV[4] - the pool's first balance, micro-units
-- ARGV[5] - entry id (fresh, unique; used when the balance is above 0)
-- return {R_OK, "now_ms"} when created, {R_TEAM_EXISTS} when it was there

local team = KEYS[1]
if redis.call('EXISTS', team) == 1 then return {R_TEAM_EXISTS} end
local now_ms, balance = ARGV[1], ARGV[4]
redis.call('HSET', team, 'n', ARGV[3], 'c', now_ms, 'b', balance, 'h', '0')
if tonumber(balance) > 0 then
  ledger_append(F_ENTRY_ID, ARGV[5], F_KIND, KIND_GRANT, F_OCCURRED_AT, now_ms,
                F_AMOUNT, balance, F_TEAM_ID, ARGV[2])
end
return {R_OK, now_ms}
