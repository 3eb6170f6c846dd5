-- spec/nginx_helper.lua: a real nginx (master + workers, in the background)
-- for a spec, on a free loopback port, stopped when the spec's process is gone.
--
--   local nh = require "nginx_helper"
--   local n = nh.start(conf_for_port, env)
--       conf_for_port(port) -> the nginx.conf text (relative paths are under n.dir)
--       env: shell words set before nginx (e.g. "OMIXA_REDIS=127.0.0.1:6379")
--   n.base  "http://127.0.0.1:PORT";  n.dir;  n.master (its pid)
--   n:stop()  graceful (QUIT), waits for it; idempotent
local helpers = require "helpers"

local q = helpers.quote
local sleep = require("omixa.core").sleep
local nh = {}

local N = {}
N.__index = N

function nh.start(conf_for_port, env)
  assert(helpers.read_file("/usr/sbin/nginx") and helpers.read_file("/usr/lib/nginx/modules/ngx_http_lua_module.so"),
    "nginx with its Lua module not found: install nginx libnginx-mod-http-lua (sh .ci/deps test)")
  local self = setmetatable({ dir = helpers.tmpdir() }, N)
  os.execute("mkdir -p " .. q(self.dir .. "/tmp"))
  local err
  for _ = 1, 5 do
    local port = helpers.free_port()
    helpers.write_file(self.dir .. "/nginx.conf", conf_for_port(port))
    local ok, rc, out, e = helpers.run("cd " .. q(self.dir) .. " && env -u OMIXA_API_KEY -u OMIXA_MODEL "
      .. (env or "") .. " /usr/sbin/nginx -p " .. q(self.dir .. "/") .. " -c " .. q(self.dir .. "/nginx.conf")
      .. " -e " .. q(self.dir .. "/error.log"))
    if ok then
      self.base = "http://127.0.0.1:" .. port
      for _ = 1, 100 do
        self.master = tonumber((helpers.read_file(self.dir .. "/nginx.pid") or ""):match("%d+"))
        if self.master then break end
        sleep(0.02)
      end
      if self.master then helpers.follow(self.master) end
      return self
    end
    err = ("nginx failed (%d): %s%s\n%s"):format(rc, out, e, helpers.read_file(self.dir .. "/error.log") or "")
    if not err:find("in use", 1, true) then break end
  end
  error(err)
end

function N:stop()
  if not self.master then return end
  helpers.run("kill -QUIT " .. self.master)
  for _ = 1, 100 do
    if not helpers.run("kill -0 " .. self.master) then break end
    sleep(0.05)
  end
  self.master = nil
end

return nh
