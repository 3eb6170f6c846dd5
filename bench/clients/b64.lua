-- bench/clients/b64.lua — the DIY peer's base64: pure Lua, table-driven,
-- the same code on Lua 5.1-5.4 and LuaJIT (no bit operators).
--
-- A fair peer, not a straw man: each 4-character group is decoded with six
-- 256-entry lookup tables (the bit shifts are folded into the tables, so the
-- loop is lookups and additions), and bytes are turned into a string by
-- string.char over groups of 3 KiB, joined once at the end.
--
--   b64.decode(s) -> bytes | nil, message     (standard alphabet, padding optional)
--   b64.encode(bytes) -> s                     (standard alphabet, padded)

local byte, char = string.byte, string.char
local concat = table.concat
local unpack = table.unpack or unpack -- luacheck: ignore 143 (LuaJIT's global unpack)
local floor = math.floor

local ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"

-- For the sextets a b c d of a group, the bytes are
--   x = a<<2 | b>>4,  y = (b&15)<<4 | c>>2,  z = (c&3)<<6 | d
-- so: x = A[a] + BH[b], y = BL[b] + CH[c], z = CL[c] + D[d].
local A, BH, BL, CH, CL, D = {}, {}, {}, {}, {}, {}
-- Encoding: for bytes x y z, the sextets are
--   x>>2, (x&3)<<4 | y>>4, (y&15)<<2 | z>>6, z&63  (as alphabet bytes at the end)
local XH, XL, YH, YL, ZH, ZL, ENC = {}, {}, {}, {}, {}, {}, {}

for i = 1, 64 do
  local c, v = byte(ALPHABET, i), i - 1
  A[c] = v * 4
  BH[c] = floor(v / 16)
  BL[c] = (v % 16) * 16
  CH[c] = floor(v / 4)
  CL[c] = (v % 4) * 64
  D[c] = v
  ENC[v] = c
end
for v = 0, 255 do
  XH[v] = floor(v / 4)
  XL[v] = (v % 4) * 16
  YH[v] = floor(v / 16)
  YL[v] = (v % 16) * 4
  ZH[v] = floor(v / 64)
  ZL[v] = v % 64
end

local GROUP = 1024 -- 4-character groups per string.char call (3 KiB of output)

local b64 = {}

local function decode(s)
  local n = #s
  if byte(s, n) == 61 then n = n - 1 end -- "="
  if byte(s, n) == 61 then n = n - 1 end
  local full = n - n % 4
  local parts, np = {}, 0
  local buf = {}
  local i = 1
  while i <= full do
    local stop = i + 4 * GROUP - 1
    if stop > full then stop = full end
    local k = 0
    for j = i, stop, 4 do
      local a, b, c, d = byte(s, j, j + 3)
      local bb, cc = BH[b], CH[c]
      buf[k + 1] = A[a] + bb
      buf[k + 2] = BL[b] + cc
      buf[k + 3] = CL[c] + D[d]
      k = k + 3
    end
    np = np + 1
    parts[np] = char(unpack(buf, 1, k))
    i = stop + 1
  end
  local left = n - full
  if left == 2 then
    local a, b = byte(s, full + 1, full + 2)
    np = np + 1
    parts[np] = char(A[a] + BH[b])
  elseif left == 3 then
    local a, b, c = byte(s, full + 1, full + 3)
    np = np + 1
    parts[np] = char(A[a] + BH[b], BL[b] + CH[c])
  elseif left == 1 then
    error("base64: truncated input")
  end
  return concat(parts)
end

-- An invalid character makes a lookup nil and the arithmetic raise: caught
-- here once, instead of a test per character in the loop.
function b64.decode(s)
  local ok, out = pcall(decode, s)
  if not ok then return nil, "invalid base64" end
  return out
end

function b64.encode(s)
  local n = #s
  local full = n - n % 3
  local parts, np = {}, 0
  local buf = {}
  local i = 1
  while i <= full do
    local stop = i + 3 * GROUP - 1
    if stop > full then stop = full end
    local k = 0
    for j = i, stop, 3 do
      local x, y, z = byte(s, j, j + 2)
      buf[k + 1] = ENC[XH[x]]
      buf[k + 2] = ENC[XL[x] + YH[y]]
      buf[k + 3] = ENC[YL[y] + ZH[z]]
      buf[k + 4] = ENC[ZL[z]]
      k = k + 4
    end
    np = np + 1
    parts[np] = char(unpack(buf, 1, k))
    i = stop + 1
  end
  local left = n - full
  if left == 1 then
    local x = byte(s, n)
    np = np + 1
    parts[np] = char(ENC[XH[x]], ENC[XL[x]], 61, 61)
  elseif left == 2 then
    local x, y = byte(s, n - 1, n)
    np = np + 1
    parts[np] = char(ENC[XH[x]], ENC[XL[x] + YH[y]], ENC[YL[y]], 61)
  end
  return concat(parts)
end

return b64
