-- No request whose outcome is unknown is ever sent twice by default (API.md
-- "Retries that cannot double-bill"): a timeout after sending, a cut
-- connection after sending, a truncated 2xx. The service saw it once, the
-- error says maybe_billed. retry_unknown = true resends them, and
-- max_retries and retry_unknown work as call options too.
local omixa = require "omixa"
local helpers = require "helpers"

-- Each way an outcome can be unknown: the fault, and the client options it
-- needs (short deadlines so that the suite stays fast).
local UNKNOWN = {
  { name = "a timeout after sending", fault = { delay = 2 }, opts = { timeout = 0.3 }, kind = "timeout" },
  { name = "a cut before the status line", fault = { cut = "before_status" }, kind = "network" },
  { name = "a cut in the middle of the headers", fault = { cut = "mid_headers" }, kind = "network" },
  { name = "a cut in the middle of the body", fault = { cut = "mid_body" }, kind = "protocol" },
  { name = "a truncated 2xx", fault = { truncate = true }, kind = "protocol" },
  { name = "an idle timeout once the response began", fault = { trickle = { bytes = 1, interval = 3 } },
    opts = { idle_timeout = 0.3 }, kind = "timeout" },
}

describe("an unknown outcome", function()
  local srv
  setup(function() srv = helpers.serve() end)
  teardown(function() srv:stop() end)
  before_each(function() srv:reset() end)

  local function new_client(...)
    local o = { base_url = srv.url }
    for i = 1, select("#", ...) do
      for k, v in pairs(select(i, ...) or {}) do o[k] = v end
    end
    return omixa.new(o)
  end

  -- Recorded generation requests whose prompt is PROMPT.
  local function seen(prompt)
    local out = {}
    for _, r in ipairs(srv:requests()) do
      if r.body:find('"prompt":"' .. prompt .. '"', 1, true) then out[#out + 1] = r end
    end
    return out
  end

  local function expect_once(err, case, prompt)
    assert.is_true(omixa.is_error(err), "expected an error: " .. tostring(err))
    assert.equal(case.kind, err.kind, tostring(err))
    assert.is_true(err.maybe_billed, tostring(err))
    assert.is_true(err.retryable, tostring(err))
    assert.equal(1, err.attempts, tostring(err))
    assert.equal(1, #seen(prompt), "the service saw it more than once: " .. tostring(err))
  end

  for _, case in ipairs(UNKNOWN) do
    describe(case.name, function()
      it("is sent once by default (max_retries = 2)", function()
        local c = new_client(case.opts)
        srv:faults{ case.fault, case.fault, case.fault }
        local images, err = c:generate{ prompt = "once" }
        c:close()
        assert.is_true(images == nil, "expected an error, got images")
        expect_once(err, case, "once")
      end)

      it("is sent once on a reused keep-alive connection", function()
        local c = new_client(case.opts)
        srv:faults{ {}, case.fault, case.fault, case.fault }
        assert.is_table((c:generate{ prompt = "warm up" }))
        local images, err = c:generate{ prompt = "reused" }
        c:close()
        assert.is_true(images == nil, "expected an error, got images")
        expect_once(err, case, "reused")
      end)

      it("is sent again with retry_unknown = true, the same body each time", function()
        local c = new_client(case.opts, { retry_unknown = true, max_retries = 1 })
        srv:faults{ case.fault }
        local images, info = c:generate{ prompt = "again" }
        c:close()
        assert.is_table(images, tostring(info))
        assert.equal(2, info.attempts)
        local reqs = seen("again")
        assert.equal(2, #reqs)
        assert.equal(reqs[1].body, reqs[2].body)
      end)
    end)
  end

  describe("a cancel after sending", function()
    -- on_progress says "waiting" once the request is sent and the service
    -- works on it; returning false there is a cancel with an unknown outcome.
    local function cancel_while_waiting(p) return p.phase ~= "waiting" end

    it("is maybe billed and sent once, on a fresh connection", function()
      local c = new_client{ retry_unknown = true }
      srv:faults{ { delay = 0.5 }, { delay = 0.5 } }
      local images, err = c:generate({ prompt = "cancel fresh" }, { on_progress = cancel_while_waiting })
      c:close()
      assert.is_true(images == nil, "not cancelled: on_progress never saw the phase 'waiting'")
      assert.equal("cancelled", err.kind)
      assert.is_true(err.maybe_billed)
      assert.equal(1, #seen("cancel fresh"))
    end)
    it("is maybe billed and sent once, on a reused keep-alive connection", function()
      local c = new_client{ retry_unknown = true }
      srv:faults{ {}, { delay = 0.5 }, { delay = 0.5 } }
      assert.is_table((c:generate{ prompt = "warm up" }))
      local images, err = c:generate({ prompt = "cancel reused" }, { on_progress = cancel_while_waiting })
      c:close()
      assert.is_true(images == nil, "not cancelled: on_progress never saw the phase 'waiting'")
      assert.equal("cancelled", err.kind)
      assert.is_true(err.maybe_billed)
      assert.equal(1, #seen("cancel reused"))
    end)
  end)

  describe("call options", function()
    it("retry_unknown = true for one call resends, bounded by max_retries", function()
      local c = new_client()
      local f = { cut = "mid_body" }
      srv:faults{ f, f, f, f }
      local images, err = c:generate({ prompt = "call" }, { retry_unknown = true, max_retries = 1 })
      assert.is_true(images == nil, "expected an error, got images")
      assert.equal("protocol", err.kind)
      assert.equal(2, err.attempts)
      assert.is_true(err.maybe_billed)
      assert.equal(2, #seen("call"))
      -- the next call is back to the client's own setting
      srv:reset()
      srv:faults{ f, f }
      images, err = c:generate{ prompt = "after" }
      c:close()
      assert.is_true(images == nil, "expected an error, got images")
      assert.equal(1, err.attempts)
      assert.equal(1, #seen("after"))
    end)
    it("retry_unknown = false for one call overrides the client's true", function()
      local c = new_client{ retry_unknown = true }
      srv:faults{ { truncate = true }, { truncate = true } }
      local images, err = c:generate({ prompt = "off" }, { retry_unknown = false })
      c:close()
      assert.is_true(images == nil, "expected an error, got images")
      assert.equal(1, err.attempts)
      assert.equal(1, #seen("off"))
    end)
    it("max_retries for one call raises the client's 0", function()
      local c = new_client{ max_retries = 0 }
      local f = { status = 503, retry_after = "0" }
      srv:faults{ f, f, f, f }
      local images, err = c:generate({ prompt = "more" }, { max_retries = 2 })
      c:close()
      assert.is_true(images == nil, "expected an error, got images")
      assert.equal(3, err.attempts)
      assert.equal(3, #seen("more"))
    end)
    it("max_retries = 0 for one call lowers the client's default", function()
      local c = new_client()
      local f = { status = 429, retry_after = "0" }
      srv:faults{ f, f, f }
      local images, err = c:generate({ prompt = "less" }, { max_retries = 0 })
      assert.is_true(images == nil, "expected an error, got images")
      assert.equal(1, err.attempts)
      assert.equal(1, #seen("less"))
      -- and the client's own default is back for the next call
      srv:reset()
      srv:faults{ f, f, f, f }
      images, err = c:generate{ prompt = "default" }
      c:close()
      assert.is_true(images == nil, "expected an error, got images")
      assert.equal(3, err.attempts)
      assert.equal(3, #seen("default"))
    end)
  end)
end)
