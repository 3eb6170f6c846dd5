-- The C core's parsers: base64, image sniffing, JSON quoting, UTF-8 checks
-- and the image scanner for service responses (src/base64.c, src/sniff.c,
-- src/json.c). Runs on Lua 5.1-5.4 and LuaJIT: no bit operators, no
-- string.pack, no utf8 library here.
local core = require "omixa.core"
local helpers = require "helpers"

local has_cjson, cjson = pcall(require, "cjson")

local fixture = helpers.fixture

-- Deterministic bytes on every Lua (Park-Miller: products stay below 2^53).
local function random_bytes(n, seed)
  local x = seed or 12345
  local t, floor = {}, math.floor
  for i = 1, n do
    x = (x * 16807) % 2147483647
    t[i] = string.char(floor(x / 8) % 256)
  end
  return table.concat(t)
end

-- Reference base64, arithmetic only (no bit operators on 5.1).
local ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
local function ref_encode(s)
  local out, floor = {}, math.floor
  for i = 1, #s, 3 do
    local a, b, c = s:byte(i, i + 2)
    local v = a * 65536 + (b or 0) * 256 + (c or 0)
    local d1, d2 = floor(v / 262144) % 64, floor(v / 4096) % 64
    local d3, d4 = floor(v / 64) % 64, v % 64
    out[#out + 1] = ALPHABET:sub(d1 + 1, d1 + 1) .. ALPHABET:sub(d2 + 1, d2 + 1)
      .. (b and ALPHABET:sub(d3 + 1, d3 + 1) or "=")
      .. (c and ALPHABET:sub(d4 + 1, d4 + 1) or "=")
  end
  return table.concat(out)
end

local DIGIT = {}
for i = 1, 64 do DIGIT[ALPHABET:sub(i, i)] = i - 1 end
local function ref_decode(s)
  s = s:gsub("=", "")
  local out, floor = {}, math.floor
  for i = 1, #s, 4 do
    local g = s:sub(i, i + 3)
    local v, k = 0, #g
    for j = 1, 4 do v = v * 64 + (DIGIT[g:sub(j, j)] or 0) end
    local b1, b2, b3 = floor(v / 65536) % 256, floor(v / 256) % 256, v % 256
    out[#out + 1] = string.char(b1)
    if k >= 3 then out[#out + 1] = string.char(b2) end
    if k == 4 then out[#out + 1] = string.char(b3) end
  end
  return table.concat(out)
end

-- Reference JSON quoting.
local function ref_quote(s)
  local named = { ['"'] = '\\"', ["\\"] = "\\\\", ["\b"] = "\\b", ["\f"] = "\\f",
                  ["\n"] = "\\n", ["\r"] = "\\r", ["\t"] = "\\t" }
  return '"' .. s:gsub('[%z\1-\31"\\]', function(c)
    return named[c] or string.format("\\u%04x", c:byte())
  end) .. '"'
end

local function all_bytes()
  local t = {}
  for i = 0, 255 do t[#t + 1] = string.char(i) end
  return table.concat(t)
end

describe("core.b64encode / core.b64decode", function()
  it("encodes and decodes the RFC 4648 test vectors", function()
    local vectors = {
      { "", "" }, { "f", "Zg==" }, { "fo", "Zm8=" }, { "foo", "Zm9v" },
      { "foob", "Zm9vYg==" }, { "fooba", "Zm9vYmE=" }, { "foobar", "Zm9vYmFy" },
    }
    for _, v in ipairs(vectors) do
      assert.are.equal(v[2], core.b64encode(v[1]))
      assert.are.equal(v[1], core.b64decode(v[2]))
    end
  end)

  it("matches `openssl base64 -A` for all 256 byte values", function()
    local expected = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8gISIjJCUmJygpKissLS4vMDEyMzQ1Njc4OTo7PD0+P0BB"
      .. "QkNERUZHSElKS0xNTk9QUVJTVFVWV1hZWltcXV5fYGFiY2RlZmdoaWprbG1ub3BxcnN0dXZ3eHl6e3x9fn+AgYKD"
      .. "hIWGh4iJiouMjY6PkJGSk5SVlpeYmZqbnJ2en6ChoqOkpaanqKmqq6ytrq+wsbKztLW2t7i5uru8vb6/wMHCw8TF"
      .. "xsfIycrLzM3Oz9DR0tPU1dbX2Nna29zd3t/g4eLj5OXm5+jp6uvs7e7v8PHy8/T19vf4+fr7/P3+/w=="
    assert.are.equal(expected, core.b64encode(all_bytes()))
    assert.are.equal(all_bytes(), core.b64decode(expected))
  end)

  it("round-trips random binary of every length 0..64, padded or not", function()
    for n = 0, 64 do
      local s = random_bytes(n, 1000 + n)
      local enc = core.b64encode(s)
      assert.are.equal(ref_encode(s), enc)
      assert.are.equal(s, ref_decode(enc))
      assert.are.equal(s, core.b64decode(enc))
      assert.are.equal(s, core.b64decode((enc:gsub("=", ""))))
    end
  end)

  it("round-trips long random binary and agrees with the reference", function()
    local s = random_bytes(100003, 7)
    local enc = core.b64encode(s)
    assert.are.equal(#enc, 4 * math.ceil(#s / 3))
    assert.is_true(enc == ref_encode(s), "encoding differs from the reference")
    assert.is_true(core.b64decode(enc) == s, "round trip differs")
  end)

  it("accepts the URL-safe alphabet, and both alphabets mixed", function()
    assert.are.equal("\251\255\191", core.b64decode("-_-_"))
    assert.are.equal("\251\255\191", core.b64decode("+/+/"))
    assert.are.equal("\251\255\191\251\255\191", core.b64decode("-/+_-_+/"))
    for n = 0, 64 do
      local s = random_bytes(n, 2000 + n)
      local url = core.b64encode(s):gsub("%+", "-"):gsub("/", "_")
      assert.are.equal(s, core.b64decode(url))
      assert.are.equal(s, core.b64decode((url:gsub("=", ""))))
    end
  end)

  it("ignores ASCII whitespace anywhere, padding included", function()
    assert.are.equal("foobar", core.b64decode(" Zm9v\tYm\r\nFy \n"))
    assert.are.equal("f", core.b64decode("Z g = =\n"))
    assert.are.equal("fo", core.b64decode("\tZm8\r\n=\r\n"))
    assert.are.equal("", core.b64decode(" \t\r\n "))
    for n = 0, 64 do
      local s = random_bytes(n, 3000 + n)
      local enc = core.b64encode(s)
      local spaced = enc:gsub("(....)", "%1\r\n"):gsub("(.)(.)", "%1 %2\t")
      assert.are.equal(s, core.b64decode(spaced))
    end
    local s = random_bytes(10000, 5)
    local wrapped = core.b64encode(s):gsub(("."):rep(76), "%0\r\n")
    assert.are.equal(s, core.b64decode(wrapped))
  end)

  it("enforces the padding rules", function()
    assert.are.equal("f", core.b64decode("Zg=="))
    assert.are.equal("f", core.b64decode("Zg"))
    assert.are.equal("fo", core.b64decode("Zm8="))
    local bad = {
      { "Zg=", "incomplete base64 padding at byte 3" },
      { "Zg= ", "incomplete base64 padding at byte 3" },
      { "Zm8==", "too much base64 padding '=' at byte 5" },
      { "Zg===", "too much base64 padding '=' at byte 5" },
      { "Zm9v=", "misplaced base64 padding '=' at byte 5" },
      { "Zm9v====", "misplaced base64 padding '=' at byte 5" },
      { "=", "misplaced base64 padding '=' at byte 1" },
      { "Z===", "misplaced base64 padding '=' at byte 2" },
      { "Zg==Zg==", "base64 character 'Z' after padding at byte 5" },
      { "Zm8=Zm8=", "base64 character 'Z' after padding at byte 5" },
      { "Zg== x", "base64 character 'x' after padding at byte 6" },
    }
    for _, b in ipairs(bad) do
      local s, err = core.b64decode(b[1])
      assert.is_nil(s)
      assert.are.equal(b[2], err)
    end
  end)

  it("rejects a final group of a single character", function()
    local cases = {
      { "Z", 1 }, { "Zm9vY", 5 }, { "Zm9v Y ", 6 }, { "Zm9vYmFyZ\n", 9 },
    }
    for _, c in ipairs(cases) do
      local s, err = core.b64decode(c[1])
      assert.is_nil(s)
      assert.are.equal("truncated base64 (final group of one character) at byte " .. c[2], err)
    end
  end)

  it("names any other character and its byte offset", function()
    local cases = {
      { "abcdef!", "invalid base64 character '!' at byte 7" },
      { "Zm9v.Ym", "invalid base64 character '.' at byte 5" },
      { "Zm\0v", "invalid base64 character 0x00 at byte 3" },
      { "Zm9v\255", "invalid base64 character 0xFF at byte 5" },
      { "Zm9v\\/", "invalid base64 character '\\' at byte 5" },
      { "Zm9v\"", "invalid base64 character '\"' at byte 5" },
      { "Zm9v\11", "invalid base64 character 0x0B at byte 5" },
      { "Zm9v\12", "invalid base64 character 0x0C at byte 5" },
      { "Zm9vYmFy" .. ("QUJD"):rep(100) .. "*", "invalid base64 character '*' at byte 409" },
    }
    for _, c in ipairs(cases) do
      local s, err = core.b64decode(c[1])
      assert.is_nil(s)
      assert.are.equal(c[2], err)
    end
  end)

  it("raises on a non-string argument", function()
    assert.has_error(function() core.b64decode(nil) end)
    assert.has_error(function() core.b64encode({}) end)
  end)

  it("takes an omixa.buffer", function()
    assert.are.equal("", core.b64encode(core.buffer()))
    assert.are.equal("", core.b64decode(core.buffer()))
  end)
end)

describe("core.sniff", function()
  local fixtures = {
    { "red-300x2.png", "image/png", "png", 300, 2 },
    { "baseline-260x3.jpg", "image/jpeg", "jpeg", 260, 3 },
    { "progressive-33x270.jpg", "image/jpeg", "jpeg", 33, 270 },
    { "lossy-301x7.webp", "image/webp", "webp", 301, 7 },
    { "lossless-290x5.webp", "image/webp", "webp", 290, 5 },
    { "alpha-13x11.webp", "image/webp", "webp", 13, 11 },
    { "green-17x3.gif", "image/gif", "gif", 17, 3 },
  }

  it("knows the fixtures made with ImageMagick, with their size", function()
    for _, f in ipairs(fixtures) do
      assert.are.same({ mime = f[2], format = f[3], width = f[4], height = f[5] },
                      core.sniff(fixture(f[1])))
    end
  end)

  it("sees which WebP and JPEG kinds the fixtures are", function()
    assert.are.equal("VP8 ", fixture("lossy-301x7.webp"):sub(13, 16))
    assert.are.equal("VP8L", fixture("lossless-290x5.webp"):sub(13, 16))
    assert.are.equal("VP8X", fixture("alpha-13x11.webp"):sub(13, 16))
    assert.truthy(fixture("alpha-13x11.webp"):find("ALPH", 1, true))
    assert.truthy(fixture("baseline-260x3.jpg"):find("\255\192", 1, true))
    assert.falsy(fixture("baseline-260x3.jpg"):find("\255\194", 1, true))
    assert.truthy(fixture("progressive-33x270.jpg"):find("\255\194", 1, true))
    assert.falsy(fixture("progressive-33x270.jpg"):find("\255\192", 1, true))
  end)

  it("gives nil for a header cut before the size (mime and format only when told it is a prefix)", function()
    -- the shortest prefix with the magic, and the shortest with the size
    local need = {
      ["red-300x2.png"] = { 8, 24 },
      ["green-17x3.gif"] = { 6, 10 },
      ["lossy-301x7.webp"] = { 12, 30 },
      ["lossless-290x5.webp"] = { 12, 25 },
      ["alpha-13x11.webp"] = { 12, 30 },
    }
    for _, f in ipairs(fixtures) do
      local data = fixture(f[1])
      local magic, sized
      if f[3] == "jpeg" then
        local sof = data:find("\255[\192\194]")
        magic, sized = 3, sof + 8
      else
        magic, sized = need[f[1]][1], need[f[1]][2]
      end
      for k = 0, #data do
        local info, head = core.sniff(data:sub(1, k)), core.sniff(data:sub(1, k), true)
        if k < magic then
          assert.is_nil(info)
          assert.is_nil(head)
        elseif k < sized then
          assert.is_nil(info, f[1] .. " cut after " .. k .. " bytes")
          assert.are.same({ mime = f[2], format = f[3] }, head)
        else
          assert.are.same({ mime = f[2], format = f[3], width = f[4], height = f[5] }, info)
          assert.are.same(info, head)
        end
      end
    end
  end)

  local function seg(marker, body)
    local len = #body + 2
    return "\255" .. string.char(marker, math.floor(len / 256), len % 256) .. body
  end
  local function sof_body(w, h)
    return "\8" .. string.char(math.floor(h / 256), h % 256, math.floor(w / 256), w % 256)
      .. "\3\1\17\0\2\17\1\3\17\1"
  end
  -- DHT-like contents that would read as 0x0909 x 0x0909 if taken for a frame
  local decoy = "\8\9\9\9\9\0\0\0"

  it("walks JPEG markers: fill bytes, standalone markers, lengths, not-SOF C4/C8/CC", function()
    local jpeg = "\255\216"
      .. seg(0xE0, "JFIF\0\1\1\0\0\1\0\1\0\0")
      .. "\255\255\255" .. seg(0xE1, ("\255\192"):rep(20))  -- SOF-looking bytes inside a segment
      .. "\255\1" .. "\255\208" .. "\255\215"                -- TEM, RST0, RST7 stand alone
      .. seg(0xC4, decoy) .. seg(0xC8, decoy) .. seg(0xCC, decoy)
      .. seg(0xFE, "comment")
      .. "\255\255" .. seg(0xC1, sof_body(0x1234, 0x0567))
      .. seg(0xDA, "\1\1\0\0\63\0") .. "\1\2\3\255\217"
    assert.are.same({ mime = "image/jpeg", format = "jpeg", width = 0x1234, height = 0x0567 },
                    core.sniff(jpeg))
  end)

  it("reads the size from every SOFn marker", function()
    for m = 0xC0, 0xCF do
      local jpeg = "\255\216" .. seg(m, sof_body(640, 480)) .. seg(0xC0, sof_body(1, 1))
      local info = core.sniff(jpeg)
      if m == 0xC4 or m == 0xC8 or m == 0xCC then
        assert.are.same({ mime = "image/jpeg", format = "jpeg", width = 1, height = 1 }, info)
      else
        assert.are.same({ mime = "image/jpeg", format = "jpeg", width = 640, height = 480 }, info)
      end
    end
  end)

  it("omixa.sniff gives nil for a PNG cut after 12 bytes (before its size)", function()
    local omixa = require "omixa"
    local png = fixture("red-300x2.png")
    assert.is_nil(omixa.sniff(png:sub(1, 12)))
    assert.is_nil(omixa.sniff(png:sub(1, 23)))
    assert.are.same({ mime = "image/png", format = "png", width = 300, height = 2 }, omixa.sniff(png:sub(1, 24)))
  end)

  it("gives nil for a JPEG cut before its frame header", function()
    local cases = {
      "\255\216\255",                                                -- nothing after
      "\255\216\255\255\255",                                        -- only fill
      "\255\216\255\224\0",                                          -- half a length
      "\255\216" .. seg(0xE0, "JFIF"):sub(1, 5),                     -- segment cut short
      "\255\216" .. seg(0xE0, "JFIF"),                               -- no marker after
      "\255\216\255\192\0\17\8\0\5",                                -- SOF cut short
    }
    for _, jpeg in ipairs(cases) do
      assert.is_nil(core.sniff(jpeg))
      assert.are.same({ mime = "image/jpeg", format = "jpeg" }, core.sniff(jpeg, true))
    end
  end)

  it("gives a JPEG without a size when the markers are broken", function()
    local bare = { mime = "image/jpeg", format = "jpeg" }
    local cases = {
      "\255\216\255\224\0\1JFIF",                                    -- length < 2
      "\255\216" .. seg(0xE0, "JFIF") .. "xx" .. seg(0xC0, sof_body(5, 5)), -- garbage between
      "\255\216" .. seg(0xDA, "\1\1\0\0\63\0") .. seg(0xC0, sof_body(5, 5)), -- SOS first
      "\255\216\255\217" .. seg(0xC0, sof_body(5, 5)),               -- EOI first
      "\255\216\255\0" .. seg(0xC0, sof_body(5, 5)),                 -- stuffed zero
      "\255\216" .. seg(0xC0, sof_body(5, 0)),                       -- height 0 (DNL)
      "\255\216" .. seg(0xC0, sof_body(0, 5)),                       -- width 0
      "\255\216\255\192\0\5\8\0\5",                                  -- SOF too short
    }
    for _, jpeg in ipairs(cases) do
      assert.are.same(bare, core.sniff(jpeg))
    end
  end)

  local function ftyp(major, ...)
    local body = major .. "\0\0\0\0" .. table.concat({ ... })
    local size = #body + 8
    return string.char(0, 0, math.floor(size / 256), size % 256) .. "ftyp" .. body
  end

  it("recognises HEIC, HEIF and AVIF from the ftyp brands, without a size", function()
    local heic = { mime = "image/heic", format = "heic" }
    local heif = { mime = "image/heif", format = "heif" }
    local avif = { mime = "image/avif", format = "avif" }
    local cases = {
      { ftyp("heic", "mif1", "heic"), heic },
      { ftyp("heix", "mif1"), heic },
      { ftyp("hevc", "msf1"), heic },
      { ftyp("hevx"), heic },
      { ftyp("mif1", "miaf", "heic"), heic },
      { ftyp("mif1", "miaf", "MiHE"), heif },
      { ftyp("msf1", "iso8"), heif },
      { ftyp("avif", "mif1", "miaf"), avif },
      { ftyp("avis", "msf1"), avif },
      { ftyp("mif1", "avif", "heic"), avif },
      { ftyp("miaf", "mif1"), heif },
      { ftyp("isom", "iso2", "mp41"), nil },
      { ftyp("mp42"), nil },
      -- the box ends before a brand: it does not count
      { "\0\0\0\16ftypmif1\0\0\0\0heic", heif },
      -- size 0: the box runs to the end of the data
      { "\0\0\0\0ftypmif1\0\0\0\0heic", heic },
      -- a box too small to hold a major brand and minor version
      { "\0\0\0\12ftypheic\0\0\0\0", nil },
      { "\0\0\0\24ftyp", nil },
      { "\0\0\0\24ftyphei", nil },
      { "\0\0\0\24ftypheic", heic },
    }
    for i, c in ipairs(cases) do
      assert.are.same(c[2], core.sniff(c[1]), "case " .. i)
    end
  end)

  it("gives PNG, GIF and WebP without a size when the header is inconsistent", function()
    local png = fixture("red-300x2.png")
    assert.are.same({ mime = "image/png", format = "png" }, core.sniff(png:sub(1, 12) .. "IHDX" .. png:sub(17)))
    assert.are.same({ mime = "image/png", format = "png" }, core.sniff(png:sub(1, 16) .. "\0\0\0\0" .. png:sub(21)))
    assert.are.same({ mime = "image/png", format = "png" }, core.sniff(png:sub(1, 16) .. "\128\0\0\1" .. png:sub(21)))
    assert.are.same({ mime = "image/gif", format = "gif", width = 258, height = 1 },
                    core.sniff("GIF87a\2\1\1\0"))
    assert.are.same({ mime = "image/webp", format = "webp" },
                    core.sniff("RIFF\0\0\0\0WEBPALPH\0\0\0\0" .. ("\0"):rep(20)))
    local lossy = fixture("lossy-301x7.webp")
    assert.are.same({ mime = "image/webp", format = "webp" }, core.sniff(lossy:sub(1, 23) .. "\0\0\0" .. lossy:sub(27)))
    local lossless = fixture("lossless-290x5.webp")
    assert.are.same({ mime = "image/webp", format = "webp" }, core.sniff(lossless:sub(1, 20) .. "\0" .. lossless:sub(22)))
  end)

  it("returns nil for anything else", function()
    local cases = {
      "", "G", "GIF88a\1\0\1\0", "RIFF\0\0\0\0WAVEfmt ", "\137PNG\r\n\26", "\255\216",
      "\255\216\0", "BM\0\0", "<svg xmlns='http://www.w3.org/2000/svg'/>", "%PDF-1.4",
      random_bytes(1000, 99), ("\0"):rep(64),
    }
    for _, s in ipairs(cases) do
      assert.is_nil(core.sniff(s))
    end
    assert.is_nil(core.sniff(core.buffer()))
    assert.has_error(function() core.sniff(42) end)
  end)

  it("survives damaged headers of every kind", function()
    local seed = 1
    for _, f in ipairs(fixtures) do
      local data = fixture(f[1])
      for k = 1, math.min(#data, 64) do
        for _, b in ipairs({ 0, 1, 127, 128, 254, 255 }) do
          local bent = data:sub(1, k - 1) .. string.char(b) .. data:sub(k + 1)
          local info = core.sniff(bent:sub(1, 40 + (seed % 60)))
          seed = seed + 7
          assert.is_true(info == nil or type(info.mime) == "string")
        end
      end
    end
  end)
end)

describe("core.json_quote", function()
  it("escapes quotes and backslashes, not slashes", function()
    assert.are.equal([["a\"b\\c/d"]], core.json_quote('a"b\\c/d'))
    assert.are.equal('""', core.json_quote(""))
    assert.are.equal('"\\\\\\\\"', core.json_quote("\\\\"))
  end)

  it("escapes every control character, and only those", function()
    local ctl = {}
    for i = 0, 31 do ctl[#ctl + 1] = string.char(i) end
    assert.are.equal('"\\u0000\\u0001\\u0002\\u0003\\u0004\\u0005\\u0006\\u0007'
      .. '\\b\\t\\n\\u000b\\f\\r\\u000e\\u000f\\u0010\\u0011\\u0012\\u0013\\u0014'
      .. '\\u0015\\u0016\\u0017\\u0018\\u0019\\u001a\\u001b\\u001c\\u001d\\u001e\\u001f"',
      core.json_quote(table.concat(ctl)))
    assert.are.equal('" \127~"', core.json_quote(" \127~"))
    assert.are.equal(ref_quote(all_bytes()), core.json_quote(all_bytes()))
  end)

  it("passes UTF-8 and other high bytes through", function()
    assert.are.equal('"😀 中文 é"', core.json_quote("😀 中文 é"))
    assert.are.equal('"\255\128"', core.json_quote("\255\128"))
  end)

  it("quotes multi-megabyte text like the reference, at every alignment", function()
    local chunk = random_bytes(997, 3)
    local big = chunk:rep(3000)
    assert.is_true(core.json_quote(big) == ref_quote(big), "big quote differs")
    local plain = ("abcdefgh"):rep(400000)
    assert.is_true(core.json_quote(plain) == '"' .. plain .. '"')
    for n = 0, 40 do
      local s = ("x"):rep(n) .. "\n" .. ("y"):rep(17 - n % 17) .. '"'
      assert.are.equal(ref_quote(s), core.json_quote(s))
    end
  end)

  if has_cjson then
    it("gives what cjson decodes back", function()
      local s = all_bytes():sub(1, 128) .. "😀/"
      assert.are.equal(s, cjson.decode(core.json_quote(s)))
    end)
  end
end)

describe("core.utf8_check", function()
  it("accepts valid UTF-8", function()
    local good = {
      "", "plain ascii", "é", "中文字符", "😀👍🏽", "\0",
      "\127", "\194\128", "\223\191", "\224\160\128", "\237\159\191", "\238\128\128",
      "\239\191\191", "\240\144\128\128", "\244\143\191\191",
      ("a"):rep(1000) .. "中" .. ("b"):rep(9),
    }
    for _, s in ipairs(good) do
      assert.are.equal(true, core.utf8_check(s))
    end
  end)

  it("gives the offset of the first bad sequence", function()
    local bad = {
      { "\128", 1 },                    -- stray continuation
      { "ab\191", 3 },
      { "é\128", 3 },
      { "\192\128", 1 },                -- overlong 2-byte (C0, C1)
      { "\193\191", 1 },
      { "\224\128\128", 1 },            -- overlong 3-byte
      { "\224\159\191", 1 },
      { "\240\128\128\128", 1 },        -- overlong 4-byte
      { "\240\143\191\191", 1 },
      { "x\237\160\128", 2 },           -- surrogates D800..DFFF
      { "\237\191\191", 1 },
      { "\244\144\128\128", 1 },        -- above U+10FFFF
      { "\245\128\128\128", 1 },
      { "\248\136\128\128\128", 1 },
      { "\254", 1 }, { "\255", 1 },
      { "a\226\130", 2 },               -- truncated at the end
      { "\240\159\152", 1 },
      { "\194", 1 },
      { "\226\130a", 1 },               -- cut short by another byte
      { "\226\130\226\130\172", 1 },
      { "\240\159\152\128\240\159\152", 5 },
      { ("a"):rep(1000) .. "\255", 1001 },
      { ("中"):rep(7) .. "\237\160\128", 22 },
    }
    for _, b in ipairs(bad) do
      local ok, pos = core.utf8_check(b[1])
      assert.is_nil(ok)
      assert.are.equal(b[2], pos)
    end
  end)
end)

describe("core.decode_images", function()
  local function b64(s) return core.b64encode(s) end

  it("returns no images and the text itself when there are none", function()
    local texts = {
      '{"created":1,"data":[]}',
      '{"created":1,"data":[{"url":"https://example.com/a.png"},{"url":null}]}',
      '{"a":1}', "[1,2,3]", '"just a string"', "12", "-1.5e+3", "true", "null", " {} ",
      '{"error":{"message":"Insufficient wallet balance.","type":"x","code":"y"}}',
    }
    for _, t in ipairs(texts) do
      local images, rest = core.decode_images(t)
      assert.are.same({}, images)
      assert.are.equal(t, rest)
    end
  end)

  it("decodes one image and leaves its number in the rest", function()
    local png = fixture("red-300x2.png")
    local body = '{"created":1780660800,"data":[{"b64_json":"' .. b64(png)
      .. '","url":null,"revised_prompt":"a \\"red\\" \\/ line"}],"usage":{"billed_amount":"0.039000"}}'
    local images, rest = core.decode_images(body)
    assert.are.equal(1, #images)
    assert.is_true(images[1] == png)
    assert.are.equal('{"created":1780660800,"data":[{"b64_json":"1","url":null,'
      .. '"revised_prompt":"a \\"red\\" \\/ line"}],"usage":{"billed_amount":"0.039000"}}', rest)
    if has_cjson then
      local doc = cjson.decode(rest)
      assert.are.equal("1", doc.data[1].b64_json)
      assert.are.equal("0.039000", doc.usage.billed_amount)
    end
  end)

  it("decodes ten images in order, with url-only and null items between", function()
    local originals, items = {}, {}
    for i = 1, 10 do
      originals[i] = random_bytes(i * 37 + i % 3, i)
      items[#items + 1] = '{"b64_json":"' .. b64(originals[i]) .. '"}'
      if i % 3 == 0 then items[#items + 1] = '{"url":"https://example.com/' .. i .. '.png"}' end
      if i % 4 == 0 then items[#items + 1] = '{"b64_json":null,"url":"u"}' end
    end
    local body = '{"data":[' .. table.concat(items, ",") .. "]}"
    local images, rest = core.decode_images(body)
    assert.are.equal(10, #images)
    for i = 1, 10 do assert.are.equal(originals[i], images[i]) end
    local k = 0
    local expected = body:gsub('"b64_json":"[^"]*"', function()
      k = k + 1
      return '"b64_json":"' .. k .. '"'
    end)
    assert.are.equal(expected, rest)
  end)

  it("decodes \\/ and other escapes inside the base64 string", function()
    local raw = "\255\255\255\251\239\190" .. random_bytes(299, 4)
    local enc = b64(raw)
    assert.truthy(enc:find("/", 1, true))
    local escaped = enc:gsub("/", "\\/")
    local images = core.decode_images('{"data":[{"b64_json":"' .. escaped .. '"}]}')
    assert.are.equal(raw, images[1])
    -- \u escapes for digits, padding and '/', escaped whitespace ignored
    local lines = {}
    for i = 1, #enc, 60 do
      lines[#lines + 1] = enc:sub(i, i + 59):gsub("A", "\\u0041"):gsub("/", "\\u002F")
        :gsub("%+", "\\u002b"):gsub("=", "\\u003d")
    end
    local u = table.concat(lines, "\\r\\n\\t\\u0020")
    assert.truthy(u:find("\\u003d", 1, true))
    images = core.decode_images('{"data":[{"b64_json":"' .. u .. '"}]}')
    assert.are.equal(raw, images[1])
    assert.are.equal("ABC", core.decode_images('{"data":[{"b64_json":"\\u0051UJD"}]}')[1])
  end)

  it("compares member names after unescaping", function()
    local images, rest = core.decode_images('{"\\u0064ata":[{"b64\\u005fjson":"QUJD"}]}')
    assert.are.same({ "ABC" }, images)
    assert.are.equal('{"\\u0064ata":[{"b64\\u005fjson":"1"}]}', rest)
    images = core.decode_images('{"data":[{"b64\\u005Fjson":"QUJD","\\"b64_json":"QUJD"}]}')
    assert.are.same({ "ABC" }, images)
    -- near misses are not the member
    for _, key in ipairs({ "b64_jsonx", "b64_jso", "B64_json", "b64\\u00dfjson", "b64_json\\u0000" }) do
      local t = '{"data":[{"' .. key .. '":"QUJD"}]}'
      local im, r = core.decode_images(t)
      assert.are.same({}, im)
      assert.are.equal(t, r)
    end
  end)

  it("ignores b64_json and data anywhere but $.data[i].b64_json", function()
    local t = '{"usage":{"b64_json":"QUJD"},"b64_json":"QUJD",'
      .. '"data":[{"meta":{"b64_json":"QUJD"},"b64_json":"REVG","list":[{"b64_json":"QUJD"}]},'
      .. '[{"b64_json":"QUJD"}],"b64_json"],'
      .. '"x":{"data":[{"b64_json":"QUJD"}]},"extra":[{"b64_json":"QUJD"}]}'
    local images, rest = core.decode_images(t)
    assert.are.same({ "DEF" }, images)
    assert.are.equal((t:gsub('"REVG"', '"1"')), rest)
    for _, other in ipairs({
      '[{"data":[{"b64_json":"QUJD"}]}]',
      '{"data":{"b64_json":"QUJD"}}',
      '{"data":[[{"b64_json":"QUJD"}]]}',
      '{"data":"b64_json"}',
    }) do
      local im, r = core.decode_images(other)
      assert.are.same({}, im)
      assert.are.equal(other, r)
    end
  end)

  it("leaves a b64_json that is not a string as it is", function()
    local t = '{"data":[{"b64_json":null},{"b64_json":5},{"b64_json":{"b64_json":"QUJD"}},'
      .. '{"b64_json":["QUJD"]},{"b64_json":true},{"b64_json":"QUJD"}]}'
    local images, rest = core.decode_images(t)
    assert.are.same({ "ABC" }, images)
    assert.are.equal((t:gsub('"b64_json":"QUJD"}%]}$', '"b64_json":"1"}]}')), rest)
  end)

  it("takes every string b64_json, even repeated or empty", function()
    local images, rest = core.decode_images('{"data":[{"b64_json":"QUJD","b64_json":""}]}')
    assert.are.same({ "ABC", "" }, images)
    assert.are.equal('{"data":[{"b64_json":"1","b64_json":"2"}]}', rest)
  end)

  it("keeps pretty-printed whitespace exactly", function()
    local t = '\r\n{\n  "created" : 1 ,\n\t"data" :\r\n [\n    {\n      "b64_json"  :  "QU JD\\n"  ,'
      .. '\n      "url": null\n    }\n  ]\n}\n  '
    local images, rest = core.decode_images(t)
    assert.are.same({ "ABC" }, images)
    assert.are.equal((t:gsub('"QU JD\\n"', '"1"')), rest)
    if has_cjson then
      assert.are.equal("1", cjson.decode(rest).data[1].b64_json)
    end
  end)

  it("reports bad base64 with the data index and byte offset", function()
    local t = '{"data":[{"url":"u"},{"b64_json":"QUJD!QUJD"}]}'
    local images, msg, what = core.decode_images(t)
    assert.is_nil(images)
    assert.are.equal("base64", what)
    assert.are.equal("invalid base64 in data[2].b64_json at byte " .. t:find("!", 1, true)
      .. " (invalid base64 character '!')", msg)
    local cases = {
      { '{"data":[{"b64_json":"QUJDR"}]}', 1, 27, "truncated base64 (final group of one character)" },
      { '{"data":[{"b64_json":"QQ="}]}', 1, 25, "incomplete base64 padding" },
      { '{"data":[{"b64_json":"QUJD="}]}', 1, 27, "misplaced base64 padding '='" },
      { '{"data":[{},{},{"b64_json":"QUJD\\u00e9"}]}', 3, 33, "invalid base64 character U+00E9" },
      { '{"data":[{"b64_json":"QUJD\\"x"}]}', 1, 27, "invalid base64 character '\"'" },
      { '{"data":[{"b64_json":"QUJD\\\\"}]}', 1, 27, "invalid base64 character '\\'" },
      { '{"data":[{"b64_json":"QUJD\\b"}]}', 1, 27, "invalid base64 character U+0008" },
      { '{"data":[{"b64_json":"QQ==QQ=="}]}', 1, 27, "base64 character 'Q' after padding" },
      { '{"data":[{"b64_json":"QUJD\255"}]}', 1, 27, "invalid base64 character 0xFF" },
    }
    for _, c in ipairs(cases) do
      local im, m, w = core.decode_images(c[1])
      assert.is_nil(im)
      assert.are.equal("base64", w)
      assert.are.equal(string.format("invalid base64 in data[%d].b64_json at byte %d (%s)", c[2], c[3], c[4]), m)
    end
  end)

  it("reports broken JSON with the byte offset", function()
    local cases = {
      { "", "unexpected end of JSON at byte 1" },
      { "  \n", "unexpected end of JSON at byte 4" },
      { '{"data":[{"b64_json":"QUJD', "unterminated string at byte 22" },
      { '{"data":[{"b64_json":"QUJD\\"}]}', "unterminated string at byte 22" },
      { '{"a":"abc', "unterminated string at byte 6" },
      { '{"a', "unterminated string at byte 2" },
      { '{"data":[{"b64_json":"QU\\x"}]}', "invalid escape \\'x' in string at byte 25" },
      { '{"a":"b\\q"}', "invalid escape \\'q' in string at byte 8" },
      { '{"a\\q":1}', "invalid escape \\'q' in string at byte 4" },
      { '{"data":[{"b64_json":"QU\\u12G4"}]}', "invalid \\u escape in string at byte 25" },
      { '{"a":"\\u12"}', "invalid \\u escape in string at byte 7" },
      { '{"data":[{"b64_json":"QU\nJD"}]}', "control character 0x0A in string at byte 25" },
      { '{"a":"x\ty"}', "control character 0x09 in string at byte 8" },
      { '{"da\0ta":1}', "control character 0x00 in string at byte 5" },
      { '{"other":[{"b64_json":"\1"}]}', "control character 0x01 in string at byte 24" },
      { '{"data":[}', "unexpected character '}' at byte 10" },
      { '{"data":[1}', "expected ',' or ']' but found '}' at byte 11" },
      { '{"a":1]', "expected ',' or '}' but found ']' at byte 7" },
      { '{"data":[', "unexpected end of JSON at byte 10" },
      { '{"data":[{"b64_json":"QUJD"}', "unexpected end of JSON at byte 29" },
      { '{"data":[{"b64_json":"QUJD"}]', "unexpected end of JSON at byte 30" },
      { "{} x", "trailing garbage after JSON value at byte 4" },
      { "{}{}", "trailing garbage after JSON value at byte 3" },
      { '{"a":1}}', "trailing garbage after JSON value at byte 8" },
      { "{,}", "expected a member name at byte 2" },
      { '{"a":1,}', "unexpected '}' after ',' at byte 8" },
      { '{"a" 1}', "expected ':' at byte 6" },
      { '{"a":1 "b":2}', "expected ',' or '}' but found '\"' at byte 8" },
      { "[1,]", "unexpected character ']' at byte 4" },
      { "[1 2]", "expected ',' or ']' but found '2' at byte 4" },
      { '{"a":tru}', "invalid literal at byte 6" },
      { '{"a":nul', "unexpected end of JSON at byte 9" },
      { '{"a":-}', "invalid number at byte 7" },
      { '{"a":1.}', "invalid number at byte 8" },
      { '{"a":1e}', "invalid number at byte 8" },
      { '{"a":.5}', "unexpected character '.' at byte 6" },
      { '{"a":+1}', "unexpected character '+' at byte 6" },
      { '{"a":01}', "expected ',' or '}' but found '1' at byte 7" },
      { "\239\187\191{}", "unexpected character 0xEF at byte 1" },
      { "'a'", "unexpected character ''' at byte 1" },
    }
    for _, c in ipairs(cases) do
      local images, msg, what = core.decode_images(c[1])
      assert.is_nil(images)
      assert.are.equal("json", what)
      assert.are.equal(c[2], msg)
    end
  end)

  it("allows nesting 1000 deep, not 1001", function()
    local ok = ("["):rep(1000) .. ("]"):rep(1000)
    local images, rest = core.decode_images(ok)
    assert.are.same({}, images)
    assert.are.equal(ok, rest)
    local deep = ('{"a":'):rep(1000) .. "1" .. ("}"):rep(1000)
    assert.are.equal(deep, select(2, core.decode_images(deep)))
    local images2, msg, what = core.decode_images(("["):rep(1001) .. ("]"):rep(1001))
    assert.is_nil(images2)
    assert.are.equal("json", what)
    assert.are.equal("nesting deeper than 1000 at byte 1001", msg)
    assert.is_nil(core.decode_images(("["):rep(100000)))
  end)

  local small = '{\n "created": 1780660800,\n "data": [\n  {"b64_json": "QUJD\\/+-_\\u0041A==",'
    .. ' "url": null, "revised_prompt": "a \\"fox\\" \\u00e9"},\n  {"url": "https://x/y.png"},\n'
    .. '  {"b64\\u005fjson": "QUJD"}\n ],\n "usage": {"billed_amount": "0.039000", "n": [1, -2.5e3, true, false, null]}\n}'

  it("never accepts a truncated response", function()
    local images, rest = core.decode_images(small)
    assert.are.equal(2, #images)
    assert.are.equal("ABC\255\239\191\0", images[1])
    assert.are.equal("ABC", images[2])
    if has_cjson then
      local doc = cjson.decode(rest)
      assert.are.equal("1", doc.data[1].b64_json)
      assert.are.equal("2", doc.data[3].b64_json)
    end
    for k = 0, #small - 1 do
      local im, msg, what = core.decode_images(small:sub(1, k))
      assert.is_nil(im, "accepted a truncation at " .. k)
      assert.are.equal("json", what)
      assert.truthy(msg:find(" at byte %d+$"))
    end
  end)

  it("survives every single-byte corruption of a response", function()
    local replacements = { "\0", "\1", '"', "\\", "{", "}", "[", "]", ",", ":", " ", "x", "=", "\255" }
    for k = 1, #small do
      for _, r in ipairs(replacements) do
        local bent = small:sub(1, k - 1) .. r .. small:sub(k + 1)
        local a, b, c = core.decode_images(bent)
        if a then
          assert.are.equal("table", type(a))
          assert.are.equal("string", type(b))
        else
          assert.truthy(c == "json" or c == "base64")
          assert.are.equal("string", type(b))
        end
      end
    end
  end)

  it("takes an omixa.buffer", function()
    local images, msg, what = core.decode_images(core.buffer())
    assert.is_nil(images)
    assert.are.equal("unexpected end of JSON at byte 1", msg)
    assert.are.equal("json", what)
    assert.has_error(function() core.decode_images(nil) end)
  end)

  it("decodes a 5 MB image byte-exact, plain and with escaped slashes", function()
    local chunk = random_bytes(65536, 42)
    local parts = {}
    for i = 1, 80 do parts[i] = string.char(i) .. chunk:sub(i, 65535 - i) end
    local big = table.concat(parts)
    assert.is_true(#big > 5000000)
    local enc = core.b64encode(big)
    -- independent check of the encoder on slices of the big input
    for _, off in ipairs({ 0, 3 * 1000, 3 * 700001, #big - (#big % 3) - 300 }) do
      assert.are.equal(ref_encode(big:sub(off + 1, off + 300)), enc:sub(off / 3 * 4 + 1, off / 3 * 4 + 400))
    end
    local body = '{"created":1,"data":[{"b64_json":"' .. enc .. '"}],"usage":{}}'
    local images, rest = core.decode_images(body)
    assert.are.equal(1, #images)
    assert.is_true(images[1] == big, "decoded image differs")
    assert.are.equal('{"created":1,"data":[{"b64_json":"1"}],"usage":{}}', rest)
    images = core.decode_images('{"data":[{"b64_json":"' .. enc:gsub("/", "\\/") .. '"}]}')
    assert.is_true(images[1] == big, "decoded image with \\/ differs")
  end)
end)

-- Numbers at the boundary of the core (issue 13, defect 8): an absurd value
-- is a misuse error, tested before any conversion (converting NaN or a
-- float out of range to an integer is undefined behaviour in C, which the
-- ASan+UBSan run of `make test-asan` catches with float-cast-overflow).
describe("core numbers at the boundary", function()
  local absurd = { 1e300, -1e300, 1 / 0, -1 / 0, 0 / 0, 2 ^ 63, -2 ^ 64, 1.5 }

  it("buf:string(i, j) refuses an absurd index, and takes the extreme integers", function()
    local b = core.buffer()
    for _, v in ipairs(absurd) do
      assert.has_error(function() b:string(v) end)
      assert.has_error(function() b:string(1, v) end)
    end
    assert.equal("", b:string(-2 ^ 53, 2 ^ 53))
    if math.maxinteger then -- Lua 5.3+: an integer past 2^53 is no float
      assert.equal("", b:string(math.mininteger, math.maxinteger))
    end
    b:close()
  end)

  it("core.sse_parser refuses an absurd max_bytes", function()
    for _, v in ipairs(absurd) do
      assert.has_error(function() core.sse_parser(v) end)
      assert.has_error(function() core.sse_parser{ max_bytes = v } end)
    end
    core.sse_parser(2 ^ 53):close()
  end)
end)
