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
-- from admit, {R_OK, ...} from escrow_deficit.lua): the scope index, window, cap, the shortfall
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
