-- bench/clients/omixa.lua — the omixa client of the bench (Lua 5.4 or LuaJIT).
--
--   lua omixa.lua BASE WORKLOAD K N BYTES INPUT VERIFY
--
-- Makes K requests (C8: K batches of 8 at concurrency 8) to BASE with one
-- client, as a user would: omixa.new{base_url=...}:generate{...}; each
-- answer's images are decoded to Lua strings and checked (count, size, PNG
-- signature; with VERIFY, not "-", every byte against VERIFY-<i>.png).
-- K = 0 loads everything and builds the client and the request but sends
-- nothing: the runner subtracts that run. P prints the time of one
-- job:poll() with 8 jobs in flight. C8 and P print "n/a (not built yet)"
-- while omixa has no non-blocking jobs.
--
--   lua omixa.lua BASE WORKLOAD K N BYTES INPUT VERIFY steady
--
-- Steady state: one warm-up call, then K calls, each timed alone; prints
-- one line per call, "call <ms> <minor faults>" (minflt of /proc/self/stat
-- across the call), then "rss <KiB before the first call> <peak KiB>"
-- (VmRSS, and VmHWM after the calls: the peak RSS added is their
-- difference). The previous call's images are garbage before the next.
local omixa = require "omixa"
local core = require "omixa.core"

local base, workload, K, N, BYTES, input = arg[1], arg[2], tonumber(arg[3]), tonumber(arg[4]), tonumber(arg[5]), arg[6]
local verify = arg[7] ~= "-" and arg[7] or nil -- compare with <verify>-<i>.png
local steady = arg[8] == "steady"

local function expected(i)
  local f = assert(io.open(verify .. "-" .. i .. ".png", "rb"))
  local s = f:read("*a")
  f:close()
  return s
end

local function fail(msg)
  io.stderr:write("omixa client: ", workload, ": ", tostring(msg), "\n")
  os.exit(1)
end

local function check(images)
  if type(images) ~= "table" or #images ~= N then fail("expected " .. N .. " images") end
  for i = 1, N do
    local img = images[i]
    if #img ~= BYTES or img:sub(1, 4) ~= "\137PNG" then
      fail("image " .. i .. " has " .. #img .. " bytes, expected a PNG of " .. BYTES)
    end
    if verify and img ~= expected(i) then fail("image " .. i .. " differs from " .. verify .. "-" .. i .. ".png") end
  end
end

local client = omixa.new{ base_url = base, concurrency = 8, timeout = 60 }
local request = { prompt = "a lighthouse at dusk, watercolor", n = N }
if workload == "U" then request.input_images = { input } end

if workload == "C8" then
  if type(client.generate_many) ~= "function" then print("n/a (not built yet)") return end
  local batch = {}
  for i = 1, 8 do batch[i] = request end
  for _ = 1, K do
    local results = client:generate_many(batch)
    for i = 1, 8 do
      local r = results[i]
      if not r or not r.images then fail(r and r.err or "no result") end
      check(r.images)
    end
  end
elseif workload == "P" then
  if type(client.start) ~= "function" then print("n/a (not built yet)") return end
  -- 8 jobs against the 500 ms delay; poll about once a millisecond (as a
  -- game or editor loop would) and time each poll while none has finished.
  local jobs = {}
  for i = 1, 8 do jobs[i] = client:start(request) end
  local times, n = {}, 0
  local running = true
  while running do
    local t0 = core.now()
    jobs[1]:poll()
    local dt = core.now() - t0
    for i = 1, 8 do
      if jobs[i]:done() then running = false end
    end
    if running then n = n + 1; times[n] = dt end
    core.sleep(0.001)
  end
  for i = 1, 8 do
    local images, err = jobs[i]:wait()
    if not images then fail(err) end
    check(images)
  end
  if n == 0 then fail("no poll while 8 jobs were in flight") end
  table.sort(times)
  print(string.format("poll_ms %.6f %.6f %d", times[math.floor((n + 1) / 2)] * 1000, times[n] * 1000, n))
elseif steady then
  -- Field 10 of /proc/self/stat (minflt), after the command's ")".
  local function minflt()
    local f = assert(io.open("/proc/self/stat", "rb"))
    local st = f:read("*a")
    f:close()
    local n = 2
    for x in st:match("%) (.*)$"):gmatch("%S+") do
      n = n + 1
      if n == 10 then return tonumber(x) end
    end
  end
  local function status_kib(field)
    local f = assert(io.open("/proc/self/status", "rb"))
    local st = f:read("*a")
    f:close()
    return tonumber(st:match(field .. ":%s*(%d+)"))
  end
  local function one(images, info)
    if not images then fail(info) end
    check(images)
  end
  local rss0 = status_kib("VmRSS")
  one(client:generate(request)) -- warm-up: connection, first rooms
  local out = {}
  for i = 1, K do
    local f0, t0 = minflt(), core.now()
    local images, info = client:generate(request)
    local dt, f1 = core.now() - t0, minflt()
    one(images, info)
    images = nil -- luacheck: ignore 311
    out[i] = string.format("call %.4f %d", dt * 1000, f1 - f0)
  end
  out[#out + 1] = string.format("rss %d %d", rss0, status_kib("VmHWM"))
  print(table.concat(out, "\n"))
else
  -- As peer.py does (check(generate())): no local keeps the last images
  -- alive during the next request.
  local function one(images, info)
    if not images then fail(info) end
    check(images)
  end
  for _ = 1, K do one(client:generate(request)) end
end
client:close()
