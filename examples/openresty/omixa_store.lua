-- omixa_store — one budget for every nginx worker (and, with Redis, every
-- host), around omixa_image's exchange. omixa.store holds the spend:
--   a lua_shared_dict by default (nginx.conf: `lua_shared_dict omixa 10m;`),
--   Redis when OMIXA_REDIS=host:port is set (`env OMIXA_REDIS;`), through
--   lua-resty-redis (OpenResty's resty.redis, or Debian lua-nginx-redis),
--   one pooled connection per step.
-- OMIXA_MAX_SPEND (USD, e.g. "20.00"; `env OMIXA_MAX_SPEND;`) is the budget;
-- unset, the spend is still counted (GET /spent) and nothing is refused.
--
--   local hold, why, kind = omixa_store.reserve(model, n)
--       hold | nil, message, "budget" (would pass the budget) | "store" (unreachable)
--   omixa_store.settle(hold, billed)   billed: micros (omixa_store.micros)
--   omixa_store.estimate(model, n) -> micros
--   omixa_store.spent() -> micros | nil, err
--   omixa_store.share(key, patience) / keep(key, images, info) / drop(key)
--       identical requests in flight sent once (below)
--
-- A hold whose worker dies expires after HOLD_TTL seconds (the proxy's
-- read timeout, 300 s, plus 60 s).

local omixa = require "omixa"
local budget = require "omixa.budget"

local ngx = ngx
local os_getenv, tonumber, format = os.getenv, tonumber, string.format

local M = {}
local HOLD_TTL = 300 + 60

local store, limit

local function resty_redis()
  local ok, mod = pcall(require, "resty.redis")
  if ok then return mod end
  return require "nginx.redis" -- Debian's lua-nginx-redis
end

local function open()
  if store then return store end
  local max = os_getenv("OMIXA_MAX_SPEND")
  if max and max ~= "" then limit = assert(budget.parse(max)) end
  local redis_at = os_getenv("OMIXA_REDIS")
  if redis_at and redis_at ~= "" then
    local host, port = redis_at:match("^(.-):(%d+)$")
    host, port = host or redis_at, tonumber(port) or 6379
    local redis = resty_redis()
    store = omixa.store.redis(function()
      local r = redis:new()
      r:set_timeouts(1000, 2000, 2000)
      local ok, err = r:connect(host, port)
      if not ok then return nil, err end
      return r
    end, { prefix = os_getenv("OMIXA_REDIS_PREFIX") or "omixa:",
           release = function(r) r:set_keepalive(10000, 100) end })
  else
    store = omixa.store.shared_dict(assert(ngx.shared.omixa, "nginx.conf needs: lua_shared_dict omixa 10m;"))
  end
  return store
end

function M.micros(amount)
  return budget.parse(amount)
end

function M.estimate(model, n)
  local spec = omixa.models[model]
  local each = spec and spec.price and budget.parse(spec.price) or 0
  return (each > 0 and each or 1) * (n or 1)
end

function M.reserve(model, n)
  local s = open()
  local est = M.estimate(model, n)
  local hold, err = s:reserve(est, limit, HOLD_TTL)
  if hold == nil then return nil, "omixa: the budget's store cannot be reached: " .. tostring(err), "store" end
  if hold == false then
    return nil, format("omixa: budget: this request is estimated at %s USD and %s USD of %s USD is spent or in flight",
      budget.format(est), budget.format(err), budget.format(limit)), "budget"
  end
  return { id = hold, est = est }
end

-- BILLED nil: the outcome is unknown (counted at the estimate).
function M.settle(hold, billed)
  local ok, err = open():settle(hold.id, billed or hold.est)
  if not ok then ngx.log(ngx.ERR, "omixa: settle: ", err) end
end

function M.spent()
  return open():spent()
end

-- ---- identical requests in flight: sent once across workers and hosts ----
-- KEY is req.cache_key of client:prepare (a client with cache = true). The
-- one who sends keeps the result in the store (omixa.cache's entry format);
-- the others wait for it there, checking every WAIT_EVERY seconds (ngx.sleep
-- yields: the worker serves everything else), or for the claim to end.
local cache = require "omixa.cache"
local WAIT_EVERY, VALUE_MAX = 0.05, 32 * 1024 * 1024

local function cached(s, key)
  local text = s:get(key)
  if text then return cache.decode(key, text) end
end

-- -> images, info (kept by another: cached = true) | true (ours to send:
-- then M.keep or M.drop) | nil, message, "store" | "timeout"
function M.share(key, patience)
  local s, waited = open(), 0
  while true do
    local images, info = cached(s, key)
    if images then return images, info end
    local mine, err = s:claim(key, HOLD_TTL)
    if mine == nil then return nil, "omixa: the store cannot be reached: " .. tostring(err), "store" end
    if mine then
      images, info = cached(s, key) -- kept just before its claim ended
      if not images then return true end
      s:unclaim(key)
      return images, info
    end
    if waited >= patience then
      return nil, format("omixa: waited %g s for the same request in flight elsewhere", waited), "timeout"
    end
    ngx.sleep(WAIT_EVERY)
    waited = waited + WAIT_EVERY
  end
end

-- The result of the request sent for KEY, for those waiting; the claim ends.
function M.keep(key, images, info)
  local s = open()
  local text = cache.encode(key, images, info)
  if text and #text <= VALUE_MAX then
    local ok, why = s:set(key, text)
    if not ok then ngx.log(ngx.WARN, "omixa: result not kept: ", tostring(why)) end
  end
  s:unclaim(key)
end

-- The request sent for KEY failed: the claim ends (a waiter sends its own).
function M.drop(key)
  open():unclaim(key)
end

return M
