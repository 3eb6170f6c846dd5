-- omixa.guard — what a client puts around each request it sends: the
-- content cache (cache_dir), the spend guard (max_spend), request signing
-- (signing_secret) and the debug log (debug, OMIXA_DEBUG). The pieces live
-- in omixa.cache, omixa.budget, omixa.signing and omixa.debuglog; this is
-- the order they run in:
--
--   build and validate -> g:lookup (a hit is the result: nothing sent, no
--   cost) -> g:hold (refused: a "budget" error, nothing sent) -> send, each
--   attempt signed afresh (g:signer) -> g:finisher settles the hold
--   (success: the billed amount; unknown outcome: the estimate; else
--   nothing) and stores a success in the cache.
--
--   guard.new(opts, current_key) -> g      raises on misuse (level 3: the
--       caller of omixa.new); opts are the client's checked options;
--       current_key() -> the key last used, masked in every log line
--   g.log                                  debuglog function, or nil
--   g:lookup(url, body) -> key, images, info   key nil without a cache
--       (cache_dir, or cache = true: results kept in the store, each value
--       in omixa.cache's entry format, up to cache_max_bytes, 32 MiB default);
--       images, info on a hit (info.cached = true, attempts = 0, and no
--       billed_amount: nothing was billed for this call)
--   g:hold(prepared [, ttl]) -> hold | nil, err    the catalog's price x n of the
--       request omixa.schema prepared, held in the store (opts.store, an
--       omixa.store; this client's own memory store by default) for at most
--       TTL seconds; err an omixa error, kind "budget", or "store" when the
--       store cannot be reached (nothing sent: the budget fails closed)
--   g:key(url, body) -> key | nil; g:fetch(key) -> images, info | nil   its parts
--   g:finisher(hold, key) -> function(job, images, info_or_err)  omixa.engine's
--       spec.on_finish
--   g:waiter(key, prepared, elsewhere) -> hooks for omixa.engine.follow: a
--       request identical to one in flight (the same cache key; on this
--       client, or in another process: then hooks.check reads the store)
--       waits for it holding nothing; it shares a success as a hit (a copy,
--       cached = true, attempts = 0, no billed_amount) and on a failure
--       takes its own hold (g:hold) and is sent
--   g:signer(user_names) -> function(method, url, body) -> lines | nil
--       spec.extra_headers: X-Omixa-Timestamp and X-Omixa-Signature, except
--       those the user's own headers (lower-case names in user_names) replace
--   g:scrubber() -> on_finish that keeps the secret out of an error
--   g:spent() -> "0.072000"; g:check(prepared) -> true | nil, err (no hold);
--   g:add(amount) counts a billed amount (client:parse)
--
-- The signing secret is kept here, never in the client table, an error or
-- a log line.

local cache = require "omixa.cache"
local budget = require "omixa.budget"
local memory = require "omixa.store.memory"
local store = require "omixa.store"
local signing = require "omixa.signing"
local debuglog = require "omixa.debuglog"
local errors = require "omixa.errors"
local models = require "omixa.models"
local core = require "omixa.core"

local type, pairs, ipairs, pcall, error, setmetatable, tostring = type, pairs, ipairs, pcall, error, setmetatable, tostring
local format, sub, gsub, match, lower = string.format, string.sub, string.gsub, string.match, string.lower
local getenv = os.getenv
local now = core.now

local guard = {}

local Guard = {}
Guard.__index = Guard
Guard.__name = "omixa.guard"
Guard.__tostring = function() return "omixa.guard" end

local GiB = 1024 * 1024 * 1024
local STORE_VALUE_MAX = 32 * 1024 * 1024

local function env(name)
  local v = getenv(name)
  if v == "" then return nil end
  return v
end

local function misuse(msg)
  error(msg, 4) -- guard.new <- client.new <- omixa.new <- the user
end

function guard.new(opts, current_key)
  local g = setmetatable({}, Guard)

  local secret = opts.signing_secret
  if secret == "" then misuse("omixa: option 'signing_secret' must not be empty") end
  g.secret = secret or env("OMIXA_SIGNING_SECRET")

  local ok, log = pcall(debuglog.new, opts.debug, function()
    return { current_key(), g.secret }
  end)
  if not ok then misuse(log) end
  g.log = log

  -- Without max_spend the budget has no practical limit: it only counts.
  local limit = opts.max_spend
  if limit == nil then limit = budget.format(budget.MAX) end
  local b
  -- the ledger (and, through the store interface, anything shared) lives in
  -- the store: omixa.store.memory, this client's own, by default
  g.store = opts.store or memory.new()
  if opts.store ~= nil then
    local is, missing = store.is_store(opts.store)
    if not is then
      misuse("omixa: option 'store' must be an omixa.store (memory, shared_dict, redis) or have its methods"
        .. (missing and (" (no :" .. missing .. ")") or ""))
    end
  end
  ok, b = pcall(budget.new, limit, g.store)
  if not ok then misuse((gsub(tostring(b), "^omixa: max_spend:", "omixa: option 'max_spend':"))) end
  g.budget, g.limited = b, opts.max_spend ~= nil

  local dir = opts.cache_dir or env("OMIXA_CACHE_DIR")
  if opts.cache_dir == "" then misuse("omixa: option 'cache_dir' must not be empty") end
  if dir then
    local c, err = cache.new{ dir = dir, max_bytes = opts.cache_max_bytes or GiB }
    if not c then misuse("omixa: cache_dir: " .. err) end
    g.cache = c
  end
  -- cache = true: results kept in the store too (each value up to
  -- cache_max_bytes, 32 MiB by default), the way identical requests in
  -- other processes get the result they waited for
  if opts.cache then
    g.shared = opts.cache_max_bytes or STORE_VALUE_MAX
  elseif opts.cache_max_bytes and not dir then
    misuse("omixa: option 'cache_max_bytes' needs cache_dir (or OMIXA_CACHE_DIR) or cache = true")
  end
  if g.log then
    g.log("client: cache %s, max_spend %s, signing %s", g.cache and g.cache.dir or (g.shared and "store" or "off"),
      g.limited and (b:limit() .. " USD") or "none", g.secret and "on" or "off")
  end
  return g
end

local function short(key) return sub(key, 1, 12) end

-- A cached result for KEY: the cache_dir's, else the store's (cache =
-- true); images, info (cached = true, attempts = 0, no billed_amount) or nil.
function Guard:fetch(key)
  local t0, log = now(), self.log
  local images, info = nil, "miss"
  if self.cache then images, info = self.cache:get(key) end
  if not images and self.shared then
    local text, err = self.store:get(key)
    if text then images, info = cache.decode(key, text)
    elseif err then info = "the store cannot be reached: " .. tostring(err) end
  end
  if not images then
    if log then
      if info == "miss" then log("cache miss %s", short(key))
      else log("cache %s: %s; counted as a miss", short(key), info) end
    end
    return nil
  end
  info.billed_amount = nil
  info.elapsed = now() - t0
  if log then log("cache hit %s: %d image%s, nothing sent", short(key), #images, #images == 1 and "" or "s") end
  return images, info
end

-- The cache key of a request (omixa.cache.key), nil without a cache.
function Guard:key(url, body)
  if not self.cache and not self.shared then return nil end
  return cache.key(url, body)
end

function Guard:lookup(url, body)
  local key = self:key(url, body)
  if not key then return nil end
  return key, self:fetch(key)
end

-- Keep a success for KEY: in cache_dir, and in the store with cache = true
-- (not kept when larger than cache_max_bytes or the store refuses it).
-- Returns the reasons it was not kept, or nil.
local function keep(self, key, images, info)
  local why = {}
  if self.cache then
    local ok, err = self.cache:put(key, images, info)
    if not ok then why[#why + 1] = "cache_dir: " .. tostring(err) end
  end
  if self.shared then
    local text, err = cache.encode(key, images, info)
    local ok = false
    if text and #text > self.shared then
      err = format("the result (%d bytes) is larger than cache_max_bytes (%d)", #text, self.shared)
    elseif text then
      ok, err = self.store:set(key, text)
    end
    if not ok then why[#why + 1] = "store: " .. tostring(err) end
  end
  return why[1] and table.concat(why, "; ") or nil
end

-- The catalog's price x n for a prepared request (omixa.schema.check), n
-- the number of images asked for.
local function estimate(self, prepared)
  local n = 1
  for _, f in ipairs(prepared.fields) do
    if f[1] == "n" then n = f[2] end
  end
  return self.budget:estimate(prepared.spec or models[prepared.model], n), n
end

local function refusal(self, message, kind)
  if self.log then self.log("budget: refused, nothing sent: %s", message) end
  return nil, errors.new{ kind = kind or "budget", message = message, attempts = 0 }
end

function Guard:check(prepared)
  local ok, err, kind = self.budget:allows((estimate(self, prepared)))
  if not ok then return refusal(self, err, kind) end
  return true
end

function Guard:hold(prepared, ttl)
  local micros, n = estimate(self, prepared)
  local h, err, kind = self.budget:hold(micros, ttl)
  if not h then return refusal(self, err, kind) end
  if self.log and self.limited then
    self.log("budget: holding %s USD for %s x%d (%s spent of %s)", budget.format(micros), prepared.model, n,
      self.budget:spent(), self.budget:limit())
  end
  return h
end

function Guard:add(amount)
  if amount ~= nil then self.budget:add(amount) end
end

-- The in-flight claim on KEY in the store: true, this call sends it;
-- false, an identical request is in flight (on this client: wait for it).
function Guard:claim(key, ttl)
  return self.store:claim(key, ttl)
end

function Guard:unclaim(key)
  return self.store:unclaim(key)
end

function Guard:spent()
  local spent, err = self.budget:spent()
  if not spent then return nil, errors.new{ kind = "store", message = err, attempts = 0, maybe_billed = false } end
  return spent
end

-- The signing secret never reaches the user in an error, even one whose
-- text came from the server.
local function scrub(self, err)
  if not self.secret or type(err) ~= "table" then return end
  for k, v in pairs(err) do
    if type(v) == "string" then err[k] = errors.redact(v, { self.secret }) end
  end
end

-- on_finish for requests that are neither cached nor budgeted (the model list).
function Guard:scrubber()
  return function(_, result, res)
    if result == nil then scrub(self, res) end
  end
end

-- Settle the hold and store a success; then one debug line for the outcome
-- (logged last: a debug function that raises cannot skip the bookkeeping).
-- An attempt whose outcome was unknown and that retry_unknown sent again
-- (job.unknown_outcomes) may have been billed too: each counts the estimate.
function Guard:finisher(h, key)
  local log, b = self.log, self.budget
  return function(j, images, res)
    local extra = j.unknown_outcomes or 0
    for _ = 1, extra do b:add(budget.format(h.micros)) end
    if images then
      local billed_ok, why = h:capture(res.billed_amount)
      local unkept = key and keep(self, key, images, res)
      if log then
        log("done: %d image%s, %d attempt%s, %.3fs, billed %s%s; spent %s USD", #images, #images == 1 and "" or "s",
          res.attempts or 0, res.attempts == 1 and "" or "s", res.elapsed or 0, tostring(res.billed_amount),
          extra > 0 and format(" (and %d attempt%s of unknown outcome counted at the estimate)", extra,
            extra == 1 and "" or "s") or "", b:spent())
        if not billed_ok then log("budget: %s", why) end
        if key then
          if unkept then log("cache put %s failed: %s", short(key), unkept) else log("cache put %s", short(key)) end
        end
      end
    else
      scrub(self, res)
      -- maybe billed: what the answer still shows it billed, else the estimate
      if res.maybe_billed then h:capture(res.billed_amount) else h:release() end
      if log then
        log("failed: %s; %s; spent %s USD", tostring(res),
          res.maybe_billed and "counted the estimate (maybe billed)" or "nothing billed", b:spent())
      end
    end
  end
end

-- Plain data (images, info) copied, so that two callers never share a table.
local function copy(v)
  if type(v) ~= "table" then return v end
  local t = {}
  for k, x in pairs(v) do t[k] = copy(x) end
  return t
end

-- Hooks for a request whose twin (KEY) is in flight: see omixa.engine.follow.
-- ELSEWHERE = { ttl =, patience =, unclaim = } for a twin in another process:
-- hooks.check reads the store for its result, else tries to claim KEY (ttl).
function Guard:waiter(key, prepared, elsewhere)
  local log = self.log
  if log then log("cache %s: the same request is in flight: waiting for it, nothing sent", short(key)) end
  local hooks = { patience = elsewhere.patience }
  function hooks.check(j)
    local images, info = self:fetch(key)
    if images then return images, info end
    local mine, err = self.store:claim(key, elsewhere.ttl)
    if mine == nil then
      return false, errors.new{ kind = "store", message = "the store cannot be reached: " .. tostring(err),
                                attempts = 0, maybe_billed = false }
    end
    if not mine then return nil end
    j.spec.unclaim = elsewhere.unclaim
    images, info = self:fetch(key) -- it may have landed just before its claim ended
    if images then elsewhere.unclaim(); return images, info end
    return true
  end
  -- what a cache hit of the twin's result gives (Guard:lookup, cache:get)
  function hooks.share(images, info)
    local shared = copy(info)
    shared.billed_amount, shared.elapsed = nil, nil
    shared.cached, shared.attempts = true, 0
    return copy(images), shared
  end
  function hooks.resume(j)
    if log then log("cache %s: the request waited for failed: sending this one", short(key)) end
    local h, err = self:hold(prepared)
    if not h then return nil, err end
    j.spec.on_finish = self:finisher(h, key)
    return true
  end
  function hooks.on_finish(_, images, res)
    if not log then return end
    if images then
      log("cache %s: shared the result of the same request: %d image%s, nothing sent, nothing billed", short(key),
        #images, #images == 1 and "" or "s")
    else
      log("cache %s: stopped waiting: %s", short(key), tostring(res))
    end
  end
  return hooks
end

function Guard:signer(user_names)
  local secret = self.secret
  if not secret then return nil end
  return function(method, url, body)
    local lines = signing.headers(secret, method, signing.path(url), body)
    local out = {}
    for _, line in ipairs(lines) do
      local name = lower(match(line, "^([^:]+)"))
      if not user_names[name] then out[#out + 1] = line end
    end
    return out
  end
end

return guard
