-- What differs between POSIX and Windows lives in src/platform.c (issue 14,
-- point 3): files are replaced through core.replace_file (MoveFileEx with
-- MOVEFILE_REPLACE_EXISTING on Windows, where os.rename refuses an existing
-- target), and omixa.save and the cache go through it. The Windows side is
-- compiled by .ci/mingw-check (spec/run-all); it cannot run here.
local helpers = require "helpers"
local core = require "omixa.core"
local omixa = require "omixa"
local cache = require "omixa.cache"

describe("platform", function()
  local dir = helpers.tmpdir()

  it("replace_file renames over an existing file", function()
    helpers.write_file(dir .. "/from", "new")
    helpers.write_file(dir .. "/to", "old")
    assert.is_true(core.replace_file(dir .. "/from", dir .. "/to"))
    assert.equal("new", helpers.must_read(dir .. "/to"))
    assert.is_nil(helpers.read_file(dir .. "/from"))
  end)

  it("replace_file returns nil and a reason naming the file", function()
    local ok, err = core.replace_file(dir .. "/missing", dir .. "/to")
    assert.is_nil(ok)
    assert.is_truthy(err:find(dir .. "/missing: ", 1, true), err)
  end)

  describe("with replace_file refusing", function()
    local real = core.replace_file
    before_each(function()
      core.replace_file = function(from) return nil, from .. ": refused by the spec" end
    end)
    after_each(function() core.replace_file = real end)

    it("omixa.save goes through it and leaves no temporary file", function()
      local sub = dir .. "/save"
      assert(os.execute("mkdir -p " .. helpers.quote(sub)))
      local ok, err = omixa.save("x", sub .. "/a.png")
      assert.is_nil(ok)
      assert.is_truthy(err:find("refused by the spec", 1, true), err)
      assert.same({}, helpers.listing(sub))
    end)

    it("the cache goes through it and leaves no temporary file", function()
      local sub = dir .. "/cache"
      assert(os.execute("mkdir -p " .. helpers.quote(sub)))
      local c = assert(cache.new{ dir = sub })
      local ok, err = c:put(c:key("/images/generations", "{}"), { "bytes" }, { model = "m" })
      assert.is_nil(ok)
      assert.is_truthy(err:find("refused by the spec", 1, true), err)
      local left = table.concat(helpers.listing(sub), " ")
      assert.is_falsy(left:find("tmp", 1, true), left)
    end)
  end)
end)
