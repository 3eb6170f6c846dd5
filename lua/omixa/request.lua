-- omixa.request — what goes on the wire: the URL (one parser, one endpoint
-- builder, the one origin check), the headers, and the body, byte for byte.
--
-- The body: fields in the catalog's order, strings quoted in C, each input
-- image in the documented wire form { "type": "image_url", "image_url":
-- { "url": "data:<mime>;base64,<...>" } }, then a call's extra_body fields.
-- This file decides the layout as a list of parts; core.build_body writes
-- them once into one omixa.buffer of the exact size, base64-encoding image
-- bytes (or an image file, read in chunks) straight into it.


local type, ipairs, pairs, format = type, ipairs, pairs, string.format
local match, lower, find = string.match, string.lower, string.find
local concat, sort = table.concat, table.sort
-- The C core is loaded with the first body: the URL half of this module
-- also serves omixa.schema, which the stand-in runs inside nginx without it.
local quote, build_body
local function load_core()
  if not quote then
    local core = require "omixa.core"
    quote, build_body = core.json_quote, core.build_body
  end
end

local request = {}

-- ---- the URL ----

-- scheme (lower-case), authority and path-and-after of URL, or nil.
local function split(url)
  local scheme, authority, rest = match(url, "^([%a][%w%+%.%-]*)://([^/?#]*)(.*)$")
  if not scheme then return nil end
  return lower(scheme), authority, rest
end

-- "scheme://authority", lower-cased: where the key and the signature may go.
function request.origin(url)
  local scheme, authority = split(url)
  return scheme and (scheme .. "://" .. lower(authority))
end

-- Host of a URL, lower-cased, without brackets, port or userinfo.
function request.host(url)
  local _, authority = split(url)
  if not authority then return nil end
  authority = match(authority, "@(.*)$") or authority
  local v6 = match(authority, "^%[([^%]]*)%]")
  if v6 then return lower(v6) end
  return lower(match(authority, "^([^:]*)"))
end

-- The path as the server sees it on its request line: from the first '/'
-- after the authority up to '?' or '#'; "/" when there is none. A URL
-- without a scheme is taken as a path already.
function request.path(url)
  local _, _, rest = split(url)
  local path = match(rest or url, "^[^?#]*")
  if path == "" then path = "/" end
  return path
end

-- The scheme of URL, lower-cased ("https"), or nil when it is no URL.
function request.scheme(url)
  return (split(url))
end

-- "http" or "https" for an http(s) URL with a host, else nil.
function request.web_scheme(url)
  local scheme, authority = split(url)
  if (scheme == "http" or scheme == "https") and authority ~= "" then return scheme end
  return nil
end

function request.is_loopback(host)
  return host == "localhost" or host == "::1" or match(host or "", "^127%.%d+%.%d+%.%d+$") ~= nil
end

local ENDPOINTS = { generate = "/images/generations", models = "/models" }

-- The URL of the service's endpoint WHAT ("generate", "models") under BASE.
function request.endpoint(base, what)
  return base .. ENDPOINTS[what]
end

-- ---- headers ----

-- { { name, value }, ... } sorted by name, of a user's header table, or
-- nil, message (WHAT names the option in it).
function request.header_list(t, what)
  local out = {}
  for k, v in pairs(t or {}) do
    if type(k) ~= "string" or not match(k, "^[%w!#$%%&'*+%-.^_`|~]+$") then
      return nil, format("omixa: %s has an invalid header name %s", what, require("omixa.schema").show(k))
    end
    if type(v) ~= "string" or find(v, "[\r\n%z]") then
      return nil, format("omixa: %s value of '%s' must be a string without line breaks", what, k)
    end
    out[#out + 1] = { k, v }
  end
  sort(out, function(a, b) return a[1] < b[1] end)
  return out
end

-- A client's header list with a call's (same name: the call's wins).
function request.merge_headers(base, call)
  if #call == 0 then return base end
  local out, seen = {}, {}
  for _, h in ipairs(call) do seen[lower(h[1])] = true; out[#out + 1] = h end
  for _, h in ipairs(base) do
    if not seen[lower(h[1])] then out[#out + 1] = h end
  end
  sort(out, function(a, b) return a[1] < b[1] end)
  return out
end

-- Request headers as "Name: value" lines: the key, the body's type (BODY:
-- the request has one), what we accept (STREAMING), then the USER's, which
-- replace ours of the same name.
function request.header_lines(key, user, streaming, body)
  local lines, seen = {}, {}
  for _, h in ipairs(user) do seen[lower(h[1])] = true end
  local function add(name, value)
    if not seen[lower(name)] then lines[#lines + 1] = name .. ": " .. value end
  end
  if key then add("Authorization", "Bearer " .. key) end
  if body then add("Content-Type", "application/json") end
  add("Accept", streaming and "text/event-stream" or "application/json")
  for _, h in ipairs(user) do lines[#lines + 1] = h[1] .. ": " .. h[2] end
  return lines
end

-- What, beside the body, makes two requests the same for the cache: the
-- URL and the user's own headers (an extra header can change the answer).
function request.identity(url, headers)
  if #headers == 0 then return url end
  local parts = { url }
  for _, h in ipairs(headers) do parts[#parts + 1] = lower(h[1]) .. ": " .. h[2] end
  return concat(parts, "\n")
end

-- ---- the body ----

local function image_parts(img, out)
  out[#out + 1] = '{"type":"image_url","image_url":{"url":'
  if img.url then
    out[#out + 1] = quote(img.url)
  else
    -- base64 needs no JSON escaping: written straight in.
    out[#out + 1] = '"data:' .. img.mime .. ";base64,"
    out[#out + 1] = img.path and { file = img.path, size = img.bytes, where = img.where } or { b64 = img.data }
    out[#out + 1] = '"'
  end
  out[#out + 1] = "}}"
end

-- The body as parts for core.build_body: strings, { b64 = bytes } and
-- { file = path, size = n }.
local function parts(prepared)
  load_core()
  local out = { "{" }
  for i, f in ipairs(prepared.fields) do
    local name, v = f[1], f[2]
    if i > 1 then out[#out + 1] = "," end
    out[#out + 1] = quote(name)
    out[#out + 1] = ":"
    local t = type(v)
    if t == "string" then
      out[#out + 1] = quote(v)
    elseif t == "number" then
      out[#out + 1] = format("%d", v)
    elseif t == "boolean" then
      out[#out + 1] = v and "true" or "false"
    elseif v.json then -- a call's extra_body field, encoded already
      out[#out + 1] = v.json
    elseif v.mime then -- one image (mask)
      image_parts(v, out)
    else               -- an array of images
      out[#out + 1] = "["
      for k, img in ipairs(v) do
        if k > 1 then out[#out + 1] = "," end
        image_parts(img, out)
      end
      out[#out + 1] = "]"
    end
  end
  out[#out + 1] = "}"
  return out
end

-- request.encode(prepared) -> omixa.buffer | nil, message: the body to send.
-- Fails only when an image file cannot be read (again) or changed size
-- since it was sniffed. The caller closes the buffer when done with it.
function request.encode(prepared)
  local list = parts(prepared)
  local body, at, err = build_body(list)
  if body then return body end
  return nil, format("omixa: field '%s': cannot read image file: %s", list[at].where or "?", err)
end

return request
