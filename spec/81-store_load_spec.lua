-- The load test of issue 17: one budget in Redis shared by 4 nginx workers
-- (examples/openresty, worker_processes 4, OMIXA_REDIS) and 2 plain-Lua
-- processes (spec/store_load_client.lua, the non-blocking API), a budget that
-- fits exactly 25 images, 200 requests at once against the stand-in, which
-- bills each image its catalog price:
--   the stand-in billed at most 25 (here: exactly 25, every request costs its
--   estimate), every other caller was refused for the budget, and the spent
--   total in Redis is the stand-in's total to the micro-dollar;
--   50 identical requests across workers are sent once (omixa_store.share:
--   the others wait for its result in Redis);
--   redis-server killed mid-run: only store errors, nothing sent without a
--   hold, nothing stuck.
-- Figures (store call latency p50/p99 from the Lua processes) are printed.
--
-- nginx embeds LuaJIT, so this runs in the LuaJIT pass only.
local helpers = require "helpers"
local rh = require "redis_helper"
local nh = require "nginx_helper"
local omixa = require "omixa"
local budget = require "omixa.budget"

local q = helpers.quote
local root = helpers.root
local sleep = require("omixa.core").sleep
local FITS, NGINX_N, LUA_N = 25, 150, 25 -- 150 through nginx + 2 x 25 from Lua = 200

local function cjson51()
  local _, _, out = helpers.run("ls -d /usr/lib/*-linux-*/lua/5.1 /usr/local/lib/lua/5.1 /usr/lib/lua/5.1 2>/dev/null")
  local dirs = {}
  for d in out:gmatch("[^\n]+") do
    if helpers.read_file(d .. "/cjson.so") then dirs[#dirs + 1] = d .. "/?.so" end
  end
  return table.concat(dirs, ";")
end

local function percentile(list, p)
  table.sort(list)
  if #list == 0 then return 0 end
  return list[math.max(1, math.ceil(#list * p))]
end

-- examples/openresty with worker_processes 4, the environment ENV (words).
local function start_nginx(env)
  local template = assert(helpers.read_file(root .. "/examples/openresty/nginx.conf"))
  template = template:gsub("worker_processes 1;", "worker_processes 4;")
  return nh.start(function(port)
    return (template:gsub("@(%u[%u_]*)@", {
      PORT = tostring(port),
      LUA_PATH = root .. "/examples/openresty/?.lua;" .. root .. "/lua/?.lua;" .. root .. "/lua/?/init.lua;"
        .. "/usr/share/lua/5.1/?.lua",
      LUA_CPATH = root .. "/build/luajit/?.so;" .. cjson51(),
      RESOLVER = "127.0.0.1",
    }))
  end, env)
end

-- N identical requests through nginx at BASE at once: their status codes.
local function identical(base, n)
  local words = { "curl -sS --parallel --parallel-immediate --parallel-max", tostring(n), "-w '%{http_code}\\n'" }
  for _ = 1, n do words[#words + 1] = "-o /dev/null " .. q(base .. "/image?prompt=the%20same%20fox") end
  local ok, _, out, err = helpers.run(table.concat(words, " "))
  assert(ok, err)
  local codes = {}
  for code in out:gmatch("%d+") do codes[#codes + 1] = code end
  return codes
end

describe("one Redis budget for 4 nginx workers and 2 Lua processes", function()
  if type(jit) ~= "table" then
    it("runs in the LuaJIT pass (nginx's Lua module embeds LuaJIT)", function()
      pending("luajit /usr/bin/busted spec/81-store_load_spec.lua")
    end)
    return
  end

  local srv, redis_srv, ngx_srv, dir, base
  local price = assert(omixa.models[omixa.models.default].price)
  local est = assert(budget.parse(price))
  local limit = FITS * est

  setup(function()
    local built, code, bout, berr = helpers.run("cd " .. q(root) .. " && make -s LUA=luajit core")
    assert(built, "make LUA=luajit core failed (" .. code .. "): " .. bout .. berr)
    srv = helpers.serve()
    redis_srv = rh.start()
    ngx_srv = start_nginx("OMIXA_BASE_URL=" .. q(srv.url) .. " OMIXA_REDIS=127.0.0.1:" .. redis_srv.port
      .. " OMIXA_MAX_SPEND=" .. budget.format(limit))
    base, dir = ngx_srv.base, ngx_srv.dir
  end)

  teardown(function()
    if ngx_srv then ngx_srv:stop() end
    if redis_srv then redis_srv:stop() end
    if srv then srv:stop() end
  end)

  before_each(function()
    srv:reset()
    if redis_srv.pid then redis_srv:connect():flushall() end
  end)

  -- Shell words: N requests through nginx, AT_ONCE at a time (all by
  -- default), one line "<status>" for each.
  local function nginx_words(n, prompt, at_once)
    local words = { "curl -sS --parallel --parallel-immediate --parallel-max", tostring(at_once or n),
                    "-w '%{http_code}\\n'" }
    for i = 1, n do
      words[#words + 1] = "-o /dev/null " .. q(base .. "/image?prompt=" .. (prompt or ("fox%20" .. i)))
    end
    return table.concat(words, " ")
  end

  local function lua_words(n)
    return helpers.lua_script(root .. "/spec/store_load_client.lua") .. " " .. redis_srv.port .. " "
      .. q(srv.url) .. " " .. string.format("%d", limit) .. " " .. n .. " omixa:"
  end

  it("200 requests at once on a budget of 25 images: 25 billed, 175 refused, spent = billed", function()
    local cmd = "(" .. nginx_words(NGINX_N) .. ") & " .. lua_words(LUA_N) .. " & " .. lua_words(LUA_N) .. " & wait"
    local t0 = require("omixa.core").now()
    local ok, _, out, err = helpers.run(cmd)
    local wall = require("omixa.core").now() - t0
    assert(ok, err)
    local count = { ["200"] = 0, ["402"] = 0, ok = 0, budget = 0 }
    local other, lat, spent_lua, billed_lua = {}, {}, {}, 0
    for line in out:gmatch("[^\n]+") do
      local word, rest = line:match("^(%S+)%s*(.*)$")
      if count[word] then
        count[word] = count[word] + 1
        if word == "ok" then billed_lua = billed_lua + tonumber(rest) end
      elseif word == "lat" then
        local m, s = rest:match("^(%S+) (%S+)$")
        lat[m] = lat[m] or {}
        table.insert(lat[m], tonumber(s))
      elseif word == "spent" then spent_lua[#spent_lua + 1] = tonumber(rest)
      elseif word ~= "mode" then other[#other + 1] = line end
    end
    assert.same({}, other)
    local sent = #srv:requests()
    local refused = count["402"] + count.budget
    print(("\n  load: %d requests (%d nginx, %d Lua) in %.2f s: %d sent and billed, %d refused (budget), mode %s")
      :format(NGINX_N + 2 * LUA_N, NGINX_N, 2 * LUA_N, wall, sent, refused, out:match("mode (%S+)")))
    for m, list in pairs(lat) do
      print(("  store.redis %s: %d calls, p50 %.2f ms, p99 %.2f ms"):format(m, #list,
        percentile(list, 0.5) * 1000, percentile(list, 0.99) * 1000))
    end
    assert.equal(NGINX_N + 2 * LUA_N, count["200"] + count.ok + refused)
    assert.equal(FITS, sent)
    assert.equal(FITS, count["200"] + count.ok)
    local spent = tonumber((select(3, helpers.run("curl -sS " .. q(base .. "/spent"))):match("%d+")))
    local billing = srv:billing()
    assert.equal(FITS, billing.images)
    assert.equal(budget.parse(billing.billed_amount), spent) -- the stand-in's total to the micro-dollar
    for _, s in ipairs(spent_lua) do assert.truthy(s <= spent) end
    assert.truthy(billed_lua <= spent)
  end)

  it("50 identical requests across workers are sent once", function()
    srv:faults{ { delay = 1 } }
    local t0 = require("omixa.core").now()
    local codes = identical(base, 50)
    local wall = require("omixa.core").now() - t0
    assert.equal(50, #codes)
    for _, code in ipairs(codes) do assert.equal("200", code) end
    assert.equal(1, #srv:requests())
    assert.equal(1, srv:billing().images) -- what the stand-in billed
    local spent = tonumber((select(3, helpers.run("curl -sS " .. q(base .. "/spent"))):match("%d+")))
    assert.equal(est, spent)
    print(("\n  in flight: 50 identical requests over 4 workers in %.2f s: %d sent, %d billed image")
      :format(wall, #srv:requests(), srv:billing().images))
  end)

  it("redis-server killed mid-run: only store errors, nothing sent without a hold, nothing stuck", function()
    local faults = {}
    for i = 1, 60 do faults[i] = { delay = 0.3 } end
    srv:faults(faults)
    local out_file = dir .. "/mid.out"
    -- 4 at a time at a 0.3 s service: Redis goes while they still come
    helpers.run("(" .. nginx_words(60, nil, 4) .. " > " .. q(out_file) .. " 2>&1; echo done >> " .. q(out_file) .. ") &")
    sleep(0.3)
    redis_srv:stop()
    local out
    for _ = 1, 600 do
      out = helpers.read_file(out_file) or ""
      if out:find("done") then break end
      sleep(0.1)
    end
    assert.matches("done", out, "the requests did not all finish: " .. out)
    local codes = {}
    for code in out:gmatch("(%d%d%d)\n") do codes[code] = (codes[code] or 0) + 1 end
    codes["200"], codes["402"], codes["503"] = codes["200"] or 0, codes["402"] or 0, codes["503"] or 0
    assert.equal(60, codes["200"] + codes["402"] + codes["503"])
    local sent = #srv:requests()
    assert.truthy(sent <= FITS)
    assert.truthy(codes["503"] > 0, "no store error after redis-server was killed")
    print(("\n  redis killed mid-run: %d answered, %d refused for the budget, %d store errors, %d sent")
      :format(codes["200"], codes["402"], codes["503"], sent))
    -- with Redis down nothing more is sent, and the answer says why
    local _, _, body = helpers.run("curl -sS -w '\\n%{http_code}' " .. q(base .. "/image?prompt=after"))
    assert.matches("store cannot be reached", body)
    assert.matches("\n503$", body)
    assert.equal(sent, #srv:requests())
    redis_srv:restart()
  end)
end)

describe("50 identical requests across 4 nginx workers sharing a lua_shared_dict", function()
  if type(jit) ~= "table" then
    it("runs in the LuaJIT pass (nginx's Lua module embeds LuaJIT)", function()
      pending("luajit /usr/bin/busted spec/81-store_load_spec.lua")
    end)
    return
  end
  local srv, ngx_srv
  setup(function()
    srv = helpers.serve()
    ngx_srv = start_nginx("OMIXA_BASE_URL=" .. q(srv.url))
  end)
  teardown(function()
    if ngx_srv then ngx_srv:stop() end
    if srv then srv:stop() end
  end)

  it("are sent once; the others get its result from the shared dict", function()
    srv:faults{ { delay = 1 } }
    local codes = identical(ngx_srv.base, 50)
    assert.equal(50, #codes)
    for _, code in ipairs(codes) do assert.equal("200", code) end
    assert.equal(1, #srv:requests())
    assert.equal(1, srv:billing().images)
    -- and later: a hit in the shared dict, nothing sent
    assert.same({ "200" }, identical(ngx_srv.base, 1))
    assert.equal(1, #srv:requests())
  end)
end)
