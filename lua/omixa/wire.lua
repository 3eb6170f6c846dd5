-- omixa.wire — the request body, byte for byte: fields in the catalog's
-- order, strings quoted in C, each input image in the documented wire form
-- { "type": "image_url", "image_url": { "url": "data:<mime>;base64,<...>" } }.

local core = require "omixa.core"

local type, ipairs, format = type, ipairs, string.format
local concat = table.concat
local quote, b64encode = core.json_quote, core.b64encode

local wire = {}

local function image_json(img, out, redact)
  out[#out + 1] = '{"type":"image_url","image_url":{"url":'
  if redact then
    out[#out + 1] = quote(format("data:%s;base64,<%d bytes>", img.mime, img.bytes))
  elseif img.url then
    out[#out + 1] = quote(img.url)
  else
    -- base64 needs no JSON escaping: write it straight in.
    out[#out + 1] = '"data:' .. img.mime .. ";base64,"
    out[#out + 1] = b64encode(img.data)
    out[#out + 1] = '"'
  end
  out[#out + 1] = "}}"
end

-- wire.encode(prepared [, redact]) -> JSON text. With REDACT, image data is
-- replaced by its byte count (for --dry-run and logs).
function wire.encode(prepared, redact)
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
    elseif v.mime then -- one image (mask)
      image_json(v, out, redact)
    else               -- an array of images
      out[#out + 1] = "["
      for k, img in ipairs(v) do
        if k > 1 then out[#out + 1] = "," end
        image_json(img, out, redact)
      end
      out[#out + 1] = "]"
    end
  end
  out[#out + 1] = "}"
  return concat(out)
end

return wire
