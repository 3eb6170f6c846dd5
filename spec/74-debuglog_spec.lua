-- omixa.debuglog: the `debug` option and OMIXA_DEBUG, one "omixa: " line
-- per call, and no secret ever in a line.
local debuglog = require "omixa.debuglog"
local signing = require "omixa.signing"
local helpers = require "helpers"

local KEY = "omx_live_9f8e7d6c5b4a39281706f5e4"
local SECRET = "whsec_do-not-log-me-0123"

local function collector(secrets)
  local lines = {}
  local log = debuglog.new(function(line) lines[#lines + 1] = line end, secrets)
  return log, lines
end

-- Run CODE in a fresh interpreter with the environment ENV (a shell prefix).
local function run_lua(env, code)
  local ok, code_, out, err = helpers.run(env .. " " .. helpers.lua_cmd(code))
  assert(ok, "exit " .. code_ .. ": " .. err)
  return out, err
end

describe("debuglog.new", function()
  it("hands one prefixed line per call to the debug function", function()
    local log, lines = collector()
    log("POST %s attempt %d", "http://127.0.0.1:4000/api/v1/images/generations", 1)
    log("status %d in %.3f s, %d bytes", 200, 1.25, 4096)
    log("cache hit")
    assert.same({
      "omixa: POST http://127.0.0.1:4000/api/v1/images/generations attempt 1",
      "omixa: status 200 in 1.250 s, 4096 bytes",
      "omixa: cache hit",
    }, lines)
  end)

  it("takes nil and tables as arguments and never raises on a format mismatch", function()
    local log, lines = collector()
    log("request id %s, status %s", nil, false)
    log("%d images", "two")
    log("100% done")
    assert.equal("omixa: request id nil, status false", lines[1])
    assert.equal("omixa: %d images two", lines[2])
    assert.equal("omixa: 100% done", lines[3])
  end)

  it("keeps one call on one line", function()
    local log, lines = collector()
    log("message from the server: %s", "line one\r\nomixa: forged line\0")
    assert.equal(1, #lines)
    assert.equal("omixa: message from the server: line one\\r\\nomixa: forged line\\x00", lines[1])
  end)

  it("masks the secrets it is given, read at each call", function()
    local secrets = {}
    local log, lines = collector(secrets)
    secrets.key, secrets.signing = KEY:gsub("^omx_live_", "rotated-"), SECRET
    log("server said: bad key %s, secret %s", KEY:gsub("^omx_live_", "rotated-"), SECRET)
    assert.equal("omixa: server said: bad key [redacted], secret [redacted]", lines[1])
    local fn_log, fn_lines = collector(function() return { SECRET } end)
    fn_log("echo %s%s", SECRET, SECRET)
    assert.equal("omixa: echo [redacted][redacted]", fn_lines[1])
  end)

  it("masks bearer tokens and omx_live_ keys by their shape", function()
    local log, lines = collector()
    log("Authorization: Bearer %s", KEY)
    log("proxy wants Basic dXNlcjpwYXNz")
    log("the key %s is not allowed", KEY)
    assert.equal("omixa: Authorization: Bearer [redacted]", lines[1])
    assert.equal("omixa: proxy wants Basic [redacted]", lines[2])
    assert.equal("omixa: the key omx_live_[redacted] is not allowed", lines[3])
  end)

  it("is off when asked, and raises on a debug option of the wrong type", function()
    assert.is_nil(debuglog.new(false))
    assert.has_error(function() debuglog.new("yes") end)
    assert.has_error(function() debuglog.new(nil, "secret") end)
  end)

  it("lets an error of the debug function through", function()
    local log = debuglog.new(function() error("boom") end)
    assert.has_error(function() log("x") end)
  end)

  it("logs to stderr with OMIXA_DEBUG=1, and not without it", function()
    local code = [[
      local log = require("omixa.debuglog").new(nil)
      if log then log("attempt %d", 1) else print("off") end
      local forced = require("omixa.debuglog").new(false)
      print(forced == nil and "false is off" or "false is on")
    ]]
    local out, err = run_lua("OMIXA_DEBUG=1", code)
    assert.equal("omixa: attempt 1\n", err)
    assert.equal("false is off\n", out)
    for _, env in ipairs({ "env -u OMIXA_DEBUG", "OMIXA_DEBUG=", "OMIXA_DEBUG=0", "OMIXA_DEBUG=off" }) do
      out, err = run_lua(env, code)
      assert.equal("", err, env)
      assert.equal("off\nfalse is off\n", out, env)
    end
    out, err = run_lua("env -u OMIXA_DEBUG", 'require("omixa.debuglog").new(true)("to stderr")')
    assert.equal("omixa: to stderr\n", err)
    assert.equal("", out)
  end)
end)

describe("debuglog.redact_headers", function()
  local signed = signing.headers(SECRET, "POST", "/api/v1/images/generations", "{}", 1700000000)

  it("keeps the scheme of Authorization and the algorithm of the signature", function()
    local lines = {
      "Authorization: Bearer " .. KEY,
      "Content-Type: application/json",
      signed[1],
      signed[2],
      "proxy-authorization: Basic dXNlcjpwYXNz",
      "authorization:Bearer " .. KEY,
      "Cookie: session=abc",
      "X-Api-Key: " .. KEY,
      "Authorization: " .. KEY,
    }
    local before = table.concat(lines, "\n")
    assert.same({
      "Authorization: Bearer [redacted]",
      "Content-Type: application/json",
      "X-Omixa-Timestamp: 1700000000",
      "X-Omixa-Signature: sha256=[redacted]",
      "proxy-authorization: Basic [redacted]",
      "authorization:Bearer [redacted]",
      "Cookie: [redacted]",
      "X-Api-Key: [redacted]",
      "Authorization: [redacted]",
    }, debuglog.redact_headers(lines))
    assert.equal(before, table.concat(lines, "\n"), "the lines given are left alone")
  end)

  it("takes the { Name = value } map of client:prepare too", function()
    assert.same({ Authorization = "Bearer [redacted]", ["X-Omixa-Signature"] = "sha256=[redacted]",
                  ["Content-Type"] = "application/json" },
      debuglog.redact_headers({ Authorization = "Bearer " .. KEY, ["X-Omixa-Signature"] = signed[2]:match(": (.*)$"),
                                ["Content-Type"] = "application/json" }))
    assert.same({}, debuglog.redact_headers({}))
    assert.has_error(function() debuglog.redact_headers("Authorization: x") end)
  end)

  it("hides any header whose name says it holds a credential", function()
    assert.same({ "X-Goog-Api-Key: [redacted]", "X-Auth-Token: [redacted]", "X-My-Secret: [redacted]",
                  "Proxy-Session-Id: [redacted]", "X-Password: [redacted]",
                  "X-Request-Id: r-1", "Content-Type: application/json", "Accept: text/event-stream" },
      debuglog.redact_headers({ "X-Goog-Api-Key: abc", "X-Auth-Token: tok", "X-My-Secret: s3",
                                "Proxy-Session-Id: sess", "X-Password: pw",
                                "X-Request-Id: r-1", "Content-Type: application/json", "Accept: text/event-stream" }))
  end)

  it("lets no secret through a whole request's worth of logging", function()
    local sig = signed[2]:match("sha256=(%x+)")
    local log, lines = collector({ KEY, SECRET })
    local headers = debuglog.redact_headers({ "Authorization: Bearer " .. KEY, signed[1], signed[2] })
    log("POST %s headers %s", "https://www.omixa.cloud/api/v1/images/generations", table.concat(headers, "; "))
    log("attempt %d: status %d, %d bytes in %.2f s", 1, 401, 120, 0.31)
    log("error body: %s", '{"error":{"message":"Invalid key ' .. KEY .. '","code":"invalid_api_key"}}')
    log("signing secret is %s", SECRET)
    for _, line in ipairs(lines) do
      assert.is_nil(line:find(KEY, 1, true), line)
      assert.is_nil(line:find(KEY:sub(10), 1, true), line)
      assert.is_nil(line:find(SECRET, 1, true), line)
      assert.is_nil(line:find(sig, 1, true), line)
    end
    assert.equal(4, #lines)
    assert.matches("Authorization: Bearer %[redacted%]; X%-Omixa%-Timestamp: 1700000000; X%-Omixa%-Signature: sha256=%[redacted%]",
      lines[1])
  end)
end)
