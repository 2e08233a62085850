-- team_member_remove: a member leaves a team: their next team charge is
-- refused (holds they already have are still settled or released).
--
-- KEYS[1] - the team (K_TEAM)     KEYS[2] - its members (K_TEAM_MEMBERS)
-- ARGV[1] - user id
-- return {R_OK} when removed, {R_NOT_A_MEMBER} or {R_UNKNOWN_TEAM}

if redis.call('HDEL', KEYS[2], ARGV[1]) == 1 then return {R_OK} end
if redis.call('EXISTS', KEYS[1]) == 0 then return {R_UNKNOWN_TEAM} end
return {R_NOT_A_MEMBER}
