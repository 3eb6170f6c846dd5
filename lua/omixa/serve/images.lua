-- omixa.serve.images: the images the stand-in answers with (inside nginx):
-- a PNG drawn for the requested pixel size (png.lua, the prompt picks the
-- colours), or the JPEG and WebP fixtures for those output formats.

local png = require "omixa.serve.png"
local read_file = require("omixa.serve.files").read

local type, tonumber = type, tonumber
local floor, max = math.floor, math.max
local remove = table.remove

local M = {}

local fixtures = {}
local png_cache, png_order = {}, {} -- "w:h:seed" -> png bytes; keys oldest first
local PNG_CACHE_MAX = 24
local padded = {}                    -- the last padded image: key, bytes

-- The fixtures: files beside this module, else the embedded copies.
function M.init()
  local src = debug.getinfo(1, "S").source
  local dir = ((src:sub(1, 1) == "@" and src:sub(2) or src):match("^(.*)/[^/]*$") or ".") .. "/fixtures/"
  fixtures.jpeg = read_file(dir .. "image.jpg")
  fixtures.webp = read_file(dir .. "image.webp")
  if not (fixtures.jpeg and fixtures.webp) then
    local embedded = require "omixa.serve.fixtures_embedded"
    fixtures.jpeg = fixtures.jpeg or embedded.jpeg
    fixtures.webp = fixtures.webp or embedded.webp
  end
end

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

-- The image for a request: bytes, mime, w, h. VARIANT (a partial image's
-- number) changes the colours; BYTES pads a PNG to that size (png.pad);
-- NOISE makes a picture that does not compress (png.render).
function M.for_request(req, family, variant, bytes, noise)
  local fmt = req.output_format
  if fmt == "jpeg" then return fixtures.jpeg, "image/jpeg" end
  if fmt == "webp" then return fixtures.webp, "image/webp" end
  local w, h = dimensions(req, family)
  local seed = png.hash(type(req.prompt) == "string" and req.prompt or "")
  if variant then seed = (seed + variant * 7919) % 4294967296 end
  local p = make_png(w, h, seed, noise)
  if bytes then
    local key = w .. ":" .. h .. ":" .. seed .. ":" .. bytes
    if padded.key ~= key then padded.key, padded.bytes = key, png.pad(p, bytes, seed) end
    p = padded.bytes
  end
  return p, "image/png", w, h
end

return M
