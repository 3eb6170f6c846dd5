-- The debug log through the client (API.md "Client options": debug,
-- OMIXA_DEBUG): one line per request, response, retry, download, cache hit
-- or miss and budget refusal, with method, URL, status, attempt, time and
-- bytes, and never the API key or the signing secret.
local omixa = require "omixa"
local helpers = require "helpers"

local q = helpers.quote
-- Shaped like neither an omx_live_ key nor anything else the log masks by
-- its look: only the client's own redaction can hide them.
local KEY = "plain-key-4f9c2e7d1a"
local SECRET = "plain-secret-8b3a6c0e5f"

local function find_line(lines, pattern)
  for _, l in ipairs(lines) do
    if l:find(pattern) then return l end
  end
end

local function assert_clean(text)
  assert.is_nil(text:find(KEY, 1, true), "the key leaked: " .. text)
  assert.is_nil(text:find(SECRET, 1, true), "the secret leaked: " .. text)
  assert.is_nil(text:find("sha256=%x"), "a signature leaked: " .. text)
end

describe("the debug log", function()
  local srv
  setup(function() srv = helpers.serve{ key = KEY, signing_secret = SECRET } end)
  teardown(function() srv:stop() end)
  before_each(function() srv:reset() end)

  local function client(opts, lines)
    opts = opts or {}
    opts.base_url = srv.url
    opts.api_key = function() return KEY end
    opts.signing_secret = SECRET
    opts.debug = function(line) lines[#lines + 1] = line end
    return omixa.new(opts)
  end

  it("says what was sent and what came back, with nothing secret in it", function()
    local lines = {}
    local c = client({ max_retries = 1 }, lines)
    srv:faults{ { status = 503, retry_after = "0.1" }, { url_only = true } }
    local images, info = c:generate{ prompt = "logged" }
    assert.is_table(images, tostring(info))
    c:close()
    local all = table.concat(lines, "\n")
    assert_clean(all)
    for _, l in ipairs(lines) do assert.matches("^omixa: ", l) end
    local url = (srv.url .. "/images/generations"):gsub("%p", "%%%0")
    local sent = find_line(lines, "^omixa: > POST " .. url .. " attempt 1, %d+ bytes: ")
    assert.truthy(sent, all)
    assert.truthy(sent:find("Authorization: Bearer [redacted]", 1, true), sent)
    assert.truthy(sent:find("X-Omixa-Signature: sha256=[redacted]", 1, true), sent)
    assert.truthy(sent:find("X%-Omixa%-Timestamp: %d+"), sent)
    assert.truthy(find_line(lines, "^omixa: < 503 POST " .. url .. " attempt 1: %d+%.%d+s, %d+ bytes sent, %d+ received$"), all)
    assert.truthy(find_line(lines, "^omixa: retry of " .. url .. " in %d+%.%d+s %(attempt 2 of at most 2%)$"), all)
    assert.truthy(find_line(lines, "^omixa: < 200 POST " .. url .. " attempt 2: "), all)
    assert.truthy(find_line(lines, "^omixa: > GET http://127%.0%.0%.1:%d+/_omixa/images/[%w_-]+ %(image 1%): "
      .. "Authorization: Bearer %[redacted%]; X%-Omixa%-Timestamp: %d+; X%-Omixa%-Signature: sha256=%[redacted%]$"), all)
    assert.truthy(find_line(lines, "^omixa: < 200 GET image 1: "), all)
    assert.truthy(find_line(lines, "^omixa: done: 1 image, 2 attempts, %d+%.%d+s, billed 0%.040000; spent 0%.040000 USD$"), all)
  end)

  it("logs cache misses and hits and budget refusals", function()
    local lines = {}
    local c = client({ cache_dir = helpers.tmpdir(), max_spend = "0.04" }, lines)
    assert.is_table((c:generate{ prompt = "cached" }))
    assert.is_table((c:generate{ prompt = "cached" }))
    local _, err = c:generate{ prompt = "over budget" }
    assert.equal("budget", err.kind)
    c:close()
    local all = table.concat(lines, "\n")
    assert_clean(all)
    assert.truthy(find_line(lines, "^omixa: cache miss %x+$"), all)
    assert.truthy(find_line(lines, "^omixa: cache put %x+$"), all)
    assert.truthy(find_line(lines, "^omixa: cache hit %x+: 1 image, nothing sent$"), all)
    assert.truthy(find_line(lines, "^omixa: budget: holding 0%.040000 USD for "), all)
    assert.truthy(find_line(lines, "^omixa: budget: refused, nothing sent: this request is estimated at 0%.040000 USD"), all)
    assert.equal(1, #srv:requests())
  end)

  it("logs failures without the key a server echoes back", function()
    local lines = {}
    local c = client({ max_retries = 0 }, lines)
    srv:faults{ { status = 400, message = "bad key " .. KEY .. " and " .. SECRET } }
    local _, err = c:generate{ prompt = "echo" }
    assert.equal(400, err.status)
    c:close()
    local all = table.concat(lines, "\n")
    assert_clean(all)
    assert.truthy(find_line(lines, "^omixa: failed: omixa: api error 400 .*bad key %[redacted%] and %[redacted%]"), all)
    assert.truthy(find_line(lines, "nothing billed"), all)
  end)

  it("logs client:models()", function()
    local lines = {}
    local c = client({}, lines)
    assert.is_table((c:models()))
    c:close()
    local all = table.concat(lines, "\n")
    assert_clean(all)
    assert.truthy(find_line(lines, "^omixa: > GET " .. (srv.url .. "/models"):gsub("%p", "%%%0") .. " attempt 1, 0 bytes"), all)
    assert.truthy(find_line(lines, "^omixa: < 200 GET "), all)
  end)

  it("raises an error of the debug function from the call; the client stays usable", function()
    local fail = false
    local c = omixa.new{ base_url = srv.url, api_key = KEY, signing_secret = SECRET,
                         debug = function() if fail then error("debug sink broke", 0) end end }
    fail = true
    assert.has_error(function() c:generate{ prompt = "x" } end, "debug sink broke")
    fail = false
    assert.is_table((c:generate{ prompt = "y" }))
    c:close()
  end)

  it("is off by default, and debug = false wins over OMIXA_DEBUG", function()
    local code = [[
      local c = require("omixa").new{ base_url = %q, api_key = %q, signing_secret = %q, debug = %s }
      assert(c:generate{ prompt = "quiet" })
    ]]
    for _, case in ipairs{ { "", "nil" }, { "OMIXA_DEBUG=1", "false" }, { "OMIXA_DEBUG=0", "nil" } } do
      local ok, _, _, err = helpers.run("env -u OMIXA_DEBUG " .. case[1] .. " "
        .. helpers.lua_cmd(code:format(srv.url, KEY, SECRET, case[2])))
      assert(ok, err)
      assert.equal("", err, case[1] .. " debug = " .. case[2])
    end
  end)

  it("OMIXA_DEBUG=1 logs the CLI's requests to stderr, without the key or the secret", function()
    local dir = helpers.tmpdir()
    local cli = helpers.cli()
    local ok, code, out, err = helpers.run(string.format(
      "cd %s && OMIXA_DEBUG=1 OMIXA_BASE_URL=%s OMIXA_API_KEY=%s OMIXA_SIGNING_SECRET=%s %s fox -o fox.png --cache c",
      q(dir), q(srv.url), q(KEY), q(SECRET), cli))
    assert(ok, "exit " .. code .. ": " .. err)
    assert.equal("fox.png\n", out)
    assert_clean(err)
    assert.matches("omixa: > POST http://127%.0%.0%.1:%d+/api/v1/images/generations attempt 1", err)
    assert.matches("Authorization: Bearer %[redacted%]", err)
    assert.matches("omixa: < 200 POST ", err)
    assert.matches("omixa: cache miss %x+", err)
  end)
end)
