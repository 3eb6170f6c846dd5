-- bench/clients/diy.lua — the do-it-yourself peer (Lua 5.4 or LuaJIT): what a
-- Lua user writes without omixa. luasocket's socket.http with ltn12 sinks,
-- lua-cjson, and the pure-Lua table-driven base64 of b64.lua.
--
--   lua diy.lua BASE WORKLOAD K N BYTES INPUT VERIFY
--
-- The same work as clients/omixa.lua: K requests with the same JSON body
-- (U: the input image read from its path, base64-encoded into a data URL),
-- each answer decoded to image strings in memory and checked (VERIFY as there).
local http = require "socket.http"
local ltn12 = require "ltn12"
local cjson = require "cjson"
local b64 = require "b64"

local base, workload, K, N, BYTES, input = arg[1], arg[2], tonumber(arg[3]), tonumber(arg[4]), tonumber(arg[5]), arg[6]
local verify = arg[7] ~= "-" and arg[7] or nil -- compare with <verify>-<i>.png

local function expected(i)
  local f = assert(io.open(verify .. "-" .. i .. ".png", "rb"))
  local s = f:read("*a")
  f:close()
  return s
end
local url = base .. "/images/generations"

local function fail(msg)
  io.stderr:write("diy client: ", workload, ": ", tostring(msg), "\n")
  os.exit(1)
end

local function body_of()
  local req = { model = "gemini-2.0-flash-preview-image-generation",
                prompt = "a lighthouse at dusk, watercolor", n = N }
  if workload == "U" then
    local f = assert(io.open(input, "rb"))
    local bytes = f:read("*a")
    f:close()
    req.input_images = { { type = "image_url", image_url = { url = "data:image/png;base64," .. b64.encode(bytes) } } }
  end
  return cjson.encode(req)
end

local function generate()
  local body = body_of()
  local chunks = {}
  local ok, code = http.request{
    url = url, method = "POST",
    headers = { ["content-type"] = "application/json", ["accept"] = "application/json",
                ["content-length"] = tostring(#body) },
    source = ltn12.source.string(body),
    sink = ltn12.sink.table(chunks),
  }
  if not ok then fail(code) end
  if code ~= 200 then fail("HTTP " .. tostring(code)) end
  local doc = cjson.decode(table.concat(chunks))
  local images = {}
  for i, item in ipairs(doc.data) do
    local bytes, err = b64.decode(item.b64_json)
    if not bytes then fail(err) end
    images[i] = bytes
  end
  return images, doc
end

-- As peer.py does (check(generate())): no local keeps the last images
-- alive during the next request.
local function check(images)
  if #images ~= N then fail("expected " .. N .. " images") end
  for i = 1, N do
    local img = images[i]
    if #img ~= BYTES or img:sub(1, 4) ~= "\137PNG" then
      fail("image " .. i .. " has " .. #img .. " bytes, expected a PNG of " .. BYTES)
    end
    if verify and img ~= expected(i) then fail("image " .. i .. " differs from " .. verify .. "-" .. i .. ".png") end
  end
end
for _ = 1, K do check((generate())) end
