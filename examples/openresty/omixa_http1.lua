-- omixa_http1 — an HTTP/1.1 response read incrementally, for a client that
-- does its own I/O (omixa_stream.lua reads it from an ngx cosocket). Pure
-- Lua, no ngx: feed it the bytes as they arrive and it hands back the body's
-- pieces as soon as they are complete, whatever the framing:
-- Transfer-Encoding: chunked (extensions and trailers allowed),
-- Content-Length, or a body that ends when the connection closes.
--
--   local r = http1.response{ max_head = 65536 }
--   r:feed(bytes) -> pieces | nil, message   pieces: the body bytes this call
--                    completed, in order (an array, often empty); nil: not a
--                    valid HTTP/1.x response (stop reading)
--   r.status, r.headers   once the head has arrived (names lower-case, a
--                    repeated header's values joined with ", "); interim 1xx
--                    answers are skipped
--   r:done()       true once the body is complete (read no more)
--   r:eof() -> true | nil, message   the connection closed: true when that
--                    ends the response, else a message saying where it was cut

local setmetatable, tonumber = setmetatable, tonumber
local find, sub, lower, match, gmatch = string.find, string.sub, string.lower, string.match, string.gmatch

local http1 = {}

local Response = {}
Response.__index = Response

local MAX_LINE = 4096 -- a chunk-size or trailer line

function http1.response(opts)
  return setmetatable({ buf = "", state = "head", max_head = opts and opts.max_head or 65536 }, Response)
end

-- The head in TEXT (without its blank line): status and headers.
local function parse_head(text)
  local status_line = match(text, "^([^\r\n]*)")
  local code = match(status_line, "^HTTP/1%.%d (%d%d%d)")
  if not code then return nil, "not an HTTP/1.x status line: " .. sub(status_line, 1, 80) end
  local headers = {}
  for line in gmatch(sub(text, #status_line + 1), "[^\r\n]+") do
    local name, value = match(line, "^([^:%s]+):[ \t]*(.-)[ \t]*$")
    if not name then return nil, "malformed header line: " .. sub(line, 1, 80) end
    name = lower(name)
    headers[name] = headers[name] and (headers[name] .. ", " .. value) or value
  end
  return tonumber(code), headers
end

-- How the body of this head is framed: the next state.
local function framing(self)
  local status, h = self.status, self.headers
  if (status >= 100 and status <= 199) or status == 204 or status == 304 then
    return "done"
  end
  local te = h["transfer-encoding"]
  if te then
    -- chunked must be the last coding; anything else runs until close
    return find(lower(te), "chunked%s*$") and "size" or "close"
  end
  local cl = h["content-length"]
  if cl then
    local n
    for v in gmatch(cl, "[^,]+") do -- repeated, they must agree
      local d = match(v, "^%s*(%d+)%s*$")
      if not d or (n and tonumber(d) ~= n) then return nil, "bad Content-Length: " .. sub(cl, 1, 80) end
      n = tonumber(d)
    end
    self.left = n
    return n == 0 and "done" or "length"
  end
  return "close"
end

-- Consume a line (CRLF or LF) from the buffer: the line, or nil when it has
-- not arrived yet.
local function take_line(self)
  local a, b = find(self.buf, "\r?\n")
  if not a then
    if #self.buf > MAX_LINE then return nil, "a line of the chunked body is too long" end
    return nil
  end
  local line = sub(self.buf, 1, a - 1)
  self.buf = sub(self.buf, b + 1)
  return line
end

function Response:feed(data)
  if self.failed then return nil, self.failed end
  local pieces = {}
  if self.state == "done" then return pieces end
  self.buf = self.buf .. data
  local function fail(message)
    self.failed = message
    return nil, message
  end
  while true do
    local state = self.state
    if state == "head" then
      local a, b = find(self.buf, "\r?\n\r?\n")
      if not a then
        if #self.buf > self.max_head then return fail("the response head is over " .. self.max_head .. " bytes") end
        return pieces
      end
      local status, headers = parse_head(sub(self.buf, 1, a - 1))
      if not status then return fail(headers) end
      self.buf = sub(self.buf, b + 1)
      -- an interim answer (100 Continue, 103 Early Hints): the real head follows
      if status < 100 or status > 199 or status == 101 then
        self.status, self.headers = status, headers
        local nxt, err = framing(self)
        if not nxt then return fail(err) end
        self.state = nxt
      end
    elseif state == "length" or state == "data" then
      if self.buf == "" then return pieces end
      local take = self.left < #self.buf and self.left or #self.buf
      pieces[#pieces + 1] = sub(self.buf, 1, take)
      self.buf = sub(self.buf, take + 1)
      self.left = self.left - take
      if self.left == 0 then self.state = state == "length" and "done" or "crlf" end
    elseif state == "close" then
      if self.buf ~= "" then pieces[#pieces + 1] = self.buf end
      self.buf = ""
      return pieces
    elseif state == "size" then
      local line, err = take_line(self)
      if not line then
        if err then return fail(err) end
        return pieces
      end
      local hex = match(line, "^%s*(%x+)%s*;?") -- chunk extensions are ignored
      if not hex or #hex > 15 then return fail("bad chunk size line: " .. sub(line, 1, 80)) end
      self.left = tonumber(hex, 16)
      self.state = self.left == 0 and "trailer" or "data"
    elseif state == "crlf" then
      local line, err = take_line(self)
      if not line then
        if err then return fail(err) end
        return pieces
      end
      if line ~= "" then return fail("a chunk is longer than its size says") end
      self.state = "size"
    elseif state == "trailer" then
      local line, err = take_line(self)
      if not line then
        if err then return fail(err) end
        return pieces
      end
      if line == "" then self.state = "done" end
    else -- done: what follows belongs to no one (Connection: close)
      self.buf = ""
      return pieces
    end
  end
end

function Response:done()
  return self.state == "done"
end

local WHERE = {
  head = "before the end of the response head", length = "before Content-Length bytes had come",
  size = "in the middle of the chunked body", data = "in the middle of a chunk",
  crlf = "in the middle of the chunked body", trailer = "in the chunked body's trailer",
}

function Response:eof()
  if self.failed then return nil, self.failed end
  if self.state == "close" or self.state == "done" then
    self.state = "done"
    return true
  end
  return nil, "the connection closed " .. (WHERE[self.state] or "early")
end

http1.Response = Response
return http1
