/* buffer.c — growable byte buffers and their owning userdata. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <lauxlib.h>

#include "buffer.h"
#include "compat.h"

void omx_buf_init(omx_buf *b)
{
    b->data = NULL;
    b->len = b->cap = 0;
}

int omx_buf_reserve(omx_buf *b, size_t extra)
{
    size_t need, cap;
    char *p;
    if (extra > (size_t)-1 - b->len)
        return -1;
    need = b->len + extra;
    if (need <= b->cap)
        return 0;
    cap = b->cap ? b->cap : 256;
    while (cap < need)
        cap = cap > (size_t)-1 / 2 ? need : cap * 2;
    p = realloc(b->data, cap);
    if (p == NULL)
        return -1;
    b->data = p;
    b->cap = cap;
    return 0;
}

int omx_buf_reserve_exact(omx_buf *b, size_t extra)
{
    char *p;
    if (extra > (size_t)-1 - b->len)
        return -1;
    if (b->len + extra <= b->cap)
        return 0;
    p = realloc(b->data, b->len + extra);
    if (p == NULL)
        return -1;
    b->data = p;
    b->cap = b->len + extra;
    return 0;
}

int omx_buf_append(omx_buf *b, const void *p, size_t n)
{
    if (n == 0)
        return 0;
    if (omx_buf_reserve(b, n) != 0)
        return -1;
    memcpy(b->data + b->len, p, n);
    b->len += n;
    return 0;
}

unsigned char *omx_buf_room(omx_buf *b, size_t have, size_t need)
{
    b->len = have;
    if (need > have && omx_buf_reserve(b, need - have) != 0)
        return NULL;
    return (unsigned char *)b->data;
}

void omx_buf_free(omx_buf *b)
{
    free(b->data);
    omx_buf_init(b);
}

omx_buf *omx_buffer_push(lua_State *L)
{
    omx_buf *b = (omx_buf *)lua_newuserdata(L, sizeof *b);
    omx_buf_init(b);
    luaL_getmetatable(L, OMX_BUFFER);
    lua_setmetatable(L, -2);
    return b;
}

omx_buf *omx_buffer_check(lua_State *L, int idx)
{
    return (omx_buf *)luaL_checkudata(L, idx, OMX_BUFFER);
}

const char *omx_checkbytes(lua_State *L, int idx, size_t *len)
{
    omx_buf *b;
    if (lua_type(L, idx) == LUA_TSTRING)
        return lua_tolstring(L, idx, len);
    b = (omx_buf *)omx_testudata(L, idx, OMX_BUFFER);
    if (b == NULL) {
        luaL_argerror(L, idx, "string or omixa.buffer expected");
        return NULL;
    }
    *len = b->len;
    return b->data ? b->data : "";
}

static int buffer_new(lua_State *L)
{
    omx_buffer_push(L);
    return 1;
}

static int buffer_len(lua_State *L)
{
    lua_pushinteger(L, (lua_Integer)omx_buffer_check(L, 1)->len);
    return 1;
}

/* buf:string([i [, j]]) — the bytes i..j (1-based, inclusive, like
 * string.sub; negative counts from the end) as a Lua string. An index that
 * is no integer (NaN, 1e300, 1.5) raises, as string.sub does on Lua 5.3+. */
static int buffer_string(lua_State *L)
{
    omx_buf *b = omx_buffer_check(L, 1);
    lua_Integer len = (lua_Integer)b->len;
    lua_Integer i = omx_optinteger(L, 2, 1), j = omx_optinteger(L, 3, -1);
    if (i < 0) i = len + i + 1 > 0 ? len + i + 1 : 1;
    else if (i == 0) i = 1;
    if (j < 0) j = len + j + 1;
    else if (j > len) j = len;
    if (i > j)
        lua_pushliteral(L, "");
    else
        lua_pushlstring(L, b->data + i - 1, (size_t)(j - i + 1));
    return 1;
}

static int buffer_close(lua_State *L)
{
    omx_buf_free(omx_buffer_check(L, 1));
    return 0;
}

static int buffer_tostring(lua_State *L)
{
    omx_buf *b = omx_buffer_check(L, 1);
    char s[64];
    snprintf(s, sizeof s, OMX_BUFFER " (%lu bytes)", (unsigned long)b->len);
    lua_pushstring(L, s);
    return 1;
}

void omx_buffer_open(lua_State *L)
{
    static const luaL_Reg methods[] = {
        {"len", buffer_len},
        {"string", buffer_string},
        {"close", buffer_close},
        {"__len", buffer_len},
        {"__gc", buffer_close},
        {"__close", buffer_close},
        {"__tostring", buffer_tostring},
        {NULL, NULL}
    };
    omx_newclass(L, OMX_BUFFER, methods);
    lua_pop(L, 1);
    lua_pushcfunction(L, buffer_new);
    lua_setfield(L, -2, "buffer");
}
