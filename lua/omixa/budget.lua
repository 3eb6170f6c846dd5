-- omixa.budget — the spend guard behind `max_spend`. Amounts are integer
-- micro-dollars (1 USD = 1000000), parsed from decimal text and never
-- computed in binary floating point, so "0.039000" + "0.033000" is exactly
-- "0.072000".
--
-- The same arithmetic runs on Lua 5.1 and LuaJIT, where every number is a
-- double: doubles hold every integer up to 2^53 exactly, so amounts are
-- bounded by budget.MAX = 2^53 micro-dollars (USD 9007199254.740992); a
-- larger amount is refused when parsed, and a running total saturates there.
--
--   budget.parse(v) -> micros | nil, message
--       v: "0.039000", "12", "0.5", " 3 ", or a number, converted through its
--          shortest decimal text (0.1 -> 100000, 1.25 -> 1250000, 1e-5 -> 10);
--          refused: more than 6 decimals (trailing zeros aside), negatives,
--          NaN, infinities, anything above budget.MAX
--   budget.format(micros) -> "0.039000"
--   budget.new(limit) -> b                 raises on a bad limit (misuse)
--   b:estimate(model_spec, n) -> micros, priced
--       catalog price x n (n defaults to 1); a model without a price
--       (model_spec nil or model_spec.price nil) estimates 0 with priced = false
--   b:allows(micros) -> true | nil, message
--       refuses when spent + held + micros would pass the limit. Every real
--       request costs something, so an estimate of 0 (no catalog price)
--       counts as one micro-dollar: once the budget is used up nothing more
--       is allowed, and a limit of 0 allows nothing (a cache-only client).
--   b:hold(micros [, ttl]) -> hold | nil, message [, "store"]  like allows, and reserves the
--       estimate while the request is in flight (concurrent jobs cannot all
--       pass the same check); then exactly one of
--       hold:capture([amount])  the request succeeded: adds AMOUNT (the
--                               billed_amount the service sent) to spent, or
--                               the held estimate when AMOUNT is nil or not a
--                               valid amount (then also returns nil, message)
--       hold:release()          the request failed: nothing was billed
--   b:add(amount) -> true | nil, message   adds a billed amount to spent
--   b:spent() -> "0.072000" | nil, message (store unreachable);  b:limit() -> "1.000000";  b:held() -> "0.040000"

local type, tostring, tonumber, setmetatable, error = type, tostring, tonumber, setmetatable, error
local floor, fmod, huge = math.floor, math.fmod, math.huge
local tointeger = math.tointeger -- Lua 5.3+: keep amounts integers there
local format, match, gsub, rep, sub = string.format, string.match, string.gsub, string.rep, string.sub

local budget = {}

local MAX = 2 ^ 53
budget.MAX = tointeger and tointeger(MAX) or MAX
local MAX_WHOLE, MAX_FRAC = 9007199254, 740992 -- MAX as whole dollars . micros
local MICRO = 1000000

local function int(x)
  return tointeger and tointeger(x) or x
end

-- Micros from the digits of the whole and fractional parts (already checked
-- to be decimal digits); nil, message when out of range.
local function from_parts(whole, frac, shown)
  frac = gsub(frac, "0+$", "")
  if #frac > 6 then
    return nil, format("%s has more than 6 decimals (amounts are micro-dollars)", shown)
  end
  whole = gsub(whole, "^0+", "")
  if whole == "" then whole = "0" end
  local w, f = tonumber(whole), tonumber(frac .. rep("0", 6 - #frac))
  if #whole > #tostring(MAX_WHOLE) or w > MAX_WHOLE or (w == MAX_WHOLE and f > MAX_FRAC) then
    return nil, format("%s is above the largest amount omixa keeps exactly (%d.%06d)", shown, MAX_WHOLE, MAX_FRAC)
  end
  return int(w * MICRO + f)
end

-- The shortest decimal text that reads back as X (x finite, >= 0).
local function number_text(x)
  for digits = 15, 17 do
    local s = format("%." .. digits .. "g", x)
    if tonumber(s) == x then return s end
  end
  return format("%.17g", x)
end

function budget.parse(v)
  local t = type(v)
  if t == "number" then
    if v ~= v then return nil, "NaN is not an amount" end
    if v == huge or v == -huge then return nil, "an infinite amount is not an amount" end
    if v < 0 then return nil, format("%s is negative", number_text(v)) end
    if v == 0 then return 0 end -- also -0.0
    local s = number_text(v)
    local mant, exp = match(s, "^([%d%.]+)[eE]([-+]?%d+)$")
    if not mant then mant, exp = s, "0" end
    local whole, frac = match(mant, "^(%d*)%.?(%d*)$")
    if not whole then return nil, format("%s is not a decimal amount", s) end
    local digits, point = whole .. frac, #whole + tonumber(exp)
    if point <= 0 then
      whole, frac = "0", rep("0", -point) .. digits
    elseif point >= #digits then
      whole, frac = digits .. rep("0", point - #digits), ""
    else
      whole, frac = sub(digits, 1, point), sub(digits, point + 1)
    end
    return from_parts(whole, frac, s)
  elseif t == "string" then
    local s = match(v, "^%s*(.-)%s*$")
    local shown = format("%q", #s > 40 and sub(s, 1, 40) .. "..." or s)
    if match(s, "^%-") then return nil, shown .. " is negative" end
    local whole, frac = match(s, "^(%d*)%.?(%d*)$")
    if not whole or (whole == "" and frac == "") then
      return nil, shown .. " is not a decimal amount such as \"0.040000\""
    end
    return from_parts(whole, frac, shown)
  end
  return nil, "an amount must be a string or a number, not " .. t
end

local function check_micros(m, fn, level)
  if type(m) ~= "number" or m ~= floor(m) or m < 0 or m > MAX then
    error(format("omixa: budget.%s: micros must be an integer from 0 to 2^53 (got %s)", fn, tostring(m)), level + 1)
  end
end

function budget.format(micros)
  check_micros(micros, "format", 2)
  local frac = fmod(micros, MICRO)
  return format("%.0f.%06.0f", (micros - frac) / MICRO, frac)
end

local Budget = {}
Budget.__index = Budget
Budget.__name = "omixa.budget"

local Hold = {}
Hold.__index = Hold
Hold.__name = "omixa.budget.hold"

-- budget.new(limit [, store]): the ledger lives in STORE (omixa.store.*;
-- default a fresh omixa.store.memory), this object only does the arithmetic.
function budget.new(limit, store)
  local m, err = budget.parse(limit)
  if not m then error("omixa: max_spend: " .. err, 2) end
  return setmetatable({ limit_ = m, store = store or require("omixa.store.memory").new(), pending = {} }, Budget)
end

function Budget.estimate(_, model_spec, n) -- b:estimate(model_spec, n)
  if n == nil then n = 1 end
  if type(n) ~= "number" or n ~= floor(n) or n < 1 then
    error(format("omixa: budget:estimate: n must be a positive integer (got %s)", tostring(n)), 2)
  end
  local price = type(model_spec) == "table" and model_spec.price or nil
  if price == nil then return 0, false end
  local each, err = budget.parse(price)
  if not each then error("omixa: budget:estimate: the model's price " .. err, 2) end
  if each > 0 and n > MAX / each then return budget.MAX, true end
  return int(each * n), true
end

local function refusal(self, micros, used)
  local limit, spent = budget.format(self.limit_), budget.format(used)
  if micros == 0 then
    return nil, format("max_spend %s USD is used up (%s USD spent or in flight) and this model has no catalog price",
      limit, spent)
  end
  return nil, format("this request is estimated at %s USD and %s USD of max_spend %s USD is spent or in flight",
    budget.format(micros), spent, limit)
end

-- Reserve MICROS in the store: a hold id | nil, message [, "store"]. Every
-- real request costs something: an estimate of 0 must leave a micro-dollar.
--
-- Settles the store could not take (it was unreachable) are kept and sent
-- first: until they are in, nothing more is reserved (fails closed), so
-- spend billed while the store was away is never forgotten.
local function flush(self)
  local pending = self.pending
  while pending[1] do
    local ok, err = self.store:settle(pending[1][1], pending[1][2])
    if not ok then return nil, err end
    table.remove(pending, 1)
  end
  return true
end

local function reserve(self, micros, ttl, unlimited)
  local flushed, ferr = flush(self)
  if not flushed then return nil, "the store cannot be reached: " .. tostring(ferr), "store" end
  local limit = not unlimited and self.limit_ - (micros > 0 and 0 or 1) or nil
  local id, used = self.store:reserve(micros, limit, ttl)
  if id == nil then return nil, "the store cannot be reached: " .. tostring(used), "store" end
  if id == false then return refusal(self, micros, used) end
  return id
end

function Budget:allows(micros)
  check_micros(micros, "allows", 2)
  local id, err, kind = reserve(self, micros)
  if not id then return nil, err, kind end
  self.store:settle(id, 0)
  return true
end

function Budget:hold(micros, ttl)
  check_micros(micros, "hold", 2)
  local id, err, kind = reserve(self, micros, ttl)
  if not id then return nil, err, kind end
  return setmetatable({ budget = self, id = id, micros = micros }, Hold)
end

local function settle(h, billed)
  if h.settled then return false end
  h.settled = true
  local b = h.budget
  if not b.store:settle(h.id, billed) then b.pending[#b.pending + 1] = { h.id, billed } end
  return true
end

function Hold:capture(amount)
  if self.settled then return true end
  local m, err = self.micros, nil
  if amount ~= nil then
    local parsed
    parsed, err = budget.parse(amount)
    if parsed then m = parsed end
  end
  settle(self, m)
  if err then return nil, "billed_amount " .. err .. "; counted the estimate instead" end
  return true
end

function Hold:release()
  settle(self, 0)
end

function Budget:add(amount)
  local m, err = budget.parse(amount)
  if not m then return nil, err end
  local id, serr = reserve(self, m, nil, true)
  if not id then return nil, serr end
  if not self.store:settle(id, m) then self.pending[#self.pending + 1] = { id, m } end
  return true
end

-- b:spent() -> "0.072000" | nil, message (the store cannot be reached)
function Budget:spent()
  local m, err = self.store:spent()
  if not m then return nil, "the store cannot be reached: " .. tostring(err) end
  return budget.format(m)
end
function Budget:limit() return budget.format(self.limit_) end
function Budget:held() return budget.format(self.store.held and self.store:held() or 0) end

function Budget:__tostring()
  return format("omixa.budget (%s of %s USD spent)", self:spent(), self:limit())
end

return budget
