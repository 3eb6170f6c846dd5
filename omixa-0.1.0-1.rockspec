-- omixa: Lua table in, image bytes out, through the Omixa image service.
rockspec_format = "3.0"
package = "omixa"
version = "0.1.0-1"
source = {
  url = "git+https://omixa.invalid/omixa-lua.git",
  tag = "v0.1.0",
}
description = {
  summary = "Image generation for Lua (Neovim, LÖVE, OpenResty, scripts) through the Omixa image service",
  detailed = [[
A C core over libcurl with a thin Lua layer: validated requests, one reusable
connection per client, images decoded in C straight into Lua strings, errors
you can act on, and a local stand-in service for offline work and tests.]],
  license = "MIT",
}
dependencies = {
  "lua >= 5.1, < 5.5",
  "lua-cjson >= 2.1",
  "luafilesystem >= 1.6", -- omixa.cache only (cache_dir)
}
-- libcurl's and libcrypto's headers and libraries are found by the compiler's default paths
-- (Debian keeps curl/curl.h under the multiarch include directory, which
-- luarocks' own header search does not look in).
build = {
  type = "builtin",
  modules = {
    ["omixa.core"] = {
      sources = {
        "src/omixa_core.c", "src/compat.c", "src/buffer.c", "src/base64.c",
        "src/sniff.c", "src/json.c", "src/sse.c", "src/transport.c", "src/easy.c",
        "src/sink.c", "src/headers.c", "src/event_epoll.c", "src/crypto.c",
        "src/body.c", "src/b64fast.c",
      },
      defines = { "_POSIX_C_SOURCE=200809L" },
      libraries = { "curl", "crypto" },
    },
    ["omixa"] = "lua/omixa/init.lua",
    ["omixa.cli"] = "lua/omixa/cli.lua",
    ["omixa.client"] = "lua/omixa/client.lua",
    ["omixa.errors"] = "lua/omixa/errors.lua",
    ["omixa.images"] = "lua/omixa/images.lua",
    ["omixa.models"] = "lua/omixa/models.lua",
    ["omixa.response"] = "lua/omixa/response.lua",
    ["omixa.schema"] = "lua/omixa/schema.lua",
    ["omixa.stream"] = "lua/omixa/stream.lua",
    ["omixa.wire"] = "lua/omixa/wire.lua",
    ["omixa.signing"] = "lua/omixa/signing.lua",
    ["omixa.budget"] = "lua/omixa/budget.lua",
    ["omixa.cache"] = "lua/omixa/cache.lua",
    ["omixa.debuglog"] = "lua/omixa/debuglog.lua",
    ["omixa.guard"] = "lua/omixa/guard.lua",
    ["omixa.job"] = "lua/omixa/job.lua",
    ["omixa.serve"] = "lua/omixa/serve/init.lua",
    ["omixa.serve.handler"] = "lua/omixa/serve/handler.lua",
    ["omixa.serve.png"] = "lua/omixa/serve/png.lua",
    ["omixa.serve.fixtures_embedded"] = "lua/omixa/serve/fixtures_embedded.lua",
  },
  install = {
    bin = { omixa = "bin/omixa" },
  },
}
