-- Refunds' helpers, what refund.lua and team_refund.lua share: reading a
-- charge's refund record (K_CHARGE, written by charge in _lib.lua and by
-- team_charge in _teams.lua), the counters and the ledger entry every
-- refund moves, and writing the record back. Only the refund scripts call
-- them: no other script links them in.

-- A charge's refund record, "<refunded>|<amount>|<day>|<draws>|<#user>|
-- <#project>|<user><project><model>" (user and project may hold "|": their
-- lengths keep them apart), as a table: refunded and charged (numbers),
-- day, draws, user, project, model, and rest: the record from its first
-- "|", what a refund writes back after the new refunded amount.
local function refund_record(record)
  local at = {}
  local from = 1
  for i = 1, 6 do
    at[i] = string.find(record, '|', from, true)
    from = at[i] + 1
  end
  local cut = at[6] + tonumber(string.sub(record, at[4] + 1, at[5] - 1))
  local cut2 = cut + tonumber(string.sub(record, at[5] + 1, at[6] - 1))
  return {
    refunded = tonumber(string.sub(record, 1, at[1] - 1)),
    charged = tonumber(string.sub(record, at[1] + 1, at[2] - 1)),
    day = string.sub(record, at[2] + 1, at[3] - 1),
    draws = string.sub(record, at[3] + 1, at[4] - 1),
    user = string.sub(record, at[6] + 1, cut),
    project = string.sub(record, cut + 1, cut2),
    model = string.sub(record, cut2 + 1),
    rest = string.sub(record, at[1]),
  }
end

-- The refund record of the charge a refund names (argv: the refund
-- script's ARGV, see refund_count) as refund_record's table, its key as
-- `key`; or nil and the answer: the first call's for a replay of the
-- caller's idempotency key (`ikey`), {R_CONFLICT} for the key reused with
-- other arguments, {R_UNKNOWN_ENTRY} when no record of the charge is kept,
-- {R_MOVED, bucket} when a rebucketing moved it to that bucket (K_FORWARD:
-- the bucket of its user, which the charge's id does not name).
local function refund_open(ikey, argv)
  local seen = idem_lookup(ikey, argv[4])
  if seen then return nil, seen end
  local key = BASE .. K_CHARGE .. argv[2]
  local record = redis.call('GET', key)
  if not record then
    local moved = redis.call('GET', BASE .. K_FORWARD .. argv[2])
    if moved then return nil, {R_MOVED, moved} end
    return nil, {R_UNKNOWN_ENTRY}
  end
  local c = refund_record(record)
  c.key = key
  return c
end

-- A spent counter (a string) goes down by `amount` where it is still kept,
-- never below zero (an operator's adjustment may have lowered it since),
-- its TTL kept.
local function refund_lower(key, amount)
  local spent = tonumber(redis.call('GET', key))
  if spent then
    redis.call('SET', key, fmt(math.max(0, spent - amount)), 'KEEPTTL')
  end
end

-- What a refund of charge `c` gives back: the amount asked for (`wanted`,
-- micro-units as text; "" for all that is left) and what is left to refund
-- before it; the amount nil when it is not above 0 or above what is left.
local function refund_amount(c, wanted)
  local left = c.charged - c.refunded
  local amount = left
  if wanted ~= '' then amount = tonumber(wanted) end
  if amount <= 0 or amount > left then return nil, left end
  return amount, left
end

-- A refund of `amount` of charge `c`, the part every refund shares: the
-- spent counters the charge went into, of its own day and month, go down by
-- it (refund_lower), the model's too, and one refund entry is
-- appended, linked to the charge: `argv` is the refund script's ARGV
-- (now_ms, charge, amount, fingerprint, entry, metadata, the caller's key),
-- `pool` the team whose pool the charge was on ("": the user's own).
local function refund_count(argv, c, amount, pool)
  local user, project, day = c.user, c.project, c.day
  local scopes = {S_USER .. user, S_GLOBAL}
  if project ~= '' then scopes[3] = S_PROJECT .. project end
  for _, window in ipairs({K_DAY .. day, K_MONTH .. string.sub(day, 1, 6)}) do
    for _, scope in ipairs(scopes) do
      refund_lower(BASE .. window .. ':' .. scope, amount)
    end
  end
  model_refund(day, user, project, c.model, amount)  --@models
  -- (the charge's user, project and model, and its day as the window whose
  -- counters the refund lowered: the analytics count it there)
  ledger_append(F_ENTRY_ID, argv[5], F_KIND, KIND_REFUND, F_OCCURRED_AT, argv[1],
                F_USER_ID, user, F_AMOUNT, fmt(amount), F_PROJECT_ID, project,
                F_MODEL, c.model, F_METADATA, argv[6], F_IDEMPOTENCY_KEY, argv[7],
                F_LINK_ID, argv[2], F_WINDOW, string.sub(day, 1, 4) .. '-'
                .. string.sub(day, 5, 6) .. '-' .. string.sub(day, 7, 8),
                F_TEAM_ID, pool)
end

-- The refund is done: the charge's record counts it (its TTL kept), the
-- idempotency record (`ikey`) keeps the answer, {R_OK, "entry|now_ms|
-- refunded|refundable left|balance"}, returned (balance false: "").
local function refund_done(ikey, argv, c, amount, left, balance)
  redis.call('SET', c.key, fmt(c.refunded + amount) .. c.rest, 'KEEPTTL')
  local payload = argv[5] .. '|' .. argv[1] .. '|' .. fmt(amount) .. '|'
                  .. fmt(left - amount) .. '|' .. (balance and fmt(balance) or '')
  idem_store(ikey, argv[4], payload)
  return {R_OK, payload}
end
