-- examples/generate.lua — the main job: one image into out/, reporting its
-- path, pixel size and byte size. Talks to OMIXA_BASE_URL with
-- OMIXA_API_KEY (`make demo` points it at the local stand-in when no key
-- is set).
--
--   lua5.4 examples/generate.lua ["prompt"] [out/file.png]
local omixa = require "omixa"

local prompt = arg[1] or "a lighthouse at dusk, watercolor"
local path = arg[2] or "out/lighthouse.png"

local images, info = omixa.generate{ prompt = prompt, aspect_ratio = "16:9", size = "1K" }
if not images then
  io.stderr:write(tostring(info), "\n")
  os.exit(1)
end
os.execute("mkdir -p '" .. (path:match("^(.*)/[^/]*$") or ".") .. "'")
assert(omixa.save(images[1], path))
local img = info.images[1]
print(string.format("%s  %dx%d %s  %d bytes  (%s, billed %s)", path, img.width or 0, img.height or 0,
  img.format or "?", img.bytes, info.model, info.billed_amount or "nothing"))
