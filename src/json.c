/* json.c — JSON string quoting, strict UTF-8 checking and the image
 * scanner (see json.h), and core.json_quote, core.utf8_check,
 * core.decode_images. Plain runs of text are skipped eight bytes at a time
 * (SWAR) and copied with memcpy; image strings go straight to the base64
 * decoder. */
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <lua.h>
#include <lauxlib.h>

#include "base64.h"
#include "buffer.h"
#include "compat.h"
#include "json.h"
#include "omixa.h"

#define ONES  ((uint64_t)0x0101010101010101ULL)
#define HIGHS ((uint64_t)0x8080808080808080ULL)

static uint64_t load64(const unsigned char *p)
{
    uint64_t w;
    memcpy(&w, p, sizeof w);
    return w;
}

/* Nonzero when some byte of W is below 0x20, '"' or '\' (exact: the usual
 * has-zero/has-less tricks, valid for thresholds up to 0x80). */
static uint64_t has_string_special(uint64_t w)
{
    uint64_t q = w ^ (ONES * '"'), b = w ^ (ONES * '\\');
    return ((w - ONES * 0x20) & ~w & HIGHS)
         | ((q - ONES) & ~q & HIGHS)
         | ((b - ONES) & ~b & HIGHS);
}

/* How many bytes quoting adds for each byte: \b \t \n \f \r \" \\ add one,
 * other control characters (\u00XX) five. */
static const unsigned char quote_extra[256] = {
    5, 5, 5, 5, 5, 5, 5, 5, 1, 1, 1, 5, 1, 1, 5, 5,
    5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5,
    0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0,
    /* the rest: 0 */
};

size_t omx_json_quoted_len(const char *src, size_t n)
{
    const unsigned char *p = (const unsigned char *)src, *e = p + n;
    size_t extra = 0, limit;
    int i;
    if (n > (size_t)-1 - 2)
        return 0;
    limit = (size_t)-1 - 2 - n;
    while (e - p >= 8) {
        if (has_string_special(load64(p))) {
            for (i = 0; i < 8; i++)
                extra += quote_extra[p[i]];
            /* at most 40 more per block: checking here is exact */
            if (extra > limit)
                return 0;
        }
        p += 8;
    }
    while (p < e)
        extra += quote_extra[*p++];
    if (extra > limit)
        return 0;
    return n + 2 + extra;
}

static char *quote_byte(char *o, unsigned c)
{
    static const char hex[] = "0123456789abcdef";
    *o++ = '\\';
    switch (c) {
    case '"': *o++ = '"'; break;
    case '\\': *o++ = '\\'; break;
    case '\b': *o++ = 'b'; break;
    case '\f': *o++ = 'f'; break;
    case '\n': *o++ = 'n'; break;
    case '\r': *o++ = 'r'; break;
    case '\t': *o++ = 't'; break;
    default:
        *o++ = 'u';
        *o++ = '0';
        *o++ = '0';
        *o++ = hex[c >> 4];
        *o++ = hex[c & 15];
        break;
    }
    return o;
}

size_t omx_json_quote(const char *src, size_t n, char *dst)
{
    const unsigned char *p = (const unsigned char *)src, *e = p + n, *run = p;
    char *o = dst;
    *o++ = '"';
    for (;;) {
        const unsigned char *stop;
        while (e - p >= 8 && !has_string_special(load64(p)))
            p += 8;
        stop = e - p >= 8 ? p + 8 : e;
        if (p == stop)
            break;
        for (; p < stop; p++) {
            if (quote_extra[*p]) {
                memcpy(o, run, (size_t)(p - run));
                o = quote_byte(o + (p - run), *p);
                run = p + 1;
            }
        }
    }
    memcpy(o, run, (size_t)(e - run));
    o += e - run;
    *o++ = '"';
    return (size_t)(o - dst);
}

size_t omx_utf8_check(const char *src, size_t n)
{
    const unsigned char *s = (const unsigned char *)src, *p = s, *e = s + n;
    while (p < e) {
        unsigned c, lo = 0x80, hi = 0xBF;
        size_t need, i;
        while (e - p >= 8 && !(load64(p) & HIGHS))
            p += 8;
        if (p == e)
            break;
        c = *p;
        if (c < 0x80) {
            p++;
            continue;
        }
        if (c >= 0xC2 && c <= 0xDF) {
            need = 1;
        } else if (c >= 0xE0 && c <= 0xEF) {
            need = 2;
            if (c == 0xE0) lo = 0xA0;       /* overlong */
            else if (c == 0xED) hi = 0x9F;  /* surrogates */
        } else if (c >= 0xF0 && c <= 0xF4) {
            need = 3;
            if (c == 0xF0) lo = 0x90;       /* overlong */
            else if (c == 0xF4) hi = 0x8F;  /* above U+10FFFF */
        } else {
            return (size_t)(p - s) + 1;     /* continuation, C0, C1, F5.. */
        }
        if ((size_t)(e - p) <= need || p[1] < lo || p[1] > hi)
            return (size_t)(p - s) + 1;
        for (i = 2; i <= need; i++)
            if ((p[i] & 0xC0) != 0x80)
                return (size_t)(p - s) + 1;
        p += need + 1;
    }
    return 0;
}

/* ---- the image scanner ----------------------------------------------- */

/* What a container is, as far as the image path $.data[i].b64_json goes. */
enum { R_NONE, R_TOP, R_DATA, R_ITEM };
/* What the next value is: P_TOPB64 is $.b64_json (OMX_JSON_TOP_B64). */
enum { P_NONE, P_DATA, P_ITEM, P_B64, P_TOPB64 };

typedef struct jscan {
    const unsigned char *s, *e;
    const unsigned char *flushed; /* rest text is emitted up to here */
    size_t nimages;
    unsigned flags;
    const omx_json_images_ops *ops;
    omx_json_error *err;
} jscan;

static void describe_byte(char *buf, size_t size, unsigned c)
{
    if (c > 0x20 && c < 0x7F)
        snprintf(buf, size, "'%c'", (int)c);
    else
        snprintf(buf, size, "0x%02X", c);
}

/* Record a syntax error "<what> at byte N"; returns NULL for the caller. */
static const unsigned char *jfail(jscan *S, const unsigned char *at,
                                  const char *fmt, ...)
{
    char what[112];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    S->err->code = OMX_JSON_ESYNTAX;
    S->err->offset = (size_t)(at - S->s);
    snprintf(S->err->message, sizeof S->err->message, "%s at byte %lu",
             what, (unsigned long)(at - S->s) + 1);
    return NULL;
}

static const unsigned char *jnomem(jscan *S, const unsigned char *at)
{
    S->err->code = OMX_JSON_ENOMEM;
    S->err->offset = (size_t)(at - S->s);
    snprintf(S->err->message, sizeof S->err->message, "not enough memory");
    return NULL;
}

static const unsigned char *junexpected(jscan *S, const unsigned char *at)
{
    char c[8];
    if (at == S->e)
        return jfail(S, at, "unexpected end of JSON");
    describe_byte(c, sizeof c, *at);
    return jfail(S, at, "unexpected character %s", c);
}

static const unsigned char *skip_ws(const unsigned char *p, const unsigned char *e)
{
    while (p < e && (*p == ' ' || *p == '\n' || *p == '\r' || *p == '\t'))
        p++;
    return p;
}

static int hexval(int c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* The escape at P (a backslash): its code unit in *CH and the byte after
 * it, or NULL (error recorded). */
static const unsigned char *scan_escape(jscan *S, const unsigned char *p,
                                        unsigned long *ch)
{
    const unsigned char *e = S->e;
    int h0, h1, h2, h3;
    if (e - p < 2)
        return jfail(S, e, "unexpected end of JSON");
    switch (p[1]) {
    case '"': case '\\': case '/': *ch = p[1]; return p + 2;
    case 'b': *ch = '\b'; return p + 2;
    case 'f': *ch = '\f'; return p + 2;
    case 'n': *ch = '\n'; return p + 2;
    case 'r': *ch = '\r'; return p + 2;
    case 't': *ch = '\t'; return p + 2;
    case 'u':
        if (e - p >= 6 && (h0 = hexval(p[2])) >= 0 && (h1 = hexval(p[3])) >= 0
            && (h2 = hexval(p[4])) >= 0 && (h3 = hexval(p[5])) >= 0) {
            *ch = (unsigned long)(h0 << 12 | h1 << 8 | h2 << 4 | h3);
            return p + 6;
        }
        if (e - p < 6) {
            /* a truncated \u escape is an early end if what is there fits */
            const unsigned char *q = p + 2;
            while (q < e && hexval(*q) >= 0)
                q++;
            if (q == e)
                return jfail(S, e, "unexpected end of JSON");
        }
        return jfail(S, p, "invalid \\u escape in string");
    default: {
        char c[8];
        describe_byte(c, sizeof c, p[1]);
        return jfail(S, p, "invalid escape \\%s in string", c);
    }
    }
}

/* A string whose contents do not matter; P at its opening quote. Returns the
 * byte after the closing quote, or NULL. */
static const unsigned char *skip_string(jscan *S, const unsigned char *p)
{
    const unsigned char *open = p, *e = S->e;
    unsigned long ch;
    p++;
    for (;;) {
        while (e - p >= 8 && !has_string_special(load64(p)))
            p += 8;
        while (p < e && *p >= 0x20 && *p != '"' && *p != '\\')
            p++;
        if (p == e)
            return jfail(S, open, "unterminated string");
        if (*p == '"')
            return p + 1;
        if (*p == '\\') {
            if ((p = scan_escape(S, p, &ch)) == NULL)
                return NULL;
            continue;
        }
        {
            char c[8];
            describe_byte(c, sizeof c, *p);
            return jfail(S, p, "control character %s in string", c);
        }
    }
}

/* A member name at P (which should be its opening quote), then the colon.
 * In the containers on the image path the name is unescaped and compared;
 * *PEND says what the member's value is. Returns the byte after the colon. */
static const unsigned char *scan_key(jscan *S, const unsigned char *p,
                                     int role, int *pend)
{
    const unsigned char *e = S->e;
    *pend = P_NONE;
    if (p == e || *p != '"') {
        if (p < e && *p == '}')
            return jfail(S, p, "unexpected '}' after ','");
        return p == e ? junexpected(S, p) : jfail(S, p, "expected a member name");
    }
    if (role != R_TOP && role != R_ITEM) {
        if ((p = skip_string(S, p)) == NULL)
            return NULL;
    } else {
        const unsigned char *open = p;
        char name[9];
        size_t len = 0;
        p++;
        for (;;) {
            unsigned long ch;
            if (p == e)
                return jfail(S, open, "unterminated string");
            ch = *p;
            if (ch == '"') {
                p++;
                break;
            }
            if (ch == '\\') {
                if ((p = scan_escape(S, p, &ch)) == NULL)
                    return NULL;
            } else if (ch < 0x20) {
                char c[8];
                describe_byte(c, sizeof c, (unsigned)ch);
                return jfail(S, p, "control character %s in string", c);
            } else {
                p++;
            }
            if (len < sizeof name)
                name[len] = (char)(ch < 0x80 ? ch : 0xFF);
            len++;
        }
        if (role == R_TOP && len == 4 && memcmp(name, "data", 4) == 0)
            *pend = P_DATA;
        else if (role == R_TOP && (S->flags & OMX_JSON_TOP_B64)
                 && len == 8 && memcmp(name, "b64_json", 8) == 0)
            *pend = P_TOPB64;
        else if (role == R_ITEM && len == 8 && memcmp(name, "b64_json", 8) == 0)
            *pend = P_B64;
    }
    p = skip_ws(p, e);
    if (p == e || *p != ':')
        return p == e ? junexpected(S, p) : jfail(S, p, "expected ':'");
    return p + 1;
}

/* The string at P is data[ITEM].b64_json ($.b64_json when ITEM is 0): find
 * its end, decode it into the caller's room, and replace it by its image
 * number in the rest text. */
static const unsigned char *take_image(jscan *S, const unsigned char *p,
                                       size_t item)
{
    const omx_json_images_ops *ops = S->ops;
    const unsigned char *open = p, *c = p + 1, *q = c, *e = S->e;
    unsigned char *room;
    omx_b64_error be;
    size_t len, out = 0;
    char num[32];
    int rc;

    /* The closing quote: the first one after an even run of backslashes. */
    for (;;) {
        size_t k = 0;
        q = (const unsigned char *)memchr(q, '"', (size_t)(e - q));
        if (q == NULL)
            return jfail(S, open, "unterminated string");
        while (q - k > c && q[-1 - (ptrdiff_t)k] == '\\')
            k++;
        if (k % 2 == 0)
            break;
        q++;
    }
    len = (size_t)(q - c);
    room = ops->image_room(ops->ud, omx_b64_decoded_max(len));
    if (room == NULL)
        return jnomem(S, open);
    rc = omx_b64_decode_json((const char *)c, len, room, &out, &be);
    if (rc != OMX_B64_OK) {
        const unsigned char *at = c + be.offset;
        char what[64];
        if (rc == OMX_B64_EJSONESC) {
            /* re-scan for the precise message */
            unsigned long ch;
            if (scan_escape(S, at, &ch) != NULL)
                jfail(S, at, "invalid escape in string");
            return NULL;
        }
        if (rc == OMX_B64_EJSONCHAR) {
            describe_byte(what, sizeof what, (unsigned)be.ch);
            return jfail(S, at, "control character %s in string", what);
        }
        omx_b64_describe(&be, what, sizeof what);
        S->err->code = OMX_JSON_EBASE64;
        S->err->offset = (size_t)(at - S->s);
        S->err->index = item;
        if (item == 0)
            snprintf(S->err->message, sizeof S->err->message,
                     "invalid base64 in b64_json at byte %lu (%s)",
                     (unsigned long)(at - S->s) + 1, what);
        else
            snprintf(S->err->message, sizeof S->err->message,
                     "invalid base64 in data[%lu].b64_json at byte %lu (%s)",
                     (unsigned long)item, (unsigned long)(at - S->s) + 1, what);
        return NULL;
    }
    S->nimages++;
    snprintf(num, sizeof num, "%lu", (unsigned long)S->nimages);
    if (ops->rest(ops->ud, (const char *)S->flushed, (size_t)(open - S->flushed)) != 0
        || ops->rest(ops->ud, num, strlen(num)) != 0)
        return jnomem(S, open);
    S->flushed = q + 1;
    if (ops->image(ops->ud, S->nimages, out) != 0)
        return jnomem(S, open);
    return q + 1;
}

static const unsigned char *scan_literal(jscan *S, const unsigned char *p,
                                         const char *word, size_t len)
{
    size_t avail = (size_t)(S->e - p);
    if (avail >= len && memcmp(p, word, len) == 0)
        return p + len;
    if (avail < len && memcmp(p, word, avail) == 0)
        return jfail(S, S->e, "unexpected end of JSON");
    return jfail(S, p, "invalid literal");
}

#define IS_DIGIT(c) ((c) >= '0' && (c) <= '9')

static const unsigned char *scan_number(jscan *S, const unsigned char *p)
{
    const unsigned char *e = S->e;
    if (*p == '-')
        p++;
    if (p == e)
        return jfail(S, e, "unexpected end of JSON");
    if (*p == '0') {
        p++;
    } else if (IS_DIGIT(*p)) {
        while (p < e && IS_DIGIT(*p))
            p++;
    } else {
        return jfail(S, p, "invalid number");
    }
    if (p < e && *p == '.') {
        if (++p == e)
            return jfail(S, e, "unexpected end of JSON");
        if (!IS_DIGIT(*p))
            return jfail(S, p, "invalid number");
        while (p < e && IS_DIGIT(*p))
            p++;
    }
    if (p < e && (*p == 'e' || *p == 'E')) {
        if (++p < e && (*p == '+' || *p == '-'))
            p++;
        if (p == e)
            return jfail(S, e, "unexpected end of JSON");
        if (!IS_DIGIT(*p))
            return jfail(S, p, "invalid number");
        while (p < e && IS_DIGIT(*p))
            p++;
    }
    return p;
}

int omx_json_decode_images(const char *text, size_t n,
                           const omx_json_images_ops *ops, omx_json_error *err)
{
    return omx_json_decode_images_ex(text, n, 0, ops, err);
}

int omx_json_decode_images_ex(const char *text, size_t n, unsigned flags,
                              const omx_json_images_ops *ops, omx_json_error *err)
{
    /* per open container: role << 1 | is_array */
    unsigned char stack[OMX_JSON_MAX_DEPTH];
    size_t depth = 0, item = 0;
    int pend = P_NONE;
    const unsigned char *p, *e;
    jscan S;

    S.s = S.flushed = p = (const unsigned char *)text;
    S.e = e = p + n;
    S.nimages = 0;
    S.flags = flags;
    S.ops = ops;
    S.err = err;
    err->code = OMX_JSON_OK;
    err->offset = err->index = 0;
    err->message[0] = '\0';

    for (;;) {
        /* A value; PEND says where it sits on the image path. */
        p = skip_ws(p, e);
        if (p == e)
            return junexpected(&S, p), err->code;
        switch (*p) {
        case '{':
        case '[': {
            int is_array = *p == '[', role = R_NONE;
            if (depth == OMX_JSON_MAX_DEPTH)
                return jfail(&S, p, "nesting deeper than %d", OMX_JSON_MAX_DEPTH), err->code;
            if (is_array) {
                if (pend == P_DATA) {
                    role = R_DATA;
                    item = 0;
                }
            } else {
                role = depth == 0 ? R_TOP : pend == P_ITEM ? R_ITEM : R_NONE;
            }
            stack[depth++] = (unsigned char)(role << 1 | is_array);
            p = skip_ws(p + 1, e);
            if (p < e && *p == (is_array ? ']' : '}')) {
                depth--;
                p++;
                break; /* an empty container is a complete value */
            }
            if (is_array) {
                pend = P_NONE;
                if (role == R_DATA) {
                    item++;
                    pend = P_ITEM;
                }
            } else if ((p = scan_key(&S, p, role, &pend)) == NULL) {
                return err->code;
            }
            continue;
        }
        case '"':
            if (pend == P_B64)
                p = take_image(&S, p, item);
            else if (pend == P_TOPB64)
                p = take_image(&S, p, 0);
            else
                p = skip_string(&S, p);
            break;
        case 't':
            p = scan_literal(&S, p, "true", 4);
            break;
        case 'f':
            p = scan_literal(&S, p, "false", 5);
            break;
        case 'n':
            p = scan_literal(&S, p, "null", 4);
            break;
        default:
            if (*p == '-' || IS_DIGIT(*p))
                p = scan_number(&S, p);
            else
                p = junexpected(&S, p);
            break;
        }
        if (p == NULL)
            return err->code;

        /* After a value: close containers until a ',' leads to the next. */
        for (;;) {
            int top, role;
            p = skip_ws(p, e);
            if (depth == 0) {
                if (p != e)
                    return jfail(&S, p, "trailing garbage after JSON value"), err->code;
                if (S.nimages > 0
                    && ops->rest(ops->ud, (const char *)S.flushed, (size_t)(e - S.flushed)) != 0)
                    return jnomem(&S, e), err->code;
                return OMX_JSON_OK;
            }
            if (p == e)
                return junexpected(&S, p), err->code;
            top = stack[depth - 1];
            role = top >> 1;
            if (*p == ',') {
                p = skip_ws(p + 1, e);
                if (top & 1) {
                    pend = P_NONE;
                    if (role == R_DATA) {
                        item++;
                        pend = P_ITEM;
                    }
                } else if ((p = scan_key(&S, p, role, &pend)) == NULL) {
                    return err->code;
                }
                break;
            }
            if (*p == ((top & 1) ? ']' : '}')) {
                depth--;
                p++;
                continue;
            }
            {
                char c[8];
                describe_byte(c, sizeof c, *p);
                return jfail(&S, p, "expected ',' or '%c' but found %s",
                             (top & 1) ? ']' : '}', c), err->code;
            }
        }
    }
}

/* ---- Lua bindings ---------------------------------------------------- */

/* core.json_quote(s) -> string */
static int l_json_quote(lua_State *L)
{
    size_t n, len;
    const char *s = omx_checkbytes(L, 1, &n);
    omx_buf *b;
    len = omx_json_quoted_len(s, n);
    if (len == 0)
        return luaL_error(L, "json_quote: input too large");
    b = omx_buffer_push(L);
    if (omx_buf_reserve(b, len) != 0)
        return luaL_error(L, "not enough memory");
    omx_json_quote(s, n, b->data);
    lua_pushlstring(L, b->data, len);
    omx_buf_free(b);
    return 1;
}

/* core.utf8_check(s) -> true | nil, pos */
static int l_utf8_check(lua_State *L)
{
    size_t n, bad;
    const char *s = omx_checkbytes(L, 1, &n);
    bad = omx_utf8_check(s, n);
    if (bad == 0) {
        lua_pushboolean(L, 1);
        return 1;
    }
    lua_pushnil(L);
    lua_pushinteger(L, (lua_Integer)bad);
    return 2;
}

typedef struct images_ctx {
    lua_State *L;
    omx_buf *scratch, *rest;
    int images; /* stack index of the images table */
} images_ctx;

static unsigned char *images_room(void *ud, size_t max)
{
    images_ctx *c = (images_ctx *)ud;
    c->scratch->len = 0;
    if (omx_buf_reserve(c->scratch, max + 1) != 0)
        return NULL;
    return (unsigned char *)c->scratch->data;
}

static int images_image(void *ud, size_t index, size_t len)
{
    images_ctx *c = (images_ctx *)ud;
    lua_pushlstring(c->L, c->scratch->data, len);
    lua_rawseti(c->L, c->images, (int)index);
    return 0;
}

static int images_rest(void *ud, const char *p, size_t n)
{
    images_ctx *c = (images_ctx *)ud;
    return omx_buf_append(c->rest, p, n);
}

/* core.decode_images(body) -> images, rest | nil, message, what */
static int l_decode_images(lua_State *L)
{
    size_t n;
    const char *p = omx_checkbytes(L, 1, &n);
    omx_json_images_ops ops;
    omx_json_error err;
    images_ctx c;
    int rc;

    lua_settop(L, 1);
    lua_newtable(L);
    c.L = L;
    c.images = 2;
    c.scratch = omx_buffer_push(L);
    c.rest = omx_buffer_push(L);
    ops.ud = &c;
    ops.image_room = images_room;
    ops.image = images_image;
    ops.rest = images_rest;
    rc = omx_json_decode_images(p, n, &ops, &err);
    omx_buf_free(c.scratch);
    if (rc == OMX_JSON_ENOMEM) {
        omx_buf_free(c.rest);
        return luaL_error(L, "not enough memory");
    }
    if (rc != OMX_JSON_OK) {
        omx_buf_free(c.rest);
        lua_pushnil(L);
        lua_pushstring(L, err.message);
        lua_pushstring(L, rc == OMX_JSON_EBASE64 ? "base64" : "json");
        return 3;
    }
    lua_pushvalue(L, 2);
    if (c.rest->data != NULL)
        lua_pushlstring(L, c.rest->data, c.rest->len);
    else if (lua_type(L, 1) == LUA_TSTRING)
        lua_pushvalue(L, 1); /* no image: the rest is the text itself */
    else
        lua_pushlstring(L, p, n);
    omx_buf_free(c.rest);
    return 2;
}

void omx_json_open(lua_State *L)
{
    static const luaL_Reg funcs[] = {
        {"json_quote", l_json_quote},
        {"utf8_check", l_utf8_check},
        {"decode_images", l_decode_images},
        {NULL, NULL}
    };
    omx_setfuncs(L, funcs, 0);
}
