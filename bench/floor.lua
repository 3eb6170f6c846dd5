-- bench/floor.lua — what any Lua client must add to the curl floor on a
-- workload, whatever its transport: decode the base64 text of its images
-- (here with omixa's own decoder, the fastest we have, into memory that is
-- already there) and make each image a Lua string. curl only moves the
-- bytes; a Lua program that wants the image as a value cannot skip these.
--
--   lua bench/floor.lua ANSWER.json K   -> "decode_ms string_ms"
--   lua bench/floor.lua BYTES K strings   -> "rss_added_mib"
--       makes a Lua string of BYTES bytes (from bytes in memory) K times in
--       a loop, each becoming garbage as in the clients, and prints how much
--       the peak RSS grew over the loop (Linux: VmHWM after resetting it):
--       what the interpreter's collector and malloc keep of such strings,
--       with no transport and no decoding at all.
--
-- decode_ms: the base64 of every image, decoded in 1 MiB pieces (so the
-- output memory is reused, as a client's decoding buffer would be), each
-- piece timed as core.b64decode minus making its Lua string; string_ms:
-- making each whole image a Lua string from bytes already in memory
-- (buffer:string()). Medians over K runs.
local core = require "omixa.core"
local cjson = require "cjson"

local path, K, mode = arg[1], tonumber(arg[2] or "20"), arg[3]
local PIECE = 1048576 -- a multiple of 4

local function median(t)
  table.sort(t)
  return t[math.floor((#t + 1) / 2)]
end

local function keep(s) return #s end -- the string becomes garbage, as in a client

-- Median seconds of F() over K runs.
local function time(fn)
  local t = {}
  for i = 1, K do
    local t0 = core.now()
    fn()
    t[i] = core.now() - t0
  end
  return median(t)
end

if mode == "strings" then
  local function status(field)
    local f = assert(io.open("/proc/self/status"))
    local v = f:read("*a"):match(field .. ":%s*(%d+)")
    f:close()
    return tonumber(v)
  end
  local img = core.build_body({ string.rep("\0", tonumber(path)) })
  collectgarbage()
  collectgarbage()
  local clear = io.open("/proc/self/clear_refs", "w") -- "5": reset the peak RSS
  if clear then clear:write("5"); clear:close() end
  local before = status("VmRSS")
  for _ = 1, K do keep(img:string()) end
  print(string.format("%.1f", (status("VmHWM") - before) / 1024))
  img:close()
  return
end

local f = assert(io.open(path, "rb"))
local doc = cjson.decode(f:read("*a"))
f:close()

local decode, make = 0, 0
for _, item in ipairs(doc.data) do
  local text = item.b64_json
  for at = 1, #text, PIECE do
    local piece = text:sub(at, at + PIECE - 1)
    local out = core.build_body({ assert(core.b64decode(piece)) })
    local both = time(function() keep(core.b64decode(piece)) end)
    local str = time(function() keep(out:string()) end)
    out:close()
    decode = decode + math.max(both - str, 0)
  end
  local img = core.build_body({ assert(core.b64decode(text)) })
  make = make + time(function() keep(img:string()) end)
  img:close()
end
print(string.format("%.3f %.3f", decode * 1000, make * 1000))
