-- omixa.client — a client's options and THE PIPELINE every request takes
-- (launch, below): look up (cache, in-flight claim) -> authorize (the key,
-- the budget's hold) -> build and sign -> send (attempts, back-off,
-- deadline: the retry policy is here, the engine runs it) -> decode ->
-- settle (budget, cache). Its helpers: omixa.request (URL, headers, body),
-- omixa.engine (libcurl jobs), omixa.decode (answers), omixa.errors (what
-- a failure is), omixa.guard (cache, budget ledger, signing, debug log).

local core = require "omixa.core"
local schema = require "omixa.schema"
local images = require "omixa.images"
local wire = require "omixa.request" -- what goes on the wire
local decode = require "omixa.decode"
local errors = require "omixa.errors"
local cjson = require("cjson.safe").new()
local models = require "omixa.models"
local engine = require "omixa.engine"
local stream = decode.stream
local guard = require "omixa.guard"

local type, pairs, ipairs, tostring, error, setmetatable, getmetatable =
  type, pairs, ipairs, tostring, error, setmetatable, getmetatable
local format, match, lower, find = string.format, string.match, string.lower, string.find
local floor = math.floor
local now = core.now
local concat = table.concat
local getenv = os.getenv

local VERSION = "0.1.0"
local DEFAULT_BASE = "https://www.omixa.cloud/api/v1"
local MiB = 1024 * 1024

local M = { VERSION = VERSION }

-- Option name -> accepted types ("integer" is a number with an integral value).
local OPTIONS = {
  api_key = { "string", "function" }, base_url = { "string" }, model = { "string" },
  timeout = { "number" }, connect_timeout = { "number" }, idle_timeout = { "number" },
  deadline = { "number" }, max_retries = { "integer" }, retry_unknown = { "boolean" },
  max_response_bytes = { "integer" }, max_request_bytes = { "integer" },
  ca_file = { "string" }, ca_path = { "string" }, insecure = { "boolean" },
  proxy = { "string" }, user_agent = { "string" }, headers = { "table" },
  strict = { "boolean" }, allow_http = { "boolean" }, concurrency = { "integer" },
  signing_secret = { "string" }, cache_dir = { "string" }, cache = { "boolean" }, max_spend = { "string", "number" },
  cache_max_bytes = { "integer" }, debug = { "function", "boolean" },
  store = { "table", "userdata" }, -- an omixa.store: the budget shared across workers and hosts
}

local CALL_OPTIONS = {
  timeout = { "number" }, connect_timeout = { "number" }, idle_timeout = { "number" },
  deadline = { "number" }, max_retries = { "integer" }, retry_unknown = { "boolean" },
  on_progress = { "function" }, stream = { "boolean" }, on_partial = { "function" },
  on_event = { "function" }, extra_body = { "table" }, extra_headers = { "table" },
}

-- The range of each numeric option: below MIN or above MAX is misuse (NaN
-- and the infinities never pass). Times in seconds, sizes in bytes.
local DAY, TiB = 86400, 2 ^ 40
local RANGE = {
  timeout = { 0, 30 * DAY }, connect_timeout = { 0, 30 * DAY }, idle_timeout = { 0, 30 * DAY },
  deadline = { 0, 30 * DAY, positive = true }, max_retries = { 0, 100 },
  max_response_bytes = { 1, TiB }, max_request_bytes = { 1, TiB }, cache_max_bytes = { 1, 2 ^ 53 },
  concurrency = { 1, 1024 },
}

local function names(t)
  local out = {}
  for k in pairs(t) do out[#out + 1] = k end
  table.sort(out)
  return out
end

local function is_type(v, want)
  if want == "integer" then
    return type(v) == "number" and v == floor(v) and v == v and v ~= math.huge
  end
  return type(v) == want
end

-- nil, message for a bad option table; what = "option" or "call option".
local function check_options(opts, spec, what)
  if opts == nil then return {} end
  if type(opts) ~= "table" then
    return nil, format("omixa: %ss must be a table (got %s)", what, type(opts))
  end
  for k, v in pairs(opts) do
    local want = spec[k]
    if not want then
      local hint = type(k) == "string" and schema.suggest(k, names(spec))
      return nil, format("omixa: unknown %s '%s'%s", what, tostring(k),
        hint and format(" (did you mean '%s'?)", hint) or "")
    end
    local ok = false
    for _, w in ipairs(want) do if is_type(v, w) then ok = true end end
    if not ok then
      return nil, format("omixa: %s '%s' must be %s (got %s)", what, k, concat(want, " or "), schema.show(v))
    end
    local range = RANGE[k]
    if range and not (v >= range[1] and v <= range[2] and (v > 0 or not range.positive)) then
      if v ~= v or v == math.huge or v == -math.huge then
        return nil, format("omixa: %s '%s' must be a finite number (got %s)", what, k, tostring(v))
      end
      if v < 0 then
        return nil, format("omixa: %s '%s' must not be negative (got %s)", what, k, tostring(v))
      end
      if v <= 0 or v < range[1] then
        return nil, format("omixa: %s '%s' must be positive (got %s)", what, k, tostring(v))
      end
      return nil, format("omixa: %s '%s' must be at most %.15g (got %s)", what, k, range[2], tostring(v))
    end
  end
  return opts
end

local function lua_version()
  if type(jit) == "table" and jit.version then return jit.version end
  return _VERSION
end

local Client = {}
Client.__index = Client
Client.__name = "omixa.client"

-- Secrets live outside the client table, so that printing or inspecting a
-- client (vim.inspect, serpent, ...) can never show them.
local secrets = setmetatable({}, { __mode = "k" })

function Client.__tostring(c)
  return format("omixa.client (%s, %s%s)", c.base_url, c.model, c.closed and ", closed" or "")
end

function M.new(options)
  local opts, err = check_options(options, OPTIONS, "option")
  if not opts then error(err, 2) end
  local base = opts.base_url or getenv("OMIXA_BASE_URL") or DEFAULT_BASE
  if not wire.web_scheme(base) then
    error(format("omixa: base_url must start with http:// or https:// (got %s)", schema.show(base)), 2)
  end
  base = base:gsub("/+$", "")
  local headers
  headers, err = wire.header_list(opts.headers, "option 'headers'")
  if not headers then error(err, 2) end
  local env_key = getenv("OMIXA_API_KEY")
  local self = setmetatable({
    base_url = base,
    model = opts.model or getenv("OMIXA_MODEL") or models.default,
    timeout = opts.timeout or 300,
    connect_timeout = opts.connect_timeout or 10,
    idle_timeout = opts.idle_timeout or 120,
    max_retries = opts.max_retries or 2,
    deadline = opts.deadline,
    retry_unknown = opts.retry_unknown == true,
    max_response_bytes = opts.max_response_bytes or 256 * MiB,
    max_request_bytes = opts.max_request_bytes or 20 * MiB,
    ca_file = opts.ca_file, ca_path = opts.ca_path, insecure = opts.insecure == true,
    proxy = opts.proxy,
    user_agent = opts.user_agent or format("omixa-lua/%s libcurl/%s %s", VERSION, core.curl_version(), lua_version()),
    strict = opts.strict ~= false,
    allow_http = opts.allow_http == true,
    concurrency = opts.concurrency or 4,
    extra_headers = headers,
    closed = false,
    pid = core.pid(), -- a client belongs to the process that made it
  }, Client)
  local s = { key = opts.api_key or (env_key ~= "" and env_key or nil) }
  -- cache, budget, signing secret and debug log (omixa.guard)
  s.guard = guard.new(opts, function() return s.last_key end)
  secrets[self] = s
  return self
end

local function check_open(self, level)
  if getmetatable(self) ~= Client then
    error("omixa: expected a client (use client:generate, not client.generate)", level + 1)
  end
  if self.closed then error("omixa: the client is closed", level + 1) end
end

function Client:close()
  if getmetatable(self) ~= Client then error("omixa: expected a client", 2) end
  if not self.closed then
    self.closed = true
    local s = secrets[self]
    if s and s.engine then engine.close(s.engine) end
    -- pcall: close is also __gc, where a raising debug function must not land
    if s and s.guard.log then pcall(s.guard.log, "client closed; spent %s USD", s.guard:spent()) end
    secrets[self] = nil
  end
end
Client.__close = Client.close
Client.__gc = Client.close

-- The client's transport and jobs, made on first use.
local function engine_of(self)
  local s = secrets[self]
  if not s.engine then s.engine = engine.new{ concurrency = self.concurrency, log = s.guard.log } end
  return s.engine
end

-- The key for this request: the option (called when a function), else nil.
local request_n

local function api_key(self)
  local k = secrets[self].key
  if type(k) == "function" then k = k() end
  if k == "" then k = nil end
  if k ~= nil and type(k) ~= "string" then
    return nil, "the api_key function returned " .. type(k) .. ", not a string"
  end
  if k and find(k, "[\r\n%z]") then return nil, "the API key contains a line break" end
  if k then secrets[self].last_key = k end
  return k
end

local function config_error(message, key)
  return nil, errors.new{ kind = "config", message = message, attempts = 0, secrets = { key } }
end

-- The fields of EXTRA (call option extra_body) added to PREPARED's, after
-- them, in name order, each value as JSON; true | nil, message (misuse: a
-- field the model's schema lists, or a value JSON cannot hold).
local function add_extra_body(prepared, extra)
  if extra == nil then return true end
  local listed = prepared.spec and prepared.spec.fields or models.common
  local sent = {}
  for _, f in ipairs(prepared.fields) do sent[f[1]] = true end
  local ks = {}
  for k in pairs(extra) do
    if type(k) ~= "string" or k == "" then
      return nil, format("omixa: call option 'extra_body' keys must be field names (got %s)", schema.show(k))
    end
    if listed[k] or sent[k] or k == "model" or k == "prompt" then
      return nil, format("omixa: call option 'extra_body' field '%s' is a field of model '%s': set it in the request",
        k, prepared.model)
    end
    ks[#ks + 1] = k
  end
  table.sort(ks)
  for _, k in ipairs(ks) do
    local json, jerr = cjson.encode(extra[k])
    if not json then
      return nil, format("omixa: call option 'extra_body' field '%s' cannot be sent as JSON: %s", k, tostring(jerr))
    end
    prepared.fields[#prepared.fields + 1] = { k, { json = json } }
  end
  return true
end

-- Validate the request and its call options (raising on misuse) and encode
-- the body. Level counts from the public function's caller.
local function build(self, request, call_opts, level)
  check_open(self, level + 1)
  local co, err = check_options(call_opts, CALL_OPTIONS, "call option")
  if not co then error(err, level + 1) end
  local prepared
  prepared, err = schema.check(request, { model = self.model, strict = self.strict, image = images.resolve })
  if not prepared then error(err, level + 1) end
  local streaming = co.stream == true or co.on_partial ~= nil or co.on_event ~= nil
  if streaming then
    if co.stream == false then
      error("omixa: call options on_partial and on_event need a stream: drop stream = false", level + 1)
    end
    if prepared.spec and not prepared.spec.streaming then
      local ids = {}
      for id, m in pairs(models) do if m.streaming then ids[#ids + 1] = id end end
      table.sort(ids)
      error(format("omixa: model '%s' does not stream; stream, on_partial and on_event need one of %s",
        prepared.model, concat(ids, ", ")), level + 1)
    end
    prepared.fields[#prepared.fields + 1] = { "stream", true }
  end
  local ok, xerr = add_extra_body(prepared, co.extra_body)
  if not ok then error(xerr, level + 1) end
  local hl
  hl, xerr = wire.header_list(co.extra_headers, "call option 'extra_headers'")
  if not hl then error(xerr, level + 1) end
  prepared.headers = wire.merge_headers(self.extra_headers, hl)
  -- The body is an omixa.buffer: whoever ends up with it closes it (the job
  -- when it finishes), so that its megabytes go at once, not at a collection.
  local body, berr = wire.encode(prepared)
  if not body then error(berr, level + 1) end
  local size = body:len()
  if size > self.max_request_bytes then
    body:close()
    error(format("omixa: the request body is %.1f MiB, over max_request_bytes (%.1f MiB) by %d bytes",
      size / MiB, self.max_request_bytes / MiB, size - self.max_request_bytes), level + 1)
  end
  return prepared, body, co, streaming
end

local function transfer_options(self, co, req)
  req.timeout = co.timeout or self.timeout
  req.connect_timeout = co.connect_timeout or self.connect_timeout
  req.idle_timeout = co.idle_timeout or self.idle_timeout
  req.ca_file, req.ca_path, req.insecure = self.ca_file, self.ca_path, self.insecure
  req.proxy, req.user_agent = self.proxy, self.user_agent
  req.max_response_bytes = self.max_response_bytes
  return req
end

-- How many images the request asks for (1 when it does not say).
function request_n(prepared)
  for _, f in ipairs(prepared.fields) do
    if f[1] == "n" then return f[2] end
  end
  return 1
end

-- The key for this call, or nil and the config error that refuses to send
-- it: none for a remote host, or in clear text to one.
local function credentials(self)
  if core.pid() ~= self.pid then
    return config_error(format("this client belongs to process %d, not to this one (a fork): make a new client here",
      self.pid))
  end
  local host = wire.host(self.base_url)
  local key, kerr = api_key(self)
  if kerr then return config_error(kerr) end
  if wire.web_scheme(self.base_url) == "http" and not self.allow_http and not wire.is_loopback(host) then
    return config_error(format("refusing to send the API key in clear text to %s: use https, or allow_http = true", host), key)
  end
  if not key and not wire.is_loopback(host) then
    return config_error("no API key: set OMIXA_API_KEY or pass api_key to omixa.new")
  end
  return key or false
end

-- The retry policy of one call (API.md "Retries that cannot double-bill"):
-- after the failed attempt F, seconds to wait before the next one, or nil
-- to end the call with F. errors.judge decides what F is; this adds the
-- call's limits: max_retries, the back-off, the deadline.
local function retry_policy(max_retries, retry_unknown)
  return function(f, at)
    if f.kind ~= "cancelled" and at.deadline_at and now() >= at.deadline_at - 0.001 then
      -- the call's deadline cut this attempt short (its transfer's timeout)
      f.kind, f.message = "timeout", "the call's deadline passed during attempt " .. at.attempt
      f.maybe_billed, f.retryable = nil, nil
    end
    local retry = errors.judge(f, { retry_unknown = retry_unknown, cancelled = at.cancelled, curl_code = at.curl_code })
    if not retry or at.attempt > max_retries then return nil end
    local wait = errors.backoff(f, at.attempt - 1)
    -- longer than the policy waits, or past the deadline: the last error, at once
    if not wait or (at.deadline_at and now() + wait >= at.deadline_at) then return nil end
    return wait
  end
end

-- What a job sends for this request, every attempt (see omixa.engine).
local function job_spec(self, prepared, body, co, streaming, key)
  local retry_unknown = co.retry_unknown
  if retry_unknown == nil then retry_unknown = self.retry_unknown end
  local first = true
  return {
    url = wire.endpoint(self.base_url, "generate"),
    body = body,
    model = prepared.model,
    co = co,
    max_retries = co.max_retries or self.max_retries, -- for the log; the policy decides
    next_attempt = retry_policy(co.max_retries or self.max_retries, retry_unknown),
    deadline = co.deadline or self.deadline,
    -- The key is read again for every attempt, so that it may rotate.
    api_key = function()
      if first then first = false; return key or nil end
      return api_key(self)
    end,
    header_lines = function(k) return wire.header_lines(k, prepared.headers, streaming, body) end,
    stream = streaming,
    n = request_n(prepared),
    max_response_bytes = self.max_response_bytes,
    transfer_options = function(req) return transfer_options(self, co, req) end,
  }
end

-- Signing headers for every attempt of SPEC (omixa.guard), unless the
-- user's own headers replace them.
local function add_signer(self, spec, user)
  local own = {}
  for _, h in ipairs(user or self.extra_headers) do own[lower(h[1])] = true end
  spec.extra_headers = secrets[self].guard:signer(own)
  return spec
end

-- THE PIPELINE: the life of one request, in order. build (above) has
-- validated it and encoded its body; every entry point (generate, start,
-- generate_many) comes here, and prepare/parse/stream_parser/models take
-- the same steps from the same helpers. A hit or a refusal is a job that
-- has already finished.
local function launch(self, prepared, body, co, streaming)
  local eng, g = engine_of(self), secrets[self].guard
  local function refuse(err) body:close(); return engine.finished(eng, nil, err) end

  -- 1. look up: a cached result is the answer (nothing sent, nothing
  --    billed); a request identical to one in flight (the same cache key)
  --    waits for it below, holding nothing, and shares its success.
  local url = wire.endpoint(self.base_url, "generate")
  local key, imgs, info = g:lookup(wire.identity(url, prepared.headers), body)
  if imgs then body:close(); return engine.finished(eng, imgs, info) end

  -- 2. authorize: the key may be sent there (else a config error) ...
  local api, err = credentials(self)
  if api == nil then return refuse(err) end

  -- 3. build and sign: what each attempt sends (the key read afresh, the
  --    signature made afresh), and the retry policy of this call.
  local spec = job_spec(self, prepared, body, co, streaming, api)
  add_signer(self, spec, prepared.headers)
  -- (1, again: an identical request in flight is waited for here, now that
  --  there is a spec to send should it fail.)
  spec.share_key = key
  if key then
    local claim_ttl = spec.deadline or (co.timeout or self.timeout) + 60
    local mine, serr = g:claim(key, claim_ttl)
    if mine == nil then
      return refuse(errors.new{ kind = "store", message = "the store cannot be reached: " .. tostring(serr),
                                attempts = 0 })
    end
    -- whoever sends it last on this client ends the claim (a waiter that
    -- sends after a failure inherits it); a claim of another process is
    -- not ours to end
    local unclaim = function() g:unclaim(key) end
    if mine or engine.leader(eng, key) then spec.unclaim = unclaim end
    -- not ours: it waits, for the twin on this client or, in flight in
    -- another process, for its result in the store (checked on poll) or its
    -- claim's end, when it is sent by the usual rules
    if not mine then
      return engine.follow(eng, spec, g:waiter(key, prepared, {
        ttl = claim_ttl, patience = spec.deadline or co.timeout or self.timeout, unclaim = unclaim }))
    end
  end

  -- (2, again: only a request that will be sent holds budget.) The budget
  --  holds the estimate, or refuses (a budget error, nothing sent).
  local hold
  hold, err = g:hold(prepared, (co.timeout or self.timeout) + 60) -- a dead owner's hold expires
  if not hold then return refuse(err) end

  -- 6. settle, when the job ends: the hold becomes the billed amount (the
  --    estimate when the outcome is unknown, nothing on a known failure),
  --    a success goes to the cache, its waiters share it.
  spec.on_finish = g:finisher(hold, key)

  -- 4. send: attempts, back-off and the deadline (the engine runs them,
  --    retry_policy decides), 5. decode each answer (omixa.decode;
  --    errors.judge for a failure).
  return engine.start(eng, spec)
end

-- client:start(request, call_opts) -> job, at once (misuse raises first).
function Client:start(request, call_opts)
  return launch(self, build(self, request, call_opts, 2))
end

-- client:poll() -> the number of jobs still queued or running. Never blocks.
function Client:poll()
  check_open(self, 2)
  local eng = engine_of(self)
  engine.drive(eng, 0)
  return engine.running(eng)
end

-- client:fd() -> a descriptor that becomes readable when poll has work;
-- nil, reason on an event backend without one (the portable backend).
function Client:fd()
  check_open(self, 2)
  return engine_of(self).multi:fd()
end

-- client:poll_interval() -> seconds a host loop may wait between poll()
-- calls when it drives them from a timer (where fd() is nil).
function Client:poll_interval()
  check_open(self, 2)
  return engine_of(self).multi:poll_interval()
end

-- client:generate_many(requests, call_opts) -> { { images =, info = } | { err = }, ... }
-- in input order; every request is validated before any is sent.
function Client:generate_many(requests, call_opts)
  check_open(self, 2)
  if type(requests) ~= "table" then
    error("omixa: generate_many: requests must be an array of requests (got " .. type(requests) .. ")", 2)
  end
  local built = {}
  for i = 1, #requests do
    local ok, prepared, body, co, streaming = pcall(build, self, requests[i], call_opts, 1)
    if not ok then
      for _, b in ipairs(built) do b[2]:close() end
      error(format("omixa: request %d: %s", i, (tostring(prepared):gsub("^omixa: ", ""))), 2)
    end
    built[i] = { prepared, body, co, streaming }
  end
  local jobs = {}
  for i, b in ipairs(built) do
    jobs[i] = launch(self, b[1], b[2], b[3], b[4])
  end
  local results = {}
  for i, j in ipairs(jobs) do
    local imgs, info = j:wait()
    results[i] = imgs and { images = imgs, info = info } or { err = info }
  end
  return results
end

function Client:generate(request, call_opts)
  return launch(self, build(self, request, call_opts, 2)):wait()
end

-- client:spent() -> "0.072000": what this client's requests cost so far
-- (billed amounts, and the estimate of those whose outcome is unknown).
function Client:spent()
  check_open(self, 2)
  return secrets[self].guard:spent()
end

-- The decoded JSON of a 2xx answer to GET /models; an error as for generate.
local function parse_json(status, headers, body)
  if status < 200 or status > 299 then return nil, errors.from_status(status, headers, body) end
  local text = body:string()
  local doc, jerr = cjson.decode(text)
  if doc == nil then
    return nil, { kind = "protocol", status = status, request_id = errors.request_id(headers), headers = headers,
                  body = errors.excerpt(text), message = "the model list is not JSON: " .. tostring(jerr) }
  end
  return doc, { status = status, request_id = errors.request_id(headers), headers = headers }
end

-- client:models() -> the service's model list, decoded as sent | nil, err.
-- Its shape is not documented; nothing is added to it.
function Client:models()
  check_open(self, 2)
  local key, err = credentials(self)
  if key == nil then return nil, err end
  local spec = job_spec(self, { model = self.model, fields = {}, headers = self.extra_headers }, nil, {}, false, key)
  spec.url, spec.method, spec.body, spec.parse = wire.endpoint(self.base_url, "models"), "GET", nil, parse_json
  spec.idempotent = true -- a GET bills nothing: resending is safe (errors.judge)
  spec.on_finish = secrets[self].guard:scrubber()
  return engine.start(engine_of(self), add_signer(self, spec)):wait()
end

-- Own transport: the request as plain data, and a parser for the answer.
-- Signed when the client has a signing secret (the timestamp is now: send
-- it within 5 minutes); refused (kind "budget") when the estimate would pass
-- max_spend. Not cached: the client never sees what you send.
function Client:prepare(request, call_opts)
  local prepared, buf, _, streaming = build(self, request, call_opts, 2)
  local key, kerr = api_key(self)
  if kerr then buf:close(); return config_error(kerr) end
  local g = secrets[self].guard
  local ok, berr = g:check(prepared)
  if not ok then buf:close(); return nil, berr end
  local url = wire.endpoint(self.base_url, "generate")
  local lines = wire.header_lines(key, prepared.headers, streaming, buf)
  local sign = add_signer(self, {}, prepared.headers).extra_headers
  for _, line in ipairs(sign and sign("POST", url, buf) or {}) do lines[#lines + 1] = line end
  -- with a cache: the request's cache key, for a caller that does its own
  -- I/O and shares results through a store (examples/openresty)
  local cache_key = g:key(wire.identity(url, prepared.headers), buf)
  local body = buf:string() -- the contract: plain data, the body a string
  buf:close()
  local headers = {}
  for _, line in ipairs(lines) do
    local k, v = match(line, "^([^:]+): (.*)$")
    headers[k] = v
  end
  headers["User-Agent"] = headers["User-Agent"] or self.user_agent
  return { method = "POST", url = url, headers = headers, body = body, cache_key = cache_key }
end

-- The headers to send with an image url of a parse's answer through the
-- caller's fetch: as the built-in downloads, the key and the signature go
-- only to the service's own origin.
local function fetch_headers(self, key)
  local sign = add_signer(self, {}).extra_headers
  local own = wire.origin(self.base_url)
  return function(url)
    local out = {}
    if wire.origin(url) ~= own then return out end
    local lines = {}
    if key then lines[1] = "Authorization: Bearer " .. key end
    for _, line in ipairs(sign and sign("GET", url, "") or {}) do lines[#lines + 1] = line end
    for _, line in ipairs(lines) do
      local k, v = match(line, "^([^:]+): (.*)$")
      out[k] = v
    end
    return out
  end
end

-- client:parse(status, body, headers [, fetch]) -> images, info | nil, err
-- Url-only items are fetched with fetch(url, headers) -> bytes [, content_type]
-- | nil, err when given (the caller's transport: omixa never touches the
-- network), else downloaded here with libcurl, waiting for them.
function Client:parse(status, body, headers, fetch)
  check_open(self, 2)
  if type(status) ~= "number" then error("omixa: parse: status must be a number", 2) end
  if type(body) ~= "string" then error("omixa: parse: body must be a string", 2) end
  if fetch ~= nil and type(fetch) ~= "function" then
    error("omixa: parse: fetch must be a function(url, headers) -> bytes | nil, err (got " .. type(fetch) .. ")", 2)
  end
  local h = {}
  if headers ~= nil then
    if type(headers) ~= "table" then error("omixa: parse: headers must be a table", 2) end
    for k, v in pairs(headers) do
      if type(k) == "string" then
        h[lower(k)] = type(v) == "table" and concat(v, ", ") or tostring(v)
      end
    end
  end
  local key = api_key(self)
  local g = secrets[self].guard
  local imgs, info, pending = decode.parse(status, h, body, { model = self.model })
  if imgs then
    info.attempts, info.elapsed = 1, 0
    g:add(info.billed_amount) -- counted in client:spent()
    if not pending then return imgs, info end
    if fetch then
      local t0 = now()
      local out, res = decode.fetch(imgs, info, pending, fetch,
        { headers = fetch_headers(self, key), max_bytes = self.max_response_bytes })
      if out then
        res.elapsed = now() - t0
        return out, res
      end
      info = res
    else
      local spec = add_signer(self, { url = self.base_url, key = key,
                     transfer_options = function(req) return transfer_options(self, {}, req) end })
      return engine.downloads(engine_of(self), spec, imgs, info, pending):wait()
    end
  end
  info.attempts = 1
  info.secrets = { key, g.secret }
  local err = errors.new(info)
  if err.maybe_billed and not imgs then g:add(err.billed_amount) end -- what the answer shows it billed
  return nil, err
end

-- client:stream_parser(call_opts) -> p: p:feed(chunk) -> true | nil, err;
-- p:finish() -> images, info | nil, err. For a stream read by your own
-- transport; on_partial and on_event run inside feed.
function Client:stream_parser(call_opts)
  check_open(self, 2)
  local co, err = check_options(call_opts, CALL_OPTIONS, "call option")
  if not co then error(err, 2) end
  local s = stream.new(co, { model = self.model, max_bytes = self.max_response_bytes })
  local g, counted = secrets[self].guard, false
  local p = {}
  function p.feed(_, chunk)
    local ok, fields = s:feed(chunk)
    if ok then return true end
    fields.attempts = 1
    return nil, errors.new(fields)
  end
  function p.finish()
    local imgs, info = s:finish()
    info.attempts = 1
    if imgs then
      -- counted in client:spent() as parse does, once however often finish is called
      if not counted then counted = true; g:add(info.billed_amount) end
      return imgs, info
    end
    return nil, errors.new(info)
  end
  function p.close() s:close() end
  return p
end

M.Client = Client
M.is_client = function(v) return getmetatable(v) == Client end
return M
