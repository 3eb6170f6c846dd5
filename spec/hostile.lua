-- spec/hostile.lua: a loopback HTTP server in this process (luv) that
-- answers every request with bytes a spec writes by hand, for responses the
-- stand-in cannot make (duplicate headers, a lying Content-Length, a body
-- that never ends). The luv loop runs only inside drive(), so a spec
-- alternates it with the client's poll.
--
--   local hostile = require "hostile"
--   local h = hostile.open(function(request_text, conn) return response_bytes, keep_open end)
--                             (conn: the luv handle, to write more later with conn:write)
--   h.url                     "http://127.0.0.1:PORT/api/v1"
--   hostile.drive(done, max_seconds)   run luv and sleep a little until done() is true
--                                      (false when max_seconds passed first)
--   h:close()

local uv = require "luv"
local core = require "omixa.core"

local hostile = {}

local Server = {}
Server.__index = Server

function Server:close()
  if self.closed then return end
  self.closed = true
  for c in pairs(self.clients) do if not c:is_closing() then c:close() end end
  if not self.server:is_closing() then self.server:close() end
  uv.run("nowait")
end

-- ANSWER(request_text, conn) -> response bytes [, keep_open]: called once the
-- request's headers and its Content-Length of body have arrived.
function hostile.open(answer)
  local self = setmetatable({ clients = {}, requests = 0 }, Server)
  local server = uv.new_tcp()
  assert(server:bind("127.0.0.1", 0))
  assert(server:listen(16, function(err)
    assert(not err, err)
    local c = uv.new_tcp()
    server:accept(c)
    self.clients[c] = true
    local got = ""
    c:read_start(function(rerr, chunk)
      if rerr or not chunk then
        self.clients[c] = nil
        if not c:is_closing() then c:close() end
        return
      end
      got = got .. chunk
      local head_end = got:find("\r\n\r\n", 1, true)
      if not head_end then return end
      local len = tonumber(got:sub(1, head_end):lower():match("\ncontent%-length:%s*(%d+)")) or 0
      if #got < head_end + 3 + len then return end
      self.requests = self.requests + 1
      local reply, keep_open = answer(got, c)
      got = ""
      c:write(reply, function()
        if not keep_open and not c:is_closing() then
          self.clients[c] = nil
          c:shutdown(function() if not c:is_closing() then c:close() end end)
        end
      end)
    end)
  end))
  self.server = server
  self.port = server:getsockname().port
  self.url = "http://127.0.0.1:" .. self.port .. "/api/v1"
  return self
end

-- The request's body (after the blank line).
function hostile.body_of(request_text)
  local i = request_text:find("\r\n\r\n", 1, true)
  return i and request_text:sub(i + 4) or ""
end

function hostile.drive(done, max_seconds)
  local stop = core.now() + (max_seconds or 30)
  while not done() do
    if core.now() > stop then return false end
    uv.run("nowait")
    core.sleep(0.002)
  end
  return true
end

-- An HTTP/1.1 response: status line, the header lines given, body.
function hostile.response(status, header_lines, body)
  local t = { "HTTP/1.1 " .. status .. " X" }
  for _, l in ipairs(header_lines) do t[#t + 1] = l end
  t[#t + 1] = ""
  t[#t + 1] = body or ""
  return table.concat(t, "\r\n")
end

return hostile
