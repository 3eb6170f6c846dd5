-- One request pipeline (issue #12): what API.md "Errors", "Results",
-- "Retries that cannot double-bill" and "Call options" add, on every path.
--   billing truth: an undecodable 2xx is protocol, maybe billed, sent once,
--     and the budget counts its billed_amount when readable, else the estimate;
--     a 5xx without the service's envelope is an unknown outcome
--   deadline: bounds every attempt and back-off of a call
--   extra_body / extra_headers; info.requested, .headers, .response; err.headers
--   misuse raised at the caller's line on every entry point; numbers checked
-- (The 5xx html/empty matrix is in 45-faults; unknown outcomes in 46.)
local omixa = require "omixa"
local helpers = require "helpers"

local PRICE = omixa.models[omixa.models.default].price -- "0.040000"
local PNG = helpers.fixture("red-300x2.png")

-- A 2xx body the stand-in sends as it is (a fault with status 200 and a body).
local function canned(body)
  return { status = 200, body = body, content_type = "application/json" }
end

-- The caller's line (not a tail call: LuaJIT would lose the frame).
local function here()
  local info = debug.getinfo(2, "l")
  return info
end

-- Calls FN and checks that it raised a message starting at THIS spec's line
-- LINE (the caller's file:line, never one inside omixa), containing WANT.
local function raises_at(line, want, fn)
  local ok, msg = pcall(fn)
  assert.is_false(ok, "expected a raise")
  msg = tostring(msg)
  assert.matches("^[^:]*41%-pipeline_spec%.lua:" .. line .. ": ", msg)
  if want then assert.matches(want, msg, 1, true) end
end

describe("the pipeline", function()
  local srv
  setup(function() srv = helpers.serve() end)
  teardown(function() srv:stop() end)
  before_each(function() srv:reset() end)

  local function new(opts)
    local o = { base_url = srv.url }
    for k, v in pairs(opts or {}) do o[k] = v end
    return omixa.new(o)
  end

  describe("an undecodable 2xx", function()
    local CASES = {
      { name = "malformed JSON", fault = { malformed = true } },
      { name = "bad base64", fault = { bad_base64 = true } },
      { name = "truncated JSON (complete response)", fault = canned('{"created":1,"data":[{"b64_json":"iVBO') },
    }
    for _, case in ipairs(CASES) do
      it(case.name .. ": protocol, maybe billed, sent once, the estimate counted", function()
        local c = new{ max_spend = "1.00" }
        srv:faults{ case.fault, case.fault, case.fault }
        local images, err = c:generate{ prompt = "undecodable" }
        local spent = c:spent()
        c:close()
        assert.is_nil(images)
        assert.equal("protocol", err.kind, tostring(err))
        assert.equal(200, err.status)
        assert.is_true(err.maybe_billed, tostring(err))
        assert.is_true(err.retryable)
        assert.equal(1, err.attempts)
        assert.equal(1, #srv:requests())
        assert.equal(PRICE, spent)
        assert.is_table(err.headers)
        assert.is_string(err.headers["content-type"])
      end)
    end

    it("counts the billed_amount it still shows, not the estimate", function()
      local c = new{ max_spend = "1.00" }
      srv:faults{ canned('{"created":1,"data":[{"b64_json":"!!not base64!!"}],"usage":{"billed_amount":"0.011000"}}') }
      local images, err = c:generate{ prompt = "billed" }
      local spent = c:spent()
      c:close()
      assert.is_nil(images)
      assert.equal("protocol", err.kind)
      assert.is_true(err.maybe_billed)
      assert.equal("0.011000", spent)
    end)

    it("is sent again only with retry_unknown", function()
      local c = new{ retry_unknown = true, max_retries = 1 }
      srv:faults{ { malformed = true } }
      local images, info = c:generate{ prompt = "again" }
      c:close()
      assert.is_table(images, tostring(info))
      assert.equal(2, info.attempts)
    end)

    it("through parse: protocol, maybe billed, its billed_amount counted", function()
      local c = new{ max_spend = "1.00" }
      local images, err = c:parse(200,
        '{"data":[{"b64_json":"@@@@"}],"usage":{"billed_amount":"0.022000"}}', { ["Content-Type"] = "application/json" })
      assert.is_nil(images)
      assert.equal("protocol", err.kind)
      assert.is_true(err.maybe_billed)
      assert.equal("0.022000", c:spent())
      images, err = c:parse(200, '{"created":1,"data":[', {})
      assert.is_nil(images)
      assert.equal("protocol", err.kind)
      assert.is_true(err.maybe_billed)
      c:close()
    end)

    it("through a stream parser: a cut stream is maybe billed", function()
      local c = new{}
      local p = c:stream_parser{ stream = true }
      assert.is_true(p:feed('event: image_generation.partial_image\ndata: {"b64_json":"'))
      local images, err = p:finish()
      c:close()
      assert.is_nil(images)
      assert.equal("protocol", err.kind)
      assert.is_true(err.maybe_billed)
    end)
  end)

  describe("a 5xx", function()
    it("without the envelope, after the body was sent: maybe billed, the estimate counted, sent once", function()
      local c = new{ max_spend = "1.00" }
      local f = { status = 502, body = "html", retry_after = "0" }
      srv:faults{ f, f, f }
      local images, err = c:generate{ prompt = "proxy" }
      local spent = c:spent()
      c:close()
      assert.is_nil(images)
      assert.equal("api", err.kind)
      assert.equal(502, err.status)
      assert.is_true(err.maybe_billed)
      assert.equal(1, err.attempts)
      assert.equal(1, #srv:requests())
      assert.equal(PRICE, spent)
    end)
    it("524 (a load balancer's timeout page) likewise", function()
      local c = new{}
      srv:faults{ { status = 524, body = "empty" } }
      local images, err = c:generate{ prompt = "lb" }
      c:close()
      assert.is_nil(images)
      assert.is_true(err.maybe_billed)
      assert.equal(1, #srv:requests())
    end)
    it("with the envelope: retried, not billed", function()
      local c = new{ max_spend = "1.00" }
      local f = { status = 502, retry_after = "0" }
      srv:faults{ f, f, f }
      local images, err = c:generate{ prompt = "service" }
      local spent = c:spent()
      c:close()
      assert.is_nil(images)
      assert.is_false(err.maybe_billed)
      assert.equal(3, err.attempts)
      assert.equal("0.000000", spent)
    end)
  end)

  describe("deadline", function()
    it("a back-off that would end past it is not taken: the last error at once", function()
      local c = new{ deadline = 0.5, max_retries = 5 }
      local f = { status = 503, retry_after = "2" }
      srv:faults{ f, f, f }
      local images, err = c:generate{ prompt = "deadline backoff" }
      c:close()
      assert.is_nil(images)
      assert.equal("api", err.kind)
      assert.equal(503, err.status)
      assert.equal(1, err.attempts)
      assert.equal(1, #srv:requests())
    end)
    it("as a call option, over the client's", function()
      local c = new{ deadline = 600, max_retries = 5 }
      local f = { status = 503, retry_after = "2" }
      srv:faults{ f, f, f }
      local images, err = c:generate({ prompt = "deadline call" }, { deadline = 0.5 })
      c:close()
      assert.is_nil(images)
      assert.equal(1, err.attempts)
      assert.equal(1, #srv:requests())
    end)
    it("passing during an attempt: timeout, maybe billed (the body was sent)", function()
      local c = new{ timeout = 300 }
      srv:faults{ { delay = 3 } }
      local images, err = c:generate({ prompt = "deadline mid" }, { deadline = 0.4 })
      c:close()
      assert.is_nil(images)
      assert.equal("timeout", err.kind, tostring(err))
      assert.is_true(err.maybe_billed)
      assert.equal(1, err.attempts)
    end)
    it("bounds a job too (start)", function()
      local c = new{}
      srv:faults{ { delay = 3 } }
      local j = c:start({ prompt = "deadline job" }, { deadline = 0.4 })
      local images, err = j:wait()
      c:close()
      assert.is_nil(images)
      assert.equal("timeout", err.kind)
    end)
  end)

  describe("extra_body and extra_headers", function()
    local OK = canned('{"created":1,"data":[{"b64_json":"' .. omixa.b64encode(PNG) .. '"}]}')

    it("merges extra_body into the JSON body and sends extra_headers", function()
      local c = new{ headers = { ["X-Client"] = "c", ["X-Both"] = "client" } }
      srv:faults{ OK }
      local images = c:generate({ prompt = "extra" },
        { extra_body = { seed = 42, partial_images = 2, output_compression = { q = 80 } },
          extra_headers = { ["X-Call"] = "yes", ["X-Both"] = "call" } })
      c:close()
      assert.is_table(images)
      local r = srv:requests()[1]
      local body = require("cjson").decode(r.body)
      assert.equal(42, body.seed)
      assert.equal(2, body.partial_images)
      assert.same({ q = 80 }, body.output_compression)
      assert.equal("extra", body.prompt)
      assert.equal("yes", r.headers["x-call"])
      assert.equal("c", r.headers["x-client"])
      assert.equal("call", r.headers["x-both"])
    end)

    it("prepare shows them", function()
      local c = new{}
      local req = c:prepare({ prompt = "p" }, { extra_body = { seed = 7 }, extra_headers = { ["X-Call"] = "1" } })
      c:close()
      assert.matches('"seed":7', req.body, 1, true)
      assert.equal("1", req.headers["X-Call"])
    end)

    it("refuses a field the model's schema lists (misuse, at the caller's line)", function()
      local c = new{}
      local line = here().currentline + 1
      raises_at(line, "aspect_ratio", function() c:generate({ prompt = "x" }, { extra_body = { aspect_ratio = "1:1" } }) end)
      line = here().currentline + 1
      raises_at(line, "prompt", function() c:start({ prompt = "x" }, { extra_body = { prompt = "y" } }) end)
      line = here().currentline + 1
      raises_at(line, "extra_headers", function() c:generate({ prompt = "x" }, { extra_headers = { ["X\n"] = "1" } }) end)
      line = here().currentline + 1
      raises_at(line, "extra_body", function() c:generate({ prompt = "x" }, { extra_body = { seed = print } }) end)
      c:close()
      assert.equal(0, #srv:requests())
    end)

    it("take part in the cache key", function()
      local dir = helpers.tmpdir()
      local c = new{ cache_dir = dir }
      srv:faults{ OK, OK, OK, OK }
      assert.is_table((c:generate({ prompt = "keyed" }, { extra_body = { seed = 1 } })))
      local _, info = c:generate({ prompt = "keyed" }, { extra_body = { seed = 1 } })
      assert.is_true(info.cached)
      _, info = c:generate({ prompt = "keyed" }, { extra_body = { seed = 2 } })
      assert.is_false(info.cached)
      _, info = c:generate({ prompt = "keyed" }, { extra_body = { seed = 1 }, extra_headers = { ["X-A"] = "1" } })
      assert.is_false(info.cached)
      _, info = c:generate({ prompt = "keyed" }, { extra_body = { seed = 1 }, extra_headers = { ["X-A"] = "1" } })
      assert.is_true(info.cached)
      c:close()
      assert.equal(3, #srv:requests())
    end)
  end)

  describe("results", function()
    it("info.requested, info.headers and info.response", function()
      local c = new{}
      local images, info = c:generate{ prompt = "info", n = 2 }
      c:close()
      assert.is_table(images, tostring(info))
      assert.equal(2, info.requested)
      assert.is_string(info.headers["x-request-id"])
      assert.equal(info.request_id, info.headers["x-request-id"])
      assert.is_table(info.response)
      assert.equal(#images[1], info.response.data[1].b64_json)
      assert.equal(#images[2], info.response.data[2].b64_json)
      assert.is_string(info.response.usage.billed_amount)
    end)
    it("info.requested is 1 when the request does not say", function()
      local c = new{}
      local _, info = c:generate{ prompt = "one" }
      c:close()
      assert.equal(1, info.requested)
    end)
    it("err.headers of an api error", function()
      local c = new{}
      srv:faults{ { status = 402, headers = { ["X-Extra"] = "here" } } }
      local _, err = c:generate{ prompt = "headers" }
      c:close()
      assert.equal(402, err.status)
      assert.equal("here", err.headers["x-extra"])
      assert.is_string(err.headers["x-request-id"])
    end)
  end)

  describe("misuse is raised at the caller's line", function()
    local BAD = { prompt = "x", aspect_ratio = "2:1" }
    it("on every entry point", function()
      local c = new{}
      local line = here().currentline + 1
      raises_at(line, "aspect_ratio", function() c:generate(BAD) end)
      line = here().currentline + 1
      raises_at(line, "aspect_ratio", function() c:start(BAD) end)
      line = here().currentline + 1
      raises_at(line, "aspect_ratio", function() c:generate_many{ { prompt = "ok" }, BAD } end)
      line = here().currentline + 1
      raises_at(line, "aspect_ratio", function() c:prepare(BAD) end)
      line = here().currentline + 1
      raises_at(line, "status", function() c:parse("200", "") end)
      line = here().currentline + 1
      raises_at(line, "timeot", function() c:stream_parser{ timeot = 1 } end)
      line = here().currentline + 1
      raises_at(line, "client", function() c.models(nil) end)
      line = here().currentline + 1
      raises_at(line, "aspect_ratio", function() omixa.generate(BAD) end)
      line = here().currentline + 1
      raises_at(line, "timeout", function() omixa.new{ timeout = "1" } end)
      c:close()
      line = here().currentline + 1
      raises_at(line, "closed", function() c:models() end)
      assert.equal(0, #srv:requests())
    end)
  end)

  describe("numbers are checked at the boundary", function()
    local BAD_OPTIONS = {
      { timeout = 0 / 0 }, { timeout = math.huge }, { timeout = 1e300 }, { timeout = -1 },
      { connect_timeout = -math.huge }, { idle_timeout = 1e300 }, { deadline = 0 }, { deadline = 0 / 0 },
      { max_response_bytes = -1 }, { max_response_bytes = 1e30 }, { max_request_bytes = 1e30 },
      { concurrency = 1e9 }, { concurrency = 0 }, { max_retries = 1e9 }, { cache_max_bytes = 1e300 },
    }
    for _, o in ipairs(BAD_OPTIONS) do
      local k, v = next(o)
      it(("omixa.new{ %s = %s } raises"):format(k, tostring(v)), function()
        local line = here().currentline + 1
        raises_at(line, k, function() omixa.new(o) end)
      end)
    end
    for _, o in ipairs{ { timeout = 0 / 0 }, { timeout = 1e300 }, { deadline = -1 }, { idle_timeout = math.huge },
                        { max_retries = 1e9 } } do
      local k, v = next(o)
      it(("call option %s = %s raises"):format(k, tostring(v)), function()
        local c = new{}
        local line = here().currentline + 1
        raises_at(line, k, function() c:generate({ prompt = "x" }, o) end)
        c:close()
      end)
    end
  end)
end)
