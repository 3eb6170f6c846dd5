-- The client with a shared store (API.md "Sharing across workers and hosts"):
-- omixa.new{ store = omixa.store.redis(conn), max_spend = ... } keeps its
-- budget in Redis, so two clients (two workers, two hosts) share one: what
-- one spends the other sees and is refused by; a store that cannot be
-- reached is kind = "store" with nothing sent; a settle the store missed is
-- sent before anything more is reserved.
local helpers = require "helpers"
local rh = require "redis_helper"
local omixa = require "omixa"

describe("a client with store = omixa.store.redis(...)", function()
  local srv, redis_srv
  local price = omixa.models[omixa.models.default].price -- what the stand-in bills an image

  setup(function() srv = helpers.serve() end)
  teardown(function() if srv then srv:stop() end end)
  before_each(function()
    srv:reset()
    redis_srv = rh.start()
  end)
  after_each(function() if redis_srv then redis_srv:stop() end end)

  local function client(s, max_spend)
    return omixa.new{ base_url = srv.url, api_key = "k", store = s, max_spend = max_spend, max_retries = 0 }
  end

  it("shares one budget between clients: 2 images fit, the third is refused by either", function()
    local a = client(omixa.store.redis(redis_srv:connect()), 2 * tonumber(price))
    local b = client(omixa.store.redis(redis_srv:connect()), 2 * tonumber(price))
    assert(a:generate{ prompt = "one" })
    assert(b:generate{ prompt = "two" })
    assert.equal(price * 2, tonumber(a:spent()))
    assert.equal(a:spent(), b:spent())
    for _, c in ipairs{ a, b } do
      local images, err = c:generate{ prompt = "three" }
      assert.is_nil(images)
      assert.equal("budget", err.kind)
    end
    assert.equal(2, #srv:requests())
  end)

  it("fails closed: Redis unreachable is kind = \"store\", nothing sent", function()
    local c = client(omixa.store.redis(redis_srv:connect()), "1.00")
    redis_srv:stop()
    local images, err = c:generate{ prompt = "x" }
    assert.is_nil(images)
    assert.equal("store", err.kind)
    assert.is_false(err.maybe_billed)
    assert.same({}, srv:requests())
    local spent, serr = c:spent()
    assert.is_nil(spent)
    assert.equal("store", serr.kind)
  end)

  it("sends a settle the store missed before it reserves anything more (Redis with AOF)", function()
    redis_srv:stop()
    redis_srv = rh.start{ persist = true }
    local conn = redis_srv:connect()
    local s = omixa.store.redis(function() return conn end)
    local c = client(s, "1.00")
    local job = c:start{ prompt = "x" }
    redis_srv:restart() -- the connection dies while the request is in flight
    assert(job:wait())
    conn = redis_srv:connect()
    assert(c:generate{ prompt = "y" }) -- the missed settle goes first
    assert.equal(2 * tonumber(price), tonumber(c:spent()))
  end)

  it("refuses a store without the interface's methods, before anything is sent", function()
    local ok, err = pcall(function() return omixa.new{ api_key = "k", store = { reserve = function() end } } end)
    assert.is_false(ok)
    assert.matches("option 'store' must be an omixa.store", err)
  end)
end)

-- cache = true: results kept in the store (API.md "Sharing across workers
-- and hosts"), read by every client that shares it.
describe("a client with cache = true", function()
  local srv
  setup(function() srv = helpers.serve() end)
  teardown(function() if srv then srv:stop() end end)
  before_each(function() srv:reset() end)

  local function client(s, extra)
    local opts = { base_url = srv.url, api_key = "k", store = s, cache = true, max_spend = "1.00", max_retries = 0 }
    for k, v in pairs(extra or {}) do opts[k] = v end
    return omixa.new(opts)
  end

  it("keeps a success in the store: another client's identical request is a hit, nothing sent or billed", function()
    local s = omixa.store.memory()
    local a, b = client(s), client(s)
    local images, info = assert(a:generate{ prompt = "a cached fox" })
    assert.is_false(info.cached)
    local spent = b:spent()
    local again, hit = assert(b:generate{ prompt = "a cached fox" })
    assert.same(images, again)
    assert.is_true(hit.cached)
    assert.equal(0, hit.attempts)
    assert.is_nil(hit.billed_amount)
    assert.equal(info.request_id, hit.request_id)
    assert.equal(spent, b:spent())
    assert.equal(1, #srv:requests())
    assert.equal(1, srv:billing().images)
  end)

  it("a result larger than cache_max_bytes is not kept (sent again), and says why in the debug log", function()
    local s, lines = omixa.store.memory(), {}
    local a = client(s, { cache_max_bytes = 100, debug = function(l) lines[#lines + 1] = l end })
    assert(a:generate{ prompt = "too big" })
    assert(a:generate{ prompt = "too big" })
    assert.equal(2, #srv:requests())
    assert.matches("larger than cache_max_bytes %(100%)", table.concat(lines, "\n"))
  end)

  it("a value the store refuses (set -> false, why) is not an error", function()
    local s = omixa.store.memory{ max_bytes = 10 }
    local a = client(s)
    assert(a:generate{ prompt = "refused" })
    assert(a:generate{ prompt = "refused" })
    assert.equal(2, #srv:requests())
  end)

  it("works with a Redis store", function()
    local redis_srv = rh.start()
    local ok, err = pcall(function()
      local a = client(omixa.store.redis(redis_srv:connect()))
      local b = client(omixa.store.redis(redis_srv:connect()))
      local images = assert(a:generate{ prompt = "redis fox" })
      local again, hit = assert(b:generate{ prompt = "redis fox" })
      assert.same(images, again)
      assert.is_true(hit.cached)
      assert.equal(1, #srv:requests())
    end)
    redis_srv:stop()
    assert(ok, err)
  end)
end)

-- In flight across processes: two clients (two engines, as two processes
-- would have) share one store; the second waits, polled, for the first's
-- result in the store instead of sending.
describe("identical requests in flight on two clients of one store (cache = true)", function()
  local srv
  local price = omixa.models[omixa.models.default].price
  setup(function() srv = helpers.serve() end)
  teardown(function() if srv then srv:stop() end end)
  before_each(function() srv:reset() end)

  local function client(s, extra)
    local opts = { base_url = srv.url, api_key = "k", store = s, cache = true, max_retries = 0 }
    for k, v in pairs(extra or {}) do opts[k] = v end
    return omixa.new(opts)
  end

  local function drive(clients, jobs)
    local left = true
    while left do
      left = false
      for _, c in ipairs(clients) do c:poll() end
      for _, j in ipairs(jobs) do if not j:done() then left = true end end
      require("omixa.core").sleep(0.01)
    end
  end

  -- two clients of one memory store, each starting PROMPT, the stand-in's first answer FAULT
  local function twins(fault, prompt)
    srv:faults{ fault }
    local s = omixa.store.memory()
    local a, b = client(s), client(s)
    return a, b, a:start{ prompt = prompt }, b:start{ prompt = prompt }
  end

  it("sends one; the other gets it through the store's cache, nothing billed", function()
    local a, b, ja, jb = twins({ delay = 0.5 }, "one fox, two workers")
    local jb2 = b:start{ prompt = "one fox, two workers" } -- waits on b's waiter
    drive({ a, b }, { ja, jb, jb2 })
    local ia, infoa = assert(ja:result())
    local ib, infob = assert(jb:result())
    local ib2, infob2 = assert(jb2:result())
    assert.same(ia, ib)
    assert.same(ia, ib2)
    assert.is_false(infoa.cached)
    assert.is_true(infob.cached)
    assert.is_true(infob2.cached)
    assert.equal(0, infob.attempts)
    assert.equal(1, #srv:requests())
    assert.equal(1, srv:billing().images)
    assert.equal(price, b:spent()) -- one image, in the shared total
  end)

  it("when the one sent fails, the waiter sends its own (its claim ended)", function()
    local a, b, ja, jb = twins({ status = 400, delay = 0.3 }, "fails once")
    drive({ a, b }, { ja, jb })
    assert.is_nil((ja:result()))
    local ib, infob = jb:result()
    assert.is_table(ib)
    assert.is_false(infob.cached)
    assert.equal(2, #srv:requests())
  end)

  it("a job waiting for another process: progress says following, close ends it as cancelled, unsent", function()
    local _, b, ja, jb = twins({ delay = 1 }, "closed while waiting")
    b:poll()
    assert.equal("following", jb:progress().phase)
    assert.equal(1, b:poll())
    b:close()
    assert.is_true(jb:done())
    local images, err = jb:result()
    assert.is_nil(images)
    assert.equal("cancelled", err.kind)
    assert(ja:wait())
    assert.equal(1, #srv:requests())
  end)

  it("waits at most the call's timeout, then ends unsent (kind = timeout)", function()
    local s = omixa.store.memory()
    local b = client(s, { timeout = 0.3 })
    -- a claim held by a process that never finishes
    local key
    local orig = s.claim
    s.claim = function(self, k, ttl) key = key or k; if k == key then return false end return orig(self, k, ttl) end
    local jb = b:start{ prompt = "never comes" }
    drive({ b }, { jb })
    local images, err = jb:result()
    assert.is_nil(images)
    assert.equal("timeout", err.kind)
    assert.matches("in flight elsewhere", err.message)
    assert.equal(0, #srv:requests())
  end)
end)
