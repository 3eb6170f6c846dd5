-- omixa.store.memory — the default store: the budget ledger, in-flight
-- claims and cached results of one client, in this Lua state. It speaks the
-- interface every store shares (shared dict, Redis), so the pipeline never
-- knows which one it has. Amounts are integer micro-dollars.
--
--   s:reserve(amount, limit, ttl) -> hold_id | false, used   settled + held +
--       amount must stay <= limit (nil: no limit); USED: settled + held
--   s:settle(hold_id, billed) -> true    the hold replaced by BILLED (0 = released)
--   s:spent() -> micros                  settled total (holds excluded)
--   s:held() -> micros                   (this store only: what is in flight)
--   s:claim(key, ttl) -> true | false    true: you send; false: one in flight
--   s:unclaim(key) -> true
--   s:get(key) -> string | nil;  s:set(key, value, ttl) -> true
-- TTLs expire nothing here: this store dies with its client.

local setmetatable = setmetatable
local tointeger = math.tointeger -- Lua 5.3+: keep amounts integers there

local MAX = 2 ^ 53 -- amounts saturate here (omixa.budget.MAX)

local function int(x)
  return tointeger and tointeger(x) or x
end

-- a + b, saturating at MAX (both in 0..MAX, so MAX - a is exact).
local function add(a, b)
  if b > MAX - a then return int(MAX) end
  return int(a + b)
end

local Store = {}
Store.__index = Store
Store.__name = "omixa.store.memory"
Store.__tostring = function() return "omixa.store.memory" end

local memory = {}

function memory.new()
  return setmetatable({ settled = 0, held_ = 0, holds = {}, last = 0, claims = {}, values = {} }, Store)
end

function Store:reserve(amount, limit)
  local used = add(self.settled, self.held_)
  if limit ~= nil and amount > limit - used then return false, used end
  self.last = self.last + 1
  self.holds[self.last] = amount
  self.held_ = add(self.held_, amount)
  return self.last
end

function Store:settle(id, billed)
  local amount = self.holds[id]
  if amount == nil then return true end -- settled already
  self.holds[id] = nil
  self.held_ = int(self.held_ - amount)
  if self.held_ < 0 then self.held_ = 0 end
  self.settled = add(self.settled, billed or 0)
  return true
end

function Store:spent() return self.settled end
function Store:held() return self.held_ end

function Store:claim(key)
  if self.claims[key] then return false end
  self.claims[key] = true
  return true
end

function Store:unclaim(key)
  self.claims[key] = nil
  return true
end

function Store:get(key) return self.values[key] end

function Store:set(key, value)
  self.values[key] = value
  return true
end

return memory
