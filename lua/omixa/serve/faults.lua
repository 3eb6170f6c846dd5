-- omixa.serve.faults: the faults the stand-in injects when a test asks
-- (inside nginx, LuaJIT, ngx API). The request handler (handler.lua) takes
-- one fault per generation request, builds its answer with the fault's
-- content fields, and sends it through faults.send, which applies the
-- transport fields. Faults are queued through the control API
-- (control.lua: /_omixa/faults).
--
-- A fault is a JSON object; each generation request takes the first queued
-- one (after it has been recorded), or the one in its X-Omixa-Fault header,
-- which wins and leaves the queue alone. Fields, combinable:
--   delay = s                 wait s seconds (ngx.sleep) before anything
--   status = code             answer code; body = "envelope" (default from 400:
--                             {"error":{message,type,code}}, each overridable by
--                             message=, type=, code=) | "html" | "empty" | any
--                             other string sent as is (content_type= sets its
--                             type); below 400 without body: the normal answer
--                             with that code
--   retry_after = "2"|date, retry_after_ms = "1500", headers = {k = v},
--   request_id = "..."        response headers (x-request-id)
--   cut = "before_status"     close without a byte
--       | "mid_headers"       status line, Content-Length, half a header line
--       | "mid_body"          full headers (Content-Length), half the body
--   truncate = true           full headers, all but the last bytes of the body
--   malformed = true          200 with invalid JSON
--   bad_base64 = true         b64_json that is not base64
--   escape_slashes = true     every '/' of the base64 written as '\/'
--   url_only = true           items {"b64_json":null,"url":".../_omixa/images/<id>"}
--                             (url_base = "http://host:port" overrides the origin)
--   raw_image = true          200 whose body is the image (Content-Type image/*)
--   empty_data = true         200 with "data":[]
--   revised_prompt = "..."    added to each item
--   cap_n = k                 at most k images; billed_amount = "..." overrides
--                             usage; no_usage = true leaves usage out
--   image_bytes = k           each PNG image (output_format png or none; the
--                             pixel size as asked, e.g. 4096x4096 for
--                             size = "4K" on a Google model)
--                             padded to k bytes (at most 256 MiB) with an
--                             ancillary chunk of pseudo-random bytes: still a
--                             valid PNG, a large answer without drawing one;
--                             with stream = true, the completed images
--   chunked = true            Transfer-Encoding: chunked, chunk_size (1000)
--                             bytes a piece, flushed one by one
--   trickle = {bytes=k, interval=s}   k bytes every s seconds
--   gzip = true               Content-Encoding: gzip when the client accepts it
--   noise = true              a PNG of noise that does not compress (size = "4K":
--                             4096x4096, about 20 MB): a large image
--   pad = k                   k spaces after the body (at most 256 MiB): a large
--                             response that is still the same JSON document
--   streaming (stream = true on a streaming model): partials = k (1),
--   heartbeats = k (1), interval = s between events, sse_crlf, sse_multiline
--   (one data: line per member), sse_data_only (no event: lines),
--   stream_error (an error event after the first partial),
--   stream_end_early (no completed event, no [DONE]), sse_data_shape (one
--   data: frame with the non-streaming {"created","data":[...]} body)
--
-- A large image delivered slowly, e.g. a 20 MB PNG of 4096x4096 pixels sent
-- 256 KiB every 50 ms (POST it to /_omixa/faults, or send it as the
-- X-Omixa-Fault header, then ask for size = "4K" on a Google model, e.g.
-- gemini-2.0-flash-preview-image-generation; add "raw_image":true for the
-- PNG itself as the body rather than its base64 in JSON):
--   {"image_bytes":20000000,"trickle":{"bytes":262144,"interval":0.05}}

local ngx = ngx
local cjson = require "cjson.safe"
local http = require "omixa.serve.http"
local png = require "omixa.serve.png"
local state = require "omixa.serve.state"

local type, pairs, ipairs, tostring, tonumber, next = type, pairs, ipairs, tostring, tonumber, next
local floor, max, min = math.floor, math.max, math.min
local concat, remove = table.concat, table.remove
local format, sub, find, rep = string.format, string.sub, string.find, string.rep

local M = {}

M.MAX_BYTES = 256 * 1024 * 1024 -- pad, image_bytes

-- Every field a fault may carry: a misspelt one is refused, so that a test
-- never passes because its fault silently did nothing.
local FIELDS = {}
for name in ([[delay status body message type code content_type retry_after retry_after_ms
    headers request_id cut truncate malformed bad_base64 escape_slashes url_only url_base
    noise raw_image empty_data revised_prompt cap_n billed_amount no_usage image_bytes chunked
    chunk_size trickle gzip pad partials heartbeats interval sse_crlf sse_multiline
    sse_data_only stream_error stream_end_early sse_data_shape]]):gmatch("%S+") do
  FIELDS[name] = true
end
local CUTS = { before_status = true, mid_headers = true, mid_body = true }

-- true, or nil and what is wrong with F.
function M.check(f)
  if type(f) ~= "table" or (next(f) ~= nil and f[1] ~= nil) then return nil, "a fault must be a JSON object" end
  for k in pairs(f) do
    if not FIELDS[k] then return nil, "unknown fault field '" .. tostring(k) .. "'" end
  end
  if f.cut ~= nil and not CUTS[f.cut] then
    return nil, "fault field 'cut' must be before_status, mid_headers or mid_body"
  end
  if f.status ~= nil and not (tonumber(f.status) and tonumber(f.status) >= 100 and tonumber(f.status) <= 999) then
    return nil, "fault field 'status' must be an HTTP status code"
  end
  if f.trickle ~= nil and (type(f.trickle) ~= "table" or not tonumber(f.trickle.bytes)) then
    return nil, "fault field 'trickle' must be { bytes = k, interval = s }"
  end
  if f.pad ~= nil and not tonumber(f.pad) then
    return nil, "fault field 'pad' must be a number of bytes"
  end
  if f.image_bytes ~= nil and not (tonumber(f.image_bytes) and tonumber(f.image_bytes) >= 0
      and tonumber(f.image_bytes) <= M.MAX_BYTES) then
    return nil, "fault field 'image_bytes' must be a number of bytes up to " .. M.MAX_BYTES
  end
  if f.headers ~= nil and type(f.headers) ~= "table" then
    return nil, "fault field 'headers' must be an object"
  end
  return true
end

-- Queue the faults of LIST (checked first: none is queued when one is
-- wrong); REPLACE empties the queue before. Returns the queue's length, or
-- nil and a message.
function M.queue(list, replace)
  for i, f in ipairs(list) do
    local ok, ferr = M.check(f)
    if not ok then return nil, format("faults[%d]: %s", i, ferr) end
  end
  if replace then state.faults = {} end
  for _, f in ipairs(list) do state.faults[#state.faults + 1] = f end
  return #state.faults
end

-- The fault for this generation request: its X-Omixa-Fault header, else
-- the first queued one, else none ({}). nil, message for a bad header.
function M.take()
  local hdr = ngx.var.http_x_omixa_fault
  if hdr then
    local f = cjson.decode(hdr)
    local ok, err = M.check(f)
    if not ok then return nil, "X-Omixa-Fault: " .. err end
    return f
  end
  return remove(state.faults, 1) or {}
end

-- Before any answer: the delay, and a cut before the status line.
function M.before(f)
  http.sleep(f.delay)
  if f.cut == "before_status" then return ngx.exit(444) end
end

-- Whether F answers with its own status (an error or a raw body) instead of
-- the service's answer.
function M.own_status(f)
  local status = tonumber(f.status)
  return status ~= nil and (status >= 400 or f.body ~= nil)
end

-- The response for a fault with its own status.
function M.response(f)
  local status = floor(tonumber(f.status))
  local kind = f.body
  if kind == nil then kind = status >= 400 and "envelope" or "empty" end
  if kind == "envelope" then
    return http.new_response(status, http.envelope(status, f.type, f.code, f.message))
  elseif kind == "html" then
    local title = status .. " " .. (http.REASONS[status] or "Error")
    return http.new_response(status, format(
      "<html>\r\n<head><title>%s</title></head>\r\n<body>\r\n<center><h1>%s</h1></center>\r\n"
      .. "<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n",
      title, title), "text/html")
  elseif kind == "empty" then
    return http.new_response(status, "", f.content_type or "application/json")
  end
  local s = tostring(kind)
  return http.new_response(status, s, f.content_type
    or ((find(s, "^%s*[%[{]") and "application/json") or "text/plain"))
end

-- The headers fault F adds to RESP (x-request-id, Retry-After, headers).
function M.add_headers(resp, f)
  resp.headers["x-request-id"] = f.request_id or http.request_id()
  if f.retry_after ~= nil then resp.headers["Retry-After"] = tostring(f.retry_after) end
  if f.retry_after_ms ~= nil then resp.headers["retry-after-ms"] = tostring(f.retry_after_ms) end
  if type(f.headers) == "table" then
    for k, v in pairs(f.headers) do resp.headers[k] = v end
  end
end

-- Sending with faults ----------------------------------------------------------

local function status_line(status)
  return format("HTTP/1.1 %d %s\r\n", status, http.REASONS[status] or "Unknown")
end

-- The header block of RESP as raw text. Content-Length comes first, so a
-- cut inside a later header line still leaves a client (curl, libcurl)
-- knowing that the response was incomplete.
local function header_block(resp, content_length)
  local lines = { status_line(resp.status) }
  if content_length then lines[#lines + 1] = "Content-Length: " .. content_length .. "\r\n" end
  lines[#lines + 1] = "Content-Type: " .. resp.ctype .. "\r\n"
  lines[#lines + 1] = "Server: omixa-serve\r\n"
  lines[#lines + 1] = "Date: " .. ngx.http_time(ngx.time()) .. "\r\n"
  for k, v in pairs(resp.headers) do
    if type(v) == "table" then
      for _, x in ipairs(v) do lines[#lines + 1] = k .. ": " .. tostring(x) .. "\r\n" end
    else
      lines[#lines + 1] = k .. ": " .. tostring(v) .. "\r\n"
    end
  end
  lines[#lines + 1] = "Connection: close\r\n\r\n"
  return concat(lines)
end

-- Write raw bytes on the connection, then drop it (no more response).
local function raw_then_close(data)
  ngx.flush(true)
  local sock, err = ngx.req.socket(true)
  if not sock then
    ngx.log(ngx.ERR, "omixa serve: raw socket: ", err)
    return ngx.exit(444)
  end
  if data ~= "" then sock:send(data) end
  return ngx.exit(444)
end

-- Send RESP shaped by fault F: transport faults (pad, cut, truncate,
-- chunked, trickle, gzip) apply to whatever response was built.
function M.send(resp, f)
  local body = resp.body
  if tonumber(f.pad) and tonumber(f.pad) > 0 then
    body = body .. rep(" ", min(M.MAX_BYTES, floor(tonumber(f.pad))))
  end
  if f.gzip and find(ngx.var.http_accept_encoding or "", "gzip", 1, true) and body ~= "" then
    body = png.gzip(body)
    resp.headers["Content-Encoding"] = "gzip"
  end
  if f.cut == "mid_headers" then
    -- status line, Content-Length, then half a header line: no blank line
    local head = header_block(resp, #body)
    local at = find(head, "Content-Type: ", 1, true)
    return raw_then_close(sub(head, 1, at + 17))
  end
  if f.cut == "mid_body" or f.truncate then
    local keep = f.cut == "mid_body" and floor(#body / 2) or max(0, #body - max(1, min(64, floor(#body / 4))))
    return raw_then_close(header_block(resp, #body) .. sub(body, 1, keep))
  end
  local trickle = type(f.trickle) == "table" and f.trickle or nil
  if not f.chunked and not trickle then
    resp.body = body
    return http.send_plain(resp)
  end
  http.set_headers(resp)
  if not f.chunked then ngx.header["Content-Length"] = #body end
  local step = trickle and max(1, floor(tonumber(trickle.bytes) or 1))
    or max(1, floor(tonumber(f.chunk_size) or 1000))
  local interval = trickle and tonumber(trickle.interval) or 0
  local i = 1
  if #body == 0 then ngx.send_headers() end
  while i <= #body do
    ngx.print(sub(body, i, i + step - 1))
    local ok, err = ngx.flush(true)
    if not ok then ngx.log(ngx.INFO, "omixa serve: client went away: ", err); return ngx.exit(444) end
    i = i + step
    if i <= #body then http.sleep(interval) end
  end
  return ngx.exit(ngx.OK)
end

return M
