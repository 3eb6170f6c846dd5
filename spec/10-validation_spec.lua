-- Misuse raises before any byte is sent; omixa.validate says why without
-- raising. The whole matrix: every field of both families.
local omixa = require "omixa"
local helpers = require "helpers"

local GEMINI = "gemini-2.0-flash-preview-image-generation"
local GPT = "gpt-image-1.5"

local PNG_1x1 = omixa.b64decode(
  "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==")

local function req(t)
  local r = { prompt = "a fox" }
  for k, v in pairs(t) do r[k] = v end
  return r
end

local function rejects(request, pattern)
  local ok, msg = omixa.validate(request)
  assert.is_nil(ok)
  assert.is_string(msg)
  assert.truthy(msg:find(pattern, 1, true), "message was: " .. msg)
end

local function accepts(request)
  local ok, msg = omixa.validate(request)
  assert.is_true(ok, msg)
end

describe("validation", function()
  describe("string fields with listed values", function()
    local cases = {
      { GEMINI, "aspect_ratio", { "1:1", "16:9", "9:16", "4:3", "3:4" }, { "2:1", "16/9", "" } },
      { GEMINI, "size", { "0.5K", "1K", "2K", "4K" }, { "1k", "8K", "1024x1024" } },
      { GEMINI, "person_generation", { "allow_adult", "allow_all", "dont_allow" }, { "allow", "ALLOW_ALL" } },
      { GEMINI, "reasoning_effort", { "minimal", "high" }, { "low", "medium" } },
      { GEMINI, "output_format", { "png", "jpeg", "webp" }, { "jpg", "gif", "PNG" } },
      { GPT, "size", { "auto", "1024x1024", "1024x1536", "1536x1024" }, { "2K", "512x512" } },
      { GPT, "quality", { "auto", "low", "medium", "high" }, { "hd", "best" } },
      { GPT, "background", { "auto", "transparent", "opaque" }, { "white" } },
      { GPT, "moderation", { "auto", "low" }, { "high", "none" } },
      { GPT, "input_fidelity", { "auto", "low", "high" }, { "medium" } },
      { GPT, "output_format", { "png", "jpeg", "webp" }, { "bmp" } },
    }
    for _, c in ipairs(cases) do
      local model, field, good, bad = c[1], c[2], c[3], c[4]
      it(model .. " " .. field .. " accepts each listed value", function()
        for _, v in ipairs(good) do accepts(req{ model = model, [field] = v }) end
      end)
      it(model .. " " .. field .. " refuses others, naming field, accepted values and what was given", function()
        for _, v in ipairs(bad) do
          rejects(req{ model = model, [field] = v },
            ("omixa: field '%s' must be one of %s (got \"%s\")"):format(field, table.concat(good, ", "), v))
        end
        rejects(req{ model = model, [field] = 1 }, ("field '%s' must be a string (got 1)"):format(field))
      end)
    end
    it("gives the documented message for aspect_ratio", function()
      rejects(req{ aspect_ratio = "2:1" },
        'omixa: field \'aspect_ratio\' must be one of 1:1, 16:9, 9:16, 4:3, 3:4 (got "2:1")')
    end)
  end)

  describe("booleans", function()
    for _, field in ipairs({ "enhance_prompt", "add_watermark" }) do
      it(field .. " takes true and false only", function()
        accepts(req{ [field] = true })
        accepts(req{ [field] = false })
        rejects(req{ [field] = "true" }, ("field '%s' must be a boolean (got \"true\")"):format(field))
        rejects(req{ [field] = 1 }, ("field '%s' must be a boolean (got 1)"):format(field))
      end)
    end
  end)

  describe("n", function()
    it("accepts integers 1..10 and integral floats", function()
      for n = 1, 10 do accepts(req{ n = n }) end
      accepts(req{ n = 2.0 })
      accepts(req{ model = GPT, n = 10 })
    end)
    it("refuses 0, 11, fractions and strings", function()
      rejects(req{ n = 0 }, "field 'n' must be an integer from 1 to 10 (got 0)")
      rejects(req{ n = 11 }, "(got 11)")
      rejects(req{ n = 1.5 }, "(got 1.5)")
      rejects(req{ n = "2" }, '(got "2")')
      rejects(req{ n = 0 / 0 }, "field 'n' must be an integer")
      rejects(req{ n = math.huge }, "field 'n' must be an integer")
    end)
  end)

  describe("prompt and model", function()
    it("requires a non-empty UTF-8 prompt", function()
      rejects({ model = GEMINI }, "omixa: field 'prompt' is required")
      rejects(req{ prompt = "" }, "field 'prompt' must be a non-empty string")
      rejects(req{ prompt = 42 }, "field 'prompt' must be a string (got 42)")
      rejects(req{ prompt = "caf\233" }, "field 'prompt' must be valid UTF-8 (bad byte at position 4)")
      rejects(req{ prompt = "a\237\160\128b" }, "must be valid UTF-8 (bad byte at position 2)") -- surrogate
      rejects(req{ prompt = "\192\175" }, "must be valid UTF-8 (bad byte at position 1)")       -- overlong
      rejects(req{ prompt = "ok\244\144\128\128" }, "position 3")                              -- > U+10FFFF
      rejects(req{ prompt = "cut\226\130" }, "position 4")                                     -- truncated
      accepts(req{ prompt = "emoji 🦊 中文 \"quotes\" back\\slash \n\t\1 control" })
    end)
    it("refuses an unknown model, listing the known ones", function()
      rejects(req{ model = "dall-e-3" }, "omixa: unknown model 'dall-e-3'")
      rejects(req{ model = "dall-e-3" }, "gpt-image-1.5")
      rejects(req{ model = "gpt-image-15" }, "did you mean 'gpt-image-1.5'?")
      rejects(req{ model = 3 }, "field 'model' must be a non-empty string (got 3)")
    end)
    it("checks only the common fields with strict = false", function()
      local c = omixa.new{ strict = false, base_url = "http://127.0.0.1:9" }
      local body = c:prepare(req{ model = "new-model", style = "vivid", n = 2 }).body
      assert.equal('{"model":"new-model","prompt":"a fox","n":2,"style":"vivid"}', body)
      assert.has_error(function() c:prepare(req{ model = "new-model", n = 20 }) end)
    end)
  end)

  describe("unknown fields", function()
    it("suggests the closest field", function()
      rejects(req{ aspect_ration = "1:1" }, "did you mean 'aspect_ratio'?")
      rejects(req{ promt = "x" }, "did you mean 'prompt'?")
      rejects(req{ model = GPT, qualty = "high" }, "did you mean 'quality'?")
    end)
    it("says when a field belongs to the other family", function()
      rejects(req{ quality = "high" }, "field 'quality' is not accepted by model '" .. GEMINI .. "'")
      rejects(req{ model = GPT, aspect_ratio = "1:1" }, "field 'aspect_ratio' is not accepted by model 'gpt-image-1.5'")
    end)
    it("refuses array entries and non-table requests", function()
      rejects({ "a fox" }, "request keys must be field names")
      rejects("a fox", "omixa: request must be a table (got \"a fox\")")
    end)
  end)

  describe("input images", function()
    local dir = helpers.tmpdir()
    local path = dir .. "/ref.png"
    assert(omixa.save(PNG_1x1, path))
    local notimg = dir .. "/notes.txt"
    assert(omixa.save("hello, not an image", notimg))

    it("accept a path, {path}, {bytes}, a data URL and the wire form", function()
      accepts(req{ input_images = { path } })
      accepts(req{ input_images = { { path = path } } })
      accepts(req{ input_images = { { bytes = PNG_1x1 } } })
      accepts(req{ input_images = { { bytes = "anything", mime = "image/png" } } })
      accepts(req{ input_images = { omixa.data_url(PNG_1x1) } })
      accepts(req{ input_images = { { type = "image_url", image_url = { url = omixa.data_url(PNG_1x1) } } } })
      accepts(req{ model = GPT, mask = path, input_images = { path, path } })
    end)
    it("refuse remote URLs", function()
      rejects(req{ input_images = { "https://example.com/a.png" } },
        "field 'input_images[1]' is a remote URL")
      rejects(req{ input_images = { { type = "image_url", image_url = { url = "http://x/a.png" } } } },
        "is a remote URL")
    end)
    it("sniff the mime from the bytes, never from a file name", function()
      rejects(req{ input_images = { notimg } }, "field 'input_images[1]' is not a PNG, JPEG, WebP, GIF")
      rejects(req{ input_images = { { bytes = "plain text" } } }, "is not a PNG, JPEG, WebP, GIF")
      rejects(req{ input_images = { { bytes = PNG_1x1, mime = "text/plain" } } }, "has mime \"text/plain\"")
    end)
    it("check data URLs: known image mime and valid base64", function()
      rejects(req{ input_images = { "data:text/plain;base64,aGVsbG8=" } }, "has mime type 'text/plain'")
      rejects(req{ input_images = { "data:image/png;base64,iVBO!!!" } }, "invalid base64")
      rejects(req{ input_images = { "data:image/png,rawtext" } }, "must be a data:image/...;base64, URL")
    end)
    it("report a missing file as misuse", function()
      rejects(req{ input_images = { dir .. "/missing.png" } }, "field 'input_images[1]': cannot read image file")
    end)
    it("must be a non-empty array", function()
      rejects(req{ input_images = {} }, "field 'input_images' must be a non-empty array of images")
      rejects(req{ input_images = path }, "field 'input_images' must be an array of images")
      rejects(req{ input_images = { [2] = path } }, "non-empty array")
      rejects(req{ input_images = { 42 } }, "field 'input_images[1]' must be a file path, a data: URL or a table (got 42)")
    end)
    it("mask is a GPT-family field holding one image", function()
      rejects(req{ mask = path }, "field 'mask' is not accepted")
      rejects(req{ model = GPT, mask = "https://x/m.png" }, "field 'mask' is a remote URL")
    end)
  end)
end)

describe("misuse raises before any byte is sent", function()
  local srv
  setup(function() srv = helpers.serve() end)
  teardown(function() srv:stop() end)

  it("for every kind of bad request, option and call option", function()
    srv:reset()
    local c = omixa.new{ base_url = srv.url, max_retries = 0 }
    local bad = {
      function() c:generate(req{ aspect_ratio = "2:1" }) end,
      function() c:generate(req{ n = 1.5 }) end,
      function() c:generate(req{ prompt = "\255" }) end,
      function() c:generate(req{ input_images = { "https://example.com/x.png" } }) end,
      function() c:generate(req{ colour = "red" }) end,
      function() c:generate(req{}, { timeout = "soon" }) end,
      function() c:generate(req{}, { on_progres = print }) end,
      function() c:generate(nil) end,
      function() c.generate(req{}) end,
    }
    for i, f in ipairs(bad) do
      local ok, err = pcall(f)
      assert.is_false(ok, "case " .. i)
      assert.matches("^.-omixa: ", tostring(err))
    end
    assert.same({}, srv:requests())
  end)

  it("when the body would pass max_request_bytes, saying by how much", function()
    srv:reset()
    local c = omixa.new{ base_url = srv.url, max_request_bytes = 1000 }
    local big = { bytes = PNG_1x1 .. string.rep("\0", 2000) }
    local ok, err = pcall(c.generate, c, req{ input_images = { big } })
    assert.is_false(ok)
    assert.matches("over max_request_bytes %(0%.0 MiB%) by %d+ bytes", err)
    assert.same({}, srv:requests())
  end)

  it("reports the caller's line", function()
    local c = omixa.new{ base_url = srv.url }
    local ok, err = pcall(function() c:generate(req{ n = 0 }) end)
    assert.is_false(ok)
    assert.matches("10%-validation_spec%.lua:%d+: omixa: field 'n'", err)
  end)
end)

describe("omixa.new", function()
  it("raises on an unknown option, suggesting the closest", function()
    assert.has_error(function() omixa.new{ timout = 5 } end, "omixa: unknown option 'timout' (did you mean 'timeout'?)")
  end)
  it("raises on an option of the wrong type", function()
    assert.has_error(function() omixa.new{ timeout = "5" } end, 'omixa: option \'timeout\' must be number (got "5")')
    assert.has_error(function() omixa.new{ max_retries = 1.5 } end, "omixa: option 'max_retries' must be integer (got 1.5)")
    assert.has_error(function() omixa.new{ insecure = "yes" } end)
    assert.has_error(function() omixa.new{ api_key = 42 } end)
    assert.has_error(function() omixa.new{ timeout = -1 } end, "omixa: option 'timeout' must not be negative (got -1)")
    assert.has_error(function() omixa.new("x") end, "omixa: options must be a table (got string)")
  end)
  it("raises on a base URL that is not http or https", function()
    assert.has_error(function() omixa.new{ base_url = "ftp://x/api" } end,
      'omixa: base_url must start with http:// or https:// (got "ftp://x/api")')
    assert.has_error(function() omixa.new{ base_url = "www.omixa.cloud" } end)
  end)
  it("refuses header names and values that could inject", function()
    assert.has_error(function() omixa.new{ headers = { ["X-A"] = "1\r\nX-B: 2" } } end)
    assert.has_error(function() omixa.new{ headers = { ["Bad Name"] = "1" } } end)
  end)
  it("accepts every documented option of this version", function()
    local c = omixa.new{ api_key = "omx_live_x", base_url = "https://example.com/api/v1", model = GPT,
      timeout = 1, connect_timeout = 1, idle_timeout = 1, max_retries = 0, retry_unknown = false,
      max_response_bytes = 10, max_request_bytes = 10, ca_file = "/x", ca_path = "/y", insecure = false,
      proxy = "http://127.0.0.1:1", user_agent = "ua", headers = { ["X-Trace"] = "1" }, strict = true,
      allow_http = false, concurrency = 2 }
    assert.equal("omixa.client (https://example.com/api/v1, gpt-image-1.5)", tostring(c))
    c:close()
  end)
end)
