-- omixa.wire — the request body, byte for byte: fields in the catalog's
-- order, strings quoted in C, each input image in the documented wire form
-- { "type": "image_url", "image_url": { "url": "data:<mime>;base64,<...>" } }.
--
-- This file decides the layout as a list of parts; core.build_body writes
-- them once into one omixa.buffer of the exact size, base64-encoding image
-- bytes (or an image file, read in chunks) straight into it.

local core = require "omixa.core"

local type, ipairs, format = type, ipairs, string.format
local concat = table.concat
local quote, build_body = core.json_quote, core.build_body

local wire = {}

local function image_parts(img, out, redact)
  out[#out + 1] = '{"type":"image_url","image_url":{"url":'
  if redact then
    out[#out + 1] = quote(format("data:%s;base64,<%d bytes>", img.mime, img.bytes))
  elseif img.url then
    out[#out + 1] = quote(img.url)
  else
    -- base64 needs no JSON escaping: written straight in.
    out[#out + 1] = '"data:' .. img.mime .. ";base64,"
    out[#out + 1] = img.path and { file = img.path, size = img.bytes, where = img.where } or { b64 = img.data }
    out[#out + 1] = '"'
  end
  out[#out + 1] = "}}"
end

-- The body as parts for core.build_body: strings, { b64 = bytes } and
-- { file = path, size = n }. With REDACT, strings only (image data replaced
-- by its byte count).
local function parts(prepared, redact)
  local out = { "{" }
  for i, f in ipairs(prepared.fields) do
    local name, v = f[1], f[2]
    if i > 1 then out[#out + 1] = "," end
    out[#out + 1] = quote(name)
    out[#out + 1] = ":"
    local t = type(v)
    if t == "string" then
      out[#out + 1] = quote(v)
    elseif t == "number" then
      out[#out + 1] = format("%d", v)
    elseif t == "boolean" then
      out[#out + 1] = v and "true" or "false"
    elseif v.json then -- a call's extra_body field, encoded already
      out[#out + 1] = v.json
    elseif v.mime then -- one image (mask)
      image_parts(v, out, redact)
    else               -- an array of images
      out[#out + 1] = "["
      for k, img in ipairs(v) do
        if k > 1 then out[#out + 1] = "," end
        image_parts(img, out, redact)
      end
      out[#out + 1] = "]"
    end
  end
  out[#out + 1] = "}"
  return out
end

-- wire.encode(prepared) -> omixa.buffer | nil, message: the body to send.
-- Fails only when an image file cannot be read (again) or changed size
-- since it was sniffed. The caller closes the buffer when done with it.
function wire.encode(prepared)
  local list = parts(prepared)
  local body, at, err = build_body(list)
  if body then return body end
  return nil, format("omixa: field '%s': cannot read image file: %s", list[at].where or "?", err)
end

-- wire.redacted(prepared) -> JSON text with each image's data replaced by
-- its byte count (for --dry-run and logs).
function wire.redacted(prepared)
  return concat(parts(prepared, true))
end

return wire
