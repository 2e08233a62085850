-- plan_set: store one plan (set_plan) and bump the plans' revision, which
-- every instance reads with the active price book and reloads the plans on.
--
-- KEYS[1] - the plans (K_PLANS, a hash: plan id -> JSON)
-- KEYS[2] - their revision (K_PLANS_REV)
-- ARGV[1] - the plan id
-- ARGV[2] - the plan's JSON (checked by the caller)
-- ARGV[3] - how many plans there may be at most
-- return {R_OK, the new revision}, or {R_REFUSED, how many there are} when
--        a new plan would pass the bound (nothing is stored)

local plans, rev = KEYS[1], KEYS[2]
if redis.call('HEXISTS', plans, ARGV[1]) == 0 then
  local count = redis.call('HLEN', plans)
  if count >= tonumber(ARGV[3]) then return {R_REFUSED, count} end
end
redis.call('HSET', plans, ARGV[1], ARGV[2])
return {R_OK, redis.call('INCR', rev)}
