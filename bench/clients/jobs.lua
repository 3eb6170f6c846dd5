-- bench/clients/jobs.lua — hundreds of jobs on one omixa client (issue 18,
-- point 4), Lua 5.4 or LuaJIT, against the bench's nginx.
--
--   lua jobs.lua BASE JOBS DELAY WAIT MANY
--
-- BASE/d<s> answers after s seconds (one small image). Prints lines
-- "key value ...":
--   poll <median us> <p99 us> <max us> <calls>   job:poll() with JOBS jobs in
--       flight against the DELAY s server delay (one call about every ms,
--       round-robin over the jobs, while none has finished)
--   idle_job <bytes of RSS per job> <bytes of Lua heap per job>   what a job
--       in flight costs while it waits (VmRSS and collectgarbage("count")
--       before the jobs are started and once all are waiting)
--   jobs_done <ok> <of>
--   fdwait <cpu s> <wall s> <wakeups>   a luv loop watching client:fd() with
--       one job in flight against a delay of WAIT + 2 s: the process CPU time
--       (utime + stime of /proc/self/stat) over WAIT s of waiting
--   many <wall s> <ok> <of>   client:generate_many of MANY requests at
--       concurrency MANY against the DELAY s delay
local omixa = require "omixa"
local core = require "omixa.core"

local base, JOBS, DELAY, WAIT, MANY = arg[1], tonumber(arg[2]), tonumber(arg[3]), tonumber(arg[4]), tonumber(arg[5])
local now, sleep = core.now, core.sleep

local function fail(msg)
  io.stderr:write("jobs client: ", tostring(msg), "\n")
  os.exit(1)
end

local function slurp(path)
  local f = assert(io.open(path, "rb"))
  local s = f:read("*a")
  f:close()
  return s
end

local TICK = 100 -- sysconf(_SC_CLK_TCK) on Linux
local function cpu_seconds()
  local rest = slurp("/proc/self/stat"):match("%) (.*)$")
  local f = {}
  for x in rest:gmatch("%S+") do f[#f + 1] = tonumber(x) end
  return (f[12] + f[13]) / TICK -- utime, stime (fields 14, 15)
end

local function rss_bytes()
  return tonumber(slurp("/proc/self/status"):match("VmRSS:%s*(%d+)")) * 1024
end

local function url(delay) return base .. "/d" .. delay end
local request = { prompt = "a lighthouse at dusk, watercolor" }

-- 1. JOBS jobs in flight: job:poll() cost and the memory of an idle job.
do
  local client = omixa.new{ base_url = url(DELAY), concurrency = JOBS, max_retries = 0, timeout = 60 }
  client:poll() -- the engine and the multi exist before the baseline
  collectgarbage("collect")
  local rss0, heap0 = rss_bytes(), collectgarbage("count") * 1024
  local jobs = {}
  local t_start = now()
  for i = 1, JOBS do jobs[i] = client:start(request) end
  local waiting = 0 -- until every request is out and waiting for its answer
  while waiting < JOBS and now() - t_start < DELAY / 2 do
    client:poll()
    sleep(0.001)
    waiting = 0
    for i = 1, JOBS do
      if jobs[i]:progress().phase == "waiting" then waiting = waiting + 1 end
    end
  end
  collectgarbage("collect")
  local rss1, heap1 = rss_bytes(), collectgarbage("count") * 1024
  local times, k = {}, 0
  while true do
    k = k % JOBS + 1
    local t = now()
    local finished = jobs[k]:poll()
    local dt = now() - t
    if finished then break end
    times[#times + 1] = dt
    sleep(0.001)
  end
  local ok = 0
  for _, j in ipairs(jobs) do
    if j:wait(30) and j:result() then ok = ok + 1 end
  end
  client:close()
  if #times == 0 then fail("no poll while the jobs were in flight") end
  table.sort(times)
  local function at(p) return times[math.max(1, math.ceil(#times * p))] * 1e6 end
  print(("poll %.1f %.1f %.1f %d"):format(at(0.5), at(0.99), times[#times] * 1e6, #times))
  print(("idle_job %.0f %.0f"):format((rss1 - rss0) / JOBS, (heap1 - heap0) / JOBS))
  print(("jobs_done %d %d"):format(ok, JOBS))
end

-- 2. A host loop waiting on client:fd() while nothing arrives.
do
  local ok_uv, uv = pcall(require, "luv")
  if not ok_uv then
    print("fdwait n/a (no luv)")
  else
    local client = omixa.new{ base_url = url(WAIT + 2), max_retries = 0, timeout = 60 }
    local job = client:start(request)
    local wakeups, watcher = 0, uv.new_poll(client:fd())
    local function on_readable()
      wakeups = wakeups + 1
      if job:poll() then watcher:stop() end
    end
    watcher:start("r", on_readable)
    -- Let the request go out, then measure WAIT s of waiting.
    local settle, measure = uv.new_timer(), uv.new_timer()
    local cpu0, t0, w0, cpu1, t1, w1
    settle:start(500, 0, function()
      cpu0, t0, w0 = cpu_seconds(), now(), wakeups
      measure:start(math.floor(WAIT * 1000), 0, function()
        cpu1, t1, w1 = cpu_seconds(), now(), wakeups
      end)
    end)
    uv.run("default")
    settle:close()
    measure:close()
    watcher:close()
    uv.run("nowait")
    if not (job:done() and job:result()) then fail("the fd-driven job did not finish") end
    client:close()
    print(("fdwait %.3f %.3f %d"):format(cpu1 - cpu0, t1 - t0, w1 - w0))
  end
end

-- 3. generate_many of MANY at concurrency MANY.
do
  local client = omixa.new{ base_url = url(DELAY), concurrency = MANY, max_retries = 0, timeout = 60 }
  local batch = {}
  for i = 1, MANY do batch[i] = request end
  local t = now()
  local results = client:generate_many(batch)
  local wall = now() - t
  local ok = 0
  for i = 1, MANY do
    if results[i] and results[i].images then ok = ok + 1 end
  end
  client:close()
  print(("many %.3f %d %d"):format(wall, ok, MANY))
end
