-- grants_sweep: expire what is left of every grant whose expiry has passed,
-- for every user (a user's own calls expire its grants on their way: the
-- sweep is for those who make none), with one KIND_EXPIRE entry per
-- remainder (G.expire in _grants.lua). Each grant is expired by one
-- script, once: two sweeps at once, or a sweep and a charge, never both
-- write its entry. Bounded: at most `budget` grants per call; the caller
-- calls again until nothing more is due. A dry run counts the same and
-- changes nothing, walking the due users with offsets.
--
-- KEYS[1] - the users' next grant expiries (K_GRANTS_DUE)
-- ARGV[1] - now_ms
-- ARGV[2] - "1" for a dry run, else "0"
-- ARGV[3] - dry run: due users to skip (counted by earlier calls)
-- ARGV[4] - dry run: expired grants of the first user to skip
-- ARGV[5] - the most grants to expire (or count) in this call
-- return {count, amount, done (1: nothing more is due), then for a dry run
--        the offsets to continue from: users, grants}

local due, now_ms, budget = KEYS[1], ARGV[1], tonumber(ARGV[5])
local count, amount = 0, 0

if ARGV[2] == '1' then
  local skip_users, skip = tonumber(ARGV[3]), tonumber(ARGV[4])
  local users = redis.call('ZRANGEBYSCORE', due, '-inf', now_ms, 'LIMIT', skip_users, budget)
  for i = 1, #users do
    local ids = redis.call('ZRANGEBYSCORE', BASE .. K_GRANT_EXPIRY .. users[i], '-inf',
                           now_ms, 'LIMIT', skip, budget - count)
    if #ids > 0 then
      local rests = redis.call('HMGET', BASE .. K_GRANTS .. users[i], unpack(ids))
      for j = 1, #ids do amount = amount + (tonumber(rests[j]) or 0) end
    end
    count = count + #ids
    if count >= budget then
      return {count, fmt(amount), 0, skip_users + i - 1, skip + #ids}
    end
    skip = 0
  end
  local done = 0
  if #users < budget then done = 1 end
  return {count, fmt(amount), done, skip_users + #users, 0}
end

local G = grants()
local users = redis.call('ZRANGEBYSCORE', due, '-inf', now_ms, 'LIMIT', 0, budget)
for i = 1, #users do
  local user = users[i]
  local bkey = BASE .. K_BALANCE .. user
  local raw = redis.call('GET', bkey)
  local balance, granted
  if raw then balance, granted = G.parts(raw) end
  if not granted then
    redis.call('ZREM', due, user)  -- (holds no grant any more)
  else
    -- (a next expiry of -1 makes G.expire look, and write the user's
    -- due time again whatever it was)
    local nx, n, a
    balance, granted, nx, n, a = G.expire(now_ms, user, balance, granted, -1,
                                               budget - count)
    redis.call('SET', bkey, G.text(balance, granted, nx))
    count, amount = count + n, amount + a
    if count >= budget then break end
  end
end
local done = 0
if #redis.call('ZRANGEBYSCORE', due, '-inf', now_ms, 'LIMIT', 0, 1) == 0 then done = 1 end
return {count, fmt(amount), done, 0, 0}
