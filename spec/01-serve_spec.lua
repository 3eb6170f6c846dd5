-- The stand-in service itself (`omixa serve`), seen from the curl command
-- line only: never through omixa's own client, so that a wire bug in the
-- client cannot hide behind the same bug here.
local helpers = require "helpers"
local cjson = require "cjson"

local run, q = helpers.run, helpers.quote

local GEMINI = "gemini-2.0-flash-preview-image-generation"
local PNG_SIG = "\137PNG\r\n\26\n"

-- Base64 (standard alphabet) to bytes; pure arithmetic, every Lua.
local B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
local B64IDX = {}
for i = 1, 64 do B64IDX[B64:byte(i)] = i - 1 end
local function b64decode(s)
  local out = {}
  for i = 1, #s - 3, 4 do
    local a, b, c, d = B64IDX[s:byte(i)], B64IDX[s:byte(i + 1)], B64IDX[s:byte(i + 2)], B64IDX[s:byte(i + 3)]
    assert(a and b, "not base64 at " .. i)
    local n = a * 262144 + b * 4096 + (c or 0) * 64 + (d or 0)
    out[#out + 1] = string.char(math.floor(n / 65536) % 256)
    if c then out[#out + 1] = string.char(math.floor(n / 256) % 256) end
    if d then out[#out + 1] = string.char(n % 256) end
  end
  return table.concat(out)
end

local function be32(s, i)
  local a, b, c, d = s:byte(i, i + 3)
  return ((a * 256 + b) * 256 + c) * 256 + d
end

-- Width and height from a PNG's IHDR (only the first 33 bytes are needed).
local function png_size(bytes)
  assert.equal(PNG_SIG, bytes:sub(1, 8))
  assert.equal("IHDR", bytes:sub(13, 16))
  return be32(bytes, 17), be32(bytes, 21)
end

-- Whole-image check through the base64 command line: decodes, and ends
-- with the PNG IEND chunk.
local function full_png(b64)
  local ok, _, bytes = run("base64 -d", b64)
  assert.is_true(ok, "base64 -d refused the image")
  assert.equal(PNG_SIG, bytes:sub(1, 8))
  assert.equal("IEND\174\66\96\130", bytes:sub(-8))
  return bytes
end

local read_file, write_file = helpers.read_file, helpers.write_file

-- One curl call. opts: method, path (under srv.url) or url, body (string or
-- table, sent as JSON), headers {k = v}, fault (table: X-Omixa-Fault),
-- key, args (extra curl words), cacert (false: none; default srv.ca_file).
-- Returns { exit, status, headers (lower-case, last response), body, time, size }.
local function call(srv, opts)
  opts = opts or {}
  local dir = helpers.tmpdir()
  local words = { "curl", "-sS", "--max-time", tostring(opts.max_time or 30),
                  "-o", q(dir .. "/body"), "-D", q(dir .. "/head"),
                  "-w", q("%{http_code} %{time_total} %{size_download}") }
  if opts.method then words[#words + 1] = "-X " .. opts.method end
  local cacert = opts.cacert
  if cacert == nil then cacert = srv.ca_file end
  if cacert then words[#words + 1] = "--cacert " .. q(cacert) end
  local body = opts.body
  if body == nil and opts.method == nil and not opts.get then
    body = { model = GEMINI, prompt = "a lighthouse at dusk" }
  end
  if body ~= nil then
    if type(body) == "table" then body = cjson.encode(body) end
    write_file(dir .. "/req", body)
    words[#words + 1] = "-H 'Content-Type: application/json' --data-binary @" .. q(dir .. "/req")
  end
  if opts.key then words[#words + 1] = "-H " .. q("Authorization: Bearer " .. opts.key) end
  if opts.fault then words[#words + 1] = "-H " .. q("X-Omixa-Fault: " .. cjson.encode(opts.fault)) end
  for k, v in pairs(opts.headers or {}) do words[#words + 1] = "-H " .. q(k .. ": " .. v) end
  for _, a in ipairs(opts.args or {}) do words[#words + 1] = a end
  words[#words + 1] = q(opts.url or (srv.url .. (opts.path or "/images/generations")))
  local _, code, out, err = run(table.concat(words, " "))
  local status, time, size = out:match("^(%d+) ([%d%.]+) (%d+)")
  local res = { exit = code, status = tonumber(status), time = tonumber(time), size = tonumber(size),
                stderr = err, body = read_file(dir .. "/body") or "", headers = {} }
  local head = read_file(dir .. "/head") or ""
  -- the last header block (after any 1xx)
  local last = head:match(".*\r\n\r\n(HTTP/.-)$") or head
  for name, value in last:gmatch("([%w%-]+):[ \t]*([^\r\n]*)\r?\n") do
    res.headers[name:lower()] = value
  end
  res.status_line = last:match("^(HTTP/[^\r\n]*)")
  os.execute("rm -rf " .. q(dir))
  return res
end

local function json(res)
  local ok, v = pcall(cjson.decode, res.body)
  assert(ok, "not JSON: " .. res.body:sub(1, 200))
  return v
end

local function envelope_of(res)
  local v = json(res)
  assert.is_table(v.error, res.body)
  assert.is_string(v.error.message)
  assert.is_string(v.error.type)
  assert.is_string(v.error.code)
  return v.error
end

-- The quoted b64_json strings of a raw response body, as written.
local function raw_b64s(body)
  local list = {}
  for s in body:gmatch('"b64_json":"(.-)"') do list[#list + 1] = s end
  return list
end

describe("omixa serve", function()
  local srv
  setup(function() srv = helpers.serve() end)
  teardown(function() srv:stop() end)
  before_each(function() srv:reset() end)

  describe("launcher", function()
    it("printed one base URL on loopback and wrote DIR/url and DIR/pid", function()
      assert.matches("^http://127%.0%.0%.1:%d+/api/v1$", srv.url)
      assert.equal(srv.url .. "\n", read_file(srv.dir .. "/url"))
      assert.matches("^%d+%s*$", read_file(srv.dir .. "/pid"))
      local cmd = read_file("/proc/" .. read_file(srv.dir .. "/pid"):match("%d+") .. "/cmdline")
      if cmd then assert.truthy(cmd:find("nginx", 1, true)) end
    end)

    it("stops with --stop DIR and nothing listens any more", function()
      local s = helpers.serve()
      local pid = read_file(s.dir .. "/pid"):match("%d+")
      assert.equal(200, call(s).status)
      s:stop()
      local res = call(s)
      assert.equal(7, res.exit) -- couldn't connect
      -- gone, or a zombie waiting for init to reap it
      local stat = read_file("/proc/" .. pid .. "/stat")
      assert.truthy(stat == nil or stat:match("^%d+ %b() Z"), stat)
    end)

    it("prints exactly the URL line, and runs in the foreground until SIGTERM", function()
      local dir = helpers.tmpdir()
      local launcher = helpers.lua_cmd("os.exit(require('omixa.serve').main({'--port', '0'}))")
      assert.is_true((run("(sh -c 'echo $$ > " .. dir .. "/lpid; exec " .. launcher:gsub("'", "'\\''")
        .. "' >" .. dir .. "/out 2>" .. dir .. "/err; echo $? > " .. dir .. "/rc) >/dev/null 2>&1 &")))
      local out
      for _ = 1, 200 do
        out = read_file(dir .. "/out") or ""
        if out:find("\n") then break end
        run("sleep 0.05")
      end
      assert.matches("^http://127%.0%.0%.1:%d+/api/v1\n$", out)
      local url = out:match("^(%S+)")
      local fg = { url = url }
      assert.equal(200, call(fg).status)
      -- its state lives in a fresh temporary directory, removed at the end
      local conf_dirs = select(3, run("ls -d ${TMPDIR:-/tmp}/omixa-serve-* 2>/dev/null"))
      assert.is_true((run("kill -TERM " .. read_file(dir .. "/lpid"):match("%d+"))))
      local rc
      for _ = 1, 200 do
        rc = read_file(dir .. "/rc")
        if rc and rc:find("\n") then break end
        run("sleep 0.05")
      end
      assert.equal("0", rc:match("%d+"), read_file(dir .. "/err"))
      assert.equal("", read_file(dir .. "/err"))
      assert.equal(7, call(fg).exit)
      local after = select(3, run("ls -d ${TMPDIR:-/tmp}/omixa-serve-* 2>/dev/null"))
      assert.is_true(#after <= #conf_dirs)
    end)

    it("fails with one line on stderr when a fixed port is busy", function()
      local port = srv.url:match(":(%d+)/")
      local ok, code, out, err = run(helpers.lua_cmd(
        "os.exit(require('omixa.serve').main({'--port', '" .. port .. "', '--daemon', '--dir', '"
        .. helpers.tmpdir() .. "'}))"))
      assert.is_false(ok)
      assert.equal(1, code)
      assert.equal("", out)
      assert.matches("^omixa serve: [^\n]*" .. port .. "[^\n]*in use\n$", err)
    end)

    it("fails clearly without nginx, and on bad usage", function()
      local ok, code, _, err = run("OMIXA_NGINX=/nonexistent/nginx " .. helpers.lua_cmd(
        "os.exit(require('omixa.serve').main({'--port', '0'}))"))
      assert.is_false(ok)
      assert.equal(1, code)
      assert.matches("^omixa serve: [^\n]*nginx[^\n]*\n$", err)
      ok, code, _, err = run(helpers.lua_cmd("os.exit(require('omixa.serve').main({'--bogus'}))"))
      assert.is_false(ok)
      assert.equal(2, code)
      assert.matches("^omixa serve: unknown argument '%-%-bogus'", err)
      _, code, _, err = run(helpers.lua_cmd("os.exit(require('omixa.serve').main({'--host', '0.0.0.0'}))"))
      assert.equal(2, code)
      assert.matches("loopback", err)
    end)

    it("takes the key from OMIXA_SERVE_KEY without putting it on any command line", function()
      local dir = helpers.tmpdir()
      local ok, _, out, err = run("OMIXA_SERVE_KEY=omx_live_envkey " .. helpers.lua_cmd(
        "os.exit(require('omixa.serve').main({'--port', '0', '--daemon', '--dir', '" .. dir .. "'}))"))
      assert.is_true(ok, err)
      local s = { url = out:match("^(%S+)") }
      local stopped = false
      finally(function()
        if not stopped then
          run(helpers.lua_cmd("os.exit(require('omixa.serve').main({'--stop', '" .. dir .. "'}))"))
        end
      end)
      assert.equal(401, call(s).status)
      assert.equal(200, call(s, { key = "omx_live_envkey" }).status)
      assert.is_nil(read_file(dir .. "/nginx.conf"):find("omx_live_envkey", 1, true))
      local pid = read_file(dir .. "/pid"):match("%d+")
      local cmdline = read_file("/proc/" .. pid .. "/cmdline")
      if cmdline then assert.is_nil(cmdline:find("omx_live_envkey", 1, true)) end
      -- the launcher's copy of the key goes with the server
      assert.is_true((run(helpers.lua_cmd("os.exit(require('omixa.serve').main({'--stop', '" .. dir .. "'}))"))))
      stopped = true
      assert.is_nil(read_file(dir .. "/key"))
      assert.is_string(read_file(dir .. "/nginx.conf"))
    end)
  end)

  describe("generation", function()
    it("answers the documented success shape with n images", function()
      local res = call(srv, { body = { model = GEMINI, prompt = "a red fox in snow", n = 3 } })
      assert.equal(200, res.status)
      assert.equal(0, res.exit)
      assert.matches("^application/json", res.headers["content-type"])
      assert.is_string(res.headers["x-request-id"])
      assert.equal(tostring(#res.body), res.headers["content-length"])
      local v = json(res)
      assert.equal("number", type(v.created))
      assert.truthy(math.abs(v.created - os.time()) < 120)
      assert.equal(3, #v.data)
      for _, item in ipairs(v.data) do
        assert.equal(cjson.null, item.url)
        assert.equal(1024, (png_size(b64decode(item.b64_json:sub(1, 44)))))
      end
      assert.same({ billed_amount = "0.120000" }, v.usage)
      -- base64 as written: standard alphabet, padded, '/' not escaped
      for _, s in ipairs(raw_b64s(res.body)) do
        assert.matches("^[A-Za-z0-9+/]+=*$", s)
        assert.equal(0, #s % 4)
      end
      full_png(v.data[1].b64_json)
    end)

    it("sizes PNGs from aspect_ratio and size (Google) and WxH (GPT)", function()
      local cases = {
        { { model = GEMINI }, 1024, 1024 },
        { { model = GEMINI, aspect_ratio = "16:9" }, 1024, 576 },
        { { model = GEMINI, aspect_ratio = "9:16", size = "2K" }, 1152, 2048 },
        { { model = "imagen-4.0-generate-001", aspect_ratio = "4:3", size = "0.5K" }, 512, 384 },
        { { model = "imagen-4.0-fast-generate-001", aspect_ratio = "3:4", size = "4K" }, 3072, 4096 },
        { { model = "gpt-image-1.5", size = "1536x1024" }, 1536, 1024 },
        { { model = "MAI-Image-2.5", size = "1024x1536" }, 1024, 1536 },
        { { model = "gpt-image-1.5", size = "auto" }, 1024, 1024 },
        { { model = "gpt-image-1.5" }, 1024, 1024 },
      }
      for _, c in ipairs(cases) do
        c[1].prompt = "sizes"
        local res = call(srv, { body = c[1] })
        assert.equal(200, res.status, res.body)
        local b64 = json(res).data[1].b64_json
        local w, h = png_size(b64decode(b64:sub(1, 44)))
        assert.same({ c[2], c[3] }, { w, h }, cjson.encode(c[1]))
      end
    end)

    it("makes a 4096x4096 PNG quickly and whole", function()
      local res = call(srv, { body = { model = GEMINI, prompt = "big " .. os.time(), size = "4K" } })
      assert.equal(200, res.status)
      assert.truthy(res.time < 2, "took " .. res.time .. " s")
      local bytes = full_png(json(res).data[1].b64_json)
      assert.same({ 4096, 4096 }, { png_size(bytes) })
    end)

    it("serves JPEG and WebP for those output formats", function()
      local v = json(call(srv, { body = { model = GEMINI, prompt = "x", output_format = "jpeg" } }))
      assert.equal("\255\216\255", b64decode(v.data[1].b64_json:sub(1, 4)):sub(1, 3))
      v = json(call(srv, { body = { model = "gpt-image-1.5", prompt = "x", output_format = "webp" } }))
      local head = b64decode(v.data[1].b64_json:sub(1, 16))
      assert.equal("RIFF", head:sub(1, 4))
      assert.equal("WEBP", head:sub(9, 12))
      assert.same({ billed_amount = "0.033000" }, v.usage)
    end)

    it("keeps its embedded JPEG and WebP equal to the fixture files", function()
      local embedded = dofile(helpers.root .. "/lua/omixa/serve/fixtures_embedded.lua")
      assert.equal(read_file(helpers.root .. "/lua/omixa/serve/fixtures/image.jpg"), embedded.jpeg)
      assert.equal(read_file(helpers.root .. "/lua/omixa/serve/fixtures/image.webp"), embedded.webp)
    end)

    it("gives the same picture for the same prompt and another for another", function()
      local a = json(call(srv, { body = { model = GEMINI, prompt = "one", size = "0.5K" } })).data[1].b64_json
      local b = json(call(srv, { body = { model = GEMINI, prompt = "one", size = "0.5K" } })).data[1].b64_json
      local c = json(call(srv, { body = { model = GEMINI, prompt = "two", size = "0.5K" } })).data[1].b64_json
      assert.equal(a, b)
      assert.are_not.equal(a, c)
    end)

    it("refuses a bad field, bad JSON and an unknown model with 422", function()
      for _, body in ipairs({
        cjson.encode({ model = GEMINI, prompt = "x", aspect_ratio = "2:1" }),
        cjson.encode({ model = GEMINI, prompt = "x", quality = "high" }),
        cjson.encode({ model = GEMINI, prompt = "x", n = 11 }),
        cjson.encode({ model = "no-such-model", prompt = "x" }),
        cjson.encode({ model = GEMINI }),
        '{"model":',
        "[]",
      }) do
        local res = call(srv, { body = body })
        assert.equal(422, res.status, body)
        local e = envelope_of(res)
        assert.equal("invalid_request_error", e.type)
        assert.equal("validation_error", e.code)
      end
      local e = envelope_of(call(srv, { body = { model = GEMINI, prompt = "x", aspect_ratio = "2:1" } }))
      assert.matches("aspect_ratio", e.message)
    end)

    it("answers 404 for an unknown path and 405 for a wrong method, with envelopes", function()
      local res = call(srv, { path = "/images/nope", body = "{}" })
      assert.equal(404, res.status)
      assert.equal("not_found", envelope_of(res).code)
      res = call(srv, { get = true })
      assert.equal(405, res.status)
      assert.equal("POST", res.headers["allow"])
      envelope_of(res)
      res = call(srv, { method = "DELETE" })
      assert.equal(405, res.status)
    end)

    it("lists the catalog at GET /models", function()
      local v = json(call(srv, { path = "/models", get = true }))
      local ids = {}
      for _, m in ipairs(v.data) do ids[m.id] = m end
      assert.equal("google", ids[GEMINI].family)
      assert.equal("0.033000", ids["gpt-image-1.5"].price)
    end)

    it("streams server-sent events for a streaming model", function()
      local res = call(srv, { body = { model = "gpt-image-1.5", prompt = "s", stream = true, n = 2 },
                              headers = { Accept = "text/event-stream" } })
      assert.equal(200, res.status)
      assert.matches("^text/event%-stream", res.headers["content-type"])
      assert.equal("chunked", res.headers["transfer-encoding"])
      local events, datas = {}, {}
      for block in res.body:gmatch("(.-)\n\n") do
        local ev = block:match("^event: ([^\n]+)") or block:match("\nevent: ([^\n]+)")
        if block:sub(1, 1) == ":" then ev = "heartbeat" end
        events[#events + 1] = ev or "data"
        datas[#events] = block:match("data: ([^\n]+)") or false
      end
      assert.same({ "heartbeat", "image_generation.partial_image", "image_generation.completed",
                    "image_generation.partial_image", "image_generation.completed", "data" }, events)
      assert.equal("[DONE]", datas[#datas])
      local done = cjson.decode(datas[#datas - 1])
      assert.equal("image_generation.completed", done.type)
      assert.same({ billed_amount = "0.066000" }, done.usage)
      assert.same({ 1024, 1024 }, { png_size(b64decode(done.b64_json:sub(1, 44))) })
      assert.equal(0, cjson.decode(datas[2]).partial_image_index)
      -- not for a model without streaming
      res = call(srv, { body = { model = "imagen-4.0-generate-001", prompt = "s", stream = true } })
      assert.equal(422, res.status)
    end)

    it("streams with CRLF lines, multi-line data, an error event, or ending early when asked", function()
      local body = { model = GEMINI, prompt = "s", stream = true }
      local res = call(srv, { body = body, fault = { sse_crlf = true, sse_multiline = true, partials = 0 } })
      assert.truthy(res.body:find("event: image_generation.completed\r\ndata: {\"type\"", 1, true))
      assert.truthy(res.body:find(",\r\ndata: ", 1, true))
      assert.truthy(res.body:find("data: [DONE]\r\n\r\n", 1, true))
      res = call(srv, { body = body, fault = { stream_error = true } })
      assert.truthy(res.body:find("event: error\ndata: {\"error\":", 1, true))
      assert.is_nil(res.body:find("[DONE]", 1, true))
      res = call(srv, { body = body, fault = { sse_data_shape = true } })
      local frame = res.body:match("^: keep%-alive\n\ndata: ([^\n]+)\n\ndata: %[DONE%]\n\n$")
      assert.is_string(frame, res.body:sub(1, 100))
      assert.equal(1, #cjson.decode(frame).data)
      res = call(srv, { body = body, fault = { stream_end_early = true } })
      assert.truthy(res.body:find("partial_image", 1, true))
      assert.is_nil(res.body:find("completed", 1, true))
      assert.is_nil(res.body:find("[DONE]", 1, true))
    end)
  end)

  describe("with a key", function()
    local keyed
    setup(function() keyed = helpers.serve{ key = "omx_live_secret" } end)
    teardown(function() keyed:stop() end)

    it("answers 401 with the envelope without the right bearer key", function()
      for _, key in ipairs({ false, "omx_live_wrong" }) do
        local res = call(keyed, { key = key or nil })
        assert.equal(401, res.status)
        assert.same({ message = "Invalid API key.", type = "authentication_error", code = "invalid_api_key" },
          envelope_of(res))
      end
      local res = call(keyed, { headers = { Authorization = "Basic omx_live_secret" } })
      assert.equal(401, res.status)
    end)

    it("accepts the right key", function()
      assert.equal(200, call(keyed, { key = "omx_live_secret" }).status)
    end)

    it("accepts anything without a key configured", function()
      assert.equal(200, call(srv, { key = "whatever" }).status)
      assert.equal(200, call(srv).status)
    end)
  end)

  describe("with a signing secret", function()
    local signed
    setup(function() signed = helpers.serve{ signing_secret = "s3cret" } end)
    teardown(function() signed:stop() end)

    local function sign(ts, body, path)
      return "sha256=" .. helpers.openssl_hmac("s3cret", ts .. ".POST." .. path .. "." .. body)
    end

    it("checks X-Omixa-Timestamp and X-Omixa-Signature over the raw body", function()
      local body = cjson.encode({ model = GEMINI, prompt = "signed" })
      local ts = tostring(os.time())
      local good = sign(ts, body, "/api/v1/images/generations")
      local res = call(signed, { body = body, headers = { ["X-Omixa-Timestamp"] = ts, ["X-Omixa-Signature"] = good } })
      assert.equal(200, res.status, res.body)
      for _, h in ipairs({
        {},
        { ["X-Omixa-Timestamp"] = ts },
        { ["X-Omixa-Timestamp"] = ts, ["X-Omixa-Signature"] = good:gsub("%x$", "0") == good
          and good:gsub("%x$", "1") or good:gsub("%x$", "0") },
        { ["X-Omixa-Timestamp"] = tostring(os.time() - 3600),
          ["X-Omixa-Signature"] = sign(tostring(os.time() - 3600), body, "/api/v1/images/generations") },
      }) do
        res = call(signed, { body = body, headers = h })
        assert.equal(401, res.status)
        local e = envelope_of(res)
        assert.equal("authentication_error", e.type)
        assert.equal("invalid_signature", e.code)
      end
    end)
  end)

  describe("faults", function()
    it("delays without blocking other requests", function()
      srv:faults{ { delay = 1 } }
      local dir = helpers.tmpdir()
      run("curl -s -o /dev/null -H 'Content-Type: application/json' --data-binary "
        .. q(cjson.encode({ model = GEMINI, prompt = "slow" })) .. " " .. q(srv.url .. "/images/generations")
        .. " -w '%{time_total}' > " .. dir .. "/t 2>/dev/null &")
      run("sleep 0.2")
      local fast = call(srv)
      assert.equal(200, fast.status)
      assert.truthy(fast.time < 0.7, "blocked for " .. fast.time)
      local t
      for _ = 1, 100 do
        t = tonumber((read_file(dir .. "/t")))
        if t then break end
        run("sleep 0.05")
      end
      assert.truthy(t and t >= 1, "delay was " .. tostring(t))
    end)

    it("answers any status with the envelope, overridable type/code/message", function()
      local res = call(srv, { fault = { status = 429, retry_after = "2" } })
      assert.equal(429, res.status)
      assert.equal("2", res.headers["retry-after"])
      assert.equal("rate_limit_error", envelope_of(res).type)
      res = call(srv, { fault = { status = 503, retry_after = "Wed, 21 Oct 2037 07:28:00 GMT",
                                  retry_after_ms = "1500" } })
      assert.equal(503, res.status)
      assert.equal("Wed, 21 Oct 2037 07:28:00 GMT", res.headers["retry-after"])
      assert.equal("1500", res.headers["retry-after-ms"])
      assert.equal("no_healthy_route", envelope_of(res).code)
      res = call(srv, { fault = { status = 402, type = "billing_error", code = "insufficient_balance",
                                  message = "Insufficient wallet balance." } })
      assert.equal(402, res.status)
      assert.same({ type = "billing_error", code = "insufficient_balance",
                    message = "Insufficient wallet balance." }, envelope_of(res))
      for _, status in ipairs({ 403, 408, 409, 500, 502, 504, 418 }) do
        res = call(srv, { fault = { status = status } })
        assert.equal(status, res.status)
        envelope_of(res)
      end
    end)

    it("answers an HTML error page, an empty body, or a raw body", function()
      local res = call(srv, { fault = { status = 502, body = "html" } })
      assert.equal(502, res.status)
      assert.matches("^text/html", res.headers["content-type"])
      assert.matches("<html>", res.body)
      res = call(srv, { fault = { status = 500, body = "empty" } })
      assert.equal(500, res.status)
      assert.equal("", res.body)
      assert.equal("0", res.headers["content-length"])
      res = call(srv, { fault = { status = 200, body = "not an image" } })
      assert.equal(200, res.status)
      assert.equal("not an image", res.body)
    end)

    it("sets extra headers and the request id", function()
      local res = call(srv, { fault = { headers = { ["X-Extra"] = "yes" }, request_id = "req_fixed_1" } })
      assert.equal(200, res.status)
      assert.equal("yes", res.headers["x-extra"])
      assert.equal("req_fixed_1", res.headers["x-request-id"])
      res = call(srv, { fault = { status = 500, request_id = "req_fixed_2" } })
      assert.equal("req_fixed_2", res.headers["x-request-id"])
    end)

    it("cuts the connection before the status line", function()
      local res = call(srv, { fault = { cut = "before_status" } })
      assert.equal(52, res.exit) -- empty reply from server
      assert.equal(0, res.status)
    end)

    it("cuts the connection in the middle of the headers", function()
      local res = call(srv, { fault = { cut = "mid_headers" } })
      assert.are_not.equal(0, res.exit)
      assert.equal("", res.body)
      assert.is_nil(res.headers["x-request-id"])
    end)

    it("cuts the connection in the middle of the body, or truncates it", function()
      for _, fault in ipairs({ { cut = "mid_body" }, { truncate = true } }) do
        local res = call(srv, { fault = fault })
        assert.equal(18, res.exit, cjson.encode(fault)) -- partial file
        assert.equal(200, res.status)
        local length = tonumber(res.headers["content-length"])
        assert.truthy(length and #res.body < length and #res.body > 0)
      end
    end)

    it("answers malformed JSON, bad base64, an empty data array", function()
      local res = call(srv, { fault = { malformed = true } })
      assert.equal(200, res.status)
      assert.is_false((pcall(cjson.decode, res.body)))
      res = call(srv, { fault = { bad_base64 = true } })
      local b64 = json(res).data[1].b64_json
      assert.is_string(b64)
      assert.is_nil(b64:match("^[A-Za-z0-9+/]+=*$"))
      res = call(srv, { fault = { empty_data = true } })
      assert.same({}, json(res).data)
      assert.matches('"data":%[%]', res.body)
    end)

    it("escapes every '/' in the base64 when asked", function()
      local plain = call(srv, { body = { model = GEMINI, prompt = "slashes", size = "0.5K" } })
      local escaped = call(srv, { body = { model = GEMINI, prompt = "slashes", size = "0.5K" },
                                  fault = { escape_slashes = true } })
      local raw = raw_b64s(escaped.body)[1]
      assert.truthy(raw:find("\\/", 1, true))
      assert.is_nil(raw:gsub("\\/", ""):find("/", 1, true))
      assert.equal(json(plain).data[1].b64_json, json(escaped).data[1].b64_json)
    end)

    it("answers with URLs to fetch instead of base64", function()
      local res = call(srv, { body = { model = GEMINI, prompt = "u", n = 2 }, fault = { url_only = true } })
      local v = json(res)
      assert.equal(2, #v.data)
      assert.equal(cjson.null, v.data[1].b64_json)
      assert.matches("^http://127%.0%.0%.1:%d+/_omixa/images/[%w_-]+$", v.data[1].url)
      local img = call(srv, { url = v.data[1].url, get = true })
      assert.equal(200, img.status)
      assert.equal("image/png", img.headers["content-type"])
      assert.same({ 1024, 1024 }, { png_size(img.body) })
      local fetched = srv:fetches()
      assert.equal(1, #fetched)
      assert.equal("GET", fetched[1].method)
      assert.equal(404, call(srv, { url = srv.origin .. "/_omixa/images/nope", get = true }).status)
    end)

    it("answers with the image bytes themselves", function()
      local res = call(srv, { fault = { raw_image = true } })
      assert.equal(200, res.status)
      assert.equal("image/png", res.headers["content-type"])
      assert.same({ 1024, 1024 }, { png_size(res.body) })
    end)

    it("makes a large image that does not compress when asked (noise)", function()
      local res = call(srv, { body = { model = GEMINI, prompt = "noise", size = "4K", output_format = "png" },
                              fault = { noise = true, raw_image = true } })
      assert.equal(200, res.status)
      assert.same({ 4096, 4096 }, { png_size(res.body) })
      assert.truthy(#res.body > 15e6, "bytes: " .. #res.body)
    end)

    it("sends the body chunked, or trickling", function()
      local res = call(srv, { fault = { chunked = true } })
      assert.equal(200, res.status)
      assert.equal("chunked", res.headers["transfer-encoding"])
      assert.is_nil(res.headers["content-length"])
      full_png(json(res).data[1].b64_json)
      local size = #res.body
      res = call(srv, { fault = { trickle = { bytes = math.ceil(size / 3), interval = 0.25 } } })
      assert.equal(0, res.exit)
      assert.equal(tostring(size), res.headers["content-length"])
      assert.truthy(res.time >= 0.45, "trickled in " .. res.time)
      full_png(json(res).data[1].b64_json)
    end)

    it("adds revised_prompt to each item, caps n, sets or drops usage", function()
      local v = json(call(srv, { body = { model = GEMINI, prompt = "p", n = 2 },
                                 fault = { revised_prompt = "a better / \"prompt\"" } }))
      assert.equal(2, #v.data)
      for _, item in ipairs(v.data) do assert.equal("a better / \"prompt\"", item.revised_prompt) end
      v = json(call(srv, { body = { model = GEMINI, prompt = "p", n = 4 }, fault = { cap_n = 1 } }))
      assert.equal(1, #v.data)
      assert.same({ billed_amount = "0.040000" }, v.usage)
      v = json(call(srv, { fault = { billed_amount = "0.039000" } }))
      assert.same({ billed_amount = "0.039000" }, v.usage)
      v = json(call(srv, { fault = { no_usage = true } }))
      assert.is_nil(v.usage)
    end)

    it("compresses with gzip when asked and the client accepts it", function()
      local res = call(srv, { fault = { gzip = true }, args = { "--compressed" } })
      assert.equal(200, res.status)
      assert.equal("gzip", res.headers["content-encoding"])
      assert.truthy(res.size < #res.body)
      full_png(json(res).data[1].b64_json)
    end)

    it("takes queued faults in order, one per request", function()
      srv:faults{ { status = 500 }, { status = 502 } }
      assert.same({ { status = 500 }, { status = 502 } }, select(2, srv:control("GET", "/_omixa/faults")))
      assert.equal(500, call(srv).status)
      assert.equal(502, call(srv).status)
      assert.equal(200, call(srv).status)
      srv:faults{ { status = 500 } }
      srv:add_faults{ { status = 503 } }
      srv:faults{ { status = 504 } } -- replaces
      assert.equal(504, call(srv).status)
      assert.equal(200, call(srv).status)
      srv:faults{ { status = 500 } }
      assert.equal(200, srv:control("DELETE", "/_omixa/faults"))
      assert.equal(200, call(srv).status)
    end)

    it("lets the X-Omixa-Fault header win over the queue, which waits", function()
      srv:faults{ { status = 500 } }
      assert.equal(418, call(srv, { fault = { status = 418 } }).status)
      assert.equal(500, call(srv).status)
      assert.equal(400, call(srv, { headers = { ["X-Omixa-Fault"] = "nope" } }).status)
    end)

    it("refuses a misspelt fault rather than ignoring it", function()
      local status, v = srv:control("PUT", "/_omixa/faults", { { status = 429 }, { retry_afterr = "1" } })
      assert.equal(422, status)
      assert.matches("faults%[2%]: unknown fault field 'retry_afterr'", v.error.message)
      status = srv:control("PUT", "/_omixa/faults", { { cut = "sideways" } })
      assert.equal(422, status)
      local res = call(srv, { fault = { delayy = 1 } })
      assert.equal(400, res.status)
      assert.matches("unknown fault field 'delayy'", envelope_of(res).message)
      assert.same({}, select(2, srv:control("GET", "/_omixa/faults")))
    end)

    it("records a request before applying its fault", function()
      call(srv, { fault = { cut = "before_status" } })
      local reqs = srv:requests()
      assert.equal(1, #reqs)
      assert.equal("POST", reqs[1].method)
    end)
  end)

  describe("control API", function()
    it("records method, uri, lower-case headers and the exact body", function()
      local body = '{ "model" : "' .. GEMINI .. '",\n "prompt":"caf\195\169 \\/ \\u00e9" }'
      local res = call(srv, { body = body, path = "/images/generations?x=1",
                              headers = { ["X-Trace"] = "t-1", ["User-Agent"] = "spec/1" } })
      assert.equal(200, res.status)
      local reqs = srv:requests()
      assert.equal(1, #reqs)
      assert.equal("POST", reqs[1].method)
      assert.equal("/api/v1/images/generations?x=1", reqs[1].uri)
      assert.equal(body, reqs[1].body)
      assert.equal("t-1", reqs[1].headers["x-trace"])
      assert.equal("spec/1", reqs[1].headers["user-agent"])
      assert.equal("application/json", reqs[1].headers["content-type"])
      assert.equal(tostring(#body), reqs[1].headers["content-length"])
      assert.equal(200, (srv:control("DELETE", "/_omixa/requests")))
      assert.same({}, srv:requests())
    end)

    it("keeps a large body whole", function()
      local big = string.rep("0123456789abcdef", 24 * 65536) -- 24 MiB
      local res = call(srv, { body = big })
      assert.equal(422, res.status)
      local reqs = srv:requests()
      assert.equal(1, #reqs)
      assert.equal(#big, #reqs[1].body)
      assert.equal(big, reqs[1].body)
    end)

    it("resets faults, requests, fetches and billing", function()
      srv:faults{ { status = 500 } }
      call(srv, { fault = { status = 200 } })
      srv:reset()
      assert.same({}, srv:requests())
      assert.same({}, select(2, srv:control("GET", "/_omixa/faults")))
      assert.equal(200, call(srv).status)
    end)

    it("keeps a running total of what it billed, to read and to reset", function()
      local zero = { billed_amount = "0.000000", images = 0, answers = 0 }
      assert.same({ 200, zero }, { srv:control("GET", "/_omixa/billing") })
      assert.equal(200, call(srv, { body = { model = GEMINI, prompt = "p", n = 2 } }).status)
      assert.equal(500, call(srv, { fault = { status = 500 } }).status)       -- not billed
      assert.equal(200, call(srv, { fault = { empty_data = true } }).status)  -- no image
      assert.equal(200, call(srv, { fault = { billed_amount = "0.039000" } }).status)
      assert.equal(200, call(srv, { fault = { no_usage = true } }).status)    -- billed all the same
      assert.equal(200, call(srv, { fault = { truncate = true } }).status)    -- spoilt after billing
      local res = call(srv, { body = { model = "gpt-image-1.5", prompt = "p", stream = true } })
      assert.equal(200, res.status)
      assert.truthy(res.body:find('"usage":{"billed_amount":"0.033000"}', 1, true))
      call(srv, { body = { model = "gpt-image-1.5", prompt = "p", stream = true },
                  fault = { stream_end_early = true } })                      -- no final image
      assert.same({ billed_amount = "0.232000", images = 6, answers = 5 },
                  srv:billing())
      assert.equal(200, (srv:control("DELETE", "/_omixa/billing")))
      assert.same(zero, srv:billing())
      call(srv)
      assert.equal("0.040000", srv:billing().billed_amount)
      srv:reset()
      assert.same(zero, srv:billing())
      assert.equal(405, (srv:control("POST", "/_omixa/billing")))
    end)

    it("answers with a PNG of any byte size, as slowly as asked", function()
      -- 4096x4096 and 20 MB, 1 MiB a piece
      local res = call(srv, { body = { model = GEMINI, prompt = "p", size = "4K" },
                              fault = { raw_image = true, image_bytes = 20000000,
                                        trickle = { bytes = 1048576, interval = 0.01 } },
                              max_time = 120 })
      assert.equal(200, res.status)
      assert.equal("image/png", res.headers["content-type"])
      assert.equal(20000000, #res.body)
      assert.same({ 4096, 4096 }, { png_size(res.body) })
      assert.equal("IEND\174\66\96\130", res.body:sub(-8))
      -- in JSON too, and smaller than the picture: the picture as it is
      local v = json(call(srv, { body = { model = GEMINI, prompt = "p", size = "0.5K", aspect_ratio = "16:9" },
                                 fault = { image_bytes = 100000 } }))
      local bytes = full_png(v.data[1].b64_json)
      assert.equal(100000, #bytes)
      assert.same({ 512, 288 }, { png_size(bytes) })
      v = json(call(srv, { body = { model = GEMINI, prompt = "p", size = "0.5K", aspect_ratio = "16:9" },
                           fault = { image_bytes = 10 } }))
      assert.same({ 512, 288 }, { png_size(full_png(v.data[1].b64_json)) })
      assert.equal(422, (srv:control("PUT", "/_omixa/faults", { { image_bytes = "big" } })))
    end)

    it("answers 404 for an unknown control path", function()
      local status, v = srv:control("GET", "/_omixa/nope")
      assert.equal(404, status)
      assert.equal("not_found", v.error.code)
    end)
  end)

  describe("over TLS", function()
    local tls
    setup(function() tls = helpers.serve{ tls = true } end)
    teardown(function() tls:stop() end)

    it("prints the CA it made, which curl needs to trust the server", function()
      assert.matches("^https://127%.0%.0%.1:%d+/api/v1$", tls.url)
      assert.matches("^/.*/ca%.pem$", tls.ca_file)
      local res = call(tls, { cacert = false })
      assert.equal(60, res.exit) -- peer certificate cannot be authenticated
      res = call(tls)
      assert.equal(0, res.exit)
      assert.equal(200, res.status)
      full_png(json(res).data[1].b64_json)
    end)

    it("holds a certificate for localhost too", function()
      local port = tls.url:match(":(%d+)/")
      local res = call(tls, { url = "https://localhost:" .. port .. "/api/v1/images/generations",
                              args = { "--resolve", "localhost:" .. port .. ":127.0.0.1" } })
      assert.equal(200, res.status)
      local ok, _, out = run("openssl x509 -noout -text -in " .. q(tls.dir .. "/server.pem"))
      assert.is_true(ok)
      assert.matches("IP Address:127%.0%.0%.1", out)
      assert.matches("IP Address:0:0:0:0:0:0:0:1", out)
      assert.matches("DNS:localhost", out)
    end)

    it("drives faults the same way", function()
      tls:reset()
      tls:faults{ { cut = "mid_body" } }
      assert.equal(18, call(tls).exit)
      assert.equal(1, #tls:requests())
    end)
  end)
end)
