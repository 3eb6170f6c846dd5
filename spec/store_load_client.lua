-- spec/store_load_client.lua — one plain-Lua process of the load test
-- (spec/81-store_load_spec.lua): N image requests at once, through the
-- non-blocking API, on a budget kept in Redis.
--
--   lua store_load_client.lua REDIS_PORT BASE_URL LIMIT_MICROS N PREFIX
--
-- Prints one line per request: "ok <billed micros>", "budget", "store",
-- or "error <kind>"; "lat <method> <seconds>" for each store call (the
-- latency the store adds); then "spent <micros>" and "mode <integrated|by-hand>".
--
-- Integrated: the client takes the store (omixa.new{ store = s, max_spend }),
-- as API.md "Sharing across workers and hosts" says. Until the client
-- accepts `store`, by hand: reserve each request's estimate in the store,
-- start the jobs that got a hold, settle each with its billed_amount.
package.path = package.path .. ";/usr/share/lua/5.3/?.lua" -- redis-lua is plain Lua
local omixa = require "omixa"
local budget = require "omixa.budget"
local now = require("omixa.core").now

local port, base, limit, n, prefix = tonumber(arg[1]), arg[2], tonumber(arg[3]), tonumber(arg[4]), arg[5]

-- A store of one's own: store.redis, each call timed.
local inner = omixa.store.redis(require("redis").connect("127.0.0.1", port), { prefix = prefix })
local timed = {}
for _, m in ipairs(omixa.store.METHODS) do
  timed[m] = function(_, ...)
    local t0 = now()
    local r = { inner[m](inner, ...) }
    print(("lat %s %.6f"):format(m, now() - t0))
    return (table.unpack or unpack)(r, 1, 2)
  end
end

local request = { prompt = "a lighthouse at dusk" }
local integrated = pcall(omixa.new, { base_url = base, api_key = "k", store = timed })
local c
if integrated then
  c = omixa.new{ base_url = base, api_key = "k", store = timed, max_spend = budget.format(limit) }
else
  c = omixa.new{ base_url = base, api_key = "k" }
end

local est = budget.parse(omixa.models[c.model or omixa.models.default].price)
local jobs = {}
-- Start one request (after its hold, by hand): nothing, or a line to print.
local function launch()
  local hold
  if not integrated then
    local total
    hold, total = timed:reserve(est, limit, 360)
    if hold == nil then return "store" end
    if hold == false then return "budget", total end
  end
  local ok, job, jerr = pcall(c.start, c, request)
  if ok and job then
    jobs[#jobs + 1] = { job = job, hold = hold }
    return nil
  end
  if hold then timed:settle(hold, 0) end
  local e = ok and jerr or job
  return "error " .. tostring(type(e) == "table" and e.kind or e)
end
for _ = 1, n do
  local line = launch()
  if line then print(line) end
end
for _, j in ipairs(jobs) do
  local images, info = j.job:wait()
  if images then
    local billed = budget.parse(info.billed_amount or "") or est
    if j.hold then timed:settle(j.hold, billed) end
    print("ok " .. billed)
  else
    if j.hold then timed:settle(j.hold, info.maybe_billed and est or 0) end
    print(info.kind == "budget" and "budget" or info.kind == "store" and "store" or ("error " .. tostring(info.kind)))
  end
end
print("spent " .. tostring(integrated and budget.parse(c:spent()) or inner:spent()))
print("mode " .. (integrated and "integrated" or "by-hand"))
