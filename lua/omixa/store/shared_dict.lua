-- omixa.store.shared_dict — one store for every worker of one nginx, in a
-- lua_shared_dict (nginx.conf: `lua_shared_dict omixa 10m;`). The interface
-- is in omixa/store/init.lua.
--
--   store.shared_dict(ngx.shared.omixa [, { prefix = "omixa:",
--                                           cache = ngx.shared.omixa_cache }])
--
-- Budget: one counter TOTAL = settled + held. reserve is one atomic `incr`
-- of TOTAL by the amount; when the new value passes the limit the same amount
-- is taken back and the reserve refused, so TOTAL can only be too high for a
-- moment (a concurrent reserve may be refused that would have fitted), never
-- too low: the settled sum never passes the limit. Each hold is a key
-- h:<id> = "<amount> <deadline>"; settle and the sweep of expired holds (run
-- when a reserve is refused) race through one atomic `add`/`incr` of
-- x:<id>, so a hold is taken out of TOTAL exactly once.
--
-- The budget keys are written with the safe_* calls, which never evict: an
-- evicted counter would forget spend. The cache goes to opts.cache when
-- given (a second dict: its own LRU evicts old results); in the budget dict
-- it is written with safe_set and simply not kept when the dict is full.

local store = require "omixa.store"

local tonumber, tostring, setmetatable, type = tonumber, tostring, setmetatable, type
local format, match, sub = string.format, string.match, string.sub
local check_amount, check_ttl, check_key = store.check_amount, store.check_ttl, store.check_key

local KEEP = 24 * 3600 -- how long a settled/swept mark outlives its hold

local SharedDict = {}
SharedDict.__index = SharedDict
SharedDict.__name = "omixa.store.shared_dict"

local shared_dict = {}

function shared_dict.new(dict, opts)
  if type(dict) ~= "table" and type(dict) ~= "userdata" or not dict.incr then
    error("omixa: store.shared_dict: expected an ngx.shared dict (lua_shared_dict in nginx.conf), got "
      .. type(dict), 3)
  end
  opts = opts or {}
  local p = opts.prefix or "omixa:"
  if type(p) ~= "string" then error("omixa: store.shared_dict: prefix must be a string", 3) end
  local now = opts.now or ngx.now -- luacheck: ignore 113
  return setmetatable({ dict = dict, cache = opts.cache, now = now,
                        T = p .. "total", S = p .. "spent", N = p .. "next", H = p .. "h:", X = p .. "x:",
                        C = p .. "c:", V = p .. "v:" }, SharedDict)
end

-- incr KEY by DELTA, creating it at 0 without evicting anything.
local function counter(dict, key, delta)
  local v, err = dict:incr(key, delta)
  if v == nil and err == "not found" then
    local ok, e = dict:safe_add(key, 0)
    if not ok and e ~= "exists" then return nil, e end
    v, err = dict:incr(key, delta)
  end
  if v == nil then return nil, "shared dict: " .. tostring(err) end
  return v
end

local function parse_hold(v)
  local a, d = match(v or "", "^(%d+) (%S+)$")
  return tonumber(a), tonumber(d)
end

-- Take expired holds out of TOTAL (each exactly once, against settle).
local function sweep(self)
  local dict, t, H = self.dict, self.now(), self.H
  for _, k in ipairs(dict:get_keys(0)) do
    if sub(k, 1, #H) == H then
      local amount, deadline = parse_hold(dict:get(k))
      if amount and deadline <= t then
        local id = sub(k, #H + 1)
        if dict:safe_add(self.X .. id, 1, KEEP) then
          local ok, err = counter(dict, self.T, -amount)
          if not ok then return nil, err end
        end
        dict:delete(k)
      end
    end
  end
  return true
end

function SharedDict:reserve(amount, limit, ttl)
  ttl = store.check_reserve(amount, limit, ttl)
  local dict = self.dict
  for pass = 1, 2 do
    local total, err = counter(dict, self.T, amount)
    if not total then return nil, err end
    if limit == nil or total <= limit then break end
    local ok
    ok, err = counter(dict, self.T, -amount)
    if not ok then return nil, err end
    if pass == 2 then return false, ok end
    ok, err = sweep(self)
    if not ok then return nil, err end
  end
  local n, err = counter(dict, self.N, 1)
  local ok
  if n then
    ok, err = dict:safe_set(self.H .. format("%d", n), format("%d %.3f", amount, self.now() + ttl))
  end
  if not ok then
    counter(dict, self.T, -amount)
    return nil, "shared dict: " .. tostring(err)
  end
  return format("%d", n)
end

function SharedDict:settle(id, billed)
  check_amount(billed, "billed", "settle")
  local dict = self.dict
  local hk, xk = self.H .. tostring(id), self.X .. tostring(id)
  local amount = parse_hold(dict:get(hk))
  local ok, err = dict:safe_add(xk, 2, KEEP)
  local delta
  if ok then
    delta = billed - (amount or 0)   -- the hold was still counted in TOTAL
  elseif err == "exists" then
    local v = dict:incr(xk, 2)       -- 1 (swept) -> 3, exactly once
    if v ~= 3 then return true end   -- settled already
    delta = billed                   -- swept: what was billed still counts
  else
    return nil, "shared dict: " .. tostring(err)
  end
  ok, err = counter(dict, self.T, delta)
  if not ok then return nil, err end
  ok, err = counter(dict, self.S, billed)
  if not ok then return nil, err end
  dict:delete(hk)
  return true
end

function SharedDict:spent()
  return self.dict:get(self.S) or 0
end

function SharedDict:held()
  local held = (self.dict:get(self.T) or 0) - (self.dict:get(self.S) or 0)
  return held > 0 and held or 0
end

function SharedDict:claim(key, ttl)
  check_key(key, "claim"); ttl = check_ttl(ttl, "claim", store.HOLD_TTL)
  local ok, err = self.dict:safe_add(self.C .. key, 1, ttl)
  if ok then return true end
  if err == "exists" then return false end
  return nil, "shared dict: " .. tostring(err)
end

function SharedDict:unclaim(key)
  check_key(key, "unclaim")
  self.dict:delete(self.C .. key)
  return true
end

function SharedDict:get(key)
  check_key(key, "get")
  return (self.cache or self.dict):get(self.V .. key)
end

function SharedDict:set(key, value, ttl)
  check_key(key, "set"); ttl = check_ttl(ttl, "set", 0) -- 0: no expiry
  if type(value) ~= "string" then error("omixa: store:set: value must be a string", 2) end
  local ok, err
  if self.cache then
    ok, err = self.cache:set(self.V .. key, value, ttl)
  else
    ok, err = self.dict:safe_set(self.V .. key, value, ttl)
  end
  if ok then return true end
  return false, tostring(err)
end

return shared_dict
