-- omixa.response — a complete HTTP response into images, info or the fields
-- of an error. The big base64 strings are decoded in C (core.decode_images)
-- and only the small remainder of the JSON goes through lua-cjson.

local core = require "omixa.core"
local errors = require "omixa.errors"
local request = require "omixa.request"
local cjson = require("cjson.safe").new()

local type, ipairs, tonumber, tostring = type, ipairs, tonumber, tostring
local floor = math.floor
local match, lower, sub, format = string.match, string.lower, string.sub, string.format

local response = {}

local excerpt, request_id = errors.excerpt, errors.request_id

local function body_string(body)
  if type(body) == "string" then return body end
  return body:string()
end

-- The billed_amount a 2xx that could not be decoded still shows, if any:
-- the budget counts it (else the estimate).
local function billed_in(text)
  if type(text) ~= "string" then return nil end
  local usage = match(text, '"usage"%s*:%s*(%b{})')
  if not usage then return nil end
  local doc = cjson.decode(usage)
  local billed = type(doc) == "table" and doc.billed_amount
  if type(billed) == "string" then return billed end
  if type(billed) == "number" then return format("%.6f", billed) end
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
function response.scanned_image(v, images)
  if type(v) ~= "string" then return nil end
  local n = tonumber(v)
  return n and images[n] or nil
end

-- { mime=, format=, width=, height=, bytes= } of one image (sniffed; the
-- fallback mime when sniffing knows nothing better).
function response.image_info(bytes, fallback_mime)
  local s = core.sniff(bytes)
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

-- response.parse(status, headers, body, ctx) -> images, info | nil, fields
--   headers: lower-case names; body: string or omixa.buffer
--   ctx.model: the model asked for
--   ctx.images, ctx.rest | ctx.scan_error, ctx.scan_what: the body already
--     scanned by the transport while it arrived (BODY then holds only its
--     first bytes, for messages)
-- Items that carry only a url come back as false placeholders, with a third
-- result { { index =, url = }, ... } for the caller to fetch (then collect).
function response.parse(status, headers, body, ctx)
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
    info.images[1] = response.image_info(bytes, match(ctype, "^([^;%s]+)"))
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
        local bytes = response.scanned_image(b, imgs)
        local revised = type(item.revised_prompt) == "string" and item.revised_prompt or nil
        if bytes then item.b64_json = #bytes end -- info.response: the byte count
        if bytes and bytes ~= "" then -- an empty string is no image
          out[#out + 1] = bytes
          local ii = response.image_info(bytes)
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
    local billed = doc.usage.billed_amount
    if type(billed) == "string" then info.billed_amount = billed
    elseif type(billed) == "number" then info.billed_amount = format("%.6f", billed) end
  end
  return out, info, pending
end

-- After the url-only items of PENDING were fetched into IMAGES and
-- INFO.images: drop those that came back empty; no image left is no_image.
function response.collect(images, info, pending)
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

-- The kinds a caller's fetch may name for its failure (see response.fetch).
local FETCH_KINDS = { network = true, tls = true, timeout = true, api = true, protocol = true,
                      too_large = true, cancelled = true }

-- The error fields of a failed fetch, shaped like a failed built-in
-- download's (omixa.job): the generation itself succeeded and was billed.
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

-- response.fetch(images, info, pending, fetch, opts) -> images, info | nil, fields
-- The url-only items of a parse (PENDING, placeholders in IMAGES) through
-- the caller's own transport, one after the other, in order:
--   fetch(url, headers) -> bytes [, content_type] | nil, err
--   headers: what to send with it (opts.headers(url): the key and the
--   signature for the service's own origin, else nothing); err: a message,
--   or fields { kind =, status =, message =, body = }.
-- As for the built-in downloads: every url must be http(s) before any is
-- fetched; the first failure ends it (the rest are not fetched) with the
-- error fields of a failed download (maybe_billed: the service billed the
-- generation); an empty body is no image and is dropped (response.collect);
-- over opts.max_bytes is too_large. A Lua error fetch raises propagates.
-- fetch returning anything but a string or nil raises (misuse).
function response.fetch(images, info, pending, fetch, opts)
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
    info.images[p.index] = response.image_info(bytes, mime)
  end
  return response.collect(images, info, pending)
end

return response
