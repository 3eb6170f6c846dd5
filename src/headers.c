/* headers.c — the one reader of a response's header block: curl hands it
 * line by line (omx_on_header keeps the block of the last response), and
 * omx_push_headers turns it into the table of lower-case names every path
 * reads. */
#include <string.h>

#include <lauxlib.h>

#include "transport.h"

size_t omx_on_header(char *p, size_t size, size_t n, void *ud)
{
    transfer *t = (transfer *)ud;
    size_t len = size * n;
    if (len >= 5 && memcmp(p, "HTTP/", 5) == 0) {
        t->head.len = 0; /* a new response (after 1xx, or a proxy's CONNECT) */
        t->headers_done = 0;
    } else if ((len == 2 && p[0] == '\r') || (len == 1 && p[0] == '\n')) {
        t->headers_done = 1;
    }
    t->got_headers = 1;
    t->last_rx_time = omx_now();
    if (omx_buf_append(&t->head, p, len) != 0) {
        t->abort = AB_NOMEM;
        return 0;
    }
    return len;
}

/* Parse the kept header block into a table of lower-case names; repeated
 * headers are joined with ", ". Pushes the table. */
void omx_push_headers(lua_State *L, const omx_buf *h)
{
    const char *p = h->data, *end;
    lua_newtable(L);
    if (p == NULL)
        return; /* nothing received (and NULL + 0 is undefined) */
    end = p + h->len;
    while (p < end) {
        const char *eol = memchr(p, '\n', (size_t)(end - p));
        const char *line_end = eol ? eol : end, *colon, *vs, *ve;
        if (line_end > p && line_end[-1] == '\r')
            line_end--;
        colon = memchr(p, ':', (size_t)(line_end - p));
        if (colon != NULL && colon > p && !(line_end - p >= 5 && memcmp(p, "HTTP/", 5) == 0)) {
            char name[128];
            size_t nl = (size_t)(colon - p), k;
            if (nl < sizeof name) {
                for (k = 0; k < nl; k++) {
                    char c = p[k];
                    name[k] = (c >= 'A' && c <= 'Z') ? (char)(c + 32) : c;
                }
                name[nl] = '\0';
                vs = colon + 1;
                while (vs < line_end && (*vs == ' ' || *vs == '\t'))
                    vs++;
                ve = line_end;
                while (ve > vs && (ve[-1] == ' ' || ve[-1] == '\t'))
                    ve--;
                lua_getfield(L, -1, name);
                if (lua_isstring(L, -1)) {
                    lua_pushliteral(L, ", ");
                    lua_pushlstring(L, vs, (size_t)(ve - vs));
                    lua_concat(L, 3);
                } else {
                    lua_pop(L, 1);
                    lua_pushlstring(L, vs, (size_t)(ve - vs));
                }
                lua_setfield(L, -2, name);
            }
        }
        if (eol == NULL)
            break;
        p = eol + 1;
    }
}
