/* buffer.h — growable byte buffers: a plain C struct for scratch work, and
 * the "omixa.buffer" userdata that owns one (response bodies live here so no
 * error path can leak them, and big bodies never become a Lua string). */
#ifndef OMIXA_BUFFER_H
#define OMIXA_BUFFER_H

#include <stddef.h>
#include <lua.h>

typedef struct omx_buf {
    char *data;
    size_t len, cap;
} omx_buf;

void omx_buf_init(omx_buf *b);
/* Make room for EXTRA more bytes; 0 on success, -1 when out of memory. */
int omx_buf_reserve(omx_buf *b, size_t extra);
/* Likewise, but grow to exactly len + EXTRA bytes (for a size known in
 * advance, such as a request body: one allocation, nothing spare). */
int omx_buf_reserve_exact(omx_buf *b, size_t extra);
int omx_buf_append(omx_buf *b, const void *p, size_t n);
/* B as a room of at least NEED bytes whose first HAVE bytes stay (an
 * omx_json_images_ops image_room); NULL when out of memory. */
unsigned char *omx_buf_room(omx_buf *b, size_t have, size_t need);
void omx_buf_free(omx_buf *b);

#define OMX_BUFFER "omixa.buffer"

/* Push a new empty buffer userdata and return its struct. */
omx_buf *omx_buffer_push(lua_State *L);
/* The buffer at IDX, raising when it is not one; a closed buffer is fine
 * (data NULL: it reads as empty). */
omx_buf *omx_buffer_check(lua_State *L, int idx);
/* Bytes of a string or buffer argument at IDX; raises on anything else. */
const char *omx_checkbytes(lua_State *L, int idx, size_t *len);

/* Register core.buffer() and the class into the module table at the top. */
void omx_buffer_open(lua_State *L);

#endif
