-- omixa.doctor: the first thing a user runs when something is wrong.
local helpers = require "helpers"
local doctor = require "omixa.doctor"

local function by_name(checks)
  local t = {}
  for _, c in ipairs(checks) do
    assert.truthy(({ ok = true, warn = true, error = true })[c.status], c.status)
    assert.equal("string", type(c.detail))
    t[c.name] = c
  end
  return t
end

describe("omixa.doctor", function()
  local srv
  setup(function() srv = helpers.serve{ key = "omx_test_doctor_secret" } end)
  teardown(function() srv:stop() end)

  it("names the Lua, the core it loaded (built for this Lua), libcurl and its TLS backend", function()
    local c = by_name(doctor.checks{ probe = false })
    assert.equal("ok", c.Lua.status)
    assert.equal("ok", c.core.status, c.core.detail)
    assert.matches("omixa/core%.so", c.core.detail)
    local running = type(jit) == "table" and "Lua 5.1" or _VERSION
    assert.matches("built for " .. running, c.core.detail, 1, true)
    assert.matches("^%d+%.%d+%.%d+, TLS by ", c.libcurl.detail)
    assert.is_nil(c["base URL"])
  end)

  it("says whether a key is set without ever showing it", function()
    local checks = doctor.checks{ base_url = srv.url, api_key = "omx_test_doctor_secret" }
    local text, failed = doctor.report(checks)
    assert.is_nil(text:find("omx_test_doctor_secret", 1, true))
    assert.is_false(failed, text)
    local c = by_name(checks)
    assert.equal("ok", c["API key"].status)
    assert.equal("ok", c["base URL"].status, c["base URL"].detail)
  end)

  it("a missing key is an error for a remote base URL and names OMIXA_API_KEY", function()
    local c = by_name(doctor.checks{ base_url = "https://omixa.invalid/api/v1", probe = false })
    assert.equal("error", c["API key"].status)
    assert.matches("OMIXA_API_KEY", c["API key"].detail)
  end)

  it("a wrong key is reported as refused; an unreachable base URL as an error naming it", function()
    local c = by_name(doctor.checks{ base_url = srv.url, api_key = "omx_wrong" })
    assert.equal("error", c["base URL"].status)
    assert.matches("refused the key", c["base URL"].detail)
    c = by_name(doctor.checks{ base_url = "http://127.0.0.1:9/api/v1", timeout = 2 })
    assert.equal("error", c["base URL"].status)
    assert.matches("not reachable", c["base URL"].detail)
    assert.matches("base_url", c["base URL"].detail)
  end)

  it("a CA bundle that cannot be read is an error naming where it came from", function()
    local c = by_name(doctor.checks{ ca_file = "/nonexistent/ca.pem", probe = false })
    assert.equal("error", c["CA bundle"].status)
    assert.matches("ca_file", c["CA bundle"].detail)
  end)
end)
