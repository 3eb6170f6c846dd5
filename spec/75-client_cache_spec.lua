-- Never paying twice (API.md "Client options": cache_dir): through the
-- client, a stored result is returned without sending anything, only
-- successes are stored, a damaged entry is a miss and is replaced, and two
-- processes sharing a directory leave one valid entry.
local omixa = require "omixa"
local helpers = require "helpers"
local lfs = require "lfs"
local cjson = require "cjson"

local q, entries = helpers.quote, helpers.listing

local read_file, must_read, write_file = helpers.read_file, helpers.must_read, helpers.write_file

describe("the cache, through the client", function()
  local srv, dir, c
  setup(function() srv = helpers.serve() end)
  teardown(function() srv:stop() end)
  before_each(function()
    srv:reset()
    dir = helpers.tmpdir() .. "/cache"
    c = omixa.new{ base_url = srv.url, cache_dir = dir, max_retries = 0 }
  end)
  after_each(function() c:close() end)

  it("a hit sends nothing, costs nothing and says cached = true", function()
    local images, info = c:generate{ prompt = "a lighthouse", n = 2 }
    assert.is_table(images, tostring(info))
    assert.is_false(info.cached)
    assert.equal(1, info.attempts)
    assert.equal(1, #srv:requests())
    assert.equal("0.080000", c:spent())

    local again, info2 = c:generate{ prompt = "a lighthouse", n = 2 }
    assert.is_table(again, tostring(info2))
    assert.equal(1, #srv:requests()) -- nothing sent
    assert.same(images, again)
    assert.is_true(info2.cached)
    assert.equal(0, info2.attempts)
    assert.is_nil(info2.billed_amount) -- nothing was billed for this call
    assert.same(info.images, info2.images)
    assert.equal(info.request_id, info2.request_id)
    assert.equal("0.080000", c:spent())
  end)

  it("is shared by clients on the same directory; another request or service misses", function()
    assert.is_table((c:generate{ prompt = "shared" }))
    local other = omixa.new{ base_url = srv.url, cache_dir = dir }
    local _, info = other:generate{ prompt = "shared" }
    assert.is_true(info.cached)
    assert.equal(1, #srv:requests())
    _, info = other:generate{ prompt = "shared", n = 2 }
    assert.is_false(info.cached)
    _, info = other:generate{ prompt = "shared", model = "gpt-image-1.5" }
    assert.is_false(info.cached)
    assert.equal(3, #srv:requests())
    other:close()
    -- the same body to another service (here: another base URL) is another key
    local elsewhere = omixa.new{ base_url = srv.url:gsub("127%.0%.0%.1", "localhost"), cache_dir = dir }
    _, info = elsewhere:generate{ prompt = "shared" }
    assert.is_false(info.cached)
    assert.equal(4, #srv:requests())
    elsewhere:close()
  end)

  it("start: a hit is a job that has already finished", function()
    assert.is_table((c:generate{ prompt = "a job" }))
    local job = c:start{ prompt = "a job" }
    assert.is_true(job:done())
    local images, info = job:result()
    assert.is_table(images)
    assert.is_true(info.cached)
    assert.equal(1, #srv:requests())
  end)

  it("generate_many: hits and misses in one batch, in input order", function()
    assert.is_table((c:generate{ prompt = "one" }))
    local results = c:generate_many{ { prompt = "one" }, { prompt = "two" }, { prompt = "one" } }
    assert.is_true(results[1].info.cached)
    assert.is_false(results[2].info.cached)
    assert.is_true(results[3].info.cached)
    assert.equal(2, #srv:requests())
  end)

  it("a streamed result is stored too; a hit calls no callback", function()
    local partials = 0
    local co = { on_partial = function() partials = partials + 1 end }
    local images, info = c:generate({ prompt = "streamed", size = "0.5K" }, co)
    assert.is_table(images, tostring(info))
    assert.is_true(partials > 0)
    partials = 0
    local again, info2 = c:generate({ prompt = "streamed", size = "0.5K" }, co)
    assert.is_true(info2.cached)
    assert.same(images, again)
    assert.equal(0, partials)
    assert.equal(1, #srv:requests())
  end)

  it("stores only successes", function()
    srv:faults{ { status = 503 }, { truncate = true } }
    local _, err = c:generate{ prompt = "fails" }
    assert.equal("api", err.kind)
    _, err = c:generate{ prompt = "fails" }
    assert.equal("protocol", err.kind)
    assert.is_true(err.maybe_billed)
    assert.same({}, entries(dir))
    local images, info = c:generate{ prompt = "fails" }
    assert.is_table(images, tostring(info))
    assert.is_false(info.cached)
    assert.equal(3, #srv:requests())
  end)

  it("keeps url-only images as bytes: a hit fetches nothing", function()
    srv:faults{ { url_only = true } }
    local images = c:generate{ prompt = "by url" }
    assert.is_table(images)
    assert.equal(1, #srv:fetches())
    local again, info = c:generate{ prompt = "by url" }
    assert.is_true(info.cached)
    assert.same(images, again)
    assert.equal(1, #srv:fetches())
    assert.equal(1, #srv:requests())
  end)

  it("a corrupt entry is a miss, then replaced", function()
    local images = c:generate{ prompt = "fragile" }
    local names = entries(dir)
    assert.equal(1, #names)
    local path = dir .. "/" .. names[1]
    local data = must_read(path)
    write_file(path, data:sub(1, #data - 100)) -- truncated
    local again, info = c:generate{ prompt = "fragile" }
    assert.is_table(again, tostring(info))
    assert.is_false(info.cached)
    assert.equal(2, #srv:requests())
    -- replaced by the new, complete result
    local third, info3 = c:generate{ prompt = "fragile" }
    assert.is_true(info3.cached)
    assert.same(again, third)
    assert.equal(2, #srv:requests())
    assert.equal(#images[1] > 0, true)
    -- one flipped byte in the middle is caught by the checksum too
    data = must_read(path)
    local mid = math.floor(#data / 2)
    write_file(path, data:sub(1, mid - 1) .. string.char((data:byte(mid) + 1) % 256) .. data:sub(mid + 1))
    local fourth, info4 = c:generate{ prompt = "fragile" }
    assert.is_table(fourth, tostring(info4))
    assert.is_false(info4.cached)
    assert.equal(3, #srv:requests())
  end)

  it("evicts the least recently used entries past cache_max_bytes", function()
    local small_dir = dir .. "-small"
    local probe = omixa.new{ base_url = srv.url, cache_dir = small_dir }
    assert.is_table((probe:generate{ prompt = "first" }))
    probe:close()
    local size = lfs.attributes(small_dir .. "/" .. entries(small_dir)[1], "size")
    -- room for one entry, not two
    local small = omixa.new{ base_url = srv.url, cache_dir = small_dir, cache_max_bytes = math.floor(size * 1.5) }
    assert.is_table((small:generate{ prompt = "second" }))
    assert.equal(1, #entries(small_dir))
    local _, info = small:generate{ prompt = "first" }
    assert.is_false(info.cached)
    _, info = small:generate{ prompt = "first" }
    assert.is_true(info.cached)
    assert.equal(3, #srv:requests())
    small:close()
  end)

  it("two processes racing on one key: both succeed, one valid entry is left", function()
    -- both requests wait at the stand-in, so both miss and both store
    srv:faults{ { delay = 0.5 }, { delay = 0.5 } }
    local out = helpers.tmpdir()
    local cli = helpers.cli()
    local function run(name)
      return string.format("%s 'a race' -o %s --cache %s --json >%s 2>&1", cli, q(out .. "/" .. name .. ".png"),
        q(dir), q(out .. "/" .. name .. ".json"))
    end
    local ok, code, _, err = helpers.run(string.format("cd %s && export OMIXA_BASE_URL=%s; %s & %s & wait",
      q(out), q(srv.url), run("a"), run("b")))
    assert(ok, "CLIs failed (" .. code .. "): " .. err)
    local a = cjson.decode(must_read(out .. "/a.json"))
    local b = cjson.decode(must_read(out .. "/b.json"))
    assert.equal(1, a.attempts)
    assert.equal(1, b.attempts)
    assert.equal(2, #srv:requests())
    local names = entries(dir)
    assert.equal(1, #names, table.concat(names, " "))
    assert.matches("^%x+%.entry$", names[1])
    -- the entry left is one of the two results, whole
    local images, info = c:generate{ prompt = "a race" }
    assert.is_true(info.cached)
    assert.equal(2, #srv:requests())
    local bytes = images[1]
    assert.is_true(bytes == read_file(out .. "/a.png") or bytes == read_file(out .. "/b.png"))
    -- and a third process hits it
    ok, code, _, err = helpers.run(string.format("cd %s && OMIXA_BASE_URL=%s %s 'a race' -o c.png --json",
      q(out), q(srv.url), cli) .. " --cache " .. q(dir) .. " >" .. q(out .. "/c.json"))
    assert(ok, "exit " .. code .. ": " .. err)
    assert.is_true(cjson.decode(must_read(out .. "/c.json")).cached)
    assert.equal(2, #srv:requests())
  end)

  it("OMIXA_CACHE_DIR turns it on; the option wins", function()
    local env_dir = helpers.tmpdir() .. "/from-env"
    local code = [[
      local omixa = require "omixa"
      local c = omixa.new{ base_url = %q }
      local _, a = c:generate{ prompt = "env" }
      local _, b = c:generate{ prompt = "env" }
      print(tostring(a.cached) .. " " .. tostring(b.cached))
    ]]
    local ok, _, out, err = helpers.run("OMIXA_CACHE_DIR=" .. q(env_dir) .. " " .. helpers.lua_cmd(code:format(srv.url)))
    assert(ok, err)
    assert.equal("false true\n", out)
    assert.equal(1, #entries(env_dir))
  end)

  it("refuses bad options when the client is made", function()
    assert.has_error(function() omixa.new{ cache_dir = 5 } end,
      "omixa: option 'cache_dir' must be string (got 5)")
    assert.has_error(function() omixa.new{ cache_dir = "" } end, "omixa: option 'cache_dir' must not be empty")
    assert.has_error(function() omixa.new{ cache_dir = dir, cache_max_bytes = 0 } end,
      "omixa: option 'cache_max_bytes' must be positive (got 0)")
    assert.has_error(function() omixa.new{ cache_max_bytes = 1000 } end,
      "omixa: option 'cache_max_bytes' needs cache_dir (or OMIXA_CACHE_DIR)")
    local file = helpers.tmpdir() .. "/a-file"
    write_file(file, "x")
    local ok, err = pcall(omixa.new, { cache_dir = file .. "/sub" })
    assert.is_false(ok)
    assert.matches("^omixa: cache_dir: cannot create the cache directory", err)
  end)
end)
