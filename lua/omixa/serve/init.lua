-- omixa.serve: the launcher of `omixa serve`, the local stand-in service:
-- starting the server. It picks the port, makes the TLS certificates, writes
-- an nginx configuration into a state directory, starts Debian's nginx with
-- the Lua module (one process), waits until it accepts connections, prints
-- the base URL, and stops nginx again. Runs on Lua 5.1-5.4 and LuaJIT; uses
-- luv for port picking, spawning, signals and probing. What nginx runs is
-- the request handler (handler.lua: the service's protocol), the fault
-- injection (faults.lua) and the control API for tests (control.lua).
--
--   require("omixa.serve").main(argv) -> exit code   (argv: the words after `serve`)
--
-- Output on stdout once the server accepts connections, flushed:
--   http://127.0.0.1:40123/api/v1
--   ca: /abs/dir/ca.pem                  (only with --tls)
-- Errors: one line on stderr starting "omixa serve: ", exit code 1 (2 for usage).

local M = {}

local USAGE = [[
usage: omixa serve [--port N] [--host 127.0.0.1] [--tls] [--dir DIR] [--daemon]
                   [--key-file FILE] [--signing-secret-file FILE] [--watch-pid PID]
       omixa serve --stop DIR

Runs the local stand-in of the Omixa image service on loopback and prints
its base URL (then "ca: PATH" with --tls). Foreground: runs until SIGINT or
SIGTERM. --daemon: leaves nginx running and exits; state in DIR (DIR/url,
DIR/pid); `omixa serve --stop DIR` stops it.

  --port N        port to listen on (default 8787; 0 picks a free one)
  --host H        127.0.0.1 (default), ::1 or localhost
  --tls           HTTPS with a fresh CA (DIR/ca.pem) and a certificate for
                  127.0.0.1, ::1 and localhost
  --dir DIR       where the nginx configuration, logs and state go
                  (default: a new temporary directory, removed at the end)
  --daemon        start in the background and exit 0
  --key-file F    require "Authorization: Bearer <key>" with the key in F;
                  the environment variable OMIXA_SERVE_KEY does the same
  --signing-secret-file F
                  also require X-Omixa-Timestamp and X-Omixa-Signature (HMAC
                  with the secret in F); OMIXA_SERVE_SIGNING_SECRET does the same
  --watch-pid P   stop by itself once process P is gone (for test runners)
  --stop DIR      stop the stand-in whose state is in DIR

Environment: OMIXA_SERVE_KEY, OMIXA_SERVE_SIGNING_SECRET, OMIXA_NGINX (nginx binary),
OMIXA_NGINX_MODULES (directory of ndk_http_module.so and ngx_http_lua_module.so).
Tests drive faults through the control API under /_omixa/ (see the module
omixa.serve.control; the faults are in omixa.serve.faults).
]]

local DEFAULT_PORT = 8787
local OWNED_MARK = ".omixa-serve-tmp" -- in a DIR the launcher created itself

local uv -- luv, loaded by main

local function say_error(fmt, ...)
  io.stderr:write("omixa serve: ", string.format(fmt, ...), "\n")
  io.stderr:flush()
end

local function now_ms()
  return uv.hrtime() / 1e6
end

local function sleep_ms(ms)
  uv.sleep(ms)
  uv.run("nowait")
end

-- Files ------------------------------------------------------------------------

local function exists(path)
  return uv.fs_stat(path) ~= nil
end

local read_file = require("omixa.serve.files").read

local function write_file(path, data, mode)
  local fd, err = uv.fs_open(path, "w", mode or 420) -- 0644
  if not fd then return nil, err end
  local ok, werr = uv.fs_write(fd, data, 0)
  uv.fs_close(fd)
  if not ok then return nil, werr end
  if mode then uv.fs_chmod(path, mode) end
  return true
end

local function remove_tree(path)
  local st = uv.fs_lstat(path)
  if not st then return end
  if st.type == "directory" then
    local req = uv.fs_scandir(path)
    if req then
      while true do
        local name = uv.fs_scandir_next(req)
        if not name then break end
        remove_tree(path .. "/" .. name)
      end
    end
    uv.fs_rmdir(path)
  else
    uv.fs_unlink(path)
  end
end

local function absolute(path)
  if path:sub(1, 1) == "/" then return path end
  return uv.cwd() .. "/" .. path:gsub("^%./", "")
end

local function shell_quote(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end

-- os.execute's result differs between 5.1/LuaJIT (a number) and 5.2+.
local function execute(cmd)
  local a, _, c = os.execute(cmd)
  if type(a) == "number" then return a == 0 end
  return a == true and (c == nil or c == 0)
end

local function executable(path)
  return path and uv.fs_access(path, "X") == true
end

local function which(name)
  for dir in (os.getenv("PATH") or ""):gmatch("[^:]+") do
    local p = dir .. "/" .. name
    if executable(p) then return p end
  end
end

-- Where this file lives: the Lua tree that nginx must load the handler from.
local function lua_root()
  local src = debug.getinfo(1, "S").source
  src = src:sub(1, 1) == "@" and src:sub(2) or src
  local root = src:match("^(.*)/omixa/serve/init%.lua$")
  if not root then
    -- loaded some other way: find it on package.path
    for tmpl in package.path:gmatch("[^;]+") do
      local p = tmpl:gsub("%?", "omixa/serve/init")
      if exists(p) then root = p:match("^(.*)/omixa/serve/init%.lua$"); break end
    end
  end
  if root == "" then root = "/" end
  return absolute(root or ".")
end

-- Directories holding cjson.so built for Lua 5.1 (the ABI of nginx's LuaJIT).
local function lua51_cpath()
  local dirs, seen = {}, {}
  local function add(d)
    if not seen[d] and exists(d .. "/cjson.so") then seen[d] = true; dirs[#dirs + 1] = d .. "/?.so" end
  end
  local req = uv.fs_scandir("/usr/lib")
  while req do
    local name, kind = uv.fs_scandir_next(req)
    if not name then break end
    if kind == "directory" and name:find("-linux-", 1, true) then add("/usr/lib/" .. name .. "/lua/5.1") end
  end
  add("/usr/local/lib/lua/5.1")
  add("/usr/lib/lua/5.1")
  return table.concat(dirs, ";")
end

-- Arguments ----------------------------------------------------------------------

local function parse(argv)
  local o = { port = DEFAULT_PORT, host = "127.0.0.1" }
  local i = 1
  local function value(name)
    local v = argv[i + 1]
    if v == nil then return nil, "option " .. name .. " needs a value" end
    i = i + 1
    return v
  end
  while i <= #argv do
    local a = argv[i]
    local name, inline = a:match("^(%-%-[%w-]+)=(.*)$")
    if name then a = name; table.insert(argv, i + 1, inline) end
    local v, err
    if a == "--port" or a == "-p" then
      v, err = value(a)
      if not v then return nil, err end
      o.port = tonumber(v)
      if not o.port or o.port ~= math.floor(o.port) or o.port < 0 or o.port > 65535 then
        return nil, "--port must be an integer from 0 to 65535 (got " .. v .. ")"
      end
    elseif a == "--host" then
      v, err = value(a)
      if not v then return nil, err end
      o.host = v
    elseif a == "--dir" then
      v, err = value(a)
      if not v then return nil, err end
      o.dir = v
    elseif a == "--key-file" then
      v, err = value(a)
      if not v then return nil, err end
      o.key_file = v
    elseif a == "--signing-secret-file" then
      v, err = value(a)
      if not v then return nil, err end
      o.secret_file = v
    elseif a == "--watch-pid" then
      v, err = value(a)
      if not v then return nil, err end
      o.watch_pid = tonumber(v)
      if not o.watch_pid or o.watch_pid < 1 or o.watch_pid ~= math.floor(o.watch_pid) then
        return nil, "--watch-pid must be a process id (got " .. v .. ")"
      end
    elseif a == "--stop" then
      v, err = value(a)
      if not v then return nil, err end
      o.stop = v
    elseif a == "--tls" then
      o.tls = true
    elseif a == "--daemon" or a == "-d" then
      o.daemon = true
    elseif a == "--help" or a == "-h" then
      o.help = true
    else
      return nil, "unknown argument '" .. a .. "' (see omixa serve --help)"
    end
    i = i + 1
  end
  if o.host ~= "127.0.0.1" and o.host ~= "::1" and o.host ~= "localhost"
      and not o.host:match("^127%.%d+%.%d+%.%d+$") then
    return nil, "--host must be a loopback address: 127.0.0.1, ::1 or localhost (got " .. o.host .. ")"
  end
  return o
end

-- The address to probe and pick ports on for HOST.
local function probe_ip(host)
  if host == "localhost" then return "127.0.0.1" end
  return host
end

local function url_host(host)
  return host:find(":", 1, true) and ("[" .. host .. "]") or host
end

-- Network ----------------------------------------------------------------------

-- Bind and listen on ip:port to learn whether it is free (port 0: a free
-- port chosen by the kernel). Returns the port or nil, error name.
local function try_bind(ip, port)
  local t = uv.new_tcp()
  local ok, err, name = t:bind(ip, port)
  local got
  if ok then
    ok, err, name = t:listen(1, function() end)
    if ok then got = t:getsockname().port end
  end
  t:close()
  uv.run("nowait")
  if got then return got end
  return nil, name or err
end

-- True once something accepts TCP connections on ip:port.
local function probe(ip, port)
  local t = uv.new_tcp()
  local result
  local ok = pcall(t.connect, t, ip, port, function(err) result = err == nil end)
  if not ok then t:close(); return false end
  local deadline = now_ms() + 1000
  while result == nil and now_ms() < deadline do uv.run("once") end
  if not t:is_closing() then t:close() end
  uv.run("nowait")
  return result == true
end

-- TLS ----------------------------------------------------------------------------

local function make_certs(dir)
  local openssl = which("openssl")
  if not openssl then return nil, "openssl not found (install the openssl package)" end
  local q = shell_quote
  local log = q(dir .. "/openssl.log")
  local ok = write_file(dir .. "/server.ext", table.concat({
    "subjectAltName=IP:127.0.0.1,IP:::1,DNS:localhost",
    "basicConstraints=critical,CA:FALSE",
    "keyUsage=critical,digitalSignature,keyEncipherment",
    "extendedKeyUsage=serverAuth", "" }, "\n"))
  if not ok then return nil, "cannot write in " .. dir end
  local serial = string.format("0x%08x%08x", math.random(0, 0x7fffffff), math.random(0, 0x7fffffff))
  local steps = {
    q(openssl) .. " req -x509 -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes"
      .. " -keyout " .. q(dir .. "/ca.key") .. " -out " .. q(dir .. "/ca.pem") .. " -days 30"
      .. " -subj '/CN=omixa serve test CA' -addext 'basicConstraints=critical,CA:TRUE'"
      .. " -addext 'keyUsage=critical,keyCertSign,cRLSign'",
    q(openssl) .. " req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes"
      .. " -keyout " .. q(dir .. "/server.key") .. " -out " .. q(dir .. "/server.csr")
      .. " -subj '/CN=localhost'",
    q(openssl) .. " x509 -req -in " .. q(dir .. "/server.csr") .. " -CA " .. q(dir .. "/ca.pem")
      .. " -CAkey " .. q(dir .. "/ca.key") .. " -set_serial " .. serial .. " -days 30"
      .. " -extfile " .. q(dir .. "/server.ext") .. " -out " .. q(dir .. "/server.pem"),
  }
  for _, cmd in ipairs(steps) do
    if not execute("umask 077; " .. cmd .. " </dev/null >>" .. log .. " 2>&1") then
      return nil, "openssl failed making the test certificates (see " .. dir .. "/openssl.log)"
    end
  end
  uv.fs_chmod(dir .. "/ca.pem", 420)
  return true
end

-- nginx ----------------------------------------------------------------------------

local function find_nginx()
  local env = os.getenv("OMIXA_NGINX")
  if env and env ~= "" then
    if executable(env) then return env end
    return nil, "OMIXA_NGINX=" .. env .. " is not an executable"
  end
  local p = executable("/usr/sbin/nginx") and "/usr/sbin/nginx" or which("nginx")
  if not p then return nil, "nginx not found (install nginx and libnginx-mod-http-lua)" end
  return p
end

local function find_modules()
  local dirs = { os.getenv("OMIXA_NGINX_MODULES") or "", "/usr/lib/nginx/modules",
                 "/usr/share/nginx/modules", "/usr/local/nginx/modules" }
  for _, d in ipairs(dirs) do
    if d ~= "" and exists(d .. "/ngx_http_lua_module.so") then
      return { ndk = exists(d .. "/ndk_http_module.so") and (d .. "/ndk_http_module.so") or nil,
               lua = d .. "/ngx_http_lua_module.so" }
    end
  end
  return nil, "nginx's Lua module not found (install libnginx-mod-http-lua)"
end

local function nginx_quote(s)
  return '"' .. s:gsub('\\', '\\\\'):gsub('"', '\\"') .. '"'
end

local function lua_long(s)
  local eq = "="
  while s:find("]" .. eq .. "]", 1, true) do eq = eq .. "=" end
  return "[" .. eq .. "[" .. s .. "]" .. eq .. "]"
end

local function nginx_conf(o, port, mods, key_file, secret_file)
  local root = lua_root()
  local listen = (o.host:find(":", 1, true) and ("[" .. o.host .. "]") or o.host) .. ":" .. port
  local lines = {
    "# written by omixa serve; state directory: " .. o.dir,
    "daemon off;",
    "master_process off;",
    "worker_processes 1;",
    "pid pid;",
    "error_log error.log warn;",
  }
  if mods.ndk then lines[#lines + 1] = "load_module " .. nginx_quote(mods.ndk) .. ";" end
  lines[#lines + 1] = "load_module " .. nginx_quote(mods.lua) .. ";"
  local init = string.format(
    "math.randomseed(%d) require(%q).init({ key_file = %s, signing_secret_file = %s,"
      .. " scheme = %q, port = %d, watch_pid = %s })",
    math.random(1, 2 ^ 30), "omixa.serve.handler",
    key_file and lua_long(key_file) or "nil", secret_file and lua_long(secret_file) or "nil",
    o.tls and "https" or "http", port,
    o.watch_pid and tostring(o.watch_pid) or "nil")
  local http = {
    "events { worker_connections 1024; }",
    "http {",
    "  access_log access.log;",
    "  server_tokens off;",
    "  default_type application/octet-stream;",
    "  client_max_body_size 64m;",
    "  client_body_buffer_size 64m;",
    "  client_body_timeout 120s;",
    "  send_timeout 120s;",
    "  keepalive_timeout 75s;",
    "  client_body_temp_path tmp/body;",
    "  proxy_temp_path tmp/proxy;",
    "  fastcgi_temp_path tmp/fastcgi;",
    "  uwsgi_temp_path tmp/uwsgi;",
    "  scgi_temp_path tmp/scgi;",
    "  lua_package_path " .. nginx_quote(root .. "/?.lua;" .. root .. "/?/init.lua;;") .. ";",
    "  lua_package_cpath " .. nginx_quote(lua51_cpath() .. ";;") .. ";",
    "  lua_socket_log_errors off;",
    "  init_by_lua_block { " .. init .. " }",
    "  init_worker_by_lua_block { require(\"omixa.serve.handler\").init_worker() }",
    "  server {",
    "    listen " .. listen .. (o.tls and " ssl" or "") .. ";",
    "    server_name omixa-serve;",
  }
  for _, l in ipairs(http) do lines[#lines + 1] = l end
  if o.tls then
    lines[#lines + 1] = "    ssl_certificate server.pem;"
    lines[#lines + 1] = "    ssl_certificate_key server.key;"
    lines[#lines + 1] = "    ssl_protocols TLSv1.2 TLSv1.3;"
  end
  local tail = {
    "    error_page 413 = @too_large;",
    "    location / { content_by_lua_block { require(\"omixa.serve.handler\").handle() } }",
    "    location @too_large { content_by_lua_block { require(\"omixa.serve.handler\").too_large() } }",
    "  }",
    "}",
    "",
  }
  for _, l in ipairs(tail) do lines[#lines + 1] = l end
  return table.concat(lines, "\n")
end

-- The last [emerg]/[alert] message of nginx's error log, for the one-line error.
local function nginx_complaint(dir)
  local log = read_file(dir .. "/error.log") or ""
  local last
  for line in log:gmatch("[^\n]+") do
    local msg = line:match("%[emerg%] [^:]*: (.*)$") or line:match("%[alert%] [^:]*: (.*)$")
      or line:match("%[crit%] [^:]*: (.*)$")
    if msg then last = msg end
  end
  return last
end

local function read_pid(dir)
  local s = read_file(dir .. "/pid")
  return s and tonumber(s:match("%d+"))
end

-- Start nginx on PORT and wait until it accepts connections.
-- Returns the process (handle, pid, state) or nil, message, retryable.
local function start_nginx(o, nginx, port)
  uv.fs_unlink(o.dir .. "/pid")
  local state = {}
  local handle, pid = uv.spawn(nginx, {
    args = { "-p", o.dir .. "/", "-c", o.dir .. "/nginx.conf", "-e", o.dir .. "/error.log" },
    stdio = { nil, nil, nil },
    detached = o.daemon or false,
  }, function(code, signal)
    state.exited, state.code, state.signal = true, code, signal
  end)
  if not handle then return nil, "cannot run " .. nginx .. ": " .. tostring(pid) end
  local ip = probe_ip(o.host)
  local deadline = now_ms() + 15000
  while true do
    uv.run("nowait")
    if state.exited then
      if not handle:is_closing() then handle:close() end
      uv.run("nowait")
      local msg = nginx_complaint(o.dir) or ("nginx exited with code " .. tostring(state.code))
      return nil, msg, msg:find("in use", 1, true) ~= nil
    end
    if read_pid(o.dir) == pid and probe(ip, port) then
      return { handle = handle, pid = pid, state = state }
    end
    if now_ms() > deadline then
      uv.kill(pid, "sigkill")
      return nil, "nginx did not accept connections within 15 s (see " .. o.dir .. "/error.log)"
    end
    sleep_ms(10)
  end
end

-- The copies of the key and the signing secret the launcher wrote from the
-- environment do not outlive the server.
local function forget_secrets(dir)
  uv.fs_unlink(dir .. "/key")
  uv.fs_unlink(dir .. "/signing_secret")
end

-- --stop DIR ------------------------------------------------------------------------

local function is_nginx(pid)
  local cmd = read_file("/proc/" .. pid .. "/cmdline")
  if cmd == nil then return uv.kill(pid, 0) == 0 end -- no /proc: trust the pid file
  return cmd:find("nginx", 1, true) ~= nil
end

local function alive(pid)
  local ok = uv.kill(pid, 0)
  if not ok then return false end
  local stat = read_file("/proc/" .. pid .. "/stat")
  return not (stat and stat:match("^%d+ %b() Z")) -- a zombie is gone
end

local function stop(dir)
  dir = absolute(dir)
  if not exists(dir) then
    say_error("no such state directory: %s", dir)
    return 1
  end
  local pid = read_pid(dir)
  if pid and alive(pid) and is_nginx(pid) then
    uv.kill(pid, "sigterm")
    local deadline = now_ms() + 5000
    while alive(pid) and now_ms() < deadline do sleep_ms(10) end
    if alive(pid) then
      uv.kill(pid, "sigkill")
      while alive(pid) and now_ms() < deadline + 2000 do sleep_ms(10) end
    end
  elseif not exists(dir .. "/nginx.conf") then
    say_error("%s is not the state directory of omixa serve", dir)
    return 1
  end
  uv.fs_unlink(dir .. "/pid")
  forget_secrets(dir)
  if exists(dir .. "/" .. OWNED_MARK) then remove_tree(dir) end
  return 0
end

-- main --------------------------------------------------------------------------------

local function serve(o)
  local nginx, err = find_nginx()
  if not nginx then say_error("%s", err); return 1 end
  local mods
  mods, err = find_modules()
  if not mods then say_error("%s", err); return 1 end

  local owned = false
  if o.dir then
    o.dir = absolute(o.dir)
    if not exists(o.dir) then
      local ok, merr = uv.fs_mkdir(o.dir, 448) -- 0700
      if not ok then say_error("cannot create %s: %s", o.dir, tostring(merr)); return 1 end
    end
  else
    local tmp = os.getenv("TMPDIR")
    tmp = (tmp and tmp ~= "") and tmp or "/tmp"
    local d, merr = uv.fs_mkdtemp(tmp .. "/omixa-serve-XXXXXX")
    if not d then say_error("cannot create a temporary directory: %s", tostring(merr)); return 1 end
    o.dir, owned = d, true
    write_file(d .. "/" .. OWNED_MARK, "created by omixa serve; removed by omixa serve --stop\n")
  end
  local function cleanup()
    if owned then remove_tree(o.dir) end
  end
  if exists(o.dir .. "/pid") then
    local old = read_pid(o.dir)
    if old and alive(old) and is_nginx(old) then
      say_error("a stand-in is already running with state in %s (pid %d)", o.dir, old)
      return 1
    end
  end
  uv.fs_mkdir(o.dir .. "/tmp", 448)

  -- The key and the signing secret travel in files, never on a command line.
  local function secret_file(given, env, name, what)
    if given then
      local path = absolute(given)
      local k = read_file(path)
      if not k or not k:match("%S") then return nil, "cannot read " .. what .. " from " .. given end
      return path
    end
    local value = os.getenv(env)
    if value and value ~= "" then
      local path = o.dir .. "/" .. name
      local ok, werr = write_file(path, value, 384) -- 0600
      if not ok then return nil, "cannot write " .. path .. ": " .. tostring(werr) end
      return path
    end
    return false
  end
  local key_file, secret
  key_file, err = secret_file(o.key_file, "OMIXA_SERVE_KEY", "key", "a key")
  if key_file == nil then say_error("%s", err); cleanup(); return 1 end
  secret, err = secret_file(o.secret_file, "OMIXA_SERVE_SIGNING_SECRET", "signing_secret", "a signing secret")
  if secret == nil then say_error("%s", err); cleanup(); return 1 end

  if o.tls then
    local ok, terr = make_certs(o.dir)
    if not ok then say_error("%s", terr); cleanup(); return 1 end
  end

  -- In the foreground nginx watches the launcher: killed hard (SIGKILL),
  -- the launcher cannot stop it, so it stops itself.
  if not o.daemon and not o.watch_pid then o.watch_pid = uv.os_getpid() end

  local ip = probe_ip(o.host)
  local proc, port
  local tries = o.port == 0 and 8 or 1
  for _ = 1, tries do
    if o.port == 0 then
      port, err = try_bind(ip, 0)
      if not port then say_error("cannot pick a free port on %s: %s", o.host, tostring(err)); cleanup(); return 1 end
    else
      port = o.port
      local ok, berr = try_bind(ip, port)
      if not ok then
        say_error("cannot listen on %s port %d: %s", o.host, port,
          berr == "EADDRINUSE" and "address already in use" or tostring(berr))
        cleanup(); return 1
      end
    end
    local ok, werr = write_file(o.dir .. "/nginx.conf", nginx_conf(o, port, mods, key_file or nil, secret or nil))
    if not ok then say_error("cannot write %s/nginx.conf: %s", o.dir, tostring(werr)); cleanup(); return 1 end
    local retry
    proc, err, retry = start_nginx(o, nginx, port)
    if proc or not retry then break end
  end
  if not proc then
    say_error("nginx failed to start: %s", tostring(err))
    cleanup()
    return 1
  end

  local url = (o.tls and "https" or "http") .. "://" .. url_host(o.host) .. ":" .. port .. "/api/v1"
  write_file(o.dir .. "/url", url .. "\n")
  io.stdout:write(url, "\n")
  if o.tls then io.stdout:write("ca: ", o.dir, "/ca.pem\n") end
  io.stdout:flush()

  if o.daemon then
    if owned then
      io.stderr:write("omixa serve: running in the background; stop it with: omixa serve --stop ", o.dir, "\n")
    end
    proc.handle:unref()
    return 0
  end

  -- Foreground: until SIGINT/SIGTERM (or nginx dies), then stop nginx.
  local code = 0
  local stopping = false
  local kill_timer
  local signals = {}
  local function close_all()
    for _, s in ipairs(signals) do if not s:is_closing() then s:close() end end
    if kill_timer and not kill_timer:is_closing() then kill_timer:close() end
    if not proc.handle:is_closing() then proc.handle:close() end
  end
  local function on_signal()
    if stopping then return end
    stopping = true
    uv.kill(proc.pid, "sigterm")
    kill_timer = uv.new_timer()
    kill_timer:start(5000, 0, function() uv.kill(proc.pid, "sigkill") end)
  end
  for _, name in ipairs({ "sigint", "sigterm", "sighup" }) do
    local s = uv.new_signal()
    s:start(name, on_signal)
    signals[#signals + 1] = s
  end
  local function on_exit()
    -- exit 0 without our asking: someone stopped it cleanly (--stop DIR,
    -- or the terminal's SIGINT reaching nginx first)
    local st = proc.state
    if not stopping and (st.code ~= 0 or (st.signal or 0) ~= 0) then
      say_error("nginx exited unexpectedly (code %s)%s", tostring(proc.state.code),
        nginx_complaint(o.dir) and (": " .. nginx_complaint(o.dir)) or "")
      code = 1
    end
    close_all()
  end
  if proc.state.exited then
    on_exit()
  else
    -- the spawn callback only records; poll it from a timer
    local t = uv.new_timer()
    signals[#signals + 1] = t
    t:start(20, 20, function()
      if proc.state.exited then on_exit() end
    end)
  end
  uv.run("default")
  uv.fs_unlink(o.dir .. "/pid")
  forget_secrets(o.dir)
  cleanup()
  return code
end

function M.main(argv)
  argv = argv or {}
  local args = {}
  for i = 1, #argv do args[i] = argv[i] end
  local o, err = parse(args)
  if not o then
    say_error("%s", err)
    return 2
  end
  if o.help then
    io.stdout:write(USAGE)
    return 0
  end
  local ok, luv = pcall(require, "luv")
  if not ok then
    say_error("needs the luv module for %s (Debian: lua-luv)", _VERSION)
    return 1
  end
  uv = luv
  math.randomseed(os.time() + math.floor((uv.hrtime() % 1e9) / 1000) + uv.os_getpid())
  if o.stop then return stop(o.stop) end
  return serve(o)
end

M.usage = USAGE

return M
