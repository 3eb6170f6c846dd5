-- Streaming through the client: generate, jobs and stream_parser against the
-- stand-in's server-sent events.
local omixa = require "omixa"
local helpers = require "helpers"
local sleep = require("omixa.core").sleep

describe("streaming", function()
  local srv, client
  setup(function()
    srv = helpers.serve()
    client = omixa.new{ base_url = srv.url, max_retries = 0 }
  end)
  teardown(function() client:close(); srv:stop() end)
  before_each(function() srv:reset() end)

  it("asks for an event stream and gives the same images as without", function()
    local plain = assert(client:generate{ prompt = "same", size = "0.5K" })
    srv:faults{ { partials = 2, heartbeats = 3 } }
    local partials, events = {}, {}
    local images, info = client:generate({ prompt = "same", size = "0.5K" }, {
      on_partial = function(bytes, index, event)
        partials[#partials + 1] = { index = index, mime = omixa.sniff(bytes).mime, event = event.event }
      end,
      on_event = function(event) events[#events + 1] = event.event end,
    })
    assert.is_table(images, tostring(info))
    assert.equal(plain[1], images[1])
    assert.equal(1, info.attempts)
    assert.equal("image/png", info.images[1].mime)
    assert.equal("0.040000", info.billed_amount)
    assert.same({ { index = 1, mime = "image/png", event = "image_generation.partial_image" },
                  { index = 2, mime = "image/png", event = "image_generation.partial_image" } }, partials)
    assert.equal("image_generation.completed", events[3])
    local r = srv:requests()[#srv:requests()]
    assert.equal("text/event-stream", r.headers["accept"])
    assert.matches(',"stream":true}$', r.body)
  end)

  it("collects several images in order of arrival", function()
    local images, info = client:generate({ prompt = "three", n = 3, size = "0.5K" }, { stream = true })
    assert.is_table(images, tostring(info))
    assert.equal(3, #images)
  end)

  it("refuses streaming for a model the catalog does not mark, before sending", function()
    assert.has_error(function()
      client:generate({ model = "imagen-4.0-generate-001", prompt = "x" }, { stream = true })
    end)
    assert.has_error(function() client:generate({ prompt = "x" }, { stream = false, on_partial = print }) end)
    assert.same({}, srv:requests())
  end)

  it("turns an error event into an api error", function()
    srv:faults{ { stream_error = true } }
    local images, err = client:generate({ prompt = "x" }, { stream = true })
    assert.is_nil(images)
    assert.equal("api", err.kind)
    assert.equal(200, err.status)
    assert.is_false(err.maybe_billed)
  end)

  it("never mistakes a stream that ends early for a result", function()
    srv:faults{ { stream_end_early = true } }
    local images, err = client:generate({ prompt = "x" }, { stream = true })
    assert.is_nil(images)
    assert.equal("protocol", err.kind)
    assert.is_true(err.maybe_billed)
  end)

  it("reads CRLF streams and multi-line data", function()
    srv:faults{ { sse_crlf = true, partials = 1 } }
    assert.is_table((client:generate({ prompt = "crlf" }, { stream = true })))
    srv:faults{ { sse_multiline = true } }
    assert.is_table((client:generate({ prompt = "multi" }, { stream = true })))
  end)

  it("calls on_partial inside job polls, as the events arrive", function()
    srv:faults{ { partials = 3, interval = 0.2 } }
    local seen = {}
    local job = client:start({ prompt = "live", size = "0.5K" }, {
      on_partial = function(_, index) seen[#seen + 1] = index end })
    local partials_before_done = 0
    for _ = 1, 2000 do
      if job:poll() then break end
      partials_before_done = #seen
      sleep(0.005)
    end
    assert.is_true(job:done())
    assert.is_table((job:result()))
    assert.same({ 1, 2, 3 }, seen)
    assert.truthy(partials_before_done >= 1, "partials only came at the end")
  end)

  it("raises a Lua error from on_partial after the transfer, the client usable", function()
    srv:faults{ { partials = 2 } }
    local ok, e = pcall(client.generate, client, { prompt = "x" }, {
      on_partial = function() error("partial boom") end })
    assert.is_false(ok)
    assert.matches("partial boom", e)
    assert.is_table((client:generate{ prompt = "after" }))
  end)

  it("client:stream_parser decodes a stream read by another transport", function()
    srv:faults{ { partials = 1 } }
    local req = client:prepare({ prompt = "own", size = "0.5K" }, { stream = true })
    assert.equal("text/event-stream", req.headers.Accept)
    local dir = helpers.tmpdir()
    helpers.write_file(dir .. "/body.json", req.body)
    local ok, code, raw = helpers.run(string.format(
      "curl -sS -X POST -H 'Content-Type: application/json' -H 'Accept: text/event-stream' --data-binary @%s %s",
      dir .. "/body.json", helpers.quote(req.url)))
    assert.is_true(ok, "curl exit " .. code)
    local partials = 0
    local p = client:stream_parser{ on_partial = function() partials = partials + 1 end }
    for i = 1, #raw, 1000 do assert.is_true((p:feed(raw:sub(i, i + 999)))) end
    local images, info = p:finish()
    assert.is_table(images, tostring(info))
    assert.equal(1, #images)
    assert.equal(1, partials)
    local q = client:stream_parser()
    q:feed(raw:sub(1, math.floor(#raw / 2)))
    local none, err = q:finish()
    assert.is_nil(none)
    assert.equal("protocol", err.kind)
  end)
end)
