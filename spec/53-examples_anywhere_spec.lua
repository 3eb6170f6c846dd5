-- The examples run from any folder and write nothing into the repository:
-- quickstart into the temp folder (or the path given), game_loop making its
-- output folder, Neovim's :OmixaCancel reported as information.
local helpers = require "helpers"
local omixa = require "omixa"
local cjson = require "cjson"

local q = helpers.quote
local root = helpers.root

describe("examples run from anywhere", function()
  local srv, dir
  setup(function()
    srv = helpers.serve()
    dir = helpers.tmpdir()
  end)
  teardown(function() srv:stop() end)

  local function example(name, args)
    return helpers.run("cd " .. q(dir) .. " && env -u OMIXA_API_KEY OMIXA_BASE_URL=" .. q(srv.url) .. " "
      .. helpers.lua_script(root .. "/examples/" .. name) .. " " .. (args or ""))
  end

  it("quickstart writes into the temp folder, not the current one nor the repository", function()
    local before = helpers.listing(root)
    local ok, _, out, err = example("quickstart.lua")
    assert.is_true(ok, err)
    local path = out:match("^(%S+)\t1024x1024\n$")
    assert.truthy(path, out)
    assert.is_nil(path:find(root, 1, true))
    assert.equal("image/png", omixa.sniff(helpers.must_read(path)).mime)
    os.remove(path)
    assert.same({}, helpers.listing(dir))
    assert.same(before, helpers.listing(root))
  end)

  it("quickstart writes to the path given", function()
    local ok, _, out, err = example("quickstart.lua", "given.png")
    assert.is_true(ok, err)
    assert.equal("given.png\t1024x1024\n", out)
    assert.equal("image/png", omixa.sniff(helpers.must_read(dir .. "/given.png")).mime)
  end)

  it("game_loop makes its output folder when it is missing", function()
    local ok, _, out, err = example("game_loop.lua", "1 " .. q(dir .. "/made/here"))
    assert.is_true(ok, err .. out:sub(-500))
    assert.same({ "job-1.png" }, helpers.listing(dir .. "/made/here"))
  end)
end)

describe("examples/nvim :OmixaCancel", function()
  if type(jit) ~= "table" then
    it("runs in the LuaJIT pass (Neovim embeds LuaJIT)", function()
      pending("run with LuaJIT: luajit /usr/bin/busted spec/53-examples_anywhere_spec.lua")
    end)
    return
  end

  it("reports the cancel as information, not an error", function()
    local srv = helpers.serve()
    srv:faults{ { delay = 5 } }
    local dir = helpers.tmpdir()
    local built, code, bout, berr = helpers.run("cd " .. q(root) .. " && make -s LUA=luajit core")
    assert(built, "make LUA=luajit core failed (" .. code .. "): " .. bout .. berr)
    local ran, rcode, rout, rerr = helpers.run(helpers.nvim_example(dir, srv.url, "OMIXA_NVIM_CANCEL=1"))
    local text = helpers.read_file(dir .. "/result.json")
    assert(ran and text, "nvim failed (exit " .. rcode .. "): " .. rout .. rerr)
    local result = cjson.decode(text)
    srv:stop()
    assert.equal("notified", result.why, text)
    local seen = {}
    for i, msg in ipairs(result.messages) do
      assert.equal(2, result.levels[i], msg) -- vim.log.levels.INFO
      seen[#seen + 1] = msg
    end
    table.sort(seen)
    assert.matches("cancelled", seen[1])
    assert.matches("cancelled", seen[2])
  end)
end)
