-- spec/hosts/nvim_driver.lua — run inside `nvim --headless` by
-- spec/56-nvim_spec.lua, after examples/nvim's plugin was loaded.
-- A vim.uv timer ticks every 10 ms while :OmixaGenerate runs; once the
-- plugin reports (vim.notify), the largest gap between ticks, the number of
-- ticks, how long the command itself took and the messages are written as
-- JSON to $OMIXA_NVIM_RESULT, and nvim quits. A guard quits after 30 s.
-- spec/53 sets OMIXA_NVIM_CANCEL=1 (see below).
-- luacheck: globals vim
local uv = vim.uv or vim.loop

local result = { ticks = 0, max_gap_ms = 0, messages = {}, levels = {} }
local timer, guard = uv.new_timer(), uv.new_timer()
local t0, last = uv.hrtime(), uv.hrtime()
local finished = false
-- OMIXA_NVIM_CANCEL=1: :OmixaCancel 0.3 s after :OmixaGenerate; done after
-- two messages (the command's count and the job's report).
local cancel = os.getenv("OMIXA_NVIM_CANCEL") == "1"

local function finish(why)
  if finished then return end
  finished = true
  -- the time since the last tick counts too: a blocked loop never ticks
  local gap = (uv.hrtime() - last) / 1e6
  if gap > result.max_gap_ms then result.max_gap_ms = gap end
  timer:stop()
  guard:stop()
  result.why = why
  result.elapsed_ms = (uv.hrtime() - t0) / 1e6
  result.uv = vim.uv and "vim.uv" or "vim.loop"
  local f = assert(io.open(os.getenv("OMIXA_NVIM_RESULT"), "w"))
  f:write(vim.fn.json_encode(result))
  f:close()
  vim.cmd("qa!")
end

vim.notify = function(msg, level)
  result.messages[#result.messages + 1] = msg
  result.levels[#result.levels + 1] = level or vim.log.levels.INFO
  if msg:match("^omixa: wrote ") or (level or 0) >= vim.log.levels.ERROR
    or (cancel and #result.messages >= 2) then
    result.path = msg:match("^omixa: wrote (.-) %(")
    finish("notified")
  end
end

timer:start(10, 10, function()
  local t = uv.hrtime()
  local gap = (t - last) / 1e6
  if gap > result.max_gap_ms then result.max_gap_ms = gap end
  last = t
  result.ticks = result.ticks + 1
end)
guard:start(30000, 0, vim.schedule_wrap(function() finish("timeout") end))

local c0 = uv.hrtime()
vim.cmd("OmixaGenerate " .. (os.getenv("OMIXA_NVIM_PROMPT") or "a lighthouse at dusk"))
result.command_ms = (uv.hrtime() - c0) / 1e6
if cancel then vim.defer_fn(function() vim.cmd("OmixaCancel") end, 300) end
