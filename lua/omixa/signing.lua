-- omixa.signing — request signing as the service documents it (OMIXA.md):
--
--   X-Omixa-Timestamp: <unix seconds>
--   X-Omixa-Signature: sha256=<hex hmac_sha256(secret, timestamp "." METHOD "." path "." raw_body)>
--
-- The HMAC runs in C (core.hmac_sha256, libcrypto) over the exact bytes
-- sent; the body is handed over as a separate part, so a 20 MiB body is
-- never copied into one bigger string.
--
--   signing.headers(secret, method, path, body [, now]) -> { "X-Omixa-Timestamp: ...",
--                                                            "X-Omixa-Signature: sha256=..." }
--   signing.path(url) -> "/api/v1/images/generations"   (the path part of a URL,
--                                                        without query or fragment)
--
-- Misuse (a missing secret, a lower-case or odd method, a path that does not
-- start with '/') raises; nothing here touches the network.

local core = require "omixa.core"
local request = require "omixa.request"

local type, tostring, error = type, tostring, error
local floor = math.floor
local format, match, find = string.format, string.match, string.find

local signing = {}

local function bad(what, got, level)
  error(format("omixa: signing: %s (got %s)", what, got), level + 1)
end

-- The path of URL as the server sees it on its request line: from the first
-- '/' after the authority up to '?' or '#'; "/" when there is none.
function signing.path(url)
  if type(url) ~= "string" then bad("url must be a string", type(url), 2) end
  return request.path(url)
end

function signing.headers(secret, method, path, body, now)
  if type(secret) ~= "string" or secret == "" then
    bad("the secret must be a non-empty string", type(secret), 2)
  end
  if type(method) ~= "string" or not match(method, "^%u+$") then
    bad("the method must be upper case, such as \"POST\"", tostring(method), 2)
  end
  if type(path) ~= "string" or not match(path, "^/") or find(path, "[%s%c]") then
    bad("the path must start with '/' and hold no spaces, such as \"/api/v1/images/generations\"",
      type(path) == "string" and format("%q", path) or type(path), 2)
  end
  if body == nil then body = "" end
  if type(body) ~= "string" and type(body) ~= "userdata" then
    bad("the body must be a string or an omixa.buffer", type(body), 2)
  end
  if now == nil then now = os.time() end
  if type(now) ~= "number" or now ~= now or now < 0 or now >= 2 ^ 53 then
    bad("now must be unix seconds", tostring(now), 2)
  end
  local ts = format("%.0f", floor(now))
  local sig = core.hmac_sha256(secret, ts, ".", method, ".", path, ".", body)
  return { "X-Omixa-Timestamp: " .. ts, "X-Omixa-Signature: sha256=" .. sig }
end

return signing
