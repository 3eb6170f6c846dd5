-- The proxy option goes through libcurl: the request reaches the service
-- through the proxy (here the stand-in itself plays the proxy, so the
-- service's host is never resolved and nothing leaves 127.0.0.1).
local omixa = require "omixa"
local helpers = require "helpers"

describe("proxy", function()
  local srv
  setup(function() srv = helpers.serve() end)
  teardown(function() srv:stop() end)
  before_each(function() srv:reset() end)

  it("sends the request through the proxy given", function()
    local c = omixa.new{ base_url = "http://omixa.invalid/api/v1", proxy = srv.origin,
                         api_key = "omx_live_proxy", allow_http = true, max_retries = 0 }
    local images, err = c:generate{ prompt = "via proxy" }
    assert.is_table(images, tostring(err))
    local r = srv:requests()[1]
    assert.equal("omixa.invalid", r.headers.host)
    assert.equal("Bearer omx_live_proxy", r.headers.authorization)
    c:close()
  end)

  it("honours the proxy environment through libcurl", function()
    local script = helpers.lua_cmd([[
      local omixa = require "omixa"
      local c = omixa.new{ base_url = "http://omixa.invalid/api/v1", api_key = "omx_live_env",
                           allow_http = true, max_retries = 0 }
      local images, err = c:generate{ prompt = "env proxy" }
      io.write(images and "ok" or tostring(err))
    ]])
    local ok, _, out, err = helpers.run("http_proxy=" .. helpers.quote(srv.origin) .. " " .. script)
    assert.is_true(ok, err)
    assert.equal("ok", out)
    assert.equal("omixa.invalid", srv:requests()[1].headers.host)
  end)
end)
