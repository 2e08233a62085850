-- Grants: a user's prepaid credits, each with what is left of it, a priority
-- and maybe an expiry (DESIGN.md "Grants, balances, expiry"). Two helpers,
-- linked like those of _lib.lua (and using its): grants() makes and returns
-- the grant functions only when called, so a script that calls it only for
-- a user holding grants (an admission) costs the others one closure, not one
-- per function (Redis makes every helper's closure again on each call); and
-- draw_grants, a charge's, which does its common case without them.
--
-- The user's balance key (K_BALANCE) holds "<balance>" while the user holds
-- no live grant, else "<balance>|<granted>|<next expiry>": the balance
-- (what every grant has left, plus the part outside grants: a balance from
-- before grants, money refunded to it, or a debt when negative), the sum of
-- the live grants' remainders, and the earliest expiry among them
-- (GRANT_NEVER when none expires). A charge or an admission reads that one
-- key, as before grants: only a user who holds grants costs more, and only
-- a user whose next expiry has passed costs more again.
--
-- A grant is named by its member, "<expiry, 13 digits>:<grant id>:<priority>:
-- <kind>": everything about it but its remainder. It sits in three keys of
-- the user's: K_GRANTS (hash: member -> remaining), K_GRANT_ORDER (zset
-- scored by priority: equal scores sort by member, so by expiry, never-
-- expiring last, then by the time-ordered grant id: ZRANGE is the order
-- charges draw in), and K_GRANT_EXPIRY (the expiring ones, scored by
-- expiry). A grant used up leaves all three (a refund brings it back from its
-- member alone); one that expires leaves them with one KIND_EXPIRE ledger
-- entry for its remainder, written by whichever call gets there first (a
-- charge, an admission, a credit, a refund, a read, the sweep). K_GRANTS_DUE
-- scores each user holding an expiring grant by its next expiry, for the
-- sweep.
--
-- The part outside grants, when positive, is drawn on as a never-expiring
-- grant of priority 0 older than any other. Work per call is bounded: a call
-- expires at most GRANTS_PER_CALL grants and draws on at most as many (a
-- charge needing more takes the rest from the part outside grants, into a
-- debt the next credit pays first).

local function grants()
  local G = {}

  -- The balance key's value as numbers: the balance, then, for a user holding
  -- grants, the grants' total and the next expiry (nil otherwise).
  function G.parts(raw)
    local i = string.find(raw, '|', 1, true)
    if not i then return tonumber(raw) end
    local j = string.find(raw, '|', i + 1, true)
    return tonumber(string.sub(raw, 1, i - 1)), tonumber(string.sub(raw, i + 1, j - 1)),
           tonumber(string.sub(raw, j + 1))
  end

  -- The balance key's value: plain once no live grant is left.
  function G.text(balance, granted, nx)
    if not granted or granted <= 0 then return fmt(balance) end
    return fmt(balance) .. '|' .. fmt(granted) .. '|' .. fmt(nx)
  end

  -- A grant's id, from its member.
  function G.grant_id(member)
    return string.match(member, '^%d+:([^:]+):')
  end

  -- The user's next grant expiry (GRANT_NEVER: none), read again after grants
  -- left the expiry index; K_GRANTS_DUE follows when it changed from `was`.
  function G.next_expiry(user, was)
    local first = redis.call('ZRANGE', BASE .. K_GRANT_EXPIRY .. user, 0, 0, 'WITHSCORES')[2]
    local nx = tonumber(first) or GRANT_NEVER
    if nx ~= was then
      if nx == GRANT_NEVER then
        redis.call('ZREM', BASE .. K_GRANTS_DUE, user)
      else
        redis.call('ZADD', BASE .. K_GRANTS_DUE, fmt(nx), user)
      end
    end
    return nx
  end

  -- Expires up to `limit` of the user's grants whose expiry is at or before
  -- now_ms (the argument's text): each remainder leaves the balance with one
  -- KIND_EXPIRE entry (occurred at the expiry; its id the grant's, ".x" and
  -- the time it was found). `balance`, `granted`, `nx` are the balance key's
  -- parts (granted nil: no grants, nothing to do). Returns them after, then
  -- how many grants expired and their remainders' sum.
  function G.expire(now_ms, user, balance, granted, nx, limit)
    if not granted or nx > tonumber(now_ms) then return balance, granted, nx, 0, 0 end
    local xkey = BASE .. K_GRANT_EXPIRY .. user
    local gone = redis.call('ZRANGEBYSCORE', xkey, '-inf', now_ms, 'LIMIT', 0, limit)
    local amount = 0
    if #gone > 0 then
      local gkey = BASE .. K_GRANTS .. user
      local left = redis.call('HMGET', gkey, unpack(gone))
      for i = 1, #gone do
        local member, rest = gone[i], tonumber(left[i]) or 0
        if rest > 0 then
          local id = G.grant_id(member)
          ledger_append(F_ENTRY_ID, id .. '.x' .. now_ms, F_KIND, KIND_EXPIRE,
                        F_OCCURRED_AT, fmt(tonumber(string.sub(member, 1, 13))),
                        F_USER_ID, user, F_AMOUNT, fmt(rest), F_GRANT_ID, id)
          amount = amount + rest
        end
      end
      redis.call('HDEL', gkey, unpack(gone))
      redis.call('ZREM', BASE .. K_GRANT_ORDER .. user, unpack(gone))
      redis.call('ZREM', xkey, unpack(gone))
    end
    return balance - amount, granted - amount, G.next_expiry(user, nx), #gone, amount
  end

  -- The balance admission counts, from the balance key's value `raw` (false:
  -- none kept, 0): for a user whose next grant expiry has passed, the grants
  -- expired by now_ms are expired first (G.expire, bounded) and the key
  -- written again; should more be due than one call expires, only the part
  -- outside grants counts until they are (it refuses, never overshoots).
  -- Returns that count and the key's value now.
  function G.counted(now_ms, user, raw)
    if not raw then return 0, raw end
    local balance, granted, nx = G.parts(raw)
    if not granted or nx > tonumber(now_ms) then return balance, raw end
    balance, granted, nx = G.expire(now_ms, user, balance, granted, nx, GRANTS_PER_CALL)
    raw = G.text(balance, granted, nx)
    redis.call('SET', BASE .. K_BALANCE .. user, raw)
    if granted > 0 and nx <= tonumber(now_ms) then return balance - granted, raw end
    return balance, raw
  end

  -- Gives `amount` of a charge back to where it came from. `draws` is what the
  -- charge drew ("" when it took nothing off a balance: nothing to give back;
  -- "L" when all of `charged` came from a balance without grants; else
  -- draw_grants' list), `refunded` what earlier refunds gave back already.
  -- Refunds go back in the reverse of the draw order: the part outside grants
  -- first, then the grants last drawn on. A live grant gets its part back (one
  -- used up since lives again); a grant expired since gets nothing: its part
  -- expires at once, with a KIND_EXPIRE entry linked to the refund (`entry`;
  -- ids "<entry>.f<n>"). What a plan's allowance paid ("A<period start>=...",
  -- drawn first, so given back last) goes back to that period's allowance
  -- (give_back_allowance), not to the balance. Returns the balance after, or
  -- false when none is kept.
  function G.give_back(now_ms, entry, user, draws, charged, refunded, amount)
    if draws == '' then return false end
    if draws == 'L' then draws = 'L=' .. fmt(charged) end
    local bkey = BASE .. K_BALANCE .. user
    local raw = redis.call('GET', bkey)
    local balance, granted, nx = 0, 0, GRANT_NEVER
    local touched = false
    if raw then
      local b, g, x = G.parts(raw)
      if g and x <= tonumber(now_ms) then
        -- (grants expired since the last call that looked: expired first, as
        -- an admission would, so the balance returned does not count them)
        b, g, x = G.expire(now_ms, user, b, g, x, GRANTS_PER_CALL)
        touched = true
      end
      balance, granted, nx = b, g or 0, x or GRANT_NEVER
    end
    local parts = {}
    for part in string.gmatch(draws, '[^,]+') do parts[#parts + 1] = part end
    local was, now, skip, give, forfeits = nx, tonumber(now_ms), refunded, amount, 0
    for i = #parts, 1, -1 do
      if give == 0 then break end
      local at = string.find(parts[i], '=', 1, true)
      local member, part = string.sub(parts[i], 1, at - 1), tonumber(string.sub(parts[i], at + 1))
      local done = math.min(skip, part)
      local back = math.min(part - done, give)
      skip, give = skip - done, give - back
      local expires = tonumber(string.sub(member, 1, 13))
      if back == 0 then  -- (given back by earlier refunds)
      elseif string.byte(member) == 65 then  -- 'A': a plan's allowance
        give_back_allowance(user, string.sub(member, 2), back)
      elseif member == 'L' then
        balance, touched = balance + back, true
      elseif expires <= now then
        touched = true
        forfeits = forfeits + 1
        ledger_append(F_ENTRY_ID, entry .. '.f' .. forfeits, F_KIND, KIND_EXPIRE,
                      F_OCCURRED_AT, now_ms, F_USER_ID, user, F_AMOUNT, fmt(back),
                      F_GRANT_ID, G.grant_id(member), F_LINK_ID, entry)
      else
        if redis.call('HINCRBY', BASE .. K_GRANTS .. user, member, back) == back then
          local priority = string.match(member, '^%d+:[^:]+:(%-?%d+):')
          redis.call('ZADD', BASE .. K_GRANT_ORDER .. user, priority, member)
          if expires ~= GRANT_NEVER then
            redis.call('ZADD', BASE .. K_GRANT_EXPIRY .. user, fmt(expires), member)
            if expires < nx then nx = expires end
          end
        end
        balance, granted, touched = balance + back, granted + back, true
      end
    end
    if not touched then return raw and balance end  -- (the allowance alone)
    if nx ~= was then redis.call('ZADD', BASE .. K_GRANTS_DUE, fmt(nx), user) end
    redis.call('SET', bkey, G.text(balance, granted, nx))
    return balance
  end

  return G
end

-- G.counted, its common case without grants()' closures (no grant due to
-- expire: the balance as it is): an admission of a user holding grants.
local function grants_counted(now_ms, user, raw)
  local i = string.find(raw, '|', 1, true)
  local j = string.find(raw, '|', i + 1, true)
  if tonumber(string.sub(raw, j + 1)) > tonumber(now_ms) then
    return tonumber(string.sub(raw, 1, i - 1)), raw
  end
  return grants().counted(now_ms, user, raw)
end

-- Takes `amount` off the balance of a user holding grants (`raw`, its
-- balance key's value): the grants expired by now_ms are expired first, then
-- the live ones are drawn on in order (the part outside grants, when
-- positive, in the place of a never-expiring grant of priority 0 older than
-- any other), and whatever they do not cover is taken from the part outside
-- grants, into a debt. Returns the balance after and what was drawn, in
-- order: "<member>=<amount>" each, "L=<amount>" for the part outside grants,
-- comma-separated.
local function draw_grants(now_ms, user, raw, amount)
  -- (the common case inline, without grants()' closures: the balance key's
  -- parts, and no grant due to expire)
  local i = string.find(raw, '|', 1, true)
  local j = string.find(raw, '|', i + 1, true)
  local balance = tonumber(string.sub(raw, 1, i - 1))
  local granted = tonumber(string.sub(raw, i + 1, j - 1))
  local nx = tonumber(string.sub(raw, j + 1))
  local now = tonumber(now_ms)
  if nx <= now then
    balance, granted, nx = grants().expire(now_ms, user, balance, granted, nx,
                                           GRANTS_PER_CALL)
  end
  local okey, gkey = BASE .. K_GRANT_ORDER .. user, BASE .. K_GRANTS .. user
  local outside, left, own = balance - granted, amount, 0
  local parts, gone, expiring = {}, {}, false
  -- Read the grants a page at a time, 1, 4, 16... (most charges need the
  -- first only), up to GRANTS_PER_CALL in all.
  local seen, page, bound = 0, 1, tonumber(GRANTS_PER_CALL)
  while left > 0 and granted > 0 and seen < bound do
    local last = math.min(seen + page, bound) - 1
    local top = redis.call('ZRANGE', okey, seen, last, 'WITHSCORES')
    if #top == 0 then break end
    local members = {}
    for i = 1, #top, 2 do members[#members + 1] = top[i] end
    local rests = redis.call('HMGET', gkey, unpack(members))
    seen, page = seen + #members, page * 4
    for i = 1, #members do
      local member = members[i]
      local expires, priority = tonumber(string.sub(member, 1, 13)), tonumber(top[2 * i])
      if outside > 0 and (priority > 0 or (priority == 0 and expires == GRANT_NEVER)) then
        own = math.min(outside, left)
        outside, left = outside - own, left - own
      end
      if left == 0 then break end
      if expires > now then  -- (one past the expiry bound is skipped, not drawn on)
        local rest = tonumber(rests[i])
        local take = math.min(rest, left)
        left, granted = left - take, granted - take
        parts[#parts + 1] = member .. '=' .. fmt(take)
        if take == rest then
          gone[#gone + 1] = member
          expiring = expiring or expires ~= GRANT_NEVER
        else
          redis.call('HSET', gkey, member, fmt(rest - take))
        end
      end
    end
  end
  own = own + left
  if own > 0 then parts[#parts + 1] = 'L=' .. fmt(own) end
  if #gone > 0 then
    redis.call('HDEL', gkey, unpack(gone))
    redis.call('ZREM', okey, unpack(gone))
    if expiring then
      redis.call('ZREM', BASE .. K_GRANT_EXPIRY .. user, unpack(gone))
      nx = grants().next_expiry(user, nx)
    end
  end
  balance = balance - amount
  local value = fmt(balance)
  if granted > 0 then value = value .. '|' .. fmt(granted) .. '|' .. fmt(nx) end
  redis.call('SET', BASE .. K_BALANCE .. user, value)
  return balance, table.concat(parts, ',')
end
