-- examples/love/conf.lua — LÖVE 11.x settings for the omixa example game.
-- No audio (nothing to play; headless CI machines have no sound card).
function love.conf(t)
  t.identity = "omixa-example"
  t.version = "11.4"
  t.window.title = "omixa"
  t.window.width = 960
  t.window.height = 600
  t.window.vsync = 0 -- frame times are what the self-test measures
  t.modules.audio = false
  t.modules.sound = false
  t.modules.joystick = false
  t.modules.physics = false
  t.modules.video = false
end
