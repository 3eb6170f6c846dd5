-- examples/love/main.lua — a LÖVE (11.x) game that generates an image while
-- it keeps drawing: love.load starts a job, love.update polls it once per
-- frame (job:poll() never waits), love.draw shows a progress bar, then the
-- image as a texture. The PNG is decoded in a love.thread, so not even the
-- decoding of a large image holds a frame. Errors are shown as text.
-- Space asks for another; Escape quits.
--
--   make LUA=luajit core && love examples/love      (from a checkout)
--
-- LÖVE runs LuaJIT, and its require looks in the game's own folder first:
-- this file puts the checkout's lua/ and build/luajit/ (or OMIXA_ROOT's,
-- or OMIXA_BUILD's core) on package.path/cpath; an installed omixa
-- (`make LUA=luajit install`) is found too. The client comes from the
-- environment (OMIXA_API_KEY, OMIXA_BASE_URL; `omixa serve` is a local stand-in).
--
-- Self-test (make check-hosts): OMIXA_LOVE_SELFTEST=<report file> asks for a
-- 4096x4096 image, records every frame's dt, quits once the image has been
-- drawn (or on an error, or after OMIXA_LOVE_TIMEOUT seconds, default 120)
-- and writes the report: one "key value" a line (see write_report).

local function add_paths()
  local root = os.getenv("OMIXA_ROOT") or (love.filesystem.getSource() .. "/../..")
  local build = os.getenv("OMIXA_BUILD") or "build/luajit"
  if build:sub(1, 1) ~= "/" then build = root .. "/" .. build end
  package.path = root .. "/lua/?.lua;" .. root .. "/lua/?/init.lua;" .. package.path
  package.cpath = build .. "/?.so;" .. package.cpath
end
add_paths()

local omixa = require "omixa"

local PROMPT = "a lighthouse at dusk, watercolor"
local SELFTEST = os.getenv("OMIXA_LOVE_SELFTEST")
local TIMEOUT = tonumber(os.getenv("OMIXA_LOVE_TIMEOUT")) or 120

-- The thread that turns PNG bytes into ImageData off the main loop. The
-- bytes come in pieces, one a frame (handing a thread 20 MB at once is a
-- copy that alone would hold a frame), then `true`.
local DECODER = [[
local input, out = ...
require "love.image"
require "love.filesystem"
local pieces = {}
while true do
  local piece = input:demand()
  if piece == true then break end
  pieces[#pieces + 1] = piece
end
local ok, data = pcall(function()
  return love.image.newImageData(love.filesystem.newFileData(table.concat(pieces), "omixa.png"))
end)
out:push(ok and data or ("could not decode the image: " .. tostring(data)))
]]
local PIECE = 1024 * 1024 -- bytes handed to the decoder a frame

local client, job, decoding, decoded, decoder_input, to_decode, handed
local image, message, failed
local started, bytes_received
local drawn = false
-- Per frame: { dt, what the previous frame's job:poll() left (a phase such as
-- "receiving", or "done" for the poll that finished the job, "-" for none),
-- the seconds that poll took }. dt measures the previous frame.
local trace = {}
local polled, poll_time = "-", 0

local function fail(text)
  job, decoding, to_decode = nil, nil, nil
  failed = true
  message = text
end

local function start()
  image, message, failed = nil, nil, nil
  started = love.timer.getTime()
  local request = { prompt = PROMPT, aspect_ratio = "16:9" }
  if SELFTEST then request = { prompt = PROMPT, aspect_ratio = "1:1", size = "4K" } end
  local ok, j = pcall(client.start, client, request)
  if ok then job = j else fail(tostring(j)) end
end

function love.load()
  started = love.timer.getTime()
  love.window.setTitle("omixa: " .. PROMPT)
  local ok, c = pcall(omixa.new)
  if not ok then return fail(tostring(c)) end
  client = c
  decoded = love.thread.newChannel()
  start()
end

-- The report: "transfer" frames are those whose previous frame polled
-- while the image's bytes were arriving (phase "receiving"); the frame after
-- the poll that finished the job, and the frames after it (decoding in the
-- thread, uploading the texture) are reported apart, and so are the frames
-- while the job waited for the answer's first byte: the host's own noise.
local function write_report()
  local n, max_frame, max_poll, done_frame, done_poll, after, waiting = 0, 0, 0, 0, 0, 0, 0
  local seen_done = false
  for _, t in ipairs(trace) do
    if t[2] == "receiving" then
      n, max_frame, max_poll = n + 1, math.max(max_frame, t[1]), math.max(max_poll, t[3])
    elseif t[2] == "waiting" then
      waiting = math.max(waiting, t[1])
    elseif t[2] == "done" then
      done_frame, done_poll, seen_done = t[1], t[3], true
    elseif seen_done then
      after = math.max(after, t[1])
    end
  end
  local f = assert(io.open(SELFTEST, "w"))
  local function line(k, v) f:write(k, " ", tostring(v), "\n") end
  local function ms(k, v) line(k, ("%.1f"):format(v * 1000)) end
  if image then line("image", image:getWidth() .. "x" .. image:getHeight()) end
  if bytes_received then line("bytes", bytes_received) end
  if failed then line("error", (message:gsub("\n", " "))) end
  line("frames", #trace)
  line("transfer_frames", n)
  ms("max_frame_ms", max_frame)
  ms("max_poll_ms", max_poll)
  ms("max_frame_waiting_ms", waiting)
  ms("done_frame_ms", done_frame)
  ms("done_poll_ms", done_poll)
  ms("max_frame_after_ms", after)
  line("elapsed_s", ("%.2f"):format(love.timer.getTime() - started))
  f:close()
  f = assert(io.open(SELFTEST .. ".frames", "w"))
  f:write("# frame dt_ms previous_poll poll_ms\n")
  for i, t in ipairs(trace) do f:write(("%d %.2f %s %.2f\n"):format(i, t[1] * 1000, t[2], t[3] * 1000)) end
  f:close()
end

local function finished(images, info)
  if not images then return fail(tostring(info)) end
  bytes_received = #images[1]
  message = ("%dx%d %s, %.1f s"):format(info.images[1].width or 0, info.images[1].height or 0,
    info.images[1].format or "?", info.elapsed)
  to_decode, handed = images[1], 0
  decoding = love.thread.newThread(DECODER)
  decoder_input = love.thread.newChannel()
  decoding:start(decoder_input, decoded)
end

function love.update(dt)
  trace[#trace + 1] = { dt, polled, poll_time }
  polled, poll_time = "-", 0
  if SELFTEST and (drawn or failed or love.timer.getTime() - started > TIMEOUT) then
    if not drawn and not failed then fail("timed out after " .. TIMEOUT .. " s") end
    write_report()
    love.event.quit(drawn and 0 or 1)
    return
  end
  if job then
    local t = love.timer.getTime()
    local done = job:poll()
    poll_time = love.timer.getTime() - t
    polled = done and "done" or job:progress().phase
    if done then
      local j = job
      job = nil
      finished(j:result())
    end
  end
  if to_decode then
    decoder_input:push(to_decode:sub(handed + 1, handed + PIECE))
    handed = handed + PIECE
    if handed >= #to_decode then
      decoder_input:push(true)
      to_decode = nil
    end
  end
  if decoding then
    local d = decoded:pop()
    if d == nil and decoding:getError() then d = decoding:getError() end
    if type(d) == "string" then
      fail(d)
    elseif d then
      decoding = nil
      image = love.graphics.newImage(d)
      message = message .. " - space: another one"
    end
  end
end

local function progress_bar(w, h)
  local p = job:progress()
  local frac = 0
  if p.receive_total and p.receive_total > 0 then frac = p.received / p.receive_total end
  love.graphics.setColor(0.3, 0.3, 0.3)
  love.graphics.rectangle("fill", 40, h / 2 - 12, w - 80, 24)
  love.graphics.setColor(0.2, 0.7, 1)
  love.graphics.rectangle("fill", 40, h / 2 - 12, (w - 80) * frac, 24)
  love.graphics.setColor(1, 1, 1)
  love.graphics.print(("%s %.1f s, %d of %s bytes"):format(p.phase, love.timer.getTime() - started, p.received,
    (p.receive_total and p.receive_total > 0) and tostring(p.receive_total) or "?"), 40, h / 2 + 20)
end

function love.draw()
  local w, h = love.graphics.getDimensions()
  if image then
    local scale = math.min(w / image:getWidth(), h / image:getHeight())
    love.graphics.draw(image, (w - image:getWidth() * scale) / 2, (h - image:getHeight() * scale) / 2, 0, scale)
    drawn = true
  end
  if job then
    progress_bar(w, h)
  elseif decoding then
    love.graphics.print("decoding " .. (message or ""), 10, 10)
  elseif message then
    if failed then love.graphics.setColor(1, 0.4, 0.4) end
    love.graphics.printf(message, 10, 10, w - 20)
    love.graphics.setColor(1, 1, 1)
  end
end

function love.keypressed(key)
  if key == "escape" then love.event.quit()
  elseif key == "space" and client and not job and not decoding then start() end
end

function love.quit()
  if client then client:close() end -- cancels a job still running
end
