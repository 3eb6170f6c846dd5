/* sniff.h — recognise an image from its first bytes: PNG, JPEG, WebP, GIF
 * with their pixel size, and HEIC/HEIF/AVIF from the ISO-BMFF brands (no
 * size). Reads only within the N bytes given; meant to be fuzzed. No Lua
 * types here; the binding omx_sniff_open is declared in omixa.h. */
#ifndef OMIXA_SNIFF_H
#define OMIXA_SNIFF_H

#include <stddef.h>
#include <stdint.h>

typedef struct omx_image_info {
    const char *mime;    /* static strings, e.g. "image/png" */
    const char *format;  /* "png", "jpeg", "webp", "gif", "heic", "heif", "avif" */
    uint32_t width;      /* in pixels; both 0 when the size is unknown */
    uint32_t height;     /* (truncated header, HEIF family, no size found) */
    int cut;             /* 1: PNG, JPEG, GIF or WebP whose data ends before
                          * its header reaches the size (never HEIF family) */
} omx_image_info;

/* Fill *INFO and return 1 when the N bytes at P start like a known image
 * (INFO->cut says whether they end before its size); return 0 (and clear
 * *INFO) otherwise. */
int omx_sniff(const void *p, size_t n, omx_image_info *info);

#endif
