-- omixa.serve.control: the stand-in's control API under /_omixa/, for tests
-- (inside nginx). No key or signature is asked for here.
--
--   GET|POST|PUT|DELETE /_omixa/faults   list | append | replace | clear the
--                                     fault queue (faults.lua says what a
--                                     fault is); POST and PUT take one fault
--                                     object or an array; -> {"ok":true,"queued":n}
--   GET|DELETE /_omixa/requests       generation requests seen | forget them
--   GET|DELETE /_omixa/fetches        GETs of /_omixa/images/* seen | forget
--   GET|DELETE /_omixa/billing        what the stand-in billed | back to zero:
--                                     {"billed_amount":"0.066000","images":2,"answers":1}
--                                     billed_amount sums the usage.billed_amount
--                                     of every 2xx answer with images (the
--                                     amount it would have written with
--                                     no_usage; a raw_image answer is one
--                                     image); images counts their images;
--                                     answers counts them. An answer the
--                                     transport then spoils (cut = "mid_body",
--                                     truncate, malformed, bad_base64) was
--                                     billed, as by the service; error
--                                     answers, cut = "before_status",
--                                     stream_error and stream_end_early
--                                     were not
--   POST /_omixa/reset                clear faults, requests, fetches, images
--                                     and billing
--   GET  /_omixa/images/<id>          images of url_only responses
--   GET  /_omixa/health               {"ok":true,"key_required":..,"signing_required":..}

local cjson = require "cjson.safe"
local http = require "omixa.serve.http"
local faults = require "omixa.serve.faults"
local state = require "omixa.serve.state"

local type, next = type, next

local M = {}

local function fault_queue(method)
  if method == "GET" then return http.send_plain(http.new_response(200, http.encode(state.faults))) end
  if method == "DELETE" then state.faults = {}; return http.send_json({ ok = true, queued = 0 }) end
  if method == "POST" or method == "PUT" then
    local list = cjson.decode(http.read_body())
    if type(list) ~= "table" then
      return http.simple(422, "faults: body must be a JSON array of fault objects", "validation_error")
    end
    if list[1] == nil and next(list) ~= nil then list = { list } end -- one object
    local queued, err = faults.queue(list, method == "PUT")
    if not queued then return http.simple(422, err, "validation_error") end
    return http.send_json({ ok = true, queued = queued })
  end
  return http.simple(405, "faults: use GET, POST, PUT or DELETE", "method_not_allowed",
    { Allow = "GET, POST, PUT, DELETE" })
end

-- GET shows, DELETE forgets (FORGET), anything else is refused.
local function get_or_delete(method, show, forget)
  if method == "GET" then return http.send_plain(http.new_response(200, http.encode(show()))) end
  if method == "DELETE" then forget(); return http.send_json({ ok = true }) end
  return http.simple(405, "use GET or DELETE", "method_not_allowed", { Allow = "GET, DELETE" })
end

-- CFG: the handler's { key =, signing_secret = } (for health).
function M.handle(uri, method, cfg)
  if uri == "/_omixa/health" then
    return http.send_json({ ok = true, key_required = cfg.key ~= nil, signing_required = cfg.signing_secret ~= nil })
  elseif uri == "/_omixa/faults" then
    return fault_queue(method)
  elseif uri == "/_omixa/requests" then
    return get_or_delete(method, function() return state.requests end, state.forget_requests)
  elseif uri == "/_omixa/fetches" then
    return get_or_delete(method, function() return state.fetches end, function() state.fetches = {} end)
  elseif uri == "/_omixa/billing" then
    return get_or_delete(method, state.billed, state.forget_billing)
  elseif uri == "/_omixa/reset" then
    if method ~= "POST" then return http.simple(405, "reset: use POST", "method_not_allowed", { Allow = "POST" }) end
    state.reset()
    return http.send_json({ ok = true })
  end
  local id = uri:match("^/_omixa/images/([%w_-]+)$")
  if id then
    state.record(state.fetches, method, nil, http.lower_headers())
    local img = state.image(id)
    if not img then return http.simple(404, "No such image.", "not_found") end
    return http.send_plain(http.new_response(200, img.bytes, img.mime))
  end
  return http.simple(404, "No such control endpoint: " .. uri, "not_found")
end

return M
