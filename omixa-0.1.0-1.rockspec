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
external_dependencies = {
  platforms = {
    macosx = { OPENSSL = { header = "openssl/evp.h" } },
  },
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
        "src/sink.c", "src/headers.c", "src/event_epoll.c", "src/event_kqueue.c",
        "src/event_portable.c", "src/crypto.c",
        "src/body.c", "src/b64fast.c", "src/platform.c", "src/testhooks.c",
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
    ["omixa.decode"] = "lua/omixa/decode.lua",
    ["omixa.schema"] = "lua/omixa/schema.lua",
    ["omixa.request"] = "lua/omixa/request.lua",
    ["omixa.signing"] = "lua/omixa/signing.lua",
    ["omixa.budget"] = "lua/omixa/budget.lua",
    ["omixa.cache"] = "lua/omixa/cache.lua",
    ["omixa.debuglog"] = "lua/omixa/debuglog.lua",
    ["omixa.doctor"] = "lua/omixa/doctor.lua",
    ["omixa.guard"] = "lua/omixa/guard.lua",
    ["omixa.health"] = "lua/omixa/health.lua",
    ["omixa.engine"] = "lua/omixa/engine.lua",
    ["omixa.store"] = "lua/omixa/store/init.lua",
    ["omixa.store.memory"] = "lua/omixa/store/memory.lua",
    ["omixa.store.shared_dict"] = "lua/omixa/store/shared_dict.lua",
    ["omixa.store.redis"] = "lua/omixa/store/redis.lua",
    ["omixa.serve"] = "lua/omixa/serve/init.lua",
    ["omixa.serve.handler"] = "lua/omixa/serve/handler.lua",
    ["omixa.serve.http"] = "lua/omixa/serve/http.lua",
    ["omixa.serve.faults"] = "lua/omixa/serve/faults.lua",
    ["omixa.serve.control"] = "lua/omixa/serve/control.lua",
    ["omixa.serve.state"] = "lua/omixa/serve/state.lua",
    ["omixa.serve.images"] = "lua/omixa/serve/images.lua",
    ["omixa.serve.files"] = "lua/omixa/serve/files.lua",
    ["omixa.serve.png"] = "lua/omixa/serve/png.lua",
    ["omixa.serve.fixtures_embedded"] = "lua/omixa/serve/fixtures_embedded.lua",
  },
  -- macOS, the BSDs and Windows build the portable event backend (event.h
  -- picks it on every system but Linux). macOS: Homebrew's keg-only
  -- OpenSSL is found through OPENSSL_DIR (luarocks install omixa
  -- OPENSSL_DIR=$(brew --prefix openssl@3)); curl from the SDK. Windows:
  -- MSVC with vcpkg's libcurl.lib and libcrypto.lib; MinGW-w64 (MSYS2) with
  -- -lcurl -lcrypto. None of these was run here (README "Platforms").
  platforms = {
    macosx = {
      modules = {
        ["omixa.core"] = {
          incdirs = { "$(OPENSSL_INCDIR)" },
          libdirs = { "$(OPENSSL_LIBDIR)" },
        },
      },
    },
    windows = {
      modules = {
        ["omixa.core"] = {
          defines = { "OMX_BACKEND_PORTABLE" },
          libraries = { "libcurl", "libcrypto", "ws2_32" },
        },
      },
    },
    mingw32 = {
      modules = {
        ["omixa.core"] = {
          defines = { "OMX_BACKEND_PORTABLE" },
          libraries = { "curl", "crypto", "ws2_32" },
        },
      },
    },
  },
  install = {
    bin = { omixa = "bin/omixa" },
  },
}
