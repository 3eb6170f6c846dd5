-- omixa.store.memory — the store of one client in one process (the default):
-- plain tables, so every step is atomic by construction. The interface is in
-- omixa/store/init.lua.
--
--   store.memory{ now = function() return seconds end }  -- the clock (tests)

local store = require "omixa.store"

local setmetatable, pairs, tostring = setmetatable, pairs, tostring
local check_amount, check_ttl, check_key = store.check_amount, store.check_ttl, store.check_key
local tointeger = math.tointeger

local function default_clock()
  if type(ngx) == "table" and ngx.now then return ngx.now end -- luacheck: ignore 113
  local ok, core = pcall(require, "omixa.core")
  if ok and type(core) == "table" and core.now then return core.now end
  return os.time
end

local function int(x) return tointeger and tointeger(x) or x end

local MAX = 2 ^ 53 -- amounts saturate here (omixa.budget.MAX)
-- a + b, saturating at MAX (both in 0..MAX, so MAX - a is exact).
local function add(a, b)
  if b > MAX - a then return int(MAX) end
  return int(a + b)
end

local Memory = {}
Memory.__index = Memory
Memory.__name = "omixa.store.memory"

local memory = {}

function memory.new(opts)
  local now = opts and opts.now or default_clock()
  return setmetatable({ now = now, spent_ = 0, held_ = 0, holds = {}, expired = {}, next_id = 0,
                        claims = {}, cache = {}, max_bytes = opts and opts.max_bytes }, Memory)
end

-- Drop the holds whose owner never settled them.
local function sweep(self, t)
  for id, h in pairs(self.holds) do
    if h.deadline <= t then
      self.held_ = int(self.held_ - h.amount)
      self.holds[id] = nil
      self.expired[id] = true
    end
  end
end

function Memory:reserve(amount, limit, ttl)
  ttl = store.check_reserve(amount, limit, ttl)
  local t = self.now()
  if limit and amount > limit - add(self.spent_, self.held_) then
    sweep(self, t)
    local used = add(self.spent_, self.held_)
    if amount > limit - used then return false, used end
  end
  self.next_id = self.next_id + 1
  local id = tostring(self.next_id)
  self.holds[id] = { amount = amount, deadline = t + ttl }
  self.held_ = add(self.held_, amount)
  return id
end

function Memory:settle(id, billed)
  check_amount(billed, "billed", "settle")
  local h = self.holds[id]
  if h then
    self.holds[id] = nil
    self.held_ = int(self.held_ - h.amount)
  elseif self.expired[id] then
    self.expired[id] = nil -- its owner came back late: what was billed counts
  else
    return true -- settled already
  end
  self.spent_ = add(self.spent_, billed)
  return true
end

function Memory:spent() return self.spent_ end
function Memory:held() return self.held_ end

function Memory:claim(key, ttl)
  check_key(key, "claim"); ttl = check_ttl(ttl, "claim", store.HOLD_TTL)
  local t = self.now()
  local until_ = self.claims[key]
  if until_ and until_ > t then return false end
  self.claims[key] = t + ttl
  return true
end

function Memory:unclaim(key)
  check_key(key, "unclaim")
  self.claims[key] = nil
  return true
end

function Memory:get(key)
  check_key(key, "get")
  local e = self.cache[key]
  if not e then return nil end
  if e.deadline <= self.now() then self.cache[key] = nil; return nil end
  return e.value
end

function Memory:set(key, value, ttl)
  check_key(key, "set"); ttl = check_ttl(ttl, "set", math.huge)
  if type(value) ~= "string" then error("omixa: store:set: value must be a string", 2) end
  if self.max_bytes and #value > self.max_bytes then return false, "larger than max_bytes" end
  self.cache[key] = { value = value, deadline = self.now() + ttl }
  return true
end

return memory
