-- omixa.cli — the `omixa` command: generate images into files (through the
-- public API only: omixa.new, client:start, client:prepare for --dry-run),
-- `omixa help|version|models|doctor`, or run the local stand-in (`omixa
-- serve`). Exit status: 0 ok, 2 usage, validation or configuration (no
-- key), 3 API error, 4 network, TLS or timeout, 5 other (a budget refusal,
-- a file that could not be written: the image is then saved elsewhere).

local type, tostring, tonumber, ipairs, pairs, pcall, next = type, tostring, tonumber, ipairs, pairs, pcall, next
local format, match, rep = string.format, string.match, string.rep
local concat, sort = table.concat, table.sort
local stderr, stdout = io.stderr, io.stdout

local cli = {}

local SHORT = "usage: omixa PROMPT [-o FILE] [options]    (omixa help: every option)\n"

local USAGE = [[
usage: omixa PROMPT [options]
       omixa help | version | doctor
       omixa models [--json] [--service]
       omixa serve [--port N] [--host ADDR] [--tls] [--dir DIR] [--daemon]

Generate images with the Omixa image service and write them to files.
The API key comes from OMIXA_API_KEY (never from the command line); the
service from OMIXA_BASE_URL (default https://www.omixa.cloud/api/v1).
Without a key, run the local stand-in (`omixa serve`) and set
OMIXA_BASE_URL to the address it prints.

options:
  -o, --output FILE     where to write (default omixa-<time>.<format>); its
                        folder must exist. With -n 2: FILE and FILE-2.
                        fox.jpg asks for jpeg, fox.webp for webp
  -m, --model MODEL     model id (default: OMIXA_MODEL or the client's)
  -n N                  number of images, 1..10
      --aspect RATIO    aspect_ratio, e.g. 16:9
      --size SIZE       size, e.g. 2K or 1024x1536
      --format FMT      output_format: png, jpeg or webp
  -i, --input FILE      an input image (repeat for several)
      --set FIELD=VALUE any other field of the model (true/false and
                        integers are converted)
      --prompt TEXT     the prompt, when it starts with - or is a command
                        word (help, version, models, doctor, serve)
      --json            print info as one JSON document
      --dry-run         print the request body (image data as byte counts)
                        and send nothing
      --stream          ask for a stream of partial images (streaming models)
      --partials DIR    with --stream, also keep each partial image in DIR
      --timeout SECONDS whole-attempt timeout
      --ca-file FILE    trust this CA bundle (e.g. the stand-in's)
      --cache DIR       reuse a stored result of the very same request
                        instead of paying again (default OMIXA_CACHE_DIR)
      --budget USD      refuse to send when the catalog's estimate would
                        pass this amount (e.g. 0.10)
  -q, --quiet           no progress line
  -h, --help            this text
      --version         the version

commands (nothing is sent for them, unless said):
  help, version         this text; the version
  models [--json]       the built-in catalog: ids, prices, fields and their
                        accepted values; with --service, also what the
                        service lists (one GET /models, free)
  doctor                which Lua, core, libcurl and TLS, CA bundle, key
                        (never shown) and whether the base URL answers
                        (doctor sends one GET /models)

exit status: 0 ok, 2 usage, validation or configuration (no key), 3 API
error, 4 network, TLS or timeout, 5 other (a budget refusal, a file that
could not be written). OMIXA_DEBUG=1 logs each request to stderr (key and
signature redacted).
]]

local EXIT = { ok = 0, usage = 2, api = 3, network = 4, other = 5 }
local KIND_EXIT = { config = EXIT.usage, api = EXIT.api, no_image = EXIT.api, network = EXIT.network,
                    tls = EXIT.network, timeout = EXIT.network }
local COMMANDS = { help = true, version = true, models = true, serve = true, doctor = true }

local function die(code, fmt, ...)
  stderr:write("omixa: ", format(fmt, ...), "\n")
  return code
end

local function usage_error(msg)
  error({ usage = msg }, 0)
end

-- Is stderr a terminal? (The shell's `test -t 2` sees our own stderr.)
local function stderr_is_tty()
  local ok, how, code = os.execute("test -t 2")
  if type(ok) == "number" then return ok == 0 end
  return ok == true and (how == nil or how == "exit") and (code == nil or code == 0)
end

local function parse(argv)
  local o = { inputs = {}, sets = {} }
  local i = 1
  local function value(name)
    i = i + 1
    local v = argv[i]
    if v == nil then usage_error("option " .. name .. " needs a value") end
    return v
  end
  local function set_prompt(p)
    if o.prompt then usage_error("give the prompt as one argument (quote it)") end
    o.prompt = p
  end
  while i <= #argv do
    local a = argv[i]
    if a == "-h" or a == "--help" then o.help = true
    elseif a == "--version" then o.version = true
    elseif a == "-o" or a == "--output" then o.output = value(a)
    elseif a == "-m" or a == "--model" then o.model = value(a)
    elseif a == "-n" then
      local v = value(a)
      o.n = tonumber(v)
      if not o.n then usage_error("-n needs a number (got " .. v .. ")") end
    elseif a == "--aspect" then o.aspect_ratio = value(a)
    elseif a == "--size" then o.size = value(a)
    elseif a == "--format" then o.output_format = value(a)
    elseif a == "-i" or a == "--input" then o.inputs[#o.inputs + 1] = value(a)
    elseif a == "--set" then
      local k, v = match(value(a), "^([%w_]+)=(.*)$")
      if not k then usage_error("--set needs FIELD=VALUE") end
      if v == "true" then v = true elseif v == "false" then v = false
      elseif match(v, "^%-?%d+$") then v = tonumber(v) end
      o.sets[#o.sets + 1] = { k, v }
    elseif a == "--prompt" then set_prompt(value(a))
    elseif a == "--json" then o.json = true
    elseif a == "--service" then o.service = true
    elseif a == "--dry-run" then o.dry_run = true
    elseif a == "-q" or a == "--quiet" then o.quiet = true
    elseif a == "--stream" then o.stream = true
    elseif a == "--partials" then o.partials = value(a); o.stream = true
    elseif a == "--timeout" then
      o.timeout = tonumber(value(a))
      if not o.timeout then usage_error("--timeout needs a number of seconds") end
    elseif a == "--ca-file" then o.ca_file = value(a)
    elseif a == "--cache" then o.cache_dir = value(a)
    elseif a == "--budget" then o.max_spend = value(a)
    elseif a == "--" then
      local words = {}
      for k = i + 1, #argv do words[#words + 1] = argv[k] end
      if #words > 0 then set_prompt(concat(words, " ")) end
      break
    elseif match(a, "^%-") and a ~= "-" then
      usage_error("unknown option " .. a)
    else
      set_prompt(a)
    end
    i = i + 1
  end
  return o
end

-- FILE, FILE-2, FILE-3 ... for several images.
local function output_name(base, k)
  if k == 1 then return base end
  local stem, ext = match(base, "^(.*)(%.[^./]+)$")
  if not stem then return base .. "-" .. k end
  return stem .. "-" .. k .. ext
end

local EXT = { jpeg = "jpg", png = "png", webp = "webp", gif = "gif" }
local FORMAT_OF_EXT = { jpg = "jpeg", jpeg = "jpeg", png = "png", webp = "webp" }

local function dirname(path)
  return match(path, "^(.*)/[^/]*$") or "."
end

-- Can a file be created in DIR? (Checked before anything is sent.)
local function writable_dir(dir)
  local probe = format("%s/.omixa-probe-%d-%d", dir == "" and "/" or dir, os.time(), math.random(1e9))
  local f = io.open(probe, "wb")
  if not f then return false end
  f:close()
  os.remove(probe)
  return true
end

-- The output format asked by the file name, checked against --format.
local function resolve_format(o)
  local ext = o.output and match(o.output, "%.([%w]+)$")
  local wanted = ext and FORMAT_OF_EXT[ext:lower()]
  if not wanted then return end
  if o.output_format and o.output_format ~= wanted then
    usage_error(format("-o %s asks for %s but --format says %s: change the file name or --format",
      o.output, wanted, o.output_format))
  end
  o.output_format = wanted
end

local function check_paths(o)
  if o.output then
    if match(o.output, "/$") then usage_error(format("-o %s is a folder: give a file name, e.g. %sfox.png", o.output, o.output)) end
    local d = dirname(o.output)
    if not writable_dir(d) then
      usage_error(format("cannot write into folder '%s' (for -o %s): create it or change -o", d, o.output))
    end
  end
  if o.partials and not writable_dir(o.partials) then
    usage_error(format("cannot write into folder '%s' (--partials): create it or change --partials", o.partials))
  end
end

-- What to change, for each kind of error.
local function hint(err, o)
  local k = err.kind
  if k == "config" then
    return "set OMIXA_API_KEY, or run `omixa serve` and set OMIXA_BASE_URL to the address it prints"
  elseif k == "network" then
    return "check OMIXA_BASE_URL (" .. (os.getenv("OMIXA_BASE_URL") or "the default") .. "), the network or a proxy"
  elseif k == "tls" then
    return "check --ca-file (or CURL_CA_BUNDLE) and the clock; `omixa doctor` shows the CA bundle in use"
  elseif k == "timeout" then
    return "raise --timeout" .. (o.timeout and format(" (it was %s s)", tostring(o.timeout)) or "")
  elseif k == "budget" then
    return "raise --budget"
  elseif k == "api" and (err.status == 401 or err.status == 403) then
    return "check OMIXA_API_KEY"
  elseif k == "api" and err.status == 422 then
    return "change the options named above"
  elseif k == "api" and err.status == 429 then
    return "try again later" .. (err.retry_after and format(" (the service said in %s s)", tostring(err.retry_after)) or "")
  end
end

local function report_error(err, o)
  local h = hint(err, o)
  if err.maybe_billed then
    h = (h and (h .. "; ") or "") .. "the service may have billed it: check your usage before sending it again"
  end
  stderr:write(tostring(err), h and ("\n  " .. h) or "", "\n")
  return KIND_EXIT[err.kind] or EXIT.other
end

local function clean(msg)
  return (tostring(msg):gsub("^.-omixa: ", ""))
end

-- ---- the live progress line ----

local function clock()
  local ok, core = pcall(require, "omixa.core")
  if ok and core.now then return core.now end
  return os.time
end

local function mb(n) return format("%.1f MB", n / 1e6) end

local function progress_line(p, elapsed, rate, partials)
  local line
  if p.phase == "uploading" and (p.send_total or 0) > 0 then
    line = format("uploading %s of %s", mb(p.sent), mb(p.send_total))
  elseif p.phase == "receiving" then
    line = (p.receive_total or 0) > 0 and format("receiving %s of %s", mb(p.received), mb(p.receive_total))
      or format("receiving %s", mb(p.received))
  else
    line = p.phase or "starting"
  end
  if rate and rate > 0 and (p.phase == "uploading" or p.phase == "receiving") then
    line = line .. format(", %.1f MB/s", rate / 1e6)
  end
  return format("omixa: %s  %ds%s%s", line, math.floor(elapsed),
    partials > 0 and format("  %d partial%s", partials, partials == 1 and "" or "s") or "",
    (p.attempt or 1) > 1 and format(" (attempt %d)", p.attempt) or "")
end

-- A printer fed from a timer: tick(p) redraws when the text changes.
local function progress_printer(state)
  local now = clock()
  local t0, last, mark = now(), "", nil
  local function tick(p)
    local t = now()
    local bytes = p.phase == "uploading" and p.sent or p.received or 0
    local rate
    if mark and mark.phase == p.phase and t > mark.t then
      rate = (bytes - mark.bytes) / (t - mark.t)
    end
    if not mark or mark.phase ~= p.phase or t - mark.t >= 1 then
      mark = { phase = p.phase, bytes = bytes, t = t, rate = rate }
    else
      rate = mark.rate or rate
    end
    local line = progress_line(p, t - t0, rate, state.partials)
    if line ~= last then
      stderr:write("\r\027[K", line)
      stderr:flush()
      last = line
    end
  end
  local function clear() stderr:write("\r\027[K"); stderr:flush() end
  return tick, clear
end

-- ---- generating ----

local function build_request(o)
  local request = { prompt = o.prompt, model = o.model, n = o.n, aspect_ratio = o.aspect_ratio,
                    size = o.size, output_format = o.output_format }
  if #o.inputs > 0 then request.input_images = o.inputs end
  for _, kv in ipairs(o.sets) do request[kv[1]] = kv[2] end
  return request
end

local function new_client(o, extra)
  local omixa = require "omixa"
  local opts = { timeout = o.timeout, ca_file = o.ca_file, cache_dir = o.cache_dir, max_spend = o.max_spend }
  for k, v in pairs(extra or {}) do opts[k] = v end
  local ok, client = pcall(omixa.new, opts)
  if not ok then usage_error(clean(client)) end
  return client
end

-- Every "data:<mime>;base64,<data>" string replaced by its byte count.
local function redact(v)
  if type(v) == "string" then
    local head, data = match(v, "^(data:[^;,]+;base64,)(.*)$")
    if not head then return v end
    local pad = #(match(data, "=*$"))
    return format("%s<%d bytes>", head, math.floor(#data * 3 / 4) - pad)
  elseif type(v) == "table" then
    local out = {}
    for k, x in pairs(v) do out[k] = redact(x) end
    return setmetatable(out, getmetatable(v))
  end
  return v
end

local function dry_run(o, request)
  local cjson = require "cjson"
  -- The body holds no key: a placeholder lets a body be shown without one.
  local key = os.getenv("OMIXA_API_KEY")
  local client = new_client(o, { api_key = (key and key ~= "") and key or "dry-run" })
  local ok, req, err = pcall(client.prepare, client, request)
  client:close()
  if not ok then usage_error(clean(req)) end
  if not req then return report_error(err, o) end
  stdout:write(cjson.encode(redact(cjson.decode(req.body))), "\n")
  return EXIT.ok
end

-- Runs the job to its end; with a printer, ticks it every 0.1 s.
local function run_job(job, tick)
  if not tick then return job:wait() end
  while not job:done() do
    job:wait(0.1)
    if not job:done() then tick(job:progress()) end
  end
  return job:result()
end

local function temp_dir()
  return os.getenv("TMPDIR") or os.getenv("TEMP") or os.getenv("TMP") or "/tmp"
end

-- Why a write failed, without the name of omixa.save's temporary file.
local function reason(err)
  local r = match(tostring(err), ": ([^:]+)$")
  return r or clean(err)
end

-- Writes one image; if PATH cannot be written, saves it beside PATH or in
-- the temp folder and says where: a paid image is never lost.
local function write_image(omixa, bytes, path)
  local saved, err = omixa.save(bytes, path)
  if saved then return path end
  local name = match(path, "([^/]+)$")
  local stamp = os.date("%Y%m%d-%H%M%S")
  for _, dir in ipairs({ dirname(path), temp_dir() }) do
    local rescue = format("%s/omixa-saved-%s-%s", dir, stamp, name)
    if omixa.save(bytes, rescue) then
      stderr:write(format("omixa: could not write %s (%s); the image is saved as %s — move it where you want it\n",
        path, reason(err), rescue))
      return rescue, true
    end
  end
  stderr:write(format("omixa: could not write %s (%s), nor beside it, nor in %s: set TMPDIR to a writable folder\n",
    path, reason(err), temp_dir()))
  return nil, true
end

local function write_images(o, omixa, images, info)
  local base = o.output
  if not base then
    local fmt = info.images[1] and info.images[1].format or o.output_format or "png"
    base = format("omixa-%s.%s", os.date("%Y%m%d-%H%M%S"), EXT[fmt] or fmt)
  end
  local files, code = {}, EXIT.ok
  for k, bytes in ipairs(images) do
    local path, failed = write_image(omixa, bytes, output_name(base, k))
    if failed then code = EXIT.other end
    files[#files + 1] = path
    if path and not o.json then stdout:write(path, "\n") end
  end
  return files, code
end

local function generate(o)
  local omixa = require "omixa"
  local cjson = require "cjson"
  resolve_format(o)
  local request = build_request(o)
  if o.dry_run then return dry_run(o, request) end
  check_paths(o)
  local client = new_client(o)

  local state = { partials = 0 }
  local tick, clear
  if not o.quiet and stderr_is_tty() then tick, clear = progress_printer(state) end
  local call_opts = {}
  if o.stream then
    call_opts.stream = true
    call_opts.on_partial = function(bytes, index)
      state.partials = state.partials + 1
      if o.partials then
        local s = omixa.sniff(bytes)
        local path = format("%s/partial-%d.%s", o.partials, index, s and EXT[s.format] or "bin")
        local saved, err = omixa.save(bytes, path)
        -- a partial is a preview: the request goes on to the paid final image
        if not saved and not state.partial_failed then
          state.partial_failed = true
          stderr:write(format("%somixa: could not keep partial images in %s (%s): check --partials\n",
            tick and "\r\027[K" or "", o.partials, reason(err)))
        end
      end
    end
  end
  local started, job = pcall(client.start, client, request, call_opts)
  if not started then usage_error(clean(job)) end
  local res = { pcall(run_job, job, tick) }
  if clear then clear() end
  if not res[1] then return die(EXIT.other, "internal error: %s", tostring(res[2])) end
  local images, info = res[2], res[3]
  if not images then return report_error(info, o) end
  if info.cached and not o.quiet then stderr:write("omixa: from the cache, nothing sent\n") end
  local files, code = write_images(o, omixa, images, info)
  if o.json then
    info.files = files
    stdout:write(cjson.encode(info), "\n")
  end
  client:close()
  return code
end

-- ---- omixa models ----

-- One field of the catalog as text: name, type, accepted values or range.
local function field_text(name, f)
  local parts = {}
  if f.values then parts[#parts + 1] = concat(f.values, ", ")
  elseif f.min or f.max then parts[#parts + 1] = format("%s %s..%s", f.type, tostring(f.min or ""), tostring(f.max or ""))
  else parts[#parts + 1] = f.type end
  if f.required then parts[#parts + 1] = "required" end
  return format("    %-18s %s", name, concat(parts, "; "))
end

local function print_catalog(models)
  local ids = {}
  for id in pairs(models) do ids[#ids + 1] = id end
  sort(ids)
  stdout:write("built-in catalog:\n")
  for _, id in ipairs(ids) do
    local m = models[id]
    stdout:write(format("  %s  family %s, %s%s\n", id, m.family,
      m.price and (m.price .. " USD per image") or "price not documented", m.streaming and ", streaming" or ""))
    for _, name in ipairs(m.order) do stdout:write(field_text(name, m.fields[name]), "\n") end
  end
end

-- JSON as the service sent it, indented; object keys sorted.
local function pretty(v, indent, out)
  local cjson = require "cjson"
  if type(v) ~= "table" then
    out[#out + 1] = v == cjson.null and "null" or cjson.encode(v)
    return
  end
  local pad = rep("  ", indent + 1)
  if #v > 0 or next(v) == nil then
    if #v == 0 then out[#out + 1] = "[]"; return end
    out[#out + 1] = "[\n"
    for i, x in ipairs(v) do
      out[#out + 1] = pad
      pretty(x, indent + 1, out)
      out[#out + 1] = i < #v and ",\n" or "\n"
    end
  else
    local keys = {}
    for k in pairs(v) do keys[#keys + 1] = tostring(k) end
    sort(keys)
    out[#out + 1] = "{\n"
    for i, k in ipairs(keys) do
      out[#out + 1] = pad .. cjson.encode(k) .. ": "
      pretty(v[k], indent + 1, out)
      out[#out + 1] = i < #keys and ",\n" or "\n"
    end
  end
  out[#out + 1] = rep("  ", indent) .. (#v > 0 and "]" or "}")
end

-- With --service, what the service itself lists (GET {base}/models: one
-- request, free), as JSON, after the catalog.
local function service_models(o)
  local client = new_client(o)
  local base = client.base_url
  local list, err = client:models()
  client:close()
  if list == nil then return report_error(err, o) end
  local out = {}
  pretty(list, 0, out)
  stdout:write(format("\nthe service at %s lists:\n", base), concat(out), "\n")
  return EXIT.ok
end

-- The built-in catalog; nothing is sent unless --service asks the service.
local function list_models(o)
  local omixa = require "omixa"
  if not o.json then
    print_catalog(omixa.models)
    return o.service and service_models(o) or EXIT.ok
  end
  local doc = {}
  for id, m in pairs(omixa.models) do
    local fields = {}
    for _, name in ipairs(m.order) do
      local f = m.fields[name]
      fields[name] = { type = f.type, values = f.values, min = f.min, max = f.max, required = f.required }
    end
    doc[id] = { family = m.family, price = m.price, streaming = m.streaming, order = m.order, fields = fields }
  end
  local out = {}
  pretty(doc, 0, out)
  stdout:write(concat(out), "\n")
  return EXIT.ok
end

-- Exit status of a failed check: the key and the CA bundle are configuration.
local DOCTOR_EXIT = { ["API key"] = EXIT.usage, ["CA bundle"] = EXIT.usage, ["base URL"] = EXIT.network }

local function doctor(o)
  local d = require "omixa.doctor"
  local checks = d.checks{ ca_file = o.ca_file, timeout = o.timeout }
  local text = d.report(checks)
  stdout:write(text)
  for _, c in ipairs(checks) do
    if c.status == "error" then return DOCTOR_EXIT[c.name] or EXIT.other end
  end
  return EXIT.ok
end

local function rest_of(argv)
  local rest = {}
  for k = 2, #argv do rest[#rest + 1] = argv[k] end
  return rest
end

local function run(argv)
  local command = COMMANDS[argv[1]] and argv[1]
  if command == "serve" then return require("omixa.serve").main(rest_of(argv)) end
  if command then argv = rest_of(argv) end
  local o = parse(argv)
  if o.help or command == "help" then stdout:write(USAGE); return EXIT.ok end
  if o.version or command == "version" then stdout:write(require("omixa")._VERSION, "\n"); return EXIT.ok end
  if command and o.prompt then
    usage_error(format("%s takes no prompt; for the prompt %q use --prompt %q", command, command, command))
  end
  if command == "models" then return list_models(o) end
  if command == "doctor" then return doctor(o) end
  if not o.prompt then
    stderr:write(SHORT)
    return EXIT.usage
  end
  return generate(o)
end

function cli.main(argv)
  local ok, code = pcall(run, argv or {})
  if ok then return code end
  if type(code) == "table" and code.usage then
    stderr:write("omixa: ", code.usage, "\n")
    return EXIT.usage
  end
  error(code, 0)
end

return cli
