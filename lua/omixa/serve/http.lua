-- omixa.serve.http: the stand-in's plain HTTP answers (inside nginx, LuaJIT,
-- ngx API): JSON text, the service's error envelope, request ids, reading
-- the request, and sending a response whole. Shared by the request handler
-- (handler.lua), the fault injection (faults.lua) and the control API
-- (control.lua); it knows no route and no fault.
--
-- A response is a table { status =, body =, ctype =, headers = {} }.

local ngx = ngx
local cjson = require "cjson.safe"
local read_file = require("omixa.serve.files").read

local type, pairs, tostring, tonumber, next = type, pairs, tostring, tonumber, next
local random = math.random
local concat = table.concat
local format, gsub = string.format, string.gsub

local M = {}

M.REASONS = {
  [200] = "OK", [201] = "Created", [202] = "Accepted", [204] = "No Content",
  [301] = "Moved Permanently", [302] = "Found", [304] = "Not Modified",
  [400] = "Bad Request", [401] = "Unauthorized", [402] = "Payment Required",
  [403] = "Forbidden", [404] = "Not Found", [405] = "Method Not Allowed",
  [408] = "Request Timeout", [409] = "Conflict", [413] = "Payload Too Large",
  [422] = "Unprocessable Entity", [429] = "Too Many Requests",
  [500] = "Internal Server Error", [502] = "Bad Gateway", [503] = "Service Unavailable",
  [504] = "Gateway Timeout",
}

-- Default error envelope fields per status: { type, code, message }.
local ENVELOPES = {
  [400] = { "invalid_request_error", "bad_request", "Bad request." },
  [401] = { "authentication_error", "invalid_api_key", "Invalid API key." },
  [402] = { "billing_error", "insufficient_balance", "Insufficient wallet balance." },
  [403] = { "permission_error", "model_not_allowed", "This API key is not allowed to use this model." },
  [404] = { "invalid_request_error", "not_found", "Not found." },
  [405] = { "invalid_request_error", "method_not_allowed", "Method not allowed." },
  [408] = { "timeout_error", "request_timeout", "Request timed out." },
  [409] = { "invalid_request_error", "conflict", "Conflict." },
  [413] = { "invalid_request_error", "request_too_large", "Request body too large." },
  [422] = { "invalid_request_error", "validation_error", "Payload validation failed." },
  [429] = { "rate_limit_error", "rate_limited", "Rate limit exceeded." },
  [500] = { "server_error", "internal_error", "Internal server error." },
  [502] = { "server_error", "bad_gateway", "Upstream provider error." },
  [503] = { "server_error", "no_healthy_route", "No healthy route." },
  [504] = { "server_error", "upstream_timeout", "Upstream provider timed out." },
}

-- A JSON string literal that leaves '/' alone (cjson writes "\/").
function M.jstr(s)
  local out = cjson.encode(tostring(s))
  return (gsub(out, "\\/", "/"))
end

-- JSON text of V; an empty table is an empty array.
function M.encode(v)
  if type(v) == "table" and next(v) == nil then return "[]" end
  return cjson.encode(v)
end

-- {"error":{message,type,code}}, each field defaulting by STATUS.
function M.envelope(status, etype, code, message)
  local d = ENVELOPES[status]
    or (status >= 500 and { "server_error", "server_error", "Server error." })
    or { "invalid_request_error", "error", "Request failed." }
  return format('{"error":{"message":%s,"type":%s,"code":%s}}',
    M.jstr(message or d[3]), M.jstr(etype or d[1]), M.jstr(code or d[2]))
end

function M.request_id()
  local t = {}
  for i = 1, 24 do t[i] = format("%x", random(0, 15)) end
  return "req_" .. concat(t)
end

function M.new_response(status, body, ctype)
  return { status = status, body = body or "", ctype = ctype or "application/json",
           headers = {} }
end

function M.error_response(status, message, code, etype)
  return M.new_response(status, M.envelope(status, etype, code, message))
end

function M.set_headers(resp)
  ngx.status = resp.status
  ngx.header["Content-Type"] = resp.ctype
  for k, v in pairs(resp.headers) do ngx.header[k] = v end
end

-- Plain send through nginx: headers, then the whole body with a
-- Content-Length (so nginx does not chunk it).
function M.send_plain(resp)
  M.set_headers(resp)
  ngx.header["Content-Length"] = #resp.body
  if resp.body ~= "" and ngx.req.get_method() ~= "HEAD" then ngx.print(resp.body) end
  return ngx.exit(resp.status >= 200 and ngx.OK or resp.status)
end

-- An error answer with the envelope, a fresh x-request-id and EXTRA headers.
function M.simple(status, message, code, extra)
  local resp = M.error_response(status, message, code)
  resp.headers["x-request-id"] = M.request_id()
  for k, v in pairs(extra or {}) do resp.headers[k] = v end
  return M.send_plain(resp)
end

function M.send_json(value)
  return M.send_plain(M.new_response(200, M.encode(value)))
end

-- The request body, from memory or from nginx's temporary file.
function M.read_body()
  ngx.req.read_body()
  local body = ngx.req.get_body_data()
  if not body then
    local file = ngx.req.get_body_file()
    body = file and read_file(file) or ""
  end
  return body
end

function M.lower_headers()
  local h = {}
  for k, v in pairs(ngx.req.get_headers(0)) do
    h[k:lower()] = type(v) == "table" and concat(v, ", ") or v
  end
  return h
end

-- Wait S seconds (a number or numeric string; nothing for nil or <= 0).
function M.sleep(s)
  s = tonumber(s)
  if s and s > 0 then ngx.sleep(s) end
end

return M
