-- bench/stream_sse.lua — parse speed of an SSE stream carrying one large
-- image (default 20 MB), fed in 16 KiB chunks (libcurl's usual write size)
-- and whole: the bare parser, the parser in images mode (base64 decoded in
-- C), and omixa.stream on top. Run from the repository root after `make`:
--   lua5.4 bench/stream_sse.lua [megabytes]
package.path = "./lua/?.lua;./lua/?/init.lua;" .. package.path
package.cpath = (os.getenv("OMIXA_BUILD") or ".") .. "/?.so;" .. package.cpath
local core = require "omixa.core"
local stream = require("omixa.decode").stream

local mb = tonumber(arg and arg[1]) or 20
local n = math.floor(mb * 1000 * 1000)
-- incompressible-looking bytes, quickly: a repeated 64 KiB random block
local block = {}
local x = 12345
for i = 1, 65536 do
  x = (x * 16807) % 2147483647
  block[i] = string.char(x % 256)
end
block = table.concat(block)
local image = string.rep(block, math.ceil(n / #block)):sub(1, n)
local b64 = core.b64encode(image)
local text = ": keep-alive\n\nevent: image_generation.completed\n"
  .. 'data: {"type":"image_generation.completed","b64_json":"' .. b64
  .. '","created_at":1780660800,"output_format":"png","usage":{"billed_amount":"0.033000"}}\n\n'
  .. "data: [DONE]\n\n"
block = nil -- luacheck: ignore
collectgarbage()

local CHUNK = 16384
local chunks = {}
for i = 1, #text, CHUNK do chunks[#chunks + 1] = text:sub(i, i + CHUNK - 1) end

local function time(label, f)
  local best = math.huge
  for _ = 1, 3 do
    collectgarbage()
    local t0 = os.clock()
    f()
    best = math.min(best, os.clock() - t0)
  end
  print(string.format("%-38s %7.1f ms  %7.0f MB/s of stream", label, best * 1000, #text / best / 1e6))
end

print(string.format("stream of %.1f MB carrying a %.1f MB image (%s)", #text / 1e6, n / 1e6, _VERSION))
time("sse_parser, 16 KiB chunks", function()
  local p = core.sse_parser()
  for i = 1, #chunks do p:feed(chunks[i]) end
  p:close()
end)
time("sse_parser images mode, 16 KiB chunks", function()
  local p = core.sse_parser{ images = true }
  local got
  for i = 1, #chunks do
    local evs = p:feed(chunks[i])
    for _, e in ipairs(evs) do if e.images[1] then got = e.images[1] end end
  end
  assert(got == image)
  p:close()
end)
time("sse_parser images mode, whole", function()
  local p = core.sse_parser{ images = true }
  assert(p:feed(text)[1].images[1] == image)
  p:close()
end)
time("omixa.stream, 16 KiB chunks", function()
  local s = stream.new({}, { max_bytes = 256 * 1024 * 1024 })
  for i = 1, #chunks do s:feed(chunks[i]) end
  local images = assert(s:finish())
  assert(images[1] == image)
end)
time("core.b64decode of the base64 alone", function()
  core.b64decode(b64)
end)
