-- The exact bytes on the wire: method, path, headers, JSON body, images.
local omixa = require "omixa"
local cjson = require "cjson"
local helpers = require "helpers"

local PNG_1x1 = omixa.b64decode(
  "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==")

describe("the request on the wire", function()
  local srv, client
  setup(function()
    srv = helpers.serve()
    client = omixa.new{ base_url = srv.url, api_key = "omx_live_wiretest", max_retries = 0 }
  end)
  teardown(function() client:close(); srv:stop() end)
  before_each(function() srv:reset() end)

  local function sent(request)
    srv:reset()
    local images, err = client:generate(request)
    assert.is_table(images, tostring(err))
    local reqs = srv:requests()
    assert.equal(1, #reqs)
    return reqs[1]
  end

  it("is a POST to {base}/images/generations with the documented headers", function()
    local r = sent{ prompt = "a fox" }
    assert.equal("POST", r.method)
    assert.equal("/api/v1/images/generations", r.uri)
    assert.equal("Bearer omx_live_wiretest", r.headers["authorization"])
    assert.equal("application/json", r.headers["content-type"])
    assert.equal("application/json", r.headers["accept"])
    assert.matches("^omixa%-lua/0%.1%.0 libcurl/[%d%.]+ ", r.headers["user-agent"])
    assert.is_nil(r.headers["expect"])
    assert.truthy(r.headers["accept-encoding"])
  end)

  it("sends exactly the fields given, in catalog order, with no invented defaults", function()
    local r = sent{ prompt = "a fox", size = "1K", n = 2.0, aspect_ratio = "16:9", output_format = "png",
                    enhance_prompt = false, add_watermark = true, reasoning_effort = "minimal",
                    person_generation = "dont_allow" }
    assert.equal('{"model":"gemini-2.0-flash-preview-image-generation","prompt":"a fox","n":2,'
      .. '"output_format":"png","aspect_ratio":"16:9","size":"1K","person_generation":"dont_allow",'
      .. '"enhance_prompt":false,"add_watermark":true,"reasoning_effort":"minimal"}', r.body)
    r = sent{ prompt = "minimal" }
    assert.equal('{"model":"gemini-2.0-flash-preview-image-generation","prompt":"minimal"}', r.body)
  end)

  it("sends the GPT family's fields", function()
    local r = sent{ model = "gpt-image-1.5", prompt = "p", size = "1536x1024", quality = "high",
                    background = "transparent", moderation = "low", input_fidelity = "high" }
    assert.equal('{"model":"gpt-image-1.5","prompt":"p","size":"1536x1024","quality":"high",'
      .. '"background":"transparent","moderation":"low","input_fidelity":"high"}', r.body)
  end)

  it("uses the client's model and an explicit one over it", function()
    local c = omixa.new{ base_url = srv.url, model = "imagen-4.0-generate-001" }
    assert(c:generate{ prompt = "x" })
    assert(c:generate{ prompt = "x", model = "MAI-Image-2.5" })
    local reqs = srv:requests()
    assert.equal("imagen-4.0-generate-001", cjson.decode(reqs[1].body).model)
    assert.equal("MAI-Image-2.5", cjson.decode(reqs[2].body).model)
  end)

  it("escapes UTF-8 prompts with emoji, quotes, backslashes and control characters", function()
    local prompt = 'emoji 🦊 中文 "quoted" back\\slash / slash \n new\tline \1\31 del\127 end'
    local r = sent{ prompt = prompt }
    assert.equal(prompt, cjson.decode(r.body).prompt)
    assert.truthy(r.body:find('"emoji 🦊 中文 \\"quoted\\" back\\\\slash / slash \\n new\\tline \\u0001\\u001f del\127 end"', 1, true))
  end)

  it("sends input images in the documented wire form, mime sniffed from bytes", function()
    local dir = helpers.tmpdir()
    local path = dir .. "/ref.dat" -- a name that says nothing: the bytes decide
    assert(omixa.save(PNG_1x1, path))
    local url = omixa.data_url(PNG_1x1)
    local r = sent{ prompt = "edit", input_images = {
      path, { path = path }, { bytes = PNG_1x1 }, url,
      { type = "image_url", image_url = { url = url } }, { bytes = PNG_1x1, mime = "image/webp" } } }
    local body = cjson.decode(r.body)
    assert.equal(6, #body.input_images)
    for i = 1, 5 do
      assert.same({ type = "image_url", image_url = { url = "data:image/png;base64," .. omixa.b64encode(PNG_1x1) } },
        body.input_images[i])
    end
    assert.equal("data:image/webp;base64," .. omixa.b64encode(PNG_1x1), body.input_images[6].image_url.url)
    assert.is_nil(r.body:find("\\/", 1, true)) -- base64 goes out unescaped
  end)

  it("sends the mask as the same image part", function()
    local r = sent{ model = "gpt-image-1.5", prompt = "m", mask = { bytes = PNG_1x1 } }
    assert.same({ type = "image_url", image_url = { url = omixa.data_url(PNG_1x1) } }, cjson.decode(r.body).mask)
  end)

  it("adds the client's extra headers, which replace ours of the same name", function()
    local c = omixa.new{ base_url = srv.url, headers = { ["X-Trace"] = "t-1", Accept = "*/*" }, user_agent = "my-plugin/2" }
    assert(c:generate{ prompt = "x" })
    local r = srv:requests()[1]
    assert.equal("t-1", r.headers["x-trace"])
    assert.equal("*/*", r.headers["accept"])
    assert.equal("my-plugin/2", r.headers["user-agent"])
  end)

  it("calls an api_key function for every request", function()
    local n = 0
    local c = omixa.new{ base_url = srv.url, api_key = function() n = n + 1; return "omx_live_k" .. n end }
    assert(c:generate{ prompt = "x" })
    assert(c:generate{ prompt = "x" })
    local reqs = srv:requests()
    assert.equal("Bearer omx_live_k1", reqs[1].headers["authorization"])
    assert.equal("Bearer omx_live_k2", reqs[2].headers["authorization"])
  end)

  it("reuses one connection for sequential requests", function()
    for _ = 1, 3 do assert(client:generate{ prompt = "x" }) end
    local reqs = srv:requests()
    assert.equal(3, #reqs)
    if reqs[1].connection then
      assert.equal(reqs[1].connection, reqs[3].connection)
    end
  end)
end)

describe("client:prepare", function()
  it("gives the same request as plain data", function()
    local c = omixa.new{ base_url = "http://127.0.0.1:1/api/v1", api_key = "omx_live_p" }
    local r = c:prepare{ prompt = "a fox", n = 1 }
    assert.equal("POST", r.method)
    assert.equal("http://127.0.0.1:1/api/v1/images/generations", r.url)
    assert.equal("Bearer omx_live_p", r.headers.Authorization)
    assert.equal("application/json", r.headers["Content-Type"])
    assert.equal('{"model":"gemini-2.0-flash-preview-image-generation","prompt":"a fox","n":1}', r.body)
  end)
end)
