-- plans_get: every plan set with set_plan, and their revision.
--
-- KEYS[1] - the plans (K_PLANS, a hash: plan id -> JSON; bounded by
--           plan_set)
-- KEYS[2] - their revision (K_PLANS_REV)
-- return {revision or false, then plan id, JSON, plan id, JSON, ...}

local out = {redis.call('GET', KEYS[2])}
local flat = redis.call('HGETALL', KEYS[1])
for i = 1, #flat do out[i + 1] = flat[i] end
return out
