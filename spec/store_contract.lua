-- spec/store_contract.lua — the contract every omixa store keeps (the
-- interface of lua/omixa/store/init.lua), as plain Lua with no busted, so it
-- runs in busted (spec/80-store_contract_spec.lua) and inside nginx alike.
--
--   local contract = require "store_contract"
--   for _, case in ipairs(contract.cases) do case.run(env) end  -- raises on a breach
--
-- env.make() -> s, peer   a fresh, empty store, and a function giving another
--                         handle on the same data (another client of it)
-- env.sleep(seconds)
-- env.too_big             a value length the store does not keep (nil: skip)

local contract = { cases = {} }

local function case(name, run) contract.cases[#contract.cases + 1] = { name = name, run = run } end

local function eq(want, got, what)
  if want ~= got then
    error(("%s: expected %s, got %s"):format(what, tostring(want), tostring(got)), 2)
  end
end

local function ok(v, err, what)
  if v == nil then error(("%s: the store failed: %s"):format(what, tostring(err)), 2) end
  return v
end

local function raises(f, pattern, what)
  local good, err = pcall(f)
  if good then error(what .. ": did not raise", 2) end
  if not tostring(err):find(pattern, 1, true) then error(what .. ": raised " .. tostring(err), 2) end
end

case("reserve, settle with the billed amount, release", function(env)
  local s, peer = env.make()
  local p = peer()
  eq(0, ok(s:spent()), "spent of a new store")
  local h = ok(s:reserve(40000, 100000, 60))
  eq(true, h ~= false, "a reserve that fits")
  eq(0, ok(s:spent()), "spent while held")
  eq(40000, ok(p:held()), "held, seen by the other client")
  eq(true, ok(p:settle(h, 39000)), "settle on another client")
  eq(39000, ok(s:spent()), "spent after settle")
  eq(39000, ok(p:spent()), "spent seen by the other client")
  eq(true, ok(s:settle(h, 39000)), "settling twice")
  eq(39000, ok(s:spent()), "a hold settled twice counts once")
  local h2 = ok(s:reserve(40000, 100000, 60))
  eq(true, ok(s:settle(h2, 0)), "release")
  eq(39000, ok(s:spent()), "spent after a release")
  -- released and settled holds no longer count: 39000 + 61000 fits exactly
  local h3 = ok(s:reserve(61000, 100000, 60))
  eq(true, h3 ~= false, "a reserve up to the limit exactly")
  ok(s:settle(h3, 61000))
  eq(100000, ok(s:spent()), "spent at the limit")
end)

case("a reserve that would pass the limit is refused with the total", function(env)
  local s, peer = env.make()
  local p = peer()
  local a = ok(s:reserve(40000, 100000, 60))
  local b = ok(p:reserve(40000, 100000, 60))
  eq(true, a ~= false and b ~= false and a ~= b, "two holds with two ids")
  local r, total = s:reserve(40000, 100000, 60)
  eq(false, r, "a third 40000 in 100000")
  eq(80000, total, "spent + held reported on refusal")
  ok(s:settle(a, 40000))
  eq(false, (p:reserve(40000, 100000, 60)), "still refused after settling at the estimate")
  ok(s:settle(b, 0))
  local c = ok(p:reserve(40000, 100000, 60))
  eq(true, c ~= false, "fits again after a release")
  ok(p:settle(c, 1))
  eq(40001, ok(s:spent()), "spent")
  eq(false, (s:reserve(1, 0, 60)), "a limit of 0 allows nothing")
  eq(false, (s:reserve(0, -1, 60)), "a limit below 0 fits nothing, not even 0")
  local e = ok(s:reserve(0, nil))
  eq(true, e ~= false, "no ttl: the store's own (store.HOLD_TTL)")
  ok(s:settle(e, 0))
  local d = ok(s:reserve(10 ^ 12, nil, 60))
  eq(true, d ~= false, "no limit: always held")
  ok(s:settle(d, 5))
  eq(40006, ok(s:spent()), "a hold without a limit still counts when settled")
end)

case("a hold whose owner never settles expires after its ttl", function(env)
  local s, peer = env.make()
  local p = peer()
  local dead = ok(s:reserve(60000, 100000, 0.5))
  eq(false, (p:reserve(60000, 100000, 60)), "refused while the hold lives")
  env.sleep(1.5)
  local h = ok(p:reserve(60000, 100000, 60))
  eq(true, h ~= false, "fits once the dead hold expired")
  eq(0, ok(s:spent()), "an expired hold is not spent")
  -- its owner comes back late: what the service billed is still counted, once
  ok(s:settle(dead, 30000))
  ok(s:settle(dead, 30000))
  eq(30000, ok(s:spent()), "a late settle of an expired hold counts once")
  ok(p:settle(h, 0))
end)

case("interleaved reserves never settle past the limit", function(env)
  local s, peer = env.make()
  local clients = { s, peer(), peer() }
  local limit, est, holds, billed = 1000000, 40000, {}, 0
  local seed = 7
  local function rnd(n) seed = (seed * 1103515245 + 12345) % 2147483648; return seed % n end
  for i = 1, 120 do
    local c = clients[i % 3 + 1]
    local h = ok(c:reserve(est, limit, 60))
    if h then holds[#holds + 1] = h end
    if #holds > 0 and rnd(3) > 0 then
      local amount = rnd(est + 1)
      ok(clients[rnd(3) + 1]:settle(table.remove(holds, rnd(#holds) + 1), amount))
      billed = billed + amount
    end
  end
  for _, h in ipairs(holds) do ok(s:settle(h, est)); billed = billed + est end
  eq(billed, ok(s:spent()), "spent is the sum billed")
  eq(true, billed <= limit, "billed " .. billed .. " within " .. limit)
  eq(true, billed > limit - 2 * est, "the budget was used (billed " .. billed .. ")")
end)

case("claim and unclaim", function(env)
  local s, peer = env.make()
  local p = peer()
  eq(true, ok(s:claim("k1", 60)), "the first claim sends")
  eq(false, ok(p:claim("k1", 60)), "a second claim waits")
  eq(true, ok(p:claim("k2", 60)), "another key is free")
  eq(true, ok(s:unclaim("k1")), "unclaim")
  eq(true, ok(p:claim("k1", 60)), "claimed again after unclaim")
  eq(true, ok(s:claim("k3", 0.5)), "a short claim")
  env.sleep(1.5)
  eq(true, ok(p:claim("k3", 60)), "a claim lapses after its ttl")
end)

case("cache get and set", function(env)
  local s, peer = env.make()
  local p = peer()
  local miss, err = s:get("r1")
  eq(nil, miss, "a miss")
  eq(nil, err, "a miss is not a failure")
  local v = "omixa-result\0" .. string.rep("\255\0abc", 20000)
  eq(true, ok(s:set("r1", v, 60)), "set")
  eq(v, ok(p:get("r1")), "the same bytes from another client")
  eq(true, ok(s:set("r2", "short", 0.5)), "set with a short ttl")
  eq(true, ok(s:set("r4", "kept", nil)), "set without a ttl")
  env.sleep(1.5)
  eq(nil, (p:get("r2")), "a value gone after its ttl")
  eq("kept", ok(p:get("r4")), "a value without a ttl stays")
  if env.too_big then
    local kept, why = s:set("r3", string.rep("x", env.too_big), 60)
    eq(false, kept, "a value above the size limit")
    eq("string", type(why), "why it was not kept")
    eq(nil, (p:get("r3")), "not kept")
  end
end)

case("misuse raises before the store is touched", function(env)
  local s = env.make()
  raises(function() s:reserve(-1, 10, 60) end, "amount must be an integer", "a negative amount")
  raises(function() s:reserve(1.5, 10, 60) end, "amount must be an integer", "a fraction of a micro")
  raises(function() s:reserve(1, "10", 60) end, "limit must be an integer", "a text limit")
  raises(function() s:reserve(1, 10, 0) end, "ttl must be a positive", "ttl 0")
  raises(function() s:settle("1", -5) end, "billed must be an integer", "a negative billed")
  raises(function() s:claim("", 60) end, "key must be a non-empty string", "an empty key")
  raises(function() s:set("k", 5, 60) end, "value must be a string", "a number value")
end)

return contract
