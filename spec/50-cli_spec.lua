-- The command line: files, --json, --dry-run and the exit codes.
local cjson = require "cjson"
local omixa = require "omixa"
local helpers = require "helpers"

describe("omixa CLI", function()
  local srv, dir
  setup(function()
    srv = helpers.serve()
    dir = helpers.tmpdir()
  end)
  teardown(function() srv:stop() end)
  before_each(function() srv:reset() end)

  local function omixa_cmd(args, env)
    return helpers.cli_run(dir, srv, args, env)
  end

  it("writes the image and prints its path", function()
    local ok, code, out, err = omixa_cmd("'a red fox in snow' -o fox.png")
    assert.is_true(ok, err)
    assert.equal(0, code)
    assert.equal("fox.png\n", out)
    assert.equal("", err) -- quiet when stderr is not a terminal
    assert.equal("image/png", omixa.sniff(helpers.must_read(dir .. "/fox.png")).mime)
  end)

  it("shows a live progress line when stderr is a terminal", function()
    srv:faults{ { delay = 0.5 } }
    -- script(1) gives the command a terminal; its stderr then goes there.
    local inner = string.format("cd '%s' && OMIXA_BASE_URL='%s' %s tty-fox -o tty.png", dir, srv.url, helpers.cli())
    local ok, code, out = helpers.on_tty(inner)
    assert.is_true(ok, out)
    assert.equal(0, code)
    assert.truthy(out:find("\r\27%[Komixa: waiting"), out)
    assert.truthy(out:find("tty.png", 1, true))
  end)

  it("-n 2 -o fox.png writes fox.png and fox-2.png", function()
    local _, code, out = omixa_cmd("'two foxes' -n 2 -o two.png --aspect 16:9 --size 0.5K")
    assert.equal(0, code)
    assert.equal("two.png\ntwo-2.png\n", out)
    local s = omixa.sniff(helpers.must_read(dir .. "/two-2.png"))
    assert.same({ 512, 288 }, { s.width, s.height })
  end)

  it("--stream --partials DIR keeps each partial image and writes the final file", function()
    srv:faults{ { partials = 2 } }
    os.execute("mkdir -p '" .. dir .. "/parts'")
    local _, code, out, err = omixa_cmd("'streamed fox' --stream --partials parts -o streamed.png --size 0.5K")
    assert.equal(0, code, err)
    assert.equal("streamed.png\n", out)
    assert.equal("image/png", omixa.sniff(helpers.must_read(dir .. "/streamed.png")).mime)
    assert.equal("image/png", omixa.sniff(helpers.must_read(dir .. "/parts/partial-1.png")).mime)
    assert.equal("image/png", omixa.sniff(helpers.must_read(dir .. "/parts/partial-2.png")).mime)
    assert.is_true(srv:requests()[1].body:find('"stream":true', 1, true) ~= nil)
  end)

  it("--stream is refused for a model that does not stream", function()
    local _, code, _, err = omixa_cmd("'x' --stream -m imagen-4.0-generate-001")
    assert.equal(2, code)
    assert.matches("does not stream", err)
  end)

  it("--json prints info as one JSON document", function()
    local _, code, out = omixa_cmd("'fox' -o j.png --json")
    assert.equal(0, code)
    local info = cjson.decode(out)
    assert.equal("0.040000", info.billed_amount)
    assert.equal(1, info.attempts)
    assert.same({ "j.png" }, info.files)
    assert.equal("image/png", info.images[1].mime)
  end)

  it("--dry-run prints the body with image byte counts and sends nothing", function()
    local png = omixa.b64decode(
      "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==")
    assert(omixa.save(png, dir .. "/in.png"))
    local _, code, out = omixa_cmd("'edit' -i in.png --format webp -m gpt-image-1.5 --set quality=high --dry-run",
      "OMIXA_API_KEY=omx_live_dry")
    assert.equal(0, code)
    assert.is_nil(out:find("omx_live_dry", 1, true))
    local body = cjson.decode(out)
    assert.equal("gpt-image-1.5", body.model)
    assert.equal("high", body.quality)
    assert.equal("data:image/png;base64,<" .. #png .. " bytes>", body.input_images[1].image_url.url)
    assert.same({}, srv:requests())
  end)

  it("exits 2 on usage and validation errors", function()
    local _, code, _, err = omixa_cmd("'fox' --aspect 2:1")
    assert.equal(2, code)
    assert.matches("field 'aspect_ratio' must be one of", err)
    _, code = omixa_cmd("--bogus")
    assert.equal(2, code)
    _, code = omixa_cmd("")
    assert.equal(2, code)
  end)

  it("exits 3 on an API error", function()
    srv:faults{ { status = 402, code = "insufficient_balance", message = "Insufficient wallet balance." } }
    local _, code, _, err = omixa_cmd("'fox' -o x.png")
    assert.equal(3, code)
    assert.matches("api error 402 insufficient_balance", err)
  end)

  it("exits 4 on network errors and timeouts", function()
    srv:faults{ { delay = 3 } }
    local _, code = omixa_cmd("'fox' -o x.png --timeout 0.5")
    assert.equal(4, code)
    local _, code2 = helpers.run(string.format("cd '%s' && OMIXA_BASE_URL=http://127.0.0.1:9/api/v1 %s fox -o y.png",
      dir, helpers.cli()))
    assert.equal(4, code2)
  end)

  it("exits 2 on a missing key (a config error), naming OMIXA_API_KEY", function()
    local _, code, _, err = helpers.run(string.format(
      "cd '%s' && env -u OMIXA_API_KEY OMIXA_BASE_URL=https://omixa.invalid/api/v1 %s fox -o y.png", dir, helpers.cli()))
    assert.equal(2, code)
    assert.matches("no API key", err)
    assert.matches("OMIXA_API_KEY", err)
  end)

  it("exits 5 on other errors (a budget refusal)", function()
    local _, code, _, err = omixa_cmd("'fox' -o b.png --budget 0.01")
    assert.equal(5, code)
    assert.matches("budget", err)
    assert.same({}, srv:requests())
  end)

  it("--help and --version", function()
    local _, code, out = omixa_cmd("--help")
    assert.equal(0, code)
    assert.matches("usage: omixa PROMPT", out)
    _, code, out = omixa_cmd("--version")
    assert.equal(0, code)
    assert.equal("omixa 0.1.0\n", out)
  end)
end)
