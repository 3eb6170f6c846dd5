-- omixa_nvim — generate images from Neovim without freezing it.
--
--   :OmixaGenerate a lighthouse at dusk     -- starts a job, returns at once
--   :OmixaCancel                            -- cancels every running job
--
-- The client's descriptor (client:fd()) is watched by a vim.uv poll handle
-- (vim.loop before Neovim 0.10): the editor's own event loop wakes the
-- plugin when a transfer can make progress, and nothing runs in between
-- (where there is no descriptor, the portable event backend on Windows, a
-- timer polls every client:poll_interval() seconds while jobs run).
-- Each image is written to stdpath('cache')/omixa/<time>.<format> and its
-- path reported with vim.notify.
--
--   require("omixa_nvim").setup{
--     client = { model = "gpt-image-1.5" },   -- omixa.new options (default: from OMIXA_* variables)
--     request = { aspect_ratio = "16:9" },    -- fields added to every request
--     dir = nil,                              -- default stdpath('cache') .. '/omixa'
--   }
--
-- omixa must be on package.path/package.cpath, built for LuaJIT
-- (`make LUA=luajit install`, or point package.cpath at build/luajit).

local omixa = require "omixa"

local uv = vim.uv or vim.loop

local M = {}

local config = { client = {}, request = {}, dir = nil }
local client, watcher
local running = {} -- job -> { prompt =, path =, started = }
local seq = 0

local function notify(msg, level)
  vim.notify(msg, level or vim.log.levels.INFO)
end

function M.setup(opts)
  opts = opts or {}
  config.client = opts.client or config.client
  config.request = opts.request or config.request
  config.dir = opts.dir or config.dir
  M.close() -- the next generate makes a client with the new options
end

-- A finished job: save its first image, say where (normal context).
local function report(job, entry)
  local ok, images, info = pcall(job.result, job)
  if not ok then return notify("omixa: " .. tostring(images), vim.log.levels.ERROR) end
  if not images and info.kind == "cancelled" then
    -- the user asked for it (:OmixaCancel): information, not an error
    return notify(("omixa: %q cancelled%s"):format(entry.prompt,
      info.maybe_billed and " (it may still be billed: it had been sent)" or ""))
  end
  if not images then
    return notify(("omixa: %q failed: %s"):format(entry.prompt, tostring(info)), vim.log.levels.ERROR)
  end
  local img = info.images[1]
  local path = entry.path .. "." .. (img.format or "png")
  local saved, err = omixa.save(images[1], path)
  if not saved then return notify("omixa: " .. err, vim.log.levels.ERROR) end
  notify(("omixa: wrote %s (%dx%d, %d bytes, %.1f s)"):format(path, img.width or 0, img.height or 0,
    img.bytes, (uv.hrtime() - entry.started) / 1e9))
end

-- The descriptor is readable: advance every transfer, hand finished jobs
-- over to the main loop. Runs in a fast event (no vim.api here).
local function on_readable(err)
  if err then return end
  local ok, perr = pcall(client.poll, client)
  if not ok then vim.schedule(function() notify("omixa: " .. tostring(perr), vim.log.levels.ERROR) end) end
  for job, entry in pairs(running) do
    if job:done() then
      running[job] = nil
      vim.schedule(function() report(job, entry) end)
    end
  end
  if next(running) == nil then watcher:stop() end
end

local function get_client()
  if not client then
    client = omixa.new(config.client)
    local fd = client:fd()
    if fd then
      watcher = uv.new_poll(fd)
    else
      -- The portable event backend (Windows) has no descriptor: a timer
      -- polls as often as client:poll_interval() says while jobs run.
      local timer = uv.new_timer()
      watcher = {
        start = function(_, _, cb)
          timer:start(0, math.max(1, math.ceil(client:poll_interval() * 1000)), function() cb() end)
        end,
        stop = function() timer:stop() end,
        close = function() timer:close() end,
      }
    end
  end
  return client
end

-- M.generate(prompt [, request]) -> job: starts at once; misuse raises.
function M.generate(prompt, request)
  local req = vim.tbl_extend("force", config.request, request or {}, { prompt = prompt })
  local dir = config.dir or (vim.fn.stdpath("cache") .. "/omixa")
  vim.fn.mkdir(dir, "p")
  seq = seq + 1
  local c = get_client()
  local job = c:start(req)
  running[job] = { prompt = prompt, started = uv.hrtime(),
                   path = ("%s/%s-%d"):format(dir, os.date("%Y%m%d-%H%M%S"), seq) }
  watcher:start("r", on_readable)
  return job
end

function M.cancel()
  local n = 0
  for job in pairs(running) do job:cancel(); n = n + 1 end
  if watcher and n > 0 then on_readable() end
  return n
end

-- Cancels what runs (unreported) and frees the client.
function M.close()
  if client then
    watcher:close()
    client:close()
    client, watcher, running = nil, nil, {}
  end
end

return M
