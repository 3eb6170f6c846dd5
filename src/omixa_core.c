/* omixa_core.c — luaopen_omixa_core: the one exported symbol of omixa.core. */
#include <lua.h>
#include <lauxlib.h>

#include "omixa.h"

#if defined(__GNUC__)
#define OMX_EXPORT __attribute__((visibility("default")))
#else
#define OMX_EXPORT
#endif

OMX_EXPORT int luaopen_omixa_core(lua_State *L);

int luaopen_omixa_core(lua_State *L)
{
    lua_newtable(L);
    omx_buffer_open(L);
    omx_base64_open(L);
    omx_sniff_open(L);
    omx_json_open(L);
    omx_sse_open(L);
    omx_transport_open(L);
    omx_crypto_open(L);
    omx_body_open(L);
    omx_testhooks_open(L);
    lua_pushliteral(L, OMIXA_VERSION);
    lua_setfield(L, -2, "_VERSION");
    return 1;
}
