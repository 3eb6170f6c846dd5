-- Request signing through the client (API.md "Client options":
-- signing_secret): every request to the service is signed afresh (each
-- attempt, the model list, url-only downloads from the service's own
-- origin), a stand-in that enforces signing accepts it and refuses a wrong
-- secret, and the secret shows nowhere.
local omixa = require "omixa"
local helpers = require "helpers"

local q, openssl_hmac = helpers.quote, helpers.openssl_hmac
local GEN_PATH = "/api/v1/images/generations"
local SECRET = "whsec_client-signing-secret"

local function assert_signed(seen, method, path)
  local ts = seen.headers["x-omixa-timestamp"]
  assert.matches("^%d+$", ts)
  assert.truthy(math.abs(tonumber(ts) - os.time()) < 120, ts)
  assert.equal("sha256=" .. openssl_hmac(SECRET, ts .. "." .. method .. "." .. path .. "." .. seen.body),
    seen.headers["x-omixa-signature"])
end

-- Every string reachable from V (keys and values, metatables aside).
local function strings_in(v, out, seen)
  out, seen = out or {}, seen or {}
  if type(v) == "string" then out[#out + 1] = v
  elseif type(v) == "table" and not seen[v] then
    seen[v] = true
    for k, x in pairs(v) do strings_in(k, out, seen); strings_in(x, out, seen) end
  end
  return out
end

describe("signing, through the client", function()
  local srv
  setup(function() srv = helpers.serve{ signing_secret = SECRET } end)
  teardown(function() srv:stop() end)
  before_each(function() srv:reset() end)

  it("signs generations; the stand-in accepts them", function()
    local c = omixa.new{ base_url = srv.url, signing_secret = SECRET }
    local images, info = c:generate{ prompt = "a signed fox" }
    assert.is_table(images, tostring(info))
    local seen = srv:requests()
    assert.equal(1, #seen)
    assert_signed(seen[1], "POST", GEN_PATH)
    c:close()
  end)

  it("a wrong secret or none is refused with 401, not retried", function()
    for _, opts in ipairs{ { signing_secret = SECRET .. "-wrong" }, {} } do
      opts.base_url = srv.url
      local c = omixa.new(opts)
      local images, err = c:generate{ prompt = "badly signed" }
      assert.is_nil(images)
      assert.equal("api", err.kind)
      assert.equal(401, err.status)
      assert.equal("invalid_signature", err.code)
      assert.equal(1, err.attempts)
      assert.is_false(err.retryable)
      c:close()
    end
  end)

  it("signs each attempt afresh, with its own timestamp", function()
    -- the retry comes more than a second later, so its timestamp differs
    srv:faults{ { status = 503, retry_after = "1.2" } }
    local c = omixa.new{ base_url = srv.url, signing_secret = SECRET, max_retries = 1 }
    local images, info = c:generate{ prompt = "again" }
    assert.is_table(images, tostring(info))
    assert.equal(2, info.attempts)
    local seen = srv:requests()
    assert.equal(2, #seen)
    assert_signed(seen[1], "POST", GEN_PATH)
    assert_signed(seen[2], "POST", GEN_PATH)
    assert.not_equal(seen[1].headers["x-omixa-timestamp"], seen[2].headers["x-omixa-timestamp"])
    c:close()
  end)

  it("signs streamed requests", function()
    local c = omixa.new{ base_url = srv.url, signing_secret = SECRET }
    local images, info = c:generate({ prompt = "a signed stream", size = "0.5K" }, { stream = true })
    assert.is_table(images, tostring(info))
    local seen = srv:requests()[1]
    assert.equal("text/event-stream", seen.headers["accept"])
    assert_signed(seen, "POST", GEN_PATH)
    c:close()
  end)

  it("signs jobs and generate_many", function()
    local c = omixa.new{ base_url = srv.url, signing_secret = SECRET }
    local job = c:start{ prompt = "job" }
    local results = c:generate_many{ { prompt = "many 1" }, { prompt = "many 2" } }
    assert.is_table((job:wait()))
    assert.is_table(results[1].images, tostring(results[1].err))
    assert.is_table(results[2].images, tostring(results[2].err))
    for _, seen in ipairs(srv:requests()) do assert_signed(seen, "POST", GEN_PATH) end
    c:close()
  end)

  it("the user's own signature headers replace ours", function()
    local c = omixa.new{ base_url = srv.url, signing_secret = SECRET,
                         headers = { ["X-Omixa-Signature"] = "sha256=00" } }
    local _, err = c:generate{ prompt = "overridden" }
    assert.equal(401, err.status)
    local seen = srv:requests()[1]
    assert.equal("sha256=00", seen.headers["x-omixa-signature"])
    assert.matches("^%d+$", seen.headers["x-omixa-timestamp"]) -- ours, not replaced
    c:close()
  end)

  it("signs url-only downloads from the service's own origin, and only those", function()
    local c = omixa.new{ base_url = srv.url, signing_secret = SECRET }
    srv:faults{ { url_only = true } }
    local images, info = c:generate{ prompt = "by url" }
    assert.is_table(images, tostring(info))
    local fetch = srv:fetches()[1]
    assert_signed(fetch, "GET", fetch.uri:match("^[^?]*"))

    srv:reset()
    local port = srv.origin:match(":(%d+)$")
    srv:faults{ { url_only = true, url_base = "http://localhost:" .. port } }
    images, info = c:generate{ prompt = "elsewhere" }
    assert.is_table(images, tostring(info))
    fetch = srv:fetches()[1]
    assert.is_nil(fetch.headers["x-omixa-signature"])
    assert.is_nil(fetch.headers["x-omixa-timestamp"])
    c:close()
  end)

  it("signs client:models(); a wrong secret is refused", function()
    local c = omixa.new{ base_url = srv.url, signing_secret = SECRET }
    local list, info = c:models()
    assert.is_table(list, tostring(info))
    assert.equal("list", list.object)
    local bad = omixa.new{ base_url = srv.url, signing_secret = "nope" }
    local none, err = bad:models()
    assert.is_nil(none)
    assert.equal("api", err.kind)
    assert.equal(401, err.status)
    c:close()
    bad:close()
  end)

  it("prepare gives signed headers that the service accepts", function()
    local c = omixa.new{ base_url = srv.url, signing_secret = SECRET, api_key = "k-prepare" }
    local req = assert(c:prepare{ prompt = "my own transport" })
    assert.matches("^sha256=%x+$", req.headers["X-Omixa-Signature"])
    local args = { "curl -sS --max-time 30 -o /dev/null -w '%{http_code}' -X POST --data-binary @-" }
    for k, v in pairs(req.headers) do args[#args + 1] = "-H " .. q(k .. ": " .. v) end
    args[#args + 1] = q(req.url)
    local ok, _, out, err = helpers.run(table.concat(args, " "), req.body)
    assert(ok, err)
    assert.equal("200", out)
    assert_signed(srv:requests()[1], "POST", GEN_PATH)
    c:close()
  end)

  it("OMIXA_SIGNING_SECRET signs too (the CLI, with the environment)", function()
    local dir = helpers.tmpdir()
    local cli = helpers.cli()
    local ok, code, out, err = helpers.run(string.format("cd %s && OMIXA_BASE_URL=%s OMIXA_SIGNING_SECRET=%s %s fox -o f.png",
      q(dir), q(srv.url), q(SECRET), cli))
    assert(ok, "exit " .. code .. ": " .. err)
    assert.equal("f.png\n", out)
    local _, code2, _, err2 = helpers.run(string.format("cd %s && env -u OMIXA_SIGNING_SECRET OMIXA_BASE_URL=%s %s fox -o g.png",
      q(dir), q(srv.url), cli))
    assert.equal(3, code2)
    assert.matches("invalid_signature", err2)
    assert.is_nil(err2:find(SECRET, 1, true))
  end)

  it("keeps the secret out of the client, its tostring and its errors", function()
    local c = omixa.new{ base_url = srv.url, signing_secret = SECRET }
    srv:faults{ { status = 400, message = "echo " .. SECRET } }
    local _, err = c:generate{ prompt = "echo" }
    for _, s in ipairs(strings_in(c)) do assert.is_nil(s:find(SECRET, 1, true), s) end
    assert.is_nil(tostring(c):find(SECRET, 1, true))
    assert.is_nil(tostring(err):find(SECRET, 1, true))
    for _, s in ipairs(strings_in(err)) do assert.is_nil(s:find(SECRET, 1, true), s) end
    c:close()
  end)

  it("refuses a bad signing_secret when the client is made", function()
    assert.has_error(function() omixa.new{ signing_secret = "" } end,
      "omixa: option 'signing_secret' must not be empty")
    assert.has_error(function() omixa.new{ signing_secret = 42 } end,
      "omixa: option 'signing_secret' must be string (got 42)")
  end)
end)
