/* base64.h — RFC 4648 base64 over plain memory: padded encoding with the
 * standard alphabet; strict decoding of the standard and URL-safe alphabets
 * (mixed freely), optional padding, ASCII whitespace ignored. The decoder
 * also runs directly over the contents of a JSON string literal, so an image
 * inside a JSON response is decoded in one pass without unescaping it first.
 * No Lua types here: fuzzers call these directly. The Lua binding,
 * omx_base64_open, is declared in omixa.h. */
#ifndef OMIXA_BASE64_H
#define OMIXA_BASE64_H

#include <stddef.h>

/* Length of the padded encoding of N bytes; 0 when N > 0 and that length
 * would not fit a size_t. */
size_t omx_b64_encoded_len(size_t n);

/* Encode the N bytes at SRC into DST, which has room for
 * omx_b64_encoded_len(n) bytes (no NUL is written). Returns that length. */
size_t omx_b64_encode(const void *src, size_t n, char *dst);

/* Room that decoding N input bytes may need: never less than the output. */
size_t omx_b64_decoded_max(size_t n);

enum {
    OMX_B64_OK = 0,
    OMX_B64_EBADCHAR,   /* a character outside both alphabets */
    OMX_B64_EPADPOS,    /* '=' where a group cannot end */
    OMX_B64_EPADMORE,   /* more '=' than the final group allows */
    OMX_B64_EPADSHORT,  /* "xx=": padding begun but not completed */
    OMX_B64_EAFTERPAD,  /* data after the padding */
    OMX_B64_ETRUNC,     /* final group of a single character */
    OMX_B64_EJSONESC,   /* JSON only: malformed escape sequence */
    OMX_B64_EJSONCHAR   /* JSON only: raw control character or quote */
};

typedef struct omx_b64_error {
    int code;           /* OMX_B64_* */
    size_t offset;      /* 0-based offset in the input of the offending byte
                           (the backslash for a JSON escape) */
    unsigned long ch;   /* the offending character (a UTF-16 unit for \u) */
    int escaped;        /* ch came from a JSON escape */
} omx_b64_error;

/* Decode the N bytes at SRC into DST, which has room for
 * omx_b64_decoded_max(n) bytes. On success returns OMX_B64_OK and sets
 * *OUTLEN; otherwise returns the error code and fills *ERR (DST then holds
 * garbage). Non-canonical trailing bits ("QR==") are accepted. */
int omx_b64_decode(const char *src, size_t n, unsigned char *dst,
                   size_t *outlen, omx_b64_error *err);

/* Like omx_b64_decode over the raw contents of a JSON string literal (the
 * bytes between its quotes): the JSON escapes are decoded on the fly and the
 * characters they stand for are decoded as base64; raw control characters and
 * raw quotes are JSON errors (EJSONCHAR), escaped whitespace is ignored. */
int omx_b64_decode_json(const char *src, size_t n, unsigned char *dst,
                        size_t *outlen, omx_b64_error *err);

/* What went wrong, without the position, e.g. "invalid base64 character
 * '!'", into BUF (always NUL-terminated when SIZE > 0). */
void omx_b64_describe(const omx_b64_error *err, char *buf, size_t size);

#endif
