-- rebucket_merge: one day's or month's counter of a project or the
-- platform, the sum of what every bucket counted of it, written where the
-- new layout keeps it by a rebucketing (spendgate.rebucket), once per run:
-- run again after a stop, it finds its mark and writes nothing. Sharded,
-- the home's allowance of the scope in that window (escrow) becomes what
-- it spent, and the root lends exactly that (the caller writes the root's).
--
-- KEYS[1] - the counter, in its new home
-- KEYS[2] - the run's mark of it (K_MERGED), in the same home
-- KEYS[3] - the home's escrow hash of the scope and window (escrow_keys)
-- ARGV[1] - the sum, micro-units
-- ARGV[2] - how long it lives, ms ("0": no expiry)
-- ARGV[3] - "1": sharded (the escrow hash gets the allowance), "0": not
-- return {R_OK, the sum} when written, {R_REPLAYED, what the counter holds}
--        when this run wrote it before

if redis.call('EXISTS', KEYS[2]) == 1 then
  return {R_REPLAYED, redis.call('GET', KEYS[1]) or '0'}
end
local sum, ttl = ARGV[1], ARGV[2]
redis.call('DEL', KEYS[1], KEYS[3])
if sum ~= '0' then
  if ttl == '0' then
    redis.call('SET', KEYS[1], sum)
  else
    redis.call('SET', KEYS[1], sum, 'PX', ttl)
  end
  if ARGV[3] == '1' then
    redis.call('HSET', KEYS[3], 'allowance', sum)
    if ttl ~= '0' then redis.call('PEXPIRE', KEYS[3], ttl) end
  end
end
if ttl == '0' then
  redis.call('SET', KEYS[2], '1')
else
  redis.call('SET', KEYS[2], '1', 'PX', ttl)
end
return {R_OK, sum}
