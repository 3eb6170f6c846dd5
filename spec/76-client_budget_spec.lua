-- The spend guard through the client (API.md "Client options": max_spend):
-- a request whose estimate would pass the budget is refused before anything
-- is sent; client:spent() counts what the service billed (exactly, in
-- micro-dollars), across jobs and generate_many, and the estimate of a
-- request whose outcome is unknown.
local omixa = require "omixa"
local helpers = require "helpers"

describe("max_spend, through the client", function()
  local srv
  setup(function() srv = helpers.serve() end)
  teardown(function() srv:stop() end)
  before_each(function() srv:reset() end)

  local function client(opts)
    opts = opts or {}
    opts.base_url, opts.max_retries = srv.url, opts.max_retries or 0
    return omixa.new(opts)
  end

  it("refuses a request that would pass the budget, sends nothing and says so", function()
    local c = client{ max_spend = "0.05" }
    assert.is_table((c:generate{ prompt = "first" })) -- 0.04
    assert.equal("0.040000", c:spent())
    local images, err = c:generate{ prompt = "second" }
    assert.is_nil(images)
    assert.is_true(omixa.is_error(err))
    assert.equal("budget", err.kind)
    assert.equal(0, err.attempts)
    assert.is_false(err.maybe_billed)
    assert.is_false(err.retryable)
    assert.matches("estimated at 0.040000 USD", err.message)
    assert.matches("max_spend 0.050000 USD", err.message)
    assert.matches("^omixa: budget exceeded: ", tostring(err))
    assert.equal(1, #srv:requests())
    assert.equal("0.040000", c:spent())
    c:close()
  end)

  it("estimates price x n from the catalog", function()
    local c = client{ max_spend = 0.1 }
    local _, err = c:generate{ prompt = "three", n = 3 } -- 0.12
    assert.equal("budget", err.kind)
    assert.matches("estimated at 0.120000 USD", err.message)
    assert.is_table((c:generate{ prompt = "three", model = "gpt-image-1.5", n = 3 })) -- 0.099
    assert.equal("0.099000", c:spent())
    assert.equal(1, #srv:requests())
    c:close()
  end)

  it("sums what the service billed exactly, across jobs and generate_many", function()
    local c = client{ max_spend = "1" }
    srv:faults{ { billed_amount = "0.000001" }, { billed_amount = "0.100000" }, { billed_amount = "0.200000" },
                { billed_amount = "0.033333" } }
    local a = c:start{ prompt = "job a" }
    local b = c:start{ prompt = "job b" }
    assert.is_table((a:wait()))
    assert.is_table((b:wait()))
    local results = c:generate_many{ { prompt = "many 1" }, { prompt = "many 2" } }
    assert.is_table(results[1].images, tostring(results[1].err))
    assert.is_table(results[2].images, tostring(results[2].err))
    assert.equal("0.333334", c:spent()) -- 0.1 + 0.2 in floats would not even be 0.3
    c:close()
  end)

  it("counts streamed requests like the others", function()
    local c = client{ max_spend = "0.12" }
    local images, info = c:generate({ prompt = "streamed", n = 2, size = "0.5K" }, { stream = true })
    assert.is_table(images, tostring(info))
    assert.equal("0.080000", c:spent())
    local _, err = c:generate({ prompt = "streamed again", n = 2 }, { stream = true })
    assert.equal("budget", err.kind)
    srv:faults{ { stream_end_early = true } }
    _, err = c:generate({ prompt = "cut stream" }, { stream = true })
    assert.is_true(err.maybe_billed, tostring(err))
    assert.equal("0.120000", c:spent())
    c:close()
  end)

  it("holds the estimate of jobs in flight, so concurrent jobs cannot all pass one check", function()
    local c = client{ max_spend = "0.1", concurrency = 4 }
    srv:faults{ { delay = 0.3 }, { delay = 0.3 } }
    local jobs = {}
    for i = 1, 3 do jobs[i] = c:start{ prompt = "at once " .. i } end
    assert.is_true(jobs[3]:done()) -- refused at once
    local _, err = jobs[3]:result()
    assert.equal("budget", err.kind)
    assert.is_table((jobs[1]:wait()))
    assert.is_table((jobs[2]:wait()))
    assert.equal(2, #srv:requests())
    assert.equal("0.080000", c:spent())
    -- generate_many: the requests past the budget are refused, the others run
    local more = client{ max_spend = "0.1" }
    local results = more:generate_many{ { prompt = "m1" }, { prompt = "m2" }, { prompt = "m3" } }
    assert.is_table(results[1].images)
    assert.is_table(results[2].images)
    assert.equal("budget", results[3].err.kind)
    assert.equal("0.080000", more:spent())
    c:close()
    more:close()
  end)

  it("releases the hold of a failure that billed nothing", function()
    local c = client{ max_spend = "0.04" }
    srv:faults{ { status = 500 } }
    local _, err = c:generate{ prompt = "fails" }
    assert.equal("api", err.kind)
    assert.is_false(err.maybe_billed)
    assert.equal("0.000000", c:spent())
    assert.is_table((c:generate{ prompt = "fits again" }))
    assert.equal("0.040000", c:spent())
    c:close()
  end)

  it("counts the estimate of a maybe-billed failure", function()
    local c = client{ max_spend = "0.1" }
    srv:faults{ { truncate = true } }
    local _, err = c:generate{ prompt = "cut short", n = 2 }
    assert.is_true(err.maybe_billed)
    assert.equal("0.080000", c:spent())
    _, err = c:generate{ prompt = "no room left" }
    assert.equal("budget", err.kind)
    c:close()
  end)

  it("with retry_unknown, an unknown attempt sent again counts its estimate too", function()
    local c = client{ max_retries = 1, retry_unknown = true }
    srv:faults{ { truncate = true } }
    local images, info = c:generate{ prompt = "twice?" }
    assert.is_table(images, tostring(info))
    assert.equal(2, info.attempts)
    assert.equal("0.080000", c:spent()) -- 0.04 billed + 0.04 that may have been
    c:close()
  end)

  it("counts without max_spend too, and cached results cost nothing", function()
    local c = client{ cache_dir = helpers.tmpdir(), max_spend = "0.04" }
    assert.equal("0.000000", c:spent())
    assert.is_table((c:generate{ prompt = "once" }))
    -- the budget is used up, yet a stored result is returned
    local images, info = c:generate{ prompt = "once" }
    assert.is_table(images, tostring(info))
    assert.is_true(info.cached)
    assert.equal("0.040000", c:spent())
    local plain = client()
    assert.is_table((plain:generate{ prompt = "plain", model = "gpt-image-1.5", n = 2 }))
    assert.equal("0.066000", plain:spent())
    c:close()
    plain:close()
    assert.has_error(function() plain:spent() end, "omixa: the client is closed")
  end)

  it("a model without a catalog price is allowed while the budget lasts, then refused", function()
    local c = client{ max_spend = "0.04" }
    srv:faults{ { billed_amount = "0.040000" } }
    assert.is_table((c:generate{ prompt = "unpriced", model = "imagen-4.0-fast-generate-001" }))
    assert.equal("0.040000", c:spent())
    local _, err = c:generate{ prompt = "unpriced", model = "imagen-4.0-fast-generate-001" }
    assert.equal("budget", err.kind)
    assert.matches("used up", err.message)
    c:close()
  end)

  it("prepare refuses past the budget; parse counts what was billed", function()
    local c = client{ max_spend = "0.05" }
    local req = assert(c:prepare{ prompt = "own transport" })
    local images = c:parse(200, '{"created":1,"data":[{"b64_json":"' .. omixa.b64encode(
      omixa.b64decode("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="))
      .. '"}],"usage":{"billed_amount":"0.040000"}}', { ["Content-Type"] = "application/json" })
    assert.is_table(images)
    assert.equal("POST", req.method)
    assert.equal("0.040000", c:spent())
    local none, err = c:prepare{ prompt = "own transport" }
    assert.is_nil(none)
    assert.equal("budget", err.kind)
    c:close()
  end)

  it("stream_parser's finish counts what was billed, once; a failed stream counts nothing", function()
    local c = client{ max_spend = "0.05" }
    assert.is_table((c:prepare({ prompt = "own stream" }, { stream = true })))
    local png = omixa.b64encode(omixa.b64decode(
      "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="))
    local completed = 'event: image_generation.completed\ndata: {"type":"image_generation.completed","b64_json":"'
      .. png .. '","usage":{"billed_amount":"0.040000"}}\n\n'
    local failed = c:stream_parser()
    assert.is_true((failed:feed('event: image_generation.partial_image\ndata: {"type":'
      .. '"image_generation.partial_image","b64_json":"' .. png .. '","partial_image_index":0}\n\n')))
    assert.is_nil((failed:finish())) -- ended before its image
    assert.equal("0.000000", c:spent())
    local p = c:stream_parser()
    assert.is_true((p:feed(completed .. "data: [DONE]\n\n")))
    local images, info = p:finish()
    assert.is_table(images, tostring(info))
    assert.equal("0.040000", info.billed_amount)
    assert.equal("0.040000", c:spent())
    assert.is_table((p:finish())) -- the same result again, not counted again
    assert.equal("0.040000", c:spent())
    -- the budget knows: the next request's estimate would pass it
    local none, err = c:prepare({ prompt = "own stream" }, { stream = true })
    assert.is_nil(none)
    assert.equal("budget", err.kind)
    c:close()
  end)

  it("parse counts what was billed when its url-only items come through fetch", function()
    local c = client{ max_spend = "0.05" }
    local png = omixa.b64decode(
      "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==")
    local body = '{"created":1,"data":[{"url":"http://127.0.0.1:1/a"}],"usage":{"billed_amount":"0.040000"}}'
    assert.is_table((c:parse(200, body, nil, function() return png end)))
    assert.equal("0.040000", c:spent())
    -- billed even when the image could not be fetched
    local none = c:parse(200, body, nil, function() return nil, "refused" end)
    assert.is_nil(none)
    assert.equal("0.080000", c:spent())
    c:close()
  end)

  it("omixa --budget refuses before sending (exit 5) and rejects a bad amount (exit 2)", function()
    local dir = helpers.tmpdir()
    local cli = helpers.cli()
    local function run(args)
      return helpers.run(string.format("cd %s && OMIXA_BASE_URL=%s %s %s", helpers.quote(dir),
        helpers.quote(srv.url), cli, args))
    end
    local _, code, out, err = run("fox -n 2 -o f.png --budget 0.05")
    assert.equal(5, code)
    assert.equal("", out)
    assert.matches("budget exceeded: this request is estimated at 0%.080000 USD", err)
    assert.same({}, srv:requests())
    _, code, out = run("fox -o f.png --budget 0.05")
    assert.equal(0, code)
    assert.equal("f.png\n", out)
    _, code, _, err = run("fox -o f.png --budget lots")
    assert.equal(2, code)
    assert.matches("max_spend", err)
  end)

  it("refuses a bad max_spend when the client is made", function()
    assert.has_error(function() omixa.new{ max_spend = "ten" } end,
      'omixa: option \'max_spend\': "ten" is not a decimal amount such as "0.040000"')
    assert.has_error(function() omixa.new{ max_spend = -1 } end, "omixa: option 'max_spend': -1 is negative")
    assert.has_error(function() omixa.new{ max_spend = "0.0000001" } end,
      'omixa: option \'max_spend\': "0.0000001" has more than 6 decimals (amounts are micro-dollars)')
    assert.has_error(function() omixa.new{ max_spend = {} } end,
      "omixa: option 'max_spend' must be string or number (got a table)")
  end)
end)
