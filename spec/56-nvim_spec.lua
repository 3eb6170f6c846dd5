-- examples/nvim in a real Neovim (Debian's, headless): :OmixaGenerate
-- returns at once, the editor's loop keeps running while the image is
-- generated, and the image lands in stdpath('cache')/omixa.
--
-- Neovim embeds LuaJIT, so this runs once, in the LuaJIT pass of `make test`
-- (it builds the LuaJIT core itself if needed); other interpreters mark it
-- pending. The driver is spec/hosts/nvim_driver.lua.
local helpers = require "helpers"
local omixa = require "omixa"
local cjson = require "cjson"

local q = helpers.quote
local root = helpers.root
local DELAY = 2 -- seconds the stand-in waits before answering

local read = helpers.read_file

describe("examples/nvim in headless Neovim", function()
  if type(jit) ~= "table" then
    it("runs in the LuaJIT pass (Neovim embeds LuaJIT)", function()
      pending("run by `make test` with LuaJIT: luajit /usr/bin/busted spec/56-nvim_spec.lua")
    end)
    return
  end

  local srv, dir, result
  setup(function()
    local ok, _, out, err = helpers.run("command -v nvim")
    assert(ok, "nvim not found: install neovim (sh .ci/deps test) " .. out .. err)
    local built, code, bout, berr = helpers.run("cd " .. q(root) .. " && make -s LUA=luajit core")
    assert(built, "make LUA=luajit core failed (" .. code .. "): " .. bout .. berr)
    srv = helpers.serve()
    srv:faults{ { delay = DELAY } }
    dir = helpers.tmpdir()
    local cmd = helpers.nvim_example(dir, srv.url)
    local ran, rcode, rout, rerr = helpers.run(cmd)
    local text = read(dir .. "/result.json")
    assert(ran and text, "nvim failed (exit " .. rcode .. ", 124 is the timeout): " .. rout .. rerr)
    result = cjson.decode(text)
    print(("\n  nvim (%s): largest gap between 10 ms ticks %.1f ms, %d ticks in %.0f ms;"
      .. " :OmixaGenerate returned in %.1f ms"):format(result.uv, result.max_gap_ms, result.ticks,
      result.elapsed_ms, result.command_ms or -1))
  end)
  teardown(function() if srv then srv:stop() end end)

  it("reports the image's path with vim.notify", function()
    assert.equal("notified", result.why, cjson.encode(result.messages))
    assert.equal(1, #result.messages)
    assert.matches("^omixa: wrote .+%.png %(1024x1024, %d+ bytes, [%d.]+ s%)$", result.messages[1])
    assert.equal(2, result.levels[1]) -- vim.log.levels.INFO
  end)

  it("wrote a PNG under stdpath('cache')/omixa", function()
    local cache = dir .. "/cache/nvim/omixa/"
    assert.equal(cache, result.path:sub(1, #cache))
    local bytes = assert(read(result.path), "no file at " .. tostring(result.path))
    assert.equal("\137PNG\r\n\26\n", bytes:sub(1, 8))
    assert.equal("image/png", omixa.sniff(bytes).mime)
    assert.equal(1, #srv:requests())
  end)

  it("never froze the editor while the generation ran", function()
    -- The generation really took the stand-in's delay ...
    assert.truthy(result.elapsed_ms >= DELAY * 1000 - 100, "elapsed " .. result.elapsed_ms .. " ms")
    -- ... and the 10 ms timer kept ticking all along: a blocking call shows
    -- one gap of about 2 s (or no tick at all).
    assert.truthy(result.ticks >= 50, "ticks: " .. result.ticks)
    assert.truthy(result.max_gap_ms < 300, ("largest gap %.1f ms"):format(result.max_gap_ms))
    assert.truthy(result.command_ms < 300, (":OmixaGenerate took %.1f ms"):format(result.command_ms))
  end)
end)
