-- spec/redis_helper.lua: a real redis-server for a spec, on a free loopback
-- port, in the foreground of a background shell (no daemon), with no
-- persistence unless asked; it stops itself when the spec's process is gone.
--
--   local rh = require "redis_helper"
--   local r = rh.start{ persist = false }   -- persist = true: AOF, fsync always
--   r.port, r.dir
--   r:connect() -> a connected redis-lua client (raises when it cannot)
--   r:stop()    kill -9 (what a crash does); idempotent
--   r:restart() start again on the same port and directory
--   rh.redis    the redis-lua module (Debian lua-redis; on Lua 5.4 from the
--               5.3 tree: it is plain Lua)

local helpers = require "helpers"

local rh = {}

local function load_redis()
  local ok, mod = pcall(require, "redis")
  if ok then return mod end
  package.path = package.path .. ";/usr/share/lua/5.3/?.lua"
  ok, mod = pcall(require, "redis")
  assert(ok, "redis-lua not found: install lua-redis (sh .ci/deps test): " .. tostring(mod))
  return mod
end
rh.redis = load_redis()

local R = {}
R.__index = R

function R:connect()
  return rh.redis.connect("127.0.0.1", self.port)
end

local function ping(port)
  local ok, c = pcall(rh.redis.connect, "127.0.0.1", port)
  if not ok then return false end
  local good, pong = pcall(c.ping, c)
  pcall(c.quit, c)
  return good and pong
end

-- Start redis-server on self.port; true, or false and its log.
local function launch(self)
  local args = { "redis-server", "--port", tostring(self.port), "--bind", "127.0.0.1",
                 "--daemonize", "no", "--dir", self.dir, "--logfile", self.dir .. "/redis.log",
                 "--save", "''" }
  if self.persist then
    args[#args + 1] = "--appendonly yes --appendfsync always"
  else
    args[#args + 1] = "--appendonly no"
  end
  local ok, _, out = helpers.run(table.concat(args, " ") .. " >/dev/null 2>&1 & echo $!")
  assert(ok, "cannot start redis-server")
  self.pid = tonumber(out:match("%d+"))
  helpers.follow(self.pid, "KILL")
  for _ = 1, 200 do
    if ping(self.port) then return true end
    if not helpers.run("kill -0 " .. self.pid) then break end
    require("omixa.core").sleep(0.025)
  end
  self:stop()
  return false, helpers.read_file(self.dir .. "/redis.log") or ""
end

function rh.start(opts)
  assert(helpers.run("command -v redis-server"), "redis-server not found: install redis-server (sh .ci/deps test)")
  local self = setmetatable({ dir = helpers.tmpdir(), persist = opts and opts.persist }, R)
  local log
  for _ = 1, 5 do
    self.port = helpers.free_port()
    local ok
    ok, log = launch(self)
    if ok then return self end
    if not log:find("in use", 1, true) then break end
  end
  error("redis-server did not start: " .. tostring(log))
end

function R:stop()
  if self.pid then
    helpers.run("kill -9 " .. self.pid)
    for _ = 1, 200 do
      if not helpers.run("kill -0 " .. self.pid) then break end
      require("omixa.core").sleep(0.025)
    end
    self.pid = nil
  end
end

function R:restart()
  self:stop()
  local ok, log = launch(self)
  assert(ok, "redis-server did not restart: " .. tostring(log))
end

return rh
