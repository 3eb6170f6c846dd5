/* body.c — core.build_body: a request body written once, in C, into one
 * omixa.buffer sized exactly beforehand, with image bytes base64-encoded
 * straight into it (no base64 Lua string, no concatenation copy). The
 * caller (omixa.wire) decides the JSON layout; this file only does bytes.
 *
 *   core.build_body(parts) -> buffer | nil, index, message
 *
 * PARTS is an array; each item is
 *   "text"                      copied as it is (already valid JSON text)
 *   { b64 = bytes }             the base64 of BYTES (a string or a buffer)
 *   { file = path, size = n }   the base64 of the file's N bytes, read in
 *                               chunks (the file's bytes never become a Lua
 *                               string); nil, index, message when it cannot be
 *                               read or no longer has N bytes
 * Misuse (a part of another shape) raises before anything is allocated. A
 * file is opened only once the buffer exists and nothing can raise until it
 * is closed again. */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <lua.h>
#include <lauxlib.h>

#include "base64.h"
#include "buffer.h"
#include "compat.h"
#include "omixa.h"

/* Raw bytes read from a file per step: a multiple of 3, so that only the
 * last step of a file can end in padding. On the C stack. */
#define FILE_CHUNK (3 * 8192)
typedef char file_chunk_is_a_multiple_of_3[FILE_CHUNK % 3 == 0 ? 1 : -1];

enum part_kind { PART_TEXT, PART_B64, PART_FILE };

/* Push field K of the table at IDX without metamethods. */
static void rawfield(lua_State *L, int idx, const char *k)
{
    lua_pushstring(L, k);
    lua_rawget(L, idx < 0 ? idx - 1 : idx);
}

/* Push part I of the PARTS table (index 1) and say what it is; *LEN is its
 * length on the wire. For B64 and FILE the part's table stays on the stack
 * under its value (bytes, or path then size). Raises on misuse. */
static enum part_kind part_at(lua_State *L, int i, size_t *len)
{
    lua_Number size;
    size_t n;
    lua_rawgeti(L, 1, i);
    if (lua_type(L, -1) == LUA_TSTRING) {
        lua_tolstring(L, -1, len);
        return PART_TEXT;
    }
    if (lua_type(L, -1) != LUA_TTABLE)
        luaL_error(L, "omixa: build_body: part %d must be a string or a table (got %s)",
                   i, luaL_typename(L, -1));
    rawfield(L, -1, "b64");
    if (!lua_isnil(L, -1)) {
        if (lua_type(L, -1) != LUA_TSTRING && omx_testudata(L, -1, OMX_BUFFER) == NULL)
            luaL_error(L, "omixa: build_body: part %d: b64 must be a string or an omixa.buffer", i);
        omx_checkbytes(L, -1, &n);
        *len = omx_b64_encoded_len(n);
        if (*len == 0 && n > 0)
            luaL_error(L, "omixa: build_body: part %d is too large", i);
        return PART_B64;
    }
    lua_pop(L, 1);
    rawfield(L, -1, "file");
    rawfield(L, -2, "size");
    size = lua_tonumber(L, -1);
    /* A whole number of bytes that a double holds exactly (2^53) and a
     * size_t too. */
    if (lua_type(L, -2) != LUA_TSTRING || lua_type(L, -1) != LUA_TNUMBER
        || !(size >= 0 && size <= 9007199254740992.0 && size <= (lua_Number)(size_t)-1)
        || size != (lua_Number)(size_t)size)
        luaL_error(L, "omixa: build_body: part %d must have b64 = bytes, or file = path and size = bytes", i);
    n = (size_t)size;
    *len = omx_b64_encoded_len(n);
    if (*len == 0 && n > 0)
        luaL_error(L, "omixa: build_body: part %d is too large", i);
    return PART_FILE;
}

/* Base64 of the SIZE bytes of the file PATH into DST (room for their
 * encoding). NULL on success, else what went wrong, into MSG. Raises
 * nothing: the file is open only inside this function. */
static const char *encode_file(const char *path, size_t size, char *dst,
                               char *msg, size_t msgsize)
{
    unsigned char chunk[FILE_CHUNK];
    size_t left = size;
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        snprintf(msg, msgsize, "%s: %s", path, strerror(errno));
        return msg;
    }
    setvbuf(f, NULL, _IONBF, 0); /* read straight into CHUNK */
    while (left > 0) {
        size_t want = left < FILE_CHUNK ? left : FILE_CHUNK;
        size_t got = fread(chunk, 1, want, f);
        if (got != want)
            break;
        dst += omx_b64_encode(chunk, got, dst);
        left -= got;
    }
    if (left > 0 && ferror(f))
        snprintf(msg, msgsize, "%s: %s", path, strerror(errno));
    else if (left > 0 || fgetc(f) != EOF)
        snprintf(msg, msgsize, "%s: the file changed while it was read (it had %lu bytes)",
                 path, (unsigned long)size);
    else
        msg = NULL;
    fclose(f);
    return msg;
}

static int build_body(lua_State *L)
{
    char msg[512];
    omx_buf *b;
    size_t total = 0, len, n;
    int i, count, top;

    luaL_checktype(L, 1, LUA_TTABLE);
    lua_settop(L, 1);
    count = (int)omx_rawlen(L, 1);
    for (i = 1; i <= count; i++) {           /* check and size every part */
        part_at(L, i, &len);
        if (len > (size_t)-1 - total)
            return luaL_error(L, "omixa: build_body: the body is too large");
        total += len;
        lua_settop(L, 1);
    }

    b = omx_buffer_push(L);                  /* 2: owns the bytes from here */
    if (omx_buf_reserve_exact(b, total) != 0)
        return luaL_error(L, "omixa: out of memory (a request body of %lu bytes)", (unsigned long)total);
    top = lua_gettop(L);
    for (i = 1; i <= count; i++) {
        const char *p;
        enum part_kind kind = part_at(L, i, &len);
        if (len == 0) {                      /* "", or no bytes to encode */
            lua_settop(L, top);
            continue;
        }
        switch (kind) {
        case PART_TEXT:
            p = lua_tolstring(L, -1, &n);
            memcpy(b->data + b->len, p, n);
            break;
        case PART_B64:
            p = omx_checkbytes(L, -1, &n);
            omx_b64_encode(p, n, b->data + b->len);
            break;
        case PART_FILE:
            p = lua_tostring(L, -2);
            if (encode_file(p, (size_t)lua_tonumber(L, -1), b->data + b->len, msg, sizeof msg) != NULL) {
                omx_buf_free(b);     /* now, not at the next collection */
                lua_pushnil(L);
                lua_pushinteger(L, i);
                lua_pushstring(L, msg);
                return 3;
            }
            break;
        }
        b->len += len;
        lua_settop(L, top);
    }
    return 1;
}

void omx_body_open(lua_State *L)
{
    lua_pushcfunction(L, build_body);
    lua_setfield(L, -2, "build_body");
}
