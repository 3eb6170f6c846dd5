-- omixa_paintings: a Luanti (Minetest) mod. `/paint <prompt>` places a
-- painting (a canvas node) in front of the player and starts an omixa job;
-- a globalstep polls it (job:poll() never waits, so the server's step keeps
-- its pace while the image arrives); the finished PNG is written to the
-- world folder and pushed to the clients with minetest.dynamic_add_media,
-- then shown on the canvas. Errors go to the player's chat.
--
-- omixa's core is a C module, so the mod must be trusted, in minetest.conf:
--   secure.trusted_mods = omixa_paintings
-- It finds omixa in a checkout (settingtypes.txt: omixa_paintings.root, or
-- OMIXA_ROOT, or three folders above this mod; the core built with
-- `make LUA=luajit core`) or installed for LuaJIT. The client comes from the
-- environment (OMIXA_API_KEY, OMIXA_BASE_URL) unless omixa_paintings.base_url
-- is set.
--
-- For other mods: omixa_paintings.paint(name, prompt, pos) -> true | nil, message;
-- omixa_paintings.register_on_painted(function(result)) with result =
-- { name =, prompt =, pos =, path =, media =, bytes =, width =, height = } or
-- { name =, prompt =, err = message }; omixa_paintings.progress() -> the
-- progress tables of the jobs running (job:progress()), and
-- omixa_paintings.last_poll_us, the microseconds the last globalstep spent.

-- The insecure environment stays in this file's locals (never handed out).
local ie = minetest.request_insecure_environment()
local modname = minetest.get_current_modname()
local modpath = minetest.get_modpath(modname)
local settings = minetest.settings

-- Load omixa with the insecure environment as its modules' globals (they
-- need require, io and os as plain Lua has them): a searcher for "omixa"
-- and "omixa.*" only, in front of the usual ones, and the core's folder on
-- package.cpath. Returns the module, or nil and why not.
local function load_omixa()
  if not ie then
    return nil, "the mod is not trusted: add it to secure.trusted_mods in minetest.conf"
  end
  local root = settings:get("omixa_paintings.root") or ie.os.getenv("OMIXA_ROOT") or (modpath .. "/../../..")
  local core_dir = settings:get("omixa_paintings.core_dir") or ie.os.getenv("OMIXA_BUILD") or "build/luajit"
  if core_dir:sub(1, 1) ~= "/" then core_dir = root .. "/" .. core_dir end
  local pkg = ie.package
  local path = root .. "/lua/?.lua;" .. root .. "/lua/?/init.lua;" .. pkg.path
  local function searcher(name)
    if name ~= "omixa" and name:sub(1, 6) ~= "omixa." then return nil end
    local file = pkg.searchpath(name, path)
    if not file then return "\n\tno omixa module '" .. name .. "' under " .. root .. "/lua" end
    local chunk, err = ie.loadfile(file)
    if not chunk then error(err, 0) end
    ie.setfenv(chunk, ie)
    return chunk
  end
  table.insert(pkg.loaders, 2, searcher)
  pkg.cpath = core_dir .. "/?.so;" .. pkg.cpath
  local ok, omixa = pcall(ie.require, "omixa")
  if not ok then return nil, tostring(omixa) end
  return omixa
end

local omixa, load_err = load_omixa()
if load_err then
  minetest.log("error", "[omixa_paintings] omixa could not be loaded: " .. load_err)
end

omixa_paintings = { last_poll_us = 0 }

local client
local jobs = {}      -- running: { job =, name =, prompt =, pos = }
local painted = {}   -- callbacks
local count = 0      -- paintings made since the server started (media names must be new)

local function say(name, text)
  minetest.chat_send_player(name, "[paint] " .. text)
end

local function notify(result)
  for _, fn in ipairs(painted) do fn(result) end
end

function omixa_paintings.register_on_painted(fn)
  painted[#painted + 1] = fn
end

-- The canvas: a thin board; the picture is an entity in front of it (node
-- textures are fixed once clients have joined, an entity's are not).
minetest.register_node("omixa_paintings:canvas", {
  description = "Omixa canvas",
  drawtype = "nodebox",
  paramtype = "light",
  paramtype2 = "facedir",
  node_box = { type = "fixed", fixed = { -0.5, -0.5, 0.4375, 0.5, 0.5, 0.5 } },
  tiles = { "omixa_paintings_canvas.png" },
  groups = { oddly_breakable_by_hand = 3 },
  on_destruct = function(pos)
    for _, obj in ipairs(minetest.get_objects_inside_radius(pos, 0.6)) do
      local ent = obj:get_luaentity()
      if ent and ent.name == "omixa_paintings:picture" then obj:remove() end
    end
  end,
})

minetest.register_entity("omixa_paintings:picture", {
  initial_properties = {
    visual = "upright_sprite",
    visual_size = { x = 1, y = 1 },
    textures = { "omixa_paintings_canvas.png", "omixa_paintings_canvas.png" },
    physical = false,
    pointable = false,
    static_save = true,
  },
  on_activate = function(self, staticdata)
    if staticdata and staticdata ~= "" then
      self.texture = staticdata
      self.object:set_properties({ textures = { staticdata, staticdata } })
    end
  end,
  get_staticdata = function(self) return self.texture or "" end,
})

local function show(pos, media)
  local obj = minetest.add_entity(vector.add(pos, { x = 0, y = 0, z = 0.42 }), "omixa_paintings:picture", media)
  if obj then
    obj:get_luaentity().texture = media
    obj:set_properties({ textures = { media, media } })
  end
end

-- Start a painting for player NAME at POS (a table; the canvas is placed
-- there when the area is loaded).
function omixa_paintings.paint(name, prompt, pos)
  if not omixa then return nil, "omixa is not available: " .. load_err end
  if type(prompt) ~= "string" or prompt:match("^%s*$") then return nil, "usage: /paint <prompt>" end
  if not client then
    local ok, c = pcall(omixa.new, { base_url = settings:get("omixa_paintings.base_url") })
    if not ok then return nil, tostring(c) end
    client = c
  end
  local size = settings:get("omixa_paintings.size") or "1K"
  local ok, job = pcall(client.start, client, { prompt = prompt, aspect_ratio = "1:1", size = size })
  if not ok then return nil, tostring(job) end
  pos = vector.round(pos)
  if minetest.get_node_or_nil(pos) then minetest.set_node(pos, { name = "omixa_paintings:canvas" }) end
  jobs[#jobs + 1] = { job = job, name = name, prompt = prompt, pos = pos }
  return true
end

-- The progress of each job (job:progress()); phase = "finishing" once its
-- image has arrived and the stages below are under way.
function omixa_paintings.progress()
  local list = {}
  for i, j in ipairs(jobs) do list[i] = j.stage and { phase = "finishing", stage = j.stage } or j.job:progress() end
  return list
end

local function failed(j, message)
  say(j.name, message)
  notify({ name = j.name, prompt = j.prompt, err = message })
end

-- What follows a finished job, one stage a server step: each stage handles
-- 20 MB at most once, so no step does two of them (receiving the image,
-- writing it, having the server read it for the media).
local STAGES = {
  function(j) -- the job's result
    local images, info = j.job:result()
    if not images then return failed(j, "failed: " .. tostring(info)) end
    j.bytes, j.info = images[1], info
    return true
  end,
  function(j) -- the file, in the world folder (a mod may write there)
    local img = j.info.images[1]
    count = count + 1
    j.media = ("omixa_paintings_%d_%d.%s"):format(os.time(), count, img.format or "png")
    local dir = minetest.get_worldpath() .. "/omixa_paintings"
    minetest.mkdir(dir)
    j.path = dir .. "/" .. j.media
    if not minetest.safe_file_write(j.path, j.bytes) then return failed(j, "could not write " .. j.path) end
    j.size, j.bytes = #j.bytes, nil
    return true
  end,
  function(j) -- the media every client gets, and the picture on the canvas
    if not minetest.dynamic_add_media({ filepath = j.path, ephemeral = false }, function() end) then
      return failed(j, "dynamic_add_media refused " .. j.path)
    end
    show(j.pos, j.media)
    local img = j.info.images[1]
    say(j.name, ("painted %q: %dx%d, %.1f s"):format(j.prompt, img.width or 0, img.height or 0, j.info.elapsed))
    notify({ name = j.name, prompt = j.prompt, pos = j.pos, path = j.path, media = j.media, bytes = j.size,
             width = img.width, height = img.height })
  end,
}

minetest.register_globalstep(function()
  if #jobs == 0 then omixa_paintings.last_poll_us = 0; return end
  local t = minetest.get_us_time()
  local i = 1
  while i <= #jobs do
    local j = jobs[i]
    local more = true
    if j.stage then
      more = STAGES[j.stage](j)
      j.stage = j.stage + 1
    elseif j.job:poll() then
      j.stage = 1
    end
    if more then i = i + 1 else table.remove(jobs, i) end
  end
  omixa_paintings.last_poll_us = minetest.get_us_time() - t
end)

minetest.register_on_shutdown(function()
  if client then client:close() end
end)

minetest.register_chatcommand("paint", {
  params = "<prompt>",
  description = "Paint a picture of <prompt> on a canvas in front of you",
  func = function(name, param)
    local player = minetest.get_player_by_name(name)
    local pos
    if player then
      local dir = player:get_look_dir()
      pos = vector.add(player:get_pos(), vector.add(vector.multiply(dir, 2), { x = 0, y = 1, z = 0 }))
    else
      pos = minetest.setting_get_pos("static_spawnpoint") or { x = 0, y = 8, z = 0 }
    end
    local ok, err = omixa_paintings.paint(name, param, pos)
    if not ok then return false, "[paint] " .. err end
    return true, "[paint] painting " .. param .. " ..."
  end,
})
