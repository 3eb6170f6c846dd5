-- Everything the world does returns nil, err with the error object.
local omixa = require "omixa"
local helpers = require "helpers"

local KEY = "omx_live_S3CRETkey0123456789"

local function fields_ok(err)
  assert.is_true(omixa.is_error(err), "not an error object: " .. tostring(err))
  assert.is_boolean(err.retryable)
  assert.is_boolean(err.maybe_billed)
  assert.is_string(err.message)
  assert.is_string(tostring(err))
  assert.is_nil(tostring(err):find("\n"))
end

describe("errors", function()
  local srv, client
  setup(function()
    srv = helpers.serve()
    client = omixa.new{ base_url = srv.url, max_retries = 0, api_key = KEY }
  end)
  teardown(function() client:close(); srv:stop() end)
  before_each(function() srv:reset() end)

  local function fail_with(fault, opts, call_opts)
    srv:faults{ fault }
    local c = opts and omixa.new(opts) or client
    local images, err = c:generate({ prompt = "x" }, call_opts)
    assert.is_nil(images)
    fields_ok(err)
    assert.is_nil(tostring(err):find(KEY, 1, true))
    return err
  end

  describe("api", function()
    it("carries the envelope's type, code and message", function()
      local err = fail_with{ status = 402, type = "billing_error", code = "insufficient_balance",
                             message = "Insufficient wallet balance.", request_id = "req-402" }
      assert.equal("api", err.kind)
      assert.equal(402, err.status)
      assert.equal("billing_error", err.type)
      assert.equal("insufficient_balance", err.code)
      assert.equal("Insufficient wallet balance.", err.message)
      assert.equal("req-402", err.request_id)
      assert.equal(1, err.attempts)
      assert.is_false(err.retryable)
      assert.is_false(err.maybe_billed)
      assert.equal("omixa: api error 402 insufficient_balance: Insufficient wallet balance. (1 attempt, request req-402)",
        tostring(err))
      assert.matches('"insufficient_balance"', err.body)
    end)
    it("marks the retried statuses retryable", function()
      for _, st in ipairs({ 408, 409, 429, 500, 502, 503, 504 }) do
        assert.is_true(fail_with{ status = st }.retryable, "status " .. st)
      end
      for _, st in ipairs({ 400, 401, 403, 404, 422, 501 }) do
        assert.is_false(fail_with{ status = st }.retryable, "status " .. st)
      end
    end)
    it("gives a clear message for an HTML page or an empty body", function()
      local err = fail_with{ status = 502, body = "html" }
      assert.equal(502, err.status)
      assert.matches("HTTP 502 from the service %(an HTML page", err.message)
      assert.matches("<html", err.body)
      err = fail_with{ status = 503, body = "empty" }
      assert.equal("HTTP 503 from the service", err.message)
      assert.equal("", err.body)
    end)
    it("reads Retry-After", function()
      assert.equal(7, fail_with{ status = 429, retry_after = "7" }.retry_after)
      assert.equal(1.5, fail_with{ status = 429, retry_after = "7", retry_after_ms = "1500" }.retry_after)
      local date = os.date("!%a, %d %b %Y %H:%M:%S GMT", os.time() + 120)
      local ra = fail_with{ status = 503, retry_after = date }.retry_after
      assert.truthy(ra >= 100 and ra <= 121, "retry_after " .. tostring(ra))
    end)
    it("keeps at most 2 KiB of the body", function()
      local err = fail_with{ status = 500, body = string.rep("x", 5000) }
      assert.equal(2048, #err.body)
    end)
    it("never shows the API key, even when the server echoes it", function()
      local err = fail_with{ status = 401, body = '{"error":{"message":"bad key ' .. KEY .. '","code":"invalid_api_key"}}' }
      assert.is_nil(err.message:find(KEY, 1, true))
      assert.is_nil(err.body:find(KEY, 1, true))
      assert.matches("%[redacted%]", err.message)
      err = fail_with{ status = 400, body = "echo: Bearer " .. KEY }
      assert.is_nil(err.body:find(KEY, 1, true))
    end)
    it("comes from the stand-in's own checks: 401 and 422", function()
      local keyed = helpers.serve{ key = "omx_live_right" }
      local c = omixa.new{ base_url = keyed.url, api_key = "omx_live_wrong", max_retries = 0 }
      local images, err = c:generate{ prompt = "x" }
      keyed:stop()
      assert.is_nil(images)
      assert.equal(401, err.status)
      assert.equal("invalid_api_key", err.code)
      local loose = omixa.new{ base_url = srv.url, strict = false, max_retries = 0 }
      images, err = loose:generate{ model = "no-such-model", prompt = "x" }
      assert.is_nil(images)
      assert.equal(422, err.status)
      assert.equal("validation_error", err.code)
    end)
  end)

  describe("protocol", function()
    it("for a malformed body", function()
      local err = fail_with{ malformed = true }
      assert.equal("protocol", err.kind)
      assert.equal(200, err.status)
      assert.matches("malformed JSON", err.message)
    end)
    it("for bad base64", function()
      local err = fail_with{ bad_base64 = true }
      assert.equal("protocol", err.kind)
      assert.matches("bad base64", err.message)
    end)
    it("for a truncated body, which may have been billed", function()
      local err = fail_with{ truncate = true }
      assert.equal("protocol", err.kind)
      assert.is_true(err.maybe_billed)
      assert.is_true(err.retryable)
    end)
  end)

  describe("network", function()
    it("when nothing listens, before anything was sent", function()
      local gone = helpers.serve()
      local url = gone.url
      gone:stop()
      local c = omixa.new{ base_url = url, max_retries = 0 }
      local images, err = c:generate{ prompt = "x" }
      assert.is_nil(images)
      fields_ok(err)
      assert.equal("network", err.kind)
      assert.is_false(err.maybe_billed)
      assert.is_true(err.retryable)
      assert.is_nil(err.status)
    end)
    it("when the connection is cut after the request was sent", function()
      for _, where in ipairs({ "before_status", "mid_headers" }) do
        local err = fail_with{ cut = where }
        assert.equal("network", err.kind, where)
        assert.is_true(err.maybe_billed, where)
      end
    end)
  end)

  describe("timeout", function()
    it("when the answer takes longer than timeout", function()
      local err = fail_with({ delay = 3 }, { base_url = srv.url, max_retries = 0, timeout = 0.5 })
      assert.equal("timeout", err.kind)
      assert.is_true(err.maybe_billed)
      assert.is_true(err.retryable)
    end)
    it("per call", function()
      local err = fail_with({ delay = 3 }, nil, { timeout = 0.3 })
      assert.equal("timeout", err.kind)
    end)
  end)

  describe("too_large", function()
    it("when the response passes max_response_bytes", function()
      local err = fail_with({}, { base_url = srv.url, max_retries = 0, max_response_bytes = 1000 })
      assert.equal("too_large", err.kind)
      assert.is_true(err.maybe_billed)
    end)
  end)

  describe("config", function()
    it("without an API key for a remote service, sending nothing", function()
      local c = omixa.new{ base_url = "https://omixa.invalid/api/v1", api_key = function() return nil end }
      local images, err = c:generate{ prompt = "x" }
      assert.is_nil(images)
      assert.equal("config", err.kind)
      assert.equal(0, err.attempts)
      assert.matches("no API key", err.message)
    end)
    it("refusing to send the key over plain http to a remote host", function()
      local c = omixa.new{ base_url = "http://omixa.invalid/api/v1", api_key = KEY }
      local images, err = c:generate{ prompt = "x" }
      assert.is_nil(images)
      assert.equal("config", err.kind)
      assert.matches("clear text", err.message)
      assert.is_nil(tostring(err):find(KEY, 1, true))
    end)
    it("allowing plain http to loopback", function()
      for _, host in ipairs({ "127.0.0.1", "localhost" }) do
        local c = omixa.new{ base_url = srv.url:gsub("127%.0%.0%.1", host), api_key = KEY }
        assert.is_table((c:generate{ prompt = "x" }))
      end
    end)
  end)

  describe("cancelled", function()
    it("when on_progress returns false", function()
      local err = fail_with({ delay = 1 }, nil, { on_progress = function(p) return p.phase ~= "waiting" end })
      assert.equal("cancelled", err.kind)
      assert.is_true(err.maybe_billed)
      err = fail_with({}, nil, { on_progress = function() return false end })
      assert.equal("cancelled", err.kind)
      assert.is_false(err.maybe_billed)
    end)
  end)

  describe("a Lua error inside on_progress", function()
    it("aborts the transfer and is raised from generate, the client usable afterwards", function()
      local marker = { "mine" }
      local ok, e = pcall(client.generate, client, { prompt = "x" }, {
        on_progress = function() error(marker) end })
      assert.is_false(ok)
      assert.equal(marker, e)
      ok, e = pcall(client.generate, client, { prompt = "x" }, {
        on_progress = function(p) if p.phase == "receiving" then error("boom") end end })
      assert.is_false(ok)
      assert.matches("boom", e)
      local images = client:generate{ prompt = "after" }
      assert.is_table(images)
    end)
    it("reports progress phases with byte counts", function()
      local seen, last = {}, nil
      assert(client:generate({ prompt = "x" }, { on_progress = function(p)
        seen[p.phase] = true
        last = p
        assert.equal(1, p.attempt)
        assert.is_number(p.sent); assert.is_number(p.received)
      end }))
      assert.is_true(seen.decoding)
      assert.is_true(seen.receiving or seen.waiting)
      assert.equal("decoding", last.phase)
      assert.truthy(last.received > 0)
    end)
  end)

  describe("tls", function()
    local tls
    setup(function() tls = helpers.serve{ tls = true } end)
    teardown(function() tls:stop() end)
    it("is refused by default against the stand-in's own CA", function()
      local c = omixa.new{ base_url = tls.url, max_retries = 0 }
      local images, err = c:generate{ prompt = "x" }
      assert.is_nil(images)
      assert.equal("tls", err.kind)
      assert.is_false(err.retryable)
      assert.is_false(err.maybe_billed)
    end)
    it("is accepted with ca_file", function()
      local c = omixa.new{ base_url = tls.url, ca_file = tls.ca_file }
      local images, err = c:generate{ prompt = "x" }
      assert.is_table(images, tostring(err))
    end)
    it("is accepted with insecure = true", function()
      local c = omixa.new{ base_url = tls.url, insecure = true }
      local images, err = c:generate{ prompt = "x" }
      assert.is_table(images, tostring(err))
    end)
  end)

  describe("a closed client", function()
    it("raises on use; close is idempotent", function()
      local c = omixa.new{ base_url = srv.url }
      c:close()
      c:close()
      assert.has_error(function() c:generate{ prompt = "x" } end, "omixa: the client is closed")
      assert.equal("omixa.client (" .. srv.url .. ", gemini-2.0-flash-preview-image-generation, closed)", tostring(c))
    end)
  end)
end)
