-- omixa.cache: hits and misses, damaged entries read as misses and are
-- removed, two processes racing on one key leave one valid entry, and the
-- least recently used entries go first when the directory passes max_bytes.
local cache = require "omixa.cache"
local core = require "omixa.core"
local helpers = require "helpers"
local lfs = require "lfs"

local q, listing = helpers.quote, helpers.listing
local PATH = "/api/v1"
local BODY = '{"model":"gpt-image-1.5","prompt":"a paper boat","n":2}'

local read_file, write_file = helpers.read_file, helpers.write_file

local function info_for(tag)
  return { created = 1780660800, model = "gpt-image-1.5", request_id = "req_" .. tag, billed_amount = "0.066000",
           usage = { billed_amount = "0.066000" }, attempts = 2, elapsed = 1.5, cached = false,
           images = { { mime = "image/png", format = "png", width = 3, height = 2, bytes = 10 } } }
end

describe("cache keys", function()
  it("are the SHA-256 of the base path and the body", function()
    local k = cache.key(PATH, BODY)
    assert.matches("^" .. string.rep("%x", 64) .. "$", k)
    assert.equal(k, cache.key(PATH, BODY))
    assert.equal(k, core.sha256("omixa-cache-key 1\0", PATH, "\0", BODY))
    assert.not_equal(k, cache.key("/v2", BODY))
    assert.not_equal(k, cache.key(PATH, BODY .. " "))
    -- the separator keeps path and body apart
    assert.not_equal(cache.key("/a", "b"), cache.key("/ab", ""))
    assert.equal(cache.key(PATH, ""), cache.key(PATH, core.buffer()))
    assert.has_error(function() cache.key(nil, BODY) end)
    assert.has_error(function() cache.key(PATH, 5) end)
  end)
end)

describe("a cache", function()
  local dir, c

  before_each(function()
    dir = helpers.tmpdir() .. "/nested/cache"
    c = assert(cache.new{ dir = dir })
  end)

  it("creates its directory and starts empty", function()
    assert.equal("directory", lfs.attributes(dir, "mode"))
    assert.same({}, listing(dir))
    assert.equal(1024 * 1024 * 1024, c.max_bytes)
  end)

  it("misses, then hits with the stored images and info", function()
    local key = c:key(PATH, BODY)
    local none, why = c:get(key)
    assert.is_nil(none)
    assert.equal("miss", why)

    local imgs = { "\137PNG\r\n\26\n" .. string.rep("\0\255", 5000), "second image \0 bytes" }
    assert.is_true(c:put(key, imgs, info_for("a")))
    local got, info = c:get(key)
    assert.same(imgs, got)
    assert.is_true(info.cached)
    assert.equal(0, info.attempts)
    assert.is_nil(info.elapsed)
    assert.equal("req_a", info.request_id)
    assert.equal("0.066000", info.billed_amount)
    assert.same({ billed_amount = "0.066000" }, info.usage)
    assert.same({ mime = "image/png", format = "png", width = 3, height = 2, bytes = 10 }, info.images[1])
    assert.equal(1780660800, info.created)
    if math.type then assert.equal("integer", math.type(info.created)) end
    -- one entry file, no temporary file left behind
    assert.same({ key .. ".entry" }, listing(dir))
  end)

  it("replaces an entry and keeps other keys apart", function()
    local k1, k2 = c:key(PATH, "1"), c:key(PATH, "2")
    assert(c:put(k1, { "one" }, info_for("1")))
    assert(c:put(k2, { "two" }, info_for("2")))
    assert(c:put(k1, { "uno" }, info_for("1b")))
    assert.same({ "uno" }, (c:get(k1)))
    assert.same({ "two" }, (c:get(k2)))
    assert.equal("req_1b", select(2, c:get(k1)).request_id)
  end)

  it("refuses misuse", function()
    local key = c:key(PATH, BODY)
    assert.has_error(function() c:get("abc") end)
    assert.has_error(function() c:get(key:upper()) end)
    assert.has_error(function() c:put(key, {}, {}) end)
    assert.has_error(function() c:put(key, { "" }, {}) end)
    assert.has_error(function() c:put(key, { 1 }, {}) end)
    assert.has_error(function() c:put(key, { "x" }) end)
    assert.has_error(function() cache.new{} end)
    assert.has_error(function() cache.new{ dir = dir, max_bytes = 0 } end)
    assert.has_error(function() cache.new{ dir = dir, max_bytes = 1.5 } end)
  end)

  it("says why when its directory cannot be made", function()
    local file = helpers.tmpdir() .. "/plain-file"
    write_file(file, "x")
    local none, err = cache.new{ dir = file .. "/cache" }
    assert.is_nil(none)
    assert.matches("cannot create the cache directory", err)
  end)

  it("does not store info that is not JSON, and stores nothing then", function()
    local key = c:key(PATH, BODY)
    local ok, err = c:put(key, { "img" }, { f = function() end })
    assert.is_nil(ok)
    assert.matches("JSON", err)
    assert.same({}, listing(dir))
  end)

  describe("a damaged entry", function()
    local key, path
    local imgs = { string.rep("image-bytes-", 400), "tail image" }

    before_each(function()
      key = c:key(PATH, BODY)
      path = dir .. "/" .. key .. ".entry"
      assert(c:put(key, imgs, info_for("d")))
    end)

    local function damaged(data, reason)
      write_file(path, data)
      local none, why = c:get(key)
      assert.is_nil(none)
      assert.matches("^corrupt: ", why)
      if reason then assert.matches(reason, why) end
      assert.is_nil(read_file(path), "the damaged entry is removed")
      assert.equal("miss", select(2, c:get(key)))
      -- and the next success replaces it
      assert(c:put(key, imgs, info_for("d2")))
      assert.same(imgs, (c:get(key)))
    end

    it("is a miss when truncated", function()
      local data = read_file(path)
      damaged(data:sub(1, #data - 1), "bytes of content")
      damaged(read_file(path):sub(1, 30))
      damaged("")
    end)

    it("is a miss when one byte is flipped, anywhere", function()
      local data = read_file(path)
      local header_end = data:find("\n", 15, true)
      for _, at in ipairs({ #data, #data - 5, math.floor(#data / 2), header_end + 3, header_end - 3, 20, 1 }) do
        local b = data:byte(at)
        damaged(data:sub(1, at - 1) .. string.char((b + 1) % 256) .. data:sub(at + 1))
      end
    end)

    it("is a miss when it holds garbage, or another key's entry", function()
      damaged(string.rep("\0garbage", 100), "not an omixa cache entry")
      damaged("omixa-cache 1\n" .. key .. " 99999999999 1 1 " .. string.rep("0", 64) .. "\nx")
      damaged("omixa-cache 1\n" .. key .. " 2 0 " .. string.rep("0", 64) .. "\n{}", "bad header")
      local other = c:key(PATH, "other")
      assert(c:put(other, { "other image" }, info_for("o")))
      damaged(read_file(dir .. "/" .. other .. ".entry"), "another key")
    end)
  end)

  it("keeps two processes racing on one key from leaving anything but one valid entry", function()
    local key = c:key(PATH, BODY)
    -- Each worker writes its own image (different sizes, so a torn read
    -- would show) and reads back after every write: any read must be one
    -- of the two complete entries.
    local worker = [[
      local cache = require "omixa.cache"
      local c = assert(cache.new{ dir = %q })
      local mine = %q
      local imgs = { A = string.rep("A", 150000), B = string.rep("B", 90001) }
      local bad = 0
      for i = 1, 150 do
        assert(c:put(%q, { imgs[mine], mine .. i }, { request_id = mine .. i }))
        local got, info = c:get(%q)
        if got then
          local who = got[1]:sub(1, 1)
          if got[1] ~= imgs[who] or got[2]:sub(1, 1) ~= who or info.request_id ~= got[2] then bad = bad + 1 end
        elseif info ~= "miss" then
          bad = bad + 1
          io.stderr:write(info, "\n")
        end
      end
      print("bad " .. bad)
    ]]
    local function cmd(who)
      return helpers.lua_cmd(worker:format(dir, who, key, key))
    end
    local out = helpers.tmpdir()
    local ok, code, _, err = helpers.run(cmd("A") .. " >" .. q(out .. "/a") .. " 2>&1 & "
      .. cmd("B") .. " >" .. q(out .. "/b") .. " 2>&1 & wait")
    assert(ok, "workers failed (" .. code .. "): " .. err)
    assert.equal("bad 0\n", read_file(out .. "/a"))
    assert.equal("bad 0\n", read_file(out .. "/b"))
    local got, info = c:get(key)
    assert.truthy(got, "an entry is left")
    local who = got[1]:sub(1, 1)
    assert.equal(who == "A" and 150000 or 90001, #got[1])
    assert.equal(who .. "150", got[2])
    assert.equal(got[2], info.request_id)
    assert.same({ key .. ".entry" }, listing(dir))
  end)

  describe("eviction", function()
    local IMG = string.rep("x", 1000)

    local function age(key, seconds)
      local t = os.time() - seconds
      assert(lfs.touch(dir .. "/" .. key .. ".entry", t, t))
    end

    local function present(key)
      return lfs.attributes(dir .. "/" .. key .. ".entry") ~= nil
    end

    it("removes the least recently used entries first; a hit counts as a use", function()
      local k = {}
      for i = 1, 6 do k[i] = c:key(PATH, "request " .. i) end
      assert(c:put(k[1], { IMG }, { n = 1 }))
      local size = lfs.attributes(dir .. "/" .. k[1] .. ".entry", "size")
      c = assert(cache.new{ dir = dir, max_bytes = 3 * size + 10 })
      assert(c:put(k[2], { IMG }, { n = 2 }))
      assert(c:put(k[3], { IMG }, { n = 3 }))
      age(k[1], 300); age(k[2], 200); age(k[3], 100)
      assert.truthy(c:get(k[1])) -- k[1] is now the most recently used
      assert(c:put(k[4], { IMG }, { n = 4 }))
      assert.is_false(present(k[2]))
      assert.is_true(present(k[1]) and present(k[3]) and present(k[4]))
      age(k[4], 50)
      assert(c:put(k[5], { IMG }, { n = 5 }))
      assert.is_false(present(k[3]))
      assert.is_true(present(k[1]) and present(k[4]) and present(k[5]))
      -- an entry bigger than the whole cache is not stored, and evicts nothing
      local ok, err = c:put(k[6], { string.rep("y", 4 * size) }, {})
      assert.is_nil(ok)
      assert.matches("larger than the cache's max_bytes", err)
      assert.is_false(present(k[6]))
      assert.equal(3, #listing(dir))
    end)

    it("removes stale temporary files and leaves other files alone", function()
      local key = c:key(PATH, BODY)
      local stale = dir .. "/.tmp-0123456789abcdef-00112233aabbccdd"
      local fresh = dir .. "/.tmp-0123456789abcdef-ffeeddcc00112233"
      write_file(stale, "half an entry")
      write_file(fresh, "being written")
      local t = os.time() - 7200
      assert(lfs.touch(stale, t, t))
      write_file(dir .. "/README", "mine")
      assert(c:put(key, { IMG }, {}))
      assert.is_nil(read_file(stale))
      assert.equal("being written", read_file(fresh))
      assert.equal("mine", read_file(dir .. "/README"))
    end)
  end)
end)
