-- Limits (API.md "Client options", "Results"): max_response_bytes is
-- enforced while receiving, so memory never grows past it; url-only images
-- are downloaded over http(s) only, under the same limit, and the key goes
-- only to the service's own origin.
local omixa = require "omixa"
local helpers = require "helpers"

local KEY = "omx_live_S3CRETkey0123456789"
local MiB = 1024 * 1024

-- A field of /proc/self/status in KiB (VmRSS, VmHWM), or nil.
local function status_kib(field)
  local f = io.open("/proc/self/status", "r")
  if not f then return nil end
  local text = f:read("*a")
  f:close()
  return tonumber(text:match(field .. ":%s*(%d+)"))
end

-- Reset the peak RSS (VmHWM) to the current RSS: Linux's clear_refs "5".
local function reset_peak()
  local f = io.open("/proc/self/clear_refs", "w")
  if not f then return false end
  local ok = f:write("5")
  f:close()
  return ok and true or false
end

describe("limits", function()
  local srv, port
  setup(function()
    srv = helpers.serve()
    port = srv.origin:match(":(%d+)$")
  end)
  teardown(function() srv:stop() end)
  before_each(function() srv:reset() end)

  local function new_client(opts)
    local o = { base_url = srv.url, api_key = KEY }
    for k, v in pairs(opts or {}) do o[k] = v end
    return omixa.new(o)
  end

  describe("max_response_bytes", function()
    it("refuses a 96 MiB response while receiving it: too_large, memory bounded", function()
      local c = new_client{ max_response_bytes = MiB }
      srv:faults{ { pad = 96 * MiB }, { pad = 96 * MiB } }
      collectgarbage("collect")
      collectgarbage("collect")
      local peak_ok = reset_peak()
      local before = status_kib("VmRSS")
      local images, err = c:generate{ prompt = "a very long answer" }
      local after = status_kib(peak_ok and "VmHWM" or "VmRSS")
      c:close()
      assert.is_true(images == nil, "expected an error, got images")
      assert.is_true(omixa.is_error(err), tostring(err))
      assert.equal("too_large", err.kind, tostring(err))
      assert.equal(200, err.status)
      assert.equal(1, err.attempts)
      assert.is_true(err.maybe_billed)
      assert.equal(1, #srv:requests())
      if before and after then
        -- the whole response would be 96 MiB; the limit is 1 MiB
        assert.truthy(after - before < 24 * 1024,
          ("RSS grew by %d KiB (%s) while refusing a 96 MiB response"):format(after - before,
            peak_ok and "peak" or "after"))
      end
    end)
    it("lets a response under the limit through", function()
      local c = new_client{ max_response_bytes = 4 * MiB }
      srv:faults{ { pad = 2 * MiB } }
      local images, info = c:generate{ prompt = "a long answer" }
      c:close()
      assert.is_table(images, tostring(info))
    end)
  end)

  describe("url-only images", function()
    local function fetched_headers()
      local out = {}
      for _, f in ipairs(srv:fetches()) do out[#out + 1] = f.headers end
      return out
    end

    it("are fetched with the key from the service's own origin", function()
      local c = new_client()
      srv:faults{ { url_only = true } }
      local images, info = c:generate{ prompt = "own origin" }
      c:close()
      assert.is_table(images, tostring(info))
      local h = fetched_headers()
      assert.equal(1, #h)
      assert.equal("Bearer " .. KEY, h[1].authorization)
    end)

    it("are fetched without the key from another origin", function()
      local c = new_client()
      srv:faults{ { url_only = true, url_base = "http://localhost:" .. port } }
      local images, info = c:generate{ prompt = "other origin", n = 2 }
      c:close()
      assert.is_table(images, tostring(info))
      assert.equal(2, #images)
      local h = fetched_headers()
      assert.equal(2, #h)
      for _, hdrs in ipairs(h) do
        assert.is_nil(hdrs.authorization)
        for name, v in pairs(hdrs) do
          assert.is_nil(tostring(v):find(KEY, 1, true), "the key in header " .. name)
        end
      end
    end)

    it("are fetched without the key when user info dresses another host up as the service", function()
      local c = new_client()
      srv:faults{ { url_only = true, url_base = "http://127.0.0.1:" .. port .. "@localhost:" .. port } }
      local images, info = c:generate{ prompt = "userinfo" }
      c:close()
      assert.is_table(images, tostring(info))
      local h = fetched_headers()
      assert.equal(1, #h)
      for _, hdrs in ipairs(h) do
        for name, v in pairs(hdrs) do
          assert.is_nil(tostring(v):find(KEY, 1, true), "the key in header " .. name)
        end
      end
    end)

    for _, scheme in ipairs({ "ftp://127.0.0.1:" , "file://", "gopher://127.0.0.1:" }) do
      local base = scheme:find(":$") and (scheme .. "PORT") or scheme
      it("are refused unless http or https: " .. base, function()
        local c = new_client()
        srv:faults{ { url_only = true, url_base = base:gsub("PORT", port) } }
        local images, err = c:generate{ prompt = "scheme" }
        c:close()
        assert.is_true(images == nil, "expected an error, got images")
        assert.is_true(omixa.is_error(err), tostring(err))
        assert.equal("protocol", err.kind, tostring(err))
        assert.is_true(err.maybe_billed) -- the generation itself succeeded
        assert.equal(1, err.attempts)
        assert.equal(0, #srv:fetches())
      end)
    end

    it("are held to max_response_bytes too", function()
      -- the JSON answer is small; the 1K PNG it points to is ~330 KB
      local c = new_client{ max_response_bytes = 100000 }
      srv:faults{ { url_only = true } }
      local images, err = c:generate{ prompt = "big image" }
      c:close()
      assert.is_true(images == nil, "expected an error, got images")
      assert.is_true(omixa.is_error(err), tostring(err))
      assert.equal("too_large", err.kind, tostring(err))
      assert.is_true(err.maybe_billed)
      assert.equal(1, err.attempts)
      assert.equal(1, #srv:fetches())
      assert.equal(1, #srv:requests())
    end)
  end)
end)
