-- omixa.stream — an image stream of server-sent events into images, info or
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

local core = require "omixa.core"
local response = require "omixa.response"
local errors = require "omixa.errors"
local cjson = require("cjson.safe").new()
local scanned_image = response.scanned_image

local type, ipairs, setmetatable, error = type, ipairs, setmetatable, error
local floor = math.floor
local find, sub, format, lower = string.find, string.sub, string.format, string.lower

local stream = {}

local Stream = {}
Stream.__index = Stream
Stream.__name = "omixa.stream"

local function as_integer(v)
  if type(v) == "number" and v == floor(v) then return floor(v) end
  return v
end

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
  local ii = response.image_info(bytes, MIMES[output_format])
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
  local events, msg, what = self.parser:feed(chunk)
  if not events then
    return fail(self, { kind = what == "too_large" and "too_large" or "protocol", message = msg })
  end
  for i = 1, #events do
    handle(self, events[i])
    if self.failed then return nil, self.failed end
    if self.finished_stream then break end
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

local function protocol(self, message)
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
    return protocol(self, "the stream ended without a final image"
      .. (self.partials > 0 and format(" (after %d partial image%s)", self.partials,
        self.partials == 1 and "" or "s") or "")
      .. (cut and ", in the middle of an event" or ""))
  end
  if not self.finished_stream then
    if cut then return protocol(self, "the stream ended in the middle of an event") end
    if type(want) == "number" and n < want then
      return protocol(self, format("the stream ended after %d of %d images", n, want))
    end
  end
  local info = { model = self.model or self.ctx.model, created = self.created, cached = false,
                 request_id = errors.request_id(self.ctx.headers), headers = self.ctx.headers, requested = self.ctx.n,
                 images = self.infos, partials = self.partials }
  if self.usage then
    info.usage = self.usage
    local billed = self.usage.billed_amount
    if type(billed) == "string" then info.billed_amount = billed
    elseif type(billed) == "number" then info.billed_amount = format("%.6f", billed) end
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

return stream
