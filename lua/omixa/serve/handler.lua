-- omixa.serve.handler: what nginx runs for `omixa serve` (LuaJIT, ngx API).
-- It speaks the service's documented protocol on its own (it never loads the
-- client's wire code), validates with the shared catalog (omixa.schema), and
-- injects the faults a test asks for through the control API under /_omixa/.
-- nginx runs one process (master_process off), so the state below -- fault
-- queue, recorded requests, image caches -- is plain Lua in this one VM.
--
-- Routes:
--   POST /api/v1/images/generations   the service (405 for other methods)
--   GET  /api/v1/models               the catalog, as {"object":"list","data":[...]}
--   GET|POST|PUT|DELETE /_omixa/faults   list | append | replace | clear
--   GET|DELETE /_omixa/requests       generation requests seen | forget them
--   GET|DELETE /_omixa/fetches        GETs of /_omixa/images/* seen | forget
--   POST /_omixa/reset                clear faults, requests, fetches, images
--   GET  /_omixa/images/<id>          images of url_only responses
--   GET  /_omixa/health               {"ok":true}
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

local ngx = ngx
local cjson = require "cjson.safe"
local png = require "omixa.serve.png"

local type, pairs, ipairs, tostring, tonumber, next = type, pairs, ipairs, tostring, tonumber, next
local floor, max, min, random = math.floor, math.max, math.min, math.random
local concat, remove = table.concat, table.remove
local format, sub, gsub, find, rep = string.format, string.sub, string.gsub, string.find, string.rep

local has_schema, schema = pcall(require, "omixa.schema")
if not has_schema then schema = nil end
local has_models, models = pcall(require, "omixa.models")
if not has_models then
  -- Until the catalog is there: the five documented models, enough to size
  -- images and bill them.
  models = {
    ["gemini-2.0-flash-preview-image-generation"] = { family = "google", price = "0.040000", streaming = true },
    ["imagen-4.0-generate-001"] = { family = "google", price = "0.040000", streaming = false },
    ["imagen-4.0-fast-generate-001"] = { family = "google", streaming = false },
    ["gpt-image-1.5"] = { family = "gpt", price = "0.033000", streaming = true },
    ["MAI-Image-2.5"] = { family = "gpt", price = "0.033000", streaming = true },
  }
end

local GEN_PATH = "/api/v1/images/generations"
local MODELS_PATH = "/api/v1/models"
local MAX_RECORDED_BYTES = 512 * 1024 * 1024 -- oldest recorded requests go first
local MAX_STORED_IMAGES = 256

local M = {}

local cfg = { key = nil }
local faults = {}          -- queue of fault tables
local requests = {}        -- recorded generation requests
local recorded_bytes = 0
local fetches = {}         -- recorded GETs of /_omixa/images/*
local images = {}          -- id -> { bytes =, mime = }
local image_ids = {}       -- ids in insertion order, for eviction
local png_cache = {}       -- "w:h:seed" -> png bytes
local png_order = {}
local PNG_CACHE_MAX = 24
local fixtures = {}

local function here()
  local src = debug.getinfo(1, "S").source
  return (src:sub(1, 1) == "@" and src:sub(2) or src):match("^(.*)/[^/]*$") or "."
end

local function read_file(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("*a")
  f:close()
  return s
end

-- Called from init_by_lua with { key_file = path|nil, signing_secret_file =
-- path|nil, scheme =, port =, watch_pid = pid|nil }.
function M.init(opts)
  opts = opts or {}
  cfg.scheme = opts.scheme or "http"
  cfg.port = opts.port
  cfg.watch_pid = tonumber(opts.watch_pid)
  local function secret(path, what)
    local k = read_file(path)
    k = k and k:gsub("^%s+", ""):gsub("%s+$", "")
    if not k or k == "" then error("omixa serve: cannot read " .. what .. " from " .. path) end
    return k
  end
  if opts.key_file then cfg.key = secret(opts.key_file, "a key") end
  if opts.signing_secret_file then cfg.signing_secret = secret(opts.signing_secret_file, "a signing secret") end
  local dir = here() .. "/fixtures/"
  fixtures.jpeg = read_file(dir .. "image.jpg")
  fixtures.webp = read_file(dir .. "image.webp")
  if not (fixtures.jpeg and fixtures.webp) then
    local embedded = require "omixa.serve.fixtures_embedded"
    fixtures.jpeg = fixtures.jpeg or embedded.jpeg
    fixtures.webp = fixtures.webp or embedded.webp
  end
  random() -- the launcher seeds through math.randomseed in init_by_lua
end

-- With watch_pid: stop this nginx (SIGTERM to itself, a clean fast
-- shutdown) once that process is gone, so a test run that dies never leaves
-- a stand-in behind.
function M.init_worker()
  if not cfg.watch_pid then return end
  local ffi = require "ffi"
  pcall(ffi.cdef, "int kill(int pid, int sig); int getpid(void);")
  local ESRCH, SIGTERM = 3, 15
  local function check(premature)
    if premature then return end
    if ffi.C.kill(cfg.watch_pid, 0) ~= 0 and ffi.errno() == ESRCH then
      ngx.log(ngx.WARN, "omixa serve: watched process ", cfg.watch_pid, " is gone; stopping")
      ffi.C.kill(ffi.C.getpid(), SIGTERM)
    end
  end
  ngx.timer.every(1, check)
end

-- JSON text ------------------------------------------------------------------

-- A JSON string literal that leaves '/' alone (cjson writes "\/").
local function jstr(s)
  local out = cjson.encode(tostring(s))
  return (gsub(out, "\\/", "/"))
end

local function encode(v)
  if type(v) == "table" and next(v) == nil then return "[]" end
  return cjson.encode(v)
end

-- Responses ------------------------------------------------------------------

local REASONS = {
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

local function envelope(status, etype, code, message)
  local d = ENVELOPES[status]
    or (status >= 500 and { "server_error", "server_error", "Server error." })
    or { "invalid_request_error", "error", "Request failed." }
  return format('{"error":{"message":%s,"type":%s,"code":%s}}',
    jstr(message or d[3]), jstr(etype or d[1]), jstr(code or d[2]))
end

local function request_id()
  local t = {}
  for i = 1, 24 do t[i] = format("%x", random(0, 15)) end
  return "req_" .. concat(t)
end

local function new_response(status, body, ctype)
  return { status = status, body = body or "", ctype = ctype or "application/json",
           headers = {} }
end

local function error_response(status, message, code, etype)
  return new_response(status, envelope(status, etype, code, message))
end

-- Plain send through nginx: headers, then the whole body with a
-- Content-Length (so nginx does not chunk it).
local function set_headers(resp)
  ngx.status = resp.status
  ngx.header["Content-Type"] = resp.ctype
  for k, v in pairs(resp.headers) do ngx.header[k] = v end
end

local function send_plain(resp)
  set_headers(resp)
  ngx.header["Content-Length"] = #resp.body
  if resp.body ~= "" and ngx.req.get_method() ~= "HEAD" then ngx.print(resp.body) end
  return ngx.exit(resp.status >= 200 and ngx.OK or resp.status)
end

local function simple(status, message, code, extra)
  local resp = error_response(status, message, code)
  resp.headers["x-request-id"] = request_id()
  for k, v in pairs(extra or {}) do resp.headers[k] = v end
  return send_plain(resp)
end

local function send_json(value)
  return send_plain(new_response(200, encode(value)))
end

-- Images ---------------------------------------------------------------------

local GOOGLE_SIZES = { ["0.5K"] = 512, ["1K"] = 1024, ["2K"] = 2048, ["4K"] = 4096 }

-- Pixel size for a request: Google family from size bucket and aspect ratio,
-- GPT family from "WxH" ("auto" or none: 1024x1024).
local function dimensions(req, family)
  local size = type(req.size) == "string" and req.size or nil
  local w, h
  if size then w, h = size:match("^(%d+)x(%d+)$") end
  if w then
    w, h = tonumber(w), tonumber(h)
    if w >= 1 and h >= 1 and w <= 8192 and h <= 8192 then return w, h end
  end
  if family == "gpt" then return 1024, 1024 end
  local long = GOOGLE_SIZES[size or "1K"] or 1024
  local a, b = 1, 1
  if type(req.aspect_ratio) == "string" then
    local x, y = req.aspect_ratio:match("^(%d+):(%d+)$")
    if x and tonumber(x) > 0 and tonumber(y) > 0 then a, b = tonumber(x), tonumber(y) end
  end
  if a >= b then
    return long, max(1, floor(long * b / a + 0.5))
  end
  return max(1, floor(long * a / b + 0.5)), long
end

local function make_png(w, h, seed, noise)
  local key = w .. ":" .. h .. ":" .. seed .. (noise and ":noise" or "")
  local p = png_cache[key]
  if p then return p end
  p = png.render(w, h, seed, noise)
  png_cache[key] = p
  png_order[#png_order + 1] = key
  if #png_order > PNG_CACHE_MAX then
    png_cache[remove(png_order, 1)] = nil
  end
  return p
end

-- The image for a request: bytes, mime, w, h.
local function image_for(req, family, variant, noise)
  local fmt = req.output_format
  if fmt == "jpeg" then return fixtures.jpeg, "image/jpeg" end
  if fmt == "webp" then return fixtures.webp, "image/webp" end
  local w, h = dimensions(req, family)
  local seed = png.hash(type(req.prompt) == "string" and req.prompt or "")
  if variant then seed = (seed + variant * 7919) % 4294967296 end
  return make_png(w, h, seed, noise), "image/png", w, h
end

local function store_image(bytes, mime)
  local id = format("%x%x", floor(ngx.now() * 1000), random(0, 0x7fffffff))
  images[id] = { bytes = bytes, mime = mime }
  image_ids[#image_ids + 1] = id
  if #image_ids > MAX_STORED_IMAGES then images[remove(image_ids, 1)] = nil end
  return id
end

-- Money: six-decimal strings <-> integer micro-dollars.
local function micros(price)
  if type(price) ~= "string" then return 0 end
  local i, f = price:match("^(%d+)%.(%d+)$")
  if not i then i, f = price:match("^(%d+)$"), "0" end
  if not i then return 0 end
  f = sub(f .. "000000", 1, 6)
  return tonumber(i) * 1000000 + tonumber(f)
end

local function amount(m)
  return format("%d.%06d", floor(m / 1000000), m % 1000000)
end

-- Requests -------------------------------------------------------------------

local function read_body()
  ngx.req.read_body()
  local body = ngx.req.get_body_data()
  if not body then
    local file = ngx.req.get_body_file()
    body = file and read_file(file) or ""
  end
  return body
end

local function lower_headers()
  local h = {}
  for k, v in pairs(ngx.req.get_headers(0)) do
    h[k:lower()] = type(v) == "table" and concat(v, ", ") or v
  end
  return h
end

local function record(list, method, body)
  local entry = { method = method, uri = ngx.var.request_uri, headers = lower_headers(),
                  body = body or "" }
  list[#list + 1] = entry
  if list == requests then
    recorded_bytes = recorded_bytes + #entry.body
    while recorded_bytes > MAX_RECORDED_BYTES and #requests > 1 do
      recorded_bytes = recorded_bytes - #remove(requests, 1).body
    end
  end
  return entry
end

local function authorized()
  if not cfg.key then return true end
  local auth = ngx.var.http_authorization
  return auth == "Bearer " .. cfg.key
end

-- Request signing (when the workspace enforces it): X-Omixa-Timestamp and
-- X-Omixa-Signature: sha256=<hex hmac_sha256(secret, ts "." METHOD "." path "." body)>.
-- HMAC comes from the libcrypto nginx is linked with.
local hmac_sha256
do
  local ffi = require "ffi"
  pcall(ffi.cdef, [[
    const void *EVP_sha256(void);
    unsigned char *HMAC(const void *evp_md, const void *key, int key_len,
                        const unsigned char *d, size_t n, unsigned char *md, unsigned int *md_len);
  ]])
  function hmac_sha256(key, data)
    local md = ffi.new("unsigned char[64]")
    local len = ffi.new("unsigned int[1]")
    if ffi.C.HMAC(ffi.C.EVP_sha256(), key, #key, data, #data, md, len) == nil then return nil end
    return (gsub(ffi.string(md, len[0]), ".", function(c) return format("%02x", c:byte()) end))
  end
end

local SIGNATURE_WINDOW = 300 -- seconds either side of the server's clock

local function signature_error(method, body)
  if not cfg.signing_secret then return nil end
  local ts, sig = ngx.var.http_x_omixa_timestamp, ngx.var.http_x_omixa_signature
  if not ts or not ts:match("^%d+$") then return "Missing or invalid X-Omixa-Timestamp." end
  if math.abs(ngx.time() - tonumber(ts)) > SIGNATURE_WINDOW then
    return "X-Omixa-Timestamp is too far from the server's clock."
  end
  local path = ngx.var.request_uri:match("^[^?]*")
  local ok, want = pcall(hmac_sha256, cfg.signing_secret, ts .. "." .. method .. "." .. path .. "." .. body)
  if not ok or not want then return "The server cannot check signatures (no HMAC-SHA256)." end
  if sig ~= "sha256=" .. want then return "Invalid X-Omixa-Signature." end
  return nil
end

-- Sending with faults ----------------------------------------------------------

local function status_line(status)
  return format("HTTP/1.1 %d %s\r\n", status, REASONS[status] or "Unknown")
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

local function sleep(s)
  s = tonumber(s)
  if s and s > 0 then ngx.sleep(s) end
end

local MAX_PAD = 256 * 1024 * 1024

-- Send RESP shaped by fault F: transport faults (pad, cut, truncate,
-- chunked, trickle, gzip) apply to whatever response was built.
local function send(resp, f)
  local body = resp.body
  if tonumber(f.pad) and tonumber(f.pad) > 0 then
    body = body .. rep(" ", min(MAX_PAD, floor(tonumber(f.pad))))
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
    return send_plain(resp)
  end
  set_headers(resp)
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
    if i <= #body then sleep(interval) end
  end
  return ngx.exit(ngx.OK)
end

-- The response for a fault with its own status (an error or a raw body).
local function fault_response(f)
  local status = floor(tonumber(f.status))
  local kind = f.body
  if kind == nil then kind = status >= 400 and "envelope" or "empty" end
  if kind == "envelope" then
    return new_response(status, envelope(status, f.type, f.code, f.message))
  elseif kind == "html" then
    local title = status .. " " .. (REASONS[status] or "Error")
    return new_response(status, format(
      "<html>\r\n<head><title>%s</title></head>\r\n<body>\r\n<center><h1>%s</h1></center>\r\n"
      .. "<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n",
      title, title), "text/html")
  elseif kind == "empty" then
    return new_response(status, "", f.content_type or "application/json")
  end
  local s = tostring(kind)
  return new_response(status, s, f.content_type
    or ((find(s, "^%s*[%[{]") and "application/json") or "text/plain"))
end

-- Generation -------------------------------------------------------------------

local function validate(req)
  if type(req) ~= "table" then return nil, "request body must be a JSON object" end
  local copy = {}
  for k, v in pairs(req) do copy[k] = v end
  if copy.stream ~= nil then
    if type(copy.stream) ~= "boolean" then return nil, "field 'stream' must be a boolean" end
    copy.stream = nil
  end
  if schema then return schema.check_wire(copy) end
  if type(req.model) ~= "string" or req.model == "" then return nil, "field 'model' is required" end
  if type(req.prompt) ~= "string" or req.prompt == "" then return nil, "field 'prompt' is required" end
  if req.n ~= nil and (type(req.n) ~= "number" or req.n ~= floor(req.n) or req.n < 1 or req.n > 10) then
    return nil, "field 'n' must be an integer from 1 to 10"
  end
  return true
end

local function b64_of(bytes, f)
  if f.bad_base64 then return "!!not*base64@@" end
  local b = ngx.encode_base64(bytes)
  if f.escape_slashes then b = gsub(b, "/", "\\/") end
  return b
end

local function count_of(req, f)
  local n = tonumber(req.n) or 1
  n = max(1, floor(n))
  if tonumber(f.cap_n) then n = min(n, max(0, floor(tonumber(f.cap_n)))) end
  return n
end

local function usage_json(spec, n, f)
  if f.no_usage then return nil end
  local billed = type(f.billed_amount) == "string" and f.billed_amount
    or amount(micros(spec and spec.price) * n)
  return format('{"billed_amount":%s}', jstr(billed))
end

local function success_response(req, spec, f)
  local family = spec and spec.family or "google"
  local bytes, mime = image_for(req, family, nil, f.noise)
  if f.raw_image then
    return new_response(200, bytes, mime)
  end
  if f.malformed then
    return new_response(200, format('{"created":%d,"data":[{"b64_json":"%s",', ngx.time(),
      sub(ngx.encode_base64(sub(bytes, 1, 60)), 1, 40)))
  end
  local n = count_of(req, f)
  local items = {}
  if not f.empty_data then
    local b64 = b64_of(bytes, f)
    local extra = type(f.revised_prompt) == "string" and (',"revised_prompt":' .. jstr(f.revised_prompt)) or ""
    for i = 1, n do
      if f.url_only then
        local base = type(f.url_base) == "string" and f.url_base
          or (ngx.var.scheme .. "://" .. (ngx.var.http_host or ("127.0.0.1:" .. ngx.var.server_port)))
        items[i] = format('{"b64_json":null,"url":%s%s}',
          jstr(base .. "/_omixa/images/" .. store_image(bytes, mime)), extra)
      else
        items[i] = '{"b64_json":"' .. b64 .. '","url":null' .. extra .. '}'
      end
    end
  end
  local usage = usage_json(spec, f.empty_data and 0 or n, f)
  return new_response(tonumber(f.status) and floor(tonumber(f.status)) or 200,
    format('{"created":%d,"data":[%s]%s}', ngx.time(), concat(items, ","),
      usage and (',"usage":' .. usage) or ""))
end

-- Server-sent events for stream = true on a streaming model: for each image,
-- partial_image events then a completed event, then data: [DONE].
local function send_stream(req, spec, f)
  local nl = f.sse_crlf and "\r\n" or "\n"
  local family = spec and spec.family or "google"
  local n = count_of(req, f)
  local partials = tonumber(f.partials) or 1
  local heartbeats = tonumber(f.heartbeats) or 1
  local interval = tonumber(f.interval) or 0
  local created = ngx.time()
  ngx.status = 200
  ngx.header["Content-Type"] = "text/event-stream"
  ngx.header["Cache-Control"] = "no-cache"
  ngx.header["x-request-id"] = f.request_id or request_id()
  if type(f.headers) == "table" then
    for k, v in pairs(f.headers) do ngx.header[k] = v end
  end
  -- members: list of "key":value texts; one data: line, or one per member.
  local function event(name, members)
    local lines = {}
    if name and not f.sse_data_only then lines[#lines + 1] = "event: " .. name .. nl end
    if f.sse_multiline then
      for i, m in ipairs(members) do
        lines[#lines + 1] = "data: " .. (i == 1 and "{" or "") .. m
          .. (i == #members and "}" or ",") .. nl
      end
    else
      lines[#lines + 1] = "data: {" .. concat(members, ",") .. "}" .. nl
    end
    lines[#lines + 1] = nl
    ngx.print(concat(lines))
    local ok = ngx.flush(true)
    if not ok then return ngx.exit(444) end
    sleep(interval)
  end
  for _ = 1, heartbeats do
    ngx.print(": keep-alive" .. nl .. nl)
    ngx.flush(true)
    sleep(interval)
  end
  if f.sse_data_shape then
    -- one frame carrying the non-streaming {"created","data":[...]} shape
    ngx.print("data: " .. success_response(req, spec, f).body .. nl .. nl .. "data: [DONE]" .. nl .. nl)
    ngx.flush(true)
    return ngx.exit(ngx.OK)
  end
  local usage = usage_json(spec, n, f)
  for i = 1, n do
    local w, h
    for k = 0, partials - 1 do
      local bytes, _, pw, ph = image_for(req, family, k + 1)
      w, h = pw, ph
      event("image_generation.partial_image", {
        '"type":"image_generation.partial_image"',
        '"b64_json":"' .. b64_of(bytes, f) .. '"',
        '"partial_image_index":' .. k,
        '"created_at":' .. created,
        '"output_format":' .. jstr(req.output_format or "png") })
      if f.stream_error then
        event("error", { '"error":' .. sub(envelope(500, "server_error", "stream_error",
          "The provider failed while generating."), 10, -2) })
        return ngx.exit(ngx.OK)
      end
    end
    if f.stream_end_early then return ngx.exit(ngx.OK) end
    local bytes, _, fw, fh = image_for(req, family)
    w, h = fw or w, fh or h
    local members = {
      '"type":"image_generation.completed"',
      '"b64_json":"' .. b64_of(bytes, f) .. '"',
      '"created_at":' .. created,
      '"output_format":' .. jstr(req.output_format or "png") }
    if w then members[#members + 1] = '"size":"' .. w .. "x" .. h .. '"' end
    if type(f.revised_prompt) == "string" then members[#members + 1] = '"revised_prompt":' .. jstr(f.revised_prompt) end
    if i == n and usage then members[#members + 1] = '"usage":' .. usage end
    event("image_generation.completed", members)
  end
  ngx.print("data: [DONE]" .. nl .. nl)
  ngx.flush(true)
  return ngx.exit(ngx.OK)
end

-- Every field a fault may carry: a misspelt one is refused, so that a test
-- never passes because its fault silently did nothing.
local FAULT_FIELDS = {}
for name in ([[delay status body message type code content_type retry_after retry_after_ms
    headers request_id cut truncate malformed bad_base64 escape_slashes url_only url_base
    noise raw_image empty_data revised_prompt cap_n billed_amount no_usage chunked chunk_size
    trickle gzip pad partials heartbeats interval sse_crlf sse_multiline sse_data_only
    stream_error stream_end_early sse_data_shape]]):gmatch("%S+") do
  FAULT_FIELDS[name] = true
end
local CUTS = { before_status = true, mid_headers = true, mid_body = true }

local function check_fault(f)
  if type(f) ~= "table" or (next(f) ~= nil and f[1] ~= nil) then return nil, "a fault must be a JSON object" end
  for k in pairs(f) do
    if not FAULT_FIELDS[k] then return nil, "unknown fault field '" .. tostring(k) .. "'" end
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
  if f.headers ~= nil and type(f.headers) ~= "table" then
    return nil, "fault field 'headers' must be an object"
  end
  return true
end

local function take_fault()
  local hdr = ngx.var.http_x_omixa_fault
  if hdr then
    local f = cjson.decode(hdr)
    local ok, err = check_fault(f)
    if not ok then return nil, "X-Omixa-Fault: " .. err end
    return f
  end
  return remove(faults, 1) or {}
end

local function generation()
  local method = ngx.req.get_method()
  local body = read_body()
  record(requests, method, body)
  if method ~= "POST" then
    return simple(405, "Use POST for " .. GEN_PATH .. ".", "method_not_allowed", { Allow = "POST" })
  end
  local f, ferr = take_fault()
  if not f then return simple(400, ferr, "bad_fault") end

  sleep(f.delay)
  if f.cut == "before_status" then return ngx.exit(444) end

  local resp
  local req, spec
  if tonumber(f.status) and (tonumber(f.status) >= 400 or f.body ~= nil) then
    resp = fault_response(f)
  elseif not authorized() then
    resp = error_response(401, "Invalid API key.", "invalid_api_key", "authentication_error")
  elseif signature_error(method, body) then
    resp = error_response(401, signature_error(method, body), "invalid_signature", "authentication_error")
  else
    local perr
    req, perr = cjson.decode(body)
    if type(req) ~= "table" then
      resp = error_response(422, "request body is not valid JSON" .. (perr and (": " .. perr) or ""))
    else
      local ok, verr = validate(req)
      spec = type(req.model) == "string" and models[req.model] or nil
      if not ok then
        resp = error_response(422, verr)
      elseif req.stream == true and not (spec and spec.streaming) then
        resp = error_response(422, format("model '%s' does not support streaming", tostring(req.model)))
      elseif req.stream == true then
        return send_stream(req, spec, f)
      else
        resp = success_response(req, spec, f)
      end
    end
  end

  resp.headers["x-request-id"] = f.request_id or request_id()
  if f.retry_after ~= nil then resp.headers["Retry-After"] = tostring(f.retry_after) end
  if f.retry_after_ms ~= nil then resp.headers["retry-after-ms"] = tostring(f.retry_after_ms) end
  if type(f.headers) == "table" then
    for k, v in pairs(f.headers) do resp.headers[k] = v end
  end
  return send(resp, f)
end

local function list_models()
  local data = {}
  for id, spec in pairs(models) do
    if type(spec) == "table" and spec.family then
      local fields = {}
      for name in pairs(spec.fields or {}) do fields[#fields + 1] = name end
      table.sort(fields)
      data[#data + 1] = { id = id, object = "model", modality = "image", family = spec.family,
        price = spec.price, streaming = spec.streaming and true or false, fields = fields }
    end
  end
  table.sort(data, function(a, b) return a.id < b.id end)
  return send_json({ object = "list", data = data })
end

-- Control API ------------------------------------------------------------------

local function control(uri, method)
  if uri == "/_omixa/health" then
    return send_json({ ok = true, key_required = cfg.key ~= nil, signing_required = cfg.signing_secret ~= nil })
  elseif uri == "/_omixa/faults" then
    if method == "GET" then return send_plain(new_response(200, encode(faults))) end
    if method == "DELETE" then faults = {}; return send_json({ ok = true, queued = 0 }) end
    if method == "POST" or method == "PUT" then
      local list = cjson.decode(read_body())
      if type(list) ~= "table" then
        return simple(422, "faults: body must be a JSON array of fault objects", "validation_error")
      end
      if list[1] == nil and next(list) ~= nil then list = { list } end -- one object
      for i, f in ipairs(list) do
        local ok, ferr = check_fault(f)
        if not ok then return simple(422, format("faults[%d]: %s", i, ferr), "validation_error") end
      end
      if method == "PUT" then faults = {} end
      for _, f in ipairs(list) do faults[#faults + 1] = f end
      return send_json({ ok = true, queued = #faults })
    end
    return simple(405, "faults: use GET, POST, PUT or DELETE", "method_not_allowed", { Allow = "GET, POST, PUT, DELETE" })
  elseif uri == "/_omixa/requests" or uri == "/_omixa/fetches" then
    local which = uri == "/_omixa/requests" and requests or fetches
    if method == "GET" then return send_plain(new_response(200, encode(which))) end
    if method == "DELETE" then
      if which == requests then requests, recorded_bytes = {}, 0 else fetches = {} end
      return send_json({ ok = true })
    end
    return simple(405, "use GET or DELETE", "method_not_allowed", { Allow = "GET, DELETE" })
  elseif uri == "/_omixa/reset" then
    if method ~= "POST" then return simple(405, "reset: use POST", "method_not_allowed", { Allow = "POST" }) end
    faults, requests, recorded_bytes, fetches, images, image_ids = {}, {}, 0, {}, {}, {}
    return send_json({ ok = true })
  end
  local id = uri:match("^/_omixa/images/([%w_-]+)$")
  if id then
    record(fetches, method)
    local img = images[id]
    if not img then return simple(404, "No such image.", "not_found") end
    return send_plain(new_response(200, img.bytes, img.mime))
  end
  return simple(404, "No such control endpoint: " .. uri, "not_found")
end

function M.handle()
  local uri = ngx.var.uri
  local method = ngx.req.get_method()
  if uri == GEN_PATH then return generation() end
  if uri == MODELS_PATH then
    if method ~= "GET" then return simple(405, "Use GET.", "method_not_allowed", { Allow = "GET" }) end
    if not authorized() then return simple(401, "Invalid API key.", "invalid_api_key") end
    -- Signing covers every request (METHOD is part of what is signed), so a
    -- GET signs the empty body.
    local serr = signature_error(method, read_body())
    if serr then return simple(401, serr, "invalid_signature") end
    return list_models()
  end
  if sub(uri, 1, 8) == "/_omixa/" then return control(uri, method) end
  return simple(404, "No such endpoint: " .. uri, "not_found")
end

-- error_page target for bodies over client_max_body_size.
function M.too_large()
  return simple(413, "Request body too large.", "request_too_large")
end

return M
