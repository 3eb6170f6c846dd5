-- The C core against a hostile server and a careless caller (issue #13):
-- each case names the defect it pins. Responses come from spec/hostile.lua,
-- a luv server in this process that sends bytes written here by hand.
local omixa = require "omixa"
local core = require "omixa.core"
local hostile = require "hostile"

local JSON_BODY = '{"created":1,"data":[]}' .. string.rep(" ", 180)
local PNG = string.rep("?", 48) -- not sniffable: its mime comes from the header

-- One job on a fresh client against H: images, info | nil, err.
local function one_job(h, opts, call_opts)
  opts = opts or {}
  opts.base_url = h.url
  opts.max_retries = 0
  local c = omixa.new(opts)
  local job = c:start({ prompt = "x", model = "gpt-image-1.5" }, call_opts)
  assert.is_true(hostile.drive(function() return job:poll() end, 30), "the job never finished")
  local images, info = job:result()
  c:close()
  return images, info
end

-- Run one core transfer of REQ on a fresh multi: res | nil, err, seconds.
local function one_transfer(req, max_seconds)
  local m = core.multi()
  local tr = m:add(req)
  local t0 = core.now()
  local ok = hostile.drive(function() m:poll(0); return tr:done() end, max_seconds or 30)
  local took = core.now() - t0
  local res, err = nil, { kind = "unfinished" }
  if ok then res, err = tr:result() end
  m:close()
  return res, err, took
end

describe("defect 1: one reading of the response headers", function()
  local h
  after_each(function() if h then h:close() end end)

  it("refuses a 2xx with conflicting Content-Type headers as a protocol error", function()
    h = hostile.open(function()
      return hostile.response(200, { "Content-Type: image/png", "Content-Type: application/json",
                                     "Content-Length: " .. #JSON_BODY }, JSON_BODY)
    end)
    local images, err = one_job(h)
    assert.is_nil(images, "bytes that are not an image came back as one")
    assert.equal("protocol", err.kind, tostring(err))
    assert.matches("Content%-Type", err.message)
    assert.is_true(err.maybe_billed)
  end)

  it("also on the stream path", function()
    h = hostile.open(function()
      return hostile.response(200, { "Content-Type: image/png", "Content-Type: text/event-stream",
                                     "Content-Length: " .. #JSON_BODY }, JSON_BODY)
    end)
    local images, err = one_job(h, nil, { stream = true })
    assert.is_nil(images)
    assert.equal("protocol", err.kind, tostring(err))
  end)

  it("takes the same Content-Type twice as one value", function()
    h = hostile.open(function()
      return hostile.response(200, { "Content-Type: image/png", "Content-Type: image/png",
                                     "Content-Length: " .. #PNG }, PNG)
    end)
    local images, info = one_job(h)
    assert.is_table(images, tostring(info))
    assert.equal(PNG, images[1])
    assert.equal("image/png", info.images[1].mime) -- was "image/png," from the joined copies
  end)

  it("leaves conflicting headers of a non-2xx to the api error", function()
    local body = '{"error":{"message":"no","type":"x","code":"y"}}'
    h = hostile.open(function()
      return hostile.response(400, { "Content-Type: application/json", "Content-Type: text/plain",
                                     "Content-Length: " .. #body }, body)
    end)
    local images, err = one_job(h)
    assert.is_nil(images)
    assert.equal("api", err.kind, tostring(err))
    assert.equal(400, err.status)
  end)

  it("never hands a scanned body to take() as if it were the stream", function()
    -- An event-stream Content-Type, then a JSON one: the Lua side read the
    -- joined value as an event stream while the core scanned the body as
    -- JSON (keeping 2 KiB of it), so the stream lost the rest.
    local events = {}
    for i = 1, 40 do events[#events + 1] = "event: ping\ndata: {\"n\":" .. i .. ",\"pad\":\""
      .. string.rep("p", 100) .. "\"}\n\n" end
    local body = table.concat(events)
    h = hostile.open(function()
      return hostile.response(200, { "Content-Type: text/event-stream", "Content-Type: application/json",
                                     "Content-Length: " .. #body }, body)
    end)
    local m = core.multi()
    local tr = m:add{ url = h.url, scan_images = true }
    local got = {}
    hostile.drive(function()
      m:poll(0)
      local _, headers = tr:head()
      if headers and headers["content-type"]:find("^text/event%-stream") then got[#got + 1] = tr:take() end
      return tr:done()
    end)
    local res, err = tr:result()
    m:close()
    if res then
      got[#got + 1] = res.body:string()
      local all = table.concat(got)
      assert.equal(#body, #all, "take() cut the stream")
    else
      assert.equal("protocol", err.kind, err.message)
    end
  end)
end)

describe("defect 2: an untrusted Content-Length", function()
  local h
  after_each(function() if h then h:close() end end)

  it("refuses a declared length above max_response_bytes at the header, not at the timeout", function()
    h = hostile.open(function()
      return hostile.response(200, { "Content-Type: application/json", "Content-Length: 300000000" },
                              '{"created":1,'), true -- and then holds the connection
    end)
    local res, err, took = one_transfer({ url = h.url, max_response_bytes = 1048576, timeout = 20 }, 25)
    assert.is_nil(res)
    assert.equal("too_large", err.kind, tostring(err.message))
    assert.is_true(took < 15, "waited " .. took .. " s for the header's answer")
  end)

  it("does not reserve what a lying header declares under a huge limit", function()
    local body = '{"created":1,"data":[]}'
    h = hostile.open(function()
      -- declares 2^39 bytes, sends a few, closes: a truncated body
      return hostile.response(200, { "Content-Type: text/plain", "Content-Length: 549755813888" }, body)
    end)
    local res, err = one_transfer({ url = h.url, max_response_bytes = 2^40 })
    assert.is_nil(res)
    assert.equal("protocol", err.kind, tostring(err.message))
    assert.equal(#body, err.body:len())
  end)

  it("still answers a body that fits (pre-sized from a length it may trust)", function()
    local body = string.rep("x", 200000)
    h = hostile.open(function()
      return hostile.response(200, { "Content-Type: text/plain", "Content-Length: " .. #body }, body)
    end)
    local res = assert(one_transfer({ url = h.url, max_response_bytes = 2^40 }))
    assert.equal(body, res.body:string())
  end)
end)

describe("defect 3: out of memory while a transfer finishes", function()
  local h
  after_each(function() if h then h:close() end end)

  it("ends the transfer with an error, and nothing stays stuck or leaks", function()
    if not core._fail_alloc then
      pending("needs the core of `make asan` (built with OMX_TEST_HOOKS)")
      return
    end
    local body = '{"created":1,"data":[]}'
    h = hostile.open(function()
      return hostile.response(200, { "Content-Type: application/json", "Content-Length: " .. #body }, body)
    end)
    local failed_some = false
    for n = 0, 60 do
      local m = core.multi()
      local tr = m:add{ url = h.url, scan_images = true }
      -- let the whole answer arrive, then fail the n+1-th allocation of the poll that finishes it
      assert.is_true(hostile.drive(function()
        if h.requests > 0 then return true end
        m:poll(0) -- sends the request; the answer is read by the poll under test
        return false
      end))
      core.sleep(0.05)
      local ok = core._fail_alloc(n, m.poll, m, 0)
      failed_some = failed_some or not ok
      hostile.drive(function() m:poll(0); return tr:done() end, 10) -- a later poll, if any, must end it
      assert.is_true(tr:done(), "the transfer stayed running after a failed allocation (n = " .. n .. ")")
      assert.equal(0, m:running())
      local res, err = tr:result()
      if res then res.body:close() else assert.is_string(err.kind) end
      m:close()
      h.requests = 0
    end
    assert.is_true(failed_some, "no allocation failed: the hook did nothing")
  end)
end)

describe("defect 4: what C points to stays anchored", function()
  local h
  after_each(function() if h then h:close() end end)

  it("sends the request body even when the request table lets go of it after add", function()
    local got
    h = hostile.open(function(req)
      got = hostile.body_of(req)
      return hostile.response(200, { "Content-Type: text/plain", "Content-Length: 2" }, "ok")
    end)
    local m = core.multi()
    local pieces = {}
    for i = 1, 3000 do pieces[i] = string.format("%05d", i) end
    local req = { url = h.url, method = "POST", body = table.concat(pieces) }
    local want = req.body
    local tr = m:add(req)
    want = want:upper() -- keep only a copy with other bytes: the sent one is referenced by req alone
    req.body = nil
    collectgarbage("collect")
    collectgarbage("collect")
    local junk = {}
    for i = 1, 200 do junk[i] = string.rep(string.char(65 + i % 26), 15000) end -- reuse the freed memory
    assert.is_true(hostile.drive(function() m:poll(0); return tr:done() end))
    assert(tr:result())
    m:close()
    assert.equal(15000, #got)
    assert.equal(want:lower(), got)
    assert.equal(200, #junk)
  end)
end)

describe("defect 6: curl setup failures", function()
  it("gives the easy handle (and the share) back when setup raises", function()
    local m = core.multi()
    assert.has_error(function() m:add{ url = "http://127.0.0.1:1/", method = "PUT" } end,
      "omixa: unsupported method 'PUT'")
    -- the share is still usable, and is freed at close (valgrind / ASan: no leak)
    assert.has_error(function() m:add{ url = "http://127.0.0.1:1/", body = {} } end)
    m:close()
    collectgarbage("collect")
    collectgarbage("collect")
  end)
end)

describe("defect 8: numbers at the C boundary", function()
  local function add_with(field, value)
    local m = core.multi()
    local ok, err = pcall(m.add, m, { url = "http://127.0.0.1:1/", [field] = value })
    m:close()
    return ok, err
  end

  for _, case in ipairs{
    { "timeout", 0 / 0 }, { "timeout", 1e300 }, { "timeout", -1 }, { "timeout", math.huge },
    { "connect_timeout", 0 / 0 }, { "connect_timeout", -math.huge }, { "idle_timeout", 0 / 0 },
    { "idle_timeout", 1e30 }, { "max_response_bytes", -1 }, { "max_response_bytes", 1e30 },
    { "max_response_bytes", 0 / 0 }, { "max_response_bytes", 1.5 }, { "timeout", "soon" },
  } do
    it("refuses " .. case[1] .. " = " .. tostring(case[2]), function()
      local ok, err = add_with(case[1], case[2])
      assert.is_false(ok, "accepted")
      assert.matches(case[1], err, 1, true)
    end)
  end

  it("takes the ordinary values", function()
    assert.is_true((add_with("timeout", 300)))
    assert.is_true((add_with("max_response_bytes", 256 * 1024 * 1024)))
    assert.is_true((add_with("max_response_bytes", 2 ^ 40)))
  end)

  it("refuses NaN in poll, wake_at and sleep", function()
    local m = core.multi()
    assert.has_error(function() m:poll(0 / 0) end)
    assert.has_error(function() m:wake_at(0 / 0) end)
    assert.has_error(function() core.sleep(0 / 0) end)
    assert.has_error(function() core.sleep(1e300) end)
    m:wake_at(math.huge) -- never: no cast of an infinite time
    m:wake_at(nil)
    m:close()
  end)

  it("polls with a huge timeout until there is work (no int overflow: UBSan)", function()
    local h = hostile.open(function()
      return hostile.response(200, { "Content-Type: text/plain", "Content-Length: 2" }, "ok")
    end)
    local m = core.multi()
    local tr = m:add{ url = h.url }
    local done = hostile.drive(function()
      m:poll(h.requests > 0 and 3e6 or 0) -- once the answer is on its way: a wait it ends
      return tr:done()
    end)
    m:close()
    h:close()
    assert.is_true(done)
  end)
end)

describe("defect 5: a client after fork()", function()
  local ok_ffi, ffi = pcall(require, "ffi")
  local h
  after_each(function() if h then h:close() end end)

  it("refuses calls in the child, and closing it there leaves the parent's transfers alone", function()
    if not ok_ffi then pending("fork() through LuaJIT's ffi: runs in the LuaJIT pass") return end
    ffi.cdef[[ int fork(void); void _exit(int); int waitpid(int, int *, int); ]]
    local body = string.rep("b", 4000)
    local conn
    h = hostile.open(function(_, c)
      conn = c
      return hostile.response(200, { "Content-Type: text/plain", "Content-Length: " .. #body }, body:sub(1, 100)), true
    end)
    local m = core.multi()
    local tr = m:add{ url = h.url, timeout = 20 }
    assert.is_true(hostile.drive(function() m:poll(0); return conn ~= nil and tr:head() ~= nil end))
    local pid = ffi.C.fork()
    if pid == 0 then
      local refused = not pcall(m.add, m, { url = h.url })
      local poll_refused = not pcall(m.poll, m, 0)
      m:close()
      collectgarbage("collect")
      ffi.C._exit((refused and poll_refused) and 0 or 3)
    end
    assert.is_true(pid > 0, "fork failed")
    local status = ffi.new("int[1]")
    ffi.C.waitpid(pid, status, 0)
    assert.equal(0, status[0], "the child's copy did not refuse calls")
    conn:write(body:sub(101))
    local done = hostile.drive(function() m:poll(0); return tr:done() end, 10)
    assert.is_true(done, "the parent's transfer hung after the child closed its copy")
    local res = assert(tr:result())
    assert.equal(body, res.body:string())
    m:close()
  end)
end)
