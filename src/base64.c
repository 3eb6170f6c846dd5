/* base64.c — base64 encode/decode (see base64.h) and core.b64encode,
 * core.b64decode. Decoding is one table-driven pass from the input straight
 * into the output: eight clean characters at a time, and a per-character
 * path only for whitespace, padding, JSON escapes and errors. */
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <lua.h>
#include <lauxlib.h>

#include "b64fast.h"
#include "base64.h"
#include "buffer.h"
#include "compat.h"
#include "omixa.h"

#if defined(__GNUC__)
#define B64_INLINE static inline __attribute__((always_inline))
#else
#define B64_INLINE static inline
#endif

static const char b64_alphabet[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/* Character classes for decoding: 0..63 are digit values (both alphabets);
 * everything else has bit 6 or 7 set, so one OR over a block of looked-up
 * values tells whether the block is all digits. */
#define B64_WS  0x40 /* space \t \n \r */
#define B64_PAD 0x41 /* = */
#define B64_ESC 0x42 /* \ (a JSON escape, when decoding a JSON string) */
#define B64_CTL 0x43 /* other control characters */
#define B64_BAD 0xFF

static const unsigned char b64_class[256] = {
     67, 67, 67, 67, 67, 67, 67, 67, 67, 64, 64, 67, 67, 64, 67, 67,
     67, 67, 67, 67, 67, 67, 67, 67, 67, 67, 67, 67, 67, 67, 67, 67,
     64,255,255,255,255,255,255,255,255,255,255, 62,255, 62,255, 63,
     52, 53, 54, 55, 56, 57, 58, 59, 60, 61,255,255,255, 65,255,255,
    255,  0,  1,  2,  3,  4,  5,  6,  7,  8,  9, 10, 11, 12, 13, 14,
     15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25,255, 66,255,255, 63,
    255, 26, 27, 28, 29, 30, 31, 32, 33, 34, 35, 36, 37, 38, 39, 40,
     41, 42, 43, 44, 45, 46, 47, 48, 49, 50, 51,255,255,255,255,255,
    255,255,255,255,255,255,255,255,255,255,255,255,255,255,255,255,
    255,255,255,255,255,255,255,255,255,255,255,255,255,255,255,255,
    255,255,255,255,255,255,255,255,255,255,255,255,255,255,255,255,
    255,255,255,255,255,255,255,255,255,255,255,255,255,255,255,255,
    255,255,255,255,255,255,255,255,255,255,255,255,255,255,255,255,
    255,255,255,255,255,255,255,255,255,255,255,255,255,255,255,255,
    255,255,255,255,255,255,255,255,255,255,255,255,255,255,255,255,
    255,255,255,255,255,255,255,255,255,255,255,255,255,255,255,255,
};

size_t omx_b64_encoded_len(size_t n)
{
    size_t groups = n / 3 + (n % 3 != 0);
    if (groups > (size_t)-1 / 4)
        return 0;
    return groups * 4;
}

size_t omx_b64_encode(const void *src, size_t n, char *dst)
{
    const unsigned char *s = (const unsigned char *)src;
    char *o = dst;
    size_t i = omx_b64_encode_fast(s, n, dst); /* the whole groups */
    uint32_t x;
    o += i / 3 * 4;
    for (; n - i >= 3; i += 3, o += 4) {
        x = (uint32_t)s[i] << 16 | (uint32_t)s[i + 1] << 8 | s[i + 2];
        o[0] = b64_alphabet[x >> 18];
        o[1] = b64_alphabet[(x >> 12) & 63];
        o[2] = b64_alphabet[(x >> 6) & 63];
        o[3] = b64_alphabet[x & 63];
    }
    if (n - i == 1) {
        x = (uint32_t)s[i] << 16;
        o[0] = b64_alphabet[x >> 18];
        o[1] = b64_alphabet[(x >> 12) & 63];
        o[2] = o[3] = '=';
        o += 4;
    } else if (n - i == 2) {
        x = (uint32_t)s[i] << 16 | (uint32_t)s[i + 1] << 8;
        o[0] = b64_alphabet[x >> 18];
        o[1] = b64_alphabet[(x >> 12) & 63];
        o[2] = b64_alphabet[(x >> 6) & 63];
        o[3] = '=';
        o += 4;
    }
    return (size_t)(o - dst);
}

size_t omx_b64_decoded_max(size_t n)
{
    return n / 4 * 3 + n % 4 * 3 / 4;
}

static int hexval(int c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

static int b64_fail(omx_b64_error *err, int code, size_t at,
                    unsigned long ch, int escaped)
{
    err->code = code;
    err->offset = at;
    err->ch = ch;
    err->escaped = escaped;
    err->after = 0;
    return code;
}

/* The JSON escape of AVAIL bytes at P (a backslash): 1 with its code unit
 * in *CH and its length in *LEN; 0 when it is invalid; -1 when it needs
 * more bytes than AVAIL to tell. */
static int json_escape(const unsigned char *p, size_t avail,
                       unsigned long *ch, size_t *len)
{
    size_t k;
    if (avail < 2)
        return -1;
    *len = 2;
    switch (p[1]) {
    case '"': case '\\': case '/': *ch = p[1]; return 1;
    case 'b': *ch = '\b'; return 1;
    case 'f': *ch = '\f'; return 1;
    case 'n': *ch = '\n'; return 1;
    case 'r': *ch = '\r'; return 1;
    case 't': *ch = '\t'; return 1;
    case 'u':
        *ch = 0;
        for (k = 2; k < 6; k++) {
            int h;
            if (k >= avail)
                return -1;
            if ((h = hexval(p[k])) < 0)
                return 0;
            *ch = *ch << 4 | (unsigned long)h;
        }
        *len = 6;
        return 1;
    default:
        return 0;
    }
}

static int esc_fail(omx_b64_error *err, size_t at, const unsigned char *esc,
                    size_t avail)
{
    b64_fail(err, OMX_B64_EJSONESC, at, '\\', 0);
    err->after = avail >= 2 ? esc[1] : 0;
    return OMX_B64_EJSONESC;
}

/* The class of an escaped code unit: anything but a digit, '=' or
 * whitespace is just a bad character. */
static unsigned escaped_class(unsigned long ch)
{
    unsigned v = ch < 256 ? b64_class[ch] : B64_BAD;
    return v == B64_ESC || v == B64_CTL ? B64_BAD : v;
}

/* One character of class V (the code unit CH, from the byte RAW at offset
 * AT) into the stream's group; the group's bytes go to *O when complete. */
static int b64_put(omx_b64_stream *st, unsigned v, unsigned long ch,
                   unsigned char raw, size_t at, int escaped,
                   unsigned char **o, omx_b64_error *err)
{
    if (v < 64) {
        if (st->pad)
            return b64_fail(err, OMX_B64_EAFTERPAD, at, ch, escaped);
        if (st->nq == 0) {
            st->qstart = at;
            st->qch = raw;
        }
        st->acc = st->acc << 6 | v;
        if (++st->nq == 4) {
            unsigned char *d = *o;
            d[0] = (unsigned char)(st->acc >> 16);
            d[1] = (unsigned char)(st->acc >> 8);
            d[2] = (unsigned char)st->acc;
            *o = d + 3;
            st->nq = 0;
            st->acc = 0;
        }
    } else if (v == B64_PAD) {
        if (st->nq < 2)
            return b64_fail(err, OMX_B64_EPADPOS, at, ch, escaped);
        if (st->pad == 0)
            st->padstart = at;
        if (st->nq + ++st->pad > 4)
            return b64_fail(err, OMX_B64_EPADMORE, at, ch, escaped);
    } else if (v != B64_WS) {
        return b64_fail(err, OMX_B64_EBADCHAR, at, ch, escaped);
    }
    /* After padding, nq stays 2 or 3, so the hot loop stays off. */
    return OMX_B64_OK;
}

void omx_b64_stream_init(omx_b64_stream *st, unsigned flags, size_t pos)
{
    memset(st, 0, sizeof *st);
    st->flags = flags;
    st->pos = pos;
}

/* Past an error with QUOTE_ENDS: on to the raw quote that ends the string
 * (a backslash takes the next byte with it). Returns where it stopped. */
static const unsigned char *skip_to_quote(omx_b64_stream *st,
                                          const unsigned char *p,
                                          const unsigned char *e)
{
    if (st->skip_next && p < e) {
        st->skip_next = 0;
        p++;
    }
    while (p < e && *p != '"') {
        if (*p++ == '\\') {
            if (p == e) {
                st->skip_next = 1;
                break;
            }
            p++;
        }
    }
    return p;
}

/* The decoder, for plain text (JSON = 0) or JSON string contents (1); each
 * public function instantiates it with a constant so the test folds away. */
B64_INLINE int b64_feed_core(omx_b64_stream *st, const unsigned char *s,
                             size_t n, unsigned char *out, size_t *outlen,
                             size_t *used, omx_b64_error *err, int json)
{
    const unsigned char *p = s, *const e = s + n;
    const size_t base = st->pos;
    unsigned char *o = out;
    int rc = OMX_B64_OK, quote_ends = json && (st->flags & OMX_B64_QUOTE_ENDS);

    if (quote_ends && st->kept.code != OMX_B64_OK) {
        p = skip_to_quote(st, p, e);
        goto done;
    }
    if (json && st->nesc > 0) {
        /* Finish the escape the last feed ended in. */
        unsigned long ch = 0;
        size_t len = 0, at = st->esc_at;
        unsigned carried = st->nesc;
        int r;
        while ((r = json_escape(st->esc, st->nesc, &ch, &len)) < 0 && p < e)
            st->esc[st->nesc++] = *p++;
        if (r < 0)
            goto done;
        if (r == 0) {
            rc = esc_fail(err, at, st->esc, st->nesc);
            /* on past the escape's first two bytes */
            p = carried == 1 ? s + 1 : s;
            st->nesc = 0;
            goto failed;
        }
        st->nesc = 0;
        if ((rc = b64_put(st, escaped_class(ch), ch, '\\', at, 1, &o, err)) != OMX_B64_OK)
            goto failed;
    }

    for (;;) {
        const unsigned char *at;
        unsigned long ch;
        unsigned v;
        int escaped = 0;

        if (st->nq == 0) {
            /* The hot loop: whole groups of clean digits, in bulk (AVX2
             * where the CPU has it), then the URL-safe ones eight at a
             * time. */
            size_t bulk = omx_b64_decode_fast(p, (size_t)(e - p), o);
            p += bulk;
            o += bulk / 4 * 3;
            while (e - p >= 8) {
                uint32_t a0 = b64_class[p[0]], a1 = b64_class[p[1]],
                         a2 = b64_class[p[2]], a3 = b64_class[p[3]],
                         a4 = b64_class[p[4]], a5 = b64_class[p[5]],
                         a6 = b64_class[p[6]], a7 = b64_class[p[7]];
                uint32_t x, y;
                if ((a0 | a1 | a2 | a3 | a4 | a5 | a6 | a7) & 0xC0)
                    break;
                x = a0 << 18 | a1 << 12 | a2 << 6 | a3;
                y = a4 << 18 | a5 << 12 | a6 << 6 | a7;
                o[0] = (unsigned char)(x >> 16);
                o[1] = (unsigned char)(x >> 8);
                o[2] = (unsigned char)x;
                o[3] = (unsigned char)(y >> 16);
                o[4] = (unsigned char)(y >> 8);
                o[5] = (unsigned char)y;
                p += 8;
                o += 6;
            }
            if (e - p >= 4) {
                uint32_t a0 = b64_class[p[0]], a1 = b64_class[p[1]],
                         a2 = b64_class[p[2]], a3 = b64_class[p[3]];
                if (((a0 | a1 | a2 | a3) & 0xC0) == 0) {
                    uint32_t x = a0 << 18 | a1 << 12 | a2 << 6 | a3;
                    o[0] = (unsigned char)(x >> 16);
                    o[1] = (unsigned char)(x >> 8);
                    o[2] = (unsigned char)x;
                    p += 4;
                    o += 3;
                    continue;
                }
            }
        }
        if (p == e)
            break;

        /* One character (or JSON escape) at a time. */
        at = p;
        ch = *p;
        v = b64_class[ch];
        if (v < 64) {
            p++;
        } else if (json && v == B64_ESC) {
            size_t len = 0;
            int r = json_escape(p, (size_t)(e - p), &ch, &len);
            if (r < 0) {
                /* the feed ends inside the escape: keep its bytes */
                st->esc_at = base + (size_t)(p - s);
                st->nesc = (unsigned)(e - p);
                memcpy(st->esc, p, st->nesc);
                p = e;
                break;
            }
            if (r == 0) {
                rc = esc_fail(err, base + (size_t)(p - s), p, (size_t)(e - p));
                p += 2;
                goto failed;
            }
            p += len;
            escaped = 1;
            v = escaped_class(ch);
        } else {
            if (quote_ends && ch == '"')
                break;
            p++;
            if (json && (v == B64_CTL || ch == '"' || (v == B64_WS && ch != ' '))) {
                rc = b64_fail(err, OMX_B64_EJSONCHAR, base + (size_t)(at - s), ch, 0);
                goto failed;
            }
            if (v == B64_ESC || v == B64_CTL)
                v = B64_BAD;
        }
        rc = b64_put(st, v, ch, *at, base + (size_t)(at - s), escaped, &o, err);
        if (rc != OMX_B64_OK)
            goto failed;
    }
done:
    *outlen = (size_t)(o - out);
    *used = (size_t)(p - s);
    st->pos = base + *used;
    err->code = OMX_B64_OK;
    return OMX_B64_OK;

failed:
    if (!quote_ends) {
        *outlen = (size_t)(o - out);
        *used = (size_t)(p - s);
        return rc;
    }
    /* Keep the error for finish; find the end of the string. */
    st->kept = *err;
    p = skip_to_quote(st, p, e);
    goto done;
}

int omx_b64_stream_feed(omx_b64_stream *st, const char *src, size_t n,
                        unsigned char *dst, size_t *outlen, size_t *used,
                        omx_b64_error *err)
{
    if (st->flags & OMX_B64_JSON)
        return b64_feed_core(st, (const unsigned char *)src, n, dst, outlen, used, err, 1);
    return b64_feed_core(st, (const unsigned char *)src, n, dst, outlen, used, err, 0);
}

int omx_b64_stream_finish(omx_b64_stream *st, unsigned char *dst,
                          size_t *outlen, omx_b64_error *err)
{
    unsigned char *o = dst;
    *outlen = 0;
    if (st->kept.code != OMX_B64_OK) {
        *err = st->kept;
        return err->code;
    }
    if (st->nesc > 0)
        return esc_fail(err, st->esc_at, st->esc, st->nesc);
    if (st->nq == 1)
        return b64_fail(err, OMX_B64_ETRUNC, st->qstart, st->qch, 0);
    if (st->pad && st->nq + st->pad != 4)
        return b64_fail(err, OMX_B64_EPADSHORT, st->padstart, '=', 0);
    if (st->nq == 2) {
        *o++ = (unsigned char)(st->acc >> 4);
    } else if (st->nq == 3) {
        *o++ = (unsigned char)(st->acc >> 10);
        *o++ = (unsigned char)(st->acc >> 2);
    }
    *outlen = (size_t)(o - dst);
    err->code = OMX_B64_OK;
    return OMX_B64_OK;
}

/* One call over the whole input: a stream fed once. */
static int decode_whole(const char *src, size_t n, unsigned char *dst,
                        size_t *outlen, omx_b64_error *err, unsigned flags)
{
    omx_b64_stream st;
    size_t len = 0, tail = 0, used = 0;
    int rc;
    omx_b64_stream_init(&st, flags, 0);
    rc = omx_b64_stream_feed(&st, src, n, dst, &len, &used, err);
    if (rc == OMX_B64_OK)
        rc = omx_b64_stream_finish(&st, dst + len, &tail, err);
    if (rc == OMX_B64_OK)
        *outlen = len + tail;
    return rc;
}

int omx_b64_decode(const char *src, size_t n, unsigned char *dst,
                   size_t *outlen, omx_b64_error *err)
{
    return decode_whole(src, n, dst, outlen, err, 0);
}

int omx_b64_decode_json(const char *src, size_t n, unsigned char *dst,
                        size_t *outlen, omx_b64_error *err)
{
    return decode_whole(src, n, dst, outlen, err, OMX_B64_JSON);
}

static void describe_char(const omx_b64_error *err, char *buf, size_t size)
{
    if (err->ch > 0x20 && err->ch < 0x7F)
        snprintf(buf, size, "'%c'", (int)err->ch);
    else if (err->escaped)
        snprintf(buf, size, "U+%04lX", err->ch);
    else
        snprintf(buf, size, "0x%02lX", err->ch);
}

void omx_b64_describe(const omx_b64_error *err, char *buf, size_t size)
{
    char c[16];
    if (size == 0)
        return;
    describe_char(err, c, sizeof c);
    switch (err->code) {
    case OMX_B64_OK:
        snprintf(buf, size, "no error");
        break;
    case OMX_B64_EBADCHAR:
        snprintf(buf, size, "invalid base64 character %s", c);
        break;
    case OMX_B64_EPADPOS:
        snprintf(buf, size, "misplaced base64 padding '='");
        break;
    case OMX_B64_EPADMORE:
        snprintf(buf, size, "too much base64 padding '='");
        break;
    case OMX_B64_EPADSHORT:
        snprintf(buf, size, "incomplete base64 padding");
        break;
    case OMX_B64_EAFTERPAD:
        snprintf(buf, size, "base64 character %s after padding", c);
        break;
    case OMX_B64_ETRUNC:
        snprintf(buf, size, "truncated base64 (final group of one character)");
        break;
    case OMX_B64_EJSONESC:
        snprintf(buf, size, "invalid escape in JSON string");
        break;
    case OMX_B64_EJSONCHAR:
        if (err->ch == '"')
            snprintf(buf, size, "unescaped quote in JSON string");
        else
            snprintf(buf, size, "control character %s in JSON string", c);
        break;
    default:
        snprintf(buf, size, "base64 error %d", err->code);
        break;
    }
}

/* ---- Lua bindings ---------------------------------------------------- */

/* core.b64encode(s) -> string */
static int l_b64encode(lua_State *L)
{
    size_t n, len;
    const char *s = omx_checkbytes(L, 1, &n);
    omx_buf *b;
    if (n == 0) {
        lua_pushliteral(L, "");
        return 1;
    }
    len = omx_b64_encoded_len(n);
    if (len == 0)
        return luaL_error(L, "b64encode: input too large");
    b = omx_buffer_push(L);
    if (omx_buf_reserve(b, len) != 0)
        return luaL_error(L, "not enough memory");
    omx_b64_encode(s, n, b->data);
    lua_pushlstring(L, b->data, len);
    omx_buf_free(b); /* now, not at the next GC: it may be large */
    return 1;
}

/* core.b64decode(s) -> string | nil, message */
static int l_b64decode(lua_State *L)
{
    size_t n, len = 0, max;
    const char *s = omx_checkbytes(L, 1, &n);
    omx_b64_error err;
    unsigned char tiny[4];
    unsigned char *dst = tiny;
    omx_buf *b = omx_buffer_push(L);
    max = omx_b64_decoded_max(n);
    if (max > sizeof tiny) {
        if (omx_buf_reserve(b, max) != 0)
            return luaL_error(L, "not enough memory");
        dst = (unsigned char *)b->data;
    }
    if (omx_b64_decode(s, n, dst, &len, &err) != OMX_B64_OK) {
        char what[64], msg[128];
        omx_buf_free(b);
        omx_b64_describe(&err, what, sizeof what);
        snprintf(msg, sizeof msg, "%s at byte %lu", what,
                 (unsigned long)err.offset + 1);
        lua_pushnil(L);
        lua_pushstring(L, msg);
        return 2;
    }
    lua_pushlstring(L, (const char *)dst, len);
    omx_buf_free(b);
    return 1;
}

void omx_base64_open(lua_State *L)
{
    static const luaL_Reg funcs[] = {
        {"b64encode", l_b64encode},
        {"b64decode", l_b64decode},
        {NULL, NULL}
    };
    omx_setfuncs(L, funcs, 0);
}
