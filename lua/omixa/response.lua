-- omixa.response — a complete HTTP response into images, info or the fields
-- of an error. The big base64 strings are decoded in C (core.decode_images)
-- and only the small remainder of the JSON goes through lua-cjson.

local core = require "omixa.core"
local cjson = require("cjson.safe").new()

local type, ipairs, tonumber, tostring = type, ipairs, tonumber, tostring
local floor = math.floor
local match, lower, sub, format = string.match, string.lower, string.sub, string.format

local response = {}

local EXCERPT = 2048

local function excerpt(body)
  if type(body) == "string" then return sub(body, 1, EXCERPT) end
  return body:string(1, EXCERPT)
end

local function body_string(body)
  if type(body) == "string" then return body end
  return body:string()
end

function response.request_id(headers)
  return headers["x-request-id"] or headers["request-id"] or headers["x-omixa-request-id"]
end

local MONTHS = { jan = 1, feb = 2, mar = 3, apr = 4, may = 5, jun = 6,
                 jul = 7, aug = 8, sep = 9, oct = 10, nov = 11, dec = 12 }

-- Seconds since the epoch of a UTC civil date (no time zone library needed).
local function utc_epoch(y, m, d, hh, mm, ss)
  if m <= 2 then y = y - 1 end
  local era = floor(y / 400)
  local yoe = y - era * 400
  local mp = (m + 9) % 12
  local doy = floor((153 * mp + 2) / 5) + d - 1
  local doe = yoe * 365 + floor(yoe / 4) - floor(yoe / 100) + doy
  local days = era * 146097 + doe - 719468
  return days * 86400 + hh * 3600 + mm * 60 + ss
end

-- Seconds to wait from Retry-After (delta seconds or an HTTP date) and
-- retry-after-ms (which wins); nil when neither says anything usable.
function response.retry_after(headers, now)
  local ms = tonumber(headers["retry-after-ms"] or "")
  if ms and ms >= 0 then return ms / 1000 end
  local ra = headers["retry-after"]
  if not ra then return nil end
  local secs = tonumber(ra)
  if secs then return secs >= 0 and secs or nil end
  local d, mon, y, hh, mm, ss = match(ra, "%a+,%s*(%d+)[%s%-](%a+)[%s%-](%d+)%s+(%d+):(%d+):(%d+)")
  if not d or not MONTHS[lower(mon)] then return nil end
  y = tonumber(y)
  if y < 100 then y = y + 1900 end
  local at = utc_epoch(y, MONTHS[lower(mon)], tonumber(d), tonumber(hh), tonumber(mm), tonumber(ss))
  local wait = at - (now or os.time())
  return wait > 0 and wait or 0
end

-- The error fields of a non-2xx response.
local function api_error(status, headers, body)
  local text = excerpt(body)
  local f = { kind = "api", status = status, body = text,
              request_id = response.request_id(headers),
              retry_after = response.retry_after(headers) }
  local doc = match(text, "^%s*{") and cjson.decode(body_string(body))
  local env = type(doc) == "table" and doc.error
  if type(env) == "table" then
    if type(env.message) == "string" then f.message = env.message end
    if type(env.type) == "string" then f.type = env.type end
    if type(env.code) == "string" or type(env.code) == "number" then f.code = tostring(env.code) end
  elseif type(env) == "string" then
    f.message = env
  end
  if not f.message then
    f.message = format("HTTP %d from the service%s", status,
      match(headers["content-type"] or "", "html") and " (an HTML page, likely from a proxy)" or "")
  end
  return f
end

local function protocol(status, headers, body, message)
  return { kind = "protocol", status = status, message = message, body = excerpt(body),
           request_id = response.request_id(headers) }
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
-- fallback mime when sniffing knows nothing better; a cut header still
-- gives its format).
function response.image_info(bytes, fallback_mime)
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
    return nil, api_error(status, headers, body)
  end
  local request_id = response.request_id(headers)
  local ctype = lower(headers["content-type"] or "")
  local info = { model = ctx.model, request_id = request_id, cached = false, images = {} }

  if match(ctype, "^image/") then
    local bytes = body_string(body)
    if bytes == "" then
      return nil, { kind = "no_image", status = status, request_id = request_id,
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
    return nil, api_error(status, headers, rest) -- REST: the whole JSON, with no image in it
  end

  local out, pending = {}, nil
  local data = doc.data
  if type(data) == "table" then
    for _, item in ipairs(data) do
      if type(item) == "table" then
        local b, url = item.b64_json, item.url
        local bytes = response.scanned_image(b, imgs)
        local revised = type(item.revised_prompt) == "string" and item.revised_prompt or nil
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
    return nil, { kind = "no_image", status = status, request_id = request_id, body = excerpt(body),
                  message = "the service answered " .. status .. " without an image" }
  end
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
    return nil, { kind = "no_image", message = "the image urls gave no image", maybe_billed = true }
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
  local f = { maybe_billed = true, retryable = true, sent = true }
  local message
  if type(err) == "table" then
    local status = type(err.status) == "number" and err.status or nil
    f.status = status
    f.kind = FETCH_KINDS[err.kind] and err.kind
      or ((status and (status < 200 or status > 299)) and "api" or "network")
    if type(err.body) == "string" then f.body = sub(err.body, 1, EXCERPT) end
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
    if not match(lower(p.url), "^https?://") then
      return nil, { kind = "protocol", maybe_billed = true, sent = true,
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
      return nil, { kind = "too_large", maybe_billed = true, retryable = true, sent = true,
        message = "downloading the image from its url failed: response larger than max_response_bytes" }
    end
    local mime = type(extra) == "string" and match(lower(extra), "^%s*(image/[^;%s]+)") or nil
    images[p.index] = bytes
    info.images[p.index] = response.image_info(bytes, mime)
  end
  return response.collect(images, info, pending)
end

return response
