/* base64.c — base64 encode/decode (see base64.h) and core.b64encode,
 * core.b64decode. Decoding is one table-driven pass from the input straight
 * into the output: eight clean characters at a time, and a per-character
 * path only for whitespace, padding, JSON escapes and errors. */
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <lua.h>
#include <lauxlib.h>

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
    size_t i = 0;
    uint32_t x;
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

static int b64_fail(omx_b64_error *err, int code, const unsigned char *s,
                    const unsigned char *at, unsigned long ch, int escaped)
{
    err->code = code;
    err->offset = (size_t)(at - s);
    err->ch = ch;
    err->escaped = escaped;
    return code;
}

/* The decoder, for plain text (JSON = 0) or JSON string contents (1); each
 * public function instantiates it with a constant so the test folds away. */
B64_INLINE int b64_decode_core(const unsigned char *s, size_t n,
                               unsigned char *out, size_t *outlen,
                               omx_b64_error *err, int json)
{
    const unsigned char *p = s, *const e = s + n;
    const unsigned char *qstart = s, *padstart = s;
    unsigned char *o = out;
    uint32_t acc = 0;
    unsigned nq = 0, pad = 0;

    for (;;) {
        const unsigned char *at;
        unsigned long ch;
        unsigned v;
        int escaped = 0;

        if (nq == 0) {
            /* The hot loop: whole groups of clean digits. */
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
            if (e - p < 2)
                return b64_fail(err, OMX_B64_EJSONESC, s, at, ch, 0);
            switch (p[1]) {
            case '"': case '\\': case '/': ch = p[1]; break;
            case 'b': ch = '\b'; break;
            case 'f': ch = '\f'; break;
            case 'n': ch = '\n'; break;
            case 'r': ch = '\r'; break;
            case 't': ch = '\t'; break;
            case 'u': {
                int h0, h1, h2, h3;
                if (e - p < 6 || (h0 = hexval(p[2])) < 0 || (h1 = hexval(p[3])) < 0
                    || (h2 = hexval(p[4])) < 0 || (h3 = hexval(p[5])) < 0)
                    return b64_fail(err, OMX_B64_EJSONESC, s, at, ch, 0);
                ch = (unsigned long)(h0 << 12 | h1 << 8 | h2 << 4 | h3);
                p += 4;
                break;
            }
            default:
                return b64_fail(err, OMX_B64_EJSONESC, s, at, ch, 0);
            }
            p += 2;
            escaped = 1;
            v = ch < 256 ? b64_class[ch] : B64_BAD;
            if (v == B64_ESC || v == B64_CTL)
                v = B64_BAD;
        } else {
            p++;
            if (json && (v == B64_CTL || ch == '"' || (v == B64_WS && ch != ' ')))
                return b64_fail(err, OMX_B64_EJSONCHAR, s, at, ch, 0);
            if (v == B64_ESC || v == B64_CTL)
                v = B64_BAD;
        }

        if (v < 64) {
            if (pad)
                return b64_fail(err, OMX_B64_EAFTERPAD, s, at, ch, escaped);
            if (nq == 0)
                qstart = at;
            acc = acc << 6 | v;
            if (++nq == 4) {
                o[0] = (unsigned char)(acc >> 16);
                o[1] = (unsigned char)(acc >> 8);
                o[2] = (unsigned char)acc;
                o += 3;
                nq = 0;
                acc = 0;
            }
        } else if (v == B64_PAD) {
            if (nq < 2)
                return b64_fail(err, OMX_B64_EPADPOS, s, at, ch, escaped);
            if (pad == 0)
                padstart = at;
            if (nq + ++pad > 4)
                return b64_fail(err, OMX_B64_EPADMORE, s, at, ch, escaped);
        } else if (v != B64_WS) {
            return b64_fail(err, OMX_B64_EBADCHAR, s, at, ch, escaped);
        }
        /* After padding, nq stays 2 or 3, so the hot loop stays off. */
    }

    if (nq == 1)
        return b64_fail(err, OMX_B64_ETRUNC, s, qstart, *qstart, 0);
    if (pad && nq + pad != 4)
        return b64_fail(err, OMX_B64_EPADSHORT, s, padstart, '=', 0);
    if (nq == 2) {
        *o++ = (unsigned char)(acc >> 4);
    } else if (nq == 3) {
        *o++ = (unsigned char)(acc >> 10);
        *o++ = (unsigned char)(acc >> 2);
    }
    *outlen = (size_t)(o - out);
    err->code = OMX_B64_OK;
    return OMX_B64_OK;
}

int omx_b64_decode(const char *src, size_t n, unsigned char *dst,
                   size_t *outlen, omx_b64_error *err)
{
    return b64_decode_core((const unsigned char *)src, n, dst, outlen, err, 0);
}

int omx_b64_decode_json(const char *src, size_t n, unsigned char *dst,
                        size_t *outlen, omx_b64_error *err)
{
    return b64_decode_core((const unsigned char *)src, n, dst, outlen, err, 1);
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
