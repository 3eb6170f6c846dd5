-- Deadlines (API.md "Client options", "Call options"): connect_timeout,
-- timeout (the whole attempt) and idle_timeout (no byte for that long once
-- the response has begun). Bounds are generous, [value, value * 1.5 + 1.5 s]
-- (less 50 ms for libcurl's millisecond rounding): the 10 % + 200 ms
-- precision is measured by bench/deadlines.lua, not asserted here.
local omixa = require "omixa"
local helpers = require "helpers"
local blackhole = require "blackhole"
local uv = require "luv"

local function clock() return uv.hrtime() / 1e9 end

local function within(elapsed, value)
  assert.truthy(elapsed >= value - 0.05 and elapsed <= value * 1.5 + 1.5,
    ("fired after %.3f s for a deadline of %g s"):format(elapsed, value))
end

-- One call: images, info|err, seconds.
local function timed(c, call_opts)
  local t = clock()
  local images, info = c:generate({ prompt = "a clock tower" }, call_opts)
  return images, info, clock() - t
end

local function expect_timeout(images, err, billed)
  assert.is_true(images == nil, "expected an error, got images")
  assert.is_true(omixa.is_error(err), tostring(err))
  assert.equal("timeout", err.kind, tostring(err))
  assert.equal(billed, err.maybe_billed, tostring(err))
  assert.is_true(err.retryable)
end

describe("deadlines", function()
  describe("connect_timeout", function()
    local hole
    before_each(function() hole = blackhole.open() end)
    after_each(function() hole:close() end)

    it("fires when a connection is never accepted; nothing was sent", function()
      local c = omixa.new{ base_url = hole.url, connect_timeout = 0.5, max_retries = 0 }
      local images, err, elapsed = timed(c)
      c:close()
      expect_timeout(images, err, false)
      assert.is_nil(err.status)
      assert.equal(1, err.attempts)
      within(elapsed, 0.5)
    end)
    it("works as a call option", function()
      local c = omixa.new{ base_url = hole.url, max_retries = 0 } -- connect_timeout 10 by default
      local images, err, elapsed = timed(c, { connect_timeout = 0.5 })
      c:close()
      expect_timeout(images, err, false)
      within(elapsed, 0.5)
    end)
    it("is retried like any failure before sending", function()
      local c = omixa.new{ base_url = hole.url, connect_timeout = 0.3, max_retries = 1 }
      local images, err, elapsed = timed(c)
      c:close()
      expect_timeout(images, err, false)
      assert.equal(2, err.attempts)
      -- two connects and one back-off of 0.375..0.5 s
      assert.truthy(elapsed >= 0.9 and elapsed <= 4, "took " .. elapsed .. " s")
    end)
  end)

  describe("against the stand-in", function()
    local srv
    setup(function() srv = helpers.serve() end)
    teardown(function() srv:stop() end)
    before_each(function() srv:reset() end)

    local function new_client(opts)
      local o = { base_url = srv.url, max_retries = 0 }
      for k, v in pairs(opts) do o[k] = v end
      return omixa.new(o)
    end

    describe("timeout", function()
      it("fires when the answer is late", function()
        srv:faults{ { delay = 3 } }
        local c = new_client{ timeout = 1 }
        local images, err, elapsed = timed(c)
        c:close()
        expect_timeout(images, err, true)
        within(elapsed, 1)
      end)
      it("works as a call option", function()
        srv:faults{ { delay = 3 } }
        local c = new_client{}
        local images, err, elapsed = timed(c, { timeout = 0.5 })
        c:close()
        expect_timeout(images, err, true)
        within(elapsed, 0.5)
      end)
      it("bounds the whole attempt, even while bytes keep coming", function()
        srv:faults{ { trickle = { bytes = 2048, interval = 0.1 } } } -- never idle, takes ~20 s
        local c = new_client{ timeout = 1, idle_timeout = 0.5 }
        local images, err, elapsed = timed(c)
        c:close()
        expect_timeout(images, err, true)
        assert.equal(200, err.status)
        within(elapsed, 1)
      end)
    end)

    describe("idle_timeout", function()
      it("fires when the response stalls after it began", function()
        srv:faults{ { trickle = { bytes = 1, interval = 5 } } }
        local c = new_client{ idle_timeout = 1 }
        local images, err, elapsed = timed(c)
        c:close()
        expect_timeout(images, err, true)
        assert.equal(200, err.status)
        within(elapsed, 1)
      end)
      it("fires on gaps shorter than a second too (0.3 s idle, a piece every 0.9 s)", function()
        srv:faults{ { trickle = { bytes = 4096, interval = 0.9 } } }
        local c = new_client{ idle_timeout = 0.3, timeout = 3 }
        local images, err, elapsed = timed(c)
        c:close()
        expect_timeout(images, err, true)
        within(elapsed, 0.3)
      end)
      it("works as a call option", function()
        srv:faults{ { trickle = { bytes = 1, interval = 5 } } }
        local c = new_client{}
        local images, err, elapsed = timed(c, { idle_timeout = 0.5 })
        c:close()
        expect_timeout(images, err, true)
        within(elapsed, 0.5)
      end)
      it("does not fire while bytes keep coming more often than it", function()
        srv:faults{ { trickle = { bytes = 65536, interval = 0.3 } } } -- about 2 s in all
        local c = new_client{ idle_timeout = 1 }
        local images, info = timed(c)
        c:close()
        assert.is_table(images, tostring(info))
      end)
      it("does not count the silent wait before the response begins", function()
        srv:faults{ { delay = 1.5 } }
        local c = new_client{ idle_timeout = 0.3, timeout = 30 }
        local images, info, elapsed = timed(c)
        c:close()
        assert.is_table(images, tostring(info))
        assert.truthy(elapsed >= 1.4, "took " .. elapsed .. " s")
      end)
      it("leaves a long silent wait to timeout alone", function()
        srv:faults{ { delay = 4 } }
        local c = new_client{ idle_timeout = 0.3, timeout = 2.5 }
        local images, err, elapsed = timed(c)
        c:close()
        expect_timeout(images, err, true)
        assert.is_nil(err.status)
        within(elapsed, 2.5)
      end)
    end)
  end)
end)
