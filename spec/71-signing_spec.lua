-- omixa.signing: the X-Omixa-Timestamp / X-Omixa-Signature headers of
-- OMIXA.md, checked against an independent HMAC (the openssl command line)
-- and sent with the curl command line to a stand-in that enforces signing.
local signing = require "omixa.signing"
local helpers = require "helpers"
local cjson = require "cjson"

local q, openssl_hmac = helpers.quote, helpers.openssl_hmac
local GEN_PATH = "/api/v1/images/generations"
local SECRET = "whsec_test-signing-secret"

local function header_value(lines, name)
  for _, l in ipairs(lines) do
    local k, v = l:match("^([^:]+): (.*)$")
    if k == name then return v end
  end
end

describe("signing.headers", function()
  it("signs timestamp.METHOD.path.body as OMIXA.md gives it", function()
    local body = '{"model":"gpt-image-1.5","prompt":"a b\\u00e9 \\"q\\""}'
    local lines = signing.headers(SECRET, "POST", GEN_PATH, body, 1780660800)
    assert.same({
      "X-Omixa-Timestamp: 1780660800",
      "X-Omixa-Signature: sha256=" .. openssl_hmac(SECRET, "1780660800.POST." .. GEN_PATH .. "." .. body),
    }, lines)
  end)

  it("matches a fixed vector", function()
    -- python3: hmac.new(b"key", b"1700000000.POST./api/v1/images/generations.{}", hashlib.sha256).hexdigest()
    assert.same({ "X-Omixa-Timestamp: 1700000000",
                  "X-Omixa-Signature: sha256=00a0489bb22678280f8aa696b1dde9e8cb7f4a80c65e3ef882530ffba89d6560" },
      signing.headers("key", "POST", GEN_PATH, "{}", 1700000000))
  end)

  it("covers every byte: body, method, path, time and secret", function()
    local base = header_value(signing.headers(SECRET, "POST", GEN_PATH, "{}", 1000), "X-Omixa-Signature")
    for _, other in ipairs({
      signing.headers(SECRET, "POST", GEN_PATH, "{ }", 1000),
      signing.headers(SECRET, "PUT", GEN_PATH, "{}", 1000),
      signing.headers(SECRET, "POST", GEN_PATH .. "/", "{}", 1000),
      signing.headers(SECRET, "POST", GEN_PATH, "{}", 1001),
      signing.headers(SECRET .. "x", "POST", GEN_PATH, "{}", 1000),
    }) do
      assert.not_equal(base, header_value(other, "X-Omixa-Signature"))
    end
    -- binary bytes and an empty body (a GET) sign as they are
    assert.equal("sha256=" .. openssl_hmac(SECRET, "5.GET./api/v1/models."),
      header_value(signing.headers(SECRET, "GET", "/api/v1/models", "", 5), "X-Omixa-Signature"))
    assert.equal("sha256=" .. openssl_hmac(SECRET, "5.POST./p.\0\255\n"),
      header_value(signing.headers(SECRET, "POST", "/p", "\0\255\n", 5), "X-Omixa-Signature"))
  end)

  it("uses the current unix time by default, as whole seconds", function()
    local before = os.time()
    local ts = tonumber(header_value(signing.headers(SECRET, "POST", GEN_PATH, "{}"), "X-Omixa-Timestamp"))
    assert.truthy(ts >= before and ts <= os.time())
    assert.equal("12", header_value(signing.headers(SECRET, "POST", GEN_PATH, "{}", 12.9), "X-Omixa-Timestamp"))
  end)

  it("takes an omixa.buffer body", function()
    local core = require "omixa.core"
    assert.same(signing.headers(SECRET, "POST", "/p", "", 7), signing.headers(SECRET, "POST", "/p", core.buffer(), 7))
  end)

  it("raises on misuse, and never shows the secret", function()
    for _, args in ipairs({
      { nil, "POST", GEN_PATH, "{}" }, { "", "POST", GEN_PATH, "{}" }, { 42, "POST", GEN_PATH, "{}" },
      { SECRET, "post", GEN_PATH, "{}" }, { SECRET, nil, GEN_PATH, "{}" },
      { SECRET, "POST", "api/v1", "{}" }, { SECRET, "POST", "/a b", "{}" }, { SECRET, "POST", "/a\r\nX: y", "{}" },
      { SECRET, "POST", GEN_PATH, {} }, { SECRET, "POST", GEN_PATH, "{}", -1 }, { SECRET, "POST", GEN_PATH, "{}", "now" },
    }) do
      local ok, err = pcall(signing.headers, args[1], args[2], args[3], args[4], args[5])
      assert.is_false(ok)
      assert.matches("^omixa: signing: ", tostring(err):gsub("^[^:]+:%d+: ", ""))
      assert.is_nil(tostring(err):find(SECRET, 1, true))
    end
  end)
end)

describe("signing.path", function()
  it("is the path of a URL, without query or fragment", function()
    assert.equal(GEN_PATH, signing.path("https://www.omixa.cloud" .. GEN_PATH))
    assert.equal(GEN_PATH, signing.path("http://127.0.0.1:4000" .. GEN_PATH .. "?a=1#f"))
    assert.equal("/", signing.path("https://host"))
    assert.equal("/", signing.path("https://host?x"))
    assert.equal("/a%20b", signing.path("http://user@host:1/a%20b"))
    assert.equal(GEN_PATH, signing.path(GEN_PATH))
  end)
end)

describe("a stand-in that enforces signing", function()
  local srv
  setup(function() srv = helpers.serve{ signing_secret = SECRET } end)
  teardown(function() srv:stop() end)

  local BODY = cjson.encode({ model = "gemini-2.0-flash-preview-image-generation", prompt = "a signed lighthouse" })

  -- POST (or GET without a body) with the curl command line: status, decoded body.
  local function send(lines, opts)
    opts = opts or {}
    local args = { "curl -sS --max-time 30 -o - -w '\\n%{http_code}'" }
    for _, l in ipairs(lines) do args[#args + 1] = "-H " .. q(l) end
    local input
    if opts.method == "GET" then
      args[#args + 1] = "-G"
    else
      input = opts.body or BODY
      args[#args + 1] = "-H 'Content-Type: application/json' --data-binary @-"
    end
    args[#args + 1] = q(srv.origin .. (opts.path or GEN_PATH))
    local ok, code, out, err = helpers.run(table.concat(args, " "), input)
    assert(ok, "curl failed (" .. code .. "): " .. err)
    local text, status = out:match("^(.*)\n(%d+)$")
    return tonumber(status), cjson.decode(text)
  end

  local function refused(status, doc)
    assert.equal(401, status)
    assert.equal("invalid_signature", doc.error.code)
  end

  it("accepts our headers", function()
    local status, doc = send(signing.headers(SECRET, "POST", GEN_PATH, BODY))
    assert.equal(200, status)
    assert.truthy(doc.data[1].b64_json)
    -- and what it received is byte for byte what was signed
    local seen = srv:requests()
    local last = seen[#seen]
    assert.equal(BODY, last.body)
    local ts = last.headers["x-omixa-timestamp"]
    assert.equal("sha256=" .. openssl_hmac(SECRET, ts .. ".POST." .. GEN_PATH .. "." .. BODY),
      last.headers["x-omixa-signature"])
  end)

  it("accepts a signed GET of the model list, and refuses an unsigned one", function()
    local status, doc = send(signing.headers(SECRET, "GET", "/api/v1/models", ""), { method = "GET", path = "/api/v1/models" })
    assert.equal(200, status)
    assert.equal("list", doc.object)
    refused(send({}, { method = "GET", path = "/api/v1/models" }))
  end)

  it("refuses a wrong secret", function()
    refused(send(signing.headers(SECRET .. "-not", "POST", GEN_PATH, BODY)))
    refused(send(signing.headers("x", "POST", GEN_PATH, BODY)))
  end)

  it("refuses a signature over other bytes, another method or another path", function()
    refused(send(signing.headers(SECRET, "POST", GEN_PATH, BODY .. " ")))
    refused(send(signing.headers(SECRET, "PUT", GEN_PATH, BODY)))
    refused(send(signing.headers(SECRET, "POST", "/api/v1/models", BODY)))
  end)

  it("refuses missing headers", function()
    refused(send({}))
    local lines = signing.headers(SECRET, "POST", GEN_PATH, BODY)
    refused(send({ lines[1] }))
    refused(send({ lines[2] }))
  end)

  it("accepts a clock a few minutes off and refuses one more than 5 minutes off", function()
    local now = os.time()
    assert.equal(200, (send(signing.headers(SECRET, "POST", GEN_PATH, BODY, now - 240))))
    assert.equal(200, (send(signing.headers(SECRET, "POST", GEN_PATH, BODY, now + 240))))
    refused(send(signing.headers(SECRET, "POST", GEN_PATH, BODY, now - 360)))
    refused(send(signing.headers(SECRET, "POST", GEN_PATH, BODY, now + 360)))
    refused(send(signing.headers(SECRET, "POST", GEN_PATH, BODY, 0)))
  end)
end)
