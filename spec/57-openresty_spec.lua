-- examples/openresty in a real nginx (Debian's nginx + libnginx-mod-http-lua,
-- one process): GET /image?prompt=... builds the request with
-- client:prepare, sends it as a subrequest to a proxy_pass location and reads
-- the answer with client:parse, so the worker never blocks: 8 requests
-- against a stand-in that takes 1 s each finish together in about 1 s (a
-- blocked worker would take 8 s or more). GET /image/stream relays the
-- service's partial images as server-sent events over an ngx cosocket: they
-- reach the client as they come, the final image byte for byte, errors as an
-- error event, and the worker answers other requests meanwhile. An answer
-- whose items carry only a url has its images read over a cosocket too
-- (omixa_fetch, client:parse's fetch), never with omixa's blocking libcurl.
--
-- nginx embeds LuaJIT, so this runs once, in the LuaJIT pass of `make test`
-- (it builds the LuaJIT core itself if needed); other interpreters mark it
-- pending. The relay's HTTP/1.1 response reader (omixa_http1, plain Lua) is
-- checked on every interpreter.
local helpers = require "helpers"
local omixa = require "omixa"

local q = helpers.quote
local root = helpers.root
local DELAY = 1
local N = 8

local read, write = helpers.read_file, helpers.write_file

-- Directories holding cjson.so for Lua 5.1 (the ABI of nginx's LuaJIT).
local function cjson51()
  local _, _, out = helpers.run("ls -d /usr/lib/*-linux-*/lua/5.1 /usr/local/lib/lua/5.1 /usr/lib/lua/5.1 2>/dev/null")
  local dirs = {}
  for d in out:gmatch("[^\n]+") do
    if read(d .. "/cjson.so") then dirs[#dirs + 1] = d .. "/?.so" end
  end
  return table.concat(dirs, ";")
end

-- A port nothing listens on now (the kernel's pick for port 0).
local function free_port()
  local uv = require "luv"
  local t = uv.new_tcp()
  assert(t:bind("127.0.0.1", 0))
  local port = t:getsockname().port
  t:close()
  uv.run("nowait")
  return port
end

describe("examples/openresty in nginx", function()
  if type(jit) ~= "table" then
    it("runs in the LuaJIT pass (nginx's Lua module embeds LuaJIT)", function()
      pending("run by `make test` with LuaJIT: luajit /usr/bin/busted spec/57-openresty_spec.lua")
    end)
    return
  end

  local srv, dir, base, pid

  local function stop_nginx()
    if pid then
      os.execute("kill " .. pid .. " 2>/dev/null")
      for _ = 1, 100 do
        if not helpers.run("kill -0 " .. pid) then break end
        require("omixa.core").sleep(0.05)
      end
      pid = nil
    end
  end

  setup(function()
    assert(read("/usr/sbin/nginx") and read("/usr/lib/nginx/modules/ngx_http_lua_module.so"),
      "nginx with its Lua module not found: install nginx libnginx-mod-http-lua (sh .ci/deps test)")
    local built, code, bout, berr = helpers.run("cd " .. q(root) .. " && make -s LUA=luajit core")
    assert(built, "make LUA=luajit core failed (" .. code .. "): " .. bout .. berr)
    srv = helpers.serve()
    dir = helpers.tmpdir()
    local template = assert(read(root .. "/examples/openresty/nginx.conf"))
    local err
    for _ = 1, 5 do
      local port = free_port()
      local conf = template:gsub("@(%u[%u_]*)@", {
        PORT = tostring(port),
        LUA_PATH = root .. "/examples/openresty/?.lua;" .. root .. "/lua/?.lua;" .. root .. "/lua/?/init.lua",
        LUA_CPATH = root .. "/build/luajit/?.so;" .. cjson51(),
        RESOLVER = "127.0.0.1",
      })
      write(dir .. "/nginx.conf", conf)
      -- One process (master_process off), in the background (daemon on):
      -- nginx forks once its socket listens and its Lua has loaded omixa.
      local ok, rc, out, e = helpers.run("cd " .. q(dir) .. " && env -u OMIXA_API_KEY -u OMIXA_MODEL OMIXA_BASE_URL="
        .. q(srv.url) .. " /usr/sbin/nginx -g 'master_process off;' -p " .. q(dir .. "/")
        .. " -c " .. q(dir .. "/nginx.conf") .. " -e " .. q(dir .. "/error.log"))
      if ok then
        base = "http://127.0.0.1:" .. port
        for _ = 1, 100 do
          pid = tonumber((read(dir .. "/nginx.pid") or ""):match("%d+"))
          if pid then break end
          require("omixa.core").sleep(0.02)
        end
        -- should this process die before its teardown, nginx follows it
        local _, _, me = helpers.run("echo $PPID")
        me = me:match("%d+")
        if me and pid then
          helpers.run(("(while kill -0 %s && kill -0 %d; do sleep 1; done; kill -0 %s || kill %d) >/dev/null 2>&1 &")
            :format(me, pid, me, pid))
        end
        break
      end
      err = ("nginx failed (%d): %s%s\n%s"):format(rc, out, e, read(dir .. "/error.log") or "")
      if not err:find("in use", 1, true) then break end
    end
    assert(base and pid, err)
  end)
  teardown(function()
    stop_nginx()
    if srv then srv:stop() end
  end)
  before_each(function() srv:reset() end)

  it("loads omixa inside nginx and answers with the image bytes", function()
    local ok, _, out = helpers.run("curl -sS -H 'X-Parent: yes' -D - -o " .. q(dir .. "/one") .. " "
      .. q(base .. "/image?prompt=a%20red%20fox&format=png"))
    assert(ok, out)
    assert.matches("^HTTP/1%.1 200", out)
    assert.matches("\r\n[Cc]ontent%-[Tt]ype: image/png\r\n", out)
    local bytes = read(dir .. "/one")
    assert.equal("image/png", omixa.sniff(bytes).mime)
    local reqs = srv:requests()
    assert.equal(1, #reqs)
    assert.equal("POST", reqs[1].method)
    assert.equal("/api/v1/images/generations", reqs[1].uri)
    assert.equal("application/json", reqs[1].headers["content-type"])
    assert.matches("^omixa%-lua/", reqs[1].headers["user-agent"])
    assert.is_nil(reqs[1].headers["x-parent"]) -- the client's own headers stay out
    assert.equal("a red fox", require("cjson").decode(reqs[1].body).prompt)
  end)

  it("answers a misuse with 400 and the message, sending nothing", function()
    local ok, _, out = helpers.run("curl -sS -w '\\n%{http_code}' " .. q(base .. "/image?prompt=x&aspect_ratio=2:1"))
    assert(ok, out)
    assert.matches("field 'aspect_ratio' must be one of", out)
    assert.matches("\n400$", out)
    assert.same({}, srv:requests())
  end)

  it("passes the service's errors on", function()
    srv:faults{ { status = 402, code = "insufficient_balance", message = "Insufficient wallet balance." } }
    local ok, _, out = helpers.run("curl -sS -w '\\n%{http_code}' " .. q(base .. "/image?prompt=x"))
    assert(ok, out)
    assert.matches("omixa: api error 402 insufficient_balance", out)
    assert.matches("\n502$", out)
  end)

  it("never blocks the worker: 8 requests at a 1-second service finish together", function()
    local faults = {}
    for i = 1, N do faults[i] = { delay = DELAY } end
    srv:faults(faults)
    local words = { "curl -sS --parallel --parallel-immediate --parallel-max", tostring(N),
                    "-w '%{http_code} %{content_type}\\n'" }
    for i = 1, N do
      words[#words + 1] = "-o " .. q(dir .. "/img" .. i)
      words[#words + 1] = q(base .. "/image?prompt=fox%20" .. i)
    end
    local now = require("omixa.core").now
    local t0 = now()
    local ok, _, out, err = helpers.run(table.concat(words, " "))
    local wall = now() - t0
    print(("\n  openresty: %d requests at a %g s service took %.2f s in all"):format(N, DELAY, wall))
    assert(ok, out .. err)
    local codes = 0
    for line in out:gmatch("[^\n]+") do
      assert.equal("200 image/png", line)
      codes = codes + 1
    end
    assert.equal(N, codes)
    for i = 1, N do
      assert.equal("image/png", (omixa.sniff(read(dir .. "/img" .. i) or "") or {}).mime, "image " .. i)
    end
    assert.equal(N, #srv:requests())
    assert.truthy(wall >= DELAY, "faster than the delay: " .. wall)
    assert.truthy(wall < 2.5, ("%d requests took %.2f s: the worker blocked"):format(N, wall))
  end)

  -- A command run with luv, its output read as it comes. c.out: all of
  -- stdout; c.code, c.t: its exit code and when it exited; on_data(c, data)
  -- for each piece.
  local function spawn(args, on_data)
    local uv = require "luv"
    local now = require("omixa.core").now
    local c = { out = "" }
    local pipe = uv.new_pipe(false)
    local proc
    proc = assert(uv.spawn(args[1], { args = { (table.unpack or unpack)(args, 2) }, stdio = { nil, pipe, nil } }, function(code)
      c.code, c.t = code, now()
      proc:close()
    end))
    pipe:read_start(function(err, data)
      assert(not err, err)
      if not data then
        c.eof = true
        pipe:close()
        return
      end
      c.out = c.out .. data
      if on_data then on_data(c, data) end
    end)
    function c.ended() return c.code ~= nil and c.eof end
    return c
  end

  -- Turn the loop until COND holds (or SECONDS pass).
  local function run_until(cond, seconds)
    local uv = require "luv"
    local now = require("omixa.core").now
    local t0 = now()
    while not cond() and now() - t0 < seconds do uv.run("once") end
  end

  -- GET /image/stream?QUERY with curl -N (nothing buffered): c.events, each
  -- { name =, data = the decoded JSON, t = when its last byte got here }.
  local function sse_get(query)
    local cjson = require "cjson"
    local now = require("omixa.core").now
    local buf = ""
    local c
    c = spawn({ "curl", "-sSN", "--max-time", "60", base .. "/image/stream?" .. query }, function(_, data)
      buf = buf .. data
      while true do
        local a, b = buf:find("\n\n", 1, true)
        if not a then break end
        local block = buf:sub(1, a - 1)
        buf = buf:sub(b + 1)
        local name = block:match("^event: ([^\n]*)")
        local json = block:match("\ndata: ([^\n]*)") or block:match("^data: ([^\n]*)")
        if name or json then
          c.events[#c.events + 1] = { name = name, data = json and cjson.decode(json), t = now() }
        end
      end
    end)
    c.events = {}
    function c.names()
      local names = {}
      for i, e in ipairs(c.events) do names[i] = e.name end
      return names
    end
    return c
  end

  it("/image/stream relays partial images as they come, then the image byte for byte", function()
    -- what the stand-in makes for this request, asked by omixa itself
    local direct = omixa.new{ base_url = srv.url, max_retries = 0 }
    srv:faults{ { partials = 2 } }
    local want_partials = {}
    local want = assert(direct:generate({ prompt = "a koi pond", size = "0.5K" },
      { on_partial = function(bytes, index) want_partials[index] = bytes end }))
    direct:close()
    assert.equal(2, #want_partials)
    srv:reset()

    -- heartbeat, 0.5 s, partial 1, 0.5 s, partial 2, 0.5 s, completed, 0.5 s,
    -- [DONE]: the relay sends the image once omixa has the whole result
    srv:faults{ { partials = 2, interval = 0.5 } }
    local c = sse_get("prompt=a%20koi%20pond&size=0.5K")
    run_until(c.ended, 30)
    assert.equal(0, c.code, c.out:sub(1, 300))
    assert.same({ "partial", "partial", "image", "done" }, c.names())
    for i = 1, 2 do
      local e = c.events[i].data
      assert.equal(i, e.index)
      assert.equal("image/png", e.mime)
      assert.equal(#want_partials[i], e.bytes)
      assert.is_true(omixa.b64decode(e.b64) == want_partials[i], "partial " .. i .. " differs")
    end
    local img = c.events[3].data
    assert.equal(1, img.index)
    assert.equal("image/png", img.mime)
    assert.equal(512, img.width)
    assert.equal(#want[1], img.bytes)
    assert.is_true(omixa.b64decode(img.b64) == want[1], "the image differs from the stand-in's")
    local done = c.events[4].data
    assert.equal(1, done.images)
    assert.equal(2, done.partials)
    assert.equal("0.040000", done.billed_amount)
    assert.is_string(done.request_id)
    -- relayed as they came: buffered, they would all arrive at once
    local gap = c.events[3].t - c.events[1].t
    print(("\n  openresty stream: the first partial came %.2f s before the image (1.5 s apart at the stand-in)")
      :format(gap))
    assert.truthy(gap >= 0.5, ("the first partial came only %.2f s before the image: held back"):format(gap))
    -- one request, asking the service for a stream
    local reqs = srv:requests()
    assert.equal(1, #reqs)
    assert.equal("text/event-stream", reqs[1].headers["accept"])
    assert.matches(',"stream":true}$', reqs[1].body)
  end)

  it("/image/stream keeps the worker free: an image request is answered while a stream is slow", function()
    -- partial 1, then 2 s, partial 2, 2 s, image; the next request has no fault
    local INTERVAL = 2
    srv:faults{ { partials = 2, interval = INTERVAL } }
    local c = sse_get("prompt=slow&size=0.5K")
    run_until(function() return #c.events >= 1 or c.ended() end, 30)
    assert.equal("partial", (c.events[1] or {}).name, c.out:sub(1, 300))
    local other = spawn{ "curl", "-sS", "--max-time", "30", "-o", dir .. "/meanwhile", "-w",
                         "%{http_code} %{content_type} %{time_total}", base .. "/image?prompt=meanwhile&size=0.5K" }
    run_until(function() return other.ended() and c.ended() end, 30)
    local status, took = other.out:match("^(%d+ %S+) ([%d.]+)$")
    assert.equal("200 image/png", status, other.out)
    assert.equal("image/png", (omixa.sniff(read(dir .. "/meanwhile") or "") or {}).mime)
    assert.same({ "partial", "partial", "image", "done" }, c.names())
    print(("\n  openresty stream: an image request during the stream took %.2f s"):format(tonumber(took)))
    -- a few hundredths when the worker is free; a worker held by the
    -- stream would answer once the stream ends, 4 s after it began
    assert.truthy(tonumber(took) < INTERVAL * 0.75, ("the image request took %s s: the worker waited for the stream")
      :format(took))
    assert.truthy(other.t < c.events[3].t, "the image request ended after the stream's image")
  end)

  it("/image/stream sends an error event with omixa's fields when the service's stream fails", function()
    srv:faults{ { partials = 1, stream_error = true } }
    local c = sse_get("prompt=x&size=0.5K")
    run_until(c.ended, 30)
    assert.same({ "partial", "error" }, c.names())
    local e = c.events[2].data
    assert.equal("api", e.kind)
    assert.equal(200, e.status)
    assert.equal("stream_error", e.code)
    assert.equal("The provider failed while generating.", e.message)
    assert.is_false(e.retryable)
    assert.is_false(e.maybe_billed)
  end)

  it("/image/stream sends an error event for an error status (a Content-Length answer)", function()
    srv:faults{ { status = 429, retry_after = "3", request_id = "req-429" } }
    local c = sse_get("prompt=x")
    run_until(c.ended, 30)
    assert.same({ "error" }, c.names())
    local e = c.events[1].data
    assert.equal("api", e.kind)
    assert.equal(429, e.status)
    assert.equal(3, e.retry_after)
    assert.equal("req-429", e.request_id)
    assert.is_true(e.retryable)
    assert.is_false(e.maybe_billed)
  end)

  it("/image/stream never takes a stream that ends early for an image", function()
    srv:faults{ { partials = 1, stream_end_early = true } }
    local c = sse_get("prompt=x&size=0.5K")
    run_until(c.ended, 30)
    assert.same({ "partial", "error" }, c.names())
    assert.equal("protocol", c.events[2].data.kind)
    assert.is_true(c.events[2].data.maybe_billed)
  end)

  it("/image/stream refuses a bad request with 400 before any event, sending nothing", function()
    local ok, _, out = helpers.run("curl -sS -w '\\n%{http_code}' "
      .. q(base .. "/image/stream?prompt=x&model=imagen-4.0-generate-001"))
    assert(ok, out)
    assert.matches("does not stream", out)
    assert.matches("\n400$", out)
    assert.same({}, srv:requests())
  end)

  -- Url-only answers: client:parse gets the images through omixa_fetch's
  -- cosocket (its 4th argument), never through omixa's blocking libcurl.
  it("url-only answers: /image reads the images over a cosocket, byte for byte", function()
    srv:faults{ { url_only = true } }
    local ok, _, out = helpers.run("curl -sS -D - -o " .. q(dir .. "/byurl") .. " "
      .. q(base .. "/image?prompt=by%20url&size=0.5K"))
    assert(ok, out)
    assert.matches("^HTTP/1%.1 200", out)
    local fetches = srv:fetches()
    assert.equal(1, #fetches)
    assert.is_nil(fetches[1].headers["user-agent"]) -- omixa_fetch's GET, not omixa's libcurl
    local served = select(3, helpers.run("curl -sS " .. q(srv.origin .. fetches[1].uri)))
    assert.equal(#served, #read(dir .. "/byurl"))
    assert.is_true(read(dir .. "/byurl") == served, "not the image the stand-in serves at its url")
    assert.equal(512, omixa.sniff(served).width)
  end)

  it("url-only answers: the downloads do not block the worker", function()
    local hole = require("blackhole").open() -- connects there never complete
    srv:faults{ { url_only = true, url_base = "http://127.0.0.1:" .. hole.port } }
    local now = require("omixa.core").now
    local t0 = now()
    -- A: its image url never connects (omixa_fetch's connect timeout, 10 s);
    -- B: a plain request, sent 0.3 s later, that the worker serves at once.
    local ok, _, out, err = helpers.run("curl -sS -o /dev/null -w 'A %{http_code} %{time_total}\\n' --max-time 30 "
      .. q(base .. "/image?prompt=url%20only") .. " & sleep 0.3; curl -sS -o /dev/null"
      .. " -w 'B %{http_code} %{time_total}\\n' --max-time 30 " .. q(base .. "/image?prompt=plain") .. "; wait")
    hole:close()
    assert(ok, out .. err)
    local b = tonumber(out:match("B 200 ([%d.]+)"))
    local a = tonumber(out:match("A 502 ([%d.]+)"))
    print(("\n  openresty, url-only answer: %s (%.2f s in all)"):format(out:gsub("\n", "; "), now() - t0))
    assert.truthy(a, "A: the image that never came is a 502: " .. out)
    assert.truthy(b and b < 2, "B waited for A's download: " .. out)
    assert.truthy(a > b + 1, "A ended before B: it never waited for its image: " .. out)
  end)

  it("url-only answers: /image/stream relays the images of a whole answer, read over a cosocket", function()
    -- a url-only answer of the stand-in, its images stored there, sent back
    -- whole (not as a stream) to the relay's streaming request
    srv:faults{ { url_only = true, revised_prompt = "a better koi" } }
    local direct = omixa.new{ base_url = srv.url, max_retries = 0 }
    local req = assert(direct:prepare{ prompt = "a koi pond", n = 2, size = "0.5K" })
    direct:close()
    write(dir .. "/req.json", req.body)
    local ok, _, answer = helpers.run("curl -sS -X POST -H 'Content-Type: application/json' --data-binary @"
      .. q(dir .. "/req.json") .. " " .. q(req.url))
    assert(ok, answer)
    local want = {}
    for url in answer:gmatch('"url":"([^"]+)"') do
      want[#want + 1] = select(3, helpers.run("curl -sS " .. q((url:gsub("\\/", "/")))))
    end
    assert.equal(2, #want)
    srv:faults{ { status = 200, body = answer } }
    local c = sse_get("prompt=a%20koi%20pond&size=0.5K")
    run_until(c.ended, 30)
    assert.same({ "image", "image", "done" }, c.names(), c.out:sub(1, 300))
    for i = 1, 2 do
      local e = c.events[i].data
      assert.equal(i, e.index)
      assert.equal("image/png", e.mime)
      assert.equal("a better koi", e.revised_prompt)
      assert.is_true(omixa.b64decode(e.b64) == want[i], "image " .. i .. " differs from the stand-in's")
    end
    assert.equal(2, c.events[3].data.images)
    assert.equal("0.080000", c.events[3].data.billed_amount)
    local fetches = srv:fetches()
    assert.equal(4, #fetches) -- two by this spec's curl, two by the relay
    for i = 3, 4 do
      assert.is_nil(fetches[i].headers["user-agent"], "the relay's GET " .. i .. " came from omixa's libcurl")
    end
  end)
end)

describe("examples/openresty/omixa_http1, the relay's response reader (and omixa_fetch's)", function()
  local http1, saved_path
  setup(function()
    saved_path = package.path
    package.path = root .. "/examples/openresty/?.lua;" .. package.path
    http1 = require "omixa_http1"
  end)
  teardown(function() package.path = saved_path end)

  -- TEXT fed in pieces of N bytes (then the connection closed when CLOSED):
  -- the reader, the body it gave, and eof's answer.
  local function read_all(text, n, closed)
    local r = http1.response()
    local body = {}
    for i = 1, #text, n do
      local pieces, err = r:feed(text:sub(i, i + n - 1))
      if not pieces then return nil, err end
      for _, p in ipairs(pieces) do body[#body + 1] = p end
    end
    local ok, err
    if closed then ok, err = r:eof() end
    return r, table.concat(body), ok, err
  end

  local CHUNKED = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
    .. "7\r\nevent: \r\n17;ext=1\r\npartial\ndata: {\"a\":1}\n\n\r\n0\r\nX-Trailer: t\r\n\r\n"

  it("decodes a chunked body, however the bytes are cut", function()
    for n = 1, #CHUNKED do
      local r, body = read_all(CHUNKED, n)
      assert.is_table(r, body)
      assert.is_true(r:done(), "cut every " .. n)
      assert.equal(200, r.status)
      assert.equal("text/event-stream", r.headers["content-type"])
      assert.equal("event: partial\ndata: {\"a\":1}\n\n", body, "cut every " .. n)
    end
  end)

  it("reads Content-Length bytes, and a body that runs until the connection closes", function()
    local r, body = read_all("HTTP/1.1 429 Too Many\r\nContent-Length: 5\r\nRetry-After: 3\r\n\r\nhello, more", 3)
    assert.is_true(r:done())
    assert.equal(429, r.status)
    assert.equal("3", r.headers["retry-after"])
    assert.equal("hello", body)
    local ok
    r, body, ok = read_all("HTTP/1.0 200 OK\nContent-Type: text/event-stream\n\ndata: x\n\n", 4, true)
    assert.is_true(ok)
    assert.is_true(r:done())
    assert.equal("data: x\n\n", body)
  end)

  it("skips an interim answer, joins repeated headers, and knows bodiless statuses", function()
    local r, body = read_all("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\nVia: a\r\nvia: b\r\n\r\n", 7)
    assert.equal(204, r.status)
    assert.equal("a, b", r.headers["via"])
    assert.is_true(r:done())
    assert.equal("", body)
  end)

  it("omixa_fetch connects where a url says, whatever user info pretends", function()
    local split = require("omixa_fetch").split_url
    assert.same({ "http", "127.0.0.1", 8080, "/_omixa/images/a?x=1", "127.0.0.1:8080" },
      { split("http://127.0.0.1:8080/_omixa/images/a?x=1#frag") })
    assert.same({ "https", "::1", 443, "/", "[::1]" }, { split("HTTPS://[::1]") })
    assert.same({ "http", "localhost", 9, "/?q", "localhost:9" }, { split("http://127.0.0.1:1@localhost:9?q") })
    assert.is_nil(split("ftp://127.0.0.1/x"))
    assert.is_nil(split("file:///etc/passwd"))
  end)

  it("says where a response was cut, and refuses what is not HTTP/1.x", function()
    local r, _, ok, err = read_all(CHUNKED:sub(1, -30), 5, true)
    assert.is_false(r:done())
    assert.is_nil(ok)
    assert.matches("closed in the middle of a chunk", err)
    _, _, ok, err = read_all("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc", 100, true)
    assert.is_nil(ok)
    assert.matches("Content%-Length", err)
    local none
    none, err = read_all("SSH-2.0-OpenSSH\r\n\r\n", 100)
    assert.is_nil(none)
    assert.matches("not an HTTP/1%.x status line", err)
    none, err = read_all("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 100)
    assert.is_nil(none)
    assert.matches("bad chunk size", err)
    none, err = read_all("HTTP/1.1 200 OK\r\nContent-Length: 1, 2\r\n\r\n", 100)
    assert.is_nil(none)
    assert.matches("bad Content%-Length", err)
  end)
end)
