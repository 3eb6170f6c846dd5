-- omixa.decode — an answer of the service into images, info or the fields
-- of an error, for every path: a whole response (a JSON document or a raw
-- image: decode.parse, url-only items fetched after), and a stream of
-- server-sent events (decode.stream). The big base64 strings are decoded in
-- C (core.decode_images, core.sse_parser) and only the small remainder of
-- the JSON goes through lua-cjson. Error fields are read by omixa.errors
-- (envelope, request id, Retry-After), which also judges them.

local core = require "omixa.core"
local errors = require "omixa.errors"
local request = require "omixa.request"
local cjson = require("cjson.safe").new()

local type, ipairs, tonumber, tostring = type, ipairs, tonumber, tostring
local floor = math.floor
local match, lower, sub, format = string.match, string.lower, string.sub, string.format

local decode = {}

local excerpt, request_id = errors.excerpt, errors.request_id

local function body_string(body)
  if type(body) == "string" then return body end
  return body:string()
end

-- The billed_amount of a usage table as text ("0.039000"), or nil.
local function billed_of(usage)
  local billed = type(usage) == "table" and usage.billed_amount
  if type(billed) == "string" then return billed end
  if type(billed) == "number" then return format("%.6f", billed) end
  return nil
end
decode.billed_of = billed_of

-- The billed_amount a 2xx that could not be decoded still shows, if any:
-- the budget counts it (else the estimate).
local function billed_in(text)
  if type(text) ~= "string" then return nil end
  local usage = match(text, '"usage"%s*:%s*(%b{})')
  if not usage then return nil end
  return billed_of(cjson.decode(usage))
end

-- A 2xx that arrived and could not be decoded (the service billed it, may be).
local function protocol(status, headers, body, message)
  local text = type(body) == "string" and body or (body and body:string())
  return { kind = "protocol", status = status, message = message, body = excerpt(body),
           request_id = request_id(headers), headers = headers, sent = true,
           billed_amount = billed_in(text) }
end

-- The image a scanned b64_json value stands for: the scanner leaves each
-- image's number in its place as a JSON string ("1"), so a number or null
-- the service sent there is never taken for one.
function decode.scanned_image(v, images)
  if type(v) ~= "string" then return nil end
  local n = tonumber(v)
  return n and images[n] or nil
end

-- { mime=, format=, width=, height=, bytes= } of one image (sniffed; the
-- fallback mime when sniffing knows nothing better; a cut header still
-- gives its format).
function decode.image_info(bytes, fallback_mime)
  local s = core.sniff(bytes, true)
  local info = { bytes = #bytes }
  if s then
    info.mime, info.format, info.width, info.height = s.mime, s.format, s.width, s.height
  elseif fallback_mime then
    info.mime = fallback_mime
    info.format = match(fallback_mime, "^image/([%w%.%+%-]+)")
  end
  return info
end


local function as_integer(v)
  if type(v) == "number" and v == floor(v) then return floor(v) end
  return v
end

-- decode.parse(status, headers, body, ctx) -> images, info | nil, fields
--   headers: lower-case names; body: string or omixa.buffer
--   ctx.model: the model asked for
--   ctx.images, ctx.rest | ctx.scan_error, ctx.scan_what: the body already
--     scanned by the transport while it arrived (BODY then holds only its
--     first bytes, for messages)
-- Items that carry only a url come back as false placeholders, with a third
-- result { { index =, url = }, ... } for the caller to fetch (then collect).
function decode.parse(status, headers, body, ctx)
  if type(status) ~= "number" then
    return nil, { kind = "protocol", message = "no HTTP status in the response" }
  end
  if status < 200 or status > 299 then
    local f = errors.from_status(status, headers, body)
    f.sent = true
    return nil, f
  end
  local rid = request_id(headers)
  local ctype = lower(headers["content-type"] or "")
  local info = { model = ctx.model, request_id = rid, cached = false, images = {}, headers = headers,
                requested = ctx.n }

  if match(ctype, "^image/") then
    local bytes = body_string(body)
    if bytes == "" then
      return nil, { kind = "no_image", status = status, request_id = rid, headers = headers, sent = true,
                    message = "the service answered with an empty image body" }
    end
    info.images[1] = decode.image_info(bytes, match(ctype, "^([^;%s]+)"))
    return { bytes }, info
  end

  local imgs, rest, what
  if ctx.images then
    imgs, rest = ctx.images, ctx.rest
  elseif ctx.scan_error then
    rest, what = ctx.scan_error, ctx.scan_what
  else
    imgs, rest, what = core.decode_images(body)
  end
  if not imgs then
    return nil, protocol(status, headers, body,
      (what == "base64" and "bad base64 in the response: " or "malformed JSON in the response: ") .. rest)
  end
  local doc, jerr = cjson.decode(rest)
  if doc == nil then
    return nil, protocol(status, headers, body, "malformed JSON in the response: " .. tostring(jerr))
  end
  if type(doc) ~= "table" then
    return nil, protocol(status, headers, body, "the response is not a JSON object")
  end
  if type(doc.error) == "table" then
    local f = errors.from_status(status, headers, rest) -- REST: the whole JSON, with no image in it
    f.sent = true
    return nil, f
  end

  local out, pending = {}, nil
  local data = doc.data
  if type(data) == "table" then
    for _, item in ipairs(data) do
      if type(item) == "table" then
        local b, url = item.b64_json, item.url
        local bytes = decode.scanned_image(b, imgs)
        local revised = type(item.revised_prompt) == "string" and item.revised_prompt or nil
        if bytes then item.b64_json = #bytes end -- info.response: the byte count
        if bytes and bytes ~= "" then -- an empty string is no image
          out[#out + 1] = bytes
          local ii = decode.image_info(bytes)
          ii.revised_prompt = revised
          info.images[#out] = ii
        elseif type(url) == "string" and url ~= "" then
          -- Fetched by the caller: a placeholder keeps the order.
          out[#out + 1] = false
          info.images[#out] = false
          pending = pending or {}
          pending[#pending + 1] = { index = #out, url = url, revised_prompt = revised }
        end
      end
    end
  end
  if #out == 0 then
    return nil, { kind = "no_image", status = status, request_id = rid, body = excerpt(body),
                  headers = headers, sent = true,
                  message = "the service answered " .. status .. " without an image" }
  end
  info.response = doc
  info.created = as_integer(doc.created)
  if type(doc.model) == "string" then info.model = doc.model end
  if type(doc.usage) == "table" then
    info.usage = doc.usage
    info.billed_amount = billed_of(doc.usage)
  end
  return out, info, pending
end

-- After the url-only items of PENDING were fetched into IMAGES and
-- INFO.images: drop those that came back empty; no image left is no_image.
function decode.collect(images, info, pending)
  local revised = {}
  for _, p in ipairs(pending or {}) do revised[p.index] = p.revised_prompt end
  local out, infos = {}, {}
  for i, bytes in ipairs(images) do
    if bytes and bytes ~= "" then
      out[#out + 1] = bytes
      infos[#out] = info.images[i]
      if revised[i] then infos[#out].revised_prompt = revised[i] end
    end
  end
  if #out == 0 then
    return nil, { kind = "no_image", message = "the image urls gave no image", billed = true }
  end
  info.images = infos
  return out, info
end

-- The kinds a caller's fetch may name for its failure (see decode.fetch).
local FETCH_KINDS = { network = true, tls = true, timeout = true, api = true, protocol = true,
                      too_large = true, cancelled = true }

-- The error fields of a failed fetch, shaped like a failed built-in
-- download's (omixa.engine): the generation itself succeeded and was billed.
local function fetch_failure(err)
  local f = { billed = true, sent = true }
  local message
  if type(err) == "table" then
    local status = type(err.status) == "number" and err.status or nil
    f.status = status
    f.kind = FETCH_KINDS[err.kind] and err.kind
      or ((status and (status < 200 or status > 299)) and "api" or "network")
    f.body = type(err.body) == "string" and excerpt(err.body) or nil
    if type(err.message) == "string" and err.message ~= "" then message = err.message end
    if not message and f.kind == "api" and status then
      f.message = format("downloading the image from its url failed with HTTP %d", status)
      return f
    end
  else
    f.kind = "network"
    if err ~= nil then message = tostring(err) end
  end
  f.message = "downloading the image from its url failed: " .. (message or "the fetch function gave no reason")
  return f
end

-- decode.fetch(images, info, pending, fetch, opts) -> images, info | nil, fields
-- The url-only items of a parse (PENDING, placeholders in IMAGES) through
-- the caller's own transport, one after the other, in order:
--   fetch(url, headers) -> bytes [, content_type] | nil, err
--   headers: what to send with it (opts.headers(url): the key and the
--   signature for the service's own origin, else nothing); err: a message,
--   or fields { kind =, status =, message =, body = }.
-- As for the built-in downloads: every url must be http(s) before any is
-- fetched; the first failure ends it (the rest are not fetched) with the
-- error fields of a failed download (maybe_billed: the service billed the
-- generation); an empty body is no image and is dropped (decode.collect);
-- over opts.max_bytes is too_large. A Lua error fetch raises propagates.
-- fetch returning anything but a string or nil raises (misuse).
function decode.fetch(images, info, pending, fetch, opts)
  for _, p in ipairs(pending) do
    if not request.web_scheme(p.url) then
      return nil, { kind = "protocol", billed = true, sent = true,
                    message = "image url is not http(s): " .. sub(p.url, 1, 200) }
    end
  end
  for _, p in ipairs(pending) do
    local bytes, extra = fetch(p.url, opts.headers(p.url))
    if type(bytes) ~= "string" then
      if bytes ~= nil then
        error(format("omixa: parse: fetch must return the image bytes (a string) or nil and an error (got %s)",
          type(bytes)), 0)
      end
      return nil, fetch_failure(extra)
    end
    if opts.max_bytes and #bytes > opts.max_bytes then
      return nil, { kind = "too_large", billed = true, sent = true,
        message = "downloading the image from its url failed: response larger than max_response_bytes" }
    end
    local mime = type(extra) == "string" and match(lower(extra), "^%s*(image/[^;%s]+)") or nil
    images[p.index] = bytes
    info.images[p.index] = decode.image_info(bytes, mime)
  end
  return decode.collect(images, info, pending)
end


-- ---- streams ----

do
-- decode.stream — an image stream of server-sent events into images, info or
-- the fields of an error, independent of the transport: feed it the body's
-- bytes as they arrive, then finish. The events are cut by the C parser
-- (core.sse_parser), which also decodes their base64 images in C; only the
-- small rest of each event goes through lua-cjson.
--
--   local s = stream.new(call_opts, ctx)
--     call_opts.on_event(event)                 every event, in order
--     call_opts.on_partial(bytes, index, event) every partial image; index is
--                                               partial_image_index + 1
--     ctx.model      the model asked for (info.model when the stream names none)
--     ctx.n          images asked for: a stream that ends without [DONE] with
--                    fewer final images than that was cut
--     ctx.max_bytes  most bytes one event may hold (max_response_bytes)
--     ctx.status, ctx.headers (lower-case names): read only when a result or
--                    an error is built, so the transport may set them later
--   s:feed(chunk) -> true | nil, fields   nil: the stream failed (an error
--                    event, bad base64, an event over max_bytes): stop it
--   s:finish() -> images, info | nil, fields   (the same on every call)
--                  info as omixa.response builds it: model, created (or the
--                  event's created_at), request_id, cached = false, usage and
--                  billed_amount (from the last final event carrying usage),
--                  images[i] = { mime, format, width, height, bytes,
--                  revised_prompt }, and partials (partial images seen);
--                  fields: kind "api" (error event), "protocol" (no final
--                  image, cut mid-event, fewer than ctx.n without [DONE], bad
--                  base64), "too_large", "cancelled" (a callback raised)
--   s:done()       true once [DONE] or a failure has ended the stream
--   s:heartbeats() comment lines (heartbeats) seen
--   s:close()      frees the parser (idempotent; finish does it too)
--   stream.is_event_stream(status, headers) -> true for a 2xx text/event-stream
--
-- The event a callback receives:
--   { event = "image_generation.partial_image" (the SSE event name, "message"
--     when the stream gave none), data = the data decoded when it is a JSON
--     object or array, else the data text (e.g. "[DONE]"), images = { bytes,
--     ... } (each b64_json string of data, top-level or in data[], is there
--     decoded and replaced in data by its index in images, as a string), id =, retry = }
--
-- Callbacks run inside s:feed; an error they raise propagates out of it (the
-- stream is then abandoned: later calls return a "cancelled" failure).
-- Events after [DONE] or after a failure are ignored. Final images come from
-- "*.completed" events (image_generation.completed, image_edit.completed) and
-- from frames of the non-streaming shape {"data":[{"b64_json":...}]}, in
-- order of arrival; items that only carry a url are not fetched here.

local scanned_image = decode.scanned_image
local setmetatable, error = setmetatable, error
local find = string.find

local stream = {}
decode.stream = stream

local Stream = {}
Stream.__index = Stream
Stream.__name = "omixa.stream"

local MIMES = { png = "image/png", jpeg = "image/jpeg", jpg = "image/jpeg", webp = "image/webp" }

function stream.is_event_stream(status, headers)
  local ctype = headers and headers["content-type"]
  return type(status) == "number" and status >= 200 and status <= 299
    and type(ctype) == "string" and find(lower(ctype), "^%s*text/event%-stream") ~= nil
end

function stream.new(call_opts, ctx)
  call_opts = call_opts or {}
  ctx = ctx or {}
  local max = ctx.max_bytes
  if max ~= nil and (type(max) ~= "number" or max < 1 or max ~= floor(max)) then
    error("omixa: stream: ctx.max_bytes must be a positive integer", 2)
  end
  return setmetatable({
    on_event = call_opts.on_event,
    on_partial = call_opts.on_partial,
    ctx = ctx,
    parser = core.sse_parser{ max_bytes = max, images = true },
    images = {}, infos = {},
    partials = 0,
    nheartbeats = 0,
  }, Stream)
end

local function fields(self, f)
  local headers = self.ctx.headers or {}
  f.status = self.ctx.status
  f.request_id = errors.request_id(headers)
  f.headers = self.ctx.headers
  f.sent = true
  return f
end

local function fail(self, f)
  self.failed = self.failed or fields(self, f)
  return nil, self.failed
end

-- The api error of an `error` event or an object with an `error` member.
local function api_failure(self, doc, raw)
  local f = { kind = "api", body = errors.excerpt(raw) }
  if not errors.envelope(doc, f, true) and raw ~= "" then f.message = sub(raw, 1, 200) end
  f.message = f.message or "the service sent an error event"
  return fail(self, f)
end

local function call(self, fn, ...)
  self.in_callback = true
  fn(...)
  self.in_callback = false
end

local function add_final(self, bytes, item, output_format)
  if type(bytes) ~= "string" or bytes == "" then return end -- an empty string is no image
  local i = #self.images + 1
  self.images[i] = bytes
  local ii = decode.image_info(bytes, MIMES[output_format])
  if type(item.revised_prompt) == "string" then ii.revised_prompt = item.revised_prompt end
  self.infos[i] = ii
end

-- What a final event or frame says about the whole result.
local function take_meta(self, doc)
  local created = as_integer(doc.created or doc.created_at)
  if self.created == nil and type(created) == "number" then self.created = created end
  if type(doc.model) == "string" then self.model = doc.model end
  if type(doc.usage) == "table" then self.usage = doc.usage end
end

local function handle(self, ev)
  local raw, images = ev.data, ev.images
  local doc
  if find(raw, "^%s*[%[{]") then doc = cjson.decode(raw) end
  local event = { event = ev.event, data = doc == nil and raw or doc, images = images,
                  id = ev.id, retry = ev.retry }
  if self.on_event then call(self, self.on_event, event) end
  if doc == nil and find(raw, "^%s*%[DONE%]%s*$") then
    self.finished_stream = true
    return
  end
  if ev.image_error then
    return fail(self, { kind = "protocol", message = "bad base64 in the stream: " .. ev.image_error })
  end
  local obj = type(doc) == "table" and doc or nil
  local name = ev.event
  if name == "message" and obj and type(obj.type) == "string" then name = obj.type end
  if name == "error" or (obj and (obj.type == "error" or type(obj.error) == "table"
      or type(obj.error) == "string")) then
    return api_failure(self, doc, raw)
  end
  if not obj then return end
  if find(name, "partial_image$") then
    local bytes = scanned_image(obj.b64_json, images)
    if type(bytes) == "string" and bytes ~= "" then
      self.partials = self.partials + 1
      local k = as_integer(obj.partial_image_index)
      local index = type(k) == "number" and k + 1 or self.partials
      if self.on_partial then call(self, self.on_partial, bytes, index, event) end
    end
  elseif find(name, "%.completed$") and scanned_image(obj.b64_json, images) then
    add_final(self, scanned_image(obj.b64_json, images), obj, obj.output_format)
    take_meta(self, obj)
  elseif type(obj.data) == "table" then
    local before = #self.images
    for _, item in ipairs(obj.data) do
      if type(item) == "table" and scanned_image(item.b64_json, images) then
        add_final(self, scanned_image(item.b64_json, images), item, obj.output_format)
      end
    end
    if #self.images > before then take_meta(self, obj) end
  end
end

local function abandoned(self)
  if self.in_callback then
    self.in_callback = false
    fail(self, { kind = "cancelled", message = "a stream callback raised an error" })
  end
end

function Stream:feed(chunk)
  if self.result then error("omixa: stream: feed after finish", 2) end
  abandoned(self)
  if self.failed then return nil, self.failed end
  if self.finished_stream then return true end
  -- on too_large, BEFORE holds the events the chunk completed before it
  local events, msg, what, before = self.parser:feed(chunk)
  local list = events or before or {}
  for i = 1, #list do
    handle(self, list[i])
    if self.failed then return nil, self.failed end
    if self.finished_stream then return true end
  end
  if not events then
    return fail(self, { kind = what == "too_large" and "too_large" or "protocol", message = msg })
  end
  return true
end

function Stream:done()
  return self.failed ~= nil or self.finished_stream == true
end

function Stream:heartbeats()
  if self.parser then self.nheartbeats = self.parser:heartbeats() end
  return self.nheartbeats
end

function Stream:close()
  if self.parser then
    self.nheartbeats = self.parser:heartbeats()
    self.parser:close()
    self.parser = nil
  end
end

local function cut_short(self, message)
  return fail(self, { kind = "protocol", message = message })
end

local function outcome(self)
  abandoned(self)
  local cut = false
  if self.parser then
    local _
    self.nheartbeats = self.parser:heartbeats()
    _, cut = self.parser:finish()
    self:close()
  end
  if self.failed then return nil, self.failed end
  local n, want = #self.images, self.ctx.n
  if n == 0 then
    return cut_short(self, "the stream ended without a final image"
      .. (self.partials > 0 and format(" (after %d partial image%s)", self.partials,
        self.partials == 1 and "" or "s") or "")
      .. (cut and ", in the middle of an event" or ""))
  end
  if not self.finished_stream then
    if cut then return cut_short(self, "the stream ended in the middle of an event") end
    if type(want) == "number" and n < want then
      return cut_short(self, format("the stream ended after %d of %d images", n, want))
    end
  end
  local info = { model = self.model or self.ctx.model, created = self.created, cached = false,
                 request_id = errors.request_id(self.ctx.headers), headers = self.ctx.headers, requested = self.ctx.n,
                 images = self.infos, partials = self.partials }
  if self.usage then
    info.usage = self.usage
    info.billed_amount = billed_of(self.usage)
  end
  return self.images, info
end

function Stream:finish()
  if not self.result then
    local a, b = outcome(self)
    self.result = { a, b }
  end
  return self.result[1], self.result[2]
end

Stream.__close = Stream.close

end

return decode
