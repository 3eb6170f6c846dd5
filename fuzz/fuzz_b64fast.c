/* fuzz_b64fast — src/b64fast.c's kernels against obvious references. The
 * file is included, not linked, so that each kernel is called directly: the
 * scalar loop, the AVX2 one when this CPU has AVX2, and the public
 * functions (whichever path OMIXA_NO_SIMD and the CPU pick). Each decoder
 * runs on the input as it is and on the input mapped mostly onto the
 * standard alphabet (bytes F8-FF become '=', '\n', '-', '_', '\\', ' ',
 * 0x80, 0xFF), each at two alignments. Properties (the guarantees of
 * b64fast.h):
 *   decode: consumed C is exactly 4 * floor(K / 4), K the offset of the
 *     first non-standard-digit (N when none); DST[0..C/4*3) is the reference
 *     decoding of SRC[0..C); the rest of DST (N/4*3 bytes, exactly
 *     allocated) is untouched.
 *   encode: consumed C is N/3*3; DST (exactly C/3*4 bytes) is the
 *     reference encoding of SRC[0..C).
 * Inputs are exactly-sized heap blocks, so ASan sees any read past them. */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "b64fast.c"
#include "ref.h"

typedef size_t (*decode_fn)(const unsigned char *, size_t, unsigned char *);
typedef size_t (*encode_fn)(const unsigned char *, size_t, char *);

static const char std_alphabet[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static int is_std_digit(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z')
        || (c >= '0' && c <= '9') || c == '+' || c == '/';
}

static void check_decode(decode_fn fn, const unsigned char *src, size_t n)
{
    size_t cap = n / 4 * 3, k = 0, c, rlen = (size_t)-1, i;
    unsigned char *dst = (unsigned char *)ref_alloc(cap);
    unsigned char *ref = (unsigned char *)ref_alloc(n);
    omx_b64_error err;

    memset(dst, 0xA5, cap);
    while (k < n && is_std_digit(src[k]))
        k++;
    c = fn(src, n, dst);
    CHECK(c == k / 4 * 4);
    CHECK(ref_b64_decode(src, c, 0, ref, &rlen, &err) == OMX_B64_OK);
    CHECK(rlen == c / 4 * 3);
    CHECK(memcmp(dst, ref, rlen) == 0);
    for (i = rlen; i < cap; i++)
        CHECK(dst[i] == 0xA5);
    free(dst);
    free(ref);
}

static void check_encode(encode_fn fn, const unsigned char *src, size_t n)
{
    size_t len = n / 3 * 4, i;
    char *dst = (char *)ref_alloc(len);

    CHECK(fn(src, n, dst) == n / 3 * 3);
    /* bit by bit: output character j is bits 6j..6j+5 of the input */
    for (i = 0; i < len; i++) {
        unsigned v = 0, b;
        for (b = 0; b < 6; b++) {
            size_t bit = i * 6 + b;
            v = v << 1 | ((src[bit / 8] >> (7 - bit % 8)) & 1u);
        }
        CHECK(dst[i] == std_alphabet[v]);
    }
    free(dst);
}

/* Every kernel on SRC[0..N) and on SRC[1..N). */
static void check_all(const unsigned char *src, size_t n)
{
    size_t skip;
    for (skip = 0; skip < 2 && skip <= n; skip++) {
        const unsigned char *s = src + skip;
        size_t m = n - skip;
        check_decode(b64f_decode_scalar, s, m);
        check_decode(omx_b64_decode_fast, s, m);
        check_encode(b64f_encode_scalar, s, m);
        check_encode(omx_b64_encode_fast, s, m);
#if defined(__x86_64__) && defined(__GNUC__)
        if (__builtin_cpu_supports("avx2")) {
            check_decode(b64f_decode_avx2, s, m);
            check_encode(b64f_encode_avx2, s, m);
        }
#endif
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const unsigned char special[8] =
        { '=', '\n', '-', '_', '\\', ' ', 0x80, 0xFF };
    unsigned char *copy = (unsigned char *)ref_alloc(size);
    size_t i;

    memcpy(copy, data, size);
    check_all(copy, size);
    for (i = 0; i < size; i++)
        copy[i] = data[i] >= 0xF8 ? special[data[i] - 0xF8]
                                  : (unsigned char)std_alphabet[data[i] & 63];
    check_all(copy, size);
    free(copy);
    return 0;
}
