-- omixa.health — `:checkhealth omixa` in Neovim: the checks of omixa.doctor
-- (the Lua, the core and what it was built for, libcurl and its TLS
-- backend, the CA bundle, the key — never shown — and whether the base URL
-- answers) as health reports. Works with Neovim 0.7 (require("health")'s
-- report_* functions) and later (vim.health.start/ok/warn/error).
--
-- Options: vim.g.omixa_health = { probe = false, base_url = ..., timeout = s }
-- (passed to omixa.doctor.checks; probe = false skips the network).

local M = {}
-- luacheck: read globals vim

local function reporter()
  local h = vim.health
  if h and h.start then return h.start, h.ok, h.warn, h.error end
  if not (h and h.report_start) then h = require("health") end
  return h.report_start, h.report_ok, h.report_warn, h.report_error
end

function M.check()
  local start, ok, warn, error_ = reporter()
  start("omixa")
  local loaded, doctor = pcall(require, "omixa.doctor")
  if not loaded then
    return error_("omixa.doctor does not load: " .. tostring(doctor))
  end
  local opts = vim.g.omixa_health
  if type(opts) ~= "table" then opts = nil end
  local ran, checks = pcall(doctor.checks, opts)
  if not ran then return error_("omixa.doctor.checks failed: " .. tostring(checks)) end
  for _, c in ipairs(checks) do
    local text = c.name .. ": " .. tostring(c.detail)
    if c.status == "ok" then ok(text)
    elseif c.status == "warn" then warn(text)
    else error_(text) end
  end
end

return M
