-- The event backend (issue 14, points 1 and 2; src/event.h): epoll on Linux
-- by default, with a descriptor for client:fd(); the portable one over
-- curl_multi_poll (make BACKEND=portable, the one every Windows user gets)
-- has none: client:fd() is nil, reason and client:poll_interval() tells a
-- host loop how often to call poll(). The whole spec suite runs on both
-- (spec/run-all).
local helpers = require "helpers"
local omixa = require "omixa"
local core = require "omixa.core"

local build = os.getenv("OMIXA_BUILD") or ""
local forced = build:match("%-(%a+)$")
forced = (forced == "portable" or forced == "kqueue" or forced == "epoll") and forced or nil

describe("the event backend", function()
  local srv, client
  setup(function()
    srv = helpers.serve()
    client = omixa.new{ base_url = srv.url, max_retries = 0 }
  end)
  teardown(function()
    client:close()
    srv:stop()
  end)

  it("is the one the build asked for (epoll on Linux by default)", function()
    assert.equal(forced or "epoll", core.event_backend)
  end)

  it("client:fd() is a descriptor, or nil and why on the portable backend", function()
    local fd, why = client:fd()
    if core.event_backend == "portable" then
      assert.is_nil(fd)
      assert.is_truthy(why:find("poll_interval", 1, true), why)
    else
      assert.equal("number", type(fd))
      assert.is_true(fd >= 0)
      assert.is_nil(why)
    end
  end)

  it("client:poll_interval() is short while a job runs, longer when idle", function()
    local idle = client:poll_interval()
    assert.equal("number", type(idle))
    assert.is_true(idle > 0 and idle <= 0.25, tostring(idle))
    srv:faults{ { delay = 0.3 } }
    local job = client:start{ prompt = "interval" }
    job:poll()
    local busy = client:poll_interval()
    assert.is_true(busy >= 0 and busy <= 0.01, tostring(busy))
    local sleep = core.sleep
    for _ = 1, 2000 do
      if job:poll() then break end
      sleep(client:poll_interval())
    end
    assert.is_truthy(job:result())
  end)

  it("make BACKEND=portable builds beside the default build, not over it", function()
    local ok, _, out = helpers.run("cd " .. helpers.quote(helpers.root)
      .. " && make -n -B LUA_VERSION=5.4 BACKEND=portable core 2>&1")
    assert.is_true(ok, out)
    assert.is_truthy(out:find("-DOMX_BACKEND_PORTABLE", 1, true), out)
    assert.is_truthy(out:find("build/lua5.4-portable/omixa/core.so", 1, true), out)
    assert.is_falsy(out:find("build/lua5.4/", 1, true), out)
  end)

  it("client:poll_interval() on a closed client raises", function()
    local c = omixa.new{ base_url = srv.url }
    c:close()
    assert.has_error(function() c:poll_interval() end, "omixa: the client is closed")
  end)
end)
