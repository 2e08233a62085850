-- check: may this caller spend `requested` now? Changes no balance or counter
-- (it only purges holds that have expired).
--
-- KEYS[1] - the user's balance key (routes the call; all keys share one slot)
-- ARGV[1] - now_ms
-- ARGV[2] - day (yyyymmdd, UTC)
-- ARGV[3] - month (yyyymm, UTC)
-- ARGV[4] - requested, micro-units
-- ARGV[5] - user id
-- ARGV[6] - project id, "" for none
-- ARGV[7] - the plan argument (_allowance.lua): what is left of the user's
--           plan allowance counts as balance; "" when balances are not
--           enforced (then nothing is read)
-- ARGV[8] - model, "" for none: sent and read with MODEL_CAPS only  --@models
-- (the caps, the balance rule and BASE are the configuration's constants:
-- see _lib.lua)
-- return {R_OK, room} when admitted (room: smallest amount left over all
--        capped windows, -1 when none is capped), or the refusal
--        {R_REFUSED, scope, window, limit, spent, held[, free_ms]} (free_ms:
--        when a per-minute refusal's scope frees up; reaching a per-minute
--        cap trips the kill switch, when there is one, even here), or
--        {R_STALE_PRICE, the user's plan} when it is not the one expected
--        or {R_REFUSED, ..., held, 0, model} for the model's cap  --@models

local stale, _, left = plan_allowance(ARGV[7], ARGV[5])
if stale then return {R_STALE_PRICE, stale} end
local verdict = admit(ARGV[1], ARGV[2], ARGV[3], ARGV[5], ARGV[6], tonumber(ARGV[4]),
                      nil, left)
verdict = model_admit(verdict, ARGV[2], ARGV[3], ARGV[5], ARGV[6], tonumber(ARGV[4]), ARGV[8])  --@models
return verdict
