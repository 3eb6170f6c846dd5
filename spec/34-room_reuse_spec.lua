-- A client decodes its images into rooms it keeps from one answer to the
-- next (issue 18, point 2; src/transport.c, "image rooms"): an answer must
-- never carry bytes of the answer before it, whether that one succeeded or
-- failed half-way; the rooms kept are capped, given back once the client
-- has been idle a while and when it is closed; and images the program has
-- dropped are collected before the next big image string is made, so its
-- pages are those of the dead images, not fresh ones.
local omixa = require "omixa"
local core = require "omixa.core"
local helpers = require "helpers"

local MiB = 1024 * 1024
local rep, char = string.rep, string.char

-- N bytes, every one of them SEED: a byte left over from another image
-- (another seed) shows at once, and where.
local function image(n, seed) return rep(char(seed), n) end

local function answer(images)
  local items = {}
  for i, b in ipairs(images) do items[i] = '{"b64_json":"' .. omixa.b64encode(b) .. '"}' end
  return '{"created":1,"data":[' .. table.concat(items, ",") .. '],"usage":{"billed_amount":"0.040000"}}'
end

-- The stand-in's fault that answers TEXT as it is, under the delivery EXTRA.
local function served(text, extra)
  local f = { status = 200, body = text }
  for k, v in pairs(extra or {}) do f[k] = v end
  return f
end

-- IMAGES are exactly WANT, with a message that says where they are not
-- (never the megabytes themselves).
local function exactly(want, images, info, what)
  assert.is_true(type(images) == "table", what .. ": expected images, got " .. tostring(info))
  assert.equal(#want, #images, what .. ": number of images")
  for i, w in ipairs(want) do
    local got = images[i]
    if got ~= w then
      local where = #got ~= #w and ("length " .. #got .. ", want " .. #w)
        or ("first foreign byte at " .. tostring(got:find("[^%" .. w:sub(1, 1) .. "]")))
      assert.is_true(false, what .. ": image " .. i .. ": " .. where)
    end
  end
end

describe("image rooms reused from one answer to the next", function()
  local srv, client
  setup(function()
    srv = helpers.serve()
    client = omixa.new{ base_url = srv.url, max_retries = 0 }
  end)
  teardown(function() client:close(); srv:stop() end)
  before_each(function() srv:reset() end)

  -- Each of ANSWERS ({ images } or { text =, extra =, kind = } for one that
  -- must fail) in a row on one client, through generate and through a job.
  local function in_a_row(answers)
    for _, how in ipairs({ "generate", "job" }) do
      for i, a in ipairs(answers) do
        srv:faults{ served(a.text or answer(a), a.extra) }
        local images, info
        if how == "generate" then
          images, info = client:generate{ prompt = "room " .. i }
        else
          images, info = client:start{ prompt = "room " .. i }:wait()
        end
        local what = how .. ", answer " .. i
        if a.kind then
          assert.is_nil(images, what .. ": expected an error")
          assert.is_true(omixa.is_error(info), what .. ": " .. tostring(info))
          assert.equal(a.kind, info.kind, what .. ": " .. tostring(info))
        else
          exactly(a, images, info, what)
        end
      end
    end
  end

  it("two different images of the same size back to back are each their own bytes", function()
    in_a_row{ { image(3 * MiB, 65) }, { image(3 * MiB, 66) }, { image(3 * MiB + 1, 67) } }
  end)

  it("a smaller image after a bigger one has its own length and bytes, and so do several", function()
    in_a_row{ { image(4 * MiB, 68) }, { image(2 * MiB + 5, 69) }, { image(MiB + 2, 70), image(2 * MiB + 1, 71) },
              { image(5, 72) }, { image(4 * MiB - 1, 73) } }
  end)

  it("an answer cut in the middle of its image, then the next is exactly its own", function()
    in_a_row{ { image(3 * MiB, 74) },
              { text = answer{ image(4 * MiB, 75) }, extra = { cut = "mid_body" }, kind = "protocol" },
              { image(3 * MiB + 2, 76) },
              { text = answer{ image(3 * MiB, 77) }, extra = { cut = "mid_body", chunked = true, chunk_size = 65536 },
                kind = "protocol" },
              { image(2 * MiB, 78) } }
  end)

  it("a base64 error in the middle of an image, then the next is exactly its own", function()
    local text = answer{ image(4 * MiB, 79) }
    local mid = math.floor(#text / 8) * 4
    local broken = text:sub(1, mid) .. "!!!!" .. text:sub(mid + 5)
    in_a_row{ { image(3 * MiB, 80) }, { text = broken, kind = "protocol" }, { image(3 * MiB + 1, 81) },
              { text = broken, extra = { chunked = true, chunk_size = 4096 }, kind = "protocol" },
              { image(MiB, 82) } }
  end)
end)

describe("the rooms a multi keeps", function()
  local srv
  setup(function() srv = helpers.serve() end)
  teardown(function() srv:stop() end)
  before_each(function() srv:reset() end)

  local function fetch(m, text)
    srv:faults{ served(text) }
    local tr = m:add{ url = srv.url .. "/images/generations", method = "POST", body = '{"prompt":"kept"}',
                      headers = { "Content-Type: application/json" }, timeout = 30, scan_images = true }
    local deadline = core.now() + 30
    while not tr:done() and core.now() < deadline do m:poll(1) end
    local res, err = tr:result()
    assert.is_table(res, tostring(err and err.message))
    return res
  end

  it("are at most keep_bytes, none after keep_idle seconds without a transfer, none once closed", function()
    local m = core.multi{ keep_bytes = 5 * MiB, keep_idle = 0.2 }
    assert.equal(0, m:kept())
    local res = fetch(m, answer{ image(3 * MiB, 83) })
    assert.equal(3 * MiB, #res.images[1])
    local kept = m:kept()
    assert.is_true(kept >= 3 * MiB and kept <= 5 * MiB, "kept " .. kept)
    -- a room over the cap is not kept; the one kept before stays
    res = fetch(m, answer{ image(6 * MiB, 84) })
    assert.equal(6 * MiB, #res.images[1])
    assert.is_true(m:kept() <= 5 * MiB, "kept " .. m:kept())
    -- idle: given back by the next poll after keep_idle
    core.sleep(0.3)
    m:poll(0)
    assert.equal(0, m:kept())
    fetch(m, answer{ image(2 * MiB, 85) })
    assert.is_true(m:kept() > 0)
    m:close()
    assert.equal(0, m:kept())
  end)

  it("keep nothing with keep_bytes = 0", function()
    local m = core.multi{ keep_bytes = 0 }
    local res = fetch(m, answer{ image(2 * MiB, 86) })
    assert.equal(image(2 * MiB, 86), res.images[1])
    assert.equal(0, m:kept())
    m:close()
  end)

  it("refuse options of the wrong type", function()
    assert.has_error(function() core.multi{ keep_bytes = "lots" } end)
    assert.has_error(function() core.multi{ keep_idle = -1 } end)
  end)
end)

describe("big images", function()
  local srv, client
  setup(function()
    srv = helpers.serve()
    client = omixa.new{ base_url = srv.url, max_retries = 0 }
  end)
  teardown(function() client:close(); srv:stop() end)

  -- The dead image of the call before is freed before the next image's
  -- string is made: the Lua heap right after a call holds one image, not
  -- two (the collector alone frees them later, by its own pace). PUC Lua
  -- only: LuaJIT's allocator keeps big blocks itself, and collecting first
  -- was measured to make it slower there.
  local puc_it = rawget(_G, "jit") and pending or it
  puc_it("are made after the images the program dropped have been collected", function()
    local text = answer{ image(8 * MiB, 87) }
    collectgarbage("collect")
    local base = collectgarbage("count") * 1024
    for i = 1, 3 do
      srv:faults{ served(text) }
      local images = client:generate{ prompt = "dropped " .. i }
      assert.equal(8 * MiB, #images[1])
      local held = collectgarbage("count") * 1024 - base
      assert.is_true(held < 12 * MiB, "call " .. i .. ": the heap grew by " .. math.floor(held / MiB) .. " MiB")
      images = nil -- luacheck: ignore 311 (dropped before the next call, as a program would)
    end
  end)
end)
