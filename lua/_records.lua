-- Idempotency: what an idempotency record ("<fingerprint>|<payload>", or
-- false when there is none) answers a call: nil when the key is unused (or
-- there is none), {R_REPLAYED, payload} for a replay with the same
-- fingerprint, {R_CONFLICT} for the same key with other arguments.
local function idem_answer(record, fingerprint)
  if not record then return nil end
  local sep = string.find(record, '|', 1, true)
  if string.sub(record, 1, sep - 1) == fingerprint then
    return {R_REPLAYED, string.sub(record, sep + 1)}
  end
  return {R_CONFLICT}
end

local function idem_lookup(ikey, fingerprint)
  if ikey == '' then return nil end
  return idem_answer(redis.call('GET', ikey), fingerprint)
end

local function idem_store(ikey, fingerprint, payload)
  if ikey ~= '' then
    redis.call('SET', ikey, fingerprint .. '|' .. payload, 'PX', IDEMPOTENCY_TTL_MS)
  end
end

-- Idempotency for a fact, in one command: SET NX GET stores
-- "<fingerprint>|<payload>" unless the key is taken, and answers what was
-- there. nil when the call is new (its record now stands), {R_REPLAYED,
-- payload} for a replay with the same fingerprint, {R_CONFLICT} for the same
-- key with other arguments. Called before the fact's first other write: a script that fails
-- on its first write (an out-of-memory Redis) has then written nothing.
local function idem_claim(ikey, fingerprint, payload)
  return idem_answer(redis.call('SET', ikey, fingerprint .. '|' .. payload,
                                'NX', 'GET', 'PX', IDEMPOTENCY_TTL_MS), fingerprint)
end

-- Appends one fact to the ledger stream: the name/value pairs passed (names
-- are the F_ constants), as they are (empty optional fields included: the flusher reads them as absent; as
-- varargs, they reach XADD without a table, which costs the script more than
-- the fields). LEDGER_MAXLEN "0" means no cap (a flusher drains it),
-- otherwise the stream is trimmed approximately.
local function ledger_append(...)
  if LEDGER_MAXLEN ~= '0' then
    return redis.call('XADD', BASE .. K_LEDGER, 'MAXLEN', '~', LEDGER_MAXLEN, '*', ...)
  end
  return redis.call('XADD', BASE .. K_LEDGER, '*', ...)
end
