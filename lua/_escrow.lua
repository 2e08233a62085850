-- Escrow (spendgate.ops.escrow): on a sharded deployment no bucket sees a
-- project's or the platform's whole spend, so a bucket admits against such
-- a daily or monthly cap only what the root lent it (its allowance of the
-- scope in the window, escrow_deposit.lua). Linked, with the calls to it in
-- _lib.lua's admit, only with the sharded hook (spendgate.core.hooks).

-- The key of the bucket's allowance of the i-th of n scopes (the project
-- when i < n, else the platform) in window w (W_DAILY: `day`, else `month`),
-- and that window's id: as spendgate.core.escrow_keys.loans builds it.
local function escrow_key(i, n, project, w, day, month)
  local scope = S_GLOBAL
  if i < n then scope = S_PROJECT .. project end
  local window = day
  if w == W_MONTHLY then window = month end
  return BASE .. K_ESCROW .. scope .. ':' .. window, window
end

-- What the bucket's allowance leaves of the i-th of n scopes in window w,
-- after what it spent (`used`) and holds (`held`): admit's room under the
-- cap instead of cap - used - held.
local function escrow_room(i, n, project, w, day, month, used, held)
  local key = escrow_key(i, n, project, w, day, month)
  local allowance = tonumber(redis.call('HGET', key, 'allowance')) or 0
  return allowance - used - held
end

-- A scope short of allowance, added to the answer `short` ({R_ESCROW, ...}
-- from admit, {} from escrow_deficits): the scope index, window, cap, the shortfall
-- (what `requested`, or 1 when nothing is, needs beyond `room`), the
-- bucket's spent, held and allowance, the scope's id ("" for the platform)
-- and the window's id, for the client to borrow
-- (spendgate.ops.escrow_admission).
local function escrow_short(short, i, n, project, w, day, month, cap, requested,
                            room, used, held)
  local _, window = escrow_key(i, n, project, w, day, month)
  local id = ''
  if i < n then id = project end
  local want = requested
  if want == 0 then want = 1 end
  local allowance = room + used + held
  for _, value in ipairs({i, w, cap, want - room, used, held, allowance, id,
                          window}) do
    short[#short + 1] = value
  end
  return short
end

-- After a fact (record.lua, settle.lua): what the bucket has spent and
-- holds of the project's and the platform's daily and monthly caps beyond
-- its allowance (a fact is never refused, so it may pass it), as the
-- values an ESCROW answer gives for each, for the client to borrow at once
-- (spendgate.ops.escrow_admission): the root then counts it against the
-- cap, and no other bucket admits it again. nil when there is none.
local function escrow_deficits(day, month, project)
  local n = 2
  if project ~= '' then n = 3 end
  local out = {}
  for i = 2, n do
    local id = S_GLOBAL
    if i < n then id = S_PROJECT .. project end
    local daily, monthly = caps(redis.call('GET', BASE .. K_LIMITS .. id),
                                default_caps(i, n))
    local held = tonumber(redis.call('GET', BASE .. K_HELD .. id)) or 0
    for w = W_DAILY, W_MONTHLY do
      local cap, counter = daily, BASE .. K_DAY .. day .. ':' .. id
      if w == W_MONTHLY then cap, counter = monthly, BASE .. K_MONTH .. month .. ':' .. id end
      cap = tonumber(cap)
      if cap >= 0 then
        local used = tonumber(redis.call('GET', counter)) or 0
        local room = escrow_room(i, n, project, w, day, month, used, held)
        if room < 0 then
          out = escrow_short(out, i, n, project, w, day, month, cap, 0, room, used, held)
        end
      end
    end
  end
  if #out == 0 then return nil end
  return out
end
