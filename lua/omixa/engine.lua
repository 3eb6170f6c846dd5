-- omixa.engine — requests as jobs on one client's transport (libcurl multi):
-- attempts, back-off as deadlines (never sleeps), the call's deadline as
-- transfer timeouts, url-only image downloads, the concurrency limit, and
-- the loop that drives them all. No policy: whether to try again and how
-- long to wait is the client's (spec.next_attempt), what a failure is is
-- omixa.errors'. The blocking client:generate is a job waited for.
--
--   local eng = engine.new(opts)       -- one per client
--   local j = engine.start(eng, spec)  -- queued, or sent at once
--   j:poll() j:done() j:result() j:wait([t]) j:cancel() j:progress()
--   engine.drive(eng, timeout)         -- one round of I/O and bookkeeping
--   engine.leader(eng, key) / engine.follow(eng, spec, hooks)
--                                      -- a job that waits for an identical
--                                      -- one in flight instead of sending
--
-- Callbacks (on_progress) run only inside drive, on the caller's thread; a
-- Lua error one raises finishes its job and is raised again from the call
-- that was driving (and from that job's result()).

local core = require "omixa.core"
local decode = require "omixa.decode"
local errors = require "omixa.errors"
local request = require "omixa.request"
local stream = decode.stream
local debuglog = require "omixa.debuglog"

local type, ipairs, pairs, pcall, error, setmetatable, tostring =
  type, ipairs, pairs, pcall, error, setmetatable, tostring
local match, lower, format = string.match, string.lower, string.format
local min, max, huge = math.min, math.max, math.huge
local remove, concat = table.remove, table.concat
local now = core.now

local M = {}


-- Each job's API key lives here, not in the job table, so that printing or
-- inspecting a job (vim.inspect, serpent, ...) can never show it.
local keys = setmetatable({}, { __mode = "k" })

local Job = {}
Job.__index = Job
Job.__name = "omixa.job"

-- ---- the engine: one per client ----

function M.new(opts)
  return {
    multi = core.multi(),
    concurrency = opts.concurrency or 4,
    queue = {},        -- jobs waiting for a slot, in order
    active = {},       -- job -> true: holding a slot
    nactive = 0,
    by_transfer = {},  -- transfer -> { job, what = "main"|"download", index = }
    streaming = {},    -- job -> true: a stream read as it arrives
    inflight = {},     -- share key -> the unfinished job sending that request
    waiting = {},      -- share key -> jobs waiting for it, in order (M.follow)
    remote = {},       -- jobs waiting for a request in flight elsewhere (M.follow, hooks.check)
    nwaiting = 0,
    pending_raise = nil,
    closed = false,
    log = opts.log,    -- the client's debug log (omixa.debuglog), or nil
  }
end

-- ---- hooks: the client's debug log, signing and on_finish ----
-- They run outside libcurl's callbacks. An error one raises (the user's debug
-- function, say) is raised again from the call driving the engine, like a
-- callback's, and never leaves a round half done.

local function defer_raise(eng, err)
  if eng.pending_raise == nil then eng.pending_raise = { err } end
end

local function log(j, fmt, ...)
  local l = j.eng.log
  if not l then return end
  local ok, err = pcall(l, fmt, ...)
  if not ok then defer_raise(j.eng, err) end
end

-- Header lines for the log, credentials and signature redacted.
local function shown_headers(lines)
  return concat(debuglog.redact_headers(lines), "; ")
end

-- spec.extra_headers(method, url, body) -> lines (request signing), added
-- to LINES for each attempt and each download from the service's origin.
local function add_extra_headers(spec, lines, method, url, body)
  if not spec.extra_headers then return lines end
  for _, line in ipairs(spec.extra_headers(method, url, body) or {}) do lines[#lines + 1] = line end
  return lines
end

-- One line per finished transfer: status or failure, time, bytes.
local function log_transfer(owner, tr)
  local j = owner.job
  local res, terr = tr:result()
  local _, sent, _, received = tr:progress()
  local what = owner.what == "main" and format("%s %s attempt %d", owner.method, j.spec.url, j.attempt)
    or format("GET image %d", owner.index)
  local outcome = res and format("%d", res.status or 0)
    or format("%s%s: %s", terr.kind, terr.status and (" " .. terr.status) or "", tostring(terr.message))
  log(j, "< %s %s: %.3fs, %d bytes sent, %d received", outcome, what, now() - owner.started, sent, received)
end

-- An attempt's timeout, cut to what is left of the call's deadline (at
-- least a millisecond: 0 would mean no timeout to libcurl).
local function within_deadline(j, timeout)
  local left = max(j.deadline_at - now(), 0.001)
  if not timeout or timeout <= 0 then return left end
  return min(timeout, left)
end

local function progress_table(phase, sent, send_total, received, receive_total, attempt)
  return { phase = phase, sent = sent, send_total = send_total,
           received = received, receive_total = receive_total, attempt = attempt }
end

-- ---- finishing ----

local function release_slot(eng, j)
  if eng.active[j] then
    eng.active[j] = nil
    eng.nactive = eng.nactive - 1
  end
end

local settle_waiters, check_remote

-- J, waiting for an identical request (M.follow), stops waiting.
local function unfollow(j)
  local eng, key = j.eng, j.spec.share_key
  eng.nwaiting = eng.nwaiting - 1
  eng.remote[j] = nil
  local list = eng.waiting[key]
  if not list then return end
  for k, w in ipairs(list) do
    if w == j then remove(list, k); break end
  end
  if #list == 0 then eng.waiting[key] = nil end
end

local function finish(j, images, info_or_err)
  if j.finished then return end
  if j.state == "following" then unfollow(j) end
  j.finished = true
  j.state = "done"
  j.images, j.info = images, info_or_err
  j.transfer = nil
  j.eng.streaming[j] = nil
  if j.sse then j.sse:close() end
  -- The request body (an omixa.buffer) is freed now: no attempt follows, and
  -- no transfer still reads it (each is finished before its job).
  local body = j.spec.body
  if type(body) == "userdata" then body:close() end
  release_slot(j.eng, j)
  -- spec.on_finish(j, images, info_or_err): the client settles its budget
  -- hold, fills its cache and logs the outcome; once per job.
  local key = j.spec.share_key
  local leading = key ~= nil and j.eng.inflight[key] == j
  if leading then j.eng.inflight[key] = nil end
  local hook = j.spec.on_finish
  if hook then
    local ok, err = pcall(hook, j, images, info_or_err)
    if not ok then defer_raise(j.eng, err) end
  end
  -- after the hook: a success is in the cache before its waiters see it
  if leading then
    settle_waiters(j.eng, key, images, info_or_err)
    -- no waiter sends it now: the claim on the key ends (spec.unclaim)
    if j.eng.inflight[key] == nil and j.spec.unclaim then
      local ok, err = pcall(j.spec.unclaim)
      if not ok then defer_raise(j.eng, err) end
    end
  end
end

local function finish_error(j, f)
  f.attempts = f.attempts or j.attempt
  f.idempotent = j.spec.idempotent
  f.secrets = { keys[j] }
  finish(j, nil, errors.new(f))
end

-- A Lua error from a user callback: the job ends, the driving call raises.
local function finish_raise(j, err)
  j.raise = err
  finish(j, nil, errors.new{ kind = "cancelled", message = "a callback raised an error: " .. tostring(err),
                             attempts = j.attempt, secrets = { keys[j] } })
  if j.eng.pending_raise == nil then j.eng.pending_raise = { err } end
end

-- ---- identical requests in flight: one is sent, the others wait ----

-- The job sending share key KEY finished: its waiters share a success; on a
-- failure (or a cancel) the first waiter sends its own request and the
-- others wait for that one. Never an error passed on: a waiter ends with an
-- error only of its own (its resume refused, the client closed).
function settle_waiters(eng, key, images, res)
  while true do
    local list = eng.waiting[key]
    local w = list and list[1]
    if not w then return end
    if eng.closed then
      finish_error(w, { kind = "cancelled", message = "the client was closed", sent = false, attempts = 0 })
    elseif images then
      local ok, shared, info = pcall(w.hooks.share, images, res)
      if ok then
        info.elapsed = now() - w.started
        finish(w, shared, info)
      else
        finish_raise(w, shared)
      end
    else
      local ok, resumed, err = pcall(w.hooks.resume, w)
      if not ok then
        finish_raise(w, resumed)
      elseif not resumed then
        finish(w, nil, err)
      else
        -- sent as a job of its own (queued: it takes the next free slot);
        -- the others now wait for it
        unfollow(w)
        w.state = "queued"
        eng.queue[#eng.queue + 1] = w
        eng.inflight[key] = w
        return
      end
    end
  end
end

-- ---- sending ----

local function send_attempt(j)
  local spec = j.spec
  local left = j.deadline_at and j.deadline_at - now()
  if left and left <= 0 then
    return finish_error(j, { kind = "timeout", sent = false, message = "the call's deadline passed before it was sent" })
  end
  j.attempt = j.attempt + 1
  local ok, key, kerr = pcall(spec.api_key)
  if not ok then return finish_raise(j, key) end
  if kerr then return finish_error(j, { kind = "config", message = kerr, attempts = j.attempt - 1 }) end
  keys[j] = key
  local method = spec.method or "POST"
  local req = spec.transfer_options{
    url = spec.url, method = method, body = spec.body,
    headers = add_extra_headers(spec, spec.header_lines(key), method, spec.url, spec.body),
    -- an image answer is decoded while it arrives (decode.parse takes the result)
    scan_images = spec.parse == nil,
  }
  if left then req.timeout = within_deadline(j, req.timeout) end
  local on_progress = spec.co.on_progress
  if on_progress then
    local attempt = j.attempt
    req.progress = function(phase, sent, send_total, received, receive_total)
      return on_progress(progress_table(phase, sent, send_total, received, receive_total, attempt))
    end
  end
  j.state = "sending"
  j.transfer = j.eng.multi:add(req)
  j.eng.by_transfer[j.transfer] = { job = j, what = "main", method = method, started = now() }
  if j.eng.log then
    log(j, "> %s %s attempt %d, %d bytes: %s", method, spec.url, j.attempt, spec.body and #spec.body or 0,
      shown_headers(req.headers))
  end
  if spec.stream then
    if j.sse then j.sse:close() end
    j.sse, j.sse_checked = nil, false
    j.eng.streaming[j] = true
  end
end

-- ---- streams: read while they arrive ----

local function new_stream(j, status, headers)
  local spec = j.spec
  return stream.new(spec.co, { model = spec.model, n = spec.n, max_bytes = spec.max_response_bytes,
                               status = status, headers = headers })
end

-- Stop the running transfer of J now (its stream failed or a callback raised).
local function abort_transfer(j)
  local tr = j.transfer
  if not tr then return end
  j.eng.by_transfer[tr] = nil
  j.transfer = nil
  tr:cancel()
  local _, terr = tr:result()
  if terr and terr.body then terr.body:close() end
end

-- Feed CHUNK to J's stream, protected; false when the job ended on it.
local function feed(j, chunk)
  if chunk == "" then return true end
  local ok, fed, fields = pcall(j.sse.feed, j.sse, chunk)
  if not ok then
    abort_transfer(j)
    finish_raise(j, fed)
    return false
  end
  if not fed then
    abort_transfer(j)
    finish_error(j, fields)
    return false
  end
  return true
end

-- One round for a streaming job: once its headers say event-stream, hand
-- what arrived to the stream (callbacks run here, inside drive).
local function pump(j)
  local tr = j.transfer
  if not tr then return end
  if not j.sse then
    if j.sse_checked then return end
    local status, headers = tr:head()
    if not status then return end
    j.sse_checked = true
    if not stream.is_event_stream(status, headers) then return end -- parsed whole at the end
    j.sse = new_stream(j, status, headers)
  end
  feed(j, tr:take())
end

local function start_downloads(j, images, info, pending)
  local spec = j.spec
  j.state = "downloading"
  j.images_partial, j.info_partial, j.pending = images, info, pending
  j.downloads = {}
  for _, p in ipairs(pending) do
    local url = p.url
    if not request.web_scheme(url) then
      return finish_error(j, { kind = "protocol", billed = true, sent = true,
        message = "image url is not http(s): " .. url:sub(1, 200) })
    end
    local hdrs = {}
    -- The key and the signature go only to the service's own origin, and
    -- never in clear text where the client would not send them.
    if request.origin(url) == request.origin(spec.url) then
      if keys[j] then hdrs[1] = "Authorization: Bearer " .. keys[j] end
      add_extra_headers(spec, hdrs, "GET", url, "")
    end
    local req = spec.transfer_options{ url = url, method = "GET", headers = hdrs }
    if j.deadline_at then req.timeout = within_deadline(j, req.timeout) end
    local t = j.eng.multi:add(req)
    j.downloads[#j.downloads + 1] = t
    j.eng.by_transfer[t] = { job = j, what = "download", index = p.index, started = now() }
    if j.eng.log then log(j, "> GET %s (image %d): %s", url, p.index, shown_headers(hdrs)) end
  end
end

local function cancel_downloads(j)
  for _, t in ipairs(j.downloads or {}) do
    j.eng.by_transfer[t] = nil
    t:cancel()
  end
end

-- The main request's transfer finished.
local function on_main(j, tr)
  local spec = j.spec
  j.transfer = nil
  local res, terr = tr:result()
  local f, curl_code
  if res then
    local body = res.body
    local on_progress = spec.co.on_progress
    if on_progress then
      local received = res.received_bytes or body:len()
      local ok, go_on = pcall(on_progress, progress_table("decoding", #spec.body, #spec.body,
        received, received, j.attempt))
      if not ok then body:close(); return finish_raise(j, go_on) end
      if go_on == false then
        body:close()
        return finish_error(j, { kind = "cancelled", message = "cancelled by the progress callback",
                                 sent = true, status = res.status })
      end
    end
    local sse = j.sse
    if spec.stream and not sse and stream.is_event_stream(res.status, res.headers) then
      sse = new_stream(j, res.status, res.headers)
      j.sse = sse
    end
    if sse then
      local rest = body:string()
      body:close()
      if not feed(j, rest) then return end
      local images, info = sse:finish()
      if images then
        info.attempts = j.attempt
        info.elapsed = now() - j.started
        return finish(j, images, info)
      end
      f = info
      f.sent, f.status = true, f.status or res.status
      f.attempts = j.attempt
      return finish_error(j, f)
    end
    -- The transfer keeps its result table until its own finalizer: the
    -- images must not wait that long (they can be megabytes).
    local scanned = { model = spec.model, n = spec.n, images = res.images, rest = res.rest,
                      scan_error = res.scan_error, scan_what = res.scan_what }
    res.images, res.rest = nil, nil
    local images, info, pending = (spec.parse or decode.parse)(res.status, res.headers, body, scanned)
    body:close()
    if images then
      info.attempts = j.attempt
      if pending then return start_downloads(j, images, info, pending) end
      info.elapsed = now() - j.started
      return finish(j, images, info)
    end
    f = info
    f.sent = true
  else
    if terr.kind == "callback_error" then
      if terr.body then terr.body:close() end
      return finish_raise(j, terr.error)
    end
    f = terr
    curl_code = terr.curl_code
    local st = terr.status
    if st and st >= 300 and f.kind ~= "cancelled" and f.kind ~= "too_large" then
      -- The status line already said the service did not do the work: an
      -- api error (retried when its status is), whatever cut the rest.
      f.message = format("HTTP %d, then %s", st, tostring(f.message))
      f.kind = "api"
      f.envelope = true -- the service's own status line, its body cut: not a proxy's page
    end
    local buf = terr.body
    f.body = errors.excerpt(buf)
    if buf then buf:close() end
    if not terr.received then f.headers = nil end
    f.request_id = errors.request_id(f.headers)
    if f.kind == "cancelled" then
      f.message = j.cancelled and "cancelled" or "cancelled by the progress callback"
    end
    f.curl_code, f.received, f.failed = nil, nil, nil
  end
  f.attempts = j.attempt
  f.idempotent = spec.idempotent
  -- the client's policy: another attempt after WAIT seconds, or the end
  local wait = spec.next_attempt(f, { attempt = j.attempt, cancelled = j.cancelled, curl_code = curl_code,
                                      deadline_at = j.deadline_at })
  if not wait then return finish_error(j, f) end
  j.state = "backoff"
  j.last_failure = f
  j.wait_until = now() + wait
end

-- An url-only image's download finished.
local function on_download(j, tr, index)
  local res, terr = tr:result()
  for k, t in ipairs(j.downloads) do
    if t == tr then remove(j.downloads, k); break end
  end
  if j.finished then return end
  local f
  if not res then
    f = { kind = terr.kind, message = "downloading the image from its url failed: " .. tostring(terr.message),
          status = terr.status, billed = true, sent = true }
    if terr.body then terr.body:close() end
  elseif (res.status or 0) < 200 or res.status > 299 then
    f = { kind = "api", status = res.status, billed = true, sent = true, body = errors.excerpt(res.body),
          message = format("downloading the image from its url failed with HTTP %d", res.status) }
    res.body:close()
  end
  if f then
    cancel_downloads(j)
    return finish_error(j, f)
  end
  local bytes = res.body:string()
  res.body:close()
  local mime = match(lower(res.headers["content-type"] or ""), "^(image/[^;%s]+)")
  j.images_partial[index] = bytes
  j.info_partial.images[index] = decode.image_info(bytes, mime)
  if #j.downloads == 0 then
    local images, info = decode.collect(j.images_partial, j.info_partial, j.pending)
    if not images then return finish_error(j, info) end
    info.elapsed = now() - j.started
    finish(j, images, info)
  end
end

-- ---- the engine's round ----

local function start_queued(eng)
  while eng.nactive < eng.concurrency and #eng.queue > 0 do
    local j = remove(eng.queue, 1)
    eng.active[j] = true
    eng.nactive = eng.nactive + 1
    j.started = now()
    send_attempt(j)
  end
end

-- One round: wait up to TIMEOUT seconds for I/O (0: none), handle finished
-- transfers and due back-offs, start queued jobs. Raises the first callback
-- error of the round once the round is complete.
-- J waits for a request in flight in another process (M.follow with
-- hooks.check): at T, once its next check is due, ask hooks.check; returns
-- the time the engine must wake next (min of WAKE and J's next check).
local CHECK_EVERY = 0.05
function check_remote(j, t, wake)
  if j.limit_at and t >= j.limit_at then
    finish_error(j, { kind = "timeout", sent = false, attempts = 0,
                      message = format("waited %.1f s for the same request in flight elsewhere", t - j.started) })
    return wake
  end
  if t < j.next_check then return min(wake or huge, j.next_check) end
  local ok, images, info = pcall(j.hooks.check, j)
  if not ok then finish_raise(j, images); return wake end
  if images == false then -- it cannot wait (the store cannot be reached)
    finish(j, nil, info)
    return wake
  elseif images == true then -- it is ours to send now
    unfollow(j)
    local rok, resumed, err = pcall(j.hooks.resume, j)
    if not rok then finish_raise(j, resumed); return wake end
    if not resumed then finish(j, nil, err); return wake end
    j.state = "queued"
    j.eng.queue[#j.eng.queue + 1] = j
    return wake
  elseif images then
    info.elapsed = now() - j.started
    finish(j, images, info)
    return wake
  end
  j.next_check = t + CHECK_EVERY
  return min(wake or huge, j.next_check, j.limit_at or huge)
end

function M.drive(eng, timeout)
  if eng.closed then error("omixa: the client is closed", 3) end
  local finished = eng.multi:poll(timeout or 0)
  for _, tr in ipairs(finished) do
    local owner = eng.by_transfer[tr]
    eng.by_transfer[tr] = nil
    if owner then
      if eng.log then log_transfer(owner, tr) end
      if owner.what == "main" then on_main(owner.job, tr)
      else on_download(owner.job, tr, owner.index) end
      local j = owner.job
      if j.state == "backoff" then
        -- sent again under retry_unknown: this attempt may have been billed
        if j.last_failure.maybe_billed then j.unknown_outcomes = (j.unknown_outcomes or 0) + 1 end
        if eng.log then
          log(j, "retry of %s in %.2fs (attempt %d of at most %d)", j.spec.url, j.wait_until - now(),
            j.attempt + 1, j.spec.max_retries + 1)
        end
      end
    end
  end
  for j in pairs(eng.streaming) do
    if j.state == "sending" then pump(j) end
  end
  local t, wake = now(), nil
  for j in pairs(eng.active) do
    if j.state == "backoff" then
      if j.wait_until <= t then send_attempt(j)
      else wake = min(wake or huge, j.wait_until) end
    end
  end
  if next(eng.remote) then
    local due = {} -- a copy: checking one may end others
    for j in pairs(eng.remote) do due[#due + 1] = j end
    for _, j in ipairs(due) do
      if eng.remote[j] then wake = check_remote(j, t, wake) end
    end
  end
  start_queued(eng)
  eng.multi:wake_at(wake)
  local raise = eng.pending_raise
  if raise then
    eng.pending_raise = nil
    error(raise[1], 0)
  end
end

function M.running(eng)
  return eng.nactive + #eng.queue + eng.nwaiting
end

-- ---- jobs ----

-- spec = { url =, body = string | omixa.buffer (the job closes a buffer when it
--   finishes), model =, co = call options, api_key = function()
--   -> key | nil, err, header_lines = function(key) -> lines,
--   transfer_options = function(req) -> req, next_attempt = function(f, at)
--   -> seconds to wait before the next attempt | nil (the job ends with F;
--   at = { attempt =, cancelled =, curl_code =, deadline_at = }), deadline =,
--   and optional hooks: method = "GET" (default "POST"), parse = function(status,
--   headers, body, ctx) -> result, info | nil, fields (default decode.parse),
--   extra_headers = function(method, url, body) -> lines (each attempt and
--   each same-origin download), on_finish = function(job, result, info_or_err) }
--   share_key = string: the request's identity (its cache key); while
--   this job is unfinished it is M.leader of that key.
function M.start(eng, spec)
  local j = setmetatable({ eng = eng, spec = spec, attempt = 0, state = "queued", finished = false }, Job)
  if spec.deadline then j.deadline_at = now() + spec.deadline end
  if spec.share_key then eng.inflight[spec.share_key] = j end
  eng.queue[#eng.queue + 1] = j
  start_queued(eng)
  return j
end

-- The unfinished job of ENG sending the request of share key KEY, or nil.
function M.leader(eng, key)
  return eng.inflight[key]
end

-- A job for SPEC (spec.share_key set) that sends nothing while M.leader of
-- that key runs: it holds no slot and calls none of its callbacks. When the
-- leader succeeds, this job finishes with hooks.share(images, info) -> its
-- own copies (elapsed is set here: the time it waited). When the leader
-- fails or is cancelled, hooks.resume(job) -> true | nil, err: true sends
-- SPEC as this job (queued; the others waiting then wait for it), nil
-- finishes it with ERR. hooks.on_finish is spec.on_finish until resume
-- replaces it. Cancelling this job leaves the leader alone.
-- With hooks.check and no leader in ENG (the request is in flight in another
-- process), the job leads ENG's identical requests and, every CHECK_EVERY
-- seconds from poll, calls hooks.check(job) -> images, info (the result
-- appeared: share it) | true (ours to send now: hooks.resume, then sent) |
-- false, err (end with ERR) | nil (wait on); after hooks.patience seconds it ends as a timeout, unsent.
function M.follow(eng, spec, hooks)
  local key = spec.share_key
  spec.on_finish = hooks.on_finish
  local j = setmetatable({ eng = eng, spec = spec, attempt = 0, state = "following", finished = false,
                           hooks = hooks }, Job)
  j.started = now()
  if spec.deadline then j.deadline_at = j.started + spec.deadline end
  eng.nwaiting = eng.nwaiting + 1
  if hooks.check and not eng.inflight[key] then
    -- in flight elsewhere: this job checks for it (and leads the identical
    -- requests of this engine, which wait for it)
    j.limit_at = hooks.patience and j.started + hooks.patience
    j.next_check = j.started + CHECK_EVERY
    eng.inflight[key] = j
    eng.remote[j] = true
    eng.multi:wake_at(j.next_check)
    return j
  end
  local list = eng.waiting[key]
  if not list then list = {}; eng.waiting[key] = list end
  list[#list + 1] = j
  return j
end

-- A job that is already finished (a cache hit, a refusal).
function M.finished(eng, images, info)
  local j = setmetatable({ eng = eng, spec = {}, attempt = 0 }, Job)
  j.finished, j.state, j.images, j.info = true, "done", images, info
  return j
end

-- A job that only downloads url-only items of a parsed response.
function M.downloads(eng, spec, images, info, pending)
  local j = setmetatable({ eng = eng, spec = spec, attempt = 1, state = "downloading", finished = false }, Job)
  j.started = now()
  keys[j], spec.key = spec.key, nil
  eng.active[j] = true
  eng.nactive = eng.nactive + 1
  start_downloads(j, images, info, pending)
  return j
end

function Job:poll()
  if not self.finished then M.drive(self.eng, 0) end
  return self.finished
end

function Job:done()
  return self.finished
end

function Job:result()
  if not self.finished then error("omixa: the job has not finished (poll it, or wait for it)", 2) end
  if self.raise ~= nil then error(self.raise, 0) end
  return self.images, self.info
end

-- wait([t]): blocks up to T seconds (forever when nil); then as result().
-- When T passes first it returns nothing and the job runs on.
function Job:wait(t)
  if t ~= nil and type(t) ~= "number" then error("omixa: job:wait: seconds must be a number", 2) end
  local deadline = t and now() + t
  while not self.finished do
    local step = 3600
    if deadline then
      step = deadline - now()
      if step <= 0 then return end
    end
    M.drive(self.eng, step)
  end
  return self:result()
end

local function cancel(self, eng)
  if self.state == "following" then
    return finish_error(self, { kind = "cancelled", message = "cancelled", sent = false, attempts = 0 })
  elseif self.state == "queued" then
    for k, q in ipairs(eng.queue) do
      if q == self then remove(eng.queue, k); break end
    end
    return finish_error(self, { kind = "cancelled", message = "cancelled", sent = false, attempts = 0 })
  elseif self.state == "sending" then
    local tr = self.transfer
    tr:cancel()
    eng.by_transfer[tr] = nil
    return on_main(self, tr)
  elseif self.state == "backoff" then
    local f = self.last_failure
    return finish_error(self, { kind = "cancelled", message = "cancelled", status = f.status,
                                maybe_billed = f.maybe_billed, attempts = self.attempt })
  elseif self.state == "downloading" then
    cancel_downloads(self)
    return finish_error(self, { kind = "cancelled", message = "cancelled", billed = true, sent = true,
                                attempts = self.attempt })
  end
end

function Job:cancel()
  if self.finished then return end
  local eng = self.eng
  self.cancelled = true
  cancel(self, eng)
  -- A slot was freed or a waiter now sends its own request: the next round
  -- starts queued jobs at once, instead of waiting for I/O that may never
  -- come (fd() becomes readable for event loops too).
  if #eng.queue > 0 and eng.nactive < eng.concurrency and not eng.closed then eng.multi:wake_at(now()) end
end

-- The same table on_progress receives, for the job's current attempt; for
-- a job waiting for an identical request, that request's.
function Job:progress()
  if self.state == "following" then
    local leader = self.eng.inflight[self.spec.share_key]
    if leader and leader ~= self then return leader:progress() end
  end
  local tr = self.transfer
  if tr then
    local p = progress_table(tr:progress())
    p.attempt = self.attempt
    return p
  end
  local phase = ({ queued = "queued", backoff = "waiting", downloading = "receiving", done = "done" })[self.state]
    or self.state
  return progress_table(phase, 0, 0, 0, 0, self.attempt)
end

Job.__tostring = function(j) return format("omixa.job (%s)", j.state) end

-- Cancel everything and close the transport: the client is being closed.
function M.close(eng)
  if eng.closed then return end
  eng.closed = true
  local owners = eng.by_transfer
  eng.by_transfer = {}
  eng.multi:close() -- finishes every running transfer as cancelled
  for _, j in ipairs(eng.queue) do
    finish_error(j, { kind = "cancelled", message = "the client was closed", attempts = 0 })
  end
  eng.queue = {}
  for tr, owner in pairs(owners) do
    local j = owner.job
    if not j.finished then
      local _, terr = tr:result()
      if terr and terr.body then terr.body:close() end
      finish_error(j, { kind = "cancelled", message = "the client was closed",
                        billed = owner.what == "download", sent = terr ~= nil and terr.sent == true })
    end
  end
  for j in pairs(eng.active) do -- waiting out a back-off
    finish_error(j, { kind = "cancelled", message = "the client was closed",
                      maybe_billed = j.last_failure ~= nil and j.last_failure.maybe_billed })
  end
  eng.active, eng.nactive = {}, 0
  -- waiters are finished with their leader; any left over here too, and
  -- those waiting for a request in flight elsewhere
  local remote = {}
  for j in pairs(eng.remote) do remote[#remote + 1] = j end
  for _, j in ipairs(remote) do
    finish_error(j, { kind = "cancelled", message = "the client was closed", sent = false, attempts = 0 })
  end
  local waiting = eng.waiting
  eng.waiting = {}
  for _, list in pairs(waiting) do
    for _, j in ipairs(list) do
      finish_error(j, { kind = "cancelled", message = "the client was closed", sent = false, attempts = 0 })
    end
  end
end

M.Job = Job
return M
