-- examples/quickstart.lua — the three lines of the README.
local omixa = require "omixa"
local images, info = assert(omixa.generate{ prompt = "a red fox in snow" })
assert(omixa.save(images[1], "fox.png"))
print("fox.png", info.images[1].width .. "x" .. info.images[1].height)
