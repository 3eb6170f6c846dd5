/* fuzz_sniff — omx_sniff (src/sniff.c) on any bytes. Reads stay inside the
 * buffer (ASan: every buffer is exactly its size); the answer is consistent
 * (recognised iff mime and format are set, mime is "image/<format>", width
 * and height both known or both 0); the
 * format agrees with the magic numbers of PNG, JPEG, GIF and WebP, and only
 * an ISO-BMFF 'ftyp' box gives heic/heif/avif; PNG, GIF and WebP sizes are
 * what a reference reads from their fixed places, a JPEG size is carried by
 * an SOFn segment of the data. Prefixes of the input never
 * say more than the whole: a recognised prefix has the whole's format (or,
 * for ISO-BMFF, a brand the whole outranks) and a size only when the whole
 * has that same size. A header cut before the size (cut set) has no size,
 * never for ISO-BMFF; a recognised prefix that is not cut has decided:
 * the whole has exactly its size (or none). */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "sniff.h"
#include "ref.h"

static const char *magic_format(const uint8_t *p, size_t n)
{
    if (n >= 8 && memcmp(p, "\x89PNG\r\n\x1a\n", 8) == 0)
        return "png";
    if (n >= 3 && p[0] == 0xFF && p[1] == 0xD8 && p[2] == 0xFF)
        return "jpeg";
    if (n >= 6 && (memcmp(p, "GIF87a", 6) == 0 || memcmp(p, "GIF89a", 6) == 0))
        return "gif";
    if (n >= 12 && memcmp(p, "RIFF", 4) == 0 && memcmp(p + 8, "WEBP", 4) == 0)
        return "webp";
    return NULL;
}

/* The ISO-BMFF formats, by the precedence the sniffer gives their brands. */
static int heif_rank(const char *format)
{
    if (strcmp(format, "avif") == 0) return 3;
    if (strcmp(format, "heic") == 0) return 2;
    if (strcmp(format, "heif") == 0) return 1;
    return 0;
}

static uint32_t rd(const uint8_t *p, int bytes, int big)
{
    uint32_t v = 0;
    int k;
    for (k = 0; k < bytes; k++)
        v |= (uint32_t)p[big ? bytes - 1 - k : k] << (8 * k);
    return v;
}

/* The size the format's spec puts at a fixed place (PNG IHDR, GIF screen,
 * WebP VP8/VP8L/VP8X): 1 and *W, *H when the bytes are there, else 0. For
 * JPEG, whether some SOFn segment in the data carries W x H. */
static int ref_size(const char *format, const uint8_t *p, size_t n, uint32_t *w, uint32_t *h)
{
    if (strcmp(format, "png") == 0 && n >= 24 && rd(p + 8, 4, 1) == 13
        && memcmp(p + 12, "IHDR", 4) == 0) {
        *w = rd(p + 16, 4, 1);
        *h = rd(p + 20, 4, 1);
        return *w <= 0x7FFFFFFFu && *h <= 0x7FFFFFFFu;
    }
    if (strcmp(format, "gif") == 0 && n >= 10) {
        *w = rd(p + 6, 2, 0);
        *h = rd(p + 8, 2, 0);
        return 1;
    }
    if (strcmp(format, "webp") == 0 && n >= 30 && memcmp(p + 12, "VP8 ", 4) == 0
        && memcmp(p + 23, "\x9d\x01\x2a", 3) == 0) {
        *w = rd(p + 26, 2, 0) % 16384;
        *h = rd(p + 28, 2, 0) % 16384;
        return 1;
    }
    if (strcmp(format, "webp") == 0 && n >= 25 && memcmp(p + 12, "VP8L", 4) == 0 && p[20] == 0x2F) {
        *w = rd(p + 21, 2, 0) % 16384 + 1;
        *h = (rd(p + 22, 3, 0) >> 6) % 16384 + 1;
        return 1;
    }
    if (strcmp(format, "webp") == 0 && n >= 30 && memcmp(p + 12, "VP8X", 4) == 0) {
        *w = rd(p + 24, 3, 0) + 1;
        *h = rd(p + 27, 3, 0) + 1;
        return 1;
    }
    if (strcmp(format, "jpeg") == 0 && *w != 0) {
        size_t j;
        for (j = 0; j + 9 <= n; j++)
            if (p[j] == 0xFF && p[j + 1] >= 0xC0 && p[j + 1] <= 0xCF && p[j + 1] != 0xC4
                && p[j + 1] != 0xC8 && p[j + 1] != 0xCC
                && rd(p + j + 5, 2, 1) == *h && rd(p + j + 7, 2, 1) == *w)
                return 1;
        CHECK(!"a JPEG size with no SOFn segment carrying it");
    }
    return 0;
}

static void check_one(const uint8_t *p, size_t n, omx_image_info *info)
{
    int rc;
    const char *magic = magic_format(p, n);
    memset(info, 0xAB, sizeof *info);
    rc = omx_sniff(p, n, info);
    CHECK(rc == 0 || rc == 1);
    if (rc == 0) {
        CHECK(info->mime == NULL && info->format == NULL);
        CHECK(info->width == 0 && info->height == 0);
        CHECK(info->cut == 0);
        CHECK(magic == NULL);
        return;
    }
    CHECK(info->cut == 0 || info->cut == 1);
    if (info->cut)
        CHECK(info->width == 0 && magic != NULL);
    CHECK(info->mime != NULL && info->format != NULL);
    CHECK(strncmp(info->mime, "image/", 6) == 0 && strcmp(info->mime + 6, info->format) == 0);
    CHECK((info->width == 0) == (info->height == 0));
    if (magic != NULL) {
        CHECK(strcmp(info->format, magic) == 0);
    } else {
        CHECK(n >= 12 && memcmp(p + 4, "ftyp", 4) == 0);
        CHECK(heif_rank(info->format) > 0 && info->width == 0);
    }
    {
        uint32_t w = info->width, h = info->height;
        if (ref_size(info->format, p, n, &w, &h) && w != 0 && h != 0)
            CHECK(info->width == w && info->height == h);
        else if (strcmp(info->format, "jpeg") != 0)
            CHECK(info->width == 0);
    }
}

/* The first LEN bytes (in a block of exactly that size) against WHOLE. */
static void check_prefix(const uint8_t *data, size_t len, const omx_image_info *whole)
{
    omx_image_info part;
    uint8_t *copy = (uint8_t *)ref_alloc(len);
    memcpy(copy, data, len);
    check_one(copy, len, &part);
    free(copy);
    if (part.format == NULL)
        return;
    CHECK(whole->format != NULL);
    if (heif_rank(part.format) > 0)
        CHECK(heif_rank(whole->format) >= heif_rank(part.format));
    else
        CHECK(strcmp(part.format, whole->format) == 0);
    if (part.width != 0 || (!part.cut && heif_rank(part.format) == 0))
        CHECK(part.width == whole->width && part.height == whole->height);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    omx_image_info whole;
    size_t k;

    check_one(data, size, &whole);
    /* every prefix of a short input; a few of a long one */
    if (size <= 64) {
        for (k = 0; k < size; k++)
            check_prefix(data, k, &whole);
    } else {
        check_prefix(data, 12, &whole);
        check_prefix(data, 30, &whole);
        check_prefix(data, size / 2, &whole);
        check_prefix(data, size - 1, &whole);
        check_prefix(data, data[0] % size, &whole);
    }
    return 0;
}
