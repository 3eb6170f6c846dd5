-- The rockspec (what `luarocks make` builds and installs) lists every C
-- source of the core and every Lua module of the tree: a file added to src/
-- or lua/ and forgotten there would give an installed core with undefined
-- symbols, or a module that is missing once installed.
local helpers = require "helpers"

local root = helpers.root

local function rockspec_text()
  local p = io.popen("ls " .. helpers.quote(root) .. "/*.rockspec")
  local name = p:read("*l")
  p:close()
  assert.is_truthy(name, "no rockspec at the top of the tree")
  return helpers.must_read(name)
end

local function files(pattern_cmd)
  local out, p = {}, io.popen(pattern_cmd)
  for line in p:lines() do out[#out + 1] = line end
  p:close()
  return out
end

describe("the rockspec", function()
  local text = rockspec_text()

  it("builds every C file of src/ into omixa.core", function()
    local srcs = files("cd " .. helpers.quote(root) .. " && ls src/*.c")
    assert.is_true(#srcs > 5)
    for _, f in ipairs(srcs) do
      assert.is_truthy(text:find('"' .. f .. '"', 1, true), f .. " is not in the rockspec's sources")
    end
  end)

  it("installs every Lua module of lua/ under its module name", function()
    local mods = files("cd " .. helpers.quote(root) .. " && find lua -name '*.lua' | sort")
    assert.is_true(#mods > 10)
    for _, f in ipairs(mods) do
      local name = f:gsub("^lua/", ""):gsub("/init%.lua$", ""):gsub("%.lua$", ""):gsub("/", ".")
      if f ~= "lua/omixa/core.lua" then -- the checkout's loader, below
        assert.is_truthy(text:find('["' .. name .. '"] = "' .. f .. '"', 1, true),
          f .. " is not installed as " .. name .. " by the rockspec")
      end
    end
  end)

  it("builds omixa.core as the C module (lua/omixa/core.lua is the checkout's loader)", function()
    assert.is_falsy(text:find("lua/omixa/core.lua", 1, true))
    assert.is_truthy(text:find('["omixa.core"] = {', 1, true))
  end)
end)
