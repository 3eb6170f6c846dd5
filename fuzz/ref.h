/* fuzz/ref.h — slow, obvious reference implementations the fuzz targets
 * compare the core against: base64 decoding of plain text and of JSON
 * string contents, written from base64.h's contract one character at a
 * time (no tables, no fast path), and a check that aborts with a message.
 * Header-only: each target includes it. */
#ifndef OMIXA_FUZZ_REF_H
#define OMIXA_FUZZ_REF_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base64.h"

/* A failed property: say which, then abort so libFuzzer saves the input. */
#define CHECK(cond) \
    ((cond) ? (void)0 : ref_fail(__FILE__, __LINE__, #cond))

static inline void ref_fail(const char *file, int line, const char *what)
{
    fprintf(stderr, "%s:%d: check failed: %s\n", file, line, what);
    abort();
}

/* malloc that never returns NULL and gives a distinct block for 0 bytes:
 * every buffer handed to the core is exactly the size it was promised, so
 * ASan sees any write past it. */
static inline void *ref_alloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (p == NULL)
        abort();
    return p;
}

/* The 6-bit value of a digit of either alphabet, or -1. */
static inline int ref_b64_digit(unsigned long c)
{
    if (c >= 'A' && c <= 'Z') return (int)(c - 'A');
    if (c >= 'a' && c <= 'z') return (int)(c - 'a') + 26;
    if (c >= '0' && c <= '9') return (int)(c - '0') + 52;
    if (c == '+' || c == '-') return 62;
    if (c == '/' || c == '_') return 63;
    return -1;
}

static inline int ref_hex(unsigned char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

static inline int ref_b64_error(omx_b64_error *err, int code, size_t offset,
                         unsigned long ch, int escaped)
{
    err->code = code;
    err->offset = offset;
    err->ch = ch;
    err->escaped = escaped;
    return code;
}

/* The decoder of base64.h over S[0..N): with JSON, S is the contents of a
 * JSON string literal. OUT needs room for N bytes. */
static inline int ref_b64_decode(const unsigned char *s, size_t n, int json,
                          unsigned char *out, size_t *outlen,
                          omx_b64_error *err)
{
    unsigned long bits = 0;
    size_t i = 0, o = 0, ndigits = 0, npad = 0, group_start = 0, pad_start = 0;

    while (i < n) {
        size_t at = i;
        unsigned long ch = s[i];
        int escaped = 0, d;

        if (json && ch == '\\') {
            if (i + 1 >= n)
                return ref_b64_error(err, OMX_B64_EJSONESC, at, ch, 0);
            escaped = 1;
            switch (s[i + 1]) {
            case '"': ch = '"'; break;
            case '\\': ch = '\\'; break;
            case '/': ch = '/'; break;
            case 'b': ch = 8; break;
            case 'f': ch = 12; break;
            case 'n': ch = 10; break;
            case 'r': ch = 13; break;
            case 't': ch = 9; break;
            case 'u': {
                int k;
                if (n - i < 6)
                    return ref_b64_error(err, OMX_B64_EJSONESC, at, '\\', 0);
                ch = 0;
                for (k = 2; k < 6; k++) {
                    int h = ref_hex(s[i + k]);
                    if (h < 0)
                        return ref_b64_error(err, OMX_B64_EJSONESC, at, '\\', 0);
                    ch = ch * 16 + (unsigned long)h;
                }
                i += 4;
                break;
            }
            default:
                return ref_b64_error(err, OMX_B64_EJSONESC, at, '\\', 0);
            }
            i += 2;
        } else {
            i++;
            /* raw in a JSON string: no control character, no quote */
            if (json && (ch < 0x20 || ch == '"'))
                return ref_b64_error(err, OMX_B64_EJSONCHAR, at, ch, 0);
        }

        if (ch == ' ' || ch == '\t' || ch == '\n' || ch == '\r')
            continue;
        if (ch == '=') {
            if (ndigits % 4 < 2)
                return ref_b64_error(err, OMX_B64_EPADPOS, at, ch, escaped);
            if (npad == 0)
                pad_start = at;
            npad++;
            if (ndigits % 4 + npad > 4)
                return ref_b64_error(err, OMX_B64_EPADMORE, at, ch, escaped);
            continue;
        }
        d = ref_b64_digit(ch);
        if (d < 0)
            return ref_b64_error(err, OMX_B64_EBADCHAR, at, ch, escaped);
        if (npad)
            return ref_b64_error(err, OMX_B64_EAFTERPAD, at, ch, escaped);
        if (ndigits % 4 == 0)
            group_start = at;
        ndigits++;
        bits = bits << 6 | (unsigned long)d;
        if (ndigits % 4 == 0) {
            out[o++] = (unsigned char)(bits >> 16 & 0xFF);
            out[o++] = (unsigned char)(bits >> 8 & 0xFF);
            out[o++] = (unsigned char)(bits & 0xFF);
            bits = 0;
        }
    }
    switch (ndigits % 4) {
    case 1:
        return ref_b64_error(err, OMX_B64_ETRUNC, group_start, s[group_start], 0);
    case 2:
        if (npad != 0 && npad != 2)
            return ref_b64_error(err, OMX_B64_EPADSHORT, pad_start, '=', 0);
        out[o++] = (unsigned char)(bits >> 4 & 0xFF);
        break;
    case 3:
        out[o++] = (unsigned char)(bits >> 10 & 0xFF);
        out[o++] = (unsigned char)(bits >> 2 & 0xFF);
        break;
    }
    *outlen = o;
    err->code = OMX_B64_OK;
    return OMX_B64_OK;
}

#endif
