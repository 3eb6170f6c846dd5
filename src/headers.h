/* headers.h — the one reader of an HTTP response's header block (the raw
 * bytes curl received: status line, "Name: value" lines, CRLF or LF). Pure
 * C, no Lua, no curl: fuzz/fuzz_headers.c drives it directly. */
#ifndef OMIXA_HEADERS_H
#define OMIXA_HEADERS_H

#include <stddef.h>

/* Called for each header line: NAME as sent (NL bytes), value V (VL bytes,
 * blanks and tabs around it removed). Returning nonzero stops the walk. */
typedef int (*omx_header_fn)(void *ud, const char *name, size_t nl, const char *v, size_t vl);
void omx_headers_each(const char *block, size_t len, omx_header_fn fn, void *ud);

/* The status code of the block's status line, or 0. */
int omx_headers_status(const char *block, size_t len);

/* Header LNAME (lower case): 0 absent; 1 present, *V its value (every copy
 * the same, ignoring ASCII case); 2 copies that differ (*V the first). */
int omx_headers_get(const char *block, size_t len, const char *lname, const char **v, size_t *vl);

/* Is media type V (leading white space skipped) PREFIX..., ignoring case? */
int omx_media_is(const char *v, size_t vl, const char *prefix);

/* A Content-Length value as a number (exact below 2^53), or -1 when it is
 * not a plain decimal. */
double omx_headers_length(const char *v, size_t vl);

/* Once a block is complete: NULL when it may be read on, else why not —
 * conflicting Content-Type on a 2xx, conflicting Content-Length, or
 * (*TOO_LARGE set) a Content-Length above MAX_RESPONSE (0: no limit). */
const char *omx_headers_verdict(const char *block, size_t len, size_t max_response, int *too_large);

#endif
