-- omixa/core.lua — the checkout's loader for the C core. `make install`
-- leaves it out; luarocks copies lua/ whole, so a rock has it too, and
-- there (not in a checkout) it only searches package.cpath, as require's
-- own C searcher would.
--
-- Each Lua's build has its own place, build/<tag>/omixa/core.so (tag lua5.1 ..
-- lua5.4 or luajit), so building for one Lua never replaces another's core.
-- A run from the checkout (a folder with src/omixa_core.c beside lua/) has
-- lua/ on package.path, so `require "omixa.core"` finds this file before
-- any C module and it loads, in this order:
--   1. $OMIXA_BUILD/omixa/core.so when OMIXA_BUILD is set (relative to the
--      checkout, as .busted, bin/omixa and spec/run-all use it);
--   2. build/<tag>/omixa/core.so for the running Lua, when it was built;
--   3. else the first omixa/core.<so|dll> on package.cpath, as require would.
-- A core that cannot be loaded is an error that says which Lua runs, which
-- file was tried and how to build the right one.
local modname = ...
local running = type(jit) == "table" and "LuaJIT" or _VERSION
local tag = type(jit) == "table" and "luajit" or "lua" .. _VERSION:match("%d+%.%d+")
local make = tag == "luajit" and "make LUA=luajit" or "make LUA_VERSION=" .. tag:sub(4)
local sep = package.config:sub(1, 1)
local ext = package.cpath:find("%.dll") and "dll" or "so"

-- The folder holding lua/omixa/core.lua ("" when loaded by a relative
-- path; nil when installed, under share/lua/5.x/): a checkout when it also
-- holds src/omixa_core.c.
local source = debug.getinfo(1, "S").source
local prefix = source:match("^@(.-)lua[/\\]omixa[/\\]core%.lua$")

local function exists(path)
  local f = io.open(path, "rb")
  if f then f:close() end
  return f ~= nil
end

local function on_cpath()
  local name = "omixa" .. sep .. "core"
  for template in package.cpath:gmatch("[^;]+") do
    local path = template:gsub("%?", name)
    if exists(path) then return path end
  end
end

local checkout = prefix and exists(prefix .. "src/omixa_core.c")
local path
local build = checkout and os.getenv("OMIXA_BUILD")
if not checkout then
  path = on_cpath()
  if not path then
    error(("omixa: no C core omixa/core.%s for %s on package.cpath (%s)"):format(ext, running, package.cpath), 2)
  end
elseif build and build ~= "" then
  if not build:match("^/") and not build:match("^%a:[/\\]") then build = prefix .. build end
  path = build .. "/omixa/core." .. ext
else
  path = prefix .. "build/" .. tag .. "/omixa/core." .. ext
  if not exists(path) then path = on_cpath() end
  if not path then
    error(("omixa: no C core for %s: build it in the checkout with `%s` (it goes to build/%s/)")
      :format(running, make, tag), 2)
  end
end
if not exists(path) then
  error(("omixa: no C core for %s at %s (OMIXA_BUILD): build it with `%s`"):format(running, path, make), 2)
end

local open, err = package.loadlib(path, "luaopen_omixa_core")
if not open then
  local fix = checkout and ("build the core for %s with `%s` (it goes to build/%s/)"):format(running, make, tag)
    or "install omixa for " .. running
  error(("omixa: %s cannot load the C core %s, which was probably built for another Lua: %s\n%s")
    :format(running, path, err, fix), 2)
end
return open(modname or "omixa.core")
