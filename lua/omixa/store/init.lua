-- omixa.store — where the budget, the in-flight claims and the cache live, so
-- that several clients (nginx workers, processes, hosts) share one of each.
--
--   local store = require "omixa.store"          -- also omixa.store
--   store.memory()                    this client alone (the default)
--   store.shared_dict(ngx.shared.omixa)  every worker of one nginx
--   store.redis(conn, opts)           every process on every host (see redis.lua)
--
-- The interface: a store is any table (or object) with these methods. Amounts
-- are integer micro-dollars (1 USD = 1000000; Lua numbers, exact to 2^53);
-- TTL is in seconds (fractions allowed). EVERY method returns `nil, errmsg`
-- when the store cannot be reached; the client then answers `kind = "store"`
-- and sends nothing (the budget fails closed).
--
--   s:reserve(amount, limit [, ttl]) -> hold_id
--       atomically, over every client sharing the store: when
--       settled + held + amount <= limit, hold AMOUNT and return an id
--       (string or number) naming the hold;
--                                 -> false, spent
--       when it would pass LIMIT (the client answers kind = "budget"); SPENT
--       is the settled total plus what is held, in micros. LIMIT nil means no
--       budget: the hold is still taken (spent() stays right) and never
--       refused; a LIMIT below 0 fits nothing. A hold whose owner never
--       settles it expires after TTL seconds (the client passes the call's
--       timeout + 60; store.HOLD_TTL = 660 when nil).
--   s:settle(hold_id, billed)     -> true
--       replace the hold by BILLED micros (0 = release: the service did not
--       bill). Settling a hold twice counts it once; settling an expired hold
--       still adds BILLED (what the service billed was billed).
--   s:spent()                     -> micros   the settled total (holds excluded)
--   s:held()                      -> micros   what is held now (optional: the
--                                 client's b:held() reads 0 without it)
--   s:claim(key, ttl)             -> true | false
--       in-flight claim on a cache key: true = you send, false = another
--       client is sending it now; the claim lapses after TTL seconds
--       (store.HOLD_TTL when nil)
--   s:unclaim(key)                -> true
--   s:get(key)                    -> string | nil      a cached (serialized) result
--   s:set(key, value [, ttl])     -> true | false, why   (no ttl: kept until evicted)
--       false when the value is not kept (larger than the store takes); that
--       is not an error: the result simply is not cached
--
-- The guarantee: with every billed amount at most its estimate, the sum
-- settled across every client of one store never passes the limit, because
-- each reserve is one atomic step over settled + held (a Lua script in
-- Redis, an incr in a shared dict) and settle only ever lowers a hold to the
-- billed amount. spec/80-store_contract_spec.lua runs one contract against
-- every store here; a store of your own can be checked with the same
-- contract (spec/store_contract.lua).

local store = {}

function store.memory(opts)
  return require("omixa.store.memory").new(opts)
end

function store.shared_dict(dict, opts)
  return require("omixa.store.shared_dict").new(dict, opts)
end

function store.redis(conn, opts)
  return require("omixa.store.redis").new(conn, opts)
end

-- Misuse checks every store shares (raise at the caller of the method).
local floor, format, tostring = math.floor, string.format, tostring
local MAX = 2 ^ 53
function store.check_amount(v, what, fn)
  if type(v) ~= "number" or v ~= floor(v) or v < 0 or v > MAX then
    error(format("omixa: store:%s: %s must be an integer number of micro-dollars from 0 to 2^53 (got %s)",
      fn, what, tostring(v)), 3)
  end
end
-- TTL V checked: V, or DEFAULT when V is nil.
function store.check_ttl(v, fn, default)
  if v == nil and default then return default end
  if type(v) ~= "number" or v ~= v or v <= 0 or v == math.huge then
    error(format("omixa: store:%s: ttl must be a positive number of seconds (got %s)", fn, tostring(v)), 3)
  end
  return v
end
function store.check_key(v, fn)
  if type(v) ~= "string" or v == "" then
    error(format("omixa: store:%s: key must be a non-empty string (got %s)", fn, type(v)), 3)
  end
end
-- The shared argument checks of reserve: its ttl (store.HOLD_TTL when nil).
-- A limit below 0 is allowed and fits nothing.
store.HOLD_TTL = 600 + 60
function store.check_reserve(amount, limit, ttl)
  store.check_amount(amount, "amount", "reserve")
  if limit ~= nil and (type(limit) ~= "number" or limit ~= floor(limit) or limit > MAX or limit < -MAX) then
    error(format("omixa: store:reserve: limit must be an integer number of micro-dollars (got %s)", tostring(limit)), 3)
  end
  return store.check_ttl(ttl, "reserve", store.HOLD_TTL)
end

-- true when V has every method of the interface (for the client's check).
local METHODS = { "reserve", "settle", "spent", "claim", "unclaim", "get", "set" }
store.METHODS = METHODS
function store.is_store(v)
  local t = type(v)
  if t ~= "table" and t ~= "userdata" then return false end
  for _, m in ipairs(METHODS) do
    local ok, f = pcall(function() return v[m] end)
    if not ok or type(f) ~= "function" then return false, m end
  end
  return true
end

return store
