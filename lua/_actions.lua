-- Helpers of cap actions and threshold events, linked only into the scripts
-- of a deployment with cap_actions on (CAP_ACTIONS "1"); the lines of the
-- other files that call them end in a "cap_actions" tag and are gone
-- otherwise (spendgate.core.scripts.HOOKS), so an unconfigured deployment
-- runs the scripts it ran before.
--
-- A scope's action is the last part of its override, after the weekly one
-- (caps() leaves it at the end of `more`): the action's letter (CA_DENY,
-- CA_WARN, CA_NOTIFY), then its thresholds in millionths of the cap
-- (THRESHOLD_SCALE), ascending, comma-separated, the cap itself always last:
-- "w500000,800000,950000,1000000". A scope without one refuses at its caps
-- and writes no event. Actions apply to the daily and monthly caps.
--
-- A threshold's event is written by the charge that takes the window's
-- counter to it, once per window: the window's mark (K_CAP_MARK, beside the
-- counter, expiring with it) keeps the highest threshold written, so a
-- refund that lowers the counter and a charge that reaches the threshold
-- again write nothing, whatever the retries or the concurrency.

-- A scope's action part, from what caps() left of its override after the
-- monthly part: its letter and thresholds (nil when it has none).
local function cap_part(more)
  if not more then return nil end
  return string.match(more, '^[^|]*|[^|]*|(%a[%d,]*)$')
end

-- A scope's action letter and thresholds (nil when it has no action).
local function cap_action(more)
  local part = cap_part(more)
  if not part then return nil end
  return string.sub(part, 1, 1), string.sub(part, 2)
end

-- Whether a scope's daily and monthly caps admit past the cap (warn,
-- notify): admission neither refuses at them nor counts their room.
local function cap_soft(more)
  local action = cap_action(more)
  return action == CA_WARN or action == CA_NOTIFY
end

-- The amount (micro-units) at which threshold t (millionths) of a cap of
-- `limit` is reached: ceil(limit * t / THRESHOLD_SCALE), exactly (the cap is
-- split so that no product passes 2^53).
local function threshold_at(limit, t)
  local q = math.floor(limit / THRESHOLD_SCALE)
  local r = limit - q * THRESHOLD_SCALE
  return q * t + math.ceil(r * t / THRESHOLD_SCALE)
end

-- The thresholds of one window that its counter, now at `spent` of a cap
-- of `limit`, has reached and whose events were not written yet (ascending;
-- nil for none). The window's mark (`mark`, kept `ttl` ms) is read only once
-- the first threshold is reached, and moved to the highest one written. (So
-- a cap lowered, or a threshold raised, mid-window: the next charge writes
-- what the spend already passed above the mark.)
local function cap_reached(mark, ttl, limit, spec, spent)
  if spent < threshold_at(limit, tonumber(string.match(spec, '^%d+'))) then
    return nil
  end
  local written = tonumber(redis.call('GET', mark)) or 0
  local reached = {}
  for t in string.gmatch(spec, '%d+') do
    t = tonumber(t)
    if t > written and spent >= threshold_at(limit, t) then reached[#reached + 1] = t end
  end
  if #reached == 0 then return nil end
  redis.call('SET', mark, fmt(reached[#reached]), 'PX', ttl)
  return reached
end

-- A charge's replay payload (an idempotency record's, a settled hold's pl)
-- with the thresholds it took warn scopes to, `crossed` as cap_events
-- returns them: the payload, WARNED_MARK, then the list comma-separated; the
-- payload as it is when none was reached. A replay answers them again
-- without writing any event (the events were written once, by the charge).
local function cap_payload(payload, crossed)
  if not crossed then return payload end
  local parts = {}
  for i = 1, #crossed do parts[i] = fmt(crossed[i]) end
  return payload .. WARNED_MARK .. table.concat(parts, ',')
end

-- The threshold events of one charge, once its counters have counted it:
-- for every scope with a cap action, each daily and monthly threshold
-- reached for the first time in the window is one event, EV_CAP_REACHED for
-- the cap itself, EV_CAP_WARNING below it (data: threshold, limit, spent,
-- action). `head` is charge's (ARGV[1..6]). Reads the scopes' overrides with
-- one MGET, and the day and month counters of a scope with an action with
-- another (most scopes have none). Returns the thresholds reached in warn
-- scopes, flat: scope index, window code, threshold, limit, spent, for
-- each; nil when none.
local function cap_events(head, user, project)
  local parts = {S_USER .. user, S_GLOBAL}
  if project ~= '' then parts = {S_USER .. user, S_PROJECT .. project, S_GLOBAL} end
  local n, l = #parts, BASE .. K_LIMITS
  local d, m = K_DAY .. head[2] .. ':', K_MONTH .. head[4] .. ':'
  local overrides
  if n == 2 then
    overrides = redis.call('MGET', l .. parts[1], l .. parts[2])
  else
    overrides = redis.call('MGET', l .. parts[1], l .. parts[2], l .. parts[3])
  end
  local warned
  for i = 1, n do
    local daily, monthly, more = caps(overrides[i], default_caps(i, n))
    local action, spec = cap_action(more)
    if action then
      local seen = redis.call('MGET', BASE .. d .. parts[i], BASE .. m .. parts[i])
      local scope, id = scope_of(i, n, user, project)
      local name = CAN_DENY
      if action == CA_WARN then name = CAN_WARN elseif action == CA_NOTIFY then name = CAN_NOTIFY end
      for w = W_DAILY, W_MONTHLY do
        local limit, part, ttl, window = tonumber(daily), d, head[3], WN_DAILY
        if w == W_MONTHLY then
          limit, part, ttl, window = tonumber(monthly), m, head[5], WN_MONTHLY
        end
        if limit >= 0 then
          local spent = tonumber(seen[w - W_DAILY + 1]) or 0
          local reached = cap_reached(BASE .. K_CAP_MARK .. part .. parts[i], ttl, limit,
                                      spec, spent)
          for _, t in ipairs(reached or {}) do
            local kind = EV_CAP_WARNING
            if t == THRESHOLD_SCALE then kind = EV_CAP_REACHED end
            event_append(kind, head[1], user, scope, id, window,
                         '{"threshold":"' .. decimal(t) .. '","limit":"' .. decimal(limit)
                         .. '","spent":"' .. decimal(spent) .. '","action":"' .. name .. '"}')
            if action == CA_WARN then
              warned = warned or {}
              for _, v in ipairs({i, w, t, limit, spent}) do warned[#warned + 1] = v end
            end
          end
        end
      end
    end
  end
  return warned
end
