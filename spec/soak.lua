-- spec/soak.lua: 500 generation requests against the stand-in, each with a
-- randomly chosen fault (seeded; the seed is printed). Checks that every
-- call returns images or an error object, that the service never saw more
-- requests for a call than the call says it attempted (no hidden resend of
-- an unknown outcome), that no file descriptor leaks, and that RSS grows by
-- less than 10 % between request 100 and request 500. The calls run as jobs,
-- 8 in flight at once (OMIXA_SOAK_CONCURRENCY).
--
--   lua5.4 spec/soak.lua            from the repository root, after `make`
--   OMIXA_SOAK_SEED=123 ...         replay a run;  OMIXA_SOAK_N=200 ... fewer requests
--   OMIXA_BUILD=build/lua5.1 lua5.1 spec/soak.lua    another Lua's core
--
-- Exit status 0 when every check holds, 1 otherwise. spec/run-all runs it.

package.path = "./lua/?.lua;./lua/?/init.lua;./spec/?.lua;" .. package.path
local build = os.getenv("OMIXA_BUILD")
package.cpath = ((build and build ~= "") and (build .. "/?.so;") or "./?.so;") .. package.cpath

local omixa = require "omixa"
local helpers = require "helpers"
local uv = require "luv"
local cjson = require "cjson"

local N = tonumber(os.getenv("OMIXA_SOAK_N")) or 500
local CONCURRENCY = tonumber(os.getenv("OMIXA_SOAK_CONCURRENCY")) or 8
local MARK = math.min(100, math.floor(N / 5)) -- RSS is compared between MARK and N
local seed = tonumber(os.getenv("OMIXA_SOAK_SEED")) or (os.time() % 1000000)
math.randomseed(seed)
io.write(("soak: seed %d (OMIXA_SOAK_SEED=%d replays it), %d requests\n"):format(seed, seed, N))
io.flush()

local function clock() return uv.hrtime() / 1e9 end

local function open_fds()
  local n = 0
  local req = assert(uv.fs_scandir("/proc/self/fd"))
  while uv.fs_scandir_next(req) do n = n + 1 end
  return n
end

local function rss_kib()
  local f = io.open("/proc/self/status", "r")
  local text = f and f:read("*a") or ""
  if f then f:close() end
  return tonumber(text:match("VmRSS:%s*(%d+)"))
end

local function settle()
  collectgarbage("collect")
  collectgarbage("collect")
end

local srv = helpers.serve()
local port = srv.origin:match(":(%d+)$")

-- Faults, with weights. Each entry: fault list to queue, and optionally
-- client (which client), call options, request fields.
local ra0 = "0"
local function pick(list) return list[math.random(#list)] end
local RETRIED = { 408, 409, 429, 500, 502, 503, 504 }
local NOT_RETRIED = { 400, 401, 402, 403, 404, 422, 501 }
local BODIES = { "envelope", "html", "empty" }

local MENU = {
  { 30, function() return { {} } end },
  { 3, function() return { { chunked = true } } end },
  { 3, function() return { { gzip = true } } end },
  { 2, function() return { { escape_slashes = true } } end },
  { 3, function() return { { url_only = true } } end },
  { 2, function() return { { url_only = true, url_base = "http://localhost:" .. port } } end },
  { 2, function() return { { raw_image = true } } end },
  { 2, function() return { {} }, nil, nil, { n = 2 } end },
  { 2, function() return { {} }, nil, nil, { output_format = pick{ "jpeg", "webp" } } end },
  { 6, function() return { { status = pick(RETRIED), body = pick(BODIES), retry_after = ra0 } } end },
  { 4, function()
      local f = { status = pick(RETRIED), body = pick(BODIES), retry_after = ra0 }
      return { f, f, f }
    end },
  { 6, function() return { { status = pick(NOT_RETRIED), body = pick(BODIES) } } end },
  { 1, function() return { { status = 429, retry_after = "120" } } end },
  { 3, function() return { { cut = "before_status" } } end },
  { 3, function() return { { cut = "mid_headers" } } end },
  { 3, function() return { { cut = "mid_body" } } end },
  { 3, function() return { { truncate = true } } end },
  { 2, function() return { { malformed = true } } end },
  { 2, function() return { { bad_base64 = true } } end },
  { 2, function() return { { empty_data = true } } end },
  { 1, function() return { { delay = 0.4 } }, nil, { timeout = 0.15 } end },
  { 1, function() return { { trickle = { bytes = 1, interval = 3 } } }, nil, { idle_timeout = 0.2 } end },
  { 2, function() return { { pad = 300000 } }, "small" end },
  { 1, function() return { { url_only = true } }, "small" end },
  { 1, function() return { { delay = 0.3 } }, nil, { on_progress = function(p) return p.phase ~= "waiting" end } end },
  { 1, function() return { { cut = "mid_body" } }, nil, { retry_unknown = true, max_retries = 1 } end },
}
local total_weight = 0
for _, m in ipairs(MENU) do total_weight = total_weight + m[1] end
local function choose()
  local r = math.random() * total_weight
  for _, m in ipairs(MENU) do
    r = r - m[1]
    if r <= 0 then return m[2]() end
  end
  return MENU[1][2]()
end

local KINDS = { config = true, network = true, tls = true, timeout = true, api = true, protocol = true,
                no_image = true, cancelled = true, too_large = true }

settle()
local fds_before = open_fds()
local main = omixa.new{ base_url = srv.url, concurrency = CONCURRENCY }
local small = omixa.new{ base_url = srv.url, max_response_bytes = 200000, concurrency = CONCURRENCY }

local failures = {}
local function fail(msg)
  failures[#failures + 1] = msg
  if #failures <= 20 then io.write("soak: FAIL ", msg, "\n") end
end

local counts = { images = 0 }
local attempts_of, fault_of = {}, {}
local rss_mark
local started = clock()

local function record(i, ok, images, info)
  if not ok then
    fail(("call %d raised: %s"):format(i, tostring(images)))
  elseif type(images) == "table" then
    if #images < 1 or type(images[1]) ~= "string" or #images[1] == 0 then
      fail(("call %d returned an empty image list"):format(i))
    end
    counts.images = counts.images + 1
    attempts_of[i] = info.attempts
  elseif omixa.is_error(info) and KINDS[info.kind] and type(info.attempts) == "number" then
    counts[info.kind] = (counts[info.kind] or 0) + 1
    attempts_of[i] = info.attempts
  else
    fail(("call %d returned neither images nor an error object: %s, %s"):format(i, tostring(images), tostring(info)))
  end
end

-- Batches of CONCURRENCY jobs in flight at once: their faults are queued
-- together and taken by the requests in the order they reach the stand-in.
local done_calls = 0
while done_calls < N do
  local batch, queue = {}, {}
  for _ = 1, math.min(CONCURRENCY, N - done_calls) do
    done_calls = done_calls + 1
    local i = done_calls
    local faults, which, call_opts, fields = choose()
    for _, f in ipairs(faults) do queue[#queue + 1] = f end
    fault_of[i] = cjson.encode(faults)
    local client, fresh = main, false
    if which == "small" then
      client = small
    elseif math.random() < 0.05 then
      -- now and then a client of its own: closed, or dropped for the collector
      client, fresh = omixa.new{ base_url = srv.url }, true
    end
    local request = { prompt = "soak " .. i, size = pick{ "0.5K", "1K" } }
    for k, v in pairs(fields or {}) do request[k] = v end
    batch[#batch + 1] = { i = i, client = client, fresh = fresh, request = request, call_opts = call_opts }
  end
  srv:faults(queue)
  for _, b in ipairs(batch) do
    local ok, job = pcall(b.client.start, b.client, b.request, b.call_opts)
    if ok then b.job = job else b.raised = job end
  end
  for _, b in ipairs(batch) do
    if b.job then
      record(b.i, pcall(b.job.wait, b.job))
    else
      record(b.i, false, b.raised)
    end
    if b.fresh and math.random() < 0.5 then b.client:close() end
  end
  if not rss_mark and done_calls >= MARK then
    settle()
    rss_mark = rss_kib()
  end
end
local elapsed = clock() - started
settle()
local rss_end = rss_kib()

-- Requests the service saw, per call, against the attempts each call reports.
local seen = {}
for _, r in ipairs(srv:requests()) do
  local i = tonumber(r.body:match('"prompt":"soak (%d+)"'))
  if i then seen[i] = (seen[i] or 0) + 1 end
end
local resent = 0
for i = 1, N do
  local a, s = attempts_of[i], seen[i] or 0
  if a and s > a then
    resent = resent + 1
    fail(("call %d: the service saw %d requests, the call reports %d attempt%s (faults %s)"):format(
      i, s, a, a == 1 and "" or "s", fault_of[i]))
  end
end

main:close()
small:close()
settle()
local fds_after = open_fds()
srv:stop()

if fds_after ~= fds_before then
  fail(("file descriptors: %d before, %d after"):format(fds_before, fds_after))
end
local growth = rss_mark and rss_end and (rss_end - rss_mark) / rss_mark * 100
if not growth then
  fail("cannot read VmRSS from /proc/self/status")
elseif growth >= 10 then
  fail(("RSS grew by %.1f %% between request %d (%d KiB) and %d (%d KiB)"):format(growth, MARK, rss_mark, N, rss_end))
end

local kinds = {}
for k, v in pairs(counts) do if k ~= "images" then kinds[#kinds + 1] = k .. " " .. v end end
table.sort(kinds)
io.write(("soak: %d calls in %.1f s: %d with images, %d errors (%s)\n"):format(N, elapsed, counts.images,
  N - counts.images, table.concat(kinds, ", ")))
io.write(("soak: file descriptors %d before, %d after; RSS %d KiB at request %d, %d KiB at %d (%+.1f %%); "
  .. "%d call%s sent more often than attempted\n"):format(fds_before, fds_after, rss_mark or -1, MARK,
  rss_end or -1, N, growth or 0, resent, resent == 1 and "" or "s"))
io.write(("soak: %s (seed %d)\n"):format(#failures == 0 and "ok" or (#failures .. " failed checks"), seed))
os.exit(#failures == 0 and 0 or 1, true)
