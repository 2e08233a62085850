-- Helpers shared by the scripts that write events of their own (the kill
-- switch, cap actions, the low balance): linked only into the scripts of a
-- deployment that writes some (spendgate.core.scripts.linked_libraries).

-- The i-th of n scopes in reporting order: its name and id ("" for global).
local function scope_of(i, n, user, project)
  if i == 1 then return SN_USER, user end
  if i == n then return SN_GLOBAL, '' end
  return SN_PROJECT, project
end

-- An amount in micro-units as the API writes it: a decimal string ("2.5",
-- "-0.25").
local function decimal(micros)
  if micros < 0 then return '-' .. decimal(-micros) end
  local units = math.floor(micros / 1000000)
  local frac = micros - units * 1000000
  if frac == 0 then return fmt(units) end
  return (string.gsub(fmt(units) .. '.' .. string.format('%06d', frac), '0+$', ''))
end

-- Appends one event to the events stream: its type, when (ms, text), the
-- user concerned, the scope's name and id ("" for global), the window's
-- name ("" for none) and its data (a JSON object). The stream entry's id is
-- the event's stable id.
local function event_append(kind, now_ms, user, scope, id, window, data)
  redis.call('XADD', BASE .. K_EVENTS, '*', EF_TYPE, kind, EF_OCCURRED_AT, now_ms,
             EF_USER_ID, user, EF_SCOPE, scope, EF_SCOPE_ID, id, EF_WINDOW, window,
             EF_DATA, data)
end

-- The low balance event (the low_balance hook: LOW_BALANCE, micro-units, is
-- not NO_CAP), from charge(): written by the charge of `amount` that takes a
-- user's balance (`after`, false when none is kept) from at least
-- LOW_BALANCE to below it; once, until a credit or a refund raises it to
-- LOW_BALANCE again (data: threshold, balance).
local function low_balance(now_ms, user, after, amount)
  if not after then return end
  local floor = tonumber(LOW_BALANCE)
  if after < floor and after + amount >= floor then
    event_append(EV_LOW_BALANCE, now_ms, user, SN_USER, user, WN_BALANCE,
                 '{"threshold":"' .. decimal(floor) .. '","balance":"' .. decimal(after)
                 .. '"}')
  end
end
