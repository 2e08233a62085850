-- Helpers of the kill switch, linked only into the scripts of a deployment
-- with per-minute caps (VELOCITY "1") and a kill switch (KILL_SWITCH_MS not
-- "0"): a trip writes an event, and the event's many names would cost every
-- call of a deployment without a switch the making of their closures. (The
-- helpers every event writer shares are _events.lua's.)

-- Trips the kill switch of the i-th of n scopes, whose minute (`key`)
-- reached its per-minute cap: the scope is refused until now +
-- KILL_SWITCH_MS ("k" in its minute hash, which lives at least that long),
-- and one EV_CAP_REACHED event names the minute (data: limit, spent, until
-- ms). Admission finds the switch before anything else of a minute, so a
-- trip is written once. Returns until when (ms).
local function kill_trip(key, now, i, n, user, project, cap, used)
  local until_ms = now + tonumber(KILL_SWITCH_MS)
  redis.call('HSET', key, 'k', fmt(until_ms))
  redis.call('PEXPIRE', key, fmt(math.max(tonumber(KILL_SWITCH_MS), 61000)))
  local scope, id = scope_of(i, n, user, project)
  local data = '{"limit":"' .. decimal(cap) .. '","spent":"' .. decimal(used)
               .. '","until":' .. fmt(until_ms) .. '}'
  redis.call('XADD', BASE .. K_EVENTS, '*', EF_TYPE, EV_CAP_REACHED,
             EF_OCCURRED_AT, fmt(now), EF_USER_ID, user, EF_SCOPE, scope,
             EF_SCOPE_ID, id, EF_WINDOW, WN_MINUTE, EF_DATA, data)
  return until_ms
end
