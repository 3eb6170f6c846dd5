/* omixa.h — the parts of omixa.core, each registering its functions into the
 * module table on top of the stack. */
#ifndef OMIXA_H
#define OMIXA_H

#include <lua.h>

#define OMIXA_VERSION "0.1.0"

void omx_buffer_open(lua_State *L);    /* buffer.c    */
void omx_base64_open(lua_State *L);    /* base64.c    */
void omx_sniff_open(lua_State *L);     /* sniff.c     */
void omx_json_open(lua_State *L);      /* json.c      */
void omx_sse_open(lua_State *L);       /* sse.c       */
void omx_transport_open(lua_State *L); /* transport.c */
void omx_crypto_open(lua_State *L);    /* crypto.c    */
void omx_body_open(lua_State *L);      /* body.c      */
void omx_platform_open(lua_State *L);  /* platform.c  */
void omx_testhooks_open(lua_State *L); /* testhooks.c: specs only */

#endif
