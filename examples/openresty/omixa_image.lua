-- omixa_image — GET /image?prompt=... for nginx with the Lua module
-- (OpenResty, or Debian's nginx + libnginx-mod-http-lua), answering with the
-- image bytes. It never blocks the worker: omixa only builds the request
-- (client:prepare) and reads the answer (client:parse); the HTTP exchange is
-- an nginx subrequest (ngx.location.capture) to the internal location
-- /_omixa_upstream, which proxy_passes it to the service, and an answer
-- whose items carry only a url has its images read over a cosocket
-- (omixa_fetch, given to client:parse). While it waits, the worker serves
-- everything else. See nginx.conf next to this file.
--
--   location = /image { content_by_lua_block { require("omixa_image").handle() } }
--   location = /_omixa_upstream {
--     internal;
--     set $omixa_url "";
--     rewrite_by_lua_block { require("omixa_image").upstream() }   -- after set: URL and headers
--     proxy_pass $omixa_url;
--   }
--
-- The client comes from the environment (OMIXA_API_KEY, OMIXA_BASE_URL,
-- OMIXA_MODEL: list them with `env` in nginx.conf); one per worker.

local omixa = require "omixa"
local omixa_fetch = require "omixa_fetch"
local omixa_store = require "omixa_store" -- one budget for every worker (shared dict or Redis)

local ngx = ngx
local pairs, pcall, tostring, type, min, ceil = pairs, pcall, tostring, type, math.min, math.ceil

local M = {}

local UPSTREAM = "/_omixa_upstream"
-- Own transport: retrying is ours. Only answers that surely come from the
-- service and bill nothing: nginx's proxy itself says 502 or 504 when the
-- connection fails or times out, an outcome that may have been billed.
local MAX_ATTEMPTS = 3
local RETRY = { [408] = true, [409] = true, [429] = true, [503] = true }

local client
-- url-only items: read over a cosocket, never by omixa's blocking libcurl
local fetch = omixa_fetch.new()

local function fail(status, message)
  ngx.status = status
  ngx.header["Content-Type"] = "text/plain; charset=utf-8"
  ngx.say(message)
  return ngx.exit(status)
end

-- One exchange through the subrequest: images, info | nil, err | nil, nil
-- when the answer was cut short (the outcome is unknown).
local function exchange(req)
  local res = ngx.location.capture(UPSTREAM, {
    method = ngx.HTTP_POST,
    body = req.body,
    ctx = { omixa_url = req.url, omixa_headers = req.headers },
  })
  if res.truncated then return nil, nil end
  return client:parse(res.status, res.body or "", res.header, fetch)
end

local function answer(images, info)
  local img = info.images[1]
  ngx.header["Content-Type"] = img.mime
  ngx.header["X-Request-Id"] = info.request_id
  if info.cached then ngx.header["X-Omixa-Cached"] = "1" end
  ngx.print(images[1])
end

function M.handle()
  -- cache = true: prepare gives the request's cache_key, the identity under
  -- which omixa_store shares it with every worker
  client = client or omixa.new{ cache = true }
  local args = ngx.req.get_uri_args()
  local request = { prompt = args.prompt, aspect_ratio = args.aspect_ratio, size = args.size,
                    output_format = args.format, model = args.model }
  for k, v in pairs(request) do
    if type(v) ~= "string" then request[k] = nil end -- absent or repeated
  end
  local ok, req, perr = pcall(client.prepare, client, request)
  if not ok then return fail(400, tostring(req)) end -- misuse: the message names the field
  if not req then return fail(500, tostring(perr)) end -- config: no key, ...

  -- the same request in flight in any worker: wait for its result
  local key = req.cache_key
  local shared, serr, skind = omixa_store.share(key, 300)
  if not shared then return fail(skind == "store" and 503 or 504, serr) end -- nothing sent
  if shared ~= true then return answer(shared, serr) end

  local hold, herr, hkind = omixa_store.reserve(request.model or client.model, 1)
  if not hold then omixa_store.drop(key); return fail(hkind == "budget" and 402 or 503, herr) end -- nothing sent

  local images, info
  for attempt = 1, MAX_ATTEMPTS do
    images, info = exchange(req)
    if not info then
      omixa_store.drop(key)
      omixa_store.settle(hold, nil)
      return fail(502, "omixa: the service's answer was cut short (it may have been billed)")
    end
    if images or not RETRY[info.status] or attempt == MAX_ATTEMPTS then break end
    local wait = info.retry_after or min(0.5 * 2 ^ (attempt - 1), 8)
    if wait > 10 then break end -- say so to our client instead
    ngx.sleep(wait) -- yields to other requests, never blocks the worker
  end
  -- what the service billed: its billed_amount; 0 when it said it failed;
  -- the estimate (nil) when that is unknown
  local billed
  if images then billed = omixa_store.micros(info.billed_amount or "")
  elseif info and not info.maybe_billed then billed = 0 end
  omixa_store.settle(hold, billed)
  if images then omixa_store.keep(key, images, info) else omixa_store.drop(key) end
  if not images then
    ngx.log(ngx.WARN, tostring(info))
    local status = (info.status == 429 or info.status == 503) and info.status or 502
    if info.retry_after then ngx.header["Retry-After"] = tostring(ceil(info.retry_after)) end
    return fail(status, tostring(info))
  end
  answer(images, info)
end

-- The subrequest's URL, and exactly the headers omixa prepared (the
-- parent's, which nginx copies into every subrequest, are dropped).
function M.upstream()
  local ctx = ngx.ctx
  if not ctx.omixa_url then return ngx.exit(ngx.HTTP_FORBIDDEN) end
  ngx.var.omixa_url = ctx.omixa_url
  local wanted = ctx.omixa_headers
  for name in pairs(ngx.req.get_headers(0, true)) do
    if name:lower() ~= "content-length" then ngx.req.clear_header(name) end
  end
  for name, value in pairs(wanted) do ngx.req.set_header(name, value) end
end

return M
