-- Helpers of per-model caps, linked only into the scripts of a deployment
-- with MODEL_CAPS "1" (model_caps, SPENDGATE_MODEL_CAPS). The lines of the
-- other scripts and helpers that call them end with the mark "--@models":
-- spendgate.core.scripts drops those lines where the feature is off, so a
-- deployment without per-model caps runs exactly the scripts it ran before
-- they existed, and pays nothing for them.
--
-- A per-model cap is set with set_limits(scope, id, model=...) for a user, a
-- project or the global scope; it has no configured default (no key: no
-- cap). Keys, below BASE, one per model per scope (and per window), the
-- model id length-prefixed so that no model id can run into the scope's id
-- (a model "a:b" and a model "a" of a user "b:..." stay apart):
--   ml:<s>:<#model>:<model>:<id>              string: the caps,
--                                             "<daily>|<monthly>", a part
--                                             empty for none
--   md:<yyyymmdd>:<s>:<#model>:<model>:<id>   string: spent on the model
--                                             that day (every fact with a
--                                             model counts, capped or not)
--   mm:<yyyymm>:<s>:<#model>:<model>:<id>     string: that month
--   mr:<s>:<#model>:<model>:<id>              string: held by pending holds
--                                             taken for the model (absent
--                                             at zero)
-- (<#model> is the model id's length in bytes.) A hold taken for a model
-- keeps it in its record (field m): it counts in the model's held amounts
-- until it ends, and its settle counts at that model.

-- The model's key suffix of each scope, in reporting order (user, the
-- project when there is one, global): "<s>:<#model>:<model>:<id>".
local function model_ids(model, user, project)
  local mp = #model .. ':' .. model .. ':'
  if project == '' then return {S_USER .. mp .. user, S_GLOBAL .. mp} end
  return {S_USER .. mp .. user, S_PROJECT .. mp .. project, S_GLOBAL .. mp}
end

-- Admission under the model's caps, after admit's: `verdict` is admit's
-- (returned as it is when it refused, or for no model). The caps are read
-- first, alone: a model without any (the common case) costs one MGET of
-- its three (or two) cap keys. Otherwise its spent and held amounts of
-- every scope are read with one more MGET, and the rule is admit's for each
-- capped window: spent + held + requested <= cap (< when nothing is
-- requested). Returns the verdict: admit's with the room narrowed to the
-- model's when tighter, or the refusal {R_REFUSED, scope index, window,
-- limit, spent, held, 0, model} (its 8th value says a model's cap refused).
-- A call that sent no model (nil: a client without model_caps) has none.
local function model_admit(verdict, day, month, user, project, requested, model)
  if verdict[1] ~= R_OK or not model or model == '' then return verdict end
  local ids = model_ids(model, user, project)
  local n = #ids
  local l = BASE .. K_MODEL_LIMITS
  local limits
  if n == 2 then
    limits = redis.call('MGET', l .. ids[1], l .. ids[2])
  else
    limits = redis.call('MGET', l .. ids[1], l .. ids[2], l .. ids[3])
  end
  if not (limits[1] or limits[2] or limits[n]) then return verdict end
  local d = BASE .. K_MODEL_DAY .. day .. ':'
  local m = BASE .. K_MODEL_MONTH .. month .. ':'
  local r = BASE .. K_MODEL_HELD
  local keys = {}
  for i = 1, n do
    keys[#keys + 1] = d .. ids[i]
    keys[#keys + 1] = m .. ids[i]
    keys[#keys + 1] = r .. ids[i]
  end
  local seen = redis.call('MGET', unpack(keys))
  local tightest = verdict[2]
  for i = 1, n do
    if limits[i] then
      local at = 3 * i - 3
      local held = tonumber(seen[at + 3]) or 0
      local daily, monthly = caps(limits[i], NO_CAP, NO_CAP)
      for w = W_DAILY, W_MONTHLY do
        local limit = daily
        if w == W_MONTHLY then limit = monthly end
        -- a corrupt cap is nil here, and fails the script: never ignored
        limit = tonumber(limit)
        if limit >= 0 then
          local used = tonumber(seen[at + w - W_DAILY + 1]) or 0
          local room = limit - used - held
          if room < requested or (requested == 0 and room <= 0) then
            return {R_REFUSED, i, w, limit, used, held, 0, model}
          end
          if tightest < 0 or room < tightest then tightest = room end
        end
      end
    end
  end
  verdict[2] = tightest
  return verdict
end

-- A new hold (or a top-up: extend) of `amount` (its text: `text`) for a
-- model: adds it to the model's held amount of every scope. Nothing for no
-- model or a zero amount.
local function model_add_held(model, user, project, amount, text)
  if model == '' or amount == 0 then return end
  local r = BASE .. K_MODEL_HELD
  for _, id in ipairs(model_ids(model, user, project)) do
    redis.call('INCRBY', r .. id, text)
  end
end

-- A new hold for lease `lease` taken for a model: its record remembers the
-- model (settle counts the cost at it) and the model's held amounts grow.
local function model_hold(lease, model, user, project, amount, text)
  if not model or model == '' then return end
  redis.call('HSET', BASE .. K_HOLD .. lease, 'm', model)
  model_add_held(model, user, project, amount, text)
end

-- A hold ends (settled, released or expired): takes its `amount` off the
-- model's held amounts (`model`: its record's m, false or '' for none),
-- deleting what drops to zero.
local function model_unhold(model, user, project, amount)
  if not model or model == '' or amount == 0 then return end
  local r = BASE .. K_MODEL_HELD
  local text = fmt(amount)
  for _, id in ipairs(model_ids(model, user, project)) do
    if redis.call('DECRBY', r .. id, text) <= 0 then redis.call('DEL', r .. id) end
  end
end

-- Adds one fact's amount to the model's day and month counters of every
-- scope (`head` as charge takes it: ARGV[1..6]). Nothing for no model.
local function model_count(head, user, project, model)
  if model == '' then return end
  local text = head[6]
  local amount = tonumber(text)
  local d = BASE .. K_MODEL_DAY .. head[2] .. ':'
  local m = BASE .. K_MODEL_MONTH .. head[4] .. ':'
  for _, id in ipairs(model_ids(model, user, project)) do
    count(d .. id, amount, text, head[3])
    count(m .. id, amount, text, head[5])
  end
end

-- A refund of `amount` of a charge made for a model on `day` (yyyymmdd):
-- the model's counters of that day and month go down by it in every scope,
-- where they are still kept (never below zero: refund_lower, _refunds.lua),
-- as a refund lowers the scopes'.
local function model_refund(day, user, project, model, amount)
  if model == '' then return end
  local d = BASE .. K_MODEL_DAY .. day .. ':'
  local m = BASE .. K_MODEL_MONTH .. string.sub(day, 1, 6) .. ':'
  for _, id in ipairs(model_ids(model, user, project)) do
    refund_lower(d .. id, amount)
    refund_lower(m .. id, amount)
  end
end

-- What usage reports of a model, appended to `out`: per scope (in reporting
-- order) its daily and monthly caps (NO_CAP for none), spent today, spent
-- this month and held, for that model.
local function model_usage(out, day, month, user, project, model)
  local ids = model_ids(model, user, project)
  local l = BASE .. K_MODEL_LIMITS
  local d = BASE .. K_MODEL_DAY .. day .. ':'
  local m = BASE .. K_MODEL_MONTH .. month .. ':'
  local r = BASE .. K_MODEL_HELD
  local keys = {}
  for i = 1, #ids do
    keys[#keys + 1] = l .. ids[i]
    keys[#keys + 1] = d .. ids[i]
    keys[#keys + 1] = m .. ids[i]
    keys[#keys + 1] = r .. ids[i]
  end
  local seen = redis.call('MGET', unpack(keys))
  for i = 1, #ids do
    local at = 4 * i - 4
    local daily, monthly = caps(seen[at + 1], NO_CAP, NO_CAP)
    out[#out + 1] = daily
    out[#out + 1] = monthly
    out[#out + 1] = seen[at + 2] or '0'
    out[#out + 1] = seen[at + 3] or '0'
    out[#out + 1] = seen[at + 4] or '0'
  end
end
