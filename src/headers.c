/* headers.c — the one reader of a response's header block. curl hands the
 * block line by line (omx_on_header keeps the block of the last response);
 * everything that reads a header afterwards — the table of lower-case names
 * Lua gets (omx_push_headers), the body sink's choice between buffer and
 * image scan (omx_headers_get), the checks made once the block is complete
 * (omx_headers_verdict) — goes through omx_headers_each below, so no two
 * paths can read one response differently. */
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>

#include "headers.h"
#include "transport.h"

static int lower(int c)
{
    return c >= 'A' && c <= 'Z' ? c + ('a' - 'A') : c;
}

static int equal_ci(const char *a, size_t al, const char *b, size_t bl)
{
    size_t i;
    if (al != bl)
        return 0;
    for (i = 0; i < al; i++)
        if (lower((unsigned char)a[i]) != lower((unsigned char)b[i]))
            return 0;
    return 1;
}

void omx_headers_each(const char *p, size_t len, omx_header_fn fn, void *ud)
{
    const char *end;
    if (p == NULL)
        return; /* nothing received (and NULL + 0 is undefined) */
    end = p + len;
    while (p < end) {
        const char *eol = memchr(p, '\n', (size_t)(end - p));
        const char *line_end = eol ? eol : end, *colon, *vs, *ve;
        if (line_end > p && line_end[-1] == '\r')
            line_end--;
        colon = memchr(p, ':', (size_t)(line_end - p));
        if (colon != NULL && colon > p && !(line_end - p >= 5 && memcmp(p, "HTTP/", 5) == 0)) {
            vs = colon + 1;
            while (vs < line_end && (*vs == ' ' || *vs == '\t'))
                vs++;
            ve = line_end;
            while (ve > vs && (ve[-1] == ' ' || ve[-1] == '\t'))
                ve--;
            if (fn(ud, p, (size_t)(colon - p), vs, (size_t)(ve - vs)) != 0)
                return;
        }
        if (eol == NULL)
            break;
        p = eol + 1;
    }
}

int omx_headers_status(const char *p, size_t len)
{
    size_t i = 5;
    int status = 0, digits = 0;
    if (p == NULL || len < 5 || memcmp(p, "HTTP/", 5) != 0)
        return 0;
    while (i < len && p[i] != ' ' && p[i] != '\n')
        i++;
    while (i < len && p[i] == ' ')
        i++;
    for (; i < len && digits < 3 && p[i] >= '0' && p[i] <= '9'; i++, digits++)
        status = status * 10 + (p[i] - '0');
    return digits == 3 ? status : 0;
}

typedef struct lookup {
    const char *name;           /* lower case */
    size_t name_len;
    const char *v;
    size_t vl;
    int found;                  /* 0, 1, or 2: copies that differ */
} lookup;

static int lookup_one(void *ud, const char *name, size_t nl, const char *v, size_t vl)
{
    lookup *k = (lookup *)ud;
    if (!equal_ci(name, nl, k->name, k->name_len))
        return 0;
    if (k->found == 0) {
        k->v = v;
        k->vl = vl;
        k->found = 1;
    } else if (!equal_ci(v, vl, k->v, k->vl)) {
        k->found = 2;
        return 1;
    }
    return 0;
}

int omx_headers_get(const char *p, size_t len, const char *lname, const char **v, size_t *vl)
{
    lookup k;
    k.name = lname;
    k.name_len = strlen(lname);
    k.v = NULL;
    k.vl = 0;
    k.found = 0;
    omx_headers_each(p, len, lookup_one, &k);
    *v = k.v;
    *vl = k.vl;
    return k.found;
}

int omx_media_is(const char *v, size_t vl, const char *prefix)
{
    size_t n = strlen(prefix);
    /* leading white space as Lua's %s reads it (stream.is_event_stream) */
    while (vl > 0 && (*v == ' ' || (*v >= '\t' && *v <= '\r'))) {
        v++;
        vl--;
    }
    return vl >= n && equal_ci(v, n, prefix, n);
}

double omx_headers_length(const char *v, size_t vl)
{
    double x = 0;
    size_t i;
    if (vl == 0)
        return -1;
    for (i = 0; i < vl; i++) {
        if (v[i] < '0' || v[i] > '9')
            return -1;
        x = x * 10 + (v[i] - '0');
    }
    return x;
}

const char *omx_headers_verdict(const char *p, size_t len, size_t max_response, int *too_large)
{
    int status = omx_headers_status(p, len);
    const char *v;
    size_t vl;
    *too_large = 0;
    if (status >= 100 && status <= 199)
        return NULL; /* an interim answer: the real one follows */
    if (status >= 200 && status <= 299
        && omx_headers_get(p, len, "content-type", &v, &vl) == 2)
        return "conflicting Content-Type headers in a 2xx response";
    switch (omx_headers_get(p, len, "content-length", &v, &vl)) {
    case 2:
        return "conflicting Content-Length headers";
    case 1:
        if (max_response > 0 && omx_headers_length(v, vl) > (double)max_response) {
            *too_large = 1;
            return "the response declares a Content-Length above max_response_bytes";
        }
        break;
    default:
        break;
    }
    return NULL;
}

size_t omx_on_header(char *p, size_t size, size_t n, void *ud)
{
    transfer *t = (transfer *)ud;
    size_t len = size * n;
    int end_of_block = 0;
    if (len >= 5 && memcmp(p, "HTTP/", 5) == 0) {
        t->head.len = 0; /* a new response (after 1xx, or a proxy's CONNECT) */
        t->headers_done = 0;
    } else if ((len == 2 && p[0] == '\r') || (len == 1 && p[0] == '\n')) {
        t->headers_done = 1;
        end_of_block = 1;
    }
    t->got_headers = 1;
    t->last_rx_time = omx_now();
    if (omx_buf_append(&t->head, p, len) != 0) {
        t->abort = AB_NOMEM;
        return 0;
    }
    if (end_of_block) {
        int too_large;
        const char *why = omx_headers_verdict(t->head.data, t->head.len, t->max_response, &too_large);
        if (why != NULL) {
            t->abort = too_large ? AB_TOO_LARGE : AB_PROTOCOL;
            t->abort_why = why;
            return 0;
        }
    }
    return len;
}

/* Headers that are one value, never a list: a second identical copy is the
 * same value (conflicting copies of a 2xx never get here, see verdict). */
static int singleton(const char *name, size_t nl)
{
    return equal_ci(name, nl, "content-type", 12) || equal_ci(name, nl, "content-length", 14);
}

static int push_one(void *ud, const char *p, size_t nl, const char *vs, size_t vl)
{
    lua_State *L = (lua_State *)ud;
    char name[128];
    size_t k;
    if (nl >= sizeof name)
        return 0;
    for (k = 0; k < nl; k++)
        name[k] = (char)lower((unsigned char)p[k]);
    name[nl] = '\0';
    lua_getfield(L, -1, name);
    if (lua_isstring(L, -1)) {
        size_t ol;
        const char *old = lua_tolstring(L, -1, &ol);
        if (singleton(name, nl) && equal_ci(old, ol, vs, vl)) {
            lua_pop(L, 1);
            return 0;
        }
        lua_pushliteral(L, ", ");
        lua_pushlstring(L, vs, vl);
        lua_concat(L, 3);
    } else {
        lua_pop(L, 1);
        lua_pushlstring(L, vs, vl);
    }
    lua_setfield(L, -2, name);
    return 0;
}

/* The kept header block as a table of lower-case names; repeated headers
 * are joined with ", " (an identical copy of Content-Type or Content-Length
 * is not repeated). Pushes the table. */
void omx_push_headers(lua_State *L, const omx_buf *h)
{
    lua_newtable(L);
    omx_headers_each(h->data, h->len, push_one, L);
}
