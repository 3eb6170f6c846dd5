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

-- examples/love runs in LÖVE itself: make check-hosts (spec/hosts/check).
