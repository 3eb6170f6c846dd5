-- Byte-exact images from the scanning transport (issue #6 point 4, "Specs
-- stay functional"). A 2xx JSON answer is decoded while it arrives, chunk by
-- chunk (src/transport.c scan_images, src/json.c, src/base64.c); here every
-- workload shape must give exactly the images of a reference that never went
-- through that scanner:
--   * the same answer fetched with the curl command line (the same request
--     body, from client:prepare, and the same fault in X-Omixa-Fault) and
--     decoded with lua-cjson + core.b64decode;
--   * the stand-in's own image bytes (raw_image = true: no base64 at all);
--   * for answers written here (member order, escapes, several distinct
--     images, a 6 MiB image), the bytes they were written from.
-- Each shape is asked through client:generate and through a job
-- (client:start + job:wait). Errors must be the documented kinds, the same
-- whatever the delivery, and never come with images.
--
-- What the stand-in cannot do, so answers are written here instead: its
-- members come in one order (created, data[b64_json, url, revised_prompt],
-- usage), its n images are all the same picture, and its largest image (4K
-- PNG) is about 500 KB.
local omixa = require "omixa"
local core = require "omixa.core"
local cjson = require "cjson"
local helpers = require "helpers"

local MiB = 1024 * 1024
local unpack = table.unpack or unpack -- luacheck: ignore 143
local rep, char, format = string.rep, string.char, string.format
local q = helpers.quote

local read_file, write_file = helpers.read_file, helpers.write_file

-- N pseudo-random bytes (Park–Miller, exact in doubles and integers alike),
-- the same on every Lua for the same SEED.
local function bytes_of(n, seed)
  local x = seed % 2147483646 + 1
  local parts, t = {}, {}
  for i = 1, n do
    x = x * 16807 % 2147483647
    t[#t + 1] = x % 256
    if #t == 4096 or i == n then
      parts[#parts + 1] = char(unpack(t))
      t = {}
    end
  end
  return table.concat(parts)
end

-- N bytes from rotations of a random 64 KiB block (SEED picks the
-- rotations), so that base64 groups fall differently in each.
local block64k
local function big_bytes(n, seed)
  block64k = block64k or bytes_of(65536, 77)
  local block = block64k
  local parts, have, k = {}, 0, 0
  while have < n do
    k = k + 1
    local r = (k * 7919 + (seed or 0) * 104729) % #block + 1
    local piece = block:sub(r) .. block:sub(1, r - 1)
    if have + #piece > n then piece = piece:sub(1, n - have) end
    parts[#parts + 1] = piece
    have = have + #piece
  end
  return table.concat(parts)
end

-- 1-based offset of the first byte where A and B differ (#A + 1 when B
-- only has more).
local function first_diff(a, b)
  local n = math.min(#a, #b)
  local i = 1
  while i <= n do
    local j = math.min(i + 4095, n)
    if a:sub(i, j) ~= b:sub(i, j) then
      for k = i, j do
        if a:byte(k) ~= b:byte(k) then return k end
      end
    end
    i = j + 1
  end
  return n + 1
end

-- GOT is exactly WANT, with a message that says where it is not (never the
-- megabytes themselves).
local function same_bytes(want, got, what)
  assert.is_string(got, what .. ": not a string")
  if got ~= want then
    assert.is_true(false, format("%s: %d bytes, want %d; first difference at byte %d",
      what, #got, #want, first_diff(want, got)))
  end
end

-- IMAGES (and INFO) are the reference images WANT, byte for byte.
local function same_images(want, images, info, what)
  assert.is_true(type(images) == "table", what .. ": expected images, got " .. tostring(info))
  assert.equal(#want, #images, what .. ": number of images")
  assert.equal(#want, #info.images, what .. ": number of info.images")
  for i = 1, #want do
    same_bytes(want[i], images[i], what .. ": image " .. i)
    assert.equal(#want[i], info.images[i].bytes, what .. ": info.images[" .. i .. "].bytes")
  end
end

-- Images of a JSON answer, decoded without the scanner: lua-cjson, then
-- core.b64decode on each data[i].b64_json that is a string (a value of any
-- other type is no base64, so no image).
local function decode_reference(text)
  local doc = cjson.decode(text)
  local out = {}
  for i, item in ipairs(doc.data) do
    if type(item) == "table" and type(item.b64_json) == "string" then
      local bytes, err = core.b64decode(item.b64_json)
      assert(bytes, "reference: data[" .. i .. "].b64_json: " .. tostring(err))
      out[#out + 1] = bytes
    end
  end
  return out, doc
end

local function expect_error(images, err, kind, what)
  assert.is_true(images == nil, what .. ": expected an error, got images")
  assert.is_true(omixa.is_error(err), what .. ": not an error object: " .. tostring(err))
  assert.equal(kind, err.kind, what .. ": " .. tostring(err))
end

describe("scanned answers", function()
  local srv, client
  setup(function()
    srv = helpers.serve()
    client = omixa.new{ base_url = srv.url, max_retries = 0 }
  end)
  teardown(function() client:close(); srv:stop() end)
  before_each(function() srv:reset() end)

  -- The answer to REQ under FAULT, fetched with the curl command line:
  -- { status =, headers = { lower-case name = value }, body = (decoded
  -- Content-Encoding) }.
  local function fetch(req, fault)
    local prepared = assert(client:prepare(req))
    local dir = helpers.tmpdir()
    write_file(dir .. "/req", prepared.body)
    local words = { "curl", "-sS", "--compressed", "--max-time", "60", "-o", q(dir .. "/body"),
                    "-D", q(dir .. "/head"), "-w", q("%{http_code}"),
                    "-H", q("Content-Type: application/json"),
                    "--data-binary", "@" .. q(dir .. "/req") }
    if fault and next(fault) then
      words[#words + 1] = "-H"
      words[#words + 1] = q("X-Omixa-Fault: " .. cjson.encode(fault))
    end
    words[#words + 1] = q(prepared.url)
    local ok, code, out, err = helpers.run(table.concat(words, " "))
    assert(ok, "curl failed (" .. code .. "): " .. err)
    local res = { status = tonumber(out:match("(%d+)%s*$")), body = read_file(dir .. "/body") or "",
                  headers = {}, request_body = prepared.body }
    for name, value in (read_file(dir .. "/head") or ""):gmatch("([%w%-]+):[ \t]*([^\r\n]*)\r?\n") do
      res.headers[name:lower()] = value
    end
    os.execute("rm -rf " .. q(dir))
    return res
  end

  -- The stand-in's image for REQ as its raw bytes (no base64 anywhere).
  local raw_cache = {}
  local function raw_image(req)
    local key = cjson.encode(req)
    if not raw_cache[key] then
      local res = fetch(req, { raw_image = true })
      assert.equal(200, res.status)
      assert.matches("^image/", res.headers["content-type"])
      assert.truthy(#res.body > 100)
      raw_cache[key] = res.body
    end
    return raw_cache[key]
  end

  -- REQ answered under FAULT through generate and through a job: N images,
  -- each the reference's. Returns the reference answer (from curl), its
  -- decoded document, and the two infos.
  local function check_shape(req, fault, n)
    local raw = raw_image(req)
    srv:faults{ fault, fault }
    local before = #srv:requests()
    local images, info = client:generate(req)
    local jimages, jinfo = client:start(req):wait()
    local res = fetch(req, fault)
    assert.equal(200, res.status, res.body:sub(1, 200))
    local want, doc = decode_reference(res.body)
    assert.equal(n, #want, "images in the reference answer")
    for i = 1, n do same_bytes(raw, want[i], "reference image " .. i .. " against the raw image") end
    -- both calls sent exactly the request the reference was fetched for
    local seen = srv:requests()
    assert.equal(before + 3, #seen, "requests the stand-in saw") -- generate, job, curl
    assert.equal(res.request_body, seen[before + 1].body)
    assert.equal(res.request_body, seen[before + 2].body)
    same_images(want, images, info, "generate")
    same_images(want, jimages, jinfo, "job")
    return res, doc, info, jinfo
  end

  local PNG = { prompt = "exact: a lighthouse", size = "0.5K" }
  local JPEG = { prompt = "exact: a jpeg", output_format = "jpeg" } -- 505 bytes; its base64 starts "/9j/"

  local function with(req, extra)
    local r = {}
    for k, v in pairs(req) do r[k] = v end
    for k, v in pairs(extra or {}) do r[k] = v end
    return r
  end

  describe("the stand-in's images are the reference's, byte for byte", function()
    it("one image", function()
      local res, _, info = check_shape({ prompt = "exact: one", size = "1K" }, {}, 1)
      assert.equal("image/png", info.images[1].mime)
      assert.equal(1024, info.images[1].width)
      assert.truthy(tonumber(res.headers["content-length"]), "sent with a Content-Length")
    end)

    it("n = 4 images", function()
      check_shape(with(PNG, { n = 4 }), {}, 4)
    end)

    it("a 4K image (about 500 KB, many network reads) with every '/' escaped", function()
      local res = check_shape({ prompt = "exact: big", size = "4K" }, { escape_slashes = true }, 1)
      assert.truthy(#res.body > 500000, "answer of " .. #res.body .. " bytes")
      assert.truthy(res.body:find("\\/", 1, true), "no '\\/' in the answer")
    end)

    it("n = 10 images of 4K (a 7 MB answer)", function()
      local res = check_shape({ prompt = "exact: big", size = "4K", n = 10 }, {}, 10)
      assert.truthy(#res.body > 6 * MiB, "answer of " .. #res.body .. " bytes")
    end)

    for _, k in ipairs({ 1, 2, 3, 7, 4096 }) do
      it(("chunked, %d byte(s) a chunk"):format(k), function()
        local res = check_shape(JPEG, { chunked = true, chunk_size = k }, 1)
        assert.equal("chunked", res.headers["transfer-encoding"])
        assert.is_nil(res.headers["content-length"])
      end)
      it(("chunked, %d byte(s) a chunk, every '/' escaped (\\ and / in different chunks)"):format(k), function()
        local res = check_shape(with(JPEG, { n = 2 }), { chunked = true, chunk_size = k, escape_slashes = true }, 2)
        assert.equal("chunked", res.headers["transfer-encoding"])
        assert.truthy(res.body:find('"b64_json":"\\/9j\\/', 1, true), "escaped slashes: " .. res.body:sub(1, 80))
      end)
    end

    for _, k in ipairs({ 1, 3, 4096 }) do
      it(("a 115 KB PNG, chunked %d byte(s) a chunk, every '/' escaped"):format(k), function()
        local res = check_shape(PNG, { chunked = true, chunk_size = k, escape_slashes = true }, 1)
        assert.equal("chunked", res.headers["transfer-encoding"])
        assert.truthy(#res.body > 150000)
      end)
    end

    it("gzip", function()
      local res = check_shape(with(PNG, { n = 2 }), { gzip = true }, 2)
      assert.equal("gzip", res.headers["content-encoding"])
      assert.truthy((srv:requests()[1].headers["accept-encoding"] or ""):find("gzip", 1, true),
        "the client did not accept gzip")
    end)

    it("gzip, chunked one byte a chunk, every '/' escaped", function()
      local res = check_shape(with(JPEG, { n = 3 }), { gzip = true, chunked = true, chunk_size = 1, escape_slashes = true }, 3)
      assert.equal("gzip", res.headers["content-encoding"])
      assert.equal("chunked", res.headers["transfer-encoding"])
    end)

    it("gzip, chunked 7 bytes a chunk, a PNG", function()
      local res = check_shape(PNG, { gzip = true, chunked = true, chunk_size = 7 }, 1)
      assert.equal("gzip", res.headers["content-encoding"])
    end)

    it("whitespace after the document: one byte, 4 KiB one byte a chunk, 3 MiB", function()
      local res = check_shape(JPEG, { pad = 1 }, 1)
      assert.equal("} ", res.body:sub(-2))
      res = check_shape(JPEG, { pad = 4096, chunked = true, chunk_size = 1 }, 1)
      assert.equal("}" .. rep(" ", 4096), res.body:sub(-4097))
      res = check_shape(PNG, { pad = 3 * MiB, escape_slashes = true }, 1)
      assert.equal("}" .. rep(" ", 3 * MiB), res.body:sub(-3 * MiB - 1))
    end)

    it("a trickle: a few bytes at a time with pauses", function()
      local res = check_shape(JPEG, { trickle = { bytes = 5, interval = 0.002 }, escape_slashes = true }, 1)
      assert.truthy(tonumber(res.headers["content-length"]))
      check_shape(PNG, { trickle = { bytes = 8192, interval = 0.005 } }, 1)
    end)

    it("revised_prompt after each image, with escapes, one byte a chunk", function()
      local revised = 'a "quoted" fox \\ back/slash, caf\195\169, \240\159\152\128, tab\there'
      local _, doc, info, jinfo = check_shape(with(JPEG, { n = 3 }),
        { revised_prompt = revised, chunked = true, chunk_size = 1, escape_slashes = true }, 3)
      for i = 1, 3 do
        assert.equal(revised, doc.data[i].revised_prompt)
        assert.equal(revised, info.images[i].revised_prompt, "generate: revised_prompt " .. i)
        assert.equal(revised, jinfo.images[i].revised_prompt, "job: revised_prompt " .. i)
      end
    end)

    it("url-only items, one byte a chunk: the downloaded images are the raw ones", function()
      local raw = raw_image(PNG)
      local f = { url_only = true, chunked = true, chunk_size = 1 }
      srv:faults{ f, f }
      local images, info = client:generate(with(PNG, { n = 2 }))
      same_images({ raw, raw }, images, info, "generate")
      images, info = client:start(with(PNG, { n = 2 })):wait()
      same_images({ raw, raw }, images, info, "job")
      assert.equal(4, #srv:fetches())
    end)

    it("four answers arriving interleaved on one client, 3 bytes a chunk, '/' escaped", function()
      local reqs = { with(JPEG, { n = 3 }), PNG, { prompt = "exact: another", size = "1K", aspect_ratio = "16:9" },
                     { model = "gpt-image-1.5", prompt = "exact: gpt", size = "1536x1024" } }
      local want = {}
      for i, r in ipairs(reqs) do want[i] = raw_image(r) end
      local f = { chunked = true, chunk_size = 3, escape_slashes = true }
      srv:faults{ f, f, f, f, f, f, f, f }
      local jobs = {}
      for i, r in ipairs(reqs) do jobs[i] = client:start(r) end
      for i, j in ipairs(jobs) do
        local images, info = j:wait()
        same_images(i == 1 and { want[1], want[1], want[1] } or { want[i] }, images, info, "job " .. i)
      end
      for i, r in ipairs(client:generate_many(reqs)) do
        same_images(i == 1 and { want[1], want[1], want[1] } or { want[i] }, r.images, r.info or r.err,
          "generate_many " .. i)
      end
    end)
  end)

  -- Answers written here, served by the stand-in as they are (status = 200,
  -- body = TEXT) under the delivery faults EXTRA.
  local function serve_text(text, extra)
    local f = { status = 200, body = text }
    for k, v in pairs(extra or {}) do f[k] = v end
    return f
  end

  local function check_text(text, want, extra, what)
    -- the text says what it was written to say (checks this spec, not omixa)
    local ref, doc = decode_reference(text)
    assert.equal(#want, #ref)
    for i = 1, #want do same_bytes(want[i], ref[i], "reference image " .. i) end
    local f = serve_text(text, extra)
    srv:faults{ f, f }
    local before = #srv:requests()
    local images, info = client:generate{ prompt = "written here" }
    local jimages, jinfo = client:start{ prompt = "written here" }:wait()
    assert.equal(before + 2, #srv:requests())
    same_images(want, images, info, what .. ", generate")
    same_images(want, jimages, jinfo, what .. ", job")
    return info, jinfo, doc
  end

  local function item(b64, extra)
    return '{"b64_json":"' .. b64 .. '","url":null' .. (extra or "") .. "}"
  end

  local DELIVERIES = {
    { "in one piece", {} },
    { "one byte a chunk", { chunked = true, chunk_size = 1 } },
    { "2 bytes a chunk", { chunked = true, chunk_size = 2 } },
    { "3 bytes a chunk", { chunked = true, chunk_size = 3 } },
    { "5 bytes a chunk", { chunked = true, chunk_size = 5 } },
    { "7 bytes a chunk", { chunked = true, chunk_size = 7 } },
    { "4096 bytes a chunk", { chunked = true, chunk_size = 4096 } },
    { "gzip, 3 bytes a chunk", { gzip = true, chunked = true, chunk_size = 3 } },
  }

  describe("answers written here are decoded byte for byte", function()
    it("four different images keep their order (all three base64 endings)", function()
      local want = { raw_image(PNG), bytes_of(3002, 1), raw_image(JPEG), bytes_of(3000, 2), bytes_of(1, 3) }
      local endings = {}
      for _, b in ipairs(want) do endings[#b % 3] = true end
      assert.same({ [0] = true, true, true }, endings)
      local items = {}
      for i, b in ipairs(want) do items[i] = item((omixa.b64encode(b):gsub("/", "\\/"))) end
      local text = '{"created":1780660800,"data":[' .. table.concat(items, ",")
        .. '],"usage":{"billed_amount":"0.160000"}}'
      for _, d in ipairs(DELIVERIES) do
        local info = check_text(text, want, d[2], d[1])
        assert.equal("image/png", info.images[1].mime)
        assert.equal("image/jpeg", info.images[3].mime)
        assert.equal("0.160000", info.billed_amount)
      end
    end)

    it("one 6 MiB image, in one piece and in 4 KiB chunks with every '/' escaped", function()
      local big = big_bytes(6 * MiB + 2)
      local b64 = omixa.b64encode(big)
      check_text('{"created":1780660800,"data":[' .. item(b64) .. "]}", { big }, {}, "in one piece")
      check_text('{"created":1780660800,"data":[' .. item((b64:gsub("/", "\\/"))) .. "]}", { big },
        { chunked = true, chunk_size = 4096 }, "chunked")
    end)

    -- Big image rooms are pages a client keeps for its next answers: an
    -- image decoded into a room that held a bigger one must be exactly its
    -- own bytes, whether answers come one after another or at once.
    it("answers of 3 MiB, 2 MiB, 3 MiB + 1 and two of 1.5 MiB in a row on one client", function()
      local sizes = { { 3 * MiB }, { 2 * MiB }, { 3 * MiB + 1 }, { 1536 * 1024, 1536 * 1024 + 2 } }
      for i, list in ipairs(sizes) do
        local want, items = {}, {}
        for j, n in ipairs(list) do
          want[j] = big_bytes(n, i * 10 + j)
          items[j] = item(omixa.b64encode(want[j]))
        end
        local text = '{"created":1,"data":[' .. table.concat(items, ",") .. "]}"
        check_text(text, want, i % 2 == 0 and { chunked = true, chunk_size = 65536 } or {}, "answer " .. i)
      end
    end)

    it("four answers of 1.5 MiB images at once on one client, each exactly one of them", function()
      local want, faults = {}, {}
      for i = 1, 4 do
        want[i] = big_bytes(1536 * 1024 + i, 100 + i)
        local text = '{"created":1,"data":[' .. item(omixa.b64encode(want[i])) .. "]}"
        faults[i] = serve_text(text, i % 2 == 0 and { chunked = true, chunk_size = 32768 } or {})
      end
      srv:faults(faults)
      local jobs = {}
      for i = 1, 4 do jobs[i] = client:start{ prompt = "at once " .. i } end
      -- which answer each job got depends on the order the requests came in
      local seen = {}
      for i, j in ipairs(jobs) do
        local images, info = j:wait()
        assert.is_true(type(images) == "table", "job " .. i .. ": " .. tostring(info))
        assert.equal(1, #images, "job " .. i)
        local which
        for k = 1, 4 do
          if #want[k] == #images[1] then which = k end
        end
        assert.is_number(which, "job " .. i .. ": an image of " .. #images[1] .. " bytes")
        assert.is_nil(seen[which], "two jobs got answer " .. which)
        seen[which] = true
        same_images({ want[which] }, images, info, "job " .. i)
      end
    end)

    -- The scan leaves each image's number in the text lua-cjson then reads;
    -- a number the service itself wrote at data[i].b64_json is no image and
    -- must not be taken for one of those.
    it("a b64_json that is a number is no image, not another item's image", function()
      local text = '{"created":1,"data":[{"b64_json":2,"url":null},{"b64_json":"QUJD"},'
        .. '{"b64_json":"REVG"},{"b64_json":1}]}'
      local want = { "ABC", "DEF" }
      for _, d in ipairs({ DELIVERIES[1], DELIVERIES[2] }) do check_text(text, want, d[2], d[1]) end
      local images, info = client:parse(200, text, { ["Content-Type"] = "application/json" })
      same_images(want, images, info, "client:parse")
    end)

    -- Members in another order, pretty-printed, with values the scanner must
    -- leave alone ("data" and "b64_json" elsewhere, with text that is not
    -- base64), an escaped member name, and the base64 written by other
    -- encoders: "\u002F" for '/', "\u002b" for '+', "\r\n" every 76
    -- characters. With chunks of 1..7 bytes every escape is split at every
    -- place.
    local function other_order()
      local one, two = raw_image(PNG), bytes_of(2000, 3)
      local plain, lines = omixa.b64encode(one), {}
      for i = 1, #plain, 76 do
        lines[#lines + 1] = plain:sub(i, i + 75):gsub("/", "\\u002F"):gsub("%+", "\\u002b")
      end
      local b1 = table.concat(lines, "\\r\\n")
      local b2 = omixa.b64encode(two):gsub("/", "\\/")
      local text = table.concat({
        "\n{",
        '  "usage" : { "billed_amount" : "0.080000", "note" : "data:[{\\"b64_json\\":\\"!!\\"}]" },',
        '  "meta": { "data": [ { "b64_json": "not base64 at all!" } ], "b64_json": "%%%" },',
        '  "b64_json": "***",',
        '  "model": "gemini-2.0-flash-preview-image-generation",',
        '  "data": [',
        '    { "revised_prompt": "caf\\u00e9 \\"noir\\" \\/ \\\\ \\ud83d\\ude00", "url": null,',
        '      "extra": { "b64_json": "@@@", "n": [1, -2.5e3, true, false, null] },',
        '      "b64\\u005fjson" : "' .. b1 .. '" },',
        '    {"url":null,"b64_json":"' .. b2 .. '","revised_prompt":"second"}',
        "  ],",
        '  "created": 1780660800',
        "}\n\t \n",
      }, "\n")
      return text, { one, two }
    end

    for _, d in ipairs(DELIVERIES) do
      it("members in another order, decoys and other encoders' escapes, " .. d[1], function()
        local text, want = other_order()
        local info, jinfo, doc = check_text(text, want, d[2], d[1])
        for _, inf in ipairs({ info, jinfo }) do
          assert.equal(1780660800, inf.created)
          assert.equal("0.080000", inf.billed_amount)
          assert.equal("gemini-2.0-flash-preview-image-generation", inf.model)
          assert.equal('caf\195\169 "noir" / \\ \240\159\152\128', inf.images[1].revised_prompt)
          assert.equal(doc.data[1].revised_prompt, inf.images[1].revised_prompt)
          assert.equal("second", inf.images[2].revised_prompt)
          assert.equal("image/png", inf.images[1].mime)
        end
      end)
    end
  end)

  describe("errors, whatever the delivery, and never with images", function()
    -- REQ under each fault of FAULTS, by generate and by a job: the same
    -- error kind and message every time. Returns that message and the
    -- err.body of each generate.
    local function same_error(req, faults, kind)
      local message, bodies = nil, {}
      for _, f in ipairs(faults) do
        srv:faults{ f, f }
        local what = cjson.encode(f)
        local images, err = client:generate(req)
        expect_error(images, err, kind, "generate " .. what)
        local jimages, jerr = client:start(req):wait()
        expect_error(jimages, jerr, kind, "job " .. what)
        assert.equal(err.message, jerr.message, what)
        assert.equal(200, err.status, what)
        message = message or err.message
        assert.equal(message, err.message, "the message depends on the delivery: " .. what)
        bodies[#bodies + 1] = err.body
      end
      return message, bodies
    end

    it("malformed JSON: protocol, a message that says JSON, the same as for the whole text", function()
      local message, bodies = same_error(PNG, {
        { malformed = true },
        { malformed = true, chunked = true, chunk_size = 1 },
        { malformed = true, chunked = true, chunk_size = 3 },
        { malformed = true, gzip = true },
      }, "protocol")
      assert.matches("^malformed JSON in the response: ", message)
      -- where the one-call scan of the whole answer says it is wrong
      local res = fetch(PNG, { malformed = true })
      local ok, whole = core.decode_images(res.body)
      assert.is_nil(ok)
      assert.equal("malformed JSON in the response: " .. whole, message)
      assert.is_false((pcall(cjson.decode, res.body)))
      -- (all but "created", the second each answer was made in)
      local function timeless(text) return (text:gsub('^{"created":%d+,', '{"created":0,')) end
      for i, body in ipairs(bodies) do same_bytes(timeless(res.body), timeless(body), "err.body " .. i) end
    end)

    it("bad base64: protocol, a message that says base64 and which item", function()
      local message = same_error(with(PNG, { n = 2 }), {
        { bad_base64 = true },
        { bad_base64 = true, chunked = true, chunk_size = 1 },
        { bad_base64 = true, chunked = true, chunk_size = 2, escape_slashes = true },
        { bad_base64 = true, gzip = true },
      }, "protocol")
      assert.matches("^bad base64 in the response: .*data%[1%]%.b64_json", message)
    end)

    it("bad base64 in the second image (an escaped '!'): no image at all, not the first one", function()
      local good = omixa.b64encode(bytes_of(3000, 4)):gsub("/", "\\/")
      local text = '{"created":1,"data":[' .. item(good) .. "," .. item("QUFB\\/\\u0021QUFB") .. "]}"
      local message, bodies = same_error({ prompt = "written here" }, {
        serve_text(text),
        serve_text(text, { chunked = true, chunk_size = 1 }),
        serve_text(text, { chunked = true, chunk_size = 4 }),
        serve_text(text, { chunked = true, chunk_size = 5, gzip = true }),
      }, "protocol")
      assert.matches("^bad base64 in the response: .*data%[2%]%.b64_json", message)
      assert.matches("'!'", message)
      local ok, whole = core.decode_images(text)
      assert.is_nil(ok)
      assert.equal("bad base64 in the response: " .. whole, message)
      -- err.body: the first 2 KiB of the answer, exactly, however it came
      for i, body in ipairs(bodies) do same_bytes(text:sub(1, 2048), body, "err.body " .. i) end
    end)

    it("a truncated answer or one cut mid-body: protocol, maybe billed", function()
      local written = '{"created":1,"data":[' .. item(omixa.b64encode(bytes_of(4000, 5))) .. "]}"
      for _, case in ipairs({
        { PNG, { truncate = true } },
        { PNG, { cut = "mid_body" } },
        { JPEG, { truncate = true, escape_slashes = true } },
        { PNG, { cut = "mid_body", gzip = true } },
        { { prompt = "written here" }, serve_text(written, { truncate = true }) }, -- ends inside the image
      }) do
        local req, f = case[1], case[2]
        local what = cjson.encode(f):sub(1, 60)
        srv:faults{ f, f }
        local images, err = client:generate(req)
        expect_error(images, err, "protocol", "generate " .. what)
        assert.equal(200, err.status, what)
        assert.is_true(err.maybe_billed, what)
        assert.is_true(err.retryable, what)
        local jimages, jerr = client:start(req):wait()
        expect_error(jimages, jerr, "protocol", "job " .. what)
        assert.is_true(jerr.maybe_billed, what)
      end
    end)

    it("a 2xx whose JSON is cut inside an image string, delivered whole: protocol, says JSON", function()
      local text = '{"created":1,"data":[{"b64_json":"' .. omixa.b64encode(bytes_of(999, 6))
      local message = same_error({ prompt = "written here" }, {
        serve_text(text), serve_text(text, { chunked = true, chunk_size = 1 }),
      }, "protocol")
      assert.matches("^malformed JSON in the response: ", message)
    end)

    it("a non-2xx error envelope: api with the service's message (no scan)", function()
      for _, f in ipairs({
        { status = 402 },
        { status = 402, chunked = true, chunk_size = 1 },
        { status = 402, gzip = true, chunked = true, chunk_size = 2 },
      }) do
        srv:faults{ f }
        local images, err = client:generate(PNG)
        expect_error(images, err, "api", cjson.encode(f))
        assert.equal(402, err.status)
        assert.equal("insufficient_balance", err.code)
        assert.equal("Insufficient wallet balance.", err.message)
      end
      -- What would be bad base64 in a 2xx is only text in an error answer,
      -- which is kept whole: its error member comes after the first 2 KiB
      -- (all a scanned body keeps).
      local text = '{"data":[{"b64_json":"!!! not base64 ' .. rep("!", 3000) .. '"}],'
        .. '"error":{"message":"provider failed \\/ try later","type":"server_error","code":"upstream"}}'
      for _, extra in ipairs({ {}, { chunked = true, chunk_size = 1 } }) do
        local f = { status = 500, body = text }
        for k, v in pairs(extra) do f[k] = v end
        srv:faults{ f, f }
        local images, err = client:generate(PNG)
        expect_error(images, err, "api", "generate")
        assert.equal(500, err.status)
        assert.equal("upstream", err.code)
        assert.equal("provider failed / try later", err.message)
        local jimages, jerr = client:start(PNG):wait()
        expect_error(jimages, jerr, "api", "job")
        assert.equal("provider failed / try later", jerr.message)
      end
    end)

    it("an error member in a 200 without images: api with its message", function()
      local text = '{"created":1780660800,"error":{"message":"Refused: \\"policy\\" \\u00e9",'
        .. '"type":"invalid_request_error","code":"content_policy"}}'
      for _, extra in ipairs({ {}, { chunked = true, chunk_size = 1 }, { chunked = true, chunk_size = 3, gzip = true } }) do
        local f = serve_text(text, extra)
        srv:faults{ f, f }
        local what = cjson.encode(extra)
        local images, err = client:generate(PNG)
        expect_error(images, err, "api", "generate " .. what)
        assert.equal(200, err.status)
        assert.equal("content_policy", err.code)
        assert.equal("invalid_request_error", err.type)
        assert.equal('Refused: "policy" \195\169', err.message)
        local jimages, jerr = client:start(PNG):wait()
        expect_error(jimages, jerr, "api", "job " .. what)
        assert.equal('Refused: "policy" \195\169', jerr.message)
      end
    end)
  end)

  describe("max_response_bytes", function()
    local function limited(limit)
      return omixa.new{ base_url = srv.url, max_retries = 0, max_response_bytes = limit }
    end

    it("an answer of exactly the limit is byte-exact; one byte over is too_large, no images", function()
      for _, f in ipairs({ {}, { chunked = true, chunk_size = 1 }, { escape_slashes = true, chunked = true, chunk_size = 7 } }) do
        local what = cjson.encode(f)
        local res = fetch(JPEG, f)
        local want = decode_reference(res.body)
        local c = limited(#res.body)
        srv:faults{ f }
        local images, info = c:generate(JPEG)
        same_images(want, images, info, "at the limit " .. what)
        c:close()
        c = limited(#res.body - 1)
        srv:faults{ f, f }
        local none, err = c:generate(JPEG)
        expect_error(none, err, "too_large", "one byte over " .. what)
        assert.equal(200, err.status)
        local jnone, jerr = c:start(JPEG):wait()
        expect_error(jnone, jerr, "too_large", "job, one byte over " .. what)
        c:close()
      end
    end)

    it("counts the decoded answer: 1 MiB of gzipped whitespace after a PNG is over 512 KiB", function()
      local f = { gzip = true, pad = MiB }
      local res = fetch(PNG, f)
      assert.equal("gzip", res.headers["content-encoding"])
      assert.truthy(#res.body > MiB)
      local c = limited(512 * 1024)
      srv:faults{ f }
      local images, err = c:generate(PNG)
      c:close()
      expect_error(images, err, "too_large", "gzip + pad")
      assert.equal(200, err.status)
    end)
  end)
end)
