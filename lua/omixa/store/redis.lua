-- omixa.store.redis — one store for every process on every host, in Redis.
-- The interface is in omixa/store/init.lua.
--
--   store.redis(conn [, { prefix = "omixa:", max_bytes = 32 MiB, release = fn }])
--
-- CONN is the user's own client: a connected lua-resty-redis object
-- (OpenResty; Debian lua-nginx-redis) or redis-lua (`require "redis"`,
-- Debian lua-redis) — anything with :eval and :evalsha taking
-- (script_or_sha, numkeys, keys..., args...). Only those two commands are
-- used: every step is one Lua script run atomically by Redis (EVALSHA, then
-- EVAL when Redis answers NOSCRIPT, e.g. after a restart). CONN may also be a
-- function returning a connected client (or nil, err) for each step, as an
-- OpenResty request must take its own from the pool; opts.release(conn) is
-- then called after each step (e.g. function(r) r:set_keepalive(10000, 100) end).
--
-- An error of the connection (refused, reset, timeout; redis-lua raises, the
-- resty client returns nil, err) is returned as nil, err: the client answers
-- kind = "store" and sends nothing. A redis-lua client that failed is dead;
-- pass a function to get a fresh connection for the next step.
--
-- Keys, all under PREFIX (put a {hash tag} in it for Redis Cluster):
--   spent   settled micros          held   micros held now
--   holds   hash id -> amount       dl     sorted set id -> deadline (Redis TIME)
--   dead    sorted set id -> when swept (an owner may still settle it; kept a day)
--   next    hold id counter         c:<key> claims      v:<key> cached values
-- reserve sweeps the holds whose deadline passed (by Redis's own clock), then
-- holds the amount when spent + held + amount <= limit.

local store = require "omixa.store"

local type, tostring, tonumber, setmetatable, pcall = type, tostring, tonumber, setmetatable, pcall
local find, format = string.find, string.format
local check_amount, check_ttl, check_key = store.check_amount, store.check_ttl, store.check_key

local DEFAULT_MAX = 32 * 1024 * 1024

local SCRIPTS = {
  -- KEYS: spent held holds dl dead next   ARGV: amount limit ("" = none) ttl
  reserve = [[
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1e6
local dead = redis.call('ZRANGEBYSCORE', KEYS[4], '-inf', now)
for _, id in ipairs(dead) do
  local a = redis.call('HGET', KEYS[3], id)
  if a then
    redis.call('DECRBY', KEYS[2], a)
    redis.call('HDEL', KEYS[3], id)
    redis.call('ZADD', KEYS[5], now, id)
  end
  redis.call('ZREM', KEYS[4], id)
end
redis.call('ZREMRANGEBYSCORE', KEYS[5], '-inf', now - 86400)
local amount = tonumber(ARGV[1])
local spent = tonumber(redis.call('GET', KEYS[1]) or '0')
local held = tonumber(redis.call('GET', KEYS[2]) or '0')
if ARGV[2] ~= '' and spent + held + amount > tonumber(ARGV[2]) then
  return {0, tostring(spent + held)}
end
local id = redis.call('INCR', KEYS[6])
redis.call('INCRBY', KEYS[2], ARGV[1])
redis.call('HSET', KEYS[3], id, ARGV[1])
redis.call('ZADD', KEYS[4], now + tonumber(ARGV[3]), id)
return {1, tostring(id)}
]],
  -- KEYS: spent held holds dl dead   ARGV: id billed
  settle = [[
local a = redis.call('HGET', KEYS[3], ARGV[1])
if a then
  redis.call('DECRBY', KEYS[2], a)
  redis.call('HDEL', KEYS[3], ARGV[1])
  redis.call('ZREM', KEYS[4], ARGV[1])
elseif redis.call('ZREM', KEYS[5], ARGV[1]) == 0 then
  return 0
end
redis.call('INCRBY', KEYS[1], ARGV[2])
return 1
]],
  spent = "return tostring(redis.call('GET', KEYS[1]) or '0')",
  held = "return tostring(redis.call('GET', KEYS[2]) or '0')",
  claim = "if redis.call('SET', KEYS[1], '1', 'NX', 'PX', ARGV[1]) then return 1 end return 0",
  unclaim = "redis.call('DEL', KEYS[1]) return 1",
  get = "local v = redis.call('GET', KEYS[1]) if v then return {v} end return {}",
  set = [[
if ARGV[2] == '0' then redis.call('SET', KEYS[1], ARGV[1]) else redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]) end
return 1
]],
}

-- SHA-1 of each script, for EVALSHA (spec/80-store_contract_spec.lua checks
-- them against sha1sum: a stale one only costs an EVAL each time).
local SHA = {
  claim = "065aa564418e45fa770a6e013dea554069ff0513",
  get = "a998e877f045d610e0c36db88c85e58f1f18cfee",
  reserve = "dc430d00b7833dae4186df03ba2decfe432a826d",
  set = "86f5619bd302ca438a1b3f66fe6f11454b78e7af",
  settle = "236ee683793739e2c02ec2651bf15f0dddad64eb",
  spent = "7dbb4890f8d99aca0df313a4cf7329f5c27b90df",
  held = "ba0578e7ec08b934188205b73d92bbacce052b19",
  unclaim = "72e6e586b79e1982d79c4e07b8fd71aca7854ece",
}

local Redis = {}
Redis.__index = Redis
Redis.__name = "omixa.store.redis"

local redis = {}

function redis.new(conn, opts)
  local ct = type(conn)
  if ct ~= "function" and not ((ct == "table" or ct == "userdata") and conn.eval) then
    error("omixa: store.redis: conn must be a connected redis client (lua-resty-redis or redis-lua) "
      .. "or a function returning one (got " .. ct .. ")", 3)
  end
  opts = opts or {}
  local p = opts.prefix or "omixa:"
  if type(p) ~= "string" then error("omixa: store.redis: prefix must be a string", 3) end
  local max = opts.max_bytes or DEFAULT_MAX
  if type(max) ~= "number" or max < 0 then error("omixa: store.redis: max_bytes must be a number", 3) end
  if opts.release ~= nil and type(opts.release) ~= "function" then
    error("omixa: store.redis: release must be a function", 3)
  end
  local self = setmetatable({ conn = conn, release = opts.release, max_bytes = max, prefix = p }, Redis)
  self.budget_keys = { p .. "spent", p .. "held", p .. "holds", p .. "dl", p .. "dead", p .. "next" }
  return self
end

local function is_null(v)
  return v == nil or (type(ngx) == "table" and v == ngx.null) -- luacheck: ignore 113
end

-- Run one call on the client; (true, reply) or (false, message).
local function call(c, method, ...)
  local ok, res, err = pcall(c[method], c, ...)
  if not ok then return false, tostring(res) end
  -- resty: nil, err for the connection, false, err for an error reply
  if (res == nil or res == false) and err ~= nil then return false, tostring(err) end
  return true, res
end

-- Run script NAME with NKEYS keys then args: the reply, or nil, message.
local function run(self, name, nkeys, ...)
  local c = self.conn
  if type(c) == "function" then
    local cerr
    c, cerr = c()
    if not c then return nil, "redis: cannot connect: " .. tostring(cerr) end
  end
  local ok, res
  if SHA[name] and c.evalsha then
    ok, res = call(c, "evalsha", SHA[name], nkeys, ...)
    if not ok and find(res, "NOSCRIPT", 1, true) then ok = nil end
  end
  if not ok and ok ~= false then ok, res = call(c, "eval", SCRIPTS[name], nkeys, ...) end
  if type(self.conn) == "function" and self.release and ok then self.release(c) end
  if not ok then return nil, "redis: " .. res end
  return res
end

local function num(v) -- a reply number (or its text) as a Lua integer where there is one
  v = tonumber(v)
  return v and (math.tointeger and math.tointeger(v) or v)
end

function Redis:reserve(amount, limit, ttl)
  ttl = store.check_reserve(amount, limit, ttl)
  local k = self.budget_keys
  local r, err = run(self, "reserve", 6, k[1], k[2], k[3], k[4], k[5], k[6],
    format("%d", amount), limit and format("%d", limit) or "", format("%.3f", ttl))
  if not r then return nil, err end
  if type(r) ~= "table" then return nil, "redis: unexpected reply to reserve" end
  if num(r[1]) == 1 then return tostring(r[2]) end
  return false, num(r[2])
end

function Redis:settle(id, billed)
  check_amount(billed, "billed", "settle")
  local k = self.budget_keys
  local r, err = run(self, "settle", 5, k[1], k[2], k[3], k[4], k[5], tostring(id), format("%d", billed))
  if not r then return nil, err end
  return true
end

function Redis:spent()
  local r, err = run(self, "spent", 1, self.budget_keys[1])
  if not r then return nil, err end
  return num(r)
end

function Redis:held()
  local r, err = run(self, "held", 2, self.budget_keys[1], self.budget_keys[2])
  if not r then return nil, err end
  return num(r)
end

local function ms(ttl) return ttl == 0 and "0" or format("%d", math.max(1, math.ceil(ttl * 1000))) end

function Redis:claim(key, ttl)
  check_key(key, "claim"); ttl = check_ttl(ttl, "claim", store.HOLD_TTL)
  local r, err = run(self, "claim", 1, self.prefix .. "c:" .. key, ms(ttl))
  if not r then return nil, err end
  return num(r) == 1
end

function Redis:unclaim(key)
  check_key(key, "unclaim")
  local r, err = run(self, "unclaim", 1, self.prefix .. "c:" .. key)
  if not r then return nil, err end
  return true
end

function Redis:get(key)
  check_key(key, "get")
  local r, err = run(self, "get", 1, self.prefix .. "v:" .. key)
  if not r then return nil, err end
  if type(r) ~= "table" or is_null(r[1]) then return nil end
  return r[1]
end

function Redis:set(key, value, ttl)
  check_key(key, "set"); ttl = check_ttl(ttl, "set", 0) -- 0: no expiry
  if type(value) ~= "string" then error("omixa: store:set: value must be a string", 2) end
  if #value > self.max_bytes then
    return false, format("the value is %d bytes, above max_bytes %d", #value, self.max_bytes)
  end
  local r, err = run(self, "set", 1, self.prefix .. "v:" .. key, value, ms(ttl))
  if not r then return nil, err end
  return true
end

redis.SCRIPTS, redis.SHA = SCRIPTS, SHA
return redis
