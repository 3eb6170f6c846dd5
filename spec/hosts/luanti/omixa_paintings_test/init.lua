-- omixa_paintings_test (spec/hosts/check): with no client connected, runs
-- the /paint command at the first server step, records every step's dtime
-- with what the painting's job was doing during it, checks that the media
-- file exists with the bytes the job received (a PNG of the pixel size it
-- reported), writes the report (<world>/omixa_paintings_test.txt: one
-- "key value" a line, and <report>.steps) and shuts the server down.
-- Gives up after omixa_paintings_test.timeout seconds (default 120).
local settings = minetest.settings
local report = minetest.get_worldpath() .. "/omixa_paintings_test.txt" -- a mod may write there only
local timeout = tonumber(settings:get("omixa_paintings_test.timeout")) or 120
local PROMPT = "a lighthouse at dusk, watercolor"
local NAME = "harness"

local steps = {}
local started, elapsed, result = false, 0, nil
local messages = {}

local send = minetest.chat_send_player
minetest.chat_send_player = function(name, text)
  if name == NAME then messages[#messages + 1] = text end
  return send(name, text)
end

omixa_paintings.register_on_painted(function(r) result = r end)

local function be32(s, i)
  local a, b, c, d = s:byte(i, i + 3)
  return ((a * 256 + b) * 256 + c) * 256 + d
end

-- nil when the media file is right, else what is wrong.
local function check_media(r)
  local f = io.open(r.path, "rb")
  if not f then return "no file " .. r.path end
  local bytes = f:read("*a")
  f:close()
  if #bytes ~= r.bytes then return ("%s has %d bytes, the job received %d"):format(r.path, #bytes, r.bytes) end
  if bytes:sub(1, 8) ~= "\137PNG\r\n\26\n" or bytes:sub(13, 16) ~= "IHDR" then return r.path .. " is not a PNG" end
  local w, h = be32(bytes, 17), be32(bytes, 21)
  if w ~= r.width or h ~= r.height then return ("%s is %dx%d, the job said %dx%d"):format(r.path, w, h, r.width, r.height) end
  return nil
end

local function finish(err)
  local n, max_step, max_poll, done_step, done_poll, max_after, waiting = 0, 0, 0, 0, 0, 0, 0
  for _, s in ipairs(steps) do
    if s[2] == "receiving" then
      n, max_step, max_poll = n + 1, math.max(max_step, s[1]), math.max(max_poll, s[3])
    elseif s[2] == "waiting" then
      waiting = math.max(waiting, s[1])
    elseif s[2] == "done" then
      done_step, done_poll = s[1], s[3]
    elseif s[2]:match("^stage") or s[2] == "painted" then
      max_after = math.max(max_after, s[1])
    end
  end
  local f = assert(io.open(report, "w"))
  local function line(k, v) f:write(k, " ", tostring(v), "\n") end
  local function ms(k, v) line(k, ("%.1f"):format(v * 1000)) end
  if result and result.path then
    line("media", result.path)
    line("image", result.width .. "x" .. result.height)
    line("bytes", result.bytes)
  end
  if err then line("error", (tostring(err):gsub("\n", " "))) end
  line("steps", #steps)
  line("transfer_steps", n)
  ms("max_step_ms", max_step)
  ms("max_poll_ms", max_poll)
  ms("max_step_waiting_ms", waiting)
  ms("done_step_ms", done_step)
  ms("done_poll_ms", done_poll)
  ms("max_step_after_ms", max_after)
  ms("step_setting_ms", tonumber(settings:get("dedicated_server_step")) or 0.09)
  line("elapsed_s", ("%.2f"):format(elapsed))
  for _, m in ipairs(messages) do line("chat", (m:gsub("\n", " "))) end
  f:close()
  f = assert(io.open(report .. ".steps", "w"))
  f:write("# step dtime_ms previous_phase poll_ms\n")
  for i, s in ipairs(steps) do f:write(("%d %.2f %s %.2f\n"):format(i, s[1] * 1000, s[2], s[3] * 1000)) end
  f:close()
  minetest.request_shutdown("omixa_paintings_test done")
end

-- Each entry of steps: the dtime of a step, which measures the step
-- before it, with what the mod did in that step ("receiving": a poll while
-- the image arrived; "done": the poll that finished the job; "stage1",
-- "stage2", "painted": the result, the file, the media) and the seconds
-- the mod's globalstep took in it. This mod
-- depends on omixa_paintings, so its globalstep runs after the painting's.
local prev_state, prev_poll, done_seen, finished = "-", 0, false, false
minetest.register_globalstep(function(dtime)
  if finished then return end
  if not started then
    started = true
    local ok, msg = minetest.registered_chatcommands.paint.func(NAME, PROMPT)
    messages[#messages + 1] = msg
    if not ok then finished = true; return finish(msg) end
    prev_state = "start"
    return
  end
  elapsed = elapsed + dtime
  steps[#steps + 1] = { dtime, prev_state, prev_poll }
  if prev_state == "painted" then
    finished = true
    return finish(result.err or check_media(result))
  end
  if result and not done_seen then
    done_seen, prev_state = true, "painted"
  else
    local p = omixa_paintings.progress()[1]
    -- stage k + 1 pending: this step ran stage k (1: the result, 2: the
    -- file, 3: the media); stage 1 pending: this step's poll finished the job
    prev_state = not p and "-" or p.stage == 1 and "done" or p.stage and ("stage" .. (p.stage - 1)) or p.phase
  end
  prev_poll = omixa_paintings.last_poll_us / 1e6
  if elapsed > timeout then
    finished = true
    return finish("timed out after " .. timeout .. " s")
  end
end)
