/* sniff.c — image type and pixel size from the first bytes (see sniff.h),
 * and core.sniff. Every read is bounds-checked against N: input comes from
 * the network and from users' files, and this is fuzzed. */
#include <string.h>
#include <lua.h>
#include <lauxlib.h>

#include "sniff.h"
#include "buffer.h"
#include "compat.h"
#include "omixa.h"

static uint32_t be16(const unsigned char *p) { return (uint32_t)p[0] << 8 | p[1]; }
static uint32_t le16(const unsigned char *p) { return (uint32_t)p[1] << 8 | p[0]; }
static uint32_t le24(const unsigned char *p)
{
    return (uint32_t)p[2] << 16 | (uint32_t)p[1] << 8 | p[0];
}
static uint32_t be32(const unsigned char *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}
static uint32_t le32(const unsigned char *p)
{
    return (uint32_t)p[3] << 24 | (uint32_t)p[2] << 16 | (uint32_t)p[1] << 8 | p[0];
}

static int found(omx_image_info *info, const char *mime, const char *format)
{
    info->mime = mime;
    info->format = format;
    info->width = info->height = 0;
    info->cut = 0;
    return 1;
}

/* The data ended before the size: nothing is known of it. */
static int cut(omx_image_info *info)
{
    info->cut = 1;
    return 1;
}

/* A size is reported only when both sides are known and non-zero. */
static void set_size(omx_image_info *info, uint32_t w, uint32_t h)
{
    if (w != 0 && h != 0) {
        info->width = w;
        info->height = h;
    }
}

/* PNG: the signature, then IHDR (length 13) first, width/height big-endian
 * and at most 2^31 - 1. */
static int sniff_png(const unsigned char *p, size_t n, omx_image_info *info)
{
    found(info, "image/png", "png");
    if (n < 24)
        return cut(info);
    if (be32(p + 8) == 13 && memcmp(p + 12, "IHDR", 4) == 0) {
        uint32_t w = be32(p + 16), h = be32(p + 20);
        if (w <= 0x7FFFFFFFu && h <= 0x7FFFFFFFu)
            set_size(info, w, h);
    }
    return 1;
}

/* SOFn frame headers: C0..CF except DHT (C4), JPG (C8) and DAC (CC). */
static int jpeg_is_sof(unsigned m)
{
    return m >= 0xC0 && m <= 0xCF && m != 0xC4 && m != 0xC8 && m != 0xCC;
}

/* JPEG: walk the marker segments from SOI to the first frame header. Fill
 * bytes (0xFF runs) precede a marker; SOI, TEM and RSTn stand alone; every
 * other marker carries a 2-byte length that counts itself. Scan data (after
 * SOS) is not searched: a frame header always precedes it. */
static int sniff_jpeg(const unsigned char *p, size_t n, omx_image_info *info)
{
    size_t i = 2;
    found(info, "image/jpeg", "jpeg");
    for (;;) {
        unsigned m;
        size_t len;
        if (i >= n)
            return cut(info);
        if (p[i] != 0xFF)
            return 1;
        while (i < n && p[i] == 0xFF)
            i++;
        if (i >= n)
            return cut(info);
        m = p[i++];
        if (m == 0x01 || m == 0xD8 || (m >= 0xD0 && m <= 0xD7))
            continue;
        if (m == 0x00 || m == 0xD9 || m == 0xDA)
            return 1;
        if (n - i < 2)
            return cut(info);
        len = be16(p + i);
        if (len < 2)
            return 1;
        if (jpeg_is_sof(m)) {
            /* length, sample precision, height, width */
            if (len < 7)
                return 1;
            if (n - i < 7)
                return cut(info);
            set_size(info, be16(p + i + 5), be16(p + i + 3));
            return 1;
        }
        if (len > n - i)
            return cut(info);
        i += len;
    }
}

/* GIF: the logical screen descriptor follows the 6-byte signature. */
static int sniff_gif(const unsigned char *p, size_t n, omx_image_info *info)
{
    found(info, "image/gif", "gif");
    if (n < 10)
        return cut(info);
    set_size(info, le16(p + 6), le16(p + 8));
    return 1;
}

/* WebP: RIFF/WEBP, then the first chunk says which kind. */
static int sniff_webp(const unsigned char *p, size_t n, omx_image_info *info)
{
    found(info, "image/webp", "webp");
    if (n < 16)
        return cut(info);
    if (memcmp(p + 12, "VP8 ", 4) == 0) {
        /* lossy: 3-byte frame tag, start code 9D 01 2A, 14-bit sizes */
        if (n < 30)
            return cut(info);
        if (p[23] == 0x9D && p[24] == 0x01 && p[25] == 0x2A)
            set_size(info, le16(p + 26) & 0x3FFF, le16(p + 28) & 0x3FFF);
    } else if (memcmp(p + 12, "VP8L", 4) == 0) {
        /* lossless: signature 0x2F, then 14 bits each of width-1, height-1 */
        if (n < 25)
            return cut(info);
        if (p[20] == 0x2F) {
            uint32_t bits = le32(p + 21);
            set_size(info, (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1);
        }
    } else if (memcmp(p + 12, "VP8X", 4) == 0) {
        /* extended: flags, 3 reserved bytes, 24 bits each of canvas-1 */
        if (n < 30)
            return cut(info);
        set_size(info, le24(p + 24) + 1, le24(p + 27) + 1);
    }
    return 1;
}

enum { BRAND_NONE, BRAND_AVIF, BRAND_HEIC, BRAND_HEIF };

static int brand_kind(const unsigned char *b)
{
    static const struct { char name[5]; int kind; } brands[] = {
        {"avif", BRAND_AVIF}, {"avis", BRAND_AVIF},
        {"heic", BRAND_HEIC}, {"heix", BRAND_HEIC},
        {"hevc", BRAND_HEIC}, {"hevx", BRAND_HEIC},
        {"mif1", BRAND_HEIF}, {"msf1", BRAND_HEIF},
    };
    size_t i;
    for (i = 0; i < sizeof brands / sizeof brands[0]; i++)
        if (memcmp(b, brands[i].name, 4) == 0)
            return brands[i].kind;
    return BRAND_NONE;
}

/* ISO-BMFF: a leading 'ftyp' box; the major brand decides when it is AVIF
 * or HEIC, else the compatible brands do (AVIF over HEIC over plain HEIF:
 * the generic mif1/msf1 usually sit beside the specific brand). */
static int sniff_ftyp(const unsigned char *p, size_t n, omx_image_info *info)
{
    uint32_t size = be32(p);
    size_t hdr = 8, end = n, i;
    int major, seen[4] = {0, 0, 0, 0};
    if (size == 1) {
        /* 64-bit largesize; an ftyp that big is nonsense, but bound it. */
        hdr = 16;
    } else if (size != 0) {
        if (size < 16)
            return 0;
        if (size < end)
            end = size;
    }
    if (n < hdr + 4)
        return 0;
    major = brand_kind(p + hdr);
    seen[major] = 1;
    for (i = hdr + 8; i + 4 <= end; i += 4)
        seen[brand_kind(p + i)] = 1;
    if (major != BRAND_AVIF && major != BRAND_HEIC)
        major = seen[BRAND_AVIF] ? BRAND_AVIF
              : seen[BRAND_HEIC] ? BRAND_HEIC
              : seen[BRAND_HEIF] ? BRAND_HEIF : BRAND_NONE;
    switch (major) {
    case BRAND_AVIF: return found(info, "image/avif", "avif");
    case BRAND_HEIC: return found(info, "image/heic", "heic");
    case BRAND_HEIF: return found(info, "image/heif", "heif");
    default: return 0;
    }
}

int omx_sniff(const void *data, size_t n, omx_image_info *info)
{
    const unsigned char *p = (const unsigned char *)data;
    memset(info, 0, sizeof *info);
    if (n >= 8 && memcmp(p, "\x89PNG\r\n\x1a\n", 8) == 0)
        return sniff_png(p, n, info);
    if (n >= 3 && p[0] == 0xFF && p[1] == 0xD8 && p[2] == 0xFF)
        return sniff_jpeg(p, n, info);
    if (n >= 6 && (memcmp(p, "GIF87a", 6) == 0 || memcmp(p, "GIF89a", 6) == 0))
        return sniff_gif(p, n, info);
    if (n >= 12 && memcmp(p, "RIFF", 4) == 0 && memcmp(p + 8, "WEBP", 4) == 0)
        return sniff_webp(p, n, info);
    if (n >= 12 && memcmp(p + 4, "ftyp", 4) == 0 && sniff_ftyp(p, n, info))
        return 1;
    memset(info, 0, sizeof *info);
    return 0;
}

/* core.sniff(bytes [, prefix]) -> { mime=, format=, width=, height= } | nil:
 * nil when the header is cut before the size, unless PREFIX says the bytes
 * are only the first of an image (then mime and format without a size). */
static int l_sniff(lua_State *L)
{
    size_t n;
    const char *p = omx_checkbytes(L, 1, &n);
    int prefix = lua_toboolean(L, 2);
    omx_image_info info;
    if (!omx_sniff(p, n, &info) || (info.cut && !prefix)) {
        lua_pushnil(L);
        return 1;
    }
    lua_createtable(L, 0, 4);
    lua_pushstring(L, info.mime);
    lua_setfield(L, -2, "mime");
    lua_pushstring(L, info.format);
    lua_setfield(L, -2, "format");
    if (info.width != 0) {
        lua_pushinteger(L, (lua_Integer)info.width);
        lua_setfield(L, -2, "width");
        lua_pushinteger(L, (lua_Integer)info.height);
        lua_setfield(L, -2, "height");
    }
    return 1;
}

void omx_sniff_open(lua_State *L)
{
    lua_pushcfunction(L, l_sniff);
    lua_setfield(L, -2, "sniff");
}
