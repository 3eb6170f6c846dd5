-- omixa.serve.handler: what nginx runs for `omixa serve` (LuaJIT, ngx API):
-- the entry points of nginx.conf (init, init_worker, handle, too_large) and
-- the service's documented protocol, spoken on its own (it never loads the
-- client's wire code): the bearer key, request signatures, validation with
-- the shared catalog (omixa.schema over omixa.models), images as JSON, raw
-- or server-sent events, and the models list. The rest of the stand-in:
--   launcher (init.lua)    nginx: process, configuration, TLS, ports
--   faults.lua             the faults a test asks for, and how they are sent
--   control.lua            the control API under /_omixa/ (faults, recorded
--                          requests, billing totals, reset)
--   state.lua              what is remembered between requests (one VM:
--                          nginx runs one process, master_process off)
--   http.lua, images.lua, png.lua, files.lua   answers, envelopes; the
--                          images; reading a file
--
-- Routes:
--   POST /api/v1/images/generations   the service (405 for other methods)
--   GET  /api/v1/models               the catalog, as {"object":"list","data":[...]}
--   /_omixa/...                       the control API (control.lua)

local ngx = ngx
local cjson = require "cjson.safe"
local schema = require "omixa.schema"
local models = require "omixa.models"
local http = require "omixa.serve.http"
local images = require "omixa.serve.images"
local faults = require "omixa.serve.faults"
local control = require "omixa.serve.control"
local state = require "omixa.serve.state"
local read_file = require("omixa.serve.files").read

local type, pairs, ipairs, tostring, tonumber = type, pairs, ipairs, tostring, tonumber
local floor, max, min, random = math.floor, math.max, math.min, math.random
local concat = table.concat
local format, sub, gsub = string.format, string.sub, string.gsub
local jstr, simple = http.jstr, http.simple

local GEN_PATH = "/api/v1/images/generations"
local MODELS_PATH = "/api/v1/models"

local M = {}

local cfg = { key = nil }

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
  images.init()
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

-- Who may ask ------------------------------------------------------------------

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

-- Generation -------------------------------------------------------------------

-- The request as the catalog sees it ("stream" is the transport's, not a
-- field of the catalog).
local function validate(req)
  if type(req) ~= "table" then return nil, "request body must be a JSON object" end
  local copy = {}
  for k, v in pairs(req) do copy[k] = v end
  if copy.stream ~= nil then
    if type(copy.stream) ~= "boolean" then return nil, "field 'stream' must be a boolean" end
    copy.stream = nil
  end
  return schema.check_wire(copy)
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

-- What N images of SPEC bill: the fault's billed_amount, else price x N.
local function billed_amount(spec, n, f)
  if type(f.billed_amount) == "string" then return f.billed_amount end
  return state.amount(state.micros(spec and spec.price) * n)
end

local function usage_json(spec, n, f)
  if f.no_usage then return nil end
  return format('{"billed_amount":%s}', jstr(billed_amount(spec, n, f)))
end

-- An answer delivering N images: into the billing totals.
local function bill(spec, n, f)
  if n > 0 then state.bill(billed_amount(spec, n, f), n) end
end

local function image_for(req, spec, f, variant)
  return images.for_request(req, spec and spec.family or "google", variant,
    not variant and tonumber(f.image_bytes) or nil, f.noise)
end

local function success_response(req, spec, f)
  local bytes, mime = image_for(req, spec, f)
  local status = tonumber(f.status) and floor(tonumber(f.status)) or 200
  if f.raw_image then
    bill(spec, 1, f)
    return http.new_response(200, bytes, mime)
  end
  local n = count_of(req, f)
  if f.empty_data then n = 0 end
  if status < 300 then bill(spec, n, f) end
  if f.malformed then
    return http.new_response(200, format('{"created":%d,"data":[{"b64_json":"%s",', ngx.time(),
      sub(ngx.encode_base64(sub(bytes, 1, 60)), 1, 40)))
  end
  local items = {}
  if n > 0 then
    local b64 = b64_of(bytes, f)
    local extra = type(f.revised_prompt) == "string" and (',"revised_prompt":' .. jstr(f.revised_prompt)) or ""
    for i = 1, n do
      if f.url_only then
        local base = type(f.url_base) == "string" and f.url_base
          or (ngx.var.scheme .. "://" .. (ngx.var.http_host or ("127.0.0.1:" .. ngx.var.server_port)))
        items[i] = format('{"b64_json":null,"url":%s%s}',
          jstr(base .. "/_omixa/images/" .. state.store_image(bytes, mime)), extra)
      else
        items[i] = '{"b64_json":"' .. b64 .. '","url":null' .. extra .. '}'
      end
    end
  end
  local usage = usage_json(spec, n, f)
  return http.new_response(status,
    format('{"created":%d,"data":[%s]%s}', ngx.time(), concat(items, ","),
      usage and (',"usage":' .. usage) or ""))
end

-- Server-sent events for stream = true on a streaming model: for each image,
-- partial_image events then a completed event, then data: [DONE].
local function send_stream(req, spec, f)
  local nl = f.sse_crlf and "\r\n" or "\n"
  local n = count_of(req, f)
  local partials = tonumber(f.partials) or 1
  local heartbeats = tonumber(f.heartbeats) or 1
  local interval = tonumber(f.interval) or 0
  local created = ngx.time()
  ngx.status = 200
  ngx.header["Content-Type"] = "text/event-stream"
  ngx.header["Cache-Control"] = "no-cache"
  ngx.header["x-request-id"] = f.request_id or http.request_id()
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
    http.sleep(interval)
  end
  for _ = 1, heartbeats do
    ngx.print(": keep-alive" .. nl .. nl)
    ngx.flush(true)
    http.sleep(interval)
  end
  if f.sse_data_shape then
    -- one frame carrying the non-streaming {"created","data":[...]} shape
    ngx.print("data: " .. success_response(req, spec, f).body .. nl .. nl .. "data: [DONE]" .. nl .. nl)
    ngx.flush(true)
    return ngx.exit(ngx.OK)
  end
  if not (f.stream_error or f.stream_end_early) then bill(spec, n, f) end
  local usage = usage_json(spec, n, f)
  for i = 1, n do
    local w, h
    for k = 0, partials - 1 do
      local bytes, _, pw, ph = image_for(req, spec, f, k + 1)
      w, h = pw, ph
      event("image_generation.partial_image", {
        '"type":"image_generation.partial_image"',
        '"b64_json":"' .. b64_of(bytes, f) .. '"',
        '"partial_image_index":' .. k,
        '"created_at":' .. created,
        '"output_format":' .. jstr(req.output_format or "png") })
      if f.stream_error then
        event("error", { '"error":' .. sub(http.envelope(500, "server_error", "stream_error",
          "The provider failed while generating."), 10, -2) })
        return ngx.exit(ngx.OK)
      end
    end
    if f.stream_end_early then return ngx.exit(ngx.OK) end
    local bytes, _, fw, fh = image_for(req, spec, f)
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

local function generation()
  local method = ngx.req.get_method()
  local body = http.read_body()
  state.record(state.requests, method, body, http.lower_headers())
  if method ~= "POST" then
    return simple(405, "Use POST for " .. GEN_PATH .. ".", "method_not_allowed", { Allow = "POST" })
  end
  local f, ferr = faults.take()
  if not f then return simple(400, ferr, "bad_fault") end
  faults.before(f)

  local resp
  if faults.own_status(f) then
    resp = faults.response(f)
  elseif not authorized() then
    resp = http.error_response(401, "Invalid API key.", "invalid_api_key", "authentication_error")
  elseif signature_error(method, body) then
    resp = http.error_response(401, signature_error(method, body), "invalid_signature", "authentication_error")
  else
    local req, perr = cjson.decode(body)
    if type(req) ~= "table" then
      resp = http.error_response(422, "request body is not valid JSON" .. (perr and (": " .. perr) or ""))
    else
      local ok, verr = validate(req)
      local spec = type(req.model) == "string" and models[req.model] or nil
      if not ok then
        resp = http.error_response(422, verr)
      elseif req.stream == true and not (spec and spec.streaming) then
        resp = http.error_response(422, format("model '%s' does not support streaming", tostring(req.model)))
      elseif req.stream == true then
        return send_stream(req, spec, f)
      else
        resp = success_response(req, spec, f)
      end
    end
  end
  faults.add_headers(resp, f)
  return faults.send(resp, f)
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
  return http.send_json({ object = "list", data = data })
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
    local serr = signature_error(method, http.read_body())
    if serr then return simple(401, serr, "invalid_signature") end
    return list_models()
  end
  if sub(uri, 1, 8) == "/_omixa/" then return control.handle(uri, method, cfg) end
  return simple(404, "No such endpoint: " .. uri, "not_found")
end

-- error_page target for bodies over client_max_body_size.
function M.too_large()
  return simple(413, "Request body too large.", "request_too_large")
end

return M
