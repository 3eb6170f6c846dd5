-- omixa.cache — the content cache behind `cache_dir`: a successful result
-- stored under the SHA-256 of what was asked, so the same request is never
-- paid for twice. Several processes may share one directory.
--
--   cache.new{ dir = path, max_bytes = 1 GiB } -> c | nil, message
--       creates DIR (and its parents) when missing; nil, message when it
--       cannot, or when LuaFileSystem (Debian lua-filesystem) is missing
--   c:key(base_path, body) -> hex    (also cache.key) SHA-256 over a version
--       tag, BASE_PATH and the canonical request body (string or omixa.buffer)
--   c:get(key) -> images, info | nil, why
--       a hit returns the stored images and info with info.cached = true and
--       info.attempts = 0, and marks the entry used; WHY is "miss", or
--       "corrupt: ..." when an entry was unreadable (it is then removed)
--   c:put(key, images, info) -> true | nil, message
--       stores a success (images: non-empty array of byte strings); the
--       per-call fields attempts, elapsed and cached are not stored
--   cache.encode(key, images, info) -> text | nil, message   an entry's text
--   cache.decode(key, text) -> images, info | nil, "corrupt: ..."
--       the same entry format for a value kept in an omixa.store (cache = true)
--
-- Entry file: <dir>/<key>.entry, written whole to a temporary file in the
-- same directory (<dir>/.tmp-<key prefix>-<random>) and renamed over the
-- entry, so a reader sees the old entry, the new one or none, never half of
-- one; two writers racing on one key leave one complete entry (the last
-- rename wins). Layout:
--
--   omixa-cache 1\n
--   <key> <info_len> <count> <len_1> ... <len_count> <sum>\n
--   <info as JSON, info_len bytes><image 1 bytes>...<image count bytes>
--
-- where <sum> is the hex SHA-256 of the second line up to the space before
-- <sum>, then the JSON, then the images. An entry whose magic, key, lengths,
-- checksum or JSON do not hold (truncated, a flipped byte, garbage, a crash
-- before the data reached the disk) is removed and reads as a miss.
--
-- Eviction: after each put, when the entries and temporary files pass
-- max_bytes, the least recently used entries are removed (used = written or
-- hit: a hit sets the file's mtime, so recency has the file system's
-- one-second resolution). Temporary files older than an hour (a writer that
-- died) are removed too. An entry larger than max_bytes is not stored.
-- Files in the directory that are not entries or temporary files are never
-- touched.

local core = require "omixa.core"
local cjson = require("cjson.safe").new()

local type, pairs, ipairs, tostring, tonumber, pcall = type, pairs, ipairs, tostring, tonumber, pcall
local setmetatable, error, require = setmetatable, error, require
local open, remove, time = io.open, os.remove, os.time
local floor, random, tointeger = math.floor, math.random, math.tointeger
local format, match, find, sub, byte, gsub = string.format, string.match, string.find, string.sub, string.byte, string.gsub
local concat, sort = table.concat, table.sort
local unpack = table.unpack or unpack -- luacheck: ignore 143

local cache = {}

local MAGIC = "omixa-cache 1\n"
local KEY_TAG = "omixa-cache-key 1\0"
local DEFAULT_MAX = 1024 * 1024 * 1024
local MAX_HEADER = 4096
local STALE_TMP = 3600
local PER_CALL = { attempts = true, elapsed = true, cached = true }

local Cache = {}
Cache.__index = Cache
Cache.__name = "omixa.cache"

function cache.key(base_path, body)
  if type(base_path) ~= "string" then
    error("omixa: cache.key: base_path must be a string (got " .. type(base_path) .. ")", 2)
  end
  if type(body) ~= "string" and type(body) ~= "userdata" then
    error("omixa: cache.key: body must be a string or an omixa.buffer (got " .. type(body) .. ")", 2)
  end
  return core.sha256(KEY_TAG, base_path, "\0", body)
end

function Cache.key(_, base_path, body) -- c:key(base_path, body)
  return cache.key(base_path, body)
end

local function check_key(key, fn)
  if type(key) ~= "string" or #key ~= 64 or find(key, "[^0-9a-f]") then
    error(format("omixa: cache:%s: key must be 64 lower-case hex digits from c:key (got %s)",
      fn, type(key) == "string" and format("%q", sub(key, 1, 80)) or type(key)), 3)
  end
end

-- mkdir -p, with LuaFileSystem.
local function mkdirs(lfs, dir)
  if lfs.attributes(dir, "mode") == "directory" then return true end
  local parent = match(dir, "^(.+)/[^/]+/*$")
  if parent and parent ~= dir and lfs.attributes(parent, "mode") == nil then
    local ok, err = mkdirs(lfs, parent)
    if not ok then return nil, err end
  end
  local ok, err = lfs.mkdir(dir)
  if not ok and lfs.attributes(dir, "mode") ~= "directory" then return nil, err end
  return true
end

function cache.new(opts)
  if type(opts) ~= "table" then error("omixa: cache.new: options must be a table", 2) end
  local dir, max_bytes = opts.dir, opts.max_bytes
  if type(dir) ~= "string" or dir == "" then
    error("omixa: cache.new: dir must be a non-empty string", 2)
  end
  if max_bytes == nil then max_bytes = DEFAULT_MAX end
  if type(max_bytes) ~= "number" or max_bytes ~= floor(max_bytes) or max_bytes < 1 then
    error("omixa: cache.new: max_bytes must be a positive integer (got " .. tostring(max_bytes) .. ")", 2)
  end
  local has_lfs, lfs = pcall(require, "lfs")
  if not has_lfs then
    return nil, "the cache needs LuaFileSystem (Debian: apt-get install lua-filesystem; LuaRocks: luafilesystem)"
  end
  dir = gsub(dir, "(.)/+$", "%1")
  local ok, err = mkdirs(lfs, dir)
  if not ok then return nil, format("cannot create the cache directory %s: %s", dir, tostring(err)) end
  return setmetatable({ dir = dir, max_bytes = max_bytes, lfs = lfs }, Cache)
end

local function entry_path(self, key)
  return self.dir .. "/" .. key .. ".entry"
end

-- On Lua 5.3+, numbers that JSON gave back as floats but were integers
-- (created, width, height, bytes) become integers again.
local function integers(v)
  if not tointeger then return v end
  if type(v) == "number" then return tointeger(v) or v end
  if type(v) == "table" then
    for k, x in pairs(v) do v[k] = integers(x) end
  end
  return v
end

-- The images and info of the entry text DATA, or nil, why.
local function decode(key, data)
  if sub(data, 1, #MAGIC) ~= MAGIC then return nil, "not an omixa cache entry" end
  local eol = find(data, "\n", #MAGIC + 1, true)
  if not eol or eol - #MAGIC > MAX_HEADER then return nil, "no header" end
  local line = sub(data, #MAGIC + 1, eol - 1)
  local words = {}
  for w in string.gmatch(line, "%S+") do words[#words + 1] = w end
  local count = tonumber(words[3] or "")
  if words[1] ~= key then return nil, "the entry is for another key" end
  if not count or count < 1 or #words ~= count + 4 then return nil, "bad header" end
  local lens, total = {}, 0
  for i = 2, count + 3 do
    if not match(words[i], "^%d+$") then return nil, "bad header" end
    if i ~= 3 then -- words[3] is the count
      lens[#lens + 1] = tonumber(words[i])
      total = total + lens[#lens]
    end
  end
  local sum = words[count + 4]
  if #data - eol ~= total then
    return nil, format("%d bytes of content where the header says %d", #data - eol, total)
  end
  -- everything after the key and before the checksum, then the content
  local signed = sub(line, 1, #line - #sum - 1)
  local parts, at = {}, eol + 1
  for i, n in ipairs(lens) do
    parts[i] = sub(data, at, at + n - 1)
    at = at + n
  end
  if core.sha256(signed, unpack(parts)) ~= sum then return nil, "checksum mismatch" end
  local info = cjson.decode(parts[1])
  if type(info) ~= "table" then return nil, "the info is not a JSON object" end
  local images = {}
  for i = 2, #parts do
    if parts[i] == "" then return nil, "an empty image" end
    images[i - 1] = parts[i]
  end
  return images, integers(info)
end

function Cache:get(key)
  check_key(key, "get")
  local path = entry_path(self, key)
  local f = open(path, "rb")
  if not f then return nil, "miss" end
  local data = f:read("*a")
  f:close()
  local images, info = cache.decode(key, data)
  if not images then
    -- Written only by rename, an entry is never half-written: this one is
    -- damaged. (A writer renaming a good entry over it just now would lose
    -- that entry: a miss later, never a wrong result.)
    remove(path)
    return nil, info
  end
  self.lfs.touch(path)
  return images, info
end

-- 16 random hex digits for a temporary name no other process picks.
local function random_hex()
  local f = open("/dev/urandom", "rb")
  local s = f and f:read(8)
  if f then f:close() end
  if not s or #s ~= 8 then
    s = tostring({}) .. tostring(os.clock()) .. tostring(random()) .. tostring(time())
    return sub(core.sha256(s), 1, 16)
  end
  return (gsub(s, ".", function(c) return format("%02x", byte(c)) end))
end

-- Remove least recently used entries (never KEEP, the one just written)
-- until the directory holds at most max_bytes; drop stale temporary files.
local function evict(self, keep)
  local lfs, dir = self.lfs, self.dir
  local ok, iter, state = pcall(lfs.dir, dir)
  if not ok then return end
  local entries, total, now = {}, 0, time()
  for name in iter, state do
    local is_entry = #name == 70 and match(name, "^%x+%.entry$")
    local is_tmp = not is_entry and match(name, "^%.tmp%-%x+%-%x+$")
    if is_entry or is_tmp then
      local path = dir .. "/" .. name
      local a = lfs.attributes(path)
      if a and a.mode == "file" then
        if is_tmp and now - a.modification > STALE_TMP then
          remove(path)
        else
          total = total + a.size
          if is_entry and path ~= keep then
            entries[#entries + 1] = { path = path, size = a.size, used = a.modification }
          end
        end
      end
    end
  end
  if total <= self.max_bytes then return end
  sort(entries, function(a, b)
    if a.used ~= b.used then return a.used < b.used end
    return a.path < b.path
  end)
  for _, e in ipairs(entries) do
    if total <= self.max_bytes then break end
    remove(e.path) -- may already be gone: another process evicts too
    total = total - e.size
  end
end

-- The entry text of a success (the layout above): TEXT, or nil, message.
-- Also the value a store keeps for `cache = true` (omixa.store: s:set).
function cache.encode(key, images, info)
  if type(images) ~= "table" or #images == 0 then
    error("omixa: cache:put: images must be a non-empty array of byte strings", 3)
  end
  for i, img in ipairs(images) do
    if type(img) ~= "string" or img == "" then
      error(format("omixa: cache:put: images[%d] must be a non-empty string", i), 3)
    end
  end
  if type(info) ~= "table" then error("omixa: cache:put: info must be a table", 3) end
  local stored = {}
  for k, v in pairs(info) do
    if not PER_CALL[k] then stored[k] = v end
  end
  local json, jerr = cjson.encode(stored)
  if not json then return nil, "cannot store the info as JSON: " .. tostring(jerr) end
  local words = { key, tostring(#json), tostring(#images) }
  for _, img in ipairs(images) do words[#words + 1] = tostring(#img) end
  local signed = concat(words, " ")
  local sum = core.sha256(signed, json, unpack(images))
  return concat({ MAGIC, signed, " ", sum, "\n", json, unpack(images) })
end

-- The images and info of entry TEXT for KEY (cached = true, attempts = 0),
-- or nil, why ("corrupt: ...").
function cache.decode(key, text)
  local images, info = decode(key, text or "")
  if not images then return nil, "corrupt: " .. info end
  info.cached = true
  info.attempts = 0
  return images, info
end

function Cache:put(key, images, info)
  check_key(key, "put")
  local text, terr = cache.encode(key, images, info)
  if not text then return nil, terr end
  local size = #text
  if size > self.max_bytes then
    return nil, format("the entry (%d bytes) is larger than the cache's max_bytes (%d)", size, self.max_bytes)
  end

  local path = entry_path(self, key)
  local tmp = format("%s/.tmp-%s-%s", self.dir, sub(key, 1, 16), random_hex())
  local f, err = open(tmp, "wb")
  if not f then return nil, "cannot write the cache entry: " .. tostring(err) end
  local ok, werr = f:write(text)
  local closed, cerr = f:close()
  if not ok or not closed then
    remove(tmp)
    return nil, "cannot write the cache entry: " .. tostring(werr or cerr)
  end
  -- os.rename cannot replace an existing file on Windows
  local renamed, rerr = core.replace_file(tmp, path)
  if not renamed then
    remove(tmp)
    return nil, "cannot write the cache entry: " .. tostring(rerr)
  end
  evict(self, path)
  return true
end

return cache
