-- spec/fd_loop.lua: drive one job from luv's event loop watching
-- client:fd(), in a process of its own (busted's other specs share luv's
-- default loop); where fd() is nil (the portable event backend), from a luv
-- timer every client:poll_interval() seconds instead, as API.md says.
-- Prints "done|failed|stuck <wakeups> fd|timer".
--   OMIXA_URL=http://127.0.0.1:PORT/api/v1 lua5.4 spec/fd_loop.lua
local uv = require "luv"
local omixa = require "omixa"

local client = omixa.new{ base_url = assert(os.getenv("OMIXA_URL")), max_retries = 0 }
local job = client:start{ prompt = "loop" }
local wakeups = 0
local fd = client:fd()
local watcher
if fd then
  watcher = uv.new_poll(fd)
  watcher:start("r", function()
    wakeups = wakeups + 1
    if job:poll() then watcher:stop() end
  end)
else
  watcher = uv.new_timer()
  local function tick()
    wakeups = wakeups + 1
    if job:poll() then return end
    watcher:start(math.ceil(client:poll_interval() * 1000), 0, tick)
  end
  watcher:start(0, 0, tick)
end
local guard = uv.new_timer()
guard:start(10000, 0, function() watcher:stop() end)
uv.run("default")
guard:close()
watcher:close()
uv.run("nowait")
io.write(job:done() and (job:result() and "done " or "failed ") or "stuck ", wakeups,
  fd and " fd" or " timer", "\n")
client:close()
