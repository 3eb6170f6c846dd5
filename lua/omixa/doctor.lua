-- omixa.doctor — what to look at first when something is wrong: which Lua,
-- which core, libcurl and its TLS backend, a CA bundle, the key (present or
-- not, never shown) and whether the base URL answers.
--
--   require("omixa.doctor").checks(opts) -> { { name =, status =, detail = }, ... }
--
-- status is "ok", "warn" or "error". opts (all optional): base_url, api_key,
-- ca_file (as omixa.new takes them; default the environment), timeout
-- (seconds for the reachability probe, default 5), probe = false to skip it.
-- `omixa doctor` prints these; Neovim's :checkhealth omixa reports them.

local type, tostring, tonumber, pcall, ipairs = type, tostring, tonumber, pcall, ipairs
local format, match, gsub = string.format, string.match, string.gsub

local M = {}

local DEFAULT_BASE = "https://www.omixa.cloud/api/v1"

-- Common system CA bundles (libcurl's own default is not readable from Lua).
local CA_BUNDLES = {
  "/etc/ssl/certs/ca-certificates.crt",   -- Debian, Ubuntu, Arch, Alpine
  "/etc/pki/tls/certs/ca-bundle.crt",     -- Fedora, RHEL
  "/etc/ssl/ca-bundle.pem",               -- openSUSE
  "/etc/ssl/cert.pem",                    -- macOS, the BSDs, Alpine
  "/usr/local/share/certs/ca-root-nss.crt", -- FreeBSD
}

local function env(name)
  local v = os.getenv(name)
  if v == "" then return nil end
  return v
end

local function readable(path)
  local f = io.open(path, "rb")
  if not f then return false end
  f:close()
  return true
end

-- package.searchpath, also on Lua 5.1 / LuaJIT.
local function searchpath(name, path)
  if package.searchpath then return package.searchpath(name, path) end
  local file = gsub(name, "%.", "/")
  for template in path:gmatch("[^;]+") do
    local candidate = gsub(template, "%?", file)
    if readable(candidate) then return candidate end
  end
  return nil
end

local function lua_name()
  if type(jit) == "table" and jit.version then return jit.version .. " (Lua 5.1 API)" end
  return _VERSION
end

-- 501 for Lua 5.1 and LuaJIT, 504 for Lua 5.4 ...
local function running_num()
  local major, minor = match(_VERSION, "(%d+)%.(%d+)")
  return tonumber(major) * 100 + tonumber(minor)
end

local function num_name(n)
  return format("Lua %d.%d", math.floor(n / 100), n % 100)
end

local function is_loopback(url)
  local authority = match(url, "^[%a][%w%+%.%-]*://([^/?#]*)") or ""
  authority = match(authority, "@(.*)$") or authority
  local host = match(authority, "^%[([^%]]*)%]") or match(authority, "^([^:]*)") or ""
  host = host:lower()
  return host == "localhost" or host == "::1" or match(host, "^127%.%d+%.%d+%.%d+$") ~= nil
end

local function check_core(out)
  local path = searchpath("omixa.core", package.cpath)
  local ok, core = pcall(require, "omixa.core")
  if not ok then
    out[#out + 1] = { name = "core", status = "error",
      detail = format("omixa.core does not load%s: %s — build it with `make` (make LUA=luajit for LuaJIT) "
        .. "or set package.cpath / LUA_CPATH to the folder holding omixa/core.so",
        path and (" from " .. path) or " (not found on package.cpath)", tostring(core):gsub("\n.*", "")) }
    return nil
  end
  local built = core._LUA_VERSION_NUM
  local detail = format("%s (%s)", path or "preloaded", core._VERSION or "unknown version")
  if built then
    detail = detail .. format(", built for %s", num_name(built))
    if built ~= running_num() then
      out[#out + 1] = { name = "core", status = "error",
        detail = detail .. format(", running on %s: rebuild it for this Lua", _VERSION) }
      return core
    end
  end
  out[#out + 1] = { name = "core", status = "ok", detail = detail }
  return core
end

local function check_curl(out, core)
  if not core then
    out[#out + 1] = { name = "libcurl", status = "error", detail = "unknown: the core did not load" }
    return
  end
  local version, tls = core.curl_version()
  if tls then
    out[#out + 1] = { name = "libcurl", status = "ok", detail = format("%s, TLS by %s", version, tls) }
  else
    out[#out + 1] = { name = "libcurl", status = "warn",
      detail = format("%s without TLS: only http:// base URLs (the stand-in) work; "
        .. "install a libcurl built with OpenSSL/GnuTLS and rebuild", version) }
  end
end

local function check_ca(out, opts, base)
  local given = opts.ca_file or env("CURL_CA_BUNDLE") or env("SSL_CERT_FILE")
  if given then
    local from = opts.ca_file and "ca_file" or (env("CURL_CA_BUNDLE") and "CURL_CA_BUNDLE" or "SSL_CERT_FILE")
    if readable(given) then
      out[#out + 1] = { name = "CA bundle", status = "ok", detail = format("%s (from %s)", given, from) }
    else
      out[#out + 1] = { name = "CA bundle", status = "error",
        detail = format("%s (from %s) cannot be read: fix %s or unset it", given, from, from) }
    end
    return
  end
  for _, path in ipairs(CA_BUNDLES) do
    if readable(path) then
      out[#out + 1] = { name = "CA bundle", status = "ok", detail = path .. " (libcurl's default may be another)" }
      return
    end
  end
  out[#out + 1] = { name = "CA bundle", status = match(base, "^https:") and "warn" or "ok",
    detail = "no system CA bundle found: install ca-certificates, or pass ca_file / --ca-file, "
      .. "or set CURL_CA_BUNDLE" }
end

local function check_key(out, opts, base)
  local key = opts.api_key or env("OMIXA_API_KEY")
  if type(key) == "function" then key = key() end
  if type(key) == "string" and key ~= "" then
    out[#out + 1] = { name = "API key", status = "ok",
      detail = format("%s is set (%d characters, not shown)", opts.api_key and "api_key" or "OMIXA_API_KEY", #key) }
  elseif is_loopback(base) then
    out[#out + 1] = { name = "API key", status = "ok",
      detail = "OMIXA_API_KEY is not set; not needed for the loopback base URL (the stand-in)" }
  else
    out[#out + 1] = { name = "API key", status = "error",
      detail = "OMIXA_API_KEY is not set: export OMIXA_API_KEY=omx_live_... "
        .. "(or set OMIXA_BASE_URL to a running `omixa serve` to work without one)" }
  end
  return key
end

local function check_reach(out, opts, base, key, core)
  if opts.probe == false then return end
  if not core then
    out[#out + 1] = { name = "base URL", status = "error", detail = base .. ": not probed (the core did not load)" }
    return
  end
  local omixa = require "omixa"
  -- Without a key a placeholder goes with the probe: any HTTP answer (401
  -- included) shows the host is reachable; the user's key is never needed.
  local probe_key = (type(key) == "string" and key ~= "") and key or "omixa-doctor-probe"
  local ok, client = pcall(omixa.new, { base_url = base, api_key = probe_key, ca_file = opts.ca_file,
    timeout = opts.timeout or 5, connect_timeout = opts.timeout or 5, max_retries = 0 })
  if not ok then
    out[#out + 1] = { name = "base URL", status = "error",
      detail = format("%s: %s — fix OMIXA_BASE_URL", base, (tostring(client):gsub("^.-omixa: ", ""))) }
    return
  end
  local list, err = client:models()
  client:close()
  local from = opts.base_url and "base_url" or (env("OMIXA_BASE_URL") and "OMIXA_BASE_URL" or "the default")
  if list ~= nil then
    out[#out + 1] = { name = "base URL", status = "ok", detail = format("%s answers GET /models (%s)", base, from) }
  elseif err.kind == "api" or err.kind == "protocol" then
    local status = "ok"
    local detail = format("%s is reachable (HTTP %s to GET /models)", base, tostring(err.status))
    if err.status == 401 or err.status == 403 then
      if probe_key == key then
        status, detail = "error", detail .. ": the service refused the key — check OMIXA_API_KEY"
      end
    end
    out[#out + 1] = { name = "base URL", status = status, detail = detail }
  else
    local hint = err.kind == "tls" and "check the CA bundle (--ca-file / CURL_CA_BUNDLE) or the clock"
      or format("check %s, the network or a proxy (HTTPS_PROXY)", from == "the default" and "the base URL (OMIXA_BASE_URL)" or from)
    out[#out + 1] = { name = "base URL", status = "error",
      detail = format("%s is not reachable: %s — %s", base, (tostring(err):gsub("^omixa: ", "")), hint) }
  end
end

function M.checks(opts)
  if opts ~= nil and type(opts) ~= "table" then
    error("omixa: doctor.checks: opts must be a table (got " .. type(opts) .. ")", 2)
  end
  opts = opts or {}
  local out = {}
  out[1] = { name = "Lua", status = "ok", detail = lua_name() }
  local core = check_core(out)
  check_curl(out, core)
  local base = opts.base_url or env("OMIXA_BASE_URL") or DEFAULT_BASE
  check_ca(out, opts, base)
  local key = check_key(out, opts, base)
  check_reach(out, opts, base, key, core)
  return out
end

-- The checks as text, one line each; returns the text and whether any failed.
function M.report(checks)
  local lines, failed = {}, false
  for _, c in ipairs(checks) do
    lines[#lines + 1] = format("%-5s %-10s %s", c.status, c.name, c.detail)
    if c.status == "error" then failed = true end
  end
  return table.concat(lines, "\n") .. "\n", failed
end

return M
