-- core.sha256 and core.hmac_sha256 (src/crypto.c, libcrypto): the
-- known-answer vectors of FIPS 180-2 / NIST and RFC 4231, parts hashed as
-- their concatenation, and misuse raising.
local core = require "omixa.core"

local function bytes(n, byte) return string.rep(string.char(byte), n) end

describe("core.sha256", function()
  it("matches the NIST vectors", function()
    assert.equal("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855", core.sha256(""))
    assert.equal("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad", core.sha256("abc"))
    assert.equal("248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1",
      core.sha256("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"))
    assert.equal("cf5b16a778af8380036ce59e7b0492370b249b11e8f07a51afac45037afee9d1",
      core.sha256("abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmn"
        .. "hijklmnoijklmnopjklmnopqklmnopqrlmnopqrsmnopqrstnopqrstu"))
    assert.equal("cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0",
      core.sha256(string.rep("a", 1000000)))
  end)

  it("hashes several parts as their concatenation, binary bytes included", function()
    local a, b, c = "ab\0c", "", string.rep("\255\0", 4097)
    assert.equal(core.sha256(a .. b .. c), core.sha256(a, b, c))
    assert.equal(core.sha256("abc"), core.sha256("a", "b", "c"))
    assert.equal(core.sha256("abc"), core.sha256("ab", core.buffer(), "c"))
    assert.equal(core.sha256(""), core.sha256(core.buffer()))
    -- boundaries matter only through the bytes: "ab".."c" == "a".."bc"
    assert.equal(core.sha256("ab", "c"), core.sha256("a", "bc"))
    assert.not_equal(core.sha256("abc"), core.sha256("abd"))
  end)

  it("answers 64 lower-case hex digits", function()
    for _, s in ipairs({ "", "x", string.rep("y", 65) }) do
      assert.matches("^[0-9a-f]+$", core.sha256(s))
      assert.equal(64, #core.sha256(s))
    end
  end)

  it("raises on anything but strings and buffers", function()
    assert.has_error(function() core.sha256() end)
    assert.has_error(function() core.sha256(nil) end)
    assert.has_error(function() core.sha256(12) end)
    assert.has_error(function() core.sha256("a", {}) end)
    assert.has_error(function() core.sha256("a", "b", nil) end)
  end)
end)

describe("core.hmac_sha256", function()
  -- RFC 4231, section 4 (test case 5 is truncated to 128 bits by the RFC).
  local cases = {
    { bytes(20, 0x0b), "Hi There",
      "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7" },
    { "Jefe", "what do ya want for nothing?",
      "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843" },
    { bytes(20, 0xaa), bytes(50, 0xdd),
      "773ea91e36800e46854db8ebd09181a72959098b3ef8c122d9635514ced565fe" },
    { "\1\2\3\4\5\6\7\8\9\10\11\12\13\14\15\16\17\18\19\20\21\22\23\24\25", bytes(50, 0xcd),
      "82558a389a443c0ea4cc819899f2083a85f0faa3e578f8077a2e3ff46729665b" },
    { bytes(131, 0xaa), "Test Using Larger Than Block-Size Key - Hash Key First",
      "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54" },
    { bytes(131, 0xaa), "This is a test using a larger than block-size key and a larger than block-size data."
      .. " The key needs to be hashed before being used by the HMAC algorithm.",
      "9b09ffa71b942fcb27635fbcd5b0e944bfdc63644f0713938a7f51535c3a35e2" },
  }

  it("matches the RFC 4231 vectors", function()
    for i, c in ipairs(cases) do
      assert.equal(c[3], core.hmac_sha256(c[1], c[2]), "RFC 4231 test case " .. (i < 5 and i or i + 1))
    end
    assert.equal("a3b6167473100ee06e0c796c2955552b",
      core.hmac_sha256(bytes(20, 0x0c), "Test With Truncation"):sub(1, 32), "RFC 4231 test case 5")
  end)

  it("takes an empty key and an empty message", function()
    assert.equal("b613679a0814d9ec772f95d778c35fc5ff1697c493715653c6c712144292c5ad", core.hmac_sha256("", ""))
  end)

  it("hashes several message parts as their concatenation", function()
    local body = string.rep("{\"prompt\":\"x\"}", 1000)
    assert.equal(core.hmac_sha256("k", "1700000000.POST./p." .. body),
      core.hmac_sha256("k", "1700000000", ".POST.", "/p.", body))
    assert.equal(core.hmac_sha256("k", "ab"), core.hmac_sha256("k", "a", core.buffer(), "b"))
    assert.not_equal(core.hmac_sha256("k", "ab"), core.hmac_sha256("K", "ab"))
  end)

  it("raises on a missing key or message, or one of the wrong type", function()
    assert.has_error(function() core.hmac_sha256() end)
    assert.has_error(function() core.hmac_sha256("k") end)
    assert.has_error(function() core.hmac_sha256(nil, "m") end)
    assert.has_error(function() core.hmac_sha256("k", 5) end)
    assert.has_error(function() core.hmac_sha256("k", "m", false) end)
  end)
end)
