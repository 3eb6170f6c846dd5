-- spec/helpers.lua: what every spec shares. Starts the local stand-in
-- service (`omixa serve`, through its launcher, with the interpreter busted
-- runs under) on a free port and drives its control API with the curl
-- command line.
--
--   local helpers = require "helpers"     -- busted's lpath has ./spec/?.lua
--   local srv = helpers.serve{ tls = false, key = nil, signing_secret = nil }
--   srv.url        base URL, e.g. "http://127.0.0.1:40123/api/v1"
--   srv.origin     "http://127.0.0.1:40123" (control API under srv.origin .. "/_omixa/")
--   srv.ca_file    the CA to trust (tls = true only)
--   srv.key        the key it requires (key = "..." only); sent to the
--                  launcher in a 0600 file (--key-file), never on a command line
--   srv.signing_secret  likewise (--signing-secret-file): it then requires
--                  X-Omixa-Timestamp and X-Omixa-Signature (401 invalid_signature)
--   srv.dir        its state directory (nginx.conf, error.log, access.log)
--   srv:faults{ {status=503}, {delay=1} }   replace the fault queue
--   srv:add_faults{ ... }                   append to it
--   srv:requests() generation requests seen since the last reset, decoded:
--                  { method=, uri=, headers={lower-case name = value}, body="raw" }
--   srv:fetches()  GETs of /_omixa/images/<id> (url_only images), same shape
--   srv:billing()  what it billed: { billed_amount = "0.066000", images = 2, answers = 1 }
--   srv:reset()    clear faults, recorded requests, fetches, stored images, billing
--   srv:control(method, path [, body_table]) -> status, decoded body (or raw text)
--   srv:stop()     stop nginx, remove the state directory (idempotent)
--   helpers.tmpdir()            a fresh directory, removed when the run ends
--   helpers.read_file(path)     its bytes, or nil, message
--   helpers.must_read(path)     its bytes; raises when it cannot be read
--   helpers.write_file(path, data)
--                               replace PATH's contents; raises on failure
--   helpers.listing(dir)        the names in DIR, sorted, without . and ..
--   helpers.fixture(name)       the bytes of spec/fixtures/NAME (raises if missing)
--   helpers.run(cmd [, input])  -> ok, exit_code, stdout, stderr (a shell command)
--   helpers.lua_cmd(code)       shell words running Lua CODE with this
--                               interpreter, the tree's lua/ on package.path
--                               and core_dir() on package.cpath
--   helpers.lua_script(path)    likewise for the Lua file PATH (append its args)
--   helpers.cli()               shell words running bin/omixa with this interpreter
--   helpers.openssl_hmac(secret, msg)
--                               hex HMAC-SHA256 by the openssl command line
--   helpers.root, helpers.interpreter
--   helpers.core_dir()          the directory of the omixa/core.so in use
--   helpers.free_port()         a loopback port nothing listens on now (the kernel's pick)
--   helpers.follow(pid [, sig]) kill PID (with SIG, default TERM) should this process die first
--
-- No nginx outlives a run: stop servers in teardown; any left are stopped
-- when the helpers are collected at exit, and each stand-in also watches
-- this process (--watch-pid) and stops itself within a second once it is gone.

local cjson = require "cjson"

local helpers = {}

local function shell_quote(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end
helpers.quote = shell_quote

-- A file's bytes; nil and io.open's message when it cannot be opened.
local function read_file(path)
  local f, err = io.open(path, "rb")
  if not f then return nil, err end
  local s = f:read("*a")
  f:close()
  return s
end
helpers.read_file = read_file

-- A file that must be there: its bytes, else raise io.open's message.
function helpers.must_read(path)
  local s, err = read_file(path)
  if not s then error(err, 2) end
  return s
end

-- The bytes of spec/fixtures/NAME; raises when it is missing.
function helpers.fixture(name)
  return helpers.must_read(helpers.root .. "/spec/fixtures/" .. name)
end

-- Write DATA to PATH (replacing it); raises when it cannot be opened.
local function write_file(path, data)
  local f = assert(io.open(path, "wb"))
  f:write(data)
  f:close()
end
helpers.write_file = write_file

-- The names in DIR (without . and ..), sorted.
function helpers.listing(dir)
  local names = {}
  for name in require("lfs").dir(dir) do
    if name ~= "." and name ~= ".." then names[#names + 1] = name end
  end
  table.sort(names)
  return names
end

-- Run a shell command; portable exit code (Lua 5.1's close gives none).
function helpers.run(cmd, input)
  local out, err = os.tmpname(), os.tmpname()
  local inp = "/dev/null"
  if input then
    inp = os.tmpname()
    write_file(inp, input)
  end
  local p = io.popen("(" .. cmd .. ") >" .. shell_quote(out) .. " 2>" .. shell_quote(err)
    .. " <" .. shell_quote(inp) .. "; echo $?")
  local status = p:read("*a")
  p:close()
  local code = tonumber(status:match("(%d+)%s*$")) or -1
  local stdout, stderr = read_file(out) or "", read_file(err) or ""
  os.remove(out); os.remove(err)
  if input then os.remove(inp) end
  return code == 0, code, stdout, stderr
end

local function capture(cmd)
  local p = io.popen(cmd)
  local s = p:read("*a")
  p:close()
  return (s:gsub("%s+$", ""))
end

-- The repository: this file is <root>/spec/helpers.lua.
local function find_root()
  local src = debug.getinfo(1, "S").source:gsub("^@", "")
  local dir = src:match("^(.*)/spec/[^/]*$") or (src:match("^spec/") and ".") or "."
  if dir:sub(1, 1) ~= "/" then
    local cwd = capture("pwd")
    dir = dir == "." and cwd or (cwd .. "/" .. dir:gsub("^%./", ""))
  end
  return dir
end
helpers.root = find_root()

-- The interpreter running this spec: the lowest arg[] index when it names a
-- Lua (`luajit /usr/bin/busted`, or busted's own `#!/usr/bin/env lua`),
-- else the Debian name for this version.
local function find_interpreter()
  local lowest
  if type(arg) == "table" then
    local i = -1
    while arg[i] ~= nil do lowest = arg[i]; i = i - 1 end
  end
  if lowest and lowest:match("lua[%w%.%-]*$") then return lowest end
  if type(jit) == "table" then return "luajit" end
  return "lua" .. _VERSION:match("%d+%.%d+")
end
helpers.interpreter = find_interpreter()

-- The directory whose omixa/core.so this run uses: OMIXA_BUILD (absolute, or
-- relative to the repository) when set, else build/<tag> of the running Lua
-- (what lua/omixa/core.lua loads).
function helpers.core_dir()
  local build = os.getenv("OMIXA_BUILD")
  if not build or build == "" then
    return helpers.root .. "/build/" .. (type(jit) == "table" and "luajit" or "lua" .. _VERSION:match("%d+%.%d+"))
  end
  if build:sub(1, 1) == "/" then return build end
  return helpers.root .. "/" .. build
end

-- Shell words starting this interpreter with the tree's lua/ first on
-- package.path and the core in use (core_dir) first on package.cpath.
local function lua_words()
  local lua = helpers.root .. "/lua"
  local setup = ("package.path = %q .. package.path; package.cpath = %q .. package.cpath"):format(
    lua .. "/?.lua;" .. lua .. "/?/init.lua;", helpers.core_dir() .. "/?.so;")
  return shell_quote(helpers.interpreter) .. " -e " .. shell_quote(setup)
end

-- Shell words that run CODE so.
function helpers.lua_cmd(code)
  return lua_words() .. " -e " .. shell_quote(code)
end

-- Shell words that run the Lua file PATH so (append its arguments).
function helpers.lua_script(path)
  return lua_words() .. " " .. shell_quote(path)
end

-- Shell words running bin/omixa with this interpreter, on the working tree.
function helpers.cli()
  return shell_quote(helpers.interpreter) .. " " .. shell_quote(helpers.root .. "/bin/omixa")
end

-- Run bin/omixa ARGS in DIR against the stand-in SRV, with ENV (shell
-- words NAME=value) added: ok, code, stdout, stderr.
function helpers.cli_run(dir, srv, args, env)
  return helpers.run(string.format("cd %s && env OMIXA_BASE_URL=%s %s %s %s",
    shell_quote(dir), shell_quote(srv.url), env or "", helpers.cli(), args))
end

-- Shell words running examples/nvim in headless Neovim in DIR against the
-- stand-in at URL, with spec/hosts/nvim_driver.lua, which writes its result
-- to DIR/result.json; ENV: more NAME=value words. The LuaJIT core is used.
function helpers.nvim_example(dir, url, env)
  local root = helpers.root
  local lua_setup = ("lua package.path = %q .. package.path; package.cpath = %q .. package.cpath"):format(
    root .. "/lua/?.lua;" .. root .. "/lua/?/init.lua;", root .. "/build/luajit/?.so;")
  local q = shell_quote
  return table.concat({
    "cd", q(dir), "&&", "env -u OMIXA_API_KEY -u OMIXA_MODEL",
    "OMIXA_BASE_URL=" .. q(url), env or "",
    "XDG_CACHE_HOME=" .. q(dir .. "/cache"), "XDG_STATE_HOME=" .. q(dir .. "/state"),
    "XDG_DATA_HOME=" .. q(dir .. "/data"), "XDG_CONFIG_HOME=" .. q(dir .. "/config"),
    "OMIXA_NVIM_RESULT=" .. q(dir .. "/result.json"),
    "timeout 60 nvim --headless --clean -u NONE -i NONE",
    "--cmd", q(lua_setup),
    "--cmd", q("set rtp+=" .. root .. "/examples/nvim"),
    "-c", q("runtime plugin/omixa.lua"),
    "-c", q("luafile " .. root .. "/spec/hosts/nvim_driver.lua"),
  }, " ")
end

-- Run a shell command under script(1): its stderr is a terminal, and what
-- the terminal showed comes back as out (ok, code, out).
function helpers.on_tty(cmd)
  local ok, code, out = helpers.run("script -qec " .. shell_quote(cmd) .. " /dev/null")
  return ok, code, out
end

-- Hex HMAC-SHA256 of MSG by the openssl command line: a check that is not
-- our C (core.hmac_sha256).
function helpers.openssl_hmac(secret, msg)
  local ok, _, out, err = helpers.run("openssl dgst -sha256 -hmac " .. shell_quote(secret) .. " -r", msg)
  assert(ok, err)
  return out:match("^(%x+)")
end

-- Temporary directories and servers still alive, cleaned up at exit.
local tmpdirs, servers = {}, {}

function helpers.tmpdir()
  local d = capture("mktemp -d \"${TMPDIR:-/tmp}/omixa-spec-XXXXXX\"")
  assert(d ~= "", "mktemp -d failed")
  tmpdirs[#tmpdirs + 1] = d
  return d
end

local function cleanup_all()
  for s in pairs(servers) do pcall(s.stop, s) end
  for _, d in ipairs(tmpdirs) do os.execute("rm -rf " .. shell_quote(d)) end
  tmpdirs = {}
end

-- A value whose __gc runs at exit (lua_close) on every Lua version.
if newproxy then
  helpers._sentinel = newproxy(true)
  getmetatable(helpers._sentinel).__gc = cleanup_all
else
  helpers._sentinel = setmetatable({}, { __gc = cleanup_all })
end

local my_pid = tonumber(capture("echo $PPID"))

local Server = {}
Server.__index = Server

-- curl against the control API: status, decoded JSON (or raw text).
function Server:control(method, path, body)
  local args = { "curl", "-sS", "--max-time", "30", "-X", method, "-o", "-",
                 "-w", "'\\n%{http_code}'" }
  if self.ca_file then args[#args + 1] = "--cacert"; args[#args + 1] = shell_quote(self.ca_file) end
  local input
  if body ~= nil then
    input = type(body) == "string" and body or cjson.encode(body)
    args[#args + 1] = "-H 'Content-Type: application/json' --data-binary @-"
  end
  args[#args + 1] = shell_quote(self.origin .. path)
  local ok, code, out, err = helpers.run(table.concat(args, " "), input)
  if not ok then error("curl " .. method .. " " .. path .. " failed (" .. code .. "): " .. err, 2) end
  local text, status = out:match("^(.*)\n(%d+)$")
  local decoded = cjson.decode(text) -- raises on non-JSON, which is a bug here
  return tonumber(status), decoded
end

function Server:faults(list)
  local status, res = self:control("PUT", "/_omixa/faults", list or {})
  assert(status == 200, "faults: status " .. tostring(status))
  return res
end

function Server:add_faults(list)
  local status, res = self:control("POST", "/_omixa/faults", list)
  assert(status == 200, "add_faults: status " .. tostring(status))
  return res
end

function Server:requests()
  local _, res = self:control("GET", "/_omixa/requests")
  return res
end

function Server:fetches()
  local _, res = self:control("GET", "/_omixa/fetches")
  return res
end

-- What the stand-in billed since its last reset:
-- { billed_amount = "0.066000", images = 2, answers = 1 }.
function Server:billing()
  local _, res = self:control("GET", "/_omixa/billing")
  return res
end

function Server:reset()
  local status = self:control("POST", "/_omixa/reset")
  assert(status == 200, "reset: status " .. tostring(status))
end

function Server:stop()
  if self.stopped then return end
  self.stopped = true
  servers[self] = nil
  helpers.run(helpers.lua_cmd("os.exit(require('omixa.serve').main({'--stop', "
    .. string.format("%q", self.dir) .. "}))"))
  os.execute("rm -rf " .. shell_quote(self.dir))
end

-- Start a stand-in: opts.tls, opts.key, opts.signing_secret (strings),
-- opts.args (extra launcher words). Raises with the launcher's stderr when
-- it fails.
function helpers.serve(opts)
  opts = opts or {}
  local dir = helpers.tmpdir()
  local argv = { "--daemon", "--port", "0", "--dir", dir }
  if my_pid then argv[#argv + 1] = "--watch-pid"; argv[#argv + 1] = tostring(my_pid) end
  if opts.tls then argv[#argv + 1] = "--tls" end
  local secrets
  for _, s in ipairs({ { opts.key, "--key-file" }, { opts.signing_secret, "--signing-secret-file" } }) do
    if s[1] then
      secrets = secrets or helpers.tmpdir()
      local file = secrets .. "/" .. s[2]:sub(3)
      os.execute("umask 077; : > " .. shell_quote(file))
      write_file(file, s[1])
      argv[#argv + 1] = s[2]; argv[#argv + 1] = file
    end
  end
  for _, a in ipairs(opts.args or {}) do argv[#argv + 1] = a end
  local words = {}
  for i, a in ipairs(argv) do words[i] = string.format("%q", a) end
  local ok, code, out, err = helpers.run(
    helpers.lua_cmd("os.exit(require('omixa.serve').main({" .. table.concat(words, ", ") .. "}))"))
  local url = out:match("^(https?://[^\n]+)\n")
  if not ok or not url then
    error("omixa serve failed to start (exit " .. tostring(code) .. "): " .. err .. out, 2)
  end
  local srv = setmetatable({
    url = url,
    origin = url:match("^(https?://[^/]+)"),
    ca_file = out:match("\nca: ([^\n]+)"),
    key = opts.key,
    signing_secret = opts.signing_secret,
    dir = dir,
  }, Server)
  servers[srv] = true
  return srv
end

function helpers.free_port()
  local has_socket, socket = pcall(require, "socket") -- luasocket first: luv's default loop
  if has_socket then                                  -- crashed here after many uses (LuaJIT)
    local srv = assert(socket.bind("127.0.0.1", 0))
    local _, port = srv:getsockname()
    srv:close()
    return tonumber(port)
  end
  local uv = require "luv"
  local t = uv.new_tcp()
  assert(t:bind("127.0.0.1", 0))
  local port = t:getsockname().port
  t:close()
  uv.run("nowait")
  return port
end

function helpers.follow(pid, sig)
  local _, _, me = helpers.run("echo $PPID")
  me = me:match("%d+")
  if not me then return end
  -- only when PID still runs and this process is gone (a PID stopped first is left alone)
  helpers.run(("(while kill -0 %s && kill -0 %d; do sleep 1; done; kill -0 %d && ! kill -0 %s && kill -%s %d) >/dev/null 2>&1 &")
    :format(me, pid, pid, me, sig or "TERM", pid))
end

return helpers
