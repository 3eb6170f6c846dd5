-- omixa_fetch — the fetch function of client:parse for nginx with the Lua
-- module: when the service answers with url-only items (a `url` instead of
-- `b64_json`), each image is read over an ngx cosocket (ngx.socket.tcp) with
-- omixa_http1, so the worker serves everything else while it waits. Without
-- it, client:parse would download them itself with libcurl and block the
-- worker until they arrive.
--
--   local fetch = require("omixa_fetch").new{ max_bytes = 256 * 1024 * 1024 }
--   local images, info = client:parse(status, body, headers, fetch)
--
-- fetch(url, headers) -> bytes, content_type | nil, err: a GET of URL with
-- HEADERS (omixa gives the key and the signature for the service's own
-- origin, nothing for another); err is a table with the fields of an omixa
-- error (kind "network", "timeout", "tls", "protocol", "too_large", or
-- "api" with the status and the start of the body for a non-2xx answer).
-- Redirects are not followed (nor are they by omixa's own downloads). For
-- https the certificate is checked against lua_ssl_trusted_certificate.

local http1 = require "omixa_http1"

local ngx = ngx
local pairs, tostring, tonumber = pairs, tostring, tonumber
local concat = table.concat
local find, sub, lower, match, format = string.find, string.sub, string.lower, string.match, string.format

local M = {}

local READ_SIZE = 65536
local EXCERPT = 2048

-- scheme, host, port, path, authority of an http(s) URL
function M.split_url(url)
  local scheme, authority, path = match(url, "^([Hh][Tt][Tt][Pp][Ss]?)://([^/?#]+)(.*)$")
  if not scheme then return nil end
  scheme = lower(scheme)
  authority = match(authority, "@(.*)$") or authority -- user info is no part of where to connect
  local host, port = match(authority, "^%[([^%]]+)%]:?(%d*)$") -- [::1]:8080
  if not host then host, port = match(authority, "^([^:]+):?(%d*)$") end
  if not host then return nil end
  port = tonumber(port) or (scheme == "https" and 443 or 80)
  path = match(path, "^([^#]*)") -- a fragment is never sent
  if path == "" then path = "/" elseif sub(path, 1, 1) == "?" then path = "/" .. path end
  return scheme, host, port, path, authority
end

-- opts: connect_timeout, send_timeout, read_timeout (seconds; read: the
-- longest silence), max_bytes (a bigger image is a too_large error).
function M.new(opts)
  opts = opts or {}
  local connect_ms = (opts.connect_timeout or 10) * 1000
  local send_ms = (opts.send_timeout or 60) * 1000
  local read_ms = (opts.read_timeout or 60) * 1000
  local max_bytes = opts.max_bytes or 256 * 1024 * 1024

  return function(url, headers)
    local scheme, host, port, path, authority = M.split_url(url)
    if not scheme then return nil, { kind = "protocol", message = "not an http(s) URL: " .. sub(url, 1, 200) } end
    local lines = { format("GET %s HTTP/1.1", path), "Host: " .. authority, "Connection: close" }
    for name, value in pairs(headers or {}) do
      value = tostring(value)
      if find(name, "[\r\n:]") or find(value, "[\r\n]") then
        return nil, { kind = "protocol", message = "not a valid header: " .. name }
      end
      local l = lower(name)
      if l ~= "host" and l ~= "connection" and l ~= "content-length" then lines[#lines + 1] = name .. ": " .. value end
    end
    lines[#lines + 1] = ""
    lines[#lines + 1] = ""

    local sock = ngx.socket.tcp()
    sock:settimeouts(connect_ms, send_ms, read_ms)
    local ok, err = sock:connect(host, port)
    if not ok then
      return nil, { kind = err == "timeout" and "timeout" or "network", message = format("connect to %s: %s", authority, err) }
    end
    local function fail(kind, message, status, body)
      sock:close()
      return nil, { kind = kind, message = message, status = status, body = body }
    end
    if scheme == "https" then
      ok, err = sock:sslhandshake(nil, host, true)
      if not ok then return fail("tls", format("TLS with %s: %s", authority, err)) end
    end
    ok, err = sock:send(concat(lines, "\r\n"))
    if not ok then return fail("network", "sending the request: " .. err) end

    local res = http1.response()
    local body, size = {}, 0
    while not res:done() do
      local data, rerr = sock:receiveany(READ_SIZE)
      if data then
        local pieces, perr = res:feed(data)
        if not pieces then return fail("protocol", perr, res.status) end
        for i = 1, #pieces do
          size = size + #pieces[i]
          if size > max_bytes then return fail("too_large", "the image is over " .. max_bytes .. " bytes", res.status) end
          body[#body + 1] = pieces[i]
        end
      elseif rerr == "closed" then
        local ended, why = res:eof()
        if not ended then
          local status = res.status
          return fail(status and status >= 300 and "api" or "network", why, status)
        end
      elseif rerr == "timeout" then
        return fail("timeout", format("no byte from %s for %g s", authority, read_ms / 1000), res.status)
      else
        return fail("network", "reading the image: " .. tostring(rerr), res.status)
      end
    end
    sock:close()
    local text = concat(body)
    if res.status < 200 or res.status > 299 then
      return nil, { kind = "api", status = res.status, body = sub(text, 1, EXCERPT) }
    end
    return text, res.headers["content-type"]
  end
end

return M
