-- Large input images: the body is built once in C (core.build_body, an
-- image file base64-encoded straight from disk) and still arrives byte for
-- byte, on every attempt, counted and refused like any other body.
local omixa = require "omixa"
local core = require "omixa.core"
local helpers = require "helpers"

local MODEL = "gemini-2.0-flash-preview-image-generation"

-- SIZE random bytes behind a PNG signature and IHDR: sniffed as a PNG.
local function big_png(size)
  local f = assert(io.open("/dev/urandom", "rb"))
  local noise = f:read(size - 33)
  f:close()
  return "\137PNG\r\n\26\n\0\0\0\13IHDR\0\0\4\0\0\0\4\0\8\2\0\0\0\0\0\0\0" .. noise
end

local function expected_body(prompt, bytes, mime)
  return '{"model":"' .. MODEL .. '","prompt":"' .. prompt .. '","input_images":[{"type":"image_url",'
    .. '"image_url":{"url":"data:' .. (mime or "image/png") .. ';base64,' .. omixa.b64encode(bytes) .. '"}}]}'
end

describe("a request with a large input image", function()
  local srv, dir, path, bytes
  setup(function()
    srv = helpers.serve()
    dir = helpers.tmpdir()
    path = dir .. "/big.png"
    bytes = big_png(3 * 1024 * 1024)
    assert(omixa.save(bytes, path))
  end)
  teardown(function() srv:stop() end)
  before_each(function() srv:reset() end)

  it("arrives byte-exact, from a file path and from bytes", function()
    local c = omixa.new{ base_url = srv.url, max_retries = 0 }
    assert(c:generate{ prompt = "from a file", input_images = { path } })
    assert(c:generate{ prompt = "from bytes", input_images = { { bytes = bytes } } })
    c:close()
    local reqs = srv:requests()
    assert.equal(2, #reqs)
    assert.equal(expected_body("from a file", bytes), reqs[1].body)
    assert.equal(expected_body("from bytes", bytes), reqs[2].body)
  end)

  it("is sent again, identical, when the first attempt is retried", function()
    srv:faults{ { status = 503, retry_after = "0" } }
    local c = omixa.new{ base_url = srv.url, max_retries = 1 }
    local images, info = c:generate{ prompt = "again", input_images = { path } }
    c:close()
    assert.is_table(images, tostring(info))
    assert.equal(2, info.attempts)
    local reqs = srv:requests()
    assert.equal(2, #reqs)
    assert.equal(expected_body("again", bytes), reqs[1].body)
    assert.equal(reqs[1].body, reqs[2].body)
  end)

  it("is counted whole by on_progress", function()
    local c = omixa.new{ base_url = srv.url, max_retries = 0 }
    local totals = {}
    assert(c:generate({ prompt = "count", input_images = { path } },
      { on_progress = function(p) totals[p.send_total] = true end }))
    c:close()
    assert.is_true(totals[#expected_body("count", bytes)])
  end)

  it("is refused over max_request_bytes, saying by how much", function()
    local c = omixa.new{ base_url = srv.url, max_request_bytes = 2 * 1024 * 1024 }
    local ok, err = pcall(c.generate, c, { prompt = "too big", input_images = { path } })
    c:close()
    assert.is_false(ok)
    assert.matches("over max_request_bytes %(2%.0 MiB%) by %d+ bytes", err)
    assert.equal(0, #srv:requests())
  end)

  it("fails its transfer, never reading freed memory, when the body buffer is closed under it", function()
    local m = core.multi()
    local body = core.build_body{ '{"prompt":"', { b64 = bytes }, '"}' }
    local tr = m:add{ url = srv.url .. "/images/generations", method = "POST", body = body,
                      headers = { "Content-Type: application/json" }, timeout = 30 }
    body:close()
    local deadline = core.now() + 30
    while not tr:done() and core.now() < deadline do m:poll(1) end
    local res, err = tr:result()
    m:close()
    assert.is_nil(res)
    assert.is_table(err)
    assert.is_false(err.sent)
    assert.equal(0, #srv:requests())
  end)

  it("comes back from client:prepare as a string", function()
    local c = omixa.new{ base_url = srv.url, api_key = "omx_live_p" }
    local r = c:prepare{ prompt = "prepared", input_images = { path } }
    c:close()
    assert.equal("string", type(r.body))
    assert.equal(expected_body("prepared", bytes), r.body)
  end)
end)

describe("core.build_body", function()
  local dir
  setup(function() dir = helpers.tmpdir() end)

  it("writes text, base64 of strings and buffers, and base64 of files, in order", function()
    local path = dir .. "/parts.bin"
    assert(omixa.save("file bytes!", path))
    local inner = core.build_body{ "buffer" }
    local b = core.build_body{ "[", { b64 = "ab" }, ",", "", { b64 = inner }, ",",
                               { file = path, size = 11 }, ",", { b64 = "" }, "]" }
    assert.equal("[YWI=,YnVmZmVy,ZmlsZSBieXRlcyE=,]", b:string())
    assert.equal(#"[YWI=,YnVmZmVy,ZmlsZSBieXRlcyE=,]", b:len())
    b:close()
    inner:close()
    local empty = core.build_body{}
    assert.equal(0, empty:len())
  end)

  it("answers nil, the part's index and why when a file is missing or changed size", function()
    local path = dir .. "/changed.bin"
    assert(omixa.save("0123456789", path))
    for _, size in ipairs{ 9, 11 } do
      local b, at, err = core.build_body{ "x", { file = path, size = size } }
      assert.is_nil(b)
      assert.equal(2, at)
      assert.matches("changed", err)
    end
    local b, at, err = core.build_body{ { file = dir .. "/missing.bin", size = 1 } }
    assert.is_nil(b)
    assert.equal(1, at)
    assert.matches("missing%.bin", err)
  end)

  it("raises on a part of another shape", function()
    for _, bad in ipairs{ { 1 }, { {} }, { { b64 = 1 } }, { { file = "x" } }, { { file = "x", size = -1 } },
                          { { file = "x", size = 1.5 } } } do
      assert.has_error(function() core.build_body(bad) end)
    end
    assert.has_error(function() core.build_body("text") end)
  end)
end)
