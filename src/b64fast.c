/* b64fast.c — the bulk base64 kernels of b64fast.h: a scalar loop that runs
 * everywhere and, on x86-64 with GCC or clang, an AVX2 kernel compiled for
 * that one function (target attribute; the rest of the build stays plain
 * C99) and picked at first use when the CPU and OS support AVX2. The AVX2
 * kernels follow the published approach of W. Mula and D. Lemire ("Faster
 * Base64 Encoding and Decoding Using AVX2 Instructions", 2018): classify
 * characters with two nibble lookups, translate with a third, pack with
 * multiply-adds and shuffles. Each kernel does whole 32-character (24-byte)
 * blocks and hands the rest to the scalar loop, so the results are the same
 * on every path. fuzz/fuzz_b64fast.c includes this file to reach both paths. */
#include <stdint.h>
#include <stdlib.h>

#include "b64fast.h"

static const char b64f_alphabet[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/* Digit values of the standard alphabet; 0xFF for every other byte. */
static const unsigned char b64f_value[256] = {
    255,255,255,255,255,255,255,255,255,255,255,255,255,255,255,255,
    255,255,255,255,255,255,255,255,255,255,255,255,255,255,255,255,
    255,255,255,255,255,255,255,255,255,255,255, 62,255,255,255, 63,
     52, 53, 54, 55, 56, 57, 58, 59, 60, 61,255,255,255,255,255,255,
    255,  0,  1,  2,  3,  4,  5,  6,  7,  8,  9, 10, 11, 12, 13, 14,
     15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25,255,255,255,255,255,
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

static size_t b64f_decode_scalar(const unsigned char *src, size_t n,
                                 unsigned char *dst)
{
    size_t i = 0;
    unsigned char *o = dst;

    /* two groups per step while there are two, then one */
    for (; n - i >= 8; i += 8, o += 6) {
        uint32_t a0 = b64f_value[src[i]], a1 = b64f_value[src[i + 1]],
                 a2 = b64f_value[src[i + 2]], a3 = b64f_value[src[i + 3]],
                 a4 = b64f_value[src[i + 4]], a5 = b64f_value[src[i + 5]],
                 a6 = b64f_value[src[i + 6]], a7 = b64f_value[src[i + 7]];
        uint32_t x = a0 << 18 | a1 << 12 | a2 << 6 | a3;
        uint32_t y = a4 << 18 | a5 << 12 | a6 << 6 | a7;
        if ((a0 | a1 | a2 | a3 | a4 | a5 | a6 | a7) & 0x80)
            break;
        o[0] = (unsigned char)(x >> 16);
        o[1] = (unsigned char)(x >> 8);
        o[2] = (unsigned char)x;
        o[3] = (unsigned char)(y >> 16);
        o[4] = (unsigned char)(y >> 8);
        o[5] = (unsigned char)y;
    }
    for (; n - i >= 4; i += 4, o += 3) {
        uint32_t a0 = b64f_value[src[i]], a1 = b64f_value[src[i + 1]],
                 a2 = b64f_value[src[i + 2]], a3 = b64f_value[src[i + 3]];
        uint32_t x = a0 << 18 | a1 << 12 | a2 << 6 | a3;
        if ((a0 | a1 | a2 | a3) & 0x80)
            break;
        o[0] = (unsigned char)(x >> 16);
        o[1] = (unsigned char)(x >> 8);
        o[2] = (unsigned char)x;
    }
    return i;
}

static size_t b64f_encode_scalar(const unsigned char *src, size_t n,
                                 char *dst)
{
    size_t i = 0;
    char *o = dst;

    for (; n - i >= 3; i += 3, o += 4) {
        uint32_t x = (uint32_t)src[i] << 16 | (uint32_t)src[i + 1] << 8
                   | src[i + 2];
        o[0] = b64f_alphabet[x >> 18];
        o[1] = b64f_alphabet[(x >> 12) & 63];
        o[2] = b64f_alphabet[(x >> 6) & 63];
        o[3] = b64f_alphabet[x & 63];
    }
    return i;
}

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>

#define B64F_AVX2 __attribute__((target("avx2")))

/* 32 characters to 24 bytes per step while the block is all digits. */
B64F_AVX2
static size_t b64f_decode_avx2(const unsigned char *src, size_t n,
                               unsigned char *dst)
{
    /* A byte is a digit iff lut_lo[low nibble] & lut_hi[high nibble] is 0.
     * Each high nibble gets one bit; lut_lo sets that bit for the low
     * nibbles the row does not allow:
     *   0x01 row 2 allows B F ('+' '/')     0x02 row 3 allows 0-9
     *   0x04 rows 4, 6 allow 1-F            0x08 rows 5, 7 allow 0-A
     *   0x10 rows 0, 1, 8-F allow nothing */
    const __m256i lut_lo = _mm256_setr_epi8(
        0x15, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11,
        0x11, 0x11, 0x13, 0x1A, 0x1B, 0x1B, 0x1B, 0x1A,
        0x15, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11,
        0x11, 0x11, 0x13, 0x1A, 0x1B, 0x1B, 0x1B, 0x1A);
    const __m256i lut_hi = _mm256_setr_epi8(
        0x10, 0x10, 0x01, 0x02, 0x04, 0x08, 0x04, 0x08,
        0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10,
        0x10, 0x10, 0x01, 0x02, 0x04, 0x08, 0x04, 0x08,
        0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10);
    /* Value = character + offset by high nibble; '/' (row 2, like '+')
     * is moved to row 1 by adding its cmpeq mask (-1). */
    const __m256i lut_off = _mm256_setr_epi8(
        0, 63 - '/', 62 - '+', 52 - '0', 0 - 'A', 0 - 'A', 26 - 'a', 26 - 'a',
        0, 0, 0, 0, 0, 0, 0, 0,
        0, 63 - '/', 62 - '+', 52 - '0', 0 - 'A', 0 - 'A', 26 - 'a', 26 - 'a',
        0, 0, 0, 0, 0, 0, 0, 0);
    const __m256i nib = _mm256_set1_epi8(0x0F);
    const __m256i slash = _mm256_set1_epi8('/');
    /* [a b c d] -> a<<6|b, c<<6|d -> a<<18|b<<12|c<<6|d (little-endian) */
    const __m256i mul_pair = _mm256_set1_epi32(0x01400140);
    const __m256i mul_quad = _mm256_set1_epi32(0x00011000);
    /* the 3 low bytes of each dword, high first; 12 per 128-bit lane */
    const __m256i pack = _mm256_setr_epi8(
        2, 1, 0, 6, 5, 4, 10, 9, 8, 14, 13, 12, -1, -1, -1, -1,
        2, 1, 0, 6, 5, 4, 10, 9, 8, 14, 13, 12, -1, -1, -1, -1);
    const __m256i join = _mm256_setr_epi32(0, 1, 2, 4, 5, 6, 3, 7);
    size_t i = 0;
    unsigned char *o = dst;

    for (; n - i >= 32; i += 32, o += 24) {
        __m256i in = _mm256_loadu_si256((const __m256i *)(const void *)(src + i));
        __m256i hi = _mm256_and_si256(_mm256_srli_epi32(in, 4), nib);
        __m256i lo = _mm256_and_si256(in, nib);
        __m256i bad = _mm256_and_si256(_mm256_shuffle_epi8(lut_lo, lo),
                                       _mm256_shuffle_epi8(lut_hi, hi));
        __m256i v;
        if (!_mm256_testz_si256(bad, bad))
            break;
        hi = _mm256_add_epi8(hi, _mm256_cmpeq_epi8(in, slash));
        v = _mm256_add_epi8(in, _mm256_shuffle_epi8(lut_off, hi));
        v = _mm256_maddubs_epi16(v, mul_pair);
        v = _mm256_madd_epi16(v, mul_quad);
        v = _mm256_shuffle_epi8(v, pack);
        v = _mm256_permutevar8x32_epi32(v, join);
        /* 24 bytes exactly: nothing past the output of consumed groups */
        _mm_storeu_si128((__m128i *)(void *)o, _mm256_castsi256_si128(v));
        _mm_storel_epi64((__m128i *)(void *)(o + 16),
                         _mm256_extracti128_si256(v, 1));
    }
    return i + b64f_decode_scalar(src + i, n - i, o);
}

/* 24 bytes to 32 characters per step. */
B64F_AVX2
static size_t b64f_encode_avx2(const unsigned char *src, size_t n, char *dst)
{
    /* Lane 0 holds bytes 0-15 of the block, lane 1 bytes 8-23 (so no load
     * passes byte 23); each group x y z becomes the dword bytes y x z y. */
    const __m256i spread = _mm256_setr_epi8(
        1, 0, 2, 1, 4, 3, 5, 4, 7, 6, 8, 7, 10, 9, 11, 10,
        5, 4, 6, 5, 8, 7, 9, 8, 11, 10, 12, 11, 14, 13, 15, 14);
    /* words x:y and y:z -> bytes x>>2, (x:y)>>4 & 63, (y:z)>>6 & 63, z & 63:
     * the right shifts by mulhi (x 2^6, 2^10), the left ones by mullo */
    const __m256i mask_hi = _mm256_set1_epi32(0x0FC0FC00);
    const __m256i mul_hi = _mm256_set1_epi32(0x04000040);
    const __m256i mask_lo = _mm256_set1_epi32(0x003F03F0);
    const __m256i mul_lo = _mm256_set1_epi32(0x01000010);
    /* 6-bit value -> character: class 0 (26-51), 1-10 (52-61), 11 (62),
     * 12 (63), 13 (0-25) indexes the offset to add */
    const __m256i lut_off = _mm256_setr_epi8(
        'a' - 26, '0' - 52, '0' - 52, '0' - 52, '0' - 52, '0' - 52, '0' - 52,
        '0' - 52, '0' - 52, '0' - 52, '0' - 52, '+' - 62, '/' - 63, 'A', 0, 0,
        'a' - 26, '0' - 52, '0' - 52, '0' - 52, '0' - 52, '0' - 52, '0' - 52,
        '0' - 52, '0' - 52, '0' - 52, '0' - 52, '+' - 62, '/' - 63, 'A', 0, 0);
    const __m256i c51 = _mm256_set1_epi8(51);
    const __m256i c26 = _mm256_set1_epi8(26);
    const __m256i c13 = _mm256_set1_epi8(13);
    size_t i = 0;
    char *o = dst;

    for (; n - i >= 24; i += 24, o += 32) {
        __m128i a = _mm_loadu_si128((const __m128i *)(const void *)(src + i));
        __m128i b = _mm_loadu_si128((const __m128i *)(const void *)(src + i + 8));
        __m256i in = _mm256_inserti128_si256(_mm256_castsi128_si256(a), b, 1);
        __m256i v, cls;
        in = _mm256_shuffle_epi8(in, spread);
        v = _mm256_or_si256(
            _mm256_mulhi_epu16(_mm256_and_si256(in, mask_hi), mul_hi),
            _mm256_mullo_epi16(_mm256_and_si256(in, mask_lo), mul_lo));
        cls = _mm256_subs_epu8(v, c51);
        cls = _mm256_or_si256(cls,
                              _mm256_and_si256(_mm256_cmpgt_epi8(c26, v), c13));
        v = _mm256_add_epi8(v, _mm256_shuffle_epi8(lut_off, cls));
        _mm256_storeu_si256((__m256i *)(void *)o, v);
    }
    return i + b64f_encode_scalar(src + i, n - i, o);
}

/* 0 not yet chosen, 1 scalar, 2 AVX2. Racing first calls all store the
 * same answer. */
static int b64f_impl;

static int b64f_choose(void)
{
    int impl = __atomic_load_n(&b64f_impl, __ATOMIC_RELAXED);
    if (impl == 0) {
        const char *no = getenv("OMIXA_NO_SIMD");
        impl = 1;
        if (no == NULL || no[0] == '\0' || (no[0] == '0' && no[1] == '\0')) {
            /* also checks that the OS saves the YMM registers */
            __builtin_cpu_init();
            if (__builtin_cpu_supports("avx2"))
                impl = 2;
        }
        __atomic_store_n(&b64f_impl, impl, __ATOMIC_RELAXED);
    }
    return impl;
}

size_t omx_b64_decode_fast(const unsigned char *src, size_t n,
                           unsigned char *dst)
{
    if (b64f_choose() == 2)
        return b64f_decode_avx2(src, n, dst);
    return b64f_decode_scalar(src, n, dst);
}

size_t omx_b64_encode_fast(const unsigned char *src, size_t n, char *dst)
{
    if (b64f_choose() == 2)
        return b64f_encode_avx2(src, n, dst);
    return b64f_encode_scalar(src, n, dst);
}

#else

size_t omx_b64_decode_fast(const unsigned char *src, size_t n,
                           unsigned char *dst)
{
    return b64f_decode_scalar(src, n, dst);
}

size_t omx_b64_encode_fast(const unsigned char *src, size_t n, char *dst)
{
    return b64f_encode_scalar(src, n, dst);
}

#endif
