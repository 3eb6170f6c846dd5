-- spec/store_nginx.lua: the handlers spec/80-store_contract_spec.lua runs
-- inside nginx (worker_processes 4), over the stores that live there:
-- store.shared_dict and store.redis over lua-resty-redis (Debian
-- lua-nginx-redis, `require "nginx.redis"`, or `resty.redis`).
--
--   GET /contract?store=shared_dict|redis&port=P&case=N  -> "ok" or "FAIL <message>"
--   GET /reserve?store=..&port=P&prefix=X&limit=L&amount=A&billed=B
--        -> "1" (reserved, slept a moment, settled B) | "0" (refused) | "ERR <message>"
--   GET /spent?store=..&port=P&prefix=X                   -> micros
local store = require "omixa.store"
local contract = require "store_contract"

local ngx = ngx -- luacheck: ignore 113
local M = {}
local seq = 0

local function resty_redis()
  local ok, mod = pcall(require, "resty.redis")
  if not ok then mod = require "nginx.redis" end
  return mod
end

-- A store named by the query, on PREFIX.
local function open(args, prefix)
  if args.store == "redis" then
    local mod = resty_redis()
    local port = tonumber(args.port)
    return store.redis(function()
      local r = mod:new()
      r:set_timeouts(1000, 2000, 2000)
      local ok, err = r:connect("127.0.0.1", port)
      if not ok then return nil, err end
      return r
    end, { prefix = prefix, max_bytes = 200000, release = function(r) r:set_keepalive(10000, 50) end })
  end
  return store.shared_dict(ngx.shared.omixa_test, { prefix = prefix, cache = ngx.shared.omixa_test_cache })
end

function M.contract()
  local args = ngx.req.get_uri_args()
  local case = contract.cases[tonumber(args.case)]
  local env = {
    sleep = ngx.sleep,
    too_big = args.store == "redis" and 200001 or 2 * 1024 * 1024,
    make = function()
      seq = seq + 1
      local prefix = ("t%d:%d:%s:"):format(ngx.worker.pid(), seq, tostring(ngx.now()))
      return open(args, prefix), function() return open(args, prefix) end
    end,
  }
  local ok, err = pcall(case.run, env)
  ngx.say(ok and "ok" or ("FAIL " .. tostring(err)))
end

function M.reserve()
  local args = ngx.req.get_uri_args()
  local s = open(args, args.prefix)
  local h, err = s:reserve(tonumber(args.amount), tonumber(args.limit), 60)
  if h == nil then return ngx.say("ERR ", err) end
  if h == false then return ngx.say("0") end
  ngx.sleep(0.005 * (ngx.worker.pid() % 4))
  local ok
  ok, err = s:settle(h, tonumber(args.billed))
  if not ok then return ngx.say("ERR ", err) end
  ngx.say("1")
end

function M.spent()
  local args = ngx.req.get_uri_args()
  ngx.say(assert(open(args, args.prefix):spent()))
end

return M
