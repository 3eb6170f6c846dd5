-- The CLI a newcomer meets in the first hour: commands that send nothing,
-- paths checked before paying, a paid image never lost, the format asked by
-- the file name, exit codes and hints, the live progress line, install.
local cjson = require "cjson"
local omixa = require "omixa"
local helpers = require "helpers"
local q = helpers.quote

describe("omixa CLI, first hour", function()
  local srv, dir
  setup(function()
    srv = helpers.serve()
    dir = helpers.tmpdir()
  end)
  teardown(function() srv:stop() end)
  before_each(function() srv:reset() end)

  -- A key is set (the stand-in takes any); TMPDIR is the test's own.
  local function cli(args, env)
    return helpers.cli_run(dir, srv, args, "OMIXA_API_KEY=omx_test_firsthour TMPDIR=" .. q(dir .. "/tmp") .. " " .. (env or ""))
  end

  -- Runs args with stderr on a terminal; returns what it showed.
  local function on_tty(args)
    return helpers.on_tty(string.format("cd %s && OMIXA_BASE_URL=%s %s %s", q(dir), q(srv.url), helpers.cli(), args))
  end

  it("help, version and models [--json] answer at once and send nothing", function()
    local ok, _, out = cli("help")
    assert.is_true(ok)
    assert.matches("usage: omixa PROMPT", out)
    assert.matches("exit status", out)
    ok, _, out = cli("version")
    assert.is_true(ok)
    assert.equal(omixa._VERSION .. "\n", out)
    ok, _, out = cli("models")
    assert.is_true(ok)
    assert.matches("gpt%-image%-1%.5", out)
    local err
    ok, _, out, err = cli("models --json")
    assert.is_true(ok, err)
    local doc = cjson.decode(out)
    assert.equal(omixa.models["gpt-image-1.5"].price, doc["gpt-image-1.5"].price)
    assert.equal("table", type(doc["gpt-image-1.5"].fields))
    assert.same({}, srv:requests())
    -- nothing at all: with an address where nothing listens they still work
    for _, words in ipairs({ "help", "version", "models", "models --json" }) do
      local done, code, _, e = cli(words, "OMIXA_BASE_URL=http://127.0.0.1:9/api/v1")
      assert.is_true(done, words .. ": exit " .. code .. " " .. e)
    end
  end)

  it("a prompt that is a command word needs --prompt, and is then sent", function()
    local _, code, out, err = cli("--prompt help -o help.png")
    assert.equal(0, code, err)
    assert.equal("help.png\n", out)
    local reqs = srv:requests()
    assert.equal(1, #reqs)
    assert.equal("help", cjson.decode(reqs[1].body).prompt)
    _, code, _, err = cli("models 'a fox'")
    assert.equal(2, code)
    assert.matches("--prompt", err)
  end)

  it("no prompt prints a short usage line, not the whole help", function()
    local _, code, out, err = cli("")
    assert.equal(2, code)
    assert.equal("", out)
    assert.matches("^usage: omixa PROMPT", err)
    assert.is_nil(err:find("\n.", 1))
    assert.same({}, srv:requests())
  end)

  it("a missing output or partials folder is a usage error before anything is sent", function()
    local _, code, _, err = cli("fox -o missing/dir/x.png")
    assert.equal(2, code)
    assert.matches("missing/dir", err, 1, true)
    assert.matches("-o", err, 1, true)
    _, code, _, err = cli("fox --stream --partials nowhere -o p.png")
    assert.equal(2, code)
    assert.matches("nowhere", err, 1, true)
    assert.matches("--partials", err, 1, true)
    assert.same({}, srv:requests())
  end)

  it("a paid image that cannot be written where asked is saved beside it, and the path printed", function()
    os.execute("mkdir -p " .. q(dir .. "/taken.png"))  -- a folder where the file should go
    local _, code, out, err = cli("fox -o taken.png")
    assert.equal(5, code)
    local saved = out:match("^(%S+)\n$")
    assert.truthy(saved, out .. err)
    assert.matches("could not write taken.png", err, 1, true)
    assert.matches(saved, err, 1, true)
    assert.equal("image/png", omixa.sniff(helpers.must_read(dir .. "/" .. saved)).mime)
    assert.equal(1, #srv:requests())
  end)

  it("a partial image that cannot be kept does not stop the paid final image", function()
    os.execute("mkdir -p " .. q(dir .. "/parts/partial-1.png"))  -- a folder where the partial should go
    srv:faults{ { partials = 2 } }
    local _, code, out, err = cli("'streamed fox' --stream --partials parts -o final.png --size 0.5K")
    assert.equal(0, code, err)
    assert.equal("final.png\n", out)
    assert.matches("could not keep partial images in parts", err, 1, true)
    assert.equal("image/png", omixa.sniff(helpers.must_read(dir .. "/final.png")).mime)
  end)

  it("a folder that vanishes while the service works: the image lands in the temp folder", function()
    os.execute("mkdir -p " .. q(dir .. "/gone") .. " " .. q(dir .. "/tmp"))
    srv:faults{ { delay = 3 } }
    local cmd = string.format("cd %s && (env OMIXA_BASE_URL=%s TMPDIR=%s %s fox -o gone/x.png & p=$!; sleep 1; rm -rf gone; wait $p)",
      q(dir), q(srv.url), q(dir .. "/tmp"), helpers.cli())
    local _, code, out, err = helpers.run(cmd)
    assert.equal(5, code, err)
    local saved = out:match("^(%S+)\n$")
    assert.truthy(saved, out .. err)
    assert.equal(dir .. "/tmp/", saved:sub(1, #dir + 5))
    assert.matches(saved, err, 1, true)
    assert.equal("image/png", omixa.sniff(helpers.must_read(saved)).mime)
  end)

  it("-o x.jpg asks for jpeg and writes JPEG bytes; a --format conflict is a usage error", function()
    local _, code, _, err = cli("fox -o x.jpg")
    assert.equal(0, code, err)
    assert.equal("jpeg", cjson.decode(srv:requests()[1].body).output_format)
    assert.equal("image/jpeg", omixa.sniff(helpers.must_read(dir .. "/x.jpg")).mime)
    _, code = cli("fox -o w.webp")
    assert.equal(0, code)
    assert.equal("image/webp", omixa.sniff(helpers.must_read(dir .. "/w.webp")).mime)
    srv:reset()
    _, code, _, err = cli("fox -o y.jpg --format png")
    assert.equal(2, code)
    assert.matches("--format", err, 1, true)
    assert.same({}, srv:requests())
    _, code = cli("fox -o y.jpg --format jpeg")
    assert.equal(0, code)
  end)

  it("exit codes name what to change: key (2), API (3), network and timeout (4), budget (5)", function()
    local _, code, _, err = helpers.run(string.format("cd %s && env -u OMIXA_API_KEY OMIXA_BASE_URL=https://omixa.invalid/api/v1 %s fox -o k.png",
      q(dir), helpers.cli()))
    assert.equal(2, code)
    assert.matches("OMIXA_API_KEY", err, 1, true)
    srv:faults{ { status = 429, retry_after = "120" } }
    _, code, _, err = cli("fox -o r.png")
    assert.equal(3, code)
    assert.matches("try again later", err, 1, true)
    _, code, _, err = cli("fox -o n.png", "OMIXA_BASE_URL=http://127.0.0.1:9/api/v1")
    assert.equal(4, code)
    assert.matches("OMIXA_BASE_URL", err, 1, true)
    srv:faults{ { delay = 3 } }
    _, code, _, err = cli("fox -o t.png --timeout 0.5")
    assert.equal(4, code)
    assert.matches("--timeout", err, 1, true)
    _, code, _, err = cli("fox -o b.png --budget 0.01")
    assert.equal(5, code)
    assert.matches("--budget", err, 1, true)
  end)

  it("--dry-run goes through client:prepare: no key needed, nothing sent", function()
    local _, code, out, err = helpers.run(string.format(
      "cd %s && env -u OMIXA_API_KEY OMIXA_BASE_URL=https://omixa.invalid/api/v1 %s fox -o d.jpg --dry-run",
      q(dir), helpers.cli()))
    assert.equal(0, code, err)
    local body = cjson.decode(out)
    assert.equal("fox", body.prompt)
    assert.equal("jpeg", body.output_format)
  end)

  it("the progress line ticks through the wait on a terminal; --quiet and a pipe stay silent", function()
    srv:faults{ { delay = 2.5 } }
    local ok, code, out = on_tty("tick -o tick.png")
    assert.is_true(ok, out)
    assert.equal(0, code)
    local seen = {}
    for s in out:gmatch("omixa: waiting  (%d+)s") do seen[s] = true end
    assert.truthy(seen["0"] and seen["1"] and seen["2"], out)
    srv:faults{ { delay = 0.5 } }
    ok, code, out = on_tty("quiet -o quiet.png --quiet")
    assert.is_true(ok, out)
    assert.equal(0, code)
    assert.is_nil(out:find("omixa: waiting", 1, true), out)
    local _, _, _, err = cli("piped -o piped.png")
    assert.equal("", err)
  end)

  it("shows bytes and a rate while receiving", function()
    srv:faults{ { pad = 400000, trickle = { bytes = 40000, interval = 0.2 } } }
    local _, code, out = on_tty("slow -o slow.png")
    assert.equal(0, code)
    assert.matches("omixa: receiving [%d.]+ MB of [%d.]+ MB, [%d.]+ MB/s", out)
  end)

  it("runs as lua bin/omixa from the checkout, and installed from any folder without LUA_PATH", function()
    local root = helpers.root
    local ok, _, out, err = helpers.run(string.format("cd %s && env -u LUA_PATH -u LUA_CPATH %s bin/omixa version",
      q(root), q(helpers.interpreter)))
    assert.is_true(ok, err)
    assert.equal(omixa._VERSION .. "\n", out)
    local prefix = helpers.tmpdir()
    local make = type(jit) == "table" and "LUA=luajit" or ("LUA_VERSION=" .. _VERSION:match("%d+%.%d+"))
    ok, _, out, err = helpers.run(string.format("make -s -C %s %s install PREFIX=%s", q(root), make, q(prefix)))
    assert.is_true(ok, out .. err)
    local _, code
    _, code, _, err = helpers.run(string.format(
      "cd / && env -u LUA_PATH -u LUA_CPATH -u OMIXA_BUILD OMIXA_BASE_URL=%s %s/bin/omixa fox -o %s/inst.png",
      q(srv.url), q(prefix), q(dir)))
    assert.equal(0, code, err)
    assert.equal("image/png", omixa.sniff(helpers.must_read(dir .. "/inst.png")).mime)
    _, _, out = helpers.run(string.format("cd / && env -u LUA_PATH -u LUA_CPATH %s/bin/omixa doctor", q(prefix)))
    assert.matches(prefix .. "/lib/lua/", out, 1, true)
  end)

  it("runs installed by luarocks make into a tree of its own, without LUA_PATH", function()
    if _VERSION ~= "Lua 5.4" or type(jit) == "table" then
      return pending("the Lua 5.4 pass runs luarocks make")
    end
    local tree = helpers.tmpdir()
    local ok, _, out, err = helpers.run(string.format("cd %s && luarocks --lua-version=5.4 --tree=%s make --deps-mode=none "
      .. "omixa-0.1.0-1.rockspec", q(helpers.root), q(tree)))
    assert.is_true(ok, out .. err)
    ok, _, out, err = helpers.run(string.format("cd / && env -u LUA_PATH -u LUA_CPATH -u OMIXA_BUILD %s/bin/omixa version", q(tree)))
    assert.is_true(ok, err)
    assert.equal(omixa._VERSION .. "\n", out)
  end)
end)
