-- Neovim as a plugin host (Debian's nvim, headless): `:checkhealth omixa`
-- (lua/omixa/health.lua over omixa.doctor) and `:help omixa` (doc/omixa.txt).
-- LuaJIT pass only, like spec/56 (Neovim embeds LuaJIT).
local helpers = require "helpers"

local q = helpers.quote
local root = helpers.root

describe(":checkhealth omixa and :help omixa in headless Neovim", function()
  if type(jit) ~= "table" then
    it("runs in the LuaJIT pass (Neovim embeds LuaJIT)", function()
      pending("run by `make test` with LuaJIT: luajit /usr/bin/busted spec/59-nvim_health_spec.lua")
    end)
    return
  end

  local srv, dir
  setup(function()
    local built, code, out, err = helpers.run("cd " .. q(root) .. " && make -s LUA=luajit core")
    assert(built, "make LUA=luajit core failed (" .. code .. "): " .. out .. err)
    srv = helpers.serve()
    dir = helpers.tmpdir()
    os.execute("cp -r " .. q(root .. "/doc") .. " " .. q(dir .. "/doc")) -- :helptags writes doc/tags
  end)
  teardown(function() if srv then srv:stop() end end)

  -- Runs nvim with the checkout on 'runtimepath' as a plugin manager puts
  -- it, EX commands after; returns what `:checkhealth omixa` wrote.
  local function nvim(base_url, ...)
    local cmds = {}
    for i, c in ipairs({ ... }) do cmds[i] = "-c " .. q(c) end
    local cmd = table.concat({
      "env -u OMIXA_API_KEY", "OMIXA_BASE_URL=" .. q(base_url),
      "XDG_CACHE_HOME=" .. q(dir), "XDG_STATE_HOME=" .. q(dir), "XDG_DATA_HOME=" .. q(dir),
      "XDG_CONFIG_HOME=" .. q(dir),
      "timeout 60 nvim --headless --clean -u NONE -i NONE",
      "--cmd", q("set rtp+=" .. root),
      "--cmd", q(("lua package.cpath = %q .. package.cpath"):format(root .. "/build/luajit/?.so;")),
      "-c", q("checkhealth omixa"), "-c", q("w! " .. dir .. "/health.txt"),
      table.concat(cmds, " "), "-c", "'qa!'",
    }, " ")
    local ok, code, out, err = helpers.run(cmd)
    assert(ok, "nvim failed (exit " .. code .. "): " .. out .. err)
    return helpers.must_read(dir .. "/health.txt")
  end

  it("reports the core, libcurl with TLS, the key and the base URL as OK", function()
    local text = nvim(srv.url)
    assert.matches("## omixa", text, 1, true)
    assert.matches("OK: core: [^\n]*build/luajit/omixa/core%.so[^\n]*built for Lua 5%.1", text)
    assert.matches("OK: libcurl: [%d.]+, TLS by ", text)
    assert.matches("OK: API key: OMIXA_API_KEY is not set; not needed for the loopback", text)
    assert.matches("OK: base URL: " .. srv.url:gsub("%p", "%%%0") .. " answers", text)
    assert.not_matches("ERROR", text)
  end)

  it("reports an unreachable base URL as an ERROR", function()
    local text = nvim("http://127.0.0.1:9/api/v1")
    assert.matches("ERROR: base URL: http://127.0.0.1:9/api/v1 is not reachable", text, 1, true)
  end)

  it("opens :help omixa once the tags are made", function()
    nvim(srv.url, "helptags " .. dir .. "/doc", "set rtp+=" .. dir, "help omixa-lazy",
      ("lua io.open(%q, 'w'):write(vim.fn.expand('%%:t'), ' ', vim.fn.getline('.'))"):format(dir .. "/help.txt"))
    local shown = helpers.must_read(dir .. "/help.txt")
    assert.matches("^omixa%.txt .*%*omixa%-lazy%*", shown)
  end)
end)
