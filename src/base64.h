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
#include <stdint.h>

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
    unsigned char after; /* OMX_B64_EJSONESC: the byte after the backslash
                            (0 when the input ended first) */
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

/* The same decoders, fed in pieces: a stream keeps the digits of an
 * unfinished group and the bytes of an unfinished JSON escape between
 * feeds, and counts offsets from where it was started, so results and
 * errors are exactly those of one call over the whole input. */
#define OMX_B64_JSON       1u /* the input is JSON string contents */
#define OMX_B64_QUOTE_ENDS 2u /* with JSON: a raw '"' ends the contents; an
                                 error is kept until then (it is reported by
                                 omx_b64_stream_finish), so that an
                                 unterminated string can win over it */

typedef struct omx_b64_stream {
    size_t pos;             /* offset of the next input byte */
    size_t qstart, padstart, esc_at;
    uint32_t acc;
    unsigned flags, nq, pad, nesc;
    int skip_next;          /* QUOTE_ENDS after an error: a backslash
                               ended the last feed */
    unsigned char qch, esc[6];
    omx_b64_error kept;     /* QUOTE_ENDS: the first error (code 0: none) */
} omx_b64_stream;

/* Start a stream whose first byte has offset POS (used in error offsets). */
void omx_b64_stream_init(omx_b64_stream *st, unsigned flags, size_t pos);

/* Output room one feed of N bytes may need. */
#define omx_b64_stream_room(n) (((n) + 3) / 4 * 3)

/* Decode the N bytes at SRC into DST (room for omx_b64_stream_room(n)
 * bytes); *OUTLEN bytes were written. *USED is N, or with QUOTE_ENDS the
 * offset in SRC of the raw quote that ends the contents (not consumed).
 * Returns OMX_B64_OK or, without QUOTE_ENDS, the first error. */
int omx_b64_stream_feed(omx_b64_stream *st, const char *src, size_t n,
                        unsigned char *dst, size_t *outlen, size_t *used,
                        omx_b64_error *err);

/* The end of the input: writes the last group's bytes (at most 2) to DST,
 * or returns the error (with QUOTE_ENDS, also a kept one). */
int omx_b64_stream_finish(omx_b64_stream *st, unsigned char *dst,
                          size_t *outlen, omx_b64_error *err);

/* What went wrong, without the position, e.g. "invalid base64 character
 * '!'", into BUF (always NUL-terminated when SIZE > 0). */
void omx_b64_describe(const omx_b64_error *err, char *buf, size_t size);

#endif
