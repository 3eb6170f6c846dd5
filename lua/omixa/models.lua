-- omixa.models — the model catalog: data, exactly as the service documents
-- it (../shared/OMIXA.md). Validation (omixa.schema) is one generic function
-- over this data; the stand-in service validates with the same catalog.
--
--   models[id] = { family = "google"|"gpt", price = "0.040000" | nil,
--                  streaming = bool, fields = { name = field, ... },
--                  order = { field names in wire order } }
--   field      = { type = "string"|"integer"|"boolean"|"images"|"image",
--                  values = {...} | nil, min =, max =, required = true|nil }
--
-- models.register(id, spec) adds a model; pairs(models) lists only models.

local pairs, ipairs, type, error, setmetatable = pairs, ipairs, type, error, setmetatable
local format = string.format

-- Fields every model shares, in the order they are sent.
local COMMON = {
  { "model",         { type = "string", required = true } },
  { "prompt",        { type = "string", required = true } },
  { "n",             { type = "integer", min = 1, max = 10 } },
  { "output_format", { type = "string", values = { "png", "jpeg", "webp" } } },
  { "input_images",  { type = "images" } },
}

local FAMILY = {
  google = {
    { "aspect_ratio",      { type = "string", values = { "1:1", "16:9", "9:16", "4:3", "3:4" } } },
    { "size",              { type = "string", values = { "0.5K", "1K", "2K", "4K" } } },
    { "person_generation", { type = "string", values = { "allow_adult", "allow_all", "dont_allow" } } },
    { "enhance_prompt",    { type = "boolean" } },
    { "add_watermark",     { type = "boolean" } },
    { "reasoning_effort",  { type = "string", values = { "minimal", "high" } } },
  },
  gpt = {
    { "size",           { type = "string", values = { "auto", "1024x1024", "1024x1536", "1536x1024" } } },
    { "quality",        { type = "string", values = { "auto", "low", "medium", "high" } } },
    { "background",     { type = "string", values = { "auto", "transparent", "opaque" } } },
    { "moderation",     { type = "string", values = { "auto", "low" } } },
    { "input_fidelity", { type = "string", values = { "auto", "low", "high" } } },
    { "mask",           { type = "image" } },
  },
}

local function copy_field(f)
  local c = {}
  for k, v in pairs(f) do
    if k == "values" then
      local vs = {}
      for i, x in ipairs(v) do vs[i] = x end
      c.values = vs
    else
      c[k] = v
    end
  end
  return c
end

-- A model entry for FAMILY, with its own copies of the field tables so a
-- caller that edits one model never changes another.
local function entry(family, price, streaming)
  local fields, order = {}, {}
  for _, list in ipairs({ COMMON, FAMILY[family] }) do
    for _, pair in ipairs(list) do
      fields[pair[1]] = copy_field(pair[2])
      order[#order + 1] = pair[1]
    end
  end
  return { family = family, price = price, streaming = streaming, fields = fields, order = order }
end

local models = {}

local TYPES = { string = true, integer = true, boolean = true, images = true, image = true }

-- models.register(id, spec): spec is { family = , price = , streaming = ,
-- fields = {...}, order = {...} (optional) }; with only a family, the
-- family's documented fields are used.
local function register(id, spec)
  if type(id) ~= "string" or id == "" then
    error("omixa: models.register: id must be a non-empty string", 2)
  end
  if type(spec) ~= "table" then
    error("omixa: models.register: spec must be a table", 2)
  end
  local e
  if spec.fields == nil then
    if not FAMILY[spec.family] then
      error(format("omixa: models.register: family must be 'google' or 'gpt' when no fields are given (got %s)",
        tostring(spec.family)), 2)
    end
    e = entry(spec.family, spec.price, spec.streaming == true)
  else
    local fields, order = {}, {}
    for name, f in pairs(spec.fields) do
      if type(name) ~= "string" or type(f) ~= "table" or not TYPES[f.type] then
        error(format("omixa: models.register: field '%s' needs a type of string, integer, boolean, images or image",
          tostring(name)), 2)
      end
      fields[name] = copy_field(f)
    end
    for _, pair in ipairs(COMMON) do
      if not fields[pair[1]] then fields[pair[1]] = copy_field(pair[2]) end
    end
    if spec.order then
      for i, name in ipairs(spec.order) do order[i] = name end
    else
      local seen = {}
      for _, pair in ipairs(COMMON) do order[#order + 1] = pair[1]; seen[pair[1]] = true end
      local rest = {}
      for name in pairs(fields) do if not seen[name] then rest[#rest + 1] = name end end
      table.sort(rest)
      for _, name in ipairs(rest) do order[#order + 1] = name end
    end
    e = { family = spec.family, price = spec.price, streaming = spec.streaming == true,
          fields = fields, order = order }
  end
  if e.price ~= nil and (type(e.price) ~= "string" or not e.price:match("^%d+%.%d%d%d%d%d%d$")) then
    error("omixa: models.register: price must be a six-decimal string such as \"0.040000\"", 2)
  end
  models[id] = e
  return e
end

models["gemini-2.0-flash-preview-image-generation"] = entry("google", "0.040000", true)
models["imagen-4.0-generate-001"]                   = entry("google", "0.040000", false)
models["imagen-4.0-fast-generate-001"]              = entry("google", nil, false)
models["gpt-image-1.5"]                             = entry("gpt", "0.033000", true)
models["MAI-Image-2.5"]                             = entry("gpt", "0.033000", true)

-- The fields every model accepts (for strict = false with an unknown model).
local common = {}
for _, pair in ipairs(COMMON) do common[pair[1]] = copy_field(pair[2]) end

local DEFAULT = "gemini-2.0-flash-preview-image-generation"

return setmetatable(models, {
  __index = { register = register, common = common, default = DEFAULT },
})
