/* fuzz_headers — the header reader (src/headers.c) on any bytes, against a
 * reference written here from its contract:
 * - omx_headers_each yields exactly the reference's (name, value) pairs:
 *   lines split at LF (a CR before it dropped), the status line ("HTTP/")
 *   and lines without a colon after a non-empty name skipped, blanks and
 *   tabs around the value removed; every pointer lies inside the block;
 * - omx_headers_get agrees with the pairs (absent / one value / copies that
 *   differ, ASCII case ignored), for Content-Type and Content-Length;
 * - omx_headers_status is the three digits after "HTTP/x " or 0;
 * - omx_headers_verdict refuses exactly a 2xx with conflicting Content-Type,
 *   conflicting Content-Length, or a decimal Content-Length above the
 *   limit (the limit taken from the input's first bytes);
 * - omx_media_is agrees with Lua's find(lower(v), "^%s*" .. prefix).
 * Reads stay inside the buffer (ASan: the block is a copy of exactly its
 * size). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "headers.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MAXPAIRS 4096

typedef struct pair {
    const char *name, *v;
    size_t nl, vl;
} pair;

typedef struct seen {
    pair p[MAXPAIRS];
    size_t n;
    const char *lo, *hi;
} seen;

static int collect(void *ud, const char *name, size_t nl, const char *v, size_t vl)
{
    seen *s = (seen *)ud;
    if (name < s->lo || name + nl > s->hi || v < s->lo || v + vl > s->hi || nl == 0)
        abort();
    if (s->n < MAXPAIRS) {
        s->p[s->n].name = name;
        s->p[s->n].nl = nl;
        s->p[s->n].v = v;
        s->p[s->n].vl = vl;
    }
    s->n++;
    return 0;
}

static int low(int c)
{
    return c >= 'A' && c <= 'Z' ? c + 32 : c;
}

static int same_ci(const char *a, size_t al, const char *b, size_t bl)
{
    size_t i;
    if (al != bl)
        return 0;
    for (i = 0; i < al; i++)
        if (low((unsigned char)a[i]) != low((unsigned char)b[i]))
            return 0;
    return 1;
}

static void reference(const char *p, size_t len, seen *s)
{
    size_t i = 0;
    while (i < len) {
        size_t e = i, le, c, vs, ve;
        while (e < len && p[e] != '\n')
            e++;
        le = e;
        if (le > i && p[le - 1] == '\r')
            le--;
        for (c = i; c < le && p[c] != ':'; c++)
            ;
        if (c < le && c > i && !(le - i >= 5 && memcmp(p + i, "HTTP/", 5) == 0)) {
            vs = c + 1;
            while (vs < le && (p[vs] == ' ' || p[vs] == '\t'))
                vs++;
            ve = le;
            while (ve > vs && (p[ve - 1] == ' ' || p[ve - 1] == '\t'))
                ve--;
            if (s->n < MAXPAIRS) {
                s->p[s->n].name = p + i;
                s->p[s->n].nl = c - i;
                s->p[s->n].v = p + vs;
                s->p[s->n].vl = ve - vs;
            }
            s->n++;
        }
        i = e + 1;
    }
}

static int ref_get(const seen *s, const char *lname, const char **v, size_t *vl)
{
    size_t i, n = s->n < MAXPAIRS ? s->n : MAXPAIRS;
    int found = 0;
    *v = NULL;
    *vl = 0;
    for (i = 0; i < n; i++) {
        if (!same_ci(s->p[i].name, s->p[i].nl, lname, strlen(lname)))
            continue;
        if (found == 0) {
            *v = s->p[i].v;
            *vl = s->p[i].vl;
            found = 1;
        } else if (!same_ci(s->p[i].v, s->p[i].vl, *v, *vl)) {
            return 2;
        }
    }
    return found;
}

static int ref_status(const char *p, size_t len)
{
    size_t i = 5;
    if (len < 5 || memcmp(p, "HTTP/", 5) != 0)
        return 0;
    while (i < len && p[i] != ' ' && p[i] != '\n')
        i++;
    while (i < len && p[i] == ' ')
        i++;
    if (i + 3 > len)
        return 0;
    if (p[i] < '0' || p[i] > '9' || p[i + 1] < '0' || p[i + 1] > '9' || p[i + 2] < '0' || p[i + 2] > '9')
        return 0;
    return (p[i] - '0') * 100 + (p[i + 1] - '0') * 10 + (p[i + 2] - '0');
}

static int ref_media(const char *v, size_t vl, const char *prefix)
{
    size_t i = 0, n = strlen(prefix);
    while (i < vl && strchr(" \t\n\v\f\r", v[i]) != NULL && v[i] != '\0')
        i++;
    return vl - i >= n && same_ci(v + i, n, prefix, n);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static seen a, b;
    char *block;
    size_t max = 0, i;
    const char *v1, *v2, *why;
    size_t l1, l2;
    int r1, r2, too_large, status;

    if (size > 0) { /* first byte: the limit, as a power of two (0: none) */
        max = data[0] % 40 == 0 ? 0 : (size_t)1 << (data[0] % 40);
        data++;
        size--;
    }
    block = (char *)malloc(size ? size : 1);
    if (block == NULL)
        return 0;
    memcpy(block, data, size);

    a.n = b.n = 0;
    a.lo = block;
    a.hi = block + size;
    omx_headers_each(size ? block : NULL, size, collect, &a);
    reference(block, size, &b);
    if (a.n != b.n)
        abort();
    for (i = 0; i < a.n && i < MAXPAIRS; i++)
        if (a.p[i].name != b.p[i].name || a.p[i].nl != b.p[i].nl
            || a.p[i].v != b.p[i].v || a.p[i].vl != b.p[i].vl)
            abort();

    r1 = omx_headers_get(size ? block : NULL, size, "content-type", &v1, &l1);
    r2 = ref_get(&b, "content-type", &v2, &l2);
    if (b.n <= MAXPAIRS && (r1 != r2 || (r1 == 1 && (v1 != v2 || l1 != l2))))
        abort();
    if (r1 >= 1 && (omx_media_is(v1, l1, "text/event-stream") != ref_media(v1, l1, "text/event-stream")
                    || omx_media_is(v1, l1, "image/") != ref_media(v1, l1, "image/")))
        abort();

    status = omx_headers_status(size ? block : NULL, size);
    if (status != ref_status(block, size))
        abort();

    why = omx_headers_verdict(size ? block : NULL, size, max, &too_large);
    if (b.n <= MAXPAIRS) {
        int ct = r2, cl = ref_get(&b, "content-length", &v2, &l2), want;
        double len = omx_headers_length(v2, l2);
        int over = cl == 1 && max > 0 && len > (double)max;
        if (status >= 100 && status <= 199)
            want = 0;
        else
            want = (status >= 200 && status <= 299 && ct == 2) || cl == 2 || over;
        if ((why != NULL) != want)
            abort();
        if (too_large && !(over && !(status >= 200 && status <= 299 && ct == 2) && cl != 2))
            abort();
    }
    free(block);
    return 0;
}
