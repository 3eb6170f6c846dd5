-- The fault matrix: every failure the stand-in can inject, and what the
-- client makes of it (API.md "Errors", "Retries that cannot double-bill"):
-- kind, status, attempts, retryable, maybe_billed, and how many requests
-- reached the service. Retried faults carry Retry-After: 0 so that the
-- matrix does not wait on the back-off; the back-off has its own cases.
-- Unknown outcomes on reused connections and retry_unknown: 46-unknown_outcome.
local omixa = require "omixa"
local helpers = require "helpers"
local uv = require "luv"

local RETRIED = { 408, 409, 429, 500, 502, 503, 504 }
local NOT_RETRIED = { 400, 401, 402, 403, 404, 422, 501 }
local BODIES = { "envelope", "html", "empty" }

local function clock() return uv.hrtime() / 1e9 end

local function http_date(offset)
  return os.date("!%a, %d %b %Y %H:%M:%S GMT", os.time() + offset)
end

-- want: kind (or a list of accepted kinds), status (false: none), attempts,
-- retryable, maybe_billed, seen (requests the stand-in recorded).
local function expect_error(images, err, seen, want)
  assert.is_true(images == nil, "expected an error, got images")
  assert.is_true(omixa.is_error(err), "not an error object: " .. tostring(err))
  local what = tostring(err)
  if type(want.kind) == "table" then
    local ok = false
    for _, k in ipairs(want.kind) do ok = ok or err.kind == k end
    assert.is_true(ok, "kind " .. tostring(err.kind) .. ": " .. what)
  else
    assert.equal(want.kind, err.kind, what)
  end
  if want.status == false then
    assert.is_nil(err.status, what)
  else
    assert.equal(want.status, err.status, what)
  end
  assert.equal(want.attempts, err.attempts, "attempts: " .. what)
  assert.equal(want.retryable, err.retryable, "retryable: " .. what)
  assert.equal(want.maybe_billed, err.maybe_billed, "maybe_billed: " .. what)
  assert.equal(want.seen, seen, "requests the service saw: " .. what)
end

local function expect_images(images, info, seen, attempts)
  assert.is_table(images, "expected images: " .. tostring(info))
  assert.is_string(images[1])
  assert.equal(attempts, info.attempts, "info.attempts")
  assert.equal(attempts, seen, "requests the service saw")
end

-- What each body kind leaves in the error.
local function expect_body(err, status, body)
  if body == "envelope" then
    assert.is_string(err.code)
    assert.is_string(err.type)
    assert.is_nil(err.message:find("^HTTP %d+ from the service"), err.message)
    assert.matches('^{"error":', err.body)
  elseif body == "html" then
    assert.is_nil(err.code)
    assert.matches("^HTTP " .. status .. " from the service %(an HTML page", err.message)
    assert.matches("<html>", err.body)
  else
    assert.is_nil(err.code)
    assert.equal("HTTP " .. status .. " from the service", err.message)
    assert.equal("", err.body)
  end
end

describe("fault matrix", function()
  local srv, client
  setup(function()
    srv = helpers.serve()
    client = omixa.new{ base_url = srv.url } -- the defaults: max_retries = 2, retry_unknown = false
  end)
  teardown(function() client:close(); srv:stop() end)
  before_each(function() srv:reset() end)

  -- Queue FAULTS, make one call: images, info|err, requests seen, seconds.
  -- opts: a fresh client (a new connection) with these options.
  local function call(faults, opts, call_opts)
    srv:faults(faults)
    local c = client
    if opts then
      local o = { base_url = srv.url }
      for k, v in pairs(opts) do o[k] = v end
      c = omixa.new(o)
    end
    local t = clock()
    local images, info = c:generate({ prompt = "a lighthouse under faults" }, call_opts)
    local elapsed = clock() - t
    if c ~= client then c:close() end
    return images, info, #srv:requests(), elapsed
  end

  describe("a retried status", function()
    for _, status in ipairs(RETRIED) do
      for _, body in ipairs(BODIES) do
        local f = { status = status, body = body, retry_after = "0" }
        if status >= 500 and body ~= "envelope" then
          -- Not the service's envelope: a proxy in between answered after
          -- the body was sent, so the service may have billed it (API.md
          -- "Retries that cannot double-bill"): sent once, unless retry_unknown.
          it(("%d with an %s body is an unknown outcome: sent once, maybe billed"):format(status, body), function()
            local images, err, seen = call{ f, f, f, f }
            expect_error(images, err, seen, { kind = "api", status = status, attempts = 1,
              retryable = true, maybe_billed = true, seen = 1 })
            expect_body(err, status, body)
          end)
          it(("%d with an %s body is tried 3 times with retry_unknown"):format(status, body), function()
            local images, err, seen = call({ f, f, f, f }, { retry_unknown = true })
            expect_error(images, err, seen, { kind = "api", status = status, attempts = 3,
              retryable = true, maybe_billed = true, seen = 3 })
            assert.matches("%(3 attempts", tostring(err))
          end)
          it(("%d with an %s body, then a success, with retry_unknown: info.attempts = 2"):format(status, body),
            function()
              local images, info, seen = call({ f }, { retry_unknown = true })
              expect_images(images, info, seen, 2)
            end)
        else
          it(("%d with an %s body is tried 3 times, then returned"):format(status, body), function()
            local images, err, seen = call{ f, f, f, f } -- a fourth would show an extra attempt
            expect_error(images, err, seen, { kind = "api", status = status, attempts = 3,
              retryable = true, maybe_billed = false, seen = 3 })
            expect_body(err, status, body)
            assert.equal(0, err.retry_after)
            assert.matches("%(3 attempts", tostring(err))
          end)
          it(("%d with an %s body, then a success: images with info.attempts = 2"):format(status, body), function()
            local images, info, seen = call{ f }
            expect_images(images, info, seen, 2)
          end)
        end
      end
    end
  end)

  describe("a status that is not retried", function()
    for _, status in ipairs(NOT_RETRIED) do
      for _, body in ipairs(BODIES) do
        -- Retry-After: 0 on it too: a server's hint never makes a 4xx retried.
        local f = { status = status, body = body, retry_after = "0" }
        it(("%d with an %s body is returned after 1 attempt"):format(status, body), function()
          local images, err, seen = call{ f, f, f }
          expect_error(images, err, seen, { kind = "api", status = status, attempts = 1,
            retryable = false, maybe_billed = false, seen = 1 })
          expect_body(err, status, body)
          assert.matches("%(1 attempt", tostring(err))
        end)
      end
    end
  end)

  describe("Retry-After", function()
    it("in seconds is waited instead of the back-off", function()
      -- Four back-offs would take at least 0.375 + 0.75 + 1.5 + 3 s.
      local f = { status = 503, retry_after = "0" }
      local images, info, seen, elapsed = call({ f, f, f, f }, nil, { max_retries = 4 })
      expect_images(images, info, seen, 5)
      assert.truthy(elapsed < 3, "took " .. elapsed .. " s")
    end)
    it("in seconds: Retry-After: 1 waits about a second", function()
      local images, info, seen, elapsed = call{ { status = 429, retry_after = "1" } }
      expect_images(images, info, seen, 2)
      assert.truthy(elapsed >= 0.9 and elapsed < 4, "took " .. elapsed .. " s")
    end)
    it("as an HTTP date in the past retries at once", function()
      local images, info, seen, elapsed = call{ { status = 503, retry_after = http_date(-100) } }
      expect_images(images, info, seen, 2)
      assert.truthy(elapsed < 0.35, "took " .. elapsed .. " s") -- the back-off would be 0.375 s at least
    end)
    it("as an HTTP date 2 s ahead waits until then", function()
      local images, info, seen, elapsed = call{ { status = 429, retry_after = http_date(2) } }
      expect_images(images, info, seen, 2)
      assert.truthy(elapsed >= 0.5 and elapsed < 5, "took " .. elapsed .. " s")
    end)
    it("and retry-after-ms: retry-after-ms wins (Retry-After 120 alone is not waited)", function()
      local images, info, seen, elapsed = call{ { status = 429, retry_after = "120", retry_after_ms = "50" } }
      expect_images(images, info, seen, 2)
      assert.truthy(elapsed < 5, "took " .. elapsed .. " s")
    end)
    it("and retry-after-ms: retry-after-ms over 60 s wins over Retry-After: 0", function()
      local f = { status = 429, retry_after = "0", retry_after_ms = "61000" }
      local images, err, seen, elapsed = call{ f, f }
      expect_error(images, err, seen, { kind = "api", status = 429, attempts = 1,
        retryable = true, maybe_billed = false, seen = 1 })
      assert.equal(61, err.retry_after)
      assert.truthy(elapsed < 5, "took " .. elapsed .. " s")
    end)
    it("over 60 s is returned at once with retry_after, not waited", function()
      local f = { status = 429, retry_after = "61" }
      local images, err, seen, elapsed = call{ f, f }
      expect_error(images, err, seen, { kind = "api", status = 429, attempts = 1,
        retryable = true, maybe_billed = false, seen = 1 })
      assert.equal(61, err.retry_after)
      assert.matches("retry after 61s", tostring(err))
      assert.truthy(elapsed < 5, "took " .. elapsed .. " s")
    end)
    it("as an HTTP date over 60 s ahead is returned at once with retry_after", function()
      local f = { status = 503, retry_after = http_date(120) }
      local images, err, seen, elapsed = call{ f, f }
      expect_error(images, err, seen, { kind = "api", status = 503, attempts = 1,
        retryable = true, maybe_billed = false, seen = 1 })
      assert.truthy(err.retry_after >= 100 and err.retry_after <= 121, "retry_after " .. tostring(err.retry_after))
      assert.truthy(elapsed < 5, "took " .. elapsed .. " s")
    end)
  end)

  describe("the back-off", function()
    it("waits about 0.5 s (less up to 25 %) before the first retry", function()
      local images, info, seen, elapsed = call{ { status = 503 } }
      expect_images(images, info, seen, 2)
      assert.truthy(elapsed >= 0.3 and elapsed <= 2, "took " .. elapsed .. " s")
    end)
    it("waits about 0.5 s then 1 s before the second retry", function()
      local images, info, seen, elapsed = call{ { status = 502 }, { status = 502 } }
      expect_images(images, info, seen, 3)
      assert.truthy(elapsed >= 1.0 and elapsed <= 4, "took " .. elapsed .. " s")
    end)
    it("is used when Retry-After cannot be read", function()
      local images, info, seen, elapsed = call{ { status = 503, retry_after = "soon" } }
      expect_images(images, info, seen, 2)
      assert.truthy(elapsed >= 0.3 and elapsed <= 2, "took " .. elapsed .. " s")
    end)
  end)

  describe("a cut connection (a fresh connection each)", function()
    it("before the status line: network, maybe billed, sent once", function()
      local f = { cut = "before_status" }
      local images, err, seen = call({ f, f, f }, {})
      expect_error(images, err, seen, { kind = "network", status = false, attempts = 1,
        retryable = true, maybe_billed = true, seen = 1 })
    end)
    it("in the middle of the headers: network, maybe billed, sent once", function()
      local f = { cut = "mid_headers" }
      local images, err, seen = call({ f, f, f }, {})
      expect_error(images, err, seen, { kind = "network", status = 200, attempts = 1,
        retryable = true, maybe_billed = true, seen = 1 })
    end)
    it("in the middle of the body: protocol, maybe billed, sent once", function()
      local f = { cut = "mid_body" }
      local images, err, seen = call({ f, f, f }, {})
      expect_error(images, err, seen, { kind = "protocol", status = 200, attempts = 1,
        retryable = true, maybe_billed = true, seen = 1 })
    end)
    it("a truncated 2xx body: protocol, maybe billed, sent once", function()
      local f = { truncate = true }
      local images, err, seen = call({ f, f, f }, {})
      expect_error(images, err, seen, { kind = "protocol", status = 200, attempts = 1,
        retryable = true, maybe_billed = true, seen = 1 })
    end)
    -- The status line said 503: the service did not do the work, so the
    -- outcome is known and the policy for 503 applies.
    for _, cut in ipairs({ "mid_headers", "mid_body", "truncate" }) do
      it(("a 503 whose response is cut (%s) is retried like any 503, not billed"):format(cut), function()
        local f = { status = 503, retry_after = "0" }
        if cut == "truncate" then f.truncate = true else f.cut = cut end
        local images, err, seen = call({ f, f, f, f }, {})
        expect_error(images, err, seen, { kind = { "api", "protocol", "network" }, status = 503,
          attempts = 3, retryable = true, maybe_billed = false, seen = 3 })
      end)
    end
  end)

  describe("deadlines", function()
    it("a slow trickle past idle_timeout: timeout, maybe billed, sent once", function()
      local f = { trickle = { bytes = 1, interval = 5 } }
      local images, err, seen = call({ f, f, f }, { idle_timeout = 0.5 })
      expect_error(images, err, seen, { kind = "timeout", status = 200, attempts = 1,
        retryable = true, maybe_billed = true, seen = 1 })
    end)
    it("a delay past timeout: timeout, maybe billed, sent once", function()
      local f = { delay = 3 }
      local images, err, seen = call({ f, f, f }, { timeout = 0.5 })
      expect_error(images, err, seen, { kind = "timeout", status = false, attempts = 1,
        retryable = true, maybe_billed = true, seen = 1 })
    end)
  end)

  describe("failures before the request was sent", function()
    it("connection refused is retried (3 attempts, each only connecting), nothing reached a server", function()
      local gone = helpers.serve()
      local url = gone.url
      gone:stop()
      local tried, phases = {}, {}
      local images, err, seen, elapsed = call({}, { base_url = url }, { on_progress = function(p)
        tried[p.attempt] = true
        phases[p.phase] = true
      end })
      expect_error(images, err, seen, { kind = "network", status = false, attempts = 3,
        retryable = true, maybe_billed = false, seen = 0 })
      assert.same({ true, true, true }, tried)
      assert.same({ connecting = true }, phases)
      assert.truthy(elapsed >= 1.0, "two back-offs take at least 1.125 s; took " .. elapsed .. " s")
    end)
    it("a failed TLS handshake is retried, nothing reached the service", function()
      local url = srv.url:gsub("^http:", "https:") -- TLS to a plain-HTTP port
      local images, err, seen = call({}, { base_url = url, max_retries = 1 })
      expect_error(images, err, seen, { kind = "tls", status = false, attempts = 2,
        retryable = true, maybe_billed = false, seen = 0 })
    end)
  end)
end)
