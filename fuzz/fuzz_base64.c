/* fuzz_base64 — src/base64.c against fuzz/ref.h. The input is decoded as
 * plain base64 (omx_b64_decode) and as the contents of a JSON string
 * (omx_b64_decode_json); each result (status, error code, offset,
 * character, decoded bytes) must equal the reference decoder's, and the
 * output must fit omx_b64_decoded_max exactly-sized buffers. The input is
 * also encoded: the encoding must be padded standard base64 of
 * omx_b64_encoded_len bytes that decodes back to the input, also with
 * '/' escaped as in JSON and in its unpadded URL-safe spelling. Every error must have a description. */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "base64.h"
#include "ref.h"

static void check_describe(const omx_b64_error *err)
{
    char buf[80], tiny[4];
    omx_b64_describe(err, buf, sizeof buf);
    CHECK(strlen(buf) > 0 && strlen(buf) < sizeof buf);
    memset(tiny, 'x', sizeof tiny);
    omx_b64_describe(err, tiny, sizeof tiny);
    CHECK(memchr(tiny, '\0', sizeof tiny) != NULL);
}

/* One decoder (plain or JSON) against the reference. */
static void check_decode(const unsigned char *data, size_t size, int json)
{
    size_t max = omx_b64_decoded_max(size), len = (size_t)-1, rlen = (size_t)-1;
    unsigned char *out = (unsigned char *)ref_alloc(max);
    unsigned char *ref = (unsigned char *)ref_alloc(size);
    omx_b64_error err, rerr;
    int rc, rrc;

    memset(&err, 0xAB, sizeof err);
    rc = json ? omx_b64_decode_json((const char *)data, size, out, &len, &err)
              : omx_b64_decode((const char *)data, size, out, &len, &err);
    rrc = ref_b64_decode(data, size, json, ref, &rlen, &rerr);
    CHECK(rc == rrc);
    CHECK(err.code == rc);
    if (rc == OMX_B64_OK) {
        CHECK(len == rlen);
        CHECK(len <= max);
        CHECK(memcmp(out, ref, len) == 0);
    } else {
        CHECK(err.offset == rerr.offset);
        CHECK(err.offset < size);
        CHECK(err.ch == rerr.ch);
        CHECK(err.escaped == rerr.escaped);
        check_describe(&err);
    }
    free(out);
    free(ref);
}

/* The same input through a stream, fed in pieces whose sizes come from the
 * input itself: output and error must equal the one-call decoder's. */
static void check_stream(const unsigned char *data, size_t size, int json)
{
    size_t max = omx_b64_decoded_max(size), len = 0, olen = 0, pos = 0;
    size_t cap = omx_b64_stream_room(size) + 3;
    unsigned char *one = (unsigned char *)ref_alloc(max);
    unsigned char *out = (unsigned char *)ref_alloc(cap);
    omx_b64_error err, serr;
    omx_b64_stream st;
    unsigned seed = (unsigned)size * 2654435761u;
    int rc, src = OMX_B64_OK;

    rc = json ? omx_b64_decode_json((const char *)data, size, one, &len, &err)
              : omx_b64_decode((const char *)data, size, one, &len, &err);
    omx_b64_stream_init(&st, json ? OMX_B64_JSON : 0, 0);
    while (pos < size && src == OMX_B64_OK) {
        size_t piece, got = 0, used = 0;
        seed = seed * 1103515245u + 12345u;
        piece = 1 + (seed >> 16) % 13;
        if (piece > size - pos)
            piece = size - pos;
        CHECK(olen + omx_b64_stream_room(piece) <= cap);
        src = omx_b64_stream_feed(&st, (const char *)data + pos, piece, out + olen, &got, &used, &serr);
        if (src == OMX_B64_OK)
            CHECK(used == piece);
        olen += got;
        pos += piece;
    }
    if (src == OMX_B64_OK) {
        size_t got = 0;
        src = omx_b64_stream_finish(&st, out + olen, &got, &serr);
        olen += got;
    }
    CHECK(src == rc);
    if (rc == OMX_B64_OK) {
        CHECK(olen == len && memcmp(out, one, len) == 0);
    } else {
        CHECK(serr.code == err.code && serr.offset == err.offset);
        CHECK(serr.ch == err.ch && serr.escaped == err.escaped);
        CHECK(serr.after == err.after);
    }
    free(one);
    free(out);
}

static int is_std_digit(char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z')
        || (c >= '0' && c <= '9') || c == '+' || c == '/';
}

static void check_round_trip(const unsigned char *data, size_t size)
{
    size_t elen = omx_b64_encoded_len(size), i, len = (size_t)-1, max;
    char *enc = (char *)ref_alloc(elen);
    unsigned char *dec;
    omx_b64_error err;

    CHECK(elen == (size + 2) / 3 * 4);
    CHECK(omx_b64_encode(data, size, enc) == elen);
    for (i = 0; i < elen; i++) {
        if (i + 2 >= elen && enc[i] == '=')
            continue;
        CHECK(is_std_digit(enc[i]));
    }
    CHECK(elen < 1 || enc[elen - 1] == '=' || size % 3 == 0);
    CHECK(elen < 2 || enc[elen - 2] == '=' || size % 3 != 1);

    max = omx_b64_decoded_max(elen);
    dec = (unsigned char *)ref_alloc(max);
    CHECK(omx_b64_decode(enc, elen, dec, &len, &err) == OMX_B64_OK);
    CHECK(len == size && memcmp(dec, data, size) == 0);

    /* as a JSON string with every '/' escaped, the way some encoders do */
    {
        char *js = (char *)ref_alloc(2 * elen);
        size_t jn = 0;
        for (i = 0; i < elen; i++) {
            if (enc[i] == '/')
                js[jn++] = '\\';
            js[jn++] = enc[i];
        }
        len = (size_t)-1;
        CHECK(omx_b64_decode_json(js, jn, dec, &len, &err) == OMX_B64_OK);
        CHECK(len == size && memcmp(dec, data, size) == 0);
        free(js);
    }

    /* URL-safe and unpadded */
    for (i = 0; i < elen; i++) {
        if (enc[i] == '+') enc[i] = '-';
        else if (enc[i] == '/') enc[i] = '_';
    }
    while (elen > 0 && enc[elen - 1] == '=')
        elen--;
    len = (size_t)-1;
    CHECK(omx_b64_decode(enc, elen, dec, &len, &err) == OMX_B64_OK);
    CHECK(len == size && memcmp(dec, data, size) == 0);
    free(enc);
    free(dec);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    check_decode(data, size, 0);
    check_decode(data, size, 1);
    check_stream(data, size, 0);
    check_stream(data, size, 1);
    check_round_trip(data, size);
    return 0;
}
