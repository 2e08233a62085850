-- team_get: a team, its pool and its members (role, caps, spent today and
-- this month, held), after purging its expired holds.
--
-- KEYS[1] - the team        KEYS[2] - its members   KEYS[3] - members' held
-- KEYS[4] - its pending holds    KEYS[5] - members' day    KEYS[6] - month
--           (see _teams.lua)
-- ARGV[1] - now_ms
-- return {R_OK, {name, created_ms, balance, held}, members, held, day,
--        month} (the last four as HGETALL answers them: user, value, ...),
--        or {R_UNKNOWN_TEAM}

local T = {KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]}
if redis.call('EXISTS', T[1]) == 0 then return {R_UNKNOWN_TEAM} end
team_purge(ARGV[1], T)
return {R_OK, redis.call('HMGET', T[1], 'n', 'c', 'b', 'h'),
        redis.call('HGETALL', T[2]), redis.call('HGETALL', T[3]),
        redis.call('HGETALL', T[5]), redis.call('HGETALL', T[6])}
