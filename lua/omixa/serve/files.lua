-- omixa.serve.files: reading a whole file, for the launcher (init.lua, any
-- Lua) and for what runs inside nginx (LuaJIT) alike.

local open = io.open

local M = {}

-- The bytes of the file at PATH, or nil when it cannot be read.
function M.read(path)
  local f = open(path, "rb")
  if not f then return nil end
  local s = f:read("*a")
  f:close()
  return s
end

return M
