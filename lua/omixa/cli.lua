-- omixa.cli — the `omixa` command: generate images into files, or run the
-- local stand-in service (`omixa serve`). Exit status: 0 ok, 2 usage or
-- validation, 3 API error, 4 network, TLS or timeout, 5 other.

local type, tostring, tonumber, ipairs, pcall = type, tostring, tonumber, ipairs, pcall
local format, match = string.format, string.match
local stderr, stdout = io.stderr, io.stdout

local cli = {}

local USAGE = [[
usage: omixa PROMPT [options]
       omixa serve [--port N] [--host ADDR] [--tls] [--dir DIR] [--daemon]

Generate images with the Omixa image service and write them to files.
The API key comes from OMIXA_API_KEY (never from the command line); the
service from OMIXA_BASE_URL (default https://www.omixa.cloud/api/v1).

options:
  -o, --output FILE     where to write (default omixa-<time>.<format>);
                        with -n 2, FILE and FILE-2 (before the extension)
  -m, --model MODEL     model id (default: OMIXA_MODEL or the client's)
  -n N                  number of images, 1..10
      --aspect RATIO    aspect_ratio, e.g. 16:9
      --size SIZE       size, e.g. 2K or 1024x1536
      --format FMT      output_format: png, jpeg or webp
  -i, --input FILE      an input image (repeat for several)
      --set FIELD=VALUE any other field of the model (true/false and
                        integers are converted)
      --json            print info as one JSON document
      --dry-run         print the request body (image data as byte counts)
                        and send nothing
      --stream          ask for a stream of partial images (streaming models)
      --partials DIR    with --stream, also keep each partial image in DIR
      --timeout SECONDS whole-attempt timeout
      --ca-file FILE    trust this CA bundle (e.g. the stand-in's)
  -h, --help            this text
      --version         the version
]]

local EXIT = { ok = 0, usage = 2, api = 3, network = 4, other = 5 }
local KIND_EXIT = { api = EXIT.api, no_image = EXIT.api, network = EXIT.network,
                    tls = EXIT.network, timeout = EXIT.network }

local function die(code, fmt, ...)
  stderr:write("omixa: ", format(fmt, ...), "\n")
  return code
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
    if v == nil then error({ usage = "option " .. name .. " needs a value" }) end
    return v
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
      if not o.n then error({ usage = "-n needs a number (got " .. v .. ")" }) end
    elseif a == "--aspect" then o.aspect_ratio = value(a)
    elseif a == "--size" then o.size = value(a)
    elseif a == "--format" then o.output_format = value(a)
    elseif a == "-i" or a == "--input" then o.inputs[#o.inputs + 1] = value(a)
    elseif a == "--set" then
      local k, v = match(value(a), "^([%w_]+)=(.*)$")
      if not k then error({ usage = "--set needs FIELD=VALUE" }) end
      if v == "true" then v = true elseif v == "false" then v = false
      elseif match(v, "^%-?%d+$") then v = tonumber(v) end
      o.sets[#o.sets + 1] = { k, v }
    elseif a == "--json" then o.json = true
    elseif a == "--dry-run" then o.dry_run = true
    elseif a == "--stream" then o.stream = true
    elseif a == "--partials" then o.partials = value(a); o.stream = true
    elseif a == "--timeout" then
      o.timeout = tonumber(value(a))
      if not o.timeout then error({ usage = "--timeout needs a number of seconds" }) end
    elseif a == "--ca-file" then o.ca_file = value(a)
    elseif a == "--" then
      for k = i + 1, #argv do o.prompt = o.prompt and (o.prompt .. " " .. argv[k]) or argv[k] end
      break
    elseif match(a, "^%-") and a ~= "-" then
      error({ usage = "unknown option " .. a })
    elseif o.prompt then
      error({ usage = "give the prompt as one argument (quote it)" })
    else
      o.prompt = a
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


local function progress_printer(enabled, state)
  if not enabled then return nil, function() end end
  local start = os.time()
  local last = ""
  local function show(p)
    local line
    if p.phase == "uploading" and p.send_total > 0 then
      line = format("omixa: uploading %d%%", math.floor(100 * p.sent / p.send_total))
    elseif p.phase == "receiving" then
      line = p.receive_total > 0 and format("omixa: receiving %d%% of %.1f MB", math.floor(100 * p.received / p.receive_total), p.receive_total / 1e6)
        or format("omixa: receiving %.1f MB", p.received / 1e6)
    else
      line = format("omixa: %s", p.phase)
    end
    line = format("%s  %ds%s%s", line, os.time() - start,
      state.partials > 0 and format("  %d partial%s", state.partials, state.partials == 1 and "" or "s") or "",
      p.attempt > 1 and format(" (attempt %d)", p.attempt) or "")
    if line ~= last then
      stderr:write("\r\027[K", line)
      stderr:flush()
      last = line
    end
  end
  return show, function() stderr:write("\r\027[K"); stderr:flush() end
end

local function generate(o)
  local omixa = require "omixa"
  local cjson = require "cjson"
  local request = { prompt = o.prompt, model = o.model, n = o.n, aspect_ratio = o.aspect_ratio,
                    size = o.size, output_format = o.output_format }
  if #o.inputs > 0 then request.input_images = o.inputs end
  for _, kv in ipairs(o.sets) do request[kv[1]] = kv[2] end

  local ok, client = pcall(omixa.new, { timeout = o.timeout, ca_file = o.ca_file })
  if not ok then return die(EXIT.usage, "%s", (tostring(client):gsub("^omixa: ", ""))) end

  if o.dry_run then
    local dok, body = pcall(require("omixa.client").dry_run, client, request)
    if not dok then return die(EXIT.usage, "%s", (tostring(body):gsub("^omixa: ", ""))) end
    stdout:write(body, "\n")
    return EXIT.ok
  end

  local state = { partials = 0 }
  local show, clear = progress_printer(stderr_is_tty(), state)
  local call_opts = { on_progress = show }
  if o.stream then
    call_opts.stream = true
    call_opts.on_partial = function(bytes, index)
      state.partials = state.partials + 1
      if o.partials then
        local s = omixa.sniff(bytes)
        local path = format("%s/partial-%d.%s", o.partials, index, s and EXT[s.format] or "bin")
        local saved, err = omixa.save(bytes, path)
        if not saved then error({ cli_save_error = err }, 0) end
      end
    end
  end
  local res = { pcall(client.generate, client, request, call_opts) }
  clear()
  if not res[1] then
    if type(res[2]) == "table" and res[2].cli_save_error then
      return die(EXIT.other, "%s", (tostring(res[2].cli_save_error):gsub("^omixa: ", "")))
    end
    local msg = tostring(res[2])
    if match(msg, "^omixa: ") or match(msg, ": omixa: ") then
      return die(EXIT.usage, "%s", (msg:gsub("^.-omixa: ", "")))
    end
    return die(EXIT.other, "internal error: %s", msg)
  end
  local images, info = res[2], res[3]
  if not images then
    stderr:write(tostring(info), "\n")
    return KIND_EXIT[info.kind] or EXIT.other
  end
  local base = o.output
  if not base then
    local fmt = info.images[1] and info.images[1].format or o.output_format or "png"
    base = format("omixa-%s.%s", os.date("%Y%m%d-%H%M%S"), EXT[fmt] or fmt)
  end
  local files = {}
  for k, bytes in ipairs(images) do
    local path = output_name(base, k)
    local saved, err = omixa.save(bytes, path)
    if not saved then return die(EXIT.other, "%s", (tostring(err):gsub("^omixa: ", ""))) end
    files[k] = path
    if not o.json then stdout:write(path, "\n") end
  end
  if o.json then
    info.files = files
    stdout:write(cjson.encode(info), "\n")
  end
  return EXIT.ok
end

function cli.main(argv)
  argv = argv or {}
  if argv[1] == "serve" then
    local rest = {}
    for k = 2, #argv do rest[#rest + 1] = argv[k] end
    return require("omixa.serve").main(rest)
  end
  local ok, o = pcall(parse, argv)
  if not ok then
    if type(o) == "table" and o.usage then
      stderr:write("omixa: ", o.usage, "\n", "try 'omixa --help'\n")
      return EXIT.usage
    end
    error(o, 0)
  end
  if o.help then stdout:write(USAGE); return EXIT.ok end
  if o.version then stdout:write(require("omixa")._VERSION, "\n"); return EXIT.ok end
  if not o.prompt then
    stderr:write(USAGE)
    return EXIT.usage
  end
  return generate(o)
end

return cli
