-- examples/love/main.lua — a LÖVE (11.x) game that generates an image while
-- it keeps drawing: love.load starts a job, love.update polls it once per
-- frame (job:poll() never waits), love.draw shows the progress, then the
-- image. Space asks for another; Escape quits.
--
--   love examples/love
--
-- LÖVE runs LuaJIT: install omixa for it (`make LUA=luajit install`) or
-- start LÖVE with LUA_PATH/LUA_CPATH pointing at a checkout's lua/ and
-- build/luajit/. The client comes from the environment (OMIXA_API_KEY,
-- OMIXA_BASE_URL; `omixa serve` is a local stand-in).
local omixa = require "omixa"

local PROMPT = "a lighthouse at dusk, watercolor"

local client, job
local image, message
local started

local function start()
  image, message = nil, nil
  started = love.timer.getTime()
  job = client:start{ prompt = PROMPT, aspect_ratio = "16:9" }
end

function love.load()
  love.window.setTitle("omixa: " .. PROMPT)
  client = omixa.new()
  start()
end

function love.update()
  if not job or not job:poll() then return end
  local images, info = job:result()
  job = nil
  if not images then
    message = tostring(info)
    return
  end
  local img = info.images[1]
  image = love.graphics.newImage(love.filesystem.newFileData(images[1], "omixa." .. (img.format or "png")))
  message = ("%dx%d %s, %.1f s — space: another one"):format(img.width or 0, img.height or 0, img.format,
    info.elapsed)
end

function love.draw()
  local w, h = love.graphics.getDimensions()
  if image then
    local scale = math.min(w / image:getWidth(), h / image:getHeight())
    love.graphics.draw(image, (w - image:getWidth() * scale) / 2, (h - image:getHeight() * scale) / 2, 0, scale)
  end
  if job then
    local p = job:progress()
    local dots = ("."):rep(math.floor(love.timer.getTime() * 3) % 4)
    love.graphics.print(("%s%s %.1f s, %d bytes received"):format(p.phase, dots,
      love.timer.getTime() - started, p.received), 10, 10)
  elseif message then
    love.graphics.print(message, 10, 10)
  end
end

function love.keypressed(key)
  if key == "escape" then love.event.quit()
  elseif key == "space" and not job then start() end
end

function love.quit()
  client:close() -- cancels a job still running
end
