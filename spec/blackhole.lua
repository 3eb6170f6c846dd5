-- spec/blackhole.lua: a loopback address where a TCP connect never
-- completes, for connect_timeout. A luv listener with a backlog of 0 that
-- never accepts (the luv loop is never run, so libuv never accepts either)
-- takes one connection into its accept queue; that filler makes the queue
-- full, and Linux then drops every further SYN, so a client stays in
-- SYN-SENT until its own deadline. Nothing leaves 127.0.0.1.
--
--   local blackhole = require "blackhole"
--   local hole = blackhole.open()   -- hole.url: "http://127.0.0.1:PORT/api/v1"
--   ...                             -- connects to it time out
--   hole:close()

local uv = require "luv"

local blackhole = {}

local Hole = {}
Hole.__index = Hole

function Hole:close()
  if self.closed then return end
  self.closed = true
  for _, h in ipairs(self.handles) do
    if not h:is_closing() then h:close() end
  end
  uv.run("nowait") -- let libuv run the close callbacks
end

function blackhole.open()
  local server = uv.new_tcp()
  assert(server:bind("127.0.0.1", 0))
  assert(server:listen(0, function() end))
  local port = server:getsockname().port
  local filler = uv.new_tcp()
  -- connect(2) is issued now; on loopback the handshake completes in the
  -- kernel without the loop running.
  filler:connect("127.0.0.1", port, function() end)
  uv.sleep(20)
  return setmetatable({
    port = port,
    url = "http://127.0.0.1:" .. port .. "/api/v1",
    handles = { filler, server },
  }, Hole)
end

return blackhole
