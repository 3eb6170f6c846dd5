-- omixa_stream — GET /image/stream?prompt=... for nginx with the Lua module:
-- asks the service for a stream of server-sent events and relays each
-- partial image to its own client as it arrives, as text/event-stream. It
-- never blocks the worker: omixa builds the request (client:prepare) and
-- parses the stream (client:stream_parser); the exchange with the service
-- is an ngx cosocket (ngx.socket.tcp), read with omixa_http1 (chunked,
-- Content-Length or until close), so the worker serves everything else
-- while it waits. The images of an answer that gives them by url only are
-- read over cosockets too (omixa_fetch, given to client:parse). See
-- nginx.conf next to this file.
--
--   location = /image/stream {
--     lua_check_client_abort on;   # a client that leaves ends the exchange
--     content_by_lua_block { require("omixa_stream").handle() }
--   }
--
-- Query: prompt (required), aspect_ratio, size, format, model (a streaming
-- one). A bad request is a plain 400 (a config error a 500) before any
-- event; after that the answer is 200 text/event-stream with, in order:
--
--   : omixa                        a comment: the request was accepted
--   event: partial                 per partial image, as the service sends it
--   data: {"index":1,"mime":"image/png","bytes":1234,"b64":"iVBOR..."}
--   event: image                   per final image
--   data: {"index":1,"mime":"image/png","width":512,"height":512,"bytes":5678,"b64":"..."}
--   event: done
--   data: {"images":1,"partials":2,"model":"...","request_id":"...","billed_amount":"0.040000"}
--
-- or, instead of the images and done, when it fails at any point:
--
--   event: error
--   data: {"kind":"api","message":"...","status":200,"retryable":false,"maybe_billed":false,...}
--
-- with the fields of omixa's error object (kind, message, status, type, code,
-- request_id, retry_after, retryable, maybe_billed). Nothing is retried here:
-- the error says whether a retry is sensible. `: keep-alive` comments keep
-- the connection to the client alive while the service is silent.
--
-- The client comes from the environment (OMIXA_API_KEY, OMIXA_BASE_URL,
-- OMIXA_MODEL: list them with `env` in nginx.conf); one per worker. For
-- https the certificate is checked against lua_ssl_trusted_certificate.

local omixa = require "omixa"
local http1 = require "omixa_http1"
local omixa_fetch = require "omixa_fetch"
local cjson = require "cjson.safe"

local ngx = ngx
local pairs, ipairs, pcall, tostring, type = pairs, ipairs, pcall, tostring, type
local concat = table.concat
local find, sub, lower, format = string.find, string.sub, string.lower, string.format

local M = {}

local CONNECT_TIMEOUT = 10000  -- ms
local SEND_TIMEOUT = 60000     -- ms
local QUIET = 15               -- s without a byte from the service: a keep-alive comment to our client
local MAX_QUIET = 300          -- s without a byte from the service: a timeout (an image can take minutes)
local READ_SIZE = 65536
local MAX_BODY = 256 * 1024 * 1024  -- a non-stream answer, held whole for client:parse

local client

local function fail(status, message)
  ngx.status = status
  ngx.header["Content-Type"] = "text/plain; charset=utf-8"
  ngx.say(message)
  return ngx.exit(status)
end

-- Write to our client now; false once it is gone.
local function send(text)
  local ok = ngx.print(text)
  if ok then ok = ngx.flush(true) end
  return ok == 1 or ok == true
end

-- One event: NAME and the JSON object T, plus B64 (base64 never needs JSON
-- escaping, and lua-cjson would write each '/' as '\/').
local function event(name, t, b64)
  local json = cjson.encode(t)
  if b64 then json = sub(json, 1, -2) .. ',"b64":"' .. b64 .. '"}' end
  return "event: " .. name .. "\ndata: " .. json .. "\n\n"
end

local function image_event(name, index, bytes, extra)
  local t = { index = index, bytes = #bytes }
  local s = omixa.sniff(bytes)
  if s then t.mime, t.width, t.height = s.mime, s.width, s.height end
  for k, v in pairs(extra or {}) do t[k] = v end
  return event(name, t, ngx.encode_base64(bytes))
end

local ERROR_FIELDS = { "kind", "message", "status", "type", "code", "request_id", "retry_after",
                       "retryable", "maybe_billed", "attempts" }

local function error_event(err)
  local t = {}
  for _, k in ipairs(ERROR_FIELDS) do
    if type(err[k]) ~= "table" and type(err[k]) ~= "function" then t[k] = err[k] end
  end
  return event("error", t)
end

local function request_id(headers)
  return headers and (headers["x-request-id"] or headers["request-id"] or headers["x-omixa-request-id"])
end

local split_url = omixa_fetch.split_url -- scheme, host, port, path, authority
-- url-only items of a whole answer: read over a cosocket, as the stream is
local fetch = omixa_fetch.new{ max_bytes = MAX_BODY }

-- The HTTP/1.1 request text for omixa's prepared request.
local function request_text(req, path, authority)
  local lines = { format("%s %s HTTP/1.1", req.method, path), "Host: " .. authority,
                  "Content-Length: " .. #req.body, "Connection: close" }
  local skip = { host = true, ["content-length"] = true, connection = true, ["transfer-encoding"] = true }
  for name, value in pairs(req.headers) do
    value = tostring(value)
    if find(name, "[\r\n:]") or find(value, "[\r\n]") then return nil, "not a valid header: " .. name end
    if not skip[lower(name)] then lines[#lines + 1] = name .. ": " .. value end
  end
  lines[#lines + 1] = ""
  lines[#lines + 1] = req.body
  return concat(lines, "\r\n")
end

-- Our own transport's failures, with the fields of an omixa error: the
-- outcome is unknown (maybe billed) once the request was sent and no status
-- said otherwise.
local RETRY_STATUS = { [408] = true, [409] = true, [429] = true, [500] = true, [502] = true,
                       [503] = true, [504] = true }
local function transport_error(kind, message, sent, status)
  local unknown = sent and (status == nil or (status >= 200 and status <= 299))
  return { kind = kind, message = message, status = status, attempts = 1, maybe_billed = unknown,
           retryable = unknown or not sent or (kind == "api" and RETRY_STATUS[status] == true) }
end

-- Send REQ and relay its answer as events. Returns nothing once it sent the
-- images (or our client left), else the error to tell our client.
local function relay(req)
  local scheme, host, port, path, authority = split_url(req.url)
  if not scheme then return transport_error("config", "not an http(s) URL: " .. req.url, false) end
  local text, terr = request_text(req, path, authority)
  if not text then return transport_error("config", terr, false) end

  local sock = ngx.socket.tcp()
  sock:settimeouts(CONNECT_TIMEOUT, SEND_TIMEOUT, QUIET * 1000)
  local ok, err = sock:connect(host, port)
  if not ok then return transport_error("network", format("connect to %s: %s", authority, err), false) end
  if scheme == "https" then
    ok, err = sock:sslhandshake(nil, host, true)
    if not ok then
      sock:close()
      return { kind = "tls", message = format("TLS with %s: %s", authority, err), attempts = 1,
               retryable = false, maybe_billed = false }
    end
  end
  ok, err = sock:send(text)
  if not ok then
    sock:close()
    return transport_error("network", "sending the request: " .. err, false)
  end

  local res = http1.response()
  local out = {} -- events the parser's callbacks made, sent after each feed
  local parser, body, size = nil, {}, 0
  local decided, quiet = false, 0
  local function stop(e)
    sock:close()
    if parser then parser:close() end
    return e
  end
  while not res:done() do
    local data, rerr = sock:receiveany(READ_SIZE)
    if data then
      quiet = 0
      local pieces, perr = res:feed(data)
      if not pieces then return stop(transport_error("protocol", perr, true, res.status)) end
      if res.status and not decided then -- the head is in: a stream, or a whole answer?
        decided = true
        if res.status >= 200 and res.status <= 299
            and find(lower(res.headers["content-type"] or ""), "^%s*text/event%-stream") then
          parser = client:stream_parser{
            on_partial = function(bytes, index)
              out[#out + 1] = image_event("partial", index, bytes)
            end,
            on_event = function(ev)
              ngx.log(ngx.DEBUG, "omixa_stream: event ", ev.event)
            end,
          }
        end
      end
      for i = 1, #pieces do
        if parser then
          local fed, ferr = parser:feed(pieces[i])
          if not fed then
            -- an error event, bad base64, an event over max_response_bytes
            ferr.status = ferr.status or res.status
            ferr.request_id = ferr.request_id or request_id(res.headers)
            ferr.maybe_billed = ferr.kind ~= "api"
            ferr.retryable = ferr.maybe_billed
            send(concat(out))
            return stop(ferr)
          end
        else
          size = size + #pieces[i]
          if size > MAX_BODY then
            return stop(transport_error("too_large", "the answer is over " .. MAX_BODY .. " bytes", true, res.status))
          end
          body[#body + 1] = pieces[i]
        end
      end
      if #out > 0 then
        local text_out = concat(out)
        out = {}
        if not send(text_out) then return stop() end -- our client left
      end
    elseif rerr == "timeout" then
      quiet = quiet + QUIET
      if quiet >= MAX_QUIET then
        return stop(transport_error("timeout", format("no answer for %d s", quiet), true, res.status))
      end
      if not send(": keep-alive\n\n") then return stop() end
    elseif rerr == "closed" then
      local ended, why = res:eof()
      if not ended then
        if res.status and res.status >= 300 then -- the status said it: the service did no work
          return stop(transport_error("api", format("HTTP %d, then %s", res.status, why), true, res.status))
        end
        return stop(transport_error("network", why, true, res.status))
      end
    else
      return stop(transport_error("network", "reading the answer: " .. tostring(rerr), true, res.status))
    end
  end
  sock:close()

  local images, info
  if parser then
    images, info = parser:finish()
    if not images then
      info.status = info.status or res.status
      info.request_id = info.request_id or request_id(res.headers)
      info.maybe_billed = info.kind ~= "api"
      info.retryable = info.maybe_billed
      return info
    end
    info.request_id = info.request_id or request_id(res.headers)
  else
    -- Not a stream (an error status, or a service that answered whole);
    -- images given by url only are read over a cosocket too.
    images, info = client:parse(res.status, concat(body), res.headers, fetch)
    if not images then return info end
    info.partials = 0
  end
  for i, bytes in ipairs(images) do
    local ii = info.images and info.images[i] or {}
    if not send(image_event("image", i, bytes, { revised_prompt = ii.revised_prompt })) then return end
  end
  send(event("done", { images = #images, partials = info.partials, model = info.model,
                       request_id = info.request_id, billed_amount = info.billed_amount }))
end

function M.handle()
  client = client or omixa.new()
  local args = ngx.req.get_uri_args()
  local request = { prompt = args.prompt, aspect_ratio = args.aspect_ratio, size = args.size,
                    output_format = args.format, model = args.model }
  for k, v in pairs(request) do
    if type(v) ~= "string" then request[k] = nil end -- absent or repeated
  end
  local ok, req, perr = pcall(client.prepare, client, request, { stream = true })
  if not ok then return fail(400, tostring(req)) end -- misuse, a model that does not stream
  if not req then return fail(perr.kind == "budget" and 402 or 500, tostring(perr)) end

  ngx.status = 200
  ngx.header["Content-Type"] = "text/event-stream"
  ngx.header["Cache-Control"] = "no-cache"
  ngx.header["X-Accel-Buffering"] = "no" -- for an nginx proxy in front of this one
  if not send(": omixa\n\n") then return end
  local err = relay(req)
  if err then
    ngx.log(ngx.WARN, "omixa_stream: ", err.kind, " error", err.status and " " .. err.status or "", ": ",
      tostring(err.message))
    send(error_event(err))
  end
end

return M
