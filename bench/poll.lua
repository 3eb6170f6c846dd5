-- bench/poll.lua — what one poll costs the host's loop (issue 4): the time
-- of one job:poll() and one client:poll() call with 8 jobs in flight
-- against the local stand-in (each answer held back 3 s), then of the polls
-- that finish jobs (they parse the answers and decode the images). Prints
-- the median, 99th percentile and maximum of each; reports, never fails.
--
--   make && lua5.4 bench/poll.lua                       from the repository root
--   make LUA=luajit core && OMIXA_BUILD=build/luajit luajit bench/poll.lua
--   OMIXA_BENCH_JOBS=16 lua5.4 bench/poll.lua
package.path = "./lua/?.lua;./lua/?/init.lua;./spec/?.lua;" .. package.path
local build = os.getenv("OMIXA_BUILD")
package.cpath = ((build and build ~= "") and (build .. "/?.so;") or "./?.so;") .. package.cpath

local omixa = require "omixa"
local helpers = require "helpers"
local core = require "omixa.core"

local now, sleep = core.now, core.sleep
local JOBS = tonumber(os.getenv("OMIXA_BENCH_JOBS")) or 8
local DELAY = 3       -- seconds the stand-in holds each answer
local PHASE = 0.8     -- seconds each in-flight measurement runs
local GAP = 0.001     -- seconds between two calls (a loop doing other work)

local function stats(label, t)
  table.sort(t)
  local function at(p) return t[math.max(1, math.ceil(#t * p))] * 1e6 end
  print(("%-34s %6d calls  median %8.1f us  p99 %8.1f us  max %8.1f us"):format(
    label, #t, at(0.5), at(0.99), t[#t] * 1e6))
end

local srv = helpers.serve()
local faults = {}
for i = 1, JOBS do faults[i] = { delay = DELAY } end
srv:faults(faults)

local client = omixa.new{ base_url = srv.url, concurrency = JOBS, max_retries = 0 }
local jobs = {}
local t_start = now()
for i = 1, JOBS do jobs[i] = client:start{ prompt = "bench " .. i } end

-- Until every request has been sent and is waiting for its answer.
local function all_waiting()
  for _, j in ipairs(jobs) do
    if j:progress().phase ~= "waiting" then return false end
  end
  return true
end
while not all_waiting() and now() - t_start < 2 do client:poll(); sleep(GAP) end

local job_poll, client_poll, finishing = {}, {}, {}
local k = 0
local t_end = now() + PHASE
while now() < t_end do
  k = k % JOBS + 1
  local t = now()
  jobs[k]:poll()
  job_poll[#job_poll + 1] = now() - t
  sleep(GAP)
end
t_end = now() + PHASE
while now() < t_end do
  local t = now()
  client:poll()
  client_poll[#client_poll + 1] = now() - t
  sleep(GAP)
end
local in_flight = client:poll()

-- The answers come: time the calls that finish jobs.
local left, give_up = JOBS, now() + DELAY + 30
while left > 0 and now() < give_up do
  local t = now()
  local n = client:poll()
  local dt = now() - t
  if n < left then
    finishing[#finishing + 1] = dt
    left = n
  end
  sleep(GAP)
end
local ok = 0
for _, j in ipairs(jobs) do if j:done() and j:result() then ok = ok + 1 end end
client:close()
srv:stop()

print(("omixa poll cost, %s, %d jobs in flight (%d still running after the in-flight phases)"):format(
  type(jit) == "table" and jit.version or _VERSION, JOBS, in_flight))
stats("job:poll(), jobs in flight", job_poll)
stats("client:poll(), jobs in flight", client_poll)
stats("client:poll() finishing 1+ jobs", finishing)
print(("%d of %d jobs gave an image, %.2f s in all"):format(ok, JOBS, now() - t_start))
