/* b64fast.h — bulk base64 kernels for the clean middle of a long input:
 * standard alphabet only, whole groups only, no padding, no whitespace.
 * The caller (base64.c) handles everything else, around the prefix these
 * return. An AVX2 kernel is chosen at first use when the CPU has AVX2 (x86-64
 * with GCC or clang), else a scalar loop; OMIXA_NO_SIMD=1 in the environment
 * at first use forces the scalar loop. Both give identical results. */
#ifndef OMIXA_B64FAST_H
#define OMIXA_B64FAST_H

#include <stddef.h>

/* Decode the longest prefix of SRC[0..N) made of whole 4-character groups of
 * standard digits (A-Z a-z 0-9 + /): it ends before the first group holding
 * any other byte ('=', whitespace, '\\', '-', '_', ...) or N/4*4. Returns
 * its length C (a multiple of 4, exactly that maximum) and writes its
 * C/4*3 decoded bytes to DST[0..C/4*3), nothing else. DST has room for
 * N/4*3 bytes and does not overlap SRC. Reads only SRC[0..N). */
size_t omx_b64_decode_fast(const unsigned char *src, size_t n,
                           unsigned char *dst);

/* Encode the whole 3-byte groups of SRC[0..N): C = N/3*3 bytes, always all
 * of them. Writes C/3*4 standard-alphabet characters to DST (no padding, no
 * NUL; DST does not overlap SRC) and returns C. Reads only SRC[0..N). */
size_t omx_b64_encode_fast(const unsigned char *src, size_t n, char *dst);

#endif
