-- Non-blocking use: jobs on the client's transport, driven by poll/wait or
-- by an event loop watching client:fd().
local omixa = require "omixa"
local helpers = require "helpers"
local sleep = require("omixa.core").sleep

describe("jobs", function()
  local srv, client
  setup(function()
    srv = helpers.serve()
    client = omixa.new{ base_url = srv.url, max_retries = 0 }
  end)
  teardown(function() client:close(); srv:stop() end)
  before_each(function() srv:reset() end)

  it("start returns at once; poll advances the job until it is done", function()
    srv:faults{ { delay = 0.5 } }
    local job = client:start{ prompt = "a fox" }
    assert.is_false(job:done())
    assert.has_error(function() job:result() end, "omixa: the job has not finished (poll it, or wait for it)")
    local polls = 0
    while not job:poll() do
      polls = polls + 1
      sleep(0.01)
    end
    assert.truthy(polls > 5, "polls: " .. polls)
    local images, info = job:result()
    assert.is_table(images, tostring(info))
    assert.equal("image/png", info.images[1].mime)
    assert.equal(1, info.attempts)
    assert.is_true(job:done())
  end)

  it("never holds the API key where inspecting the job would show it", function()
    local key = "omx_live_JOBSECRET123"
    local c = omixa.new{ base_url = srv.url, api_key = key }
    local job = c:start{ prompt = "secret" }
    local seen = {}
    local function walk(v, depth)
      if depth > 6 or seen[v] then return end
      if type(v) == "string" then assert.is_nil(v:find(key, 1, true), "the key is reachable from the job") end
      if type(v) ~= "table" then return end
      seen[v] = true
      for k, x in pairs(v) do walk(k, depth + 1); walk(x, depth + 1) end
    end
    walk(job, 0)
    assert.is_table((job:wait()))
    walk(job, 0)
    c:close()
  end)

  it("wait(t) returns nothing when t passes first, and the job runs on", function()
    srv:faults{ { delay = 0.6 } }
    local job = client:start{ prompt = "slow" }
    assert.equal(0, select("#", job:wait(0.05)))
    assert.is_false(job:done())
    local images = job:wait()
    assert.is_table(images)
  end)

  it("reports progress while running", function()
    srv:faults{ { delay = 0.4 } }
    local job = client:start{ prompt = "p" }
    local phases = {}
    while not job:poll() do
      local p = job:progress()
      phases[p.phase] = true
      assert.equal(1, p.attempt)
      sleep(0.01)
    end
    assert.truthy(phases.waiting or phases.connecting or phases.uploading)
  end)

  it("keeps at most `concurrency` in flight, the rest queued in order", function()
    local c = omixa.new{ base_url = srv.url, concurrency = 2, max_retries = 0 }
    srv:faults{ { delay = 0.3 }, { delay = 0.3 }, { delay = 0.3 }, { delay = 0.3 } }
    local jobs = {}
    for i = 1, 4 do jobs[i] = c:start{ prompt = "job " .. i } end
    assert.equal("queued", jobs[3]:progress().phase)
    assert.equal("queued", jobs[4]:progress().phase)
    assert.equal(4, c:poll())
    for i = 1, 4 do assert.is_table((jobs[i]:wait()), "job " .. i) end
    assert.equal(0, c:poll())
    local prompts = {}
    for i, r in ipairs(srv:requests()) do prompts[i] = require("cjson").decode(r.body).prompt end
    assert.same({ "job 1", "job 2", "job 3", "job 4" }, prompts)
    c:close()
  end)

  it("retries inside a job without blocking (back-off is a deadline)", function()
    srv:faults{ { status = 503, retry_after = "0.3" } }
    local c = omixa.new{ base_url = srv.url, max_retries = 2 }
    local job = c:start{ prompt = "retry" }
    local polls = 0
    while not job:poll() do polls = polls + 1; sleep(0.01) end
    local images, info = job:result()
    assert.is_table(images, tostring(info))
    assert.equal(2, info.attempts)
    assert.equal(2, #srv:requests())
    assert.truthy(polls > 10)
    c:close()
  end)

  describe("cancel", function()
    it("a queued job: nothing sent, not billed", function()
      local c = omixa.new{ base_url = srv.url, concurrency = 1 }
      srv:faults{ { delay = 0.3 } }
      local first = c:start{ prompt = "first" }
      local second = c:start{ prompt = "second" }
      second:cancel()
      local images, err = second:result()
      assert.is_nil(images)
      assert.equal("cancelled", err.kind)
      assert.is_false(err.maybe_billed)
      assert.is_table((first:wait()))
      assert.equal(1, #srv:requests())
      c:close()
    end)
    it("after the body was sent: maybe billed", function()
      srv:faults{ { delay = 2 } }
      local job = client:start{ prompt = "sent" }
      for _ = 1, 500 do
        if job:progress().phase == "waiting" then break end
        job:poll(); sleep(0.01)
      end
      assert.equal("waiting", job:progress().phase)
      job:cancel()
      local images, err = job:result()
      assert.is_nil(images)
      assert.equal("cancelled", err.kind)
      assert.is_true(err.maybe_billed)
      assert.is_true(job:done())
      -- the client goes on working
      assert.is_table((client:generate{ prompt = "after" }))
    end)
    it("a running job: the next queued one starts at once", function()
      local c = omixa.new{ base_url = srv.url, concurrency = 1, max_retries = 0 }
      srv:faults{ { delay = 2 } }
      local first = c:start{ prompt = "first" }
      local second = c:start{ prompt = "second" }
      for _ = 1, 500 do
        if #srv:requests() > 0 then break end
        first:wait(0.01)
      end
      first:cancel()
      -- with nothing else in flight, waiting must not wait for I/O that never comes
      local images, info = second:wait(10)
      assert.is_true(second:done(), "the queued job never started")
      assert.is_table(images, tostring(info))
      assert.equal(2, #srv:requests())
      c:close()
    end)
    it("by on_progress returning false, inside a job", function()
      local job = client:start({ prompt = "x" }, { on_progress = function() return false end })
      local images, err = job:wait()
      assert.is_nil(images)
      assert.equal("cancelled", err.kind)
    end)
  end)

  it("runs callbacks inside poll/wait and re-raises their errors there", function()
    local marker = { "boom" }
    local inside = false
    local job = client:start({ prompt = "x" }, { on_progress = function()
      inside = true
      error(marker)
    end })
    assert.is_false(inside) -- nothing ran during start
    local ok, e = pcall(job.wait, job)
    assert.is_false(ok)
    assert.equal(marker, e)
    ok, e = pcall(job.result, job)
    assert.is_false(ok)
    assert.equal(marker, e)
    assert.is_table((client:generate{ prompt = "still usable" }))
  end)

  describe("generate_many", function()
    it("returns results in input order, errors in place", function()
      srv:faults{ {}, { status = 402, code = "insufficient_balance" }, {} }
      local c = omixa.new{ base_url = srv.url, concurrency = 1, max_retries = 0 }
      local results = c:generate_many{ { prompt = "one" }, { prompt = "two" }, { prompt = "three", n = 2 } }
      assert.equal(3, #results)
      assert.is_table(results[1].images)
      assert.equal("api", results[2].err.kind)
      assert.equal(402, results[2].err.status)
      assert.equal(2, #results[3].images)
      c:close()
    end)
    it("validates every request before sending any", function()
      local ok, err = pcall(client.generate_many, client, { { prompt = "fine" }, { prompt = "bad", n = 0 } })
      assert.is_false(ok)
      assert.matches("omixa: request 2: field 'n'", err)
      assert.same({}, srv:requests())
    end)
  end)

  describe("client:fd()", function()
    local has_luv = pcall(require, "luv")
    it("becomes readable when the client has work, for an event loop", function()
      if not has_luv then pending("luv is not installed") return end
      srv:faults{ { delay = 0.3 } }
      -- In a process of its own: the other specs share luv's default loop.
      local ok, code, out, err = helpers.run("OMIXA_URL=" .. helpers.quote(srv.url) .. " "
        .. helpers.lua_script(helpers.root .. "/spec/fd_loop.lua"))
      assert.is_true(ok, "exit " .. code .. ": " .. err)
      local state, wakeups, how = out:match("^(%a+) (%d+) (%a+)")
      assert.equal("done", state, out .. err)
      -- a descriptor on every backend but the portable one, which has none
      -- and is driven from a timer (spec/07-backend_spec.lua)
      assert.equal(require("omixa.core").event_backend == "portable" and "timer" or "fd", how)
      wakeups = tonumber(wakeups)
      assert.truthy(wakeups >= 1 and wakeups < 200, "wakeups: " .. wakeups)
    end)
  end)

  describe("closing the client", function()
    it("cancels its jobs; using it afterwards raises", function()
      local c = omixa.new{ base_url = srv.url, concurrency = 1 }
      srv:faults{ { delay = 1 } }
      local running = c:start{ prompt = "running" }
      local queued = c:start{ prompt = "queued" }
      for _ = 1, 500 do
        if running:progress().phase == "waiting" then break end
        running:poll(); sleep(0.01)
      end
      assert.equal("waiting", running:progress().phase)
      c:close()
      local _, err = running:result()
      assert.equal("cancelled", err.kind)
      assert.is_true(err.maybe_billed)
      _, err = queued:result()
      assert.equal("cancelled", err.kind)
      assert.is_false(err.maybe_billed)
      assert.has_error(function() c:start{ prompt = "x" } end, "omixa: the client is closed")
      assert.has_error(function() c:poll() end, "omixa: the client is closed")
      assert.is_true(running:poll()) -- finished: it only says so
    end)
    it("a client and its running jobs dropped together are collected cleanly", function()
      srv:faults{ { delay = 1 } }
      do
        local c = omixa.new{ base_url = srv.url }
        c:start{ prompt = "dropped" }
        c:poll()
      end
      collectgarbage("collect")
      collectgarbage("collect")
      assert.is_table((client:generate{ prompt = "fine" }))
    end)
  end)
end)
