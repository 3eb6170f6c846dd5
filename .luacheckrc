-- luacheck configuration: the same sources run on Lua 5.1–5.4 and LuaJIT.
std = "max"
max_line_length = 150
files["spec"] = { std = "+busted" }
files["lua/omixa/serve"] = { globals = { "ngx" } }
files["examples/nvim"] = { globals = { "vim" } }
files["examples/openresty"] = { globals = { "ngx" } }
files["examples/love"] = { globals = { "love" } }
exclude_files = { "build", "omixa", "out" }
files["examples/luanti"] = { globals = { "omixa_paintings" }, read_globals = { "minetest", "vector" } }
files["spec/hosts/luanti"] = { globals = { "minetest" }, read_globals = { "omixa_paintings" } }
