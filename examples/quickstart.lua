-- examples/quickstart.lua — the README's quick start: one image, saved where
-- you say (default: a new file in the temp folder, never the current one).
--
--   lua5.4 examples/quickstart.lua [PATH.png]
--
-- OMIXA_API_KEY for the service, or OMIXA_BASE_URL pointing at `omixa serve`.
local omixa = require "omixa"

local path = arg and arg[1]
if not path then
  local tmp = os.tmpname() -- a name no one else holds; the image goes beside it
  path = tmp .. "-fox.png"
  os.remove(tmp)
end

local images, info = omixa.generate{ prompt = "a red fox in snow" }
if not images then
  io.stderr:write(tostring(info), "\n")
  os.exit(1)
end
assert(omixa.save(images[1], path))
print(path, info.images[1].width .. "x" .. info.images[1].height)
