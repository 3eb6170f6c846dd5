-- omixa.schema — one generic validator over the catalog (omixa.models).
-- Pure Lua with no dependency, so the stand-in service (LuaJIT inside nginx)
-- checks requests with the very same rules as the client.
--
--   schema.check(request, opts) -> prepared | nil, message
--     opts.model   default model id when the request names none
--     opts.strict  false: an unknown model id is allowed, only the common
--                  fields are checked and the others are sent as given
--     opts.image   function(item, where) -> value | nil, message: resolves one
--                  image item (the client reads files, sniffs, encodes)
--     prepared = { model = id, spec = entry | nil,
--                  fields = { { name, value }, ... } in wire order }
--   schema.check_wire(t) -> true | nil, message   (a decoded wire request)
--   schema.suggest(name, candidates) -> closest name | nil

local models = require "omixa.models"
local wire = require "omixa.request"

local type, pairs, ipairs, tostring = type, pairs, ipairs, tostring
local floor, huge = math.floor, math.huge
local byte, find, format, sub, gsub = string.byte, string.find, string.format, string.sub, string.gsub
local concat, sort = table.concat, table.sort

local schema = {}

-- lua-cjson's null, when cjson is there (the client and the stand-in have it).
local has_cjson, cjson = pcall(require, "cjson")
local NULL = has_cjson and cjson.null or {}

-- "got ..." text for a value: strings quoted and shortened, others by kind.
local function show(v)
  local t = type(v)
  if t == "string" then
    local s = #v > 40 and sub(v, 1, 37) .. "..." or v
    s = gsub(s, '[%c"\\\128-\255]', function(c)
      if c == '"' or c == "\\" then return "\\" .. c end
      local b = byte(c)
      if b >= 128 then return c end
      return format("\\%d", b)
    end)
    return '"' .. s .. '"'
  elseif t == "number" or t == "boolean" then
    return tostring(v)
  elseif t == "nil" then
    return "nothing"
  elseif v == NULL then
    return "null"
  end
  return "a " .. t
end
schema.show = show

local function fail(fmt, ...)
  return nil, "omixa: " .. format(fmt, ...)
end

-- Levenshtein distance, cut off early: names are short.
local function distance(a, b)
  local la, lb = #a, #b
  if la == 0 then return lb end
  if lb == 0 then return la end
  local prev, cur = {}, {}
  for j = 0, lb do prev[j] = j end
  for i = 1, la do
    cur[0] = i
    local ca = byte(a, i)
    for j = 1, lb do
      local cost = ca == byte(b, j) and 0 or 1
      local d = prev[j] + 1
      if cur[j - 1] + 1 < d then d = cur[j - 1] + 1 end
      if prev[j - 1] + cost < d then d = prev[j - 1] + cost end
      cur[j] = d
    end
    prev, cur = cur, prev
  end
  return prev[lb]
end

function schema.suggest(name, candidates)
  local best, bestd
  local lname = name:lower()
  for _, c in ipairs(candidates) do
    local d = distance(lname, c:lower())
    if d < (bestd or huge) then best, bestd = c, d end
  end
  if best and bestd <= math.max(2, floor(#name / 3)) then return best end
  return nil
end

-- True when S is strict UTF-8; else nil and the 1-based offset of the
-- first bad sequence.
local function utf8_ok(s)
  if not find(s, "[\128-\255]") then return true end
  local i, n = 1, #s
  while i <= n do
    local c = byte(s, i)
    if c < 0x80 then
      i = i + 1
    else
      local len, min
      if c >= 0xC2 and c <= 0xDF then len, min = 2, 0x80
      elseif c >= 0xE0 and c <= 0xEF then len, min = 3, 0x800
      elseif c >= 0xF0 and c <= 0xF4 then len, min = 4, 0x10000
      else return nil, i end
      if i + len - 1 > n then return nil, i end
      local cp = c % (2 ^ (7 - len))
      for k = 1, len - 1 do
        local cc = byte(s, i + k)
        if cc < 0x80 or cc > 0xBF then return nil, i end
        cp = cp * 64 + (cc - 0x80)
      end
      if cp < min or cp > 0x10FFFF or (cp >= 0xD800 and cp <= 0xDFFF) then return nil, i end
      i = i + len
    end
  end
  return true
end
schema.utf8_ok = utf8_ok

local function is_null(v)
  return v ~= nil and v == NULL
end

local function is_integral(v)
  return type(v) == "number" and v == v and v ~= huge and v ~= -huge and floor(v) == v
end

local function sequence_length(t)
  local n = 0
  for k in pairs(t) do
    if type(k) ~= "number" or k < 1 or floor(k) ~= k then return nil end
    if k > n then n = k end
  end
  for i = 1, n do if t[i] == nil then return nil end end
  return n
end

-- Check VALUE against FIELD; image fields go through RESOLVE.
-- Returns the value to send, or nil, message.
local function check_value(name, field, value, resolve)
  local t = field.type
  if t == "string" then
    if type(value) ~= "string" then
      return fail("field '%s' must be a string (got %s)", name, show(value))
    end
    if field.values then
      for _, ok in ipairs(field.values) do
        if value == ok then return value end
      end
      return fail("field '%s' must be one of %s (got %s)", name, concat(field.values, ", "), show(value))
    end
    if field.required and value == "" then
      return fail("field '%s' must be a non-empty string (got \"\")", name)
    end
    local ok, at = utf8_ok(value)
    if not ok then
      return fail("field '%s' must be valid UTF-8 (bad byte at position %d)", name, at)
    end
    return value
  elseif t == "integer" then
    local min, max = field.min or -huge, field.max or huge
    if not is_integral(value) or value < min or value > max then
      if field.min and field.max then
        return fail("field '%s' must be an integer from %d to %d (got %s)", name, field.min, field.max, show(value))
      end
      return fail("field '%s' must be an integer (got %s)", name, show(value))
    end
    return value
  elseif t == "boolean" then
    if type(value) ~= "boolean" then
      return fail("field '%s' must be a boolean (got %s)", name, show(value))
    end
    return value
  elseif t == "images" then
    if type(value) ~= "table" then
      return fail("field '%s' must be an array of images (got %s)", name, show(value))
    end
    local n = sequence_length(value)
    if not n or n == 0 then
      return fail("field '%s' must be a non-empty array of images", name)
    end
    local out = {}
    for i = 1, n do
      local v, err = resolve(value[i], format("%s[%d]", name, i))
      if v == nil then return nil, err end
      out[i] = v
    end
    return out
  elseif t == "image" then
    return resolve(value, name)
  end
  return fail("field '%s' has an unknown type '%s' in the catalog", name, tostring(t))
end

local function sorted_keys(t)
  local ks = {}
  for k in pairs(t) do ks[#ks + 1] = k end
  sort(ks)
  return ks
end

-- Which model ids know FIELD (for a clearer message on a family mix-up).
local function models_with(field)
  local ids = {}
  for id, m in pairs(models) do
    if m.fields[field] then ids[#ids + 1] = id end
  end
  sort(ids)
  return ids
end

local function unknown_field(name, model, fields)
  if type(name) ~= "string" then
    return fail("request keys must be field names (got %s)", show(name))
  end
  local candidates = sorted_keys(fields)
  local hint = schema.suggest(name, candidates)
  if hint then
    return fail("unknown field '%s' for model '%s' (did you mean '%s'?)", name, model, hint)
  end
  if #models_with(name) > 0 then
    return fail("field '%s' is not accepted by model '%s' (it accepts %s)", name, model, concat(candidates, ", "))
  end
  return fail("unknown field '%s' for model '%s' (it accepts %s)", name, model, concat(candidates, ", "))
end

local function known_models()
  return concat(sorted_keys(models), ", ")
end

function schema.check(request, opts)
  opts = opts or {}
  if type(request) ~= "table" then
    return fail("request must be a table (got %s)", show(request))
  end
  local model = request.model
  if model == nil then model = opts.model or models.default end
  if type(model) ~= "string" or model == "" then
    return fail("field 'model' must be a non-empty string (got %s)", show(model))
  end
  local spec = models[model]
  local fields, order
  if spec then
    fields, order = spec.fields, spec.order
  elseif opts.strict == false then
    fields = models.common
  else
    local hint = schema.suggest(model, sorted_keys(models))
    return fail("unknown model '%s'%s (known: %s)", model,
      hint and format(" (did you mean '%s'?)", hint) or "", known_models())
  end
  local resolve = opts.image or function(v) return v end

  -- Every key first: an unknown one is the likeliest mistake.
  local extra = {}
  for k in pairs(request) do
    if not fields[k] then
      if spec or type(k) ~= "string" then
        local _, err = unknown_field(k, model, fields)
        return nil, err
      end
      extra[#extra + 1] = k
    end
  end
  for name, field in pairs(fields) do
    if field.required and request[name] == nil and name ~= "model" then
      return fail("field '%s' is required", name)
    end
  end

  local out = { { "model", model } }
  local function add(name)
    local value = request[name]
    if value == nil or name == "model" then return true end
    local v, err = check_value(name, fields[name], value, resolve)
    if v == nil then return nil, err end
    out[#out + 1] = { name, v }
    return true
  end
  local ok, err
  if order then
    for _, name in ipairs(order) do
      ok, err = add(name)
      if not ok then return nil, err end
    end
  else
    for _, name in ipairs({ "prompt", "n", "output_format", "input_images" }) do
      ok, err = add(name)
      if not ok then return nil, err end
    end
    sort(extra)
    for _, name in ipairs(extra) do
      local v = request[name]
      local tv = type(v)
      if tv ~= "string" and tv ~= "boolean" and not is_integral(v) then
        return fail("field '%s' must be a string, an integer or a boolean (got %s)", name, show(v))
      end
      out[#out + 1] = { name, v }
    end
  end
  return { model = model, spec = spec, fields = out }
end

-- Data URL of an inline image: "data:image/<x>;base64,<payload>".
local IMAGE_MIMES = {
  ["image/png"] = true, ["image/jpeg"] = true, ["image/webp"] = true, ["image/gif"] = true,
  ["image/heic"] = true, ["image/heif"] = true, ["image/avif"] = true,
}
schema.image_mimes = IMAGE_MIMES

-- nil, message unless S is a data URL of a known image mime whose payload
-- only has base64 characters (padding at the end). Decoding is the caller's.
-- nil, message when S is a URL (any scheme): an input image is sent inline.
function schema.not_remote(s, where)
  if wire.scheme(s) then
    return fail("field '%s' is a remote URL; the service wants inline data: give a file path, bytes or a data: URL",
      where)
  end
  return true
end

function schema.check_data_url(s, where)
  local mime, payload_at = s:match("^data:([%w%.%+%-]+/[%w%.%+%-]+);base64,()")
  if not mime then
    local ok, err = schema.not_remote(s, where)
    if not ok then return nil, err end
    return fail("field '%s' must be a data:image/...;base64, URL (got %s)", where, show(s))
  end
  mime = mime:lower()
  if not IMAGE_MIMES[mime] then
    return fail("field '%s' has mime type '%s'; accepted are image/png, image/jpeg, image/webp, image/gif, image/heic, image/heif, image/avif",
      where, mime)
  end
  local bad = find(s, "[^%w%+/=\r\n]", payload_at) or find(s, "=[^=\r\n]", payload_at)
  if bad or payload_at > #s then
    return fail("field '%s' has invalid base64 data%s", where,
      bad and format(" at byte %d", bad - payload_at + 1) or " (empty)")
  end
  return mime, payload_at
end

-- The wire form of one image: { type = "image_url", image_url = { url = } }.
local function wire_image(item, where)
  if type(item) ~= "table" or item.type ~= "image_url" or type(item.image_url) ~= "table"
      or type(item.image_url.url) ~= "string" then
    return fail("field '%s' must be {\"type\":\"image_url\",\"image_url\":{\"url\":\"data:...\"}}", where)
  end
  local ok, err = schema.check_data_url(item.image_url.url, where)
  if not ok then return nil, err end
  return item
end

-- Check a request as the service receives it (decoded JSON): what the
-- stand-in does. cjson's null is refused like any other wrong type.
function schema.check_wire(t)
  if type(t) ~= "table" then
    return fail("request body must be a JSON object")
  end
  if t.model == nil or is_null(t.model) then
    return fail("field 'model' is required")
  end
  for k, v in pairs(t) do
    if is_null(v) then
      return fail("field '%s' must not be null", tostring(k))
    end
  end
  local ok, err = schema.check(t, { image = wire_image })
  if not ok then return nil, err end
  return true
end

return schema
