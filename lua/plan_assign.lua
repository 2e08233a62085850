-- plan_assign: a user's plan, "<anchor_ms>|<plan id>": the cycle starts at
-- the anchor (the caller's now). Re-assigning, the same plan or another,
-- starts a new cycle: its allowance counter is a new key, at zero.
--
-- KEYS[1] - the user's plan (K_USER_PLAN)
-- ARGV[1] - the new assignment, "" to take the plan away
-- return {the previous assignment or false}

local previous = redis.call('GET', KEYS[1])
if ARGV[1] == '' then
  redis.call('DEL', KEYS[1])
else
  redis.call('SET', KEYS[1], ARGV[1])
end
return {previous}
