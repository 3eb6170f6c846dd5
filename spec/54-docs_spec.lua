-- Every ```sh block of README.md and docs/*.md runs, in order, one shell per
-- file, against the local stand-in (the README's quick start starts it), in
-- a scratch folder that mirrors the checkout: the manual cannot drift from
-- the code. A block preceded by `<!-- not-run: reason -->` is skipped (it
-- installs packages, needs a real key, ...); the reason is required.
local helpers = require "helpers"

local q = helpers.quote
local root = helpers.root

-- The sh blocks of a Markdown text: { { line = n, code = "..." } ... }, and
-- the skipped ones with their reasons.
local function sh_blocks(text)
  local blocks, skipped = {}, {}
  local lines = {}
  for l in (text .. "\n"):gmatch("([^\n]*)\n") do lines[#lines + 1] = l end
  local i, prev = 1, ""
  while i <= #lines do
    local fence = lines[i]:match("^```(%S*)%s*$")
    if fence then
      local start, body = i, {}
      i = i + 1
      while i <= #lines and not lines[i]:match("^```%s*$") do body[#body + 1] = lines[i]; i = i + 1 end
      if fence == "sh" then
        local reason = prev:match("^<!%-%- not%-run: (.-) %-%->$")
        if reason then
          assert(reason:match("%S"), "line " .. start .. ": not-run needs a reason")
          skipped[#skipped + 1] = { line = start, reason = reason }
        else
          blocks[#blocks + 1] = { line = start, code = table.concat(body, "\n") }
        end
      end
      prev = ""
    elseif lines[i]:match("%S") then
      prev = lines[i]
    end
    i = i + 1
  end
  return blocks, skipped
end

-- A scratch folder whose entries are links to the checkout's (except what
-- the commands write: omixa/, out/): files the blocks write land here.
local function mirror()
  local dir = helpers.tmpdir()
  local ok, _, out, err = helpers.run("cd " .. q(root) .. " && for e in $(ls -A); do case $e in "
    .. ".git|omixa|out) ;; *) ln -s " .. q(root) .. "/$e " .. q(dir) .. "/$e ;; esac; done")
  assert(ok, out .. err)
  return dir
end

local function run_file(name)
  local text = helpers.must_read(root .. "/" .. name)
  local blocks = sh_blocks(text)
  local script = { "set -e",
    "trap 'test -n \"${state:-}\" && lua5.4 bin/omixa serve --stop \"$state\" >/dev/null 2>&1; true' EXIT" }
  for _, b in ipairs(blocks) do
    script[#script + 1] = ("echo '@@ %s:%d' >&2"):format(name, b.line)
    script[#script + 1] = b.code
  end
  local dir = mirror()
  local ok, code, out, err = helpers.run("cd " .. q(dir) .. " && env -u OMIXA_API_KEY -u OMIXA_BASE_URL "
    .. "-u OMIXA_BUILD -u LUA_PATH -u LUA_CPATH timeout 600 sh", table.concat(script, "\n") .. "\n")
  local last = err:match(".*@@ ([^\n]+)") or "?"
  return ok, ("%s: the block at %s failed (exit %d)\nstdout:\n%s\nstderr:\n%s"):format(
    name, last, code, out:sub(-3000), err:sub(-3000)), dir, out
end

describe("the manual", function()
  it("finds the sh blocks and honours not-run markers", function()
    local blocks, skipped = sh_blocks(table.concat({
      "```sh", "echo one", "```", "", "<!-- not-run: needs a key -->", "```sh", "echo two", "```",
      "```lua", "print(1)", "```" }, "\n"))
    assert.same({ { line = 1, code = "echo one" } }, blocks)
    assert.same({ { line = 6, reason = "needs a key" } }, skipped)
  end)

  if _VERSION ~= "Lua 5.4" or type(jit) == "table" then
    it("runs in the Lua 5.4 pass (the commands are the same on every pass)", function()
      pending("run with lua5.4 /usr/bin/busted spec/54-docs_spec.lua")
    end)
    return
  end

  it("README.md: every sh block runs, the quick start without a key first", function()
    local text = helpers.must_read(root .. "/README.md")
    local blocks = sh_blocks(text)
    assert.truthy(#blocks >= 5)
    assert.matches("omixa serve", blocks[1].code)
    local ok, msg, dir, out = run_file("README.md")
    assert(ok, msg)
    assert.matches("\nfox.png\n", out)
    assert.equal("image/png", require("omixa").sniff(helpers.must_read(dir .. "/fox.png")).mime)
    assert.equal("image/jpeg", require("omixa").sniff(helpers.must_read(dir .. "/fox.jpg")).mime)
    assert.matches("exit 4", out)
    assert.equal("image/png", require("omixa").sniff(helpers.must_read(dir .. "/fox-lua.png")).mime)
  end)

  it("docs/*.md: every sh block runs", function()
    local ok, _, out = helpers.run("cd " .. q(root) .. " && ls docs/*.md")
    assert(ok)
    for name in out:gmatch("[^\n]+") do
      local ran, msg = run_file(name)
      assert(ran, msg)
    end
  end)
end)
