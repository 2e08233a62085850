-- plan_read: a user's plan and one of its counters, read together. The
-- caller names the counter from the plan it expects; when the plan read is
-- another, it reads again with the right one.
--
-- KEYS[1] - the user's plan (K_USER_PLAN)
-- KEYS[2] - a counter: an allowance (K_ALLOWANCE, a string) or the feature
--           calls of a period (K_FEATURE_USE, a hash)
-- ARGV[1] - "s": read KEYS[2] as a string, "h": its field ARGV[2], "": no
--           counter
-- ARGV[2] - the field, "" unless ARGV[1] is "h"
-- return {the user's plan or false, the counter or false}

local plan = redis.call('GET', KEYS[1])
local mode = ARGV[1]
local counter = false
if mode == 's' then
  counter = redis.call('GET', KEYS[2])
elseif mode == 'h' then
  counter = redis.call('HGET', KEYS[2], ARGV[2])
end
return {plan, counter}
