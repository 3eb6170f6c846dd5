-- omixa.serve.state: what the stand-in remembers between requests. nginx
-- runs one process (master_process off), so this is plain Lua in its one VM:
-- the fault queue, the requests and image fetches seen, the images of
-- url_only answers, and the running total of what it billed. The request
-- handler and the fault injection write it; the control API reads and
-- clears it.

local ngx = ngx

local type, tonumber = type, tonumber
local floor, random = math.floor, math.random
local remove = table.remove
local format = string.format

local MAX_RECORDED_BYTES = 512 * 1024 * 1024 -- oldest recorded requests go first
local MAX_STORED_IMAGES = 256

local M = {}

M.faults = {}     -- queue of fault tables (faults.lua)
M.requests = {}   -- recorded generation requests
M.fetches = {}    -- recorded GETs of /_omixa/images/*
M.billing = { micros = 0, images = 0, answers = 0 }
local recorded_bytes = 0
local images, image_ids = {}, {} -- id -> { bytes =, mime = }; ids oldest first

-- Record a request (METHOD, BODY, the URI and headers) in LIST
-- (M.requests or M.fetches).
function M.record(list, method, body, headers)
  local entry = { method = method, uri = ngx.var.request_uri, headers = headers,
                  body = body or "" }
  list[#list + 1] = entry
  if list == M.requests then
    recorded_bytes = recorded_bytes + #entry.body
    while recorded_bytes > MAX_RECORDED_BYTES and #M.requests > 1 do
      recorded_bytes = recorded_bytes - #remove(M.requests, 1).body
    end
  end
  return entry
end

function M.forget_requests()
  M.requests, recorded_bytes = {}, 0
end

-- Keep an image for GET /_omixa/images/<id>; returns the id.
function M.store_image(bytes, mime)
  local id = format("%x%x", floor(ngx.now() * 1000), random(0, 0x7fffffff))
  images[id] = { bytes = bytes, mime = mime }
  image_ids[#image_ids + 1] = id
  if #image_ids > MAX_STORED_IMAGES then images[remove(image_ids, 1)] = nil end
  return id
end

function M.image(id)
  return images[id]
end

-- Money: six-decimal strings <-> integer micro-dollars.
function M.micros(price)
  if type(price) ~= "string" then return 0 end
  local i, f = price:match("^(%d+)%.(%d+)$")
  if not i then i, f = price:match("^(%d+)$"), "0" end
  if not i then return 0 end
  f = (f .. "000000"):sub(1, 6)
  return tonumber(i) * 1000000 + tonumber(f)
end

function M.amount(m)
  return format("%d.%06d", floor(m / 1000000), m % 1000000)
end

-- One answer that billed AMOUNT (a six-decimal string) for N images.
function M.bill(amount, n)
  local b = M.billing
  b.micros = b.micros + M.micros(amount)
  b.images = b.images + n
  b.answers = b.answers + 1
end

-- The running total, as GET /_omixa/billing shows it.
function M.billed()
  local b = M.billing
  return { billed_amount = M.amount(b.micros), images = b.images, answers = b.answers }
end

function M.forget_billing()
  M.billing = { micros = 0, images = 0, answers = 0 }
end

-- POST /_omixa/reset: everything above back to empty.
function M.reset()
  M.faults, M.fetches = {}, {}
  M.forget_requests()
  M.forget_billing()
  images, image_ids = {}, {}
end

return M
