-- examples/game_loop.lua, run as a program: a 60 fps loop that polls 4 jobs
-- once per frame keeps its frames coming while the stand-in takes 1.5 s per
-- image (a blocking call would hold one frame for the whole 1.5 s), and
-- ends with 4 images. How long poll itself takes is bench/poll.lua's.
local helpers = require "helpers"
local omixa = require "omixa"

local q = helpers.quote
local root = helpers.root
local DELAY = 1.5
local JOBS = 4
local MAX_FRAME_MS = 100

local read = helpers.read_file

describe("examples/game_loop.lua", function()
  local srv, dir, ok, code, out, err
  setup(function()
    srv = helpers.serve()
    local faults = {}
    for i = 1, JOBS do faults[i] = { delay = DELAY } end
    srv:faults(faults)
    dir = helpers.tmpdir()
    ok, code, out, err = helpers.run("env -u OMIXA_API_KEY -u OMIXA_MODEL OMIXA_BASE_URL=" .. q(srv.url)
      .. " timeout 60 " .. helpers.lua_script(root .. "/examples/game_loop.lua") .. " " .. JOBS .. " " .. q(dir))
  end)
  teardown(function() srv:stop() end)

  it("finishes every job with an image", function()
    assert(ok, ("exit %d\n%s\n%s"):format(code, err, out:sub(-2000)))
    for i = 1, JOBS do
      assert.matches("\njob " .. i .. " done: image/png 1024x1024 %d+ bytes", out)
      local bytes = read(dir .. "/job-" .. i .. ".png")
      assert.equal("image/png", (omixa.sniff(bytes or "") or {}).mime, "job " .. i)
    end
    assert.matches("\n" .. JOBS .. " of " .. JOBS .. " images in ", out)
    assert.equal(JOBS, #srv:requests())
  end)

  it("never holds a frame while the jobs are in flight", function()
    -- Each line: the time since the previous frame began, and the time
    -- this frame spent in job:poll() (which also covers the last frame).
    local frames, worst, total = 0, 0, 0
    for n, ms, poll in out:gmatch("\nframe (%d+)  ([%d.]+) ms  poll ([%d.]+) ms") do
      frames = frames + 1
      assert.equal(frames, tonumber(n))
      ms = tonumber(ms)
      total = total + ms
      worst = math.max(worst, ms, tonumber(poll))
    end
    print(("\n  game loop: %d frames over %.0f ms, worst frame %.1f ms (%s)"):format(
      frames, total, worst, out:match("worst poll [%d.]+ ms") or "?"))
    -- no frame waited for the network ...
    assert.truthy(worst < MAX_FRAME_MS, ("worst frame %.1f ms"):format(worst))
    -- ... and the loop ran all along the 1.5 s the images took
    assert.truthy(total >= DELAY * 1000 - 100, "the frames cover " .. total .. " ms")
    assert.truthy(frames >= 45, "frames: " .. frames)
  end)
end)

-- LÖVE itself is not needed: examples/love/main.lua runs here against a
-- stand-in `love` table that records what it draws, frame by frame.
describe("examples/love/main.lua", function()
  local srv
  setup(function() srv = helpers.serve() end)
  teardown(function() srv:stop() end)

  it("shows progress every frame, then draws the image", function()
    srv:faults{ { delay = 1 } }
    local now, sleep = require("omixa.core").now, require("omixa.core").sleep
    local printed, drawn, images, quit = {}, {}, {}, false
    local love = {
      timer = { getTime = now },
      window = { setTitle = function() end },
      event = { quit = function() quit = true end },
      filesystem = { newFileData = function(bytes, name) return { bytes = bytes, name = name } end },
      graphics = {
        getDimensions = function() return 800, 600 end,
        print = function(text) printed[#printed + 1] = text end,
        newImage = function(data)
          local info = omixa.sniff(data.bytes)
          local img = { data = data, getWidth = function() return info.width end,
                        getHeight = function() return info.height end }
          images[#images + 1] = img
          return img
        end,
        draw = function(img) drawn[#drawn + 1] = img end,
      },
    }
    local env = setmetatable({ love = love }, { __index = _G })
    local chunk
    if setfenv then
      chunk = assert(loadfile(root .. "/examples/love/main.lua"))
      setfenv(chunk, env)
    else
      chunk = assert(loadfile(root .. "/examples/love/main.lua", "t", env))
    end
    -- main.lua's omixa.new() reads OMIXA_BASE_URL: hand it the stand-in's
    -- through a wrapped module instead
    package.loaded.omixa = setmetatable({ new = function(o)
      o = o or {}
      o.base_url = srv.url
      return omixa.new(o)
    end }, { __index = omixa })
    local ok, err = pcall(function()
      chunk()
      love.load()
      local frames, give_up = 0, now() + 10
      while #images == 0 and now() < give_up do
        love.update(1 / 60)
        love.draw()
        frames = frames + 1
        sleep(1 / 60)
      end
      assert.truthy(frames > 10, "frames: " .. frames)
      love.draw()
      love.keypressed("escape")
      love.quit()
    end)
    package.loaded.omixa = omixa
    assert(ok, err)
    assert.equal(1, #images)
    assert.equal("omixa.png", images[1].data.name)
    assert.equal("image/png", omixa.sniff(images[1].data.bytes).mime)
    assert.equal(images[1], drawn[#drawn])
    local waiting = 0
    for _, text in ipairs(printed) do
      if text:match("^waiting%.* [%d.]+ s, 0 bytes received$") then waiting = waiting + 1 end
    end
    assert.truthy(waiting > 5, "frames that said 'waiting': " .. waiting)
    assert.matches("^1024x576 png, [%d.]+ s", printed[#printed])
    assert.is_true(quit)
  end)
end)
