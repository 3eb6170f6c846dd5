-- bench/run.lua — the runner of `make bench` (Lua 5.4 with luv).
--
--   lua5.4 bench/run.lua [--quick] [--rounds N] [--budget SECONDS] [--no-write]
--                        [--profile-only] [--steady-only]
--
-- 1. bench/gen.py writes the responses and request bodies into a temporary
--    directory; Debian's nginx serves them there (one process, keep-alive,
--    sendfile; a few lines of Lua per location only read the request body,
--    C8 waits 500 ms with ngx.sleep, then the file is sent as a static file).
-- 2. Each client (curl, omixa on Lua 5.4 and LuaJIT, the DIY luasocket peer
--    on Lua 5.4 and LuaJIT, Python requests) runs each of its workloads as
--    one process making K requests, and once more making 0 requests, both
--    under /usr/bin/time -f %M. Per-request time = (wall(K) - wall(0)) / K,
--    so interpreter start-up and module loading cancel out; peak RSS added =
--    maxrss(K) - maxrss(0). K is chosen per cell from a calibration run so a
--    K-run lasts about BUDGET seconds (at least one request).
-- 3. Rounds go round-robin over every cell; the figures are medians over the
--    rounds of the per-round values.
-- 4. Prints the table, writes bench/RESULTS.md and bench/results.svg
--    (gnuplot), and counts TCP connections at the server (nginx's
--    $connection in the access log) for 20 sequential requests per client.
-- 5. Where the time goes for omixa (Lua 5.4) on L: `perf record` of a run of
--    PROFILE_K requests, its samples sorted into stages by their call chains
--    (skipped with a note when perf is missing or not allowed). With
--    --profile-only, only this is done (nothing written): the lead's loop.
-- 6. Steady state (issue 18): one process per client and workload making
--    STEADY_N timed calls in a row after a warm-up (omixa: each generate
--    timed alone, with its minor page faults; curl: -w %{time_total} per
--    transfer), reported as p50/p90/max beside the curl floor of the same
--    run; and hundreds of jobs on one client (bench/clients/jobs.lua):
--    job:poll() with JOBS in flight, a luv loop waiting on client:fd(),
--    generate_many of MANY at concurrency MANY, memory per idle job. With
--    --steady-only, only this is done (nothing written).

local uv = require "luv"

local format, rep = string.format, string.rep
local concat, sort = table.concat, table.sort
local huge = math.huge

-- Options -------------------------------------------------------------------------

local opts = { rounds = 9, budget = 1.0, write = true, quick = false, profile_only = false, steady_only = false }
do
  local i = 1
  while i <= #arg do
    local a = arg[i]
    if a == "--quick" then
      opts.quick, opts.rounds, opts.budget = true, 3, 0.2
    elseif a == "--rounds" then
      i = i + 1; opts.rounds = assert(tonumber(arg[i]), "--rounds N")
    elseif a == "--budget" then
      i = i + 1; opts.budget = assert(tonumber(arg[i]), "--budget SECONDS")
    elseif a == "--no-write" then
      opts.write = false
    elseif a == "--profile-only" then
      opts.profile_only, opts.write = true, false
    elseif a == "--steady-only" then
      opts.steady_only, opts.write = true, false
    else
      io.stderr:write("usage: lua5.4 bench/run.lua [--quick] [--rounds N] [--budget S] [--no-write] [--profile-only] [--steady-only]\n")
      os.exit(2)
    end
    i = i + 1
  end
end

local DELAY = 0.5       -- the C8 server delay, seconds
local KMAX = 2000       -- at most this many requests in one K-run
local RUN_TIMEOUT = 300 -- seconds: a client run taking longer is killed
local PROFILE_K = 10    -- requests in the profiled run
local STEADY_N = opts.quick and 30 or 100 -- timed calls per steady-state run
local JOBS, JOBS_DELAY, MANY = 256, 2, 64   -- hundreds of jobs: count, server delay (s), generate_many
local FD_WAIT = opts.quick and 3 or 10      -- seconds of waiting on client:fd() measured

-- Paths and small helpers ---------------------------------------------------------

local function script_dir()
  local src = debug.getinfo(1, "S").source:gsub("^@", "")
  local dir = src:match("^(.*)/[^/]*$") or "."
  if dir:sub(1, 1) ~= "/" then dir = uv.cwd() .. "/" .. dir end
  return (dir:gsub("/%./", "/"):gsub("/%.$", ""))
end

local BENCH = script_dir()
local ROOT = BENCH:match("^(.*)/bench$") or (BENCH .. "/..")

local function say(fmt, ...)
  io.stderr:write(format(fmt, ...), "\n")
  io.stderr:flush()
end

local function read_file(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("a")
  f:close()
  return s
end

local function write_file(path, data)
  local f = assert(io.open(path, "wb"))
  assert(f:write(data))
  assert(f:close())
end

local function shell_quote(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end

-- First line of a command's output (stdout and stderr), or "?".
local function first_line(cmd)
  local p = io.popen(cmd .. " 2>&1")
  if not p then return "?" end
  local s = p:read("a") or ""
  p:close()
  return s:match("^%s*([^\n]*)") or "?"
end

local function median(t)
  if #t == 0 then return nil end
  local c = {}
  for i, v in ipairs(t) do c[i] = v end
  sort(c)
  local n = #c
  if n % 2 == 1 then return c[(n + 1) / 2] end
  return (c[n / 2] + c[n / 2 + 1]) / 2
end

local function minmax(t)
  local lo, hi = huge, -huge
  for _, v in ipairs(t) do
    if v < lo then lo = v end
    if v > hi then hi = v end
  end
  return lo, hi
end

-- Processes -----------------------------------------------------------------------

-- Runs FILE with ARGS and ENV (a list of "K=V"), waits (killing it after
-- RUN_TIMEOUT). Returns { wall = seconds, code =, signal =, out =, err = }.
local function spawn_wait(file, args, env)
  local out_pipe, err_pipe = uv.new_pipe(false), uv.new_pipe(false)
  local out, err = {}, {}
  local res = {}
  local handle, pid
  local timer = uv.new_timer()
  local t0 = uv.hrtime()
  handle, pid = uv.spawn(file, { args = args, env = env, stdio = { nil, out_pipe, err_pipe } },
    function(code, signal)
      res.wall = (uv.hrtime() - t0) / 1e9
      res.code, res.signal = code, signal
      timer:stop()
      timer:close()
      handle:close()
    end)
  if not handle then error("cannot run " .. file .. ": " .. tostring(pid)) end
  timer:start(RUN_TIMEOUT * 1000, 0, function()
    res.timed_out = true
    uv.kill(pid, "sigkill")
  end)
  local function reader(pipe, acc)
    pipe:read_start(function(e, data)
      if data then acc[#acc + 1] = data
      else
        if e then acc[#acc + 1] = tostring(e) end
        pipe:close()
      end
    end)
  end
  reader(out_pipe, out)
  reader(err_pipe, err)
  uv.run("default")
  res.out, res.err = concat(out), concat(err)
  return res
end

-- Runs ARGV under /usr/bin/time -f "%R %M": as spawn_wait, plus rss = KB
-- and minflt = minor page faults.
local timefile
local function run(argv, env)
  local args = { "-f", "%R %M", "-o", timefile }
  for _, a in ipairs(argv) do args[#args + 1] = a end
  local res = spawn_wait("/usr/bin/time", args, env)
  local t = read_file(timefile) or ""
  local minflt, rss = t:match("(%d+)%s+(%d+)%s*$")
  res.rss, res.minflt = tonumber(rss), tonumber(minflt)
  return res
end

-- Files served and the server ------------------------------------------------------

local work = assert(uv.fs_mkdtemp("/tmp/omixa-bench-XXXXXX"))
timefile = work .. "/time.out"
local nginx_pid

local function cleanup()
  if nginx_pid then uv.kill(nginx_pid, "sigterm"); nginx_pid = nil end
  os.execute("rm -rf " .. shell_quote(work))
end

local function free_port()
  local tcp = uv.new_tcp()
  assert(tcp:bind("127.0.0.1", 0))
  local port = tcp:getsockname().port
  tcp:close()
  uv.run("nowait")
  return port
end

local function can_connect(port)
  local tcp = uv.new_tcp()
  local ok
  tcp:connect("127.0.0.1", port, function(e) ok = not e; tcp:close() end)
  uv.run("default")
  return ok
end

-- Location name -> served file; "c8" waits DELAY first.
local LOCATIONS = { s = "s.json", m4 = "m4.json", l = "l.json", u = "tiny.json", c8 = "tiny.json", conn = "tiny.json" }

local function nginx_conf(port)
  local lines = {
    "# written by bench/run.lua",
    "daemon off;",
    "master_process off;",
    "worker_processes 1;",
    "pid nginx.pid;",
    "error_log error.log warn;",
    "load_module /usr/lib/nginx/modules/ndk_http_module.so;",
    "load_module /usr/lib/nginx/modules/ngx_http_lua_module.so;",
    "events { worker_connections 1024; }",
    "http {",
    "  log_format bench '$connection $request_uri $status $body_bytes_sent $request_length \"$http_expect\"';",
    "  access_log access.log bench;",
    "  sendfile on; tcp_nopush on; tcp_nodelay on;",
    "  keepalive_timeout 300s; keepalive_requests 1000000;",
    "  client_max_body_size 64m; client_body_buffer_size 64m;",
    "  client_body_temp_path tmp;",
    "  open_file_cache max=64;",
    "  lua_socket_log_errors off;",
    -- Stop by itself if the runner is gone (killed before it could stop us).
    format("  init_worker_by_lua_block { local ffi = require 'ffi'; pcall(ffi.cdef, 'int kill(int, int); int getpid(void);');"
      .. " ngx.timer.every(1, function() if ffi.C.kill(%d, 0) ~= 0 then ffi.C.kill(ffi.C.getpid(), 15) end end) }",
      uv.os_getpid()),
    "  server {",
    format("    listen 127.0.0.1:%d;", port),
    "    location /_files/ { internal; alias " .. work .. "/; default_type application/json; }",
  }
  local names = {}
  for name in pairs(LOCATIONS) do names[#names + 1] = name end
  sort(names)
  for _, name in ipairs(names) do
    lines[#lines + 1] = format("    location ~ ^/[^/]+/%s/images/generations$ { content_by_lua_block {"
      .. " ngx.req.read_body()%s ngx.req.set_method(ngx.HTTP_GET) return ngx.exec('/_files/%s') } }",
      name, name == "c8" and format(" ngx.sleep(%g)", DELAY) or "", LOCATIONS[name])
  end
  -- /<client>/d<s>: the small answer after s seconds (hundreds of jobs).
  lines[#lines + 1] = "    location ~ ^/[^/]+/d(\\d+)/images/generations$ { content_by_lua_block {"
    .. " ngx.req.read_body() ngx.sleep(tonumber(ngx.var[1])) ngx.req.set_method(ngx.HTTP_GET)"
    .. " return ngx.exec('/_files/tiny.json') } }"
  lines[#lines + 1] = "  }"
  lines[#lines + 1] = "}"
  return concat(lines, "\n") .. "\n"
end

local function start_nginx()
  for _ = 1, 5 do
    local port = free_port()
    write_file(work .. "/nginx.conf", nginx_conf(port))
    uv.fs_mkdir(work .. "/tmp", 448)
    local exited
    local handle, pid = uv.spawn("/usr/sbin/nginx", {
      args = { "-p", work .. "/", "-c", work .. "/nginx.conf", "-e", work .. "/error.log" },
      stdio = { nil, nil, 2 },
    }, function() exited = true end)
    if not handle then error("cannot start nginx: " .. tostring(pid)) end
    handle:unref()
    local deadline = uv.hrtime() + 10e9
    while not exited and uv.hrtime() < deadline do
      if can_connect(port) then
        nginx_pid = pid
        return port
      end
      uv.sleep(20)
      uv.run("nowait")
    end
    if not exited then uv.kill(pid, "sigkill") end
  end
  error("nginx did not start: " .. (read_file(work .. "/error.log") or ""))
end

-- Clients -------------------------------------------------------------------------

local BASE_ENV = { "PATH=/usr/bin:/bin", "LANG=C.UTF-8", "HOME=" .. work, "PYTHONDONTWRITEBYTECODE=1" }

local function lua_client(id, label, interp, script, cpath, family)
  local env = { table.unpack(BASE_ENV) }
  env[#env + 1] = format("LUA_PATH=%s/lua/?.lua;%s/lua/?/init.lua;%s/clients/?.lua;;", ROOT, ROOT, BENCH)
  if cpath then env[#env + 1] = "LUA_CPATH=" .. cpath .. ";;" end
  return { id = id, label = label, family = family, interp = interp, env = env,
           argv = { interp, BENCH .. "/clients/" .. script } }
end

local CLIENTS = {
  { id = "curl", label = "curl (floor)", family = "curl", interp = "curl", env = BASE_ENV },
  lua_client("omixa-lua5.4", "omixa lua5.4", "/usr/bin/lua5.4", "omixa.lua", ROOT .. "/build/lua5.4/?.so", "omixa"),
  lua_client("omixa-luajit", "omixa luajit", "/usr/bin/luajit", "omixa.lua", ROOT .. "/build/luajit/?.so", "omixa"),
  lua_client("diy-lua5.4", "diy lua5.4", "/usr/bin/lua5.4", "diy.lua", nil, "diy"),
  lua_client("diy-luajit", "diy luajit", "/usr/bin/luajit", "diy.lua", nil, "diy"),
  { id = "python", label = "python requests", family = "python", interp = "python", env = BASE_ENV,
    argv = { "/usr/bin/python3", BENCH .. "/clients/peer.py" } },
}
local CLIENT = {}
for _, c in ipairs(CLIENTS) do CLIENT[c.id] = c end

-- The omixa client a peer is compared with: the same interpreter, else Lua 5.4.
local OMIXA_OF = { ["diy-lua5.4"] = "omixa-lua5.4", ["diy-luajit"] = "omixa-luajit", python = "omixa-lua5.4" }

local WORKLOADS = {
  { id = "S", loc = "s", body = "req-1.json", what = "1 image of 1.5 MiB",
    clients = { "curl", "omixa-lua5.4", "omixa-luajit", "diy-lua5.4", "diy-luajit", "python" } },
  { id = "M4", loc = "m4", body = "req-4.json", what = "4 images of 1.5 MiB",
    clients = { "curl", "omixa-lua5.4", "omixa-luajit", "diy-lua5.4", "diy-luajit", "python" } },
  { id = "L", loc = "l", body = "req-1.json", what = "1 image of 20 MiB",
    clients = { "curl", "omixa-lua5.4", "omixa-luajit", "diy-lua5.4", "diy-luajit", "python" } },
  { id = "U", loc = "u", body = "req-u.json", what = "upload: one 8 MiB input image given as a file path",
    clients = { "curl", "omixa-lua5.4", "omixa-luajit", "diy-lua5.4", "diy-luajit", "python" } },
  { id = "C8", loc = "c8", body = "req-1.json", what = "8 requests at concurrency 8, 500 ms server delay (ms per batch of 8)",
    clients = { "curl", "omixa-lua5.4", "omixa-luajit", "python" } },
  { id = "P", loc = "c8", body = "req-1.json", what = "one job:poll() with 8 jobs in flight (ms)",
    clients = { "omixa-lua5.4", "omixa-luajit" } },
}

local manifest = {}
local port

local function base_url(client, loc)
  return format("http://127.0.0.1:%d/%s/%s", port, client.id, loc)
end

-- The curl floor: one process, K requests on one connection, from a config
-- file (C8: --parallel, 8 at a time). K = 0 runs curl on file:///dev/null,
-- which loads and starts curl the same way and sends nothing.
local curl_configs = {}
local function curl_argv(w, k, loc)
  if k == 0 then return { "/usr/bin/curl", "-s", "-o", "/dev/null", "file:///dev/null" } end
  local n = w.id == "C8" and 8 * k or k
  local key = (loc or w.loc) .. ":" .. n
  local path = curl_configs[key]
  if not path then
    path = format("%s/curl-%s-%d.cfg", work, loc or w.loc, n)
    local lines = { "silent", "show-error", "fail",
                    format('data-binary = "@%s/%s"', work, w.body),
                    'header = "Content-Type: application/json"', 'header = "Accept: application/json"' }
    local url = base_url(CLIENT.curl, loc or w.loc) .. "/images/generations"
    for _ = 1, n do
      lines[#lines + 1] = format('url = "%s"', url)
      lines[#lines + 1] = 'output = "/dev/null"'
    end
    write_file(path, concat(lines, "\n") .. "\n")
    curl_configs[key] = path
  end
  if w.id == "C8" then
    return { "/usr/bin/curl", "--parallel", "--parallel-immediate", "--parallel-max", "8", "-K", path }
  end
  return { "/usr/bin/curl", "-K", path }
end

-- The answer file of each location, without ".json": the expected images
-- are DIR/<it>-<i>.png.
local ANSWER = { s = "s", m4 = "m4", l = "l", u = "tiny", c8 = "tiny", conn = "tiny" }

-- Client arguments: BASE WORKLOAD K N BYTES INPUT [VERIFY]. With VERIFY (a
-- path prefix), the client also compares every image byte for byte with
-- VERIFY-<i>.png: done on each cell's first run, which is not timed.
local function argv_of(client, w, k, loc, verify)
  if client.id == "curl" then return curl_argv(w, k, loc) end
  local m = manifest[w.id] or manifest.S
  local argv = { table.unpack(client.argv) }
  for _, a in ipairs({ base_url(client, loc or w.loc), w.id, tostring(k), tostring(m.n), tostring(m.bytes),
                       w.id == "U" and (work .. "/input.png") or "-",
                       verify and (work .. "/" .. ANSWER[loc or w.loc]) or "-" }) do
    argv[#argv + 1] = a
  end
  return argv
end

local function run_cell(client, w, k, loc, verify)
  local res = run(argv_of(client, w, k, loc, verify), client.env)
  if res.code ~= 0 or res.signal ~= 0 or res.timed_out then
    error(format("%s %s (K=%d) failed%s (exit %s): %s%s", client.id, w.id, k,
      res.timed_out and " after a timeout" or "", tostring(res.code), res.err, res.out), 0)
  end
  if res.out:find("n/a", 1, true) then res.na = res.out:match("^%s*(.-)%s*$") end
  return res
end

-- Facts about the machine -----------------------------------------------------------

local function machine()
  local cpuinfo = read_file("/proc/cpuinfo") or ""
  local meminfo = read_file("/proc/meminfo") or ""
  local flags = " " .. (cpuinfo:match("\nflags%s*:%s*([^\n]+)") or "") .. " "
  local function has(f) return flags:find(" " .. f .. " ", 1, true) and "yes" or "no" end
  local m = {
    cpu = format("%s (family %s, model %s; AVX2 %s, AVX-512BW %s)", cpuinfo:match("model name%s*:%s*([^\n]+)") or "?",
      cpuinfo:match("cpu family%s*:%s*(%d+)") or "?", cpuinfo:match("\nmodel%s*:%s*(%d+)") or "?",
      has("avx2"), has("avx512bw")),
    cores = first_line("nproc"),
    mem = format("%.1f GiB", (tonumber(meminfo:match("MemTotal:%s*(%d+)")) or 0) / 1048576),
    kernel = first_line("uname -sr"),
    os = (read_file("/etc/os-release") or ""):match('PRETTY_NAME="([^"]+)"') or "?",
  }
  m.versions = {
    { "Lua", first_line("lua5.4 -v") },
    { "LuaJIT", first_line("luajit -v") },
    { "libcurl", first_line("curl-config --version") },
    { "curl", first_line("curl --version") },
    { "Python", first_line("/usr/bin/python3 --version") },
    { "requests", first_line("/usr/bin/python3 -c 'import requests; print(requests.__version__)'") },
    { "nginx", first_line("/usr/sbin/nginx -v") },
    { "nginx Lua module", first_line("dpkg-query -W -f='${Version}' libnginx-mod-http-lua") },
    { "lua-cjson", first_line("dpkg-query -W -f='${Version}' lua-cjson") },
    { "luasocket", first_line("dpkg-query -W -f='${Version}' lua-socket") },
    { "gcc", first_line("gcc --version") },
    -- the commit, "-dirty" when a tracked file other than this run's outputs differs
    { "omixa", first_line("cd " .. shell_quote(ROOT) .. " && { git rev-parse --short HEAD && "
      .. "git status --porcelain --untracked-files=no -- . ':!bench/RESULTS.md' ':!bench/results.svg' | grep -q . "
      .. "&& echo -dirty; } 2>/dev/null | tr -d '\n' || echo unknown") },
  }
  return m
end

local function loadavg()
  return (read_file("/proc/loadavg") or "?"):match("^(%S+ %S+ %S+)") or "?"
end

-- CPU ticks: busy and total of the machine (/proc/stat), and those of this
-- runner, its waited-for children (every client, through /usr/bin/time)
-- and nginx. What the machine spent beyond ours was other people's work.
local function cpu_ticks()
  local cpu = (read_file("/proc/stat") or ""):match("^cpu%s+([^\n]+)") or ""
  local v = {}
  for n in cpu:gmatch("%d+") do v[#v + 1] = tonumber(n) end
  local total = 0
  for _, x in ipairs(v) do total = total + x end
  local idle = (v[4] or 0) + (v[5] or 0)
  local function proc(pid)
    local st = read_file("/proc/" .. pid .. "/stat") or ""
    local rest = st:match("%) (.*)$") or ""
    local f = {}
    for x in rest:gmatch("%S+") do f[#f + 1] = x end
    -- after the command: state is field 3, utime..cstime are fields 14..17
    local t = 0
    for i = 12, 15 do t = t + (tonumber(f[i]) or 0) end
    return t
  end
  return { busy = total - idle, total = total, ours = proc("self") + (nginx_pid and proc(nginx_pid) or 0) }
end

-- Where the time goes ---------------------------------------------------------------

-- Stages by function name, looked up from the leaf of each sample's call
-- chain towards its root: the first frame named here decides the stage.
local STAGE_OF = {}
local STAGES = {
  { "socket receive (kernel copy)", { "__libc_recv", "recv", "__x64_sys_recvfrom", "tcp_recvmsg" } },
  { "base64 decode", { "b64f_decode_avx2", "b64f_decode_scalar", "omx_b64_decode_fast", "b64_feed_core",
                       "omx_b64_stream_feed", "omx_b64_stream_finish", "omx_b64_decode_json", "omx_b64_decode" } },
  { "JSON scan for the image strings", { "omx_json_scan_feed", "omx_json_scan_finish", "image_body",
                                         "string_body", "number_body", "omx_json_decode_images_ex" } },
  { "image rooms (mmap, first touch)", { "room_grow", "sink_room", "mmap", "__mmap", "madvise" } },
  { "keep the body (on_write)", { "on_write" } },
  { "copy into Lua strings", { "lua_pushlstring", "luaL_pushresult", "luaL_addlstring", "push_scan_result",
                               "luaL_prepbuffsize", "lua_pushstring" } },
  { "free / munmap", { "free", "__libc_free", "__GI___libc_free", "_int_free", "munmap", "__munmap",
                       "__vm_munmap", "do_vmi_align_munmap", "buffer_close", "omx_buf_free", "unmap_room",
                       "room_free" } },
  { "malloc / realloc", { "malloc", "realloc", "__libc_malloc", "__libc_realloc", "_int_malloc", "_int_realloc",
                          "mremap", "__x64_sys_mremap", "omx_buf_reserve" } },
  { "socket send", { "__libc_send", "send", "__x64_sys_sendto", "tcp_sendmsg" } },
}
for _, st in ipairs(STAGES) do
  for _, name in ipairs(st[2]) do STAGE_OF[name] = st[1] end
end
-- Otherwise by the library of the leaf frame.
local function stage_of_dso(dso)
  if dso:find("cjson", 1, true) then return "lua-cjson (the small rest of the JSON)" end
  if dso:find("libcurl", 1, true) then return "libcurl, other" end
  if dso:find("lua5.4", 1, true) or dso:find("luajit", 1, true) then return "Lua interpreter (incl. GC)" end
  if dso:find("omixa/core.so", 1, true) then return "omixa core, other" end
  if dso:find("kernel", 1, true) then return "kernel, other" end
  if dso:find("ld-linux", 1, true) then return "start-up (dynamic loading)" end
  return "other (" .. (dso:match("([^/]+)$") or dso) .. ")"
end

-- perf record of the omixa lua5.4 client on workload W: a table of
-- { stage, samples, faults } and the totals, or nil, reason.
local function profile(wid)
  local perf = "/usr/bin/perf"
  if not uv.fs_access(perf, "X") then
    return nil, "perf is not installed (Debian: linux-perf)"
  end
  local c, w = CLIENT["omixa-lua5.4"], nil
  for _, x in ipairs(WORKLOADS) do if x.id == wid then w = x end end
  local data = work .. "/perf.data"
  local hz = 2000
  local args = { "record", "-q", "-e", "cpu-clock", "-F", tostring(hz), "--call-graph", "dwarf,32768",
                 "-o", data, "--" }
  for _, a in ipairs(argv_of(c, w, PROFILE_K)) do args[#args + 1] = a end
  local rec = spawn_wait(perf, args, c.env)
  if rec.code ~= 0 then
    return nil, "perf record failed: " .. (rec.err:match("[^\n]+") or ("exit " .. tostring(rec.code)))
  end
  local scr = spawn_wait(perf, { "script", "-i", data, "-F", "ip,sym,dso" }, BASE_ENV)
  if scr.code ~= 0 then return nil, "perf script failed" end
  local count, faults, total, total_faults, kernel = {}, {}, 0, 0, 0
  local function finish(frames)
    if #frames == 0 then return end
    local stage, fault, is_kernel = nil, false, false
    for _, f in ipairs(frames) do
      if f.sym == "asm_exc_page_fault" or f.sym == "exc_page_fault" then fault = true end
      if f.dso:find("kernel", 1, true) then is_kernel = true end
      if not stage then stage = STAGE_OF[f.sym] end
    end
    if not stage then -- by the library of the leaf (an inlined frame's is its caller's)
      local dso = frames[1].dso
      for _, f in ipairs(frames) do
        if f.dso ~= "inlined" then dso = f.dso; break end
      end
      stage = stage_of_dso(dso)
    end
    total = total + 1
    count[stage] = (count[stage] or 0) + 1
    if fault then
      total_faults = total_faults + 1
      faults[stage] = (faults[stage] or 0) + 1
    end
    if is_kernel and frames[1].dso:find("kernel", 1, true) then kernel = kernel + 1 end
  end
  local frames = {}
  for line in (scr.out .. "\n\n"):gmatch("([^\n]*)\n") do
    local sym, dso = line:match("^%s+%x+%s+(.-)%s+%(([^()]*)%)%s*$")
    if sym then
      sym = sym:gsub("%+0x%x+$", "")
      frames[#frames + 1] = { sym = sym, dso = dso }
    elseif line:match("^%s*$") then
      finish(frames)
      frames = {}
    end
  end
  if total == 0 then return nil, "perf recorded no samples" end
  local rows = {}
  for stage, n in pairs(count) do rows[#rows + 1] = { stage, n, faults[stage] or 0 } end
  sort(rows, function(a, b) return a[2] > b[2] end)
  return { rows = rows, total = total, faults = total_faults, kernel = kernel, hz = hz, k = PROFILE_K,
           workload = wid, command = "perf record -e cpu-clock -F " .. hz .. " --call-graph dwarf -- "
             .. "lua5.4 bench/clients/omixa.lua .../l L " .. PROFILE_K .. " 1 BYTES -" }
end

local function profile_lines(pr)
  local out = {}
  local ms = 1000 / pr.hz / pr.k
  out[1] = format("| stage | share of CPU samples | CPU ms per request | of which page faults |")
  out[2] = "|---|---:|---:|---:|"
  for _, r in ipairs(pr.rows) do
    out[#out + 1] = format("| %s | %.1f %% | %.1f | %.1f %% |", r[1], 100 * r[2] / pr.total, r[2] * ms,
      100 * r[3] / pr.total)
  end
  out[#out + 1] = format("| all | 100 %% | %.1f | %.1f %% |", pr.total * ms, 100 * pr.faults / pr.total)
  return out
end

local function fmt_ms(v)
  if not v then return "n/a" end
  if v >= 100 then return format("%.0f", v) end
  if v >= 10 then return format("%.1f", v) end
  if v >= 1 then return format("%.2f", v) end
  return format("%.3g", v)
end

local function fmt_ratio(v)
  if not v then return "" end
  if v >= 100 then return format("%.0f×", v) end
  if v >= 10 then return format("%.1f×", v) end
  return format("%.2f×", v)
end

-- Steady state and hundreds of jobs (issue 18) ------------------------------------

-- The p-quantile (nearest rank) of the list T.
local function quantile(t, p)
  local c = {}
  for i, v in ipairs(t) do c[i] = v end
  sort(c)
  return c[math.max(1, math.ceil(#c * p))]
end

local STEADY_CLIENTS = { "curl", "omixa-lua5.4", "omixa-luajit" }

-- One steady-state run of CLIENT on W: { ms = per-call list, faults =
-- minor faults per call (curl: per request on average, (%R of N+1 requests
-- - %R of 0) / (N+1)), rss_kib = peak RSS added }.
local function steady_cell(client, w)
  local res
  if client.id == "curl" then
    local argv = curl_argv(w, STEADY_N + 1)
    argv[#argv + 1] = "-w"
    argv[#argv + 1] = "%{time_total}\n"
    res = run(argv, client.env)
    local zero = run(curl_argv(w, 0), client.env)
    local ms = {}
    for v in res.out:gmatch("[%d.]+") do ms[#ms + 1] = tonumber(v) * 1000 end
    if res.code ~= 0 or #ms ~= STEADY_N + 1 then
      error(format("curl %s steady run failed (exit %s): %s", w.id, tostring(res.code), res.err), 0)
    end
    table.remove(ms, 1) -- the warm-up
    return { ms = ms, mean_faults = ((res.minflt or 0) - (zero.minflt or 0)) / (STEADY_N + 1),
             rss_kib = (res.rss or 0) - (zero.rss or 0) }
  end
  local argv = argv_of(client, w, STEADY_N)
  argv[#argv + 1] = "steady"
  res = run(argv, client.env)
  if res.code ~= 0 then
    error(format("%s %s steady run failed (exit %s): %s%s", client.id, w.id, tostring(res.code), res.err, res.out), 0)
  end
  local ms, faults = {}, {}
  for t, f in res.out:gmatch("call (%S+) (%d+)") do
    ms[#ms + 1], faults[#faults + 1] = tonumber(t), tonumber(f)
  end
  local rss0, hwm = res.out:match("rss (%d+) (%d+)")
  if #ms ~= STEADY_N or not rss0 then error(format("%s %s steady run printed %d calls", client.id, w.id, #ms), 0) end
  return { ms = ms, faults = faults, rss_kib = tonumber(hwm) - tonumber(rss0) }
end

local function steady()
  local out = {}
  for _, w in ipairs(WORKLOADS) do
    if w.id == "S" or w.id == "M4" or w.id == "L" or w.id == "U" then
      out[w.id] = {}
      for _, cid in ipairs(STEADY_CLIENTS) do
        local ok, cell = pcall(steady_cell, CLIENT[cid], w)
        if not ok then say("bench: %s", tostring(cell)); cell = { failed = tostring(cell) } end
        out[w.id][cid] = cell
        if cell.ms then
          say("bench: steady %-3s %-14s p50 %s ms p90 %s ms", w.id, CLIENT[cid].label,
            fmt_ms(quantile(cell.ms, 0.5)), fmt_ms(quantile(cell.ms, 0.9)))
        end
      end
    end
  end
  return out
end

-- bench/clients/jobs.lua on each interpreter: { poll = {med, p99, max, n},
-- idle = {rss, heap}, done = {ok, of}, fdwait = {cpu, wall, wakeups}, many = {wall, ok, of} }.
local function jobs_bench()
  local out = {}
  for _, cid in ipairs({ "omixa-lua5.4", "omixa-luajit" }) do
    local c = CLIENT[cid]
    local argv = { c.interp, BENCH .. "/clients/jobs.lua", format("http://127.0.0.1:%d/%s", port, c.id),
                   tostring(JOBS), tostring(JOBS_DELAY), tostring(FD_WAIT), tostring(MANY) }
    local res = run(argv, c.env)
    local r = { out = res.out }
    local function nums(key)
      local line = res.out:match("\n?" .. key .. " ([^\n]+)")
      if not line then return nil end
      local v = {}
      for x in line:gmatch("%S+") do v[#v + 1] = tonumber(x) end
      return v
    end
    if res.code ~= 0 then
      r.failed = format("exit %s: %s", tostring(res.code), res.err)
      say("bench: jobs %s failed: %s", cid, r.failed)
    end
    r.poll, r.idle, r.done, r.fdwait, r.many = nums("poll"), nums("idle_job"), nums("jobs_done"), nums("fdwait"), nums("many")
    say("bench: jobs %s: %s", c.label, (res.out:gsub("\n", "; ")))
    out[cid] = r
  end
  return out
end

-- Main ------------------------------------------------------------------------------

local function main()
  local started = uv.hrtime()
  local load_before = loadavg()
  local cpu_before = cpu_ticks()
  if opts.profile_only then
    say("bench: profile only; files in %s", work)
  else
    say("bench: %s, %d rounds, about %.1f s per K-run; files in %s",
      opts.quick and "quick" or "full", opts.rounds, opts.budget, work)
  end

  local gen = run({ "/usr/bin/python3", BENCH .. "/gen.py", work }, BASE_ENV)
  if gen.code ~= 0 then error("bench/gen.py failed: " .. gen.err, 0) end
  for line in (read_file(work .. "/manifest") or ""):gmatch("[^\n]+") do
    local name, n, bytes = line:match("^(%S+) (%d+) (%d+)$")
    manifest[name] = { n = tonumber(n), bytes = tonumber(bytes) }
  end

  port = start_nginx()
  say("bench: nginx on 127.0.0.1:%d", port)

  if opts.steady_only then
    return { steady = steady(), jobs = jobs_bench(), steady_only = true }
  end

  if opts.profile_only then
    local pr, why = profile("L")
    if not pr then error(why, 0) end
    print(format("omixa lua5.4 on L, %d requests, %d samples at %d Hz (%.0f %% in the kernel):",
      pr.k, pr.total, pr.hz, 100 * pr.kernel / pr.total))
    for _, l in ipairs(profile_lines(pr)) do print(l) end
    return nil
  end

  -- A cell whose client fails (exit status, wrong images, a timeout) is
  -- reported as failed; the others go on.
  local failures = {}
  local function guarded(cell, f)
    local ok, err = pcall(f)
    if not ok then
      cell.na = "failed"
      failures[#failures + 1] = tostring(err)
      say("bench: %s", tostring(err))
    end
  end

  -- Cells, and their calibration; the first run of each checks every byte.
  local cells = {}
  for _, w in ipairs(WORKLOADS) do
    for _, cid in ipairs(w.clients) do
      local c = CLIENT[cid]
      local cell = { w = w, c = c, walls = {}, rsses = {}, polls = {} }
      guarded(cell, function()
        run_cell(c, w, 1, nil, true) -- checks every byte; then the timed calibration
        local r1 = run_cell(c, w, 1)
        if r1.na then
          cell.na = r1.na
        elseif w.id == "P" then
          cell.k = 1
        else
          -- K grows fourfold until a K-run takes a quarter of the budget,
          -- so that start-up noise cannot dominate the estimate.
          local w0 = math.min(run_cell(c, w, 0).wall, run_cell(c, w, 0).wall)
          local k, t = 1, r1.wall - w0
          while t < opts.budget / 4 and k < KMAX do
            k = math.min(KMAX, k * 4)
            t = run_cell(c, w, k).wall - w0
          end
          cell.k = math.max(1, math.min(KMAX, math.floor(k * opts.budget / math.max(t, 1e-6) + 0.5)))
        end
      end)
      say("bench: calibrated %-3s %-16s %s", w.id, c.label, cell.na or ("K=" .. cell.k))
      cells[#cells + 1] = cell
    end
  end

  -- Rounds, round-robin over all cells; K-run and 0-run alternate in order.
  for r = 1, opts.rounds do
    local t0 = uv.hrtime()
    for _, cell in ipairs(cells) do
      if not cell.na then
        guarded(cell, function()
          if cell.w.id == "P" then
            local res = run_cell(cell.c, cell.w, 1)
            local med, max = res.out:match("poll_ms (%S+) (%S+)")
            if not tonumber(med) then error(format("%s P printed no poll time: %s", cell.c.id, res.out), 0) end
            cell.polls[#cell.polls + 1] = tonumber(med)
            cell.poll_max = math.max(cell.poll_max or 0, tonumber(max) or 0)
          else
            local a, b
            if r % 2 == 1 then
              a = run_cell(cell.c, cell.w, cell.k); b = run_cell(cell.c, cell.w, 0)
            else
              b = run_cell(cell.c, cell.w, 0); a = run_cell(cell.c, cell.w, cell.k)
            end
            cell.walls[#cell.walls + 1] = (a.wall - b.wall) / cell.k
            cell.rsses[#cell.rsses + 1] = (a.rss or 0) - (b.rss or 0)
          end
        end)
      end
    end
    say("bench: round %d/%d done in %.1f s", r, opts.rounds, (uv.hrtime() - t0) / 1e9)
  end

  -- 20 sequential requests on one client: connections seen by nginx.
  local conn = {}
  for _, c in ipairs(CLIENTS) do
    guarded({}, function() run_cell(c, { id = "CONN", loc = "conn", body = "req-1.json" }, 20, "conn", true) end)
  end
  local log = read_file(work .. "/access.log") or ""
  local seen, requests, expects = {}, {}, {}
  for line in log:gmatch("[^\n]+") do
    local cnum, client, loc, status, expect = line:match('^(%d+) /([^/]+)/([^/]+)/images/generations (%d+) %d+ %d+ "([^"]*)"')
    if client then
      local key = client .. "/" .. loc
      requests[key] = (requests[key] or 0) + 1
      seen[key] = seen[key] or {}
      seen[key][cnum] = true
      if expect ~= "-" and expect ~= "" then expects[key] = expect end
      if status ~= "200" then say("bench: warning: nginx answered %s to %s", status, key) end
    end
  end
  for _, c in ipairs(CLIENTS) do
    local key = c.id .. "/conn"
    local n = 0
    for _ in pairs(seen[key] or {}) do n = n + 1 end
    conn[c.id] = { requests = requests[key] or 0, connections = n }
  end

  local pr, why = profile("L")
  if not pr then say("bench: no profile: %s", why) end

  local steady_res, jobs_res = steady(), jobs_bench()

  -- What a Lua client adds to the curl floor on L whatever it does (bench/floor.lua).
  local floor = {}
  for _, id in ipairs({ "omixa-lua5.4", "omixa-luajit" }) do
    local c = CLIENT[id]
    local argv = { c.interp, BENCH .. "/floor.lua", work .. "/l.json", "15" }
    local r = run(argv, c.env)
    local d, s = r.out:match("^(%S+) (%S+)")
    local rs = run({ c.interp, BENCH .. "/floor.lua", tostring(manifest.L.bytes), "40", "strings" }, c.env)
    local strings = rs.code == 0 and tonumber(rs.out:match("^(%S+)"))
    if r.code == 0 and d then
      floor[id] = { decode = tonumber(d), string = tonumber(s), strings_mib = strings }
    else
      say("bench: floor.lua failed for %s: %s", id, r.err)
    end
  end

  local results = { cells = cells, conn = conn, expects = expects, machine = machine(), profile = pr, profile_why = why, failures = failures,
                    floor = floor, steady = steady_res, jobs = jobs_res,
                    load_before = load_before, load_after = loadavg(), cpu_before = cpu_before, cpu_after = cpu_ticks(),
                    seconds = (uv.hrtime() - started) / 1e9 }
  return results
end

-- Report ----------------------------------------------------------------------------

-- Per cell: ms (median), spread, RSS added in MiB, ratios.
local function summarise(res)
  local by = {}
  for _, cell in ipairs(res.cells) do
    by[cell.w.id] = by[cell.w.id] or {}
    by[cell.w.id][cell.c.id] = cell
    if not cell.na then
      if cell.w.id == "P" then
        cell.ms = median(cell.polls)
      else
        cell.ms = median(cell.walls) * 1000
        local lo, hi = minmax(cell.walls)
        cell.lo, cell.hi = lo * 1000, hi * 1000
        cell.rss_mib = median(cell.rsses) / 1024
      end
    end
  end
  for _, cell in ipairs(res.cells) do
    local row = by[cell.w.id]
    local floor_cell = row.curl
    if cell.ms and cell.w.id ~= "P" and floor_cell and floor_cell.ms and floor_cell.ms > 0 then
      cell.vs_floor = cell.ms / floor_cell.ms
    end
    local o = OMIXA_OF[cell.c.id] and row[OMIXA_OF[cell.c.id]]
    if cell.ms and o and o.ms and o.ms > 0 then cell.vs_omixa = cell.ms / o.ms end
  end
  res.by = by
  return by
end

local function table_rows(res)
  local rows = {}
  for _, cell in ipairs(res.cells) do
    local peer = OMIXA_OF[cell.c.id]
    rows[#rows + 1] = {
      cell.w.id, cell.c.label,
      cell.na and cell.na or fmt_ms(cell.ms),
      (cell.rss_mib and format("%.1f", cell.rss_mib)) or "",
      fmt_ratio(cell.vs_floor),
      cell.vs_omixa and (fmt_ratio(cell.vs_omixa) .. " (vs " .. CLIENT[peer].label:gsub("^omixa ", "") .. ")") or "",
      cell.k and tostring(cell.k) or "",
      cell.lo and format("%s–%s", fmt_ms(cell.lo), fmt_ms(cell.hi))
        or (cell.poll_max and format("max %s", fmt_ms(cell.poll_max)) or ""),
    }
  end
  return rows
end

local HEAD = { "workload", "client", "ms", "RSS+ MiB", "÷ floor", "peer ÷ omixa", "K", "range (ms)" }

local function utf8_len(s)
  return utf8.len(s) or #s
end

local function text_table(rows)
  local widths = {}
  for i, h in ipairs(HEAD) do widths[i] = utf8_len(h) end
  for _, r in ipairs(rows) do
    for i, v in ipairs(r) do widths[i] = math.max(widths[i], utf8_len(v)) end
  end
  local out = {}
  local function line(r)
    local cols = {}
    for i, v in ipairs(r) do
      local pad = rep(" ", widths[i] - utf8_len(v))
      cols[i] = (i <= 2 or i == 6 or i == 8) and (v .. pad) or (pad .. v)
    end
    out[#out + 1] = (concat(cols, "  "):gsub("%s+$", ""))
  end
  line(HEAD)
  local prev
  for _, r in ipairs(rows) do
    if prev and prev ~= r[1] then out[#out + 1] = "" end
    prev = r[1]
    line(r)
  end
  return concat(out, "\n")
end

local function md_table(rows)
  local out = { "| " .. concat(HEAD, " | ") .. " |", "|" .. rep("---|", #HEAD) }
  for _, r in ipairs(rows) do out[#out + 1] = "| " .. concat(r, " | ") .. " |" end
  return concat(out, "\n")
end

-- The targets of issue 6, point 2: { text, value, met } lines.
local function targets(res)
  local by, t = res.by, {}
  local function ms(w, c) local cell = by[w] and by[w][c]; return cell and cell.ms end
  local function add(text, value, met) t[#t + 1] = { text, value, met } end
  local function ratio_target(w, limit, label)
    for _, o in ipairs({ "omixa-lua5.4", "omixa-luajit" }) do
      local r = by[w][o] and by[w][o].vs_floor
      add(format("%s: %s ≤ %.1f× %s", w, CLIENT[o].label, limit, label),
        r and format("%s (%s ms vs %s ms)", fmt_ratio(r), fmt_ms(ms(w, o)), fmt_ms(ms(w, "curl"))) or "n/a",
        r ~= nil and r <= limit)
    end
  end
  ratio_target("L", 1.5, "the curl floor")
  ratio_target("S", 2, "the curl floor")
  ratio_target("M4", 2, "the curl floor")
  ratio_target("U", 2, "the curl upload floor")
  local o, d, p = ms("L", "omixa-lua5.4"), ms("L", "diy-lua5.4"), ms("L", "python")
  add("L: omixa lua5.4 ≥ 50× faster than the Lua 5.4 DIY peer",
    (o and d) and format("%s (%s ms vs %s ms)", fmt_ratio(d / o), fmt_ms(d), fmt_ms(o)) or "n/a", (o and d and d / o >= 50) or false)
  add("L: omixa lua5.4 ≥ 5× faster than Python requests",
    (o and p) and format("%s (%s ms vs %s ms)", fmt_ratio(p / o), fmt_ms(p), fmt_ms(o)) or "n/a", (o and p and p / o >= 5) or false)
  local decoded = manifest.L.bytes / 1048576
  for _, oid in ipairs({ "omixa-lua5.4", "omixa-luajit" }) do
    local cell = by.L[oid]
    local mib = cell and cell.rss_mib
    add(format("L: %s peak RSS added ≤ 2× the decoded image (%.1f MiB)", CLIENT[oid].label, 2 * decoded),
      mib and format("%.1f MiB = %s the image", mib, fmt_ratio(mib / decoded)) or "n/a", (mib and mib <= 2 * decoded) or false)
  end
  for _, oid in ipairs({ "omixa-lua5.4", "omixa-luajit" }) do
    local cell = by.C8[oid]
    add(format("C8: %s within 1.3× one server delay (%.0f ms)", CLIENT[oid].label, 1.3 * DELAY * 1000),
      cell.na or format("%s ms = %s the delay", fmt_ms(cell.ms), fmt_ratio(cell.ms / (DELAY * 1000))),
      (not cell.na and cell.ms <= 1.3 * DELAY * 1000) or false)
  end
  for _, oid in ipairs({ "omixa-lua5.4", "omixa-luajit" }) do
    local cell = by.P[oid]
    add(format("P: %s one job:poll() with 8 jobs in flight ≤ 1 ms", CLIENT[oid].label),
      cell.na or format("%s ms (median; max %s ms)", fmt_ms(cell.ms), fmt_ms(cell.poll_max)),
      (not cell.na and cell.ms <= 1) or false)
  end
  for _, oid in ipairs({ "omixa-lua5.4", "omixa-luajit" }) do
    local c = res.conn[oid]
    add(format("20 sequential requests on one %s client use one TCP connection", CLIENT[oid].label),
      format("%d requests, %d connection%s", c.requests, c.connections, c.connections == 1 and "" or "s"),
      c.requests == 20 and c.connections == 1)
  end
  return t
end

local function svg(res, out)
  local by = res.by
  local series = { "omixa-lua5.4", "omixa-luajit", "diy-lua5.4", "diy-luajit", "python" }
  local function v(x) return x and format("%.4g", x) or "?" end
  local lines = { "# time ÷ curl floor: workload " .. concat(series, " ") .. " target" }
  local limits = { S = 2, M4 = 2, L = 1.5, U = 2 }
  for _, w in ipairs({ "S", "M4", "L", "U" }) do
    local row = { w }
    for _, s in ipairs(series) do row[#row + 1] = v(by[w][s] and by[w][s].vs_floor) end
    row[#row + 1] = v(limits[w])
    lines[#lines + 1] = concat(row, " ")
  end
  lines[#lines + 1] = ""
  lines[#lines + 1] = ""
  lines[#lines + 1] = "# peak RSS added ÷ decoded image bytes: workload " .. concat(series, " ") .. " target"
  for _, w in ipairs({ "S", "M4", "L" }) do
    local row = { w }
    local decoded = manifest[w].n * manifest[w].bytes / 1048576
    for _, s in ipairs(series) do
      local mib = by[w][s] and by[w][s].rss_mib
      row[#row + 1] = v(mib and math.max(mib, 0.01) / decoded)
    end
    row[#row + 1] = w == "L" and "2" or "?"
    lines[#lines + 1] = concat(row, " ")
  end
  lines[#lines + 1] = ""
  lines[#lines + 1] = ""
  lines[#lines + 1] = "# C8 batch ÷ server delay: client value"
  local short = { curl = "curl", ["omixa-lua5.4"] = "omixa 5.4", ["omixa-luajit"] = "omixa jit", python = "python" }
  for _, s in ipairs({ "curl", "omixa-lua5.4", "omixa-luajit", "python" }) do
    local cell = by.C8[s]
    local r = cell and cell.ms and cell.ms / (DELAY * 1000)
    lines[#lines + 1] = format('"%s" %s %s "%s"', short[s], v(r), v(r or 0), r and format("%.2f", r) or "n/a")
  end
  local data = work .. "/chart.dat"
  write_file(data, concat(lines, "\n") .. "\n")
  local cmd = format("gnuplot -e %s %s", shell_quote(format("datafile='%s'; outfile='%s'", data, out)),
    shell_quote(BENCH .. "/results.gp"))
  local ok = os.execute(cmd)
  if not ok then say("bench: gnuplot failed; no chart") end
  return ok
end

-- The share of the machine's CPU time that other processes took during the run.
local function others_share(res)
  local a, b = res.cpu_before, res.cpu_after
  local total = b.total - a.total
  if total <= 0 then return "?" end
  local others = (b.busy - a.busy) - (b.ours - a.ours)
  return format("%.0f %%", math.max(0, 100 * others / total))
end

-- The Lua floor on L: the curl floor plus decoding the base64 into memory
-- that is already there and making the image a Lua string (bench/floor.lua),
-- both unavoidable for a Lua program that wants the image as a value.
local function lua_floor_lines(res)
  local out = {}
  local curl = res.by.L and res.by.L.curl and res.by.L.curl.ms
  for _, id in ipairs({ "omixa-lua5.4", "omixa-luajit" }) do
    local f, cell = res.floor and res.floor[id], res.by.L and res.by.L[id]
    if f and curl and cell and cell.ms then
      local lf = curl + f.decode + f.string
      out[#out + 1] = format("- %s: curl floor %s ms + base64 decode %.2f ms + one Lua string %.2f ms = %.1f ms;"
        .. " omixa takes %s ms = %.2f× that floor.", CLIENT[id].label, fmt_ms(curl), f.decode, f.string, lf,
        fmt_ms(cell.ms), cell.ms / lf)
    end
  end
  if #out > 0 then
    out[#out + 1] = ""
    out[#out + 1] = "The floor's string is made where malloc already has pages. In a loop, Lua 5.4's collector"
    out[#out + 1] = "frees the earlier images late, so malloc would map fresh pages for many new 20 MB strings and"
    out[#out + 1] = "the kernel fault them in one 4 KiB page at a time; omixa therefore runs a full collection"
    out[#out + 1] = "before making the string of an answer of one big image on PUC Lua (docs/performance.md), so"
    out[#out + 1] = "the new string gets the dead images' memory. LuaJIT's allocator keeps such blocks by itself."
  end
  local mem = {}
  for _, id in ipairs({ "omixa-lua5.4", "omixa-luajit" }) do
    local f, cell = res.floor and res.floor[id], res.by.L and res.by.L[id]
    if f and f.strings_mib and cell and cell.rss_mib then
      mem[#mem + 1] = format("- %s: %.1f MiB kept by the interpreter alone (40 strings of %d bytes made in a loop"
        .. " from bytes in memory: no transport, no decoding); omixa's peak RSS added on L is %.1f MiB.",
        CLIENT[id].label, f.strings_mib, manifest.L.bytes, cell.rss_mib)
    end
  end
  if #mem > 0 then
    out[#out + 1] = ""
    out[#out + 1] = "Memory: a Lua string can only be made by copying bytes already in memory (`lua_pushlstring`,"
    out[#out + 1] = "and `luaL_Buffer` copies too), so while an image becomes a string it exists twice: the"
    out[#out + 1] = "decoded bytes and the string. 2× the image is thus the floor of any Lua client's peak, before"
    out[#out + 1] = "what the collector keeps of the earlier images (`bench/floor.lua BYTES 40 strings`):"
    out[#out + 1] = ""
    for _, l in ipairs(mem) do out[#out + 1] = l end
  end
  if #out > 0 then
    table.insert(out, 1, "`bench/floor.lua`: the decode of L's 27 MB of base64 with omixa's decoder into memory that is"
      .. " already there (1 MiB pieces), and making one 20 MB Lua string from bytes in memory (medians of 15).")
    table.insert(out, 2, "curl only moves the bytes; these two steps are what a Lua program that wants the image as a value")
    table.insert(out, 3, "cannot skip, whatever its transport:")
    table.insert(out, 4, "")
  end
  return out
end

-- The steady-state table (markdown), and the targets of issue 18 (points 3
-- and 4) as { text, value, met } lines.
local function steady_report(res)
  local rows = { "| workload | client | p50 ms | p90 ms | max ms | p50 ÷ floor p50 | p90 ÷ floor p90 |"
    .. " minor faults / request (median, max) | peak RSS added MiB |",
    "|---|---|---:|---:|---:|---:|---:|---:|---:|" }
  local t = {}
  local function add(text, value, met) t[#t + 1] = { text, value, met } end
  for _, wid in ipairs({ "S", "M4", "L", "U" }) do
    local row = res.steady[wid] or {}
    local floor = row.curl
    local f50 = floor and floor.ms and quantile(floor.ms, 0.5)
    local f90 = floor and floor.ms and quantile(floor.ms, 0.9)
    for _, cid in ipairs(STEADY_CLIENTS) do
      local c = row[cid]
      if c and c.ms then
        local p50, p90 = quantile(c.ms, 0.5), quantile(c.ms, 0.9)
        local _, mx = minmax(c.ms)
        local faults = c.faults and format("%d, %d", quantile(c.faults, 0.5), select(2, minmax(c.faults)))
          or format("%.0f (mean)", c.mean_faults)
        rows[#rows + 1] = format("| %s | %s | %s | %s | %s | %s | %s | %s | %.1f |", wid, CLIENT[cid].label,
          fmt_ms(p50), fmt_ms(p90), fmt_ms(mx), f50 and fmt_ratio(p50 / f50) or "", f90 and fmt_ratio(p90 / f90) or "",
          faults, c.rss_kib / 1024)
        if cid ~= "curl" and f50 then
          add(format("%s: %s p50 ≤ 1.3× and p90 ≤ 1.6× the floor's", wid, CLIENT[cid].label),
            format("p50 %s (%s vs %s ms), p90 %s (%s vs %s ms)", fmt_ratio(p50 / f50), fmt_ms(p50), fmt_ms(f50),
              fmt_ratio(p90 / f90), fmt_ms(p90), fmt_ms(f90)), p50 <= 1.3 * f50 and p90 <= 1.6 * f90)
        end
        if cid ~= "curl" and wid == "L" then
          local decoded = manifest.L.bytes / 1048576
          add(format("L: %s peak RSS added ≤ 1.5× the decoded image (%.1f MiB)", CLIENT[cid].label, 1.5 * decoded),
            format("%.1f MiB = %s the image", c.rss_kib / 1024, fmt_ratio(c.rss_kib / 1024 / decoded)),
            c.rss_kib / 1024 <= 1.5 * decoded)
          local sum = 0
          for _, f in ipairs(c.faults) do sum = sum + f end
          local mean = sum / #c.faults
          add(format("L: %s minor page faults per request ≤ 1,000 after warm-up (mean)", CLIENT[cid].label),
            format("mean %.0f (median %d, p90 %d, max %d)", mean, quantile(c.faults, 0.5), quantile(c.faults, 0.9),
              select(2, minmax(c.faults))), mean <= 1000)
        end
      elseif c then
        rows[#rows + 1] = format("| %s | %s | failed | | | | | | |", wid, CLIENT[cid].label)
      end
    end
  end
  for _, cid in ipairs({ "omixa-lua5.4", "omixa-luajit" }) do
    local j, label = res.jobs[cid] or {}, CLIENT[cid].label
    add(format("%s: job:poll() p99 with %d jobs in flight ≤ 1 ms", label, JOBS),
      j.poll and format("p99 %.3f ms (median %.3f ms, max %.3f ms, %d calls)", j.poll[2] / 1000, j.poll[1] / 1000,
        j.poll[3] / 1000, j.poll[4]) or "n/a", (j.poll and j.poll[2] <= 1000) or false)
    add(format("%s: a luv loop waiting on client:fd() burns ≤ 1 %% of a core", label),
      j.fdwait and format("%.2f %% (%.3f s CPU over %.1f s, %d wake-ups)", 100 * j.fdwait[1] / j.fdwait[2],
        j.fdwait[1], j.fdwait[2], j.fdwait[3]) or "n/a", (j.fdwait and j.fdwait[1] <= 0.01 * j.fdwait[2]) or false)
    add(format("%s: generate_many of %d at concurrency %d within 1.3× one server delay (%.1f s)", label, MANY, MANY,
      1.3 * JOBS_DELAY),
      j.many and format("%.2f s = %s the delay (%d of %d images)", j.many[1], fmt_ratio(j.many[1] / JOBS_DELAY),
        j.many[2], j.many[3]) or "n/a", (j.many and j.many[1] <= 1.3 * JOBS_DELAY and j.many[2] == j.many[3]) or false)
    add(format("%s: memory per idle job (%d jobs waiting)", label, JOBS),
      j.idle and format("%.1f KiB of RSS, %.1f KiB of Lua heap", j.idle[1] / 1024, j.idle[2] / 1024) or "n/a", true)
  end
  return rows, t
end

local function print_steady(res)
  local rows, t = steady_report(res)
  print()
  print(format("Steady state: %d calls in a row in one process after one warm-up call", STEADY_N))
  for _, l in ipairs(rows) do print(l) end
  print()
  print("Targets (issue 18, points 3 and 4):")
  for _, x in ipairs(t) do print(format("  [%s] %s: %s", x[3] and "met" or "NOT met", x[1], x[2])) end
end

local function report(res)
  if res.steady_only then return print_steady(res) end
  summarise(res)
  local rows = table_rows(res)
  local tt = targets(res)
  local m = res.machine

  print()
  print(format("omixa bench (%s): ms per request, median of %d rounds; RSS+ = peak RSS added; ÷ floor = ÷ curl",
    opts.quick and "quick" or "full", opts.rounds))
  print(text_table(rows))
  print()
  print("Targets (issue 6, point 2):")
  for _, x in ipairs(tt) do
    print(format("  [%s] %s: %s", x[3] and "met" or "NOT met", x[1], x[2]))
  end
  print()
  for _, l in ipairs(lua_floor_lines(res)) do print(l) end
  print()
  local conn = {}
  for _, c in ipairs(CLIENTS) do
    conn[#conn + 1] = format("%s %d", c.label, res.conn[c.id].connections)
  end
  print("TCP connections for 20 sequential requests: " .. concat(conn, ", "))
  for _, f in ipairs(res.failures) do print("FAILED: " .. f) end
  print(format("%s on %d cores, load %s before, %s after; other processes took %s of the CPU; %.0f s",
    m.cpu, tonumber(m.cores) or 0, res.load_before, res.load_after, others_share(res), res.seconds))
  print_steady(res)
  local pr = res.profile
  if pr then
    print()
    print(format("Where the time goes: omixa lua5.4 on L (perf, %d requests, %d samples, %.0f %% in the kernel)",
      pr.k, pr.total, 100 * pr.kernel / pr.total))
    for _, l in ipairs(profile_lines(pr)) do print(l) end
  end

  if not opts.write then return end
  local md = {}
  local function p(s) md[#md + 1] = s or "" end
  p("# omixa bench results")
  p()
  p(format("Written by `make bench%s` (bench/run.lua) on %s, %d rounds, %.0f s in all.",
    opts.quick and " QUICK=1" or "", os.date("!%Y-%m-%d %H:%M UTC"), opts.rounds, res.seconds))
  p("Every figure is from this one run on this one machine; rerun `make bench` to reproduce.")
  p()
  p("## Machine")
  p()
  p(format("- CPU: %s, %s cores (`nproc`), %s memory", m.cpu, m.cores, m.mem))
  p(format("- OS: %s, %s", m.os, m.kernel))
  p(format("- Load average (1, 5, 15 min): %s before the run, %s after", res.load_before, res.load_after))
  p(format("- Other processes used %s of the machine's CPU time during the run (the bench itself,", others_share(res)))
  p("  its clients and nginx excluded): the table's ranges show how much that moved the figures.")
  p()
  p("## Versions")
  p()
  for _, x in ipairs(m.versions) do p(format("- %s: `%s`", x[1], x[2])) end
  p()
  p("## Method")
  p()
  p("- Server: Debian's nginx, one process (`master_process off`, one worker) on 127.0.0.1, keep-alive,")
  p("  `sendfile`; each workload has one location whose three lines of Lua read the request body")
  p("  (`ngx.req.read_body()`, so uploads are consumed and `Expect: 100-continue` is answered), wait")
  p(format("  %d ms for C8 (`ngx.sleep`), and hand the pre-built response file to nginx's static module", DELAY * 1000))
  p("  (`ngx.exec` to an `internal` `alias` location). The files come from `bench/gen.py`.")
  p("- Work: each client POSTs the same JSON request, receives the answer and decodes every image to")
  p("  bytes in memory, then checks the count, the size and the PNG signature (and, in an untimed first")
  p("  run of each cell, every byte against the expected image); curl, the floor, only moves the bytes.")
  p("  Every client loops as `check(generate())` (Python's `check(generate(session))`), so no variable")
  p("  keeps the previous answer's images alive while the next request runs.")
  p("  The curl floor is one `curl` process reading a config file of K URLs")
  p("  (`data-binary = \"@req.json\"`, `output = \"/dev/null\"`, one connection).")
  p("- Time: per-request time = (wall of a process making K requests − wall of the same process making")
  p("  0 requests) / K, so interpreter start-up, module loading and client creation cancel out. The")
  p("  0-request run of curl is `curl -s -o /dev/null file:///dev/null`. K is chosen per cell by a")
  p(format("  calibration run so that a K-run lasts about %.1f s (at least one request). Each round runs", opts.budget))
  p("  every cell once (K-run and 0-run, their order alternating by round), round-robin over the clients;")
  p("  the table shows the median over the rounds and the range of the per-round values.")
  p("- Memory: peak RSS added = `/usr/bin/time -f %M` of the K-run − that of the 0-run (median over rounds).")
  p("  It is the peak over K requests in a loop, so what a garbage collector has not yet freed of the")
  p("  earlier requests counts, as it does in a program; it can grow with K (shown in the table).")
  p("- C8: K batches of 8 requests at concurrency 8 against the 500 ms delay; the figure is ms per batch.")
  p("  omixa: `client:generate_many` (concurrency = 8); curl: `--parallel --parallel-immediate --parallel-max 8`; Python:")
  p("  a `ThreadPoolExecutor(8)`, one `requests.Session` per thread. The DIY peer has no concurrency.")
  p("- P: omixa starts 8 jobs (`client:start`) against the delay and times each `job:poll()` (called about")
  p("  once a millisecond) while all 8 are in flight; the figure is the median of the per-round medians.")
  p("- C8 and P print \"n/a (not built yet)\" for omixa until `client.generate_many` / `client.start` exist.")
  p()
  p("## Workloads")
  p()
  for _, w in ipairs(WORKLOADS) do
    local mf = manifest[w.id]
    p(format("- **%s**: %s — answer: %d image%s of %d bytes%s", w.id, w.what, mf.n, mf.n == 1 and "" or "s", mf.bytes,
      w.id == "U" and format("; input image %d bytes, request body %d bytes", manifest.input.bytes,
        #(read_file(work .. "/req-u.json") or "")) or ""))
  end
  p("- Images are valid PNGs (RGB, stored deflate blocks) of random pixels: nothing compresses them.")
  p("  Answers: `{\"created\":..,\"data\":[{\"b64_json\":\"...\"}],\"usage\":{\"billed_amount\":\"0.040000\"}}`.")
  p()
  p("## Commands")
  p()
  p("Each run is wrapped as `/usr/bin/time -f %M -o FILE <command>`, with the environment reset to")
  p("`PATH=/usr/bin:/bin LANG=C.UTF-8 HOME=DIR PYTHONDONTWRITEBYTECODE=1` plus the `LUA_PATH`/`LUA_CPATH`")
  p("shown (so no proxy, no `OMIXA_*` and no `PYTHON*` variable reaches a client). `PORT` is a free port;")
  p("`DIR` the temporary directory of the run; `K` the count in the table (0 for the 0-run).")
  p()
  p("```sh")
  p("make bench                     # sh .ci/deps bench; make core (lua5.4, luajit); lua5.4 bench/run.lua")
  p("make bench QUICK=1             # lua5.4 bench/run.lua --quick (3 rounds, ~0.2 s per K-run)")
  p("/usr/bin/python3 bench/gen.py DIR")
  p("/usr/sbin/nginx -p DIR/ -c DIR/nginx.conf -e DIR/error.log")
  p("curl -K DIR/curl-l-K.cfg       # silent, show-error, fail, data-binary = \"@DIR/req-1.json\",")
  p("                               # the two headers, then K × { url = \".../curl/l/images/generations\", output = \"/dev/null\" }")
  p("curl --parallel --parallel-immediate --parallel-max 8 -K DIR/curl-c8-8K.cfg")
  p("curl -s -o /dev/null file:///dev/null                               # curl's 0-run")
  p("LUA_PATH='ROOT/lua/?.lua;ROOT/lua/?/init.lua;ROOT/bench/clients/?.lua;;' \\")
  p("  LUA_CPATH='ROOT/build/lua5.4/?.so;;' lua5.4 bench/clients/omixa.lua http://127.0.0.1:PORT/omixa-lua5.4/l L K 1 BYTES -")
  p("LUA_CPATH='ROOT/build/luajit/?.so;;' luajit bench/clients/omixa.lua ...   # same arguments")
  p("lua5.4 bench/clients/diy.lua http://127.0.0.1:PORT/diy-lua5.4/l L K 1 BYTES -  # and luajit")
  p("/usr/bin/python3 bench/clients/peer.py http://127.0.0.1:PORT/python/l L K 1 BYTES -")
  p("# U passes DIR/input.png as the last argument; M4 passes 4 images; C8 and P likewise")
  p("lua5.4 bench/clients/omixa.lua http://127.0.0.1:PORT/omixa-lua5.4/l L N 1 BYTES - - steady   # steady state")
  p("curl -K DIR/curl-l-N.cfg -w '%{time_total}\\n'                        # its floor, per transfer")
  p(format("lua5.4 bench/clients/jobs.lua http://127.0.0.1:PORT/omixa-lua5.4 %d %d %d %d   # and luajit",
    JOBS, JOBS_DELAY, FD_WAIT, MANY))
  p("lua5.4 bench/run.lua --steady-only [--quick]   # only these (nothing written)")
  p("```")
  p()
  p("## Results")
  p()
  p("ms = per request (C8: per batch of 8; P: one poll), median over the rounds; RSS+ MiB = peak RSS")
  p("added; ÷ floor = ÷ curl's time for the same workload; peer ÷ omixa = how many times slower the")
  p("peer is than omixa on the same interpreter (Python: than omixa on Lua 5.4); K = requests per")
  p("K-run; range = the lowest and highest per-round value.")
  p()
  p(md_table(rows))
  p()
  p("![time and memory ratios](results.svg)")
  p()
  p("## Targets (issue 6, point 2)")
  p()
  p("| target | measured | |")
  p("|---|---|---|")
  for _, x in ipairs(tt) do p(format("| %s | %s | %s |", x[1], x[2], x[3] and "met" or "**not met**")) end
  p()
  local floor_lines = lua_floor_lines(res)
  if #floor_lines > 0 then
    p("## What any Lua client adds on L")
    p()
    for _, l in ipairs(floor_lines) do p(l) end
    p()
  end
  p("## Connections")
  p()
  p("TCP connections nginx saw (distinct `$connection` in its access log) for 20 sequential requests")
  p("from one process of each client:")
  p()
  for _, c in ipairs(CLIENTS) do
    local x = res.conn[c.id]
    p(format("- %s: %d requests, %d connection%s", c.label, x.requests, x.connections, x.connections == 1 and "" or "s"))
  end
  p()
  local ex = {}
  for _, c in ipairs(CLIENTS) do
    if res.expects[c.id .. "/u"] then ex[#ex + 1] = c.label end
  end
  p(format("`Expect: 100-continue` on the U upload was sent by: %s.", #ex > 0 and concat(ex, ", ") or "no client"))
  p()
  if #res.failures > 0 then
    p("## Failures")
    p()
    for _, f in ipairs(res.failures) do p("- `" .. f:gsub("\n", " "):sub(1, 400) .. "`") end
    p()
  end
  p("## Steady state and hundreds of jobs (issue 18)")
  p()
  p(format("One process per client and workload makes one warm-up call, then %d calls in a row, the", STEADY_N))
  p("previous call's images garbage before the next (`bench/clients/omixa.lua ... steady`): each")
  p("`client:generate` is timed alone (`core.now()` around the call) and its minor page faults are")
  p("field 10 of `/proc/self/stat` read before and after it; peak RSS added = `VmHWM` after the calls −")
  p("`VmRSS` before the first. The curl floor of the same run is one `curl -K` process making the same")
  p(format("%d + 1 requests on one connection with `-w %%{time_total}` per transfer (its first dropped);", STEADY_N))
  p("its faults are `/usr/bin/time -f %R` of that run minus the 0-run's, per request. Ratios are")
  p("p50 ÷ the floor's p50 and p90 ÷ the floor's p90.")
  p()
  local srows, stargets = steady_report(res)
  for _, l in ipairs(srows) do p(l) end
  p()
  p(format("Hundreds of jobs (`bench/clients/jobs.lua`, nginx answering after `ngx.sleep`): %d jobs started", JOBS))
  p(format("on one client (concurrency %d) against a %d s delay, `job:poll()` called about once a ms,", JOBS, JOBS_DELAY))
  p("round-robin over the jobs, while none has finished; memory per idle job = growth of `VmRSS` and of")
  p("`collectgarbage(\"count\")` from before the jobs to all of them waiting, ÷ the jobs; a luv loop")
  p("(`uv.new_poll(client:fd())`) with one job in flight, its process CPU time (utime + stime of")
  p(format("`/proc/self/stat`) over %d s of waiting; `client:generate_many` of %d at concurrency %d.", FD_WAIT, MANY, MANY))
  p()
  p("| target | measured | |")
  p("|---|---|---|")
  for _, x in ipairs(stargets) do p(format("| %s | %s | %s |", x[1], x[2], x[3] and "met" or "**not met**")) end
  p()
  p("Why this differs from the K-run table above: a K-run gives the *mean* per request. On Lua 5.4")
  p("without omixa's collection before a big image (docs/performance.md), L was bimodal: a call made")
  p("its 20 MB string either in pages malloc had (no fault) or in fresh ones (about 5,100 faults), as")
  p("the collector's pace decided; a mean mixes the two modes, a per-call median reports whichever")
  p("holds more than half of the calls (so 1.2× or 7× with no change in omixa), and the p90 shows the")
  p("slow one. The steady state is thus reported as p50 and p90 beside the floor's own p50 and p90.")
  p()
  p("Where a target is not met, the reason measured:")
  p()
  p("- Peak RSS added for L ≤ 1.5× the image: a Lua string can only be made by copying bytes already")
  p("  in memory (Lua 5.1–5.4 and LuaJIT cannot adopt external memory), so the decoded image and its")
  p("  string exist at once during the one copy: 2× the image is the floor of any Lua client's peak.")
  p("- M4 on Lua 5.4: its four 1.5 MiB strings are made by glibc's malloc; when the collector frees")
  p("  the previous answer's four at once, glibc gives the top of its heap back to the kernel (its trim")
  p("  threshold is twice the biggest block freed), and the new strings fault their pages in again")
  p("  (the faults column). Collecting first was measured worse for such answers; only the program")
  p("  (`mallopt`, its own `collectgarbage`) can change glibc's trimming.")
  p("- U: omixa reads the 8 MiB input file and base64-encodes it into the 11 MB body on every request")
  p("  (about a fifth of the CPU samples of a U run are `b64f_encode_avx2` and its first touch of the")
  p("  body's pages); curl's floor sends a body it read once, already encoded.")
  p("- L (and S, M4) on LuaJIT: LuaJIT interns every string, so while the previous answer's image is")
  p("  still alive, `lua_pushlstring` of the identical next one returns it without allocating or copying.")
  p("  The bench serves the same answer each time, so LuaJIT's figures are flattered whenever its")
  p("  collector has not yet freed the previous image, and show the real cost when it has: LuaJIT's")
  p("  allocator maps every big block afresh (and unmaps it on free), about 5,100 faults per 20 MB")
  p("  string (`luajit -e` loop of 20 strings of 20 MB: 0.16 s with identical contents, 1.67 s with")
  p("  distinct ones). Real answers differ, so expect the latter; where a LuaJIT string lives is not the")
  p("  core's to choose.")
  p("- Any cell within a few tenths of the limit: the floor of S is 1–2 ms, so one preempted call on")
  p("  the shared machine moves the p90; compare the K-run ratios above.")
  p()
  p("## Where the time goes: omixa on L")
  p()
  if pr then
    p(format("`%s` (Lua 5.4), %d samples of CPU time, %.0f %% of them in the kernel. Each", pr.command, pr.total,
      100 * pr.kernel / pr.total))
    p("sample is put in the stage of the first frame of its call chain (from the leaf) that names one;")
    p("page faults are counted in the stage whose first touch of fresh memory caused them. The run")
    p("includes start-up (a few ms, spread over the requests). Redo it alone with")
    p("`lua5.4 bench/run.lua --profile-only` after `make bench` has built the cores.")
    p()
    for _, l in ipairs(profile_lines(pr)) do p(l) end
  else
    p("Not profiled: " .. tostring(res.profile_why) .. ".")
  end
  p()
  write_file(BENCH .. "/RESULTS.md", concat(md, "\n"))
  svg(res, BENCH .. "/results.svg")
  say("bench: wrote bench/RESULTS.md and bench/results.svg")
end

local ok, res = xpcall(main, debug.traceback)
if ok and res then
  ok, res = xpcall(report, debug.traceback, res)
end
cleanup()
if not ok then
  io.stderr:write("bench: ", tostring(res), "\n")
  os.exit(1)
end
