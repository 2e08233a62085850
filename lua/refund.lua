-- refund: give back all or part of a charge, a fact (ledger KIND_REFUND,
-- linked to the charge). Reads the charge's refund record (K_CHARGE, written
-- by charge in _lib.lua): the spent counters of the charge's day and month go
-- down by the amount in every scope it counted in, and the money goes back
-- where it came from (grants().give_back in _grants.lua). The refunds of a charge
-- never add up to more than it; a refused refund changes nothing.
--
-- KEYS[1] - idempotency key (generated when the caller gave none; checked
--           before, stored after: a refusal leaves nothing behind)
-- ARGV[1] - now_ms
-- ARGV[2] - the charge's entry id
-- ARGV[3] - amount, micro-units; "" for all that is left to refund
-- ARGV[4] - fingerprint of the arguments
-- ARGV[5] - entry id (fresh, unique)
-- ARGV[6] - metadata JSON (the reason), ""
-- ARGV[7] - the caller's idempotency key, "" when it was generated
-- return {R_OK, "entry|now_ms|refunded|refundable left|balance"} when
--        refunded (balance "" when the charge took nothing off a balance),
--        {R_REPLAYED, same payload} for a replay, {R_CONFLICT},
--        {R_UNKNOWN_ENTRY} when no refund record of that charge is kept,
--        {R_REFUND_EXCEEDS, refundable left} when the amount is above it

local ikey = KEYS[1]
local now_ms, charge_id, fingerprint, entry = ARGV[1], ARGV[2], ARGV[4], ARGV[5]

local seen = idem_lookup(ikey, fingerprint)
if seen then return seen end

local ckey = BASE .. K_CHARGE .. charge_id
local record = redis.call('GET', ckey)
if not record then return {R_UNKNOWN_ENTRY} end
-- "<refunded>|<amount>|<day>|<draws>|<#user>|<#project>|<user><project><model>"
local at = {}
local from = 1
for i = 1, 6 do
  at[i] = string.find(record, '|', from, true)
  from = at[i] + 1
end
local refunded = tonumber(string.sub(record, 1, at[1] - 1))
local charged = tonumber(string.sub(record, at[1] + 1, at[2] - 1))
local day = string.sub(record, at[2] + 1, at[3] - 1)
local draws = string.sub(record, at[3] + 1, at[4] - 1)
local cut = at[6] + tonumber(string.sub(record, at[4] + 1, at[5] - 1))
local cut2 = cut + tonumber(string.sub(record, at[5] + 1, at[6] - 1))
local user, project = string.sub(record, at[6] + 1, cut), string.sub(record, cut + 1, cut2)
local model = string.sub(record, cut2 + 1)

local left = charged - refunded
local amount = left
if ARGV[3] ~= '' then amount = tonumber(ARGV[3]) end
if amount <= 0 or amount > left then return {R_REFUND_EXCEEDS, fmt(left)} end

-- The counters the charge went into, where they are still kept (never
-- below zero: an operator's adjustment may have lowered them since).
local scopes = {S_USER .. user, S_GLOBAL}
if project ~= '' then scopes[3] = S_PROJECT .. project end
for _, window in ipairs({K_DAY .. day, K_MONTH .. string.sub(day, 1, 6)}) do
  for _, scope in ipairs(scopes) do
    local key = BASE .. window .. ':' .. scope
    local spent = tonumber(redis.call('GET', key))
    if spent then
      redis.call('SET', key, fmt(math.max(0, spent - amount)), 'KEEPTTL')
    end
  end
end

model_refund(day, user, project, model, amount)  --@models
-- (the charge's user, project and model, and its day as the window whose
-- counters the refund lowered: the analytics count it there)
ledger_append(F_ENTRY_ID, entry, F_KIND, KIND_REFUND, F_OCCURRED_AT, now_ms,
              F_USER_ID, user, F_AMOUNT, fmt(amount), F_PROJECT_ID, project,
              F_MODEL, model, F_METADATA, ARGV[6], F_IDEMPOTENCY_KEY, ARGV[7],
              F_LINK_ID, charge_id, F_WINDOW, string.sub(day, 1, 4) .. '-'
              .. string.sub(day, 5, 6) .. '-' .. string.sub(day, 7, 8))
local balance = grants().give_back(now_ms, entry, user, draws, charged, refunded, amount)
redis.call('SET', ckey, fmt(refunded + amount) .. string.sub(record, at[1]), 'KEEPTTL')

local payload = entry .. '|' .. now_ms .. '|' .. fmt(amount) .. '|' .. fmt(left - amount)
                .. '|' .. (balance and fmt(balance) or '')
idem_store(ikey, fingerprint, payload)
return {R_OK, payload}
