-- examples/game_loop.lua — a plain-Lua game loop at 60 frames a second that
-- generates images without ever dropping a frame: it starts its jobs, then
-- each frame polls every job once (job:poll() never waits), "draws" (prints
-- one line) and sleeps until the next frame. A blocking call here would
-- freeze the loop for as long as the image takes.
--
--   lua5.4 examples/game_loop.lua [JOBS [DIR]]   -- JOBS images (4), saved into DIR (made if missing) when given
--
-- Each frame prints "frame N  <ms since the previous frame> ms  poll <ms
-- spent in job:poll()> ms  <state of each job>"; each finished job one "job I ..."
-- line; the last line sums up. Exit status 0 when every job gave an image.
-- The client comes from the environment (OMIXA_BASE_URL, OMIXA_API_KEY).
local omixa = require "omixa"
local core = require "omixa.core" -- now() (monotonic seconds) and sleep(s)

local now, sleep = core.now, core.sleep
local FRAME = 1 / 60
local PROMPTS = { "a red fox in snow", "a paper boat on a pond", "a lighthouse at dusk", "a tin robot reading" }

local njobs = tonumber(arg and arg[1]) or 4
local dir = arg and arg[2]
if dir then -- created when missing (POSIX mkdir -p)
  assert(os.execute("mkdir -p '" .. dir:gsub("'", "'\\''") .. "'"), "cannot create " .. dir)
end

local client = omixa.new{ concurrency = njobs }
local jobs = {}
local t_start = now()
for i = 1, njobs do
  jobs[i] = { job = client:start{ prompt = PROMPTS[(i - 1) % #PROMPTS + 1] } }
end
print(("started %d jobs in %.2f ms"):format(njobs, (now() - t_start) * 1000))

local polling = 0 -- seconds spent in job:poll() this frame

-- What a job shows this frame, and its line when it has just finished.
local function update(i, j)
  if j.finished then return j.shown end
  local t = now()
  local done = j.job:poll()
  polling = polling + (now() - t)
  if not done then
    local p = j.job:progress()
    return p.phase .. (p.received > 0 and (" " .. p.received .. " B") or "")
  end
  j.finished = true
  local images, info = j.job:result()
  if not images then
    j.failed = true
    j.shown = "failed"
    print(("job %d failed: %s"):format(i, tostring(info)))
    return j.shown
  end
  local img = info.images[1]
  local where = ""
  if dir then
    where = ("%s/job-%d.%s"):format(dir, i, img.format)
    assert(omixa.save(images[1], where))
    where = " -> " .. where
  end
  j.shown = ("%dx%d"):format(img.width or 0, img.height or 0)
  print(("job %d done: %s %dx%d %d bytes in %.2f s%s"):format(i, img.mime, img.width or 0, img.height or 0,
    img.bytes, info.elapsed, where))
  return j.shown
end

local frame, worst, worst_poll = 0, 0, 0
local prev = now()
local next_frame = prev
while true do
  local t = now()
  local dt = t - prev
  prev = t
  frame = frame + 1
  if dt > worst then worst = dt end

  local shown, left = {}, 0
  polling = 0
  for i, j in ipairs(jobs) do
    shown[i] = update(i, j)
    if not j.finished then left = left + 1 end
  end
  if polling > worst_poll then worst_poll = polling end

  print(("frame %d  %.1f ms  poll %.3f ms  [%s]"):format(frame, dt * 1000, polling * 1000, table.concat(shown, " | ")))
  if left == 0 then break end

  next_frame = next_frame + FRAME
  local wait = next_frame - now()
  if wait > 0 then sleep(wait) else next_frame = now() end -- late: do not try to catch up
end
client:close()

local failed = 0
for _, j in ipairs(jobs) do if j.failed then failed = failed + 1 end end
print(("%d of %d images in %.2f s, %d frames, worst frame %.1f ms, worst poll %.3f ms"):format(
  njobs - failed, njobs, now() - t_start, frame, worst * 1000, worst_poll * 1000))
os.exit(failed == 0 and 0 or 1)
