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
