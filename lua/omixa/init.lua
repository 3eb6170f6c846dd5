-- omixa — Lua table in, image bytes out, through the Omixa image service.
--
--   local omixa = require "omixa"
--   local images, info = omixa.generate{ prompt = "a lighthouse at dusk" }
--   assert(omixa.save(images[1], "lighthouse.png"))
--
-- The public API of ../shared/API.md; each piece lives in its own module.

local client = require "omixa.client"
local schema = require "omixa.schema"
local images = require "omixa.images"
local models = require "omixa.models"
local errors = require "omixa.errors"

local error = error

local omixa = {
  _VERSION = "omixa " .. client.VERSION,
  models = models,
  read_image = images.read_image,
  data_url = images.data_url,
  sniff = images.sniff,
  save = images.save,
  b64encode = images.b64encode,
  b64decode = images.b64decode,
  is_error = errors.is,
  store = require "omixa.store",
}

function omixa.new(options)
  local ok, c = pcall(client.new, options)
  if not ok then error(c, 2) end
  return c
end

-- omixa.validate(request) -> true | nil, message (never raises for a bad
-- request; input image files are read and checked too).
function omixa.validate(request)
  local ok, err = schema.check(request, { image = images.resolve })
  if not ok then return nil, err end
  return true
end

-- The default client, built from the environment on first use.
local default
local function default_client()
  if not default or default.closed then default = client.new() end
  return default
end

function omixa.generate(request, call_opts)
  local c = default_client()
  local res = { pcall(c.generate, c, request, call_opts) }
  if not res[1] then error(res[2], 2) end
  return res[2], res[3]
end

return omixa
