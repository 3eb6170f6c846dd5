-- examples/openresty in a real nginx (Debian's nginx + libnginx-mod-http-lua,
-- one process): GET /image?prompt=... builds the request with
-- client:prepare, sends it as a subrequest to a proxy_pass location and reads
-- the answer with client:parse, so the worker never blocks: 8 requests
-- against a stand-in that takes 1 s each finish together in about 1 s (a
-- blocked worker would take 8 s or more).
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

local function read(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("*a")
  f:close()
  return s
end

local function write(path, data)
  local f = assert(io.open(path, "wb"))
  f:write(data)
  f:close()
end

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
    os.execute("mkdir -p " .. q(dir .. "/tmp"))
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

  -- Known issue (reported, not fixed here: lua/omixa is not this branch's):
  -- an answer whose items carry only a `url` makes client:parse download
  -- the images itself, with a blocking wait, inside the nginx worker. A
  -- download that is slow to connect then stalls every request of the
  -- worker. Runs (and fails) with OMIXA_SPEC_KNOWN_ISSUES=1.
  it("url-only answers: parse's downloads do not block the worker", function()
    if not os.getenv("OMIXA_SPEC_KNOWN_ISSUES") then
      pending("client:parse downloads url-only images with a blocking wait (OMIXA_SPEC_KNOWN_ISSUES=1 runs it)")
      return
    end
    local hole = require("blackhole").open() -- connects there never complete
    srv:faults{ { url_only = true, url_base = "http://127.0.0.1:" .. hole.port } }
    local now = require("omixa.core").now
    local t0 = now()
    -- A: its image url never connects (the client's connect_timeout, 10 s);
    -- B: a plain request, sent 0.3 s later, that the worker should serve at once.
    local ok, _, out, err = helpers.run("curl -sS -o /dev/null -w 'A %{http_code} %{time_total}\\n' --max-time 30 "
      .. q(base .. "/image?prompt=url%20only") .. " & sleep 0.3; curl -sS -o /dev/null"
      .. " -w 'B %{http_code} %{time_total}\\n' --max-time 30 " .. q(base .. "/image?prompt=plain") .. "; wait")
    hole:close()
    assert(ok, out .. err)
    local b = tonumber(out:match("B 200 ([%d.]+)"))
    print(("\n  openresty, url-only answer: %s (%.2f s in all)"):format(out:gsub("\n", "; "), now() - t0))
    assert.truthy(b and b < 2, "B waited for A's download: " .. out)
  end)
end)

describe("examples/openresty/omixa_http1, the stream relay's response reader", function()
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
