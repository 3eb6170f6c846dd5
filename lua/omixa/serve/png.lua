-- omixa.serve.png: the stand-in's image maker. Draws a gradient whose colours
-- come from the prompt and encodes it as a real PNG (zlib through LuaJIT FFI),
-- fast enough for 4096x4096 in well under a second. Runs inside nginx only.
local ffi = require "ffi"
local bit = require "bit"

local floor, max, min = math.floor, math.max, math.min
local band, bxor, rshift = bit.band, bit.bxor, bit.rshift

pcall(ffi.cdef, [[
typedef struct omixa_z_stream {
  const unsigned char *next_in; unsigned int avail_in; unsigned long total_in;
  unsigned char *next_out; unsigned int avail_out; unsigned long total_out;
  const char *msg; void *state; void *zalloc; void *zfree; void *opaque;
  int data_type; unsigned long adler; unsigned long reserved;
} omixa_z_stream;
int deflateInit2_(omixa_z_stream *strm, int level, int method, int windowBits,
                  int memLevel, int strategy, const char *version, int stream_size);
int deflate(omixa_z_stream *strm, int flush);
int deflateEnd(omixa_z_stream *strm);
unsigned long deflateBound(omixa_z_stream *strm, unsigned long sourceLen);
unsigned long crc32(unsigned long crc, const unsigned char *buf, unsigned int len);
const char *zlibVersion(void);
]])

local function load_zlib()
  for _, name in ipairs{ "z", "libz.so.1" } do
    local ok, lib = pcall(ffi.load, name)
    if ok then return lib end
  end
  error("omixa serve: cannot load zlib (libz.so.1)")
end
local z = load_zlib()

local Z_FINISH, Z_STREAM_END, Z_DEFLATED = 4, 1, 8

local M = {}

-- Compress `len` bytes at `ptr`. gzip = true writes a gzip member instead of
-- a zlib stream (for Content-Encoding: gzip); strategy 3 is Z_RLE, which
-- suits filtered image rows. Returns a Lua string.
function M.deflate(ptr, len, level, gzip, strategy)
  local strm = ffi.new("omixa_z_stream")
  local rc = z.deflateInit2_(strm, level or 1, Z_DEFLATED, gzip and 31 or 15, 8, strategy or 0,
                             z.zlibVersion(), ffi.sizeof(strm))
  assert(rc == 0, "deflateInit2 failed")
  local cap = tonumber(z.deflateBound(strm, len)) + 64
  local out = ffi.new("unsigned char[?]", cap)
  strm.next_in, strm.avail_in = ffi.cast("const unsigned char *", ptr), len
  strm.next_out, strm.avail_out = out, cap
  rc = z.deflate(strm, Z_FINISH)
  local n = tonumber(strm.total_out)
  z.deflateEnd(strm)
  assert(rc == Z_STREAM_END, "deflate did not finish")
  return ffi.string(out, n)
end

function M.gzip(s)
  return M.deflate(s, #s, 6, true)
end

local function be32(n)
  return string.char(band(rshift(n, 24), 255), band(rshift(n, 16), 255),
                     band(rshift(n, 8), 255), band(n, 255))
end

local function chunk(kind, data)
  local body = kind .. data
  local crc = z.crc32(0, body, #body)
  return be32(#data) .. body .. be32(tonumber(crc))
end

-- FNV-1a over the prompt: a stable seed for the colours.
function M.hash(s)
  local h = 2166136261
  for i = 1, #s do
    h = bxor(h, s:byte(i))
    h = band(h * 16777619, 0xffffffff)  -- stays exact: h < 2^32, prime < 2^25
  end
  return h % 4294967296
end

local function hsv(h, s, v)
  local i = floor(h * 6) % 6
  local f = h * 6 - floor(h * 6)
  local p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
  if i == 0 then return v, t, p elseif i == 1 then return q, v, p
  elseif i == 2 then return p, v, t elseif i == 3 then return p, q, v
  elseif i == 4 then return t, p, v end
  return v, p, q
end

-- RGB gradient PNG of w x h pixels. Colours: a diagonal blend between two
-- hues picked from the seed, with a soft glow ("sun") whose place also comes
-- from the seed. Large pictures are drawn in blocks of k x k pixels (k grows
-- with the size so that at most ~1024 distinct columns and rows are
-- computed): a repeated pixel is a zero under the Sub filter and a repeated
-- row is all zeros under the Up filter, so a 4096x4096 picture costs about
-- what a 1024x1024 one does, and deflates to little. noise = true adds
-- random steps of 0..7 to every filtered byte: a picture that does not
-- compress (4096x4096: about 20 MB), for tests of large answers.
function M.render(w, h, seed, noise)
  seed = seed or 0
  local h1 = (seed % 360) / 360
  local h2 = (h1 + 0.22 + (floor(seed / 360) % 20) / 100) % 1
  local r1, g1, b1 = hsv(h1, 0.55, 0.95)
  local r2, g2, b2 = hsv(h2, 0.75, 0.35)
  local gx = w * (0.25 + (floor(seed / 7200) % 50) / 100)
  local gy = h * (0.2 + (floor(seed / 360000) % 30) / 100)
  local radius = min(w, h) * 0.35
  local inv_r2 = 1 / (radius * radius)
  local k = max(1, floor((max(w, h) + 1023) / 1024))
  local stride = 1 + w * 3
  local raw = ffi.new("uint8_t[?]", stride * h)  -- zero-filled
  local sx, sy = 0.55 / max(w - 1, 1), 0.45 / max(h - 1, 1)
  local dr, dg, db = r2 - r1, g2 - g1, b2 - b1
  for y = 0, h - 1 do
    local row = y * stride
    if y % k ~= 0 then
      raw[row] = 2 -- Up filter: same as the row above, all zeros
    else
      raw[row] = 1 -- Sub filter
      local yc = y + k * 0.5
      local ty = yc * sy
      local dy2 = (yc - gy) * (yc - gy)
      local pr, pg, pb = 0, 0, 0
      for x = 0, w - 1, k do
        local xc = x + k * 0.5
        local t = xc * sx + ty
        local glow = 1 - ((xc - gx) * (xc - gx) + dy2) * inv_r2
        if glow < 0 then glow = 0 else glow = glow * glow * 0.6 end
        local keep = 1 - glow
        local r = floor(((r1 + dr * t) * keep + glow) * 255 + 0.5)
        local g = floor(((g1 + dg * t) * keep + glow * 0.95) * 255 + 0.5)
        local b = floor(((b1 + db * t) * keep + glow * 0.8) * 255 + 0.5)
        local o = row + 1 + x * 3
        raw[o], raw[o + 1], raw[o + 2] = r - pr, g - pg, b - pb
        pr, pg, pb = r, g, b
      end
    end
  end
  if noise then
    local x = seed % 4294967295 + 1 -- xorshift32, never 0
    for y = 0, h - 1 do
      local row = y * stride
      for o = row + 1, row + stride - 1 do
        x = bxor(x, bit.lshift(x, 13)); x = bxor(x, rshift(x, 17)); x = bxor(x, bit.lshift(x, 5))
        raw[o] = raw[o] + band(x, 7)
      end
    end
  end
  local idat = M.deflate(raw, stride * h, 1, false, 3)
  return "\137PNG\r\n\26\n"
    .. chunk("IHDR", be32(w) .. be32(h) .. "\8\2\0\0\0")
    .. chunk("IDAT", idat)
    .. chunk("IEND", "")
end

-- PNG (from M.render) grown to TOTAL bytes by an ancillary, private,
-- safe-to-copy chunk "omXp" of pseudo-random bytes (from SEED) just before
-- IEND: decoders skip it, so the picture is the same; PNG itself when TOTAL
-- leaves no room for the chunk's 12 bytes of framing.
function M.pad(p, total, seed)
  local n = floor(total) - #p - 12
  if n < 0 then return p end
  local words = floor((n + 3) / 4)
  local buf = ffi.new("uint32_t[?]", max(words, 1))
  local x = bit.bor(band(seed or 1, 0x7fffffff), 1)
  for i = 0, words - 1 do -- xorshift32
    x = bxor(x, bit.lshift(x, 13))
    x = bxor(x, rshift(x, 17))
    x = bxor(x, bit.lshift(x, 5))
    buf[i] = x
  end
  return p:sub(1, #p - 12) .. chunk("omXp", ffi.string(buf, n)) .. p:sub(-12)
end

return M
