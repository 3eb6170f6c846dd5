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
    local images, info = c:generate{ prompt = "a race", output_format = "png" } -- the CLI asks for what -o a.png names
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
      "omixa: option 'cache_max_bytes' needs cache_dir (or OMIXA_CACHE_DIR) or cache = true")
    local file = helpers.tmpdir() .. "/a-file"
    write_file(file, "x")
    local ok, err = pcall(omixa.new, { cache_dir = file .. "/sub" })
    assert.is_false(ok)
    assert.matches("^omixa: cache_dir: cannot create the cache directory", err)
  end)
end)

describe("identical requests in flight at once, on one client with a cache", function()
  local srv, dir
  setup(function() srv = helpers.serve() end)
  teardown(function() srv:stop() end)
  before_each(function()
    srv:reset()
    dir = helpers.tmpdir() .. "/cache"
  end)

  local function client(opts)
    opts = opts or {}
    opts.base_url, opts.cache_dir = srv.url, opts.cache_dir or dir
    if opts.max_retries == nil then opts.max_retries = 0 end
    return omixa.new(opts)
  end

  -- Drive JOB until the stand-in has recorded N requests (bounded, not timed).
  local function until_received(job, n)
    for _ = 1, 1000 do
      if #srv:requests() >= n then return end
      job:wait(0.01)
    end
    error("the stand-in never received request " .. n)
  end

  -- info as a cache hit gives it, without the per-call elapsed
  local function without_elapsed(info)
    local t = {}
    for k, v in pairs(info) do if k ~= "elapsed" then t[k] = v end end
    return t
  end

  it("generate_many with the same request twice sends one; the second is shared like a hit", function()
    local lines = {}
    local c = client{ debug = function(line) lines[#lines + 1] = line end }
    local req = { prompt = "twins", n = 2 }
    local results = c:generate_many{ req, req }
    assert.is_table(results[1].images, tostring(results[1].err))
    assert.is_table(results[2].images, tostring(results[2].err))
    assert.equal(1, #srv:requests())
    assert.same(results[1].images, results[2].images)
    local first, second = results[1].info, results[2].info
    assert.is_false(first.cached)
    assert.equal(1, first.attempts)
    assert.equal("0.080000", first.billed_amount)
    assert.is_true(second.cached)
    assert.equal(0, second.attempts)
    assert.is_nil(second.billed_amount)
    assert.is_number(second.elapsed)
    assert.equal(first.request_id, second.request_id)
    assert.same(first.images, second.images)
    assert.equal("0.080000", c:spent()) -- counted once
    -- its info is what a cache hit of the same request gives
    local again, hit = c:generate(req)
    assert.is_true(hit.cached)
    assert.same(again, results[2].images)
    assert.same(without_elapsed(hit), without_elapsed(second))
    assert.equal(1, #srv:requests())
    local log = table.concat(lines, "\n")
    assert.matches("in flight: waiting for it, nothing sent", log, 1, true)
    assert.matches("shared the result of the same request: 2 images", log, 1, true)
    c:close()
  end)

  it("two start of the same request: one is sent; the waiter holds no budget and gets no callback", function()
    local c = client{ max_spend = "0.04" } -- room for one image, not two held at once
    srv:faults{ { delay = 0.3 } }
    local calls = { a = 0, b = 0 }
    local a = c:start({ prompt = "at once" }, { on_progress = function() calls.a = calls.a + 1 end })
    local b = c:start({ prompt = "at once" }, { on_progress = function() calls.b = calls.b + 1 end })
    assert.is_false(b:done())
    assert.equal(2, c:poll()) -- the waiter counts as running
    local images, info = b:wait()
    assert.is_table(images, tostring(info))
    assert.is_true(a:done()) -- finished together
    local a_images, a_info = a:result()
    assert.same(a_images, images)
    assert.is_false(a_info.cached)
    assert.is_true(info.cached)
    assert.equal(0, info.attempts)
    assert.equal(1, #srv:requests())
    assert.equal("0.040000", c:spent())
    assert.is_true(calls.a > 0)
    assert.equal(0, calls.b)
    assert.equal(0, c:poll())
    c:close()
  end)

  it("a streamed request is shared too: the waiter gets no partial", function()
    local c = client()
    local partials = { a = 0, b = 0 }
    local req = { prompt = "streamed twins", size = "0.5K" }
    local a = c:start(req, { on_partial = function() partials.a = partials.a + 1 end })
    local b = c:start(req, { on_partial = function() partials.b = partials.b + 1 end })
    local images, info = b:wait()
    assert.is_table(images, tostring(info))
    assert.is_true(info.cached)
    assert.same((a:result()), images)
    assert.equal(1, #srv:requests())
    assert.is_true(partials.a > 0)
    assert.equal(0, partials.b)
    c:close()
  end)

  it("the first fails: the waiter sends its own request and never inherits the error", function()
    local c = client{ max_spend = "0.04" }
    srv:faults{ { status = 500, delay = 0.2 } }
    local a = c:start{ prompt = "first fails" }
    local b = c:start{ prompt = "first fails" }
    local _, err = a:wait()
    assert.equal("api", err.kind)
    assert.equal(500, err.status)
    local images, info = b:wait()
    assert.is_table(images, tostring(info))
    assert.is_false(info.cached)
    assert.equal(1, info.attempts)
    assert.equal(2, #srv:requests())
    assert.equal("0.040000", c:spent()) -- the failure billed nothing, the waiter's own success once
    c:close()
  end)

  it("of three, when the first fails only the second is sent; the third waits for it", function()
    local c = client()
    srv:faults{ { status = 500 } }
    local req = { prompt = "triplets" }
    local results = c:generate_many{ req, req, req }
    assert.equal("api", results[1].err.kind)
    assert.is_table(results[2].images, tostring(results[2].err))
    assert.is_false(results[2].info.cached)
    assert.is_table(results[3].images, tostring(results[3].err))
    assert.is_true(results[3].info.cached)
    assert.same(results[2].images, results[3].images)
    assert.equal(2, #srv:requests())
    c:close()
  end)

  it("the first is cancelled: the waiter sends its own request", function()
    local c = client()
    srv:faults{ { delay = 1 } }
    local a = c:start{ prompt = "cancel the first" }
    local b = c:start{ prompt = "cancel the first" }
    until_received(a, 1)
    a:cancel()
    local _, err = a:result()
    assert.equal("cancelled", err.kind)
    local images, info = b:wait()
    assert.is_table(images, tostring(info))
    assert.is_false(info.cached)
    assert.equal(1, info.attempts)
    assert.equal(2, #srv:requests())
    c:close()
  end)

  it("cancelling the waiter leaves the first alone", function()
    local c = client{ max_spend = "0.04" }
    srv:faults{ { delay = 0.3 } }
    local a = c:start{ prompt = "cancel the waiter" }
    local b = c:start{ prompt = "cancel the waiter" }
    b:cancel()
    local none, err = b:result()
    assert.is_nil(none)
    assert.equal("cancelled", err.kind)
    assert.is_false(err.maybe_billed)
    assert.equal(0, err.attempts)
    assert.is_false(a:done())
    local images, info = a:wait()
    assert.is_table(images, tostring(info))
    assert.is_false(info.cached)
    assert.equal(1, #srv:requests())
    assert.equal("0.040000", c:spent())
    c:close()
  end)

  it("closing the client ends a waiting job as cancelled, sending nothing", function()
    local c = client()
    srv:faults{ { delay = 0.3 } }
    local a = c:start{ prompt = "closed while waiting" }
    local b = c:start{ prompt = "closed while waiting" }
    c:close()
    assert.is_true(b:done())
    local none, err = b:result()
    assert.is_nil(none)
    assert.equal("cancelled", err.kind)
    assert.is_false(err.maybe_billed)
    assert.equal("cancelled", select(2, a:result()).kind)
    assert.is_true(#srv:requests() <= 1)
  end)

  it("different requests are both sent", function()
    local c = client()
    local results = c:generate_many{ { prompt = "one" }, { prompt = "two" }, { prompt = "one", n = 2 } }
    for i = 1, 3 do
      assert.is_table(results[i].images, tostring(results[i].err))
      assert.is_false(results[i].info.cached)
    end
    assert.equal(3, #srv:requests())
    c:close()
  end)

  it("another client, or no cache_dir, shares nothing", function()
    local a, b = client(), client()
    srv:faults{ { delay = 0.2 }, { delay = 0.2 } }
    local ja, jb = a:start{ prompt = "two clients" }, b:start{ prompt = "two clients" }
    assert.is_table((ja:wait()))
    assert.is_table((jb:wait()))
    assert.equal(2, #srv:requests())
    a:close(); b:close()
    local plain = omixa.new{ base_url = srv.url, max_retries = 0 }
    local results = plain:generate_many{ { prompt = "no cache" }, { prompt = "no cache" } }
    assert.is_false(results[2].info.cached)
    assert.equal(4, #srv:requests())
    plain:close()
  end)
end)
