-- omixa.budget: amounts as integer micro-dollars (never floats), the
-- estimate from the catalog, and the refusal before anything is sent. The
-- same answers on Lua 5.1-5.4 and LuaJIT, doubles included.
local budget = require "omixa.budget"
local models = require "omixa.models"

local GEMINI = models["gemini-2.0-flash-preview-image-generation"] -- 0.040000
local GPT = models["gpt-image-1.5"]                                -- 0.033000
local FAST = models["imagen-4.0-fast-generate-001"]                 -- no documented price

describe("budget.parse", function()
  it("reads decimal strings into exact micro-dollars", function()
    local cases = {
      ["0.039000"] = 39000, ["12"] = 12000000, ["0.5"] = 500000, ["0"] = 0, ["0.000001"] = 1,
      ["1.25"] = 1250000, [".5"] = 500000, ["7."] = 7000000, ["  3.1 "] = 3100000,
      ["0.0390000"] = 39000, ["000012.000000"] = 12000000,
      ["9007199254.740992"] = 9007199254740992, ["123456789.123456"] = 123456789123456,
    }
    for s, want in pairs(cases) do
      assert.equal(want, budget.parse(s), s)
    end
  end)

  it("converts numbers through their decimal text, exactly", function()
    local cases = { { 0.1, 100000 }, { 1.25, 1250000 }, { 12, 12000000 }, { 0.039, 39000 },
                    { 0.3, 300000 }, { 0.7, 700000 }, { 1e-5, 10 }, { 1e-6, 1 }, { 2.5e3, 2500000000 },
                    { 0, 0 }, { -0.0, 0 }, { 100.000001, 100000001 }, { 1e9, 1000000000000000 } }
    for _, c in ipairs(cases) do
      assert.equal(c[2], budget.parse(c[1]), tostring(c[1]))
    end
    -- 0.1 + 0.2 is 0.30000000000000004 as a double: more than 6 decimals
    assert.is_nil(budget.parse(0.1 + 0.2))
  end)

  it("refuses more than 6 decimals, negatives, NaN, infinities and junk", function()
    for _, v in ipairs({ "0.0390001", "1e3", "-1", "-0.5", " - 1", "abc", "", ".", "1.2.3", "0x10", "1,5",
                         "$1", "1 000", 1e-7, 0.0000015, -1, -0.001, 0 / 0, math.huge, -math.huge }) do
      local m, msg = budget.parse(v)
      assert.is_nil(m, tostring(v))
      assert.is_string(msg)
    end
    assert.matches("more than 6 decimals", select(2, budget.parse("0.0390001")))
    assert.matches("negative", select(2, budget.parse("-1")))
    assert.matches("negative", select(2, budget.parse(-2)))
    assert.matches("NaN", select(2, budget.parse(0 / 0)))
    assert.matches("string or a number", select(2, budget.parse({})))
    assert.matches("string or a number", select(2, budget.parse(nil)))
  end)

  it("refuses what doubles cannot hold exactly: above 2^53 micro-dollars", function()
    assert.equal(budget.MAX, budget.parse("9007199254.740992"))
    assert.equal(2 ^ 53, budget.MAX)
    for _, v in ipairs({ "9007199254.740993", "9007199255", "90071992547", "1" .. string.rep("0", 40), 1e10, 2 ^ 63 }) do
      local m, msg = budget.parse(v)
      assert.is_nil(m, tostring(v))
      assert.matches("largest amount", msg)
    end
  end)
end)

describe("budget.format", function()
  it("writes six decimals", function()
    assert.equal("0.039000", budget.format(39000))
    assert.equal("0.000000", budget.format(0))
    assert.equal("0.000001", budget.format(1))
    assert.equal("12.000000", budget.format(12000000))
    assert.equal("9007199254.740992", budget.format(budget.MAX))
    assert.equal("9007199253.999999", budget.format(9007199253999999))
    assert.equal("123456789.123456", budget.format(budget.parse("123456789.123456")))
  end)

  it("round-trips with parse", function()
    for _, s in ipairs({ "0.039000", "0.033000", "1.000000", "4503599627.370497", "9007199254.740991" }) do
      assert.equal(s, budget.format(budget.parse(s)))
    end
  end)

  it("raises on what is not an amount", function()
    for _, v in ipairs({ -1, 0.5, 2 ^ 53 + 2, "1", false }) do
      assert.has_error(function() budget.format(v) end)
    end
  end)
end)

describe("a budget", function()
  it("sums billed amounts exactly where floats would drift", function()
    local b = budget.new("1")
    for _ = 1, 10 do assert.is_true(b:add("0.1")) end
    assert.equal("1.000000", b:spent())
    local f = 0
    for _ = 1, 10 do f = f + 0.1 end
    assert.not_equal(1, f) -- why floats are not used
    b:add("0.039000"); b:add(0.033)
    assert.equal("1.072000", b:spent())
    assert.equal("1.000000", b:limit())
  end)

  it("refuses a bad billed amount without counting it", function()
    local b = budget.new(5)
    local ok, msg = b:add("0.0000001")
    assert.is_nil(ok)
    assert.matches("6 decimals", msg)
    assert.is_nil((b:add("free")))
    assert.equal("0.000000", b:spent())
  end)

  it("estimates catalog price times n", function()
    local b = budget.new("10")
    assert.same({ 40000, true }, { b:estimate(GEMINI) })
    assert.same({ 160000, true }, { b:estimate(GEMINI, 4) })
    assert.same({ 330000, true }, { b:estimate(GPT, 10) })
    assert.same({ 0, false }, { b:estimate(FAST, 3) })
    assert.same({ 0, false }, { b:estimate(nil, 1) })
    assert.has_error(function() b:estimate(GEMINI, 0) end)
    assert.has_error(function() b:estimate(GEMINI, 1.5) end)
  end)

  it("refuses when spent plus the estimate would pass the limit", function()
    local b = budget.new("0.100000")
    local est = b:estimate(GEMINI, 2) -- 0.080000
    assert.is_true(b:allows(est))
    b:add("0.020000")
    assert.is_true(b:allows(est)) -- 0.100000 exactly: not past the limit
    b:add("0.000001")
    local ok, msg = b:allows(est)
    assert.is_nil(ok)
    assert.equal("this request is estimated at 0.080000 USD and 0.020001 USD of max_spend 0.100000 USD is spent or in flight",
      msg)
    assert.is_true(b:allows(b:estimate(GEMINI, 1)))
  end)

  it("counts a model without a price as costing something", function()
    local b = budget.new("0.05")
    assert.is_true(b:allows(b:estimate(FAST, 1)))
    b:add("0.050000")
    local ok, msg = b:allows(b:estimate(FAST, 1))
    assert.is_nil(ok)
    assert.matches("used up", msg)
    assert.matches("no catalog price", msg)
    local zero = budget.new(0) -- spend nothing at all (cache hits only)
    assert.is_nil((zero:allows(0)))
    assert.is_nil((zero:allows(40000)))
  end)

  it("holds estimates in flight so concurrent requests cannot all pass one check", function()
    local b = budget.new("0.100000")
    local h1 = assert(b:hold(40000))
    local h2 = assert(b:hold(40000))
    assert.equal("0.080000", b:held())
    local h3, msg = b:hold(40000)
    assert.is_nil(h3)
    assert.matches("spent or in flight", msg)
    h1:release()                 -- failed: nothing billed
    h1:release()                 -- idempotent
    assert.equal("0.040000", b:held())
    assert.is_true(h2:capture("0.039000")) -- success: the billed amount counts
    assert.is_true(h2:capture("5"))        -- once only
    assert.equal("0.039000", b:spent())
    assert.equal("0.000000", b:held())
    local h4 = assert(b:hold(40000))
    assert.is_true(h4:capture(nil))       -- no billed_amount sent: the estimate counts
    assert.equal("0.079000", b:spent())
    local h5 = assert(b:hold(20000))
    local ok, err = h5:capture("lots")
    assert.is_nil(ok)
    assert.matches("counted the estimate", err)
    assert.equal("0.099000", b:spent())
  end)

  it("saturates at the bound instead of losing precision", function()
    local b = budget.new("9007199254.740992")
    b:add("9007199254.740990")
    b:add("9007199254.740990")
    assert.equal("9007199254.740992", b:spent())
    assert.is_nil((b:allows(1)))
  end)

  it("raises on a bad limit, naming max_spend", function()
    for _, v in ipairs({ "-1", "1.0000001", "ten", {}, 0 / 0 }) do
      local ok, err = pcall(budget.new, v)
      assert.is_false(ok)
      assert.matches("omixa: max_spend: ", err)
    end
    assert.matches("0.000000 of 2.500000 USD", tostring(budget.new(2.5)))
  end)
end)
