-- escrow_deficit: what one bucket has spent and holds of a project's or the
-- platform's daily and monthly caps beyond what the root lent it (a fact is
-- never refused, so it may pass the bucket's allowance), for the client to
-- borrow at once (spendgate.ops.escrow_admission): the root then counts it
-- against the cap, and no other bucket admits it again. Changes nothing.
--
-- KEYS[1] - the user's balance key (routes the call: its bucket's slot)
-- ARGV[1] - day (yyyymmdd)
-- ARGV[2] - month (yyyymm)
-- ARGV[3] - project id, "" for none
-- return {R_OK, then for each scope and window past the bucket's allowance
--        the values an ESCROW answer gives (_escrow.lua's escrow_short)}

local day, month, project = ARGV[1], ARGV[2], ARGV[3]
local n = 2
if project ~= '' then n = 3 end
local out = {R_OK}
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
return out
