/* fuzz_json_string — the JSON string helpers of src/json.c. For any bytes:
 * omx_json_quoted_len equals what omx_json_quote writes, which equals a
 * byte-by-byte reference quoting; the literal scans as valid JSON; put in
 * {"data":[{"b64_json":<literal>}]} it yields exactly what omx_b64_decode
 * gives for the raw bytes (the same image, or a base64 error at data[1]);
 * and omx_utf8_check agrees with a reference UTF-8 decoder (code point
 * arithmetic rather than byte ranges) on the first bad sequence. */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "base64.h"
#include "json.h"
#include "ref.h"

static size_t ref_quote(const unsigned char *s, size_t n, char *out)
{
    size_t i, o = 0;
    out[o++] = '"';
    for (i = 0; i < n; i++) {
        unsigned c = s[i];
        const char *named = NULL;
        switch (c) {
        case '"': named = "\\\""; break;
        case '\\': named = "\\\\"; break;
        case '\b': named = "\\b"; break;
        case '\f': named = "\\f"; break;
        case '\n': named = "\\n"; break;
        case '\r': named = "\\r"; break;
        case '\t': named = "\\t"; break;
        }
        if (named != NULL) {
            memcpy(out + o, named, 2);
            o += 2;
        } else if (c < 0x20) {
            o += (size_t)sprintf(out + o, "\\u%04x", c);
        } else {
            out[o++] = (char)c;
        }
    }
    out[o++] = '"';
    return o;
}

/* 1-based offset of the first bad sequence, or 0. */
static size_t ref_utf8(const unsigned char *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        unsigned c = s[i];
        size_t len, k;
        unsigned long cp, min;
        if (c < 0x80) {
            i++;
            continue;
        }
        if ((c & 0xE0) == 0xC0) {
            len = 2; cp = c & 0x1F; min = 0x80;
        } else if ((c & 0xF0) == 0xE0) {
            len = 3; cp = c & 0x0F; min = 0x800;
        } else if ((c & 0xF8) == 0xF0) {
            len = 4; cp = c & 0x07; min = 0x10000;
        } else {
            return i + 1;
        }
        if (n - i < len)
            return i + 1;
        for (k = 1; k < len; k++) {
            if ((s[i + k] & 0xC0) != 0x80)
                return i + 1;
            cp = cp << 6 | (s[i + k] & 0x3F);
        }
        if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
            return i + 1;
        i += len;
    }
    return 0;
}

typedef struct one_image {
    unsigned char *room;
    size_t room_size, len;
    int images;
    unsigned long calls;
} one_image;

static unsigned char *room(void *ud, size_t index, size_t have, size_t need)
{
    one_image *c = (one_image *)ud;
    unsigned char *r;
    c->calls++;
    CHECK(index == 1 && have <= need);
    CHECK(c->room != NULL ? have <= c->room_size : have == 0);
    r = (unsigned char *)ref_alloc(need);
    if (have > 0)
        memcpy(r, c->room, have);
    free(c->room);
    c->room = r;
    c->room_size = need;
    return c->room;
}

static int image(void *ud, size_t index, size_t len)
{
    one_image *c = (one_image *)ud;
    c->calls++;
    CHECK(index == 1 && c->images == 0 && len <= c->room_size);
    c->images = 1;
    c->len = len;
    return 0;
}

static int rest(void *ud, const char *p, size_t n)
{
    one_image *c = (one_image *)ud;
    (void)p;
    (void)n;
    c->calls++;
    return 0;
}

static int scan(const char *text, size_t n, one_image *c, omx_json_error *err)
{
    omx_json_images_ops ops;
    memset(c, 0, sizeof *c);
    ops.ud = c;
    ops.image_room = room;
    ops.image = image;
    ops.rest = rest;
    return omx_json_decode_images(text, n, &ops, err);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char head[] = "{\"data\":[{\"b64_json\":", tail[] = "}]}";
    size_t qlen = omx_json_quoted_len((const char *)data, size);
    char *q = (char *)ref_alloc(qlen), *want = (char *)ref_alloc(6 * size + 2);
    char *doc;
    size_t dlen, plen = (size_t)-1;
    unsigned char *plain;
    omx_b64_error berr;
    omx_json_error err;
    one_image c;
    int prc, rc;

    /* quoting */
    CHECK(qlen >= size + 2);
    CHECK(omx_json_quote((const char *)data, size, q) == qlen);
    CHECK(ref_quote(data, size, want) == qlen);
    CHECK(memcmp(q, want, qlen) == 0);
    CHECK(scan(q, qlen, &c, &err) == OMX_JSON_OK && c.images == 0);
    free(c.room);

    /* the literal as an image string decodes like the raw bytes */
    dlen = sizeof head - 1 + qlen + sizeof tail - 1;
    doc = (char *)ref_alloc(dlen);
    memcpy(doc, head, sizeof head - 1);
    memcpy(doc + sizeof head - 1, q, qlen);
    memcpy(doc + sizeof head - 1 + qlen, tail, sizeof tail - 1);
    plain = (unsigned char *)ref_alloc(omx_b64_decoded_max(size));
    prc = omx_b64_decode((const char *)data, size, plain, &plen, &berr);
    rc = scan(doc, dlen, &c, &err);
    if (prc == OMX_B64_OK) {
        CHECK(rc == OMX_JSON_OK);
        CHECK(c.images == 1 && c.len == plen && memcmp(c.room, plain, plen) == 0);
    } else {
        CHECK(rc == OMX_JSON_EBASE64 && err.index == 1);
    }
    free(c.room);

    /* UTF-8 */
    CHECK(omx_utf8_check((const char *)data, size) == ref_utf8(data, size));

    free(q);
    free(want);
    free(doc);
    free(plain);
    return 0;
}
