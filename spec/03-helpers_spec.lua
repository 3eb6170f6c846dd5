-- The module's helpers: read_image, data_url, sniff, save, base64.
local omixa = require "omixa"
local helpers = require "helpers"

local PNG_1x1 = omixa.b64decode(
  "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==")

describe("helpers", function()
  local dir = helpers.tmpdir()

  it("has a version", function()
    assert.equal("omixa 0.1.0", omixa._VERSION)
  end)

  it("save writes atomically and leaves no temporary file", function()
    local path = dir .. "/a.png"
    assert.is_true(omixa.save(PNG_1x1, path))
    assert.equal(PNG_1x1, helpers.must_read(path))
    assert.is_true(omixa.save("second", path)) -- replaces
    assert.equal("second", helpers.must_read(path))
    assert.is_nil(table.concat(helpers.listing(dir), "\n"):find("tmp", 1, true))
  end)

  it("save returns nil, err when the directory is missing", function()
    local ok, err = omixa.save("x", dir .. "/no/such/dir/a.png")
    assert.is_nil(ok)
    assert.matches("^omixa: cannot write", err)
    assert.has_error(function() omixa.save(nil, dir .. "/x") end)
  end)

  it("read_image returns bytes and the sniffed mime", function()
    local path = dir .. "/b.bin"
    assert(omixa.save(PNG_1x1, path))
    local bytes, mime = omixa.read_image(path)
    assert.equal(PNG_1x1, bytes)
    assert.equal("image/png", mime)
    local none, err = omixa.read_image(dir .. "/missing.png")
    assert.is_nil(none)
    assert.matches("cannot read image", err)
    assert(omixa.save("text", dir .. "/t.png"))
    none, err = omixa.read_image(dir .. "/t.png")
    assert.is_nil(none)
    assert.matches("is not a PNG", err)
  end)

  it("data_url sniffs the mime or takes the one given", function()
    assert.equal("data:image/png;base64," .. omixa.b64encode(PNG_1x1), omixa.data_url(PNG_1x1))
    assert.equal("data:image/webp;base64,eA==", omixa.data_url("x", "image/webp"))
    assert.has_error(function() omixa.data_url("not an image") end)
  end)

  it("sniff reads PNG sizes and says nil for the rest", function()
    assert.same({ mime = "image/png", format = "png", width = 1, height = 1 }, omixa.sniff(PNG_1x1))
    assert.is_nil(omixa.sniff("hello"))
  end)

  it("b64encode and b64decode round-trip", function()
    local all = {}
    for i = 0, 255 do all[#all + 1] = string.char(i) end
    local s = table.concat(all)
    assert.equal(s, omixa.b64decode(omixa.b64encode(s)))
    local bad, err = omixa.b64decode("ab!d")
    assert.is_nil(bad)
    assert.is_string(err)
  end)

  it("exposes the catalog with its documented shape", function()
    local m = omixa.models["gemini-2.0-flash-preview-image-generation"]
    assert.equal("google", m.family)
    assert.equal("0.040000", m.price)
    assert.is_true(m.streaming)
    assert.same({ type = "string", values = { "1:1", "16:9", "9:16", "4:3", "3:4" } }, m.fields.aspect_ratio)
    assert.same({ type = "integer", min = 1, max = 10 }, m.fields.n)
    assert.is_true(m.fields.prompt.required)
    assert.equal("gpt", omixa.models["MAI-Image-2.5"].family)
    assert.equal("image", omixa.models["gpt-image-1.5"].fields.mask.type)
    local ids = {}
    for id in pairs(omixa.models) do ids[#ids + 1] = id end
    table.sort(ids)
    assert.same({ "MAI-Image-2.5", "gemini-2.0-flash-preview-image-generation", "gpt-image-1.5",
                  "imagen-4.0-fast-generate-001", "imagen-4.0-generate-001" }, ids)
  end)

  it("models.register adds a model that validation then knows", function()
    omixa.models.register("test-model-x", { family = "gpt", price = "0.010000" })
    assert.is_true(omixa.validate{ model = "test-model-x", prompt = "p", quality = "low" })
    local ok, err = omixa.validate{ model = "test-model-x", prompt = "p", aspect_ratio = "1:1" }
    assert.is_nil(ok)
    assert.matches("not accepted", err)
    omixa.models.register("test-model-y", { fields = { style = { type = "string", values = { "a", "b" } } } })
    assert.is_true(omixa.validate{ model = "test-model-y", prompt = "p", style = "a" })
    assert.is_nil((omixa.validate{ model = "test-model-y", prompt = "p", style = "c" }))
    assert.has_error(function() omixa.models.register("bad", { fields = { x = { type = "float" } } }) end)
    omixa.models["test-model-x"], omixa.models["test-model-y"] = nil, nil
  end)
end)
