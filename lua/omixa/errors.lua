-- omixa.errors — the one error object every failure of the world returns:
-- a table with a __tostring, identical on every Lua version. Misuse never
-- comes here: it raises a plain message instead.

local setmetatable, getmetatable, tostring, type, pairs = setmetatable, getmetatable, tostring, type, pairs
local format, find, sub = string.format, string.find, string.sub
local concat = table.concat

local errors = {}

local LABEL = {
  config = "configuration error", network = "network error", tls = "TLS error",
  timeout = "timeout", api = "api error", protocol = "protocol error",
  no_image = "no image in response", cancelled = "cancelled",
  too_large = "response too large", budget = "budget exceeded",
}

-- The statuses the retry policy retries (API.md "Retries").
local RETRY_STATUS = { [408] = true, [409] = true, [429] = true,
                       [500] = true, [502] = true, [503] = true, [504] = true }
errors.retry_status = RETRY_STATUS

local BODY_EXCERPT = 2048

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

-- errors.new{ kind =, message =, status =, ... , secrets = {...} }
-- Fills retryable and maybe_billed, trims body to 2 KiB, and scrubs every
-- string field of the secrets given.
function errors.new(f)
  local secrets = f.secrets
  local e = setmetatable({}, Error)
  for k, v in pairs(f) do
    if k ~= "secrets" then e[k] = redact(v, secrets) end
  end
  if type(e.body) == "string" and #e.body > BODY_EXCERPT then
    e.body = sub(e.body, 1, BODY_EXCERPT)
  end
  e.maybe_billed = e.maybe_billed == true
  if e.retryable == nil then
    e.retryable = e.maybe_billed or (e.kind == "api" and RETRY_STATUS[e.status] == true)
      or (e.kind == "network" and e.sent == false) or false
  end
  e.sent = nil
  return e
end

function errors.is(v)
  return getmetatable(v) == Error
end

errors.Error = Error
return errors
