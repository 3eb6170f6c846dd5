-- omixa.errors — the one error object every failure of the world returns
-- (a table with a __tostring, identical on every Lua version), and the only
-- place that judges a failure: its kind's fields from a response (the
-- service's error envelope, request id, Retry-After, the 2 KiB excerpt),
-- whether it may have been billed, whether it is retryable, whether the
-- retry policy sends it again and how long it waits first. Misuse never
-- comes here: it raises a plain message instead.

local setmetatable, getmetatable, tostring, tonumber, type, pairs =
  setmetatable, getmetatable, tostring, tonumber, type, pairs
local format, find, sub, match, lower = string.format, string.find, string.sub, string.match, string.lower
local floor, min, random = math.floor, math.min, math.random
local cjson = require("cjson.safe").new()
local concat = table.concat

local errors = {}

local LABEL = {
  config = "configuration error", network = "network error", tls = "TLS error",
  timeout = "timeout", api = "api error", protocol = "protocol error",
  no_image = "no image in response", cancelled = "cancelled",
  too_large = "response too large", budget = "budget exceeded", store = "store unreachable",
}

local BODY_EXCERPT = 2048
local MAX_RETRY_AFTER = 60

local Error = {}
Error.__index = Error
Error.__name = "omixa.error"

function Error.__tostring(e)
  local parts = { "omixa: ", LABEL[e.kind] or tostring(e.kind) }
  if e.status then parts[#parts + 1] = " " .. e.status end
  if e.code and e.code ~= "" then parts[#parts + 1] = " " .. tostring(e.code) end
  if e.message and e.message ~= "" then parts[#parts + 1] = ": " .. tostring(e.message) end
  local notes = {}
  if e.attempts then
    notes[#notes + 1] = format("%d attempt%s", e.attempts, e.attempts == 1 and "" or "s")
  end
  if e.maybe_billed then notes[#notes + 1] = "maybe billed" end
  if e.retry_after then notes[#notes + 1] = format("retry after %gs", e.retry_after) end
  if e.request_id then notes[#notes + 1] = "request " .. tostring(e.request_id) end
  if #notes > 0 then parts[#parts + 1] = " (" .. concat(notes, ", ") .. ")" end
  return concat(parts)
end

-- Replace every occurrence of each secret in S (plain text, not a pattern).
local function redact(s, secrets)
  if type(s) ~= "string" or not secrets then return s end
  for _, secret in pairs(secrets) do
    if type(secret) == "string" and #secret >= 4 then
      local out, i = {}, 1
      while true do
        local a, b = find(s, secret, i, true)
        if not a then break end
        out[#out + 1] = sub(s, i, a - 1)
        out[#out + 1] = "[redacted]"
        i = b + 1
      end
      if #out > 0 then
        out[#out + 1] = sub(s, i)
        s = concat(out)
      end
    end
  end
  return s
end
errors.redact = redact

-- ---- reading a response ----

-- At most the first 2 KiB of BODY (a string or an omixa.buffer).
function errors.excerpt(body)
  if body == nil then return nil end
  if type(body) == "string" then return sub(body, 1, BODY_EXCERPT) end
  return body:string(1, BODY_EXCERPT)
end

function errors.request_id(headers)
  if not headers then return nil end
  return headers["x-request-id"] or headers["request-id"] or headers["x-omixa-request-id"]
end

local MONTHS = { jan = 1, feb = 2, mar = 3, apr = 4, may = 5, jun = 6,
                 jul = 7, aug = 8, sep = 9, oct = 10, nov = 11, dec = 12 }

-- Seconds since the epoch of a UTC civil date (no time zone library needed).
local function utc_epoch(y, m, d, hh, mm, ss)
  if m <= 2 then y = y - 1 end
  local era = floor(y / 400)
  local yoe = y - era * 400
  local mp = (m + 9) % 12
  local doy = floor((153 * mp + 2) / 5) + d - 1
  local doe = yoe * 365 + floor(yoe / 4) - floor(yoe / 100) + doy
  local days = era * 146097 + doe - 719468
  return days * 86400 + hh * 3600 + mm * 60 + ss
end

-- Seconds to wait from Retry-After (delta seconds or an HTTP date) and
-- retry-after-ms (which wins); nil when neither says anything usable.
function errors.retry_after(headers, now)
  if not headers then return nil end
  local ms = tonumber(headers["retry-after-ms"] or "")
  if ms and ms >= 0 then return ms / 1000 end
  local ra = headers["retry-after"]
  if not ra then return nil end
  local secs = tonumber(ra)
  if secs then return secs >= 0 and secs or nil end
  local d, mon, y, hh, mm, ss = match(ra, "%a+,%s*(%d+)[%s%-](%a+)[%s%-](%d+)%s+(%d+):(%d+):(%d+)")
  if not d or not MONTHS[lower(mon)] then return nil end
  y = tonumber(y)
  if y < 100 then y = y + 1900 end
  local at = utc_epoch(y, MONTHS[lower(mon)], tonumber(d), tonumber(hh), tonumber(mm), tonumber(ss))
  local wait = at - (now or os.time())
  return wait > 0 and wait or 0
end

local function as_integer(v)
  if type(v) == "number" and v == floor(v) then return floor(v) end
  return v
end

-- The service's error envelope {"error":{"message","type","code"}} (or
-- {"error":"text"}) in DOC, a decoded JSON value, read into F (message,
-- type, code); true when there was one. With SELF, DOC may be the inner
-- object itself (an SSE `error` event), whose type "error" says nothing.
function errors.envelope(doc, f, self)
  if type(doc) ~= "table" then return false end
  local env = doc.error
  if type(env) ~= "table" and type(env) ~= "string" then
    if not self then return false end
    env = doc
  end
  if type(env) == "string" then
    f.message = env
    return true
  end
  if type(env.message) == "string" then f.message = env.message end
  if type(env.type) == "string" and not (env == doc and env.type == "error") then f.type = env.type end
  if type(env.code) == "string" or type(env.code) == "number" then f.code = tostring(as_integer(env.code)) end
  return true
end

-- The error fields of a non-2xx response (BODY a string or an omixa.buffer).
function errors.from_status(status, headers, body)
  local text = errors.excerpt(body) or ""
  local f = { kind = "api", status = status, body = text, headers = headers,
              request_id = errors.request_id(headers), retry_after = errors.retry_after(headers) }
  if match(text, "^%s*{") then
    f.envelope = errors.envelope(cjson.decode(type(body) == "string" and body or body:string()), f)
  end
  if not f.message then
    f.message = format("HTTP %d from the service%s", status,
      match((headers or {})["content-type"] or "", "html") and " (an HTML page, likely from a proxy)" or "")
  end
  return f
end

-- ---- judging a failure ----

-- The statuses the retry policy retries (API.md "Retries").
local RETRY_STATUS = { [408] = true, [409] = true, [429] = true,
                       [500] = true, [502] = true, [503] = true, [504] = true }

-- Whether F may have been billed. The facts it reads: kind, status, sent
-- (the request body went out), envelope (the service's own error envelope
-- was read), billed (the service produced the images: a url download
-- failed), idempotent (a GET: nothing is billed, resending is safe).
local function maybe_billed(f)
  if f.billed then return true end
  local k = f.kind
  if k == "config" or k == "budget" or k == "store" or not f.sent or f.idempotent then return false end
  local st = f.status
  if k == "api" then
    -- the service's own failure (a 4xx, an error event, an enveloped 5xx)
    -- released the hold; a bare 5xx from a proxy in between says nothing
    -- (501 and 505 say the request was not handled at all)
    return st ~= nil and st >= 500 and st ~= 501 and st ~= 505 and not f.envelope
  end
  if k == "no_image" then return false end
  -- a timeout, a cut, a cancel, an undecodable 2xx: the outcome is unknown
  return st == nil or (st >= 200 and st <= 299)
end

-- Fill F's maybe_billed and retryable (a fact it already states is kept),
-- and return whether the retry policy sends it again: OPTS.retry_unknown,
-- OPTS.cancelled (the caller stopped it), OPTS.curl_code.
function errors.judge(f, opts)
  opts = opts or {}
  if f.maybe_billed == nil then f.maybe_billed = maybe_billed(f) end
  local k = f.kind
  local retry
  if opts.cancelled or k == "cancelled" or k == "config" or k == "budget" or k == "store" then
    retry = false
  elseif f.maybe_billed then
    retry = opts.retry_unknown == true and k ~= "too_large" and not f.billed
  elseif k == "api" then
    retry = RETRY_STATUS[f.status] == true
  elseif k == "network" or k == "timeout" then
    retry = not f.sent or f.idempotent == true
  elseif k == "tls" then
    retry = opts.curl_code == 35 and not f.sent -- the handshake, not the certificate
  else
    retry = false
  end
  if f.retryable == nil then
    f.retryable = retry or f.maybe_billed or (k == "api" and RETRY_STATUS[f.status] == true)
      or ((k == "network" or k == "timeout") and f.sent == false) or false
  end
  return retry
end

-- Seconds to wait before attempt K + 2 (K back-offs taken so far), or nil
-- when F's Retry-After asks for longer than the policy waits.
function errors.backoff(f, k)
  local wait = f.retry_after
  if wait then return wait <= MAX_RETRY_AFTER and wait or nil end
  local base = min(0.5 * 2 ^ k, 8)
  return base - base * 0.25 * random()
end

-- errors.new{ kind =, message =, status =, ... , secrets = {...} }
-- Judges F (errors.judge) unless already judged, trims body to 2 KiB, and
-- scrubs every string field of the secrets given.
function errors.new(f)
  if f.maybe_billed == nil or f.retryable == nil then errors.judge(f) end
  local secrets = f.secrets
  local e = setmetatable({}, Error)
  for k, v in pairs(f) do
    if k ~= "secrets" then e[k] = redact(v, secrets) end
  end
  if type(e.body) == "string" and #e.body > BODY_EXCERPT then
    e.body = sub(e.body, 1, BODY_EXCERPT)
  end
  if type(e.headers) == "table" then
    local h = {}
    for k, v in pairs(e.headers) do h[k] = redact(v, secrets) end
    e.headers = h
  end
  e.maybe_billed = e.maybe_billed == true
  e.retryable = e.retryable == true
  e.sent, e.envelope, e.billed, e.idempotent = nil, nil, nil, nil
  return e
end

function errors.is(v)
  return getmetatable(v) == Error
end

errors.Error = Error
return errors
