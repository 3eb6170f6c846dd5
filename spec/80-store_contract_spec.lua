-- One contract (spec/store_contract.lua), run against every store:
-- store.memory; store.redis over redis-lua against a real redis-server
-- (spec/redis_helper.lua: a free loopback port, no persistence); and, inside
-- a real nginx with worker_processes 4 (LuaJIT pass only, as nginx embeds
-- LuaJIT), store.shared_dict and store.redis over lua-resty-redis. Then what
-- only several processes show: concurrent reserves from 4 processes (and 4
-- nginx workers) on a budget that fits exactly 25 holds take exactly 25; an
-- unreachable Redis answers nil, err from every method; a Redis that crashes
-- and restarts with its append-only file keeps every settled micro-dollar
-- and every live hold.
local helpers = require "helpers"
local rh = require "redis_helper"
local nh = require "nginx_helper"
local contract = require "store_contract"
local store = require "omixa.store"

local q = helpers.quote
local sleep = require("omixa.core").sleep

local EST, FITS = 40000, 25 -- an image at 0.04 USD; the budget fits 25 of them

-- Each contract case as one `it` over ENV.
local function contract_its(env)
  for _, case in ipairs(contract.cases) do
    it(case.name, function() case.run(env) end)
  end
end

describe("store.memory keeps the contract", function()
  local t = 0
  contract_its{
    sleep = function(s) t = t + s end,
    too_big = 200001,
    make = function()
      local s = store.memory{ now = function() return t end, max_bytes = 200000 }
      return s, function() return s end
    end,
  }
end)

describe("store.redis over redis-lua keeps the contract", function()
  local srv, n = nil, 0
  setup(function() srv = rh.start() end)
  teardown(function() if srv then srv:stop() end end)
  contract_its{
    sleep = sleep,
    too_big = 200001,
    make = function()
      n = n + 1
      local prefix = "contract" .. n .. ":"
      local function one() return store.redis(srv:connect(), { prefix = prefix, max_bytes = 200000 }) end
      return one(), one
    end,
  }
end)

describe("store.redis", function()
  local srv
  before_each(function() srv = rh.start() end)
  after_each(function() if srv then srv:stop() end end)

  it("names each script by its SHA-1 for EVALSHA", function()
    local redis = require "omixa.store.redis"
    for name, src in pairs(redis.SCRIPTS) do
      local ok, _, out = helpers.run("sha1sum", src)
      assert(ok)
      assert.equal(out:match("^(%x+)"), redis.SHA[name], name)
    end
  end)

  it("sends each script whole once (NOSCRIPT), then by EVALSHA only", function()
    local s = store.redis(srv:connect())
    for _ = 1, 10 do
      local h = assert(s:reserve(EST, 10 * EST, 60))
      assert(s:settle(h, EST))
    end
    assert.equal(10 * EST, s:spent())
    local info = srv:connect():info("commandstats")
    local function calls(cmd)
      local flat = type(info) == "table" and (info.commandstats or info) or {}
      local v = flat["cmdstat_" .. cmd]
      if type(v) == "table" then return tonumber(v.calls) end
      return tonumber(tostring(v):match("calls=(%d+)")) or 0
    end
    assert.equal(3, calls("eval"))       -- reserve, settle, spent: once each
    assert.equal(21, calls("evalsha"))   -- every step, the 3 NOSCRIPT answers included
  end)

  it("lets 4 processes take exactly the 25 holds a budget fits, never more", function()
    local code = ([[
      package.path = package.path .. ";/usr/share/lua/5.3/?.lua;%s/spec/?.lua"
      local store = require "omixa.store"
      local s = store.redis(require("redis").connect("127.0.0.1", %d), { prefix = "race:" })
      local took = 0
      for _ = 1, 50 do
        local h, e = s:reserve(%d, %d, 60)
        assert(h ~= nil, e)
        if h then took = took + 1; assert(s:settle(h, %d)) end
      end
      print(took)
    ]]):format(helpers.root, srv.port, EST, FITS * EST, EST)
    local cmd = {}
    for i = 1, 4 do cmd[i] = helpers.lua_cmd(code) .. " &" end
    local ok, _, out, err = helpers.run(table.concat(cmd, " ") .. " wait")
    assert(ok, err)
    local total, procs = 0, 0
    for n in out:gmatch("%d+") do total, procs = total + tonumber(n), procs + 1 end
    assert.equal(4, procs, out .. err)
    assert.equal(FITS, total)
    assert.equal(FITS * EST, store.redis(srv:connect(), { prefix = "race:" }):spent())
  end)

  it("answers nil, err from every method when Redis cannot be reached", function()
    local s = store.redis(srv:connect())
    local h = assert(s:reserve(EST, nil, 60))
    srv:stop()
    local calls = {
      function() return s:reserve(EST, nil, 60) end, function() return s:settle(h, EST) end,
      function() return s:spent() end, function() return s:claim("k", 60) end,
      function() return s:unclaim("k") end, function() return s:get("k") end,
      function() return s:set("k", "v", 60) end,
    }
    for i, f in ipairs(calls) do
      local v, err = f()
      assert.is_nil(v, "method " .. i)
      assert.matches("^redis: ", err)
    end
    -- a function that connects for each step, as OpenResty does
    local s2 = store.redis(function() return pcall(srv.connect, srv) and nil, "connection refused" end)
    local v, err = s2:reserve(EST, nil, 60)
    assert.is_nil(v)
    assert.equal("redis: cannot connect: connection refused", err)
  end)

  it("keeps every settled micro-dollar and live hold across a crash (AOF, fsync always)", function()
    srv:stop()
    srv = rh.start{ persist = true }
    local s = store.redis(srv:connect())
    for _ = 1, 3 do assert(s:settle(assert(s:reserve(EST, FITS * EST, 600)), EST - 1)) end
    local live = assert(s:reserve(EST, FITS * EST, 600))
    srv:stop() -- kill -9
    assert.is_nil((s:reserve(EST, FITS * EST, 600)), "nothing reserved while Redis is down")
    srv:restart()
    local fresh = function() return srv:connect() end
    local s2 = store.redis(fresh)
    assert.equal(3 * (EST - 1), s2:spent())
    -- the hold taken before the crash still counts: 21 more fit, not 22
    local took = 0
    while true do
      local h, e = s2:reserve(EST, FITS * EST, 600)
      assert(h ~= nil, e)
      if not h then break end
      took = took + 1
    end
    assert.equal(FITS - 4, took)
    assert(s2:settle(live, EST))
    assert.equal(4 * EST - 3, s2:spent())
  end)
end)

-- nginx with worker_processes 4 and the stores that live there.
local CONF = [[
worker_processes 4;
daemon on;
pid nginx.pid;
error_log error.log warn;
load_module /usr/lib/nginx/modules/ndk_http_module.so;
load_module /usr/lib/nginx/modules/ngx_http_lua_module.so;
events { worker_connections 512; }
http {
  access_log off;
  lua_package_path "@ROOT@/lua/?.lua;@ROOT@/lua/?/init.lua;@ROOT@/spec/?.lua;/usr/share/lua/5.1/?.lua;;";
  lua_shared_dict omixa_test 4m;
  lua_shared_dict omixa_test_cache 1m;
  client_body_temp_path tmp; proxy_temp_path tmp; fastcgi_temp_path tmp; uwsgi_temp_path tmp; scgi_temp_path tmp;
  server {
    listen 127.0.0.1:@PORT@;
    location /contract { content_by_lua_block { require("store_nginx").contract() } }
    location /reserve { content_by_lua_block { require("store_nginx").reserve() } }
    location /spent { content_by_lua_block { require("store_nginx").spent() } }
  }
}
]]

describe("in nginx (4 workers)", function()
  if type(jit) ~= "table" then
    it("runs in the LuaJIT pass (nginx's Lua module embeds LuaJIT)", function()
      pending("luajit /usr/bin/busted spec/80-store_contract_spec.lua")
    end)
    return
  end

  local base, ngx_srv, redis_srv

  local function get(path)
    local ok, _, out, err = helpers.run("curl -sS " .. q(base .. path))
    assert(ok, err)
    return (out:gsub("%s+$", ""))
  end

  setup(function()
    redis_srv = rh.start()
    ngx_srv = nh.start(function(port)
      return (CONF:gsub("@(%u+)@", { ROOT = helpers.root, PORT = tostring(port) }))
    end)
    base = ngx_srv.base
  end)

  teardown(function()
    if ngx_srv then ngx_srv:stop() end
    if redis_srv then redis_srv:stop() end
  end)

  for _, kind in ipairs{ "shared_dict", "redis" } do
    describe("store." .. kind .. (kind == "redis" and " over lua-resty-redis" or "") .. " keeps the contract", function()
      for i, case in ipairs(contract.cases) do
        it(case.name, function()
          assert.equal("ok", get(("/contract?store=%s&port=%d&case=%d"):format(kind, redis_srv.port, i)))
        end)
      end
    end)

    it(kind .. ": 200 concurrent reserves over 4 workers (and Redis from 2 more processes) take exactly 25", function()
      local prefix = "load" .. kind .. ":"
      local words = { "curl -sS --parallel --parallel-immediate --parallel-max 200 -w '\\n'" }
      for _ = 1, 200 do
        words[#words + 1] = q(base .. ("/reserve?store=%s&port=%d&prefix=%s&limit=%d&amount=%d&billed=%d")
          :format(kind, redis_srv.port, prefix, FITS * EST, EST, EST))
      end
      local cmd = table.concat(words, " ")
      if kind == "redis" then -- plus 2 plain-Lua processes on the same budget
        local code = ([[
          package.path = package.path .. ";/usr/share/lua/5.3/?.lua"
          local s = require("omixa.store").redis(require("redis").connect("127.0.0.1", %d), { prefix = %q })
          for _ = 1, 50 do
            local h, e = s:reserve(%d, %d, 60)
            assert(h ~= nil, e)
            if h then assert(s:settle(h, %d)); print(1) else print(0) end
          end
        ]]):format(redis_srv.port, prefix, EST, FITS * EST, EST)
        cmd = cmd .. " & " .. helpers.lua_cmd(code) .. " & " .. helpers.lua_cmd(code) .. " & wait"
      end
      local ok, _, out, err = helpers.run(cmd)
      assert(ok, err)
      local took, refused, other = 0, 0, {}
      for line in out:gmatch("[^\n]+") do
        if line == "1" then took = took + 1
        elseif line == "0" then refused = refused + 1
        else other[#other + 1] = line end
      end
      assert.same({}, other)
      assert.equal(kind == "redis" and 300 or 200, took + refused)
      assert.equal(FITS, took)
      assert.equal(tostring(FITS * EST), get(("/spent?store=%s&port=%d&prefix=%s"):format(kind, redis_srv.port, prefix)))
    end)
  end
end)
