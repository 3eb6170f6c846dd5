-- omixa.images — image helpers (read, sniff, data URLs, atomic save) and the
-- resolver that turns each input image a request names into wire data.

local core = require "omixa.core"
local schema = require "omixa.schema"

local type, tostring = type, tostring
local open, remove = io.open, os.remove
local format, match = string.format, string.match

local images = {}

-- omixa.sniff(bytes): nil when the header is cut before the size (API.md)
function images.sniff(bytes) return core.sniff(bytes) end

-- The type of BYTES for a mime: a cut header still names its format.
local function sniff_type(bytes) return core.sniff(bytes, true) end
images.b64encode = core.b64encode
images.b64decode = core.b64decode

local function fail(fmt, ...)
  return nil, "omixa: " .. format(fmt, ...)
end

local function read_file(path)
  local f, err = open(path, "rb")
  if not f then return nil, err end
  local bytes = f:read("*a")
  f:close()
  if not bytes then return nil, path .. ": read failed" end
  return bytes
end

-- omixa.read_image(path) -> bytes, mime | nil, message
function images.read_image(path)
  if type(path) ~= "string" then
    error("omixa: read_image: path must be a string (got " .. type(path) .. ")", 2)
  end
  local bytes, err = read_file(path)
  if not bytes then return nil, "omixa: cannot read image: " .. tostring(err) end
  local info = sniff_type(bytes)
  if not info then
    return nil, format("omixa: %s is not a PNG, JPEG, WebP, GIF, HEIC/HEIF or AVIF image", path)
  end
  return bytes, info.mime
end

-- omixa.data_url(bytes [, mime]) -> "data:image/png;base64,..."
function images.data_url(bytes, mime)
  if type(bytes) ~= "string" then
    error("omixa: data_url: bytes must be a string (got " .. type(bytes) .. ")", 2)
  end
  if mime == nil then
    local info = sniff_type(bytes)
    if not info then error("omixa: data_url: bytes are not a known image type; pass a mime", 2) end
    mime = info.mime
  elseif type(mime) ~= "string" or not match(mime, "^[%w%.%+%-]+/[%w%.%+%-]+$") then
    error("omixa: data_url: mime must be a type/subtype string (got " .. tostring(mime) .. ")", 2)
  end
  return "data:" .. mime .. ";base64," .. core.b64encode(bytes)
end

-- omixa.save(bytes, path) -> true | nil, message. Atomic: a temporary file
-- beside PATH, then rename, so a reader never sees half an image.
local counter = 0
function images.save(bytes, path)
  if type(bytes) ~= "string" then
    error("omixa: save: bytes must be a string (got " .. type(bytes) .. ")", 2)
  end
  if type(path) ~= "string" or path == "" then
    error("omixa: save: path must be a non-empty string", 2)
  end
  counter = counter + 1
  local tmp = format("%s.%s-%d.tmp", path, tostring({}):match("0x(%x+)") or "t", counter)
  local f, err = open(tmp, "wb")
  if not f then return nil, "omixa: cannot write " .. path .. ": " .. tostring(err) end
  local ok, werr = f:write(bytes)
  local closed, cerr = f:close()
  if not ok or not closed then
    remove(tmp)
    return nil, "omixa: cannot write " .. path .. ": " .. tostring(werr or cerr)
  end
  -- os.rename cannot replace an existing file on Windows
  local renamed, rerr = core.replace_file(tmp, path)
  if not renamed then
    remove(tmp)
    return nil, "omixa: cannot write " .. path .. ": " .. tostring(rerr)
  end
  return true
end

local function from_bytes(bytes, mime, where)
  if mime == nil then
    local info = sniff_type(bytes)
    if not info then
      return fail("field '%s' is not a PNG, JPEG, WebP, GIF, HEIC/HEIF or AVIF image (pass mime = ... for other types)", where)
    end
    mime = info.mime
  elseif type(mime) ~= "string" or not schema.image_mimes[mime:lower()] then
    return fail("field '%s' has mime %s; accepted are image/png, image/jpeg, image/webp, image/gif, image/heic, image/heif, image/avif",
      where, schema.show(mime))
  end
  return { mime = mime:lower(), bytes = #bytes, data = bytes }
end

local function from_data_url(url, where)
  local mime, at = schema.check_data_url(url, where)
  if not mime then return nil, at end
  local bytes, err = core.b64decode(url:sub(at))
  if not bytes then return fail("field '%s' has invalid base64 data: %s", where, err) end
  return { mime = mime, bytes = #bytes, url = url }
end

-- A file is sniffed from its first bytes and measured here; the rest is
-- read only when the body is built (omixa.request), straight into its base64,
-- so its bytes never become a Lua string. SNIFF_BYTES covers every header
-- core.sniff needs for the mime type.
local SNIFF_BYTES = 4096

local function from_path(path, where)
  if path == "" then return fail("field '%s' is an empty path", where) end
  local f, err = open(path, "rb")
  if not f then return fail("field '%s': cannot read image file: %s", where, tostring(err)) end
  local head, rerr = f:read(SNIFF_BYTES)
  if not head and rerr then
    f:close()
    return fail("field '%s': cannot read image file: %s: %s", where, path, tostring(rerr))
  end
  head = head or ""
  local size = f:seek("end")
  if not size or size < #head then -- a pipe, a /proc file: no size but by reading it all
    if size then f:seek("set", #head) end
    local rest = f:read("*a")
    f:close()
    return from_bytes(head .. (rest or ""), nil, where)
  end
  f:close()
  local info = sniff_type(head)
  if not info then
    return fail("field '%s' is not a PNG, JPEG, WebP, GIF, HEIC/HEIF or AVIF image (pass mime = ... for other types)", where)
  end
  return { mime = info.mime, bytes = size, path = path, where = where }
end

-- Resolve one input image item (see API.md "Requests") into
-- { mime =, bytes = <size>, data = <raw bytes> | url = <data URL>
--   | path = <file>, where = <field> }.
function images.resolve(item, where)
  local t = type(item)
  if t == "string" then
    if match(item, "^data:") then return from_data_url(item, where) end
    local ok, err = schema.not_remote(item, where)
    if not ok then return nil, err end
    return from_path(item, where)
  elseif t == "table" then
    if item.type == "image_url" then
      local iu = item.image_url
      if type(iu) ~= "table" or type(iu.url) ~= "string" then
        return fail("field '%s' must be { type = \"image_url\", image_url = { url = \"data:...\" } }", where)
      end
      return from_data_url(iu.url, where) -- refuses a remote URL
    elseif item.path ~= nil then
      if type(item.path) ~= "string" then return fail("field '%s.path' must be a string", where) end
      return from_path(item.path, where)
    elseif item.bytes ~= nil then
      if type(item.bytes) ~= "string" or item.bytes == "" then
        return fail("field '%s.bytes' must be a non-empty string", where)
      end
      return from_bytes(item.bytes, item.mime, where)
    end
    return fail("field '%s' must have path, bytes or the image_url wire form", where)
  end
  return fail("field '%s' must be a file path, a data: URL or a table (got %s)", where, schema.show(item))
end

return images
