-- check: may this caller spend `requested` now? Changes no balance or counter
-- (it only purges holds that have expired).
--
-- KEYS[1] - the user's balance key (routes the call; all keys share one slot)
-- ARGV[1] - base: "<prefix>:{sg}:"
-- ARGV[2] - now_ms
-- ARGV[3] - day (yyyymmdd, UTC)
-- ARGV[4] - month (yyyymm, UTC)
-- ARGV[5] - requested, micro-units
-- ARGV[6] - user id
-- ARGV[7] - project id, "" for none
-- (the rest is the manager's configuration, the same on every call)
-- ARGV[8] - enforce_balance: "1" or "0"
-- ARGV[9] - min_balance, micro-units (may be negative)
-- ARGV[10] - purge_max: expired holds purged at most per call
-- ARGV[11..16] - default limits, micro-units, -1 = no cap: user daily, user
--               monthly, project daily, project monthly, global daily, global monthly
-- return {0, room} when admitted (room: smallest amount left over all capped
--        windows, -1 when none is capped), or {1, scope, window, limit, spent, held}

local verdict = admit(ARGV, tonumber(ARGV[5]))
return verdict
