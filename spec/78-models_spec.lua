-- Model discovery: client:models() is GET {base}/models, the decoded JSON
-- exactly as the service sends it (its shape is not documented), errors as
-- for generate; `omixa models` prints the built-in catalog and, against a
-- service, what it lists.
local omixa = require "omixa"
local helpers = require "helpers"
local cjson = require "cjson"

local q = helpers.quote

describe("client:models()", function()
  local srv
  setup(function() srv = helpers.serve{ key = "omx_live_models-key" } end)
  teardown(function() srv:stop() end)

  -- The list as the curl command line gets it.
  local function listed()
    local ok, _, out, err = helpers.run("curl -sS --max-time 30 -H 'Authorization: Bearer omx_live_models-key' "
      .. q(srv.url .. "/models"))
    assert(ok, err)
    return cjson.decode(out)
  end

  it("returns what the service lists, decoded as sent", function()
    local c = omixa.new{ base_url = srv.url, api_key = "omx_live_models-key" }
    local list, info = c:models()
    assert.is_table(list, tostring(info))
    assert.same(listed(), list)
    local ids = {}
    for _, m in ipairs(list.data) do ids[#ids + 1] = m.id end
    local catalog = {}
    for id in pairs(omixa.models) do catalog[#catalog + 1] = id end
    table.sort(ids)
    table.sort(catalog)
    assert.same(catalog, ids)
    assert.equal(200, info.status)
    assert.equal(1, info.attempts)
    c:close()
  end)

  it("calls an api_key function for it, and sends a GET", function()
    local calls = 0
    local c = omixa.new{ base_url = srv.url, api_key = function() calls = calls + 1; return "omx_live_models-key" end }
    assert.is_table((c:models()))
    assert.equal(1, calls)
    assert.same({}, srv:requests()) -- not a generation
    c:close()
  end)

  it("returns errors as generate does", function()
    local c = omixa.new{ base_url = srv.url, api_key = "omx_live_wrong" }
    local list, err = c:models()
    assert.is_nil(list)
    assert.is_true(omixa.is_error(err))
    assert.equal("api", err.kind)
    assert.equal(401, err.status)
    assert.is_false(err.maybe_billed)
    assert.is_nil(tostring(err):find("omx_live_wrong", 1, true))
    c:close()

    local missing = omixa.new{ base_url = srv.origin .. "/nowhere", api_key = "omx_live_models-key" }
    list, err = missing:models()
    assert.is_nil(list)
    assert.equal("api", err.kind)
    assert.equal(404, err.status)
    missing:close()

    local refused = omixa.new{ base_url = "http://127.0.0.1:9/api/v1", max_retries = 1 }
    list, err = refused:models()
    assert.is_nil(list)
    assert.equal("network", err.kind)
    assert.equal(2, err.attempts)
    refused:close()

    local nokey = omixa.new{ base_url = "https://omixa.invalid/api/v1", api_key = function() return nil end }
    list, err = nokey:models()
    assert.is_nil(list)
    assert.equal("config", err.kind)
    assert.equal(0, err.attempts)
    nokey:close()
    assert.has_error(function() nokey:models() end, "omixa: the client is closed")
  end)

  describe("omixa models", function()
    local cli = helpers.cli()

    it("prints the built-in catalog: id, family, price, fields and accepted values", function()
      local ok, code, out, err = helpers.run("env -u OMIXA_API_KEY -u OMIXA_BASE_URL " .. cli .. " models")
      assert(ok, "exit " .. code .. ": " .. err)
      for id, m in pairs(omixa.models) do
        assert.truthy(out:find("  " .. id .. "  family " .. m.family, 1, true), id)
      end
      assert.truthy(out:find("gpt-image-1.5  family gpt, 0.033000 USD per image", 1, true), out)
      assert.truthy(out:find("imagen-4.0-fast-generate-001  family google, price not documented", 1, true), out)
      assert.matches("\n    aspect_ratio%s+1:1, 16:9, 9:16, 4:3, 3:4\n", out)
      assert.matches("\n    n%s+integer 1%.%.10\n", out)
      assert.matches("\n    prompt%s+string; required\n", out)
      assert.is_nil(out:find("the service at", 1, true))
    end)

    it("sends nothing without --service, even with a base URL and key", function()
      local ok, code, out, err = helpers.run(string.format("OMIXA_BASE_URL=%s OMIXA_API_KEY=%s %s models",
        "http://127.0.0.1:9/api/v1", "omx_live_models-key", cli))
      assert(ok, "exit " .. code .. ": " .. err)
      assert.is_nil(out:find("the service at", 1, true))
    end)

    it("adds what the service lists with --service", function()
      local ok, code, out, err = helpers.run(string.format("OMIXA_BASE_URL=%s OMIXA_API_KEY=%s %s models --service",
        q(srv.url), "omx_live_models-key", cli))
      assert(ok, "exit " .. code .. ": " .. err)
      local json = out:match("\nthe service at " .. srv.url:gsub("%p", "%%%0") .. " lists:\n(.*)$")
      assert.truthy(json, out)
      assert.same(listed(), cjson.decode(json))
      local _, code2, _, err2 = helpers.run(string.format("OMIXA_BASE_URL=%s OMIXA_API_KEY=omx_live_bad %s models --service",
        q(srv.url), cli))
      assert.equal(3, code2)
      assert.matches("api error 401", err2)
      local _, code3 = helpers.run(cli .. " models extra-words")
      assert.equal(2, code3)
    end)
  end)
end)
