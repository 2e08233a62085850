-- team_member_set: add a member to a team, or change a member's role and
-- caps (effective on the member's next charge).
--
-- KEYS[1] - the team (K_TEAM)     KEYS[2] - its members (K_TEAM_MEMBERS)
-- ARGV[1] - user id     ARGV[2] - "<role>|<daily cap>|<monthly cap>" (-1: none)
-- return {R_OK, 1} for a new member, {R_OK, 0} for one updated, or
--        {R_UNKNOWN_TEAM}

if redis.call('EXISTS', KEYS[1]) == 0 then return {R_UNKNOWN_TEAM} end
return {R_OK, redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])}
