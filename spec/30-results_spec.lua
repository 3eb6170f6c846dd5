-- Decoding what the service answers into images and info.
local omixa = require "omixa"
local helpers = require "helpers"

describe("results", function()
  local srv, client
  setup(function()
    srv = helpers.serve()
    client = omixa.new{ base_url = srv.url, max_retries = 0 }
  end)
  teardown(function() client:close(); srv:stop() end)
  before_each(function() srv:reset() end)

  local function png_size(bytes)
    local s = omixa.sniff(bytes)
    assert.equal("image/png", s.mime)
    return s.width, s.height
  end

  it("gives one image and the documented info", function()
    local images, info = client:generate{ prompt = "a lighthouse at dusk" }
    assert.is_table(images, tostring(info))
    assert.equal(1, #images)
    assert.equal("\137PNG\r\n\26\n", images[1]:sub(1, 8))
    assert.equal(1024, select(1, png_size(images[1])))
    assert.equal("number", type(info.created))
    assert.equal(math.floor(info.created), info.created)
    assert.equal("gemini-2.0-flash-preview-image-generation", info.model)
    assert.equal(1, info.attempts)
    assert.is_false(info.cached)
    assert.is_number(info.elapsed)
    assert.truthy(info.elapsed >= 0 and info.elapsed < 30)
    assert.equal("0.040000", info.billed_amount)
    assert.same({ billed_amount = "0.040000" }, info.usage)
    assert.is_string(info.request_id)
    assert.same({ mime = "image/png", format = "png", width = 1024, height = 1024, bytes = #images[1] }, info.images[1])
  end)

  it("follows aspect_ratio and size in pixels", function()
    local cases = { { "16:9", "1K", 1024, 576 }, { "9:16", "0.5K", 288, 512 }, { "4:3", "2K", 2048, 1536 },
                    { "1:1", "0.5K", 512, 512 } }
    for _, c in ipairs(cases) do
      local images = assert(client:generate{ prompt = "x", aspect_ratio = c[1], size = c[2] })
      local w, h = png_size(images[1])
      assert.same({ c[3], c[4] }, { w, h })
    end
    local images = assert(client:generate{ model = "gpt-image-1.5", prompt = "x", size = "1536x1024" })
    assert.same({ 1536, 1024 }, { png_size(images[1]) })
  end)

  it("decodes 10 images in order", function()
    local images, info = client:generate{ prompt = "ten", n = 10, size = "0.5K" }
    assert.is_table(images, tostring(info))
    assert.equal(10, #images)
    assert.equal(10, #info.images)
    for i = 1, 10 do
      assert.equal(#images[i], info.images[i].bytes)
      assert.equal("image/png", info.images[i].mime)
    end
    assert.equal("0.400000", info.billed_amount)
  end)

  it("decodes JPEG and WebP", function()
    local images, info = client:generate{ prompt = "x", output_format = "jpeg" }
    assert.equal("image/jpeg", info.images[1].mime, tostring(info))
    assert.equal("jpeg", info.images[1].format)
    assert.equal(0xFF, images[1]:byte(1))
    images, info = client:generate{ prompt = "x", output_format = "webp" }
    assert.equal("image/webp", info.images[1].mime)
    assert.equal("RIFF", images[1]:sub(1, 4))
  end)

  local function same_as_plain(fault)
    local plain = assert(client:generate{ prompt = "same", size = "0.5K" })
    srv:faults{ fault }
    local images, info = client:generate{ prompt = "same", size = "0.5K" }
    assert.is_table(images, tostring(info))
    assert.equal(#plain[1], #images[1])
    assert.equal(plain[1], images[1])
    return images, info
  end

  it("decodes base64 with escaped slashes byte for byte", function()
    same_as_plain{ escape_slashes = true }
  end)

  it("decodes a chunked response", function()
    same_as_plain{ chunked = true }
  end)

  it("downloads url-only items", function()
    local _, info = same_as_plain{ url_only = true }
    assert.equal("image/png", info.images[1].mime)
    local reqs = srv:requests()
    assert.equal(2, #reqs) -- the image GETs are not generation requests
  end)

  it("takes a 2xx image/* body as one image", function()
    local images, info = same_as_plain{ raw_image = true }
    assert.equal(1, #images)
    assert.equal("image/png", info.images[1].mime)
  end)

  it("keeps revised_prompt", function()
    srv:faults{ { revised_prompt = "a better fox" } }
    local _, info = client:generate{ prompt = "fox" }
    assert.equal("a better fox", info.images[1].revised_prompt)
  end)

  it("returns no_image for a 2xx without images, never an empty success", function()
    srv:faults{ { empty_data = true } }
    local images, err = client:generate{ prompt = "x" }
    assert.is_nil(images)
    assert.equal("no_image", err.kind)
    assert.equal(200, err.status)
    assert.is_false(err.maybe_billed)
  end)
end)

describe("client:parse", function()
  local c = omixa.new{ base_url = "http://127.0.0.1:1/api/v1" }
  local png = omixa.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==")
  it("gives the same results as generate", function()
    local body = '{"created":1780660800,"data":[{"b64_json":"' .. omixa.b64encode(png):gsub("/", "\\/")
      .. '","url":null}],"usage":{"billed_amount":"0.039000"}}'
    local images, info = c:parse(200, body, { ["Content-Type"] = "application/json", ["X-Request-Id"] = "r1" })
    assert.same({ png }, images)
    assert.equal(1780660800, info.created)
    assert.equal("0.039000", info.billed_amount)
    assert.equal("r1", info.request_id)
    assert.same({ mime = "image/png", format = "png", width = 1, height = 1, bytes = #png }, info.images[1])
  end)
  it("gives the same errors as generate", function()
    local _, err = c:parse(402, '{"error":{"message":"Insufficient wallet balance.","type":"billing_error","code":"insufficient_balance"}}')
    assert.equal("api", err.kind)
    assert.equal(402, err.status)
    assert.equal("billing_error", err.type)
    assert.equal("insufficient_balance", err.code)
    assert.equal("omixa: api error 402 insufficient_balance: Insufficient wallet balance. (1 attempt)", tostring(err))
    _, err = c:parse(200, '{"data":[{"b64_json":"!!!"}]}')
    assert.equal("protocol", err.kind)
    _, err = c:parse(200, '{"data":[')
    assert.equal("protocol", err.kind)
    _, err = c:parse(200, '{"data":[]}')
    assert.equal("no_image", err.kind)
    _, err = c:parse(200, '{"data":[{"b64_json":"","url":null}]}')
    assert.equal("no_image", err.kind)
    _, err = c:parse(200, '{"data":[{"b64_json":null,"url":null}]}')
    assert.equal("no_image", err.kind)
  end)
end)

-- client:parse(status, body, headers, fetch): url-only items through the
-- caller's own transport (here curl on the command line), never omixa's
-- libcurl, with the results and errors of generate's built-in downloads.
describe("client:parse with a fetch function", function()
  local srv, client, dir
  local q = helpers.quote
  local png = omixa.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==")
  setup(function()
    srv = helpers.serve()
    client = omixa.new{ base_url = srv.url, max_retries = 0 }
    dir = helpers.tmpdir()
  end)
  teardown(function() client:close(); srv:stop() end)
  before_each(function() srv:reset() end)

  local read = helpers.must_read

  local function header_words(headers)
    local words = {}
    for k, v in pairs(headers or {}) do words[#words + 1] = "-H " .. q(k .. ": " .. v) end
    return table.concat(words, " ")
  end

  -- REQUEST sent as client:prepare says, with curl: status, body, headers.
  local function exchange(request)
    local req = assert(client:prepare(request))
    helpers.write_file(dir .. "/req", req.body)
    local ok, code, _, err = helpers.run(("curl -sS -X POST %s --data-binary @%s -D %s -o %s %s"):format(
      header_words(req.headers), q(dir .. "/req"), q(dir .. "/head"), q(dir .. "/answer"), q(req.url)))
    assert(ok, "curl exit " .. code .. ": " .. err)
    local head = read(dir .. "/head")
    local headers = {}
    for name, value in head:gmatch("\n([^:\r\n]+):%s*([^\r\n]*)") do headers[name] = value end
    return tonumber(head:match("^HTTP/[%d.]+ (%d+)")), read(dir .. "/answer"), headers
  end

  -- A fetch through curl; CALLS records each url and the headers it was given.
  local function curl_fetch(calls)
    return function(url, headers)
      calls[#calls + 1] = { url = url, headers = headers }
      local ok, code, w, err = helpers.run(("curl -sS -o %s -w '%%{http_code} %%{content_type}' %s %s"):format(
        q(dir .. "/img"), header_words(headers), q(url)))
      if not ok then return nil, "curl exit " .. code .. ": " .. err end
      local status, ctype = w:match("^(%d+) ?(.*)$")
      local bytes = read(dir .. "/img")
      if status ~= "200" then return nil, { status = tonumber(status), body = bytes } end
      return bytes, ctype
    end
  end

  it("fetches each url-only item in order and gives what generate gives", function()
    local request = { prompt = "by url", n = 2, size = "0.5K" }
    srv:faults{ { url_only = true, revised_prompt = "a better fox" } }
    local want, want_info = client:generate(request) -- the built-in downloads
    assert.is_table(want, tostring(want_info))
    assert.equal(2, #want)
    srv:reset()

    srv:faults{ { url_only = true, revised_prompt = "a better fox" } }
    local status, body, headers = exchange(request)
    assert.equal(200, status)
    local urls = {}
    for url in body:gmatch('"url":"([^"]+)"') do urls[#urls + 1] = url:gsub("\\/", "/") end
    assert.equal(2, #urls)
    local spent = client:spent()
    local calls = {}
    local images, info = client:parse(status, body, headers, curl_fetch(calls))
    assert.is_table(images, tostring(info))
    assert.equal(2, #images)
    assert.same(urls, { calls[1].url, calls[2].url })
    for i = 1, 2 do
      assert.is_true(images[i] == want[i], "image " .. i .. " differs from generate's")
      assert.same(want_info.images[i], info.images[i])
    end
    assert.same({ mime = "image/png", format = "png", width = 512, height = 512, bytes = #images[1],
                  revised_prompt = "a better fox" }, info.images[1])
    assert.equal("0.080000", info.billed_amount)
    assert.equal(1, info.attempts)
    assert.is_number(info.elapsed)
    assert.is_string(info.request_id)
    -- billed once, as with three arguments
    assert.equal(string.format("%.6f", tonumber(spent) + 0.08), client:spent())
    -- the stand-in served both images to curl, none to omixa
    local fetches = srv:fetches()
    assert.equal(2, #fetches)
    for _, f in ipairs(fetches) do assert.matches("^curl/", f.headers["user-agent"]) end
  end)

  it("never touches the network itself: urls nothing listens at, served by fetch", function()
    srv:faults{ { url_only = true, url_base = "http://127.0.0.1:1" } }
    local status, body, headers = exchange{ prompt = "nowhere", n = 2, size = "0.5K" }
    local served = {}
    local images, info = client:parse(status, body, headers, function(url)
      served[#served + 1] = url
      return png
    end)
    assert.is_table(images, tostring(info))
    assert.same({ png, png }, images)
    assert.equal(2, #served)
    assert.matches("^http://127%.0%.0%.1:1/_omixa/images/", served[1])
    assert.same({}, srv:fetches())
    -- with three arguments, unchanged: omixa downloads them itself, and fails
    local none, err = client:parse(status, body, headers)
    assert.is_nil(none)
    assert.equal("network", err.kind)
    assert.is_true(err.maybe_billed)
    assert.matches("downloading the image from its url failed", err.message)
  end)

  it("a failing fetch is the error of a failed download; the items after it are not fetched", function()
    -- what the built-in downloads say for an image url that answers 404
    local missing = { url_only = true, url_base = srv.origin .. "/missing" }
    srv:faults{ missing }
    local _, want = client:generate{ prompt = "404", n = 2, size = "0.5K" }
    assert.equal("api", want.kind, tostring(want))
    srv:reset()

    srv:faults{ missing }
    local status, body, headers = exchange{ prompt = "404", n = 2, size = "0.5K" }
    local calls = {}
    local none, err = client:parse(status, body, headers, curl_fetch(calls))
    assert.is_nil(none)
    assert.is_true(omixa.is_error(err))
    assert.equal(1, #calls)
    for _, k in ipairs{ "kind", "status", "message", "maybe_billed", "retryable", "attempts" } do
      assert.equal(want[k], err[k], k)
    end
    assert.equal(404, err.status)
    assert.is_true(err.maybe_billed)
    assert.is_string(err.body)

    -- a message, as a transport says it; the first of two failing
    calls = {}
    none, err = client:parse(status, body, headers, function(url)
      calls[#calls + 1] = url
      return nil, "connection refused"
    end)
    assert.is_nil(none)
    assert.equal(1, #calls)
    assert.equal("network", err.kind)
    assert.equal("downloading the image from its url failed: connection refused", err.message)
    assert.is_true(err.maybe_billed)
    assert.is_true(err.retryable)
    assert.equal(1, err.attempts)
    -- fields naming the kind
    none, err = client:parse(status, body, headers, function() return nil, { kind = "timeout", message = "slow" } end)
    assert.is_nil(none)
    assert.equal("timeout", err.kind)
    assert.equal("downloading the image from its url failed: slow", err.message)
  end)

  it("drops an empty image as the built-in downloads do; none left is no_image", function()
    local body = '{"created":1,"data":[{"url":"http://127.0.0.1:1/a","revised_prompt":"one"},'
      .. '{"url":"http://127.0.0.1:1/b","revised_prompt":"two"}],"usage":{"billed_amount":"0.080000"}}'
    local c = omixa.new{ base_url = "http://127.0.0.1:1/api/v1" }
    local images, info = c:parse(200, body, nil, function(url) return url:find("/a$") and "" or png end)
    assert.same({ png }, images)
    assert.equal(1, #info.images)
    assert.equal("two", info.images[1].revised_prompt)
    local none, err = c:parse(200, body, nil, function() return "" end)
    assert.is_nil(none)
    assert.equal("no_image", err.kind)
    assert.is_true(err.maybe_billed)
    assert.equal("0.160000", c:spent()) -- each answer was billed
    c:close()
  end)

  it("refuses a url that is not http(s) before fetching any", function()
    local c = omixa.new{ base_url = "http://127.0.0.1:1/api/v1" }
    local calls = 0
    local none, err = c:parse(200, '{"data":[{"url":"http://127.0.0.1:1/a"},{"url":"file:///etc/passwd"}]}', nil,
      function() calls = calls + 1; return png end)
    assert.is_nil(none)
    assert.equal("protocol", err.kind)
    assert.is_true(err.maybe_billed)
    assert.equal(0, calls)
    c:close()
  end)

  it("gives fetch the key and the signature for the service's own origin only", function()
    local c = omixa.new{ base_url = "http://127.0.0.1:1/api/v1", api_key = "omx_test_key_0123", signing_secret = "s3cret-0123" }
    local seen = {}
    local images = c:parse(200, '{"data":[{"url":"http://127.0.0.1:1/img/a"},{"url":"http://localhost:1/img/b"}]}', nil,
      function(_, headers) seen[#seen + 1] = headers; return png, "image/png" end)
    assert.is_table(images)
    assert.equal("Bearer omx_test_key_0123", seen[1].Authorization)
    assert.matches("^sha256=%x+$", seen[1]["X-Omixa-Signature"])
    assert.matches("^%d+$", seen[1]["X-Omixa-Timestamp"])
    assert.same({}, seen[2])
    c:close()
  end)

  it("holds fetched images to max_response_bytes, and takes the mime fetch gives when sniffing cannot", function()
    local c = omixa.new{ base_url = "http://127.0.0.1:1/api/v1", max_response_bytes = 100 }
    local body = '{"data":[{"url":"http://127.0.0.1:1/a"}]}'
    local none, err = c:parse(200, body, nil, function() return ("x"):rep(101) end)
    assert.is_nil(none)
    assert.equal("too_large", err.kind)
    assert.is_true(err.maybe_billed)
    local images, info = c:parse(200, body, nil, function() return "not sniffable", "image/heic; q=1" end)
    assert.same({ "not sniffable" }, images)
    assert.equal("image/heic", info.images[1].mime)
    c:close()
  end)

  it("lets an error fetch raises propagate, the billed amount already counted", function()
    local c = omixa.new{ base_url = "http://127.0.0.1:1/api/v1" }
    local body = '{"data":[{"url":"http://127.0.0.1:1/a"}],"usage":{"billed_amount":"0.040000"}}'
    local ok, e = pcall(c.parse, c, 200, body, nil, function() error("fetch boom") end)
    assert.is_false(ok)
    assert.matches("fetch boom", e)
    assert.equal("0.040000", c:spent())
    c:close()
  end)

  it("raises on a fetch that is not a function, before anything, or that returns no string", function()
    local c = omixa.new{ base_url = "http://127.0.0.1:1/api/v1" }
    local body = '{"data":[{"url":"http://127.0.0.1:1/a"}],"usage":{"billed_amount":"0.040000"}}'
    for _, bad in ipairs{ "curl", { fetch = function() return png end }, 42, true } do
      assert.has_error(function() c:parse(200, body, nil, bad) end,
        "omixa: parse: fetch must be a function(url, headers) -> bytes | nil, err (got " .. type(bad) .. ")")
    end
    assert.equal("0.000000", c:spent()) -- nothing parsed, nothing counted
    assert.has_error(function() c:parse(200, body, nil, function() return 1 end) end,
      "omixa: parse: fetch must return the image bytes (a string) or nil and an error (got number)")
    -- no url-only item: fetch is not called
    local images = c:parse(200, '{"data":[{"b64_json":"' .. omixa.b64encode(png) .. '"}]}', nil,
      function() error("not called") end)
    assert.same({ png }, images)
    c:close()
  end)
end)
