-- bench/deadlines.lua: how precisely connect_timeout, timeout and
-- idle_timeout fire. For each deadline and value it prints the configured
-- value, the measured time to fire (each run, and the worst), and whether the
-- worst is within 10 % + 200 ms of the value (the goal of issue 3). It only
-- reports; it never fails.
--
--   make && lua5.4 bench/deadlines.lua        from the repository root
--   OMIXA_BENCH_RUNS=5 lua5.4 bench/deadlines.lua
--
-- connect_timeout: a loopback listener whose accept queue is full (see
-- spec/blackhole.lua); timeout: the stand-in answers after value + 3 s;
-- idle_timeout: the stand-in sends the headers and one byte, then nothing
-- ("a stall"), or a 4 KiB piece every 0.9 s ("gaps"), which never leaves a
-- second of silence.

package.path = "./lua/?.lua;./lua/?/init.lua;./spec/?.lua;" .. package.path
local build = os.getenv("OMIXA_BUILD")
package.cpath = ((build and build ~= "") and (build .. "/?.so;") or "./?.so;") .. package.cpath

local omixa = require "omixa"
local helpers = require "helpers"
local blackhole = require "blackhole"
local uv = require "luv"

local RUNS = tonumber(os.getenv("OMIXA_BENCH_RUNS")) or 2
local VALUES = { 0.3, 0.5, 1, 1.5, 2 }

local function clock() return uv.hrtime() / 1e9 end

-- Seconds until the call returned, and its error.
local function fire(opts, faults, srv)
  if srv then srv:faults(faults) end
  local c = omixa.new(opts)
  local t = clock()
  local images, err = c:generate{ prompt = "a metronome" }
  local elapsed = clock() - t
  c:close()
  if images then return elapsed, "returned images" end
  return elapsed, err.kind ~= "timeout" and ("kind " .. err.kind) or nil
end

local srv = helpers.serve()
local rows = {}

local function measure(name, value, setup)
  local times, note = {}, nil
  for r = 1, RUNS do
    local elapsed, odd = setup(value)
    times[r] = elapsed
    note = note or odd
  end
  local worst = times[1]
  for _, t in ipairs(times) do
    if math.abs(t - value) > math.abs(worst - value) then worst = t end
  end
  local limit = value * 0.1 + 0.2
  local each = {}
  for i, t in ipairs(times) do each[i] = ("%.3f"):format(t) end
  rows[#rows + 1] = { name, value, table.concat(each, " "), worst, math.abs(worst - value) <= limit, note }
  io.write(("%-28s %6.3f  %-24s %7.3f  %+7.3f  %6.3f  %s%s\n"):format(name, value, table.concat(each, " "),
    worst, worst - value, limit, math.abs(worst - value) <= limit and "yes" or "NO",
    note and ("  (" .. note .. ")") or ""))
  io.flush()
end

io.write(("omixa %s, libcurl %s, %s; %d run%s each\n"):format(omixa._VERSION, require("omixa.core").curl_version(),
  _VERSION, RUNS, RUNS == 1 and "" or "s"))
io.write(("%-28s %6s  %-24s %7s  %7s  %6s  %s\n"):format("deadline", "value", "fired after (s)", "worst",
  "late", "limit", "within 10 % + 200 ms"))

for _, v in ipairs(VALUES) do
  measure("connect_timeout", v, function(value)
    local hole = blackhole.open()
    local elapsed, note = fire({ base_url = hole.url, connect_timeout = value, max_retries = 0 })
    hole:close()
    return elapsed, note
  end)
end
for _, v in ipairs(VALUES) do
  measure("timeout", v, function(value)
    return fire({ base_url = srv.url, timeout = value, max_retries = 0 }, { { delay = value + 3 } }, srv)
  end)
end
for _, v in ipairs(VALUES) do
  measure("idle_timeout (a stall)", v, function(value)
    return fire({ base_url = srv.url, idle_timeout = value, timeout = value + 10, max_retries = 0 },
      { { trickle = { bytes = 1, interval = value + 10 } } }, srv)
  end)
end
for _, v in ipairs({ 0.3, 0.5 }) do
  measure("idle_timeout (0.9 s gaps)", v, function(value)
    return fire({ base_url = srv.url, idle_timeout = value, timeout = 4, max_retries = 0 },
      { { trickle = { bytes = 4096, interval = 0.9 } } }, srv)
  end)
end
srv:stop()

local bad = 0
for _, r in ipairs(rows) do if not r[5] then bad = bad + 1 end end
io.write(("%d of %d deadlines within 10 %% + 200 ms\n"):format(#rows - bad, #rows))
