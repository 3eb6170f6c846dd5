-- omixa.debuglog — the `debug` client option and OMIXA_DEBUG: one line per
-- event, prefixed "omixa: ", and never a secret in it.
--
--   debuglog.new(opt [, secrets]) -> log | nil
--       opt: a function receiving each line (without a newline); true: to
--       stderr; false: off even when OMIXA_DEBUG is set; nil: to stderr when
--       OMIXA_DEBUG is set to anything but "", "0", "false", "no" or "off"
--       (read when new is called). nil when logging is off, so callers
--       write `if log then log(...) end` and pay nothing otherwise.
--       secrets: a table (or a function returning one) whose string values
--       are replaced by "[redacted]" in every line; it is read at each call,
--       so the client can keep the current key in it (secrets.key = key).
--   log(fmt, ...)   string.format(fmt, ...) where every non-number argument
--       goes through tostring (nil is fine); a format that does not fit its
--       arguments logs them plainly instead of raising. Control characters
--       are escaped (one call, one line: a server's text cannot forge lines),
--       and besides the secrets given, "Bearer <token>", "Basic <token>" and
--       omx_live_ keys are masked wherever they appear. An error raised by
--       the user's function propagates: call log outside libcurl callbacks.
--   debuglog.redact_headers(lines) -> lines
--       a copy of "Name: value" lines (or of a { Name = value } map) with
--       Authorization and Proxy-Authorization reduced to their scheme
--       ("Authorization: Bearer [redacted]"), X-Omixa-Signature to its
--       algorithm ("sha256=[redacted]"), and Cookie, Set-Cookie, and any
--       header whose name says it holds a credential (key, token, secret,
--       auth, password, session, cookie, signature: X-Api-Key,
--       X-Goog-Api-Key, X-Auth-Token, ...) to "[redacted]".

local errors = require "omixa.errors"

local type, tostring, select, pcall, pairs, ipairs, next, error = type, tostring, select, pcall, pairs, ipairs, next, error
local format, match, gsub, lower, byte, find = string.format, string.match, string.gsub, string.lower, string.byte,
  string.find
local concat, sort = table.concat, table.sort
local unpack = table.unpack or unpack -- luacheck: ignore 143
local getenv = os.getenv

local debuglog = {}

local OFF = { [""] = true, ["0"] = true, ["false"] = true, ["no"] = true, ["off"] = true }

local KEEP_SCHEME = { authorization = true, ["proxy-authorization"] = true }
local KEEP_ALGORITHM = { ["x-omixa-signature"] = true }
local HIDE = { cookie = true, ["set-cookie"] = true, ["x-api-key"] = true, ["api-key"] = true }
-- Words in a header name that say its value is a credential (the client's
-- own `headers` option may add any such header).
local SECRET_WORDS = { "key", "token", "secret", "auth", "passw", "session", "cookie", "signature", "credential" }

local function secret_name(n)
  for _, w in ipairs(SECRET_WORDS) do
    if find(n, w, 1, true) then return true end
  end
  return false
end

local function redact_value(name, value)
  local n = lower(name)
  if KEEP_SCHEME[n] then
    local scheme = match(value, "^%s*([%w!#$%%&'*+.^_`|~-]+)%s+%S")
    return scheme and (scheme .. " [redacted]") or "[redacted]"
  elseif KEEP_ALGORITHM[n] then
    local alg = match(value, "^%s*([%w-]+)=")
    return alg and (alg .. "=[redacted]") or "[redacted]"
  elseif HIDE[n] or secret_name(n) then
    return "[redacted]"
  end
  return value
end

function debuglog.redact_headers(lines)
  if type(lines) ~= "table" then
    error("omixa: debuglog.redact_headers: lines must be a table (got " .. type(lines) .. ")", 2)
  end
  local out = {}
  if lines[1] ~= nil or next(lines) == nil then
    for i, line in ipairs(lines) do
      local name, sep, value = match(tostring(line), "^([^:]+)(:%s*)(.*)$")
      out[i] = name and (name .. sep .. redact_value(name, value)) or line
    end
  else
    for name, value in pairs(lines) do
      out[name] = (type(name) == "string" and type(value) == "string") and redact_value(name, value) or value
    end
  end
  return out
end

local function escape_controls(s)
  return (gsub(s, "[%z\1-\8\10-\31\127]", function(c)
    local b = byte(c)
    if b == 10 then return "\\n" elseif b == 13 then return "\\r" end
    return format("\\x%02x", b)
  end))
end

-- Masks that need no list of secrets: credentials by their shape.
local function mask_shapes(s)
  s = gsub(s, "([Bb][Ee][Aa][Rr][Ee][Rr]%s+)[^%s\"',;]+", "%1[redacted]")
  s = gsub(s, "([Bb][Aa][Ss][Ii][Cc]%s+)[A-Za-z0-9+/=]+", "%1[redacted]")
  s = gsub(s, "omx_live_[%w_%-]+", "omx_live_[redacted]")
  return s
end

local function render(fmt, ...)
  local n = select("#", ...)
  if n == 0 then return tostring(fmt) end
  local args = { ... }
  for i = 1, n do
    -- escaped before formatting: %s stops at a NUL byte on Lua 5.1 and 5.2
    if type(args[i]) ~= "number" then args[i] = escape_controls(tostring(args[i])) end
  end
  local ok, line = pcall(format, tostring(fmt), unpack(args, 1, n))
  if ok then return line end
  local parts = { tostring(fmt) }
  for i = 1, n do parts[#parts + 1] = tostring(args[i]) end
  return concat(parts, " ")
end

local function secrets_list(secrets)
  if type(secrets) == "function" then secrets = secrets() end
  if type(secrets) ~= "table" then return nil end
  -- longest first, so a secret containing another is masked whole
  local list = {}
  for _, v in pairs(secrets) do
    if type(v) == "string" then list[#list + 1] = v end
  end
  sort(list, function(a, b) return #a > #b end)
  return list
end

local function to_stderr(line)
  io.stderr:write(line, "\n")
end

function debuglog.new(opt, secrets)
  if secrets ~= nil and type(secrets) ~= "table" and type(secrets) ~= "function" then
    error("omixa: debuglog.new: secrets must be a table or a function", 2)
  end
  local sink
  if type(opt) == "function" then
    sink = opt
  elseif opt == true then
    sink = to_stderr
  elseif opt == nil then
    local env = getenv("OMIXA_DEBUG")
    if env == nil or OFF[lower(env)] then return nil end
    sink = to_stderr
  elseif opt == false then
    return nil
  else
    error("omixa: debug must be a function or a boolean (got " .. type(opt) .. ")", 2)
  end
  return function(fmt, ...)
    local line = render(fmt, ...)
    line = errors.redact(line, secrets_list(secrets))
    line = escape_controls(mask_shapes(line))
    sink("omixa: " .. line)
  end
end

return debuglog
