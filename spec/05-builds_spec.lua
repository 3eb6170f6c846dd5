-- Builds for different Luas never overwrite each other (issue 14, point 5):
-- each goes to build/<tag>/, a run from the checkout loads the one of the
-- running Lua through lua/omixa/core.lua, and a core loaded into another Lua
-- says so in words. The specs build what they need (a no-op when built).
local helpers = require "helpers"

local q = helpers.quote
local root = helpers.root

local function make(args)
  local ok, code, out, err = helpers.run("cd " .. q(root) .. " && make -s " .. args .. " 2>&1")
  assert(ok, ("make %s failed (%s): %s%s"):format(args, tostring(code), out, err or ""))
end

-- Run CODE with interpreter LUA from the checkout as its README says
-- (LUA_PATH with lua/, no LUA_CPATH, no OMIXA_BUILD unless given).
local function intree(lua, code, build)
  local env = "env -u OMIXA_BUILD -u LUA_CPATH LUA_PATH='./lua/?.lua;./lua/?/init.lua;;'"
  if build then env = env .. " OMIXA_BUILD=" .. q(build) end
  return helpers.run("cd " .. q(root) .. " && " .. env .. " " .. lua .. " -e " .. q(code) .. " 2>&1")
end

describe("builds for several Luas", function()
  it("a LuaJIT build after a 5.4 one leaves the 5.4 in-tree run working", function()
    make("")                -- Lua 5.4, the default
    make("LUA=luajit")
    local code = "local o = require 'omixa'; assert(o.b64encode('x') == 'eA=='); "
      .. "io.write(require('omixa.core')._LUA)"
    local ok, _, out = intree("lua5.4", code)
    assert.is_true(ok, out)
    assert.are.equal("Lua 5.4", out)
    ok, _, out = intree("luajit", code)
    assert.is_true(ok, out)
    assert.are.equal("LuaJIT", out)
  end)

  it("each build has its own place and nothing is copied over another", function()
    make("")
    make("LUA=luajit")
    assert.is_truthy(helpers.read_file(root .. "/build/lua5.4/omixa/core.so"))
    assert.is_truthy(helpers.read_file(root .. "/build/luajit/omixa/core.so"))
    local _, _, out = helpers.run("cd " .. q(root) .. " && make -n LUA=luajit all 2>&1")
    assert.is_falsy(out:find("cp ", 1, true), out)
  end)

  it("a 5.4 core loaded into LuaJIT says which Lua it needs", function()
    make("")
    local ok, _, out = intree("luajit", "require 'omixa.core'", "build/lua5.4")
    assert.is_false(ok)
    assert.is_truthy(out:find("LuaJIT cannot load the C core", 1, true), out)
    assert.is_truthy(out:find("built for another Lua", 1, true), out)
    assert.is_truthy(out:find("make LUA=luajit", 1, true), out)
  end)

  it("a Lua 5.1 core loaded into LuaJIT says so, from the core itself", function()
    make("LUA_VERSION=5.1 core")
    -- straight from package.cpath, without the checkout's loader
    local code = "package.cpath = " .. ("%q"):format(root .. "/build/lua5.1/?.so;") .. " .. package.cpath; "
      .. "require 'omixa.core'"
    local ok, _, out = helpers.run("cd / && env -u OMIXA_BUILD luajit -e " .. q(code) .. " 2>&1")
    assert.is_false(ok)
    assert.is_truthy(out:find("omixa: this omixa.core was built for Lua 5.1 but runs in LuaJIT", 1, true), out)
  end)

  it("installed (luarocks copies lua/ whole), the loader only searches package.cpath", function()
    make("")
    local tree = helpers.tmpdir()
    assert(os.execute(("mkdir -p %s/share/lua/5.4/omixa %s/lib/omixa"):format(q(tree), q(tree))))
    assert(os.execute(("cp %s/lua/omixa/core.lua %s/share/lua/5.4/omixa/ && cp %s/build/lua5.4/omixa/core.so %s/lib/omixa/")
      :format(q(root), q(tree), q(root), q(tree))))
    -- from the checkout's folder, with an OMIXA_BUILD that a checkout run would refuse
    local code = ("package.path = %q; package.cpath = %q; io.write(require('omixa.core')._LUA)")
      :format(tree .. "/share/lua/5.4/?.lua", tree .. "/lib/?.so")
    local ok, _, out = helpers.run("cd " .. q(root) .. " && OMIXA_BUILD=build/no-such-lua lua5.4 -e " .. q(code) .. " 2>&1")
    assert.is_true(ok, out)
    assert.are.equal("Lua 5.4", out)
    code = ("package.path = %q; package.cpath = %q; require('omixa.core')")
      :format(tree .. "/share/lua/5.4/?.lua", tree .. "/nothing/?.so")
    ok, _, out = helpers.run("cd " .. q(root) .. " && lua5.4 -e " .. q(code) .. " 2>&1")
    assert.is_false(ok)
    assert.is_truthy(out:find("no C core omixa/core.so for Lua 5.4 on package.cpath", 1, true), out)
  end)

  it("a Lua with no build of its own is told what to build", function()
    local ok, _, out = intree("lua5.4", "require 'omixa.core'", "build/no-such-lua")
    assert.is_false(ok)
    assert.is_truthy(out:find("no C core for Lua 5.4 at", 1, true), out)
    assert.is_truthy(out:find("make LUA_VERSION=5.4", 1, true), out)
  end)
end)
