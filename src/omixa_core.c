/* omixa_core.c — luaopen_omixa_core: the one exported symbol of omixa.core. */
#include <string.h>

#include <lua.h>
#include <lauxlib.h>

#include "omixa.h"

#if defined(_WIN32)
#define OMX_EXPORT __declspec(dllexport) /* the DLL's one export */
#elif defined(__GNUC__)
#define OMX_EXPORT __attribute__((visibility("default")))
#else
#define OMX_EXPORT
#endif

OMX_EXPORT int luaopen_omixa_core(lua_State *L);

/* The Lua this core was compiled for. LuaJIT's luaconf.h alone defines
 * LUA_LJDIR (its headers otherwise say "Lua 5.1"). */
#if defined(LUA_LJDIR)
#define OMX_BUILT_FOR "LuaJIT"
#else
#define OMX_BUILT_FOR LUA_VERSION
#endif

/* A core loaded into another Lua than the one it was built for says so,
 * before it touches anything whose layout differs between versions. Most
 * such loads already fail in dlopen (undefined symbol: the in-tree loader
 * lua/omixa/core.lua words that case); these are the ones that get here.
 * Only positive evidence counts: a host without _VERSION or without the jit
 * library is not refused. */
static void check_lua(lua_State *L)
{
#if LUA_VERSION_NUM >= 502
    const char *running;
    lua_getglobal(L, "_VERSION");
    running = lua_tostring(L, -1);
    if (running != NULL && strcmp(running, LUA_VERSION) != 0)
        luaL_error(L, "omixa: this omixa.core was built for %s but runs in %s: "
                   "build the core for the Lua you run (make LUA_VERSION=x.y; see README)",
                   OMX_BUILT_FOR, running);
    lua_pop(L, 1);
#elif !defined(LUA_LJDIR)
    int jit;
    lua_getfield(L, LUA_REGISTRYINDEX, "_LOADED");
    lua_getfield(L, -1, "jit");
    jit = lua_istable(L, -1);
    lua_pop(L, 2);
    if (jit)
        luaL_error(L, "omixa: this omixa.core was built for %s but runs in LuaJIT: "
                   "build the core for LuaJIT (make LUA=luajit; see README)", OMX_BUILT_FOR);
#else
    (void)L; /* a LuaJIT build has the ABI of PUC Lua 5.1 and runs there as well */
#endif
}

int luaopen_omixa_core(lua_State *L)
{
    check_lua(L);
    lua_newtable(L);
    omx_buffer_open(L);
    omx_base64_open(L);
    omx_sniff_open(L);
    omx_json_open(L);
    omx_sse_open(L);
    omx_transport_open(L);
    omx_crypto_open(L);
    omx_body_open(L);
    omx_platform_open(L);
    omx_testhooks_open(L);
    lua_pushliteral(L, OMIXA_VERSION);
    lua_setfield(L, -2, "_VERSION");
    lua_pushinteger(L, LUA_VERSION_NUM); /* the Lua this core was built for */
    lua_setfield(L, -2, "_LUA_VERSION_NUM");
    lua_pushliteral(L, OMX_BUILT_FOR);
    lua_setfield(L, -2, "_LUA");
    return 1;
}
