/* json.h — the little JSON the C core needs: quoting a string, strict UTF-8
 * checking, and a one-pass scanner that pulls the base64 images out of an
 * image-service response. No Lua types here: fuzzers call these directly;
 * the binding omx_json_open is declared in omixa.h. */
#ifndef OMIXA_JSON_H
#define OMIXA_JSON_H

#include <stddef.h>

/* Length of the JSON string literal (quotes included) for the N bytes at P,
 * or 0 when it would not fit a size_t. */
size_t omx_json_quoted_len(const char *p, size_t n);

/* Write that literal into DST (room for omx_json_quoted_len(p, n) bytes, no
 * NUL): '"' and '\' escaped, control characters as \b \f \n \r \t or \u00XX,
 * everything else (including '/' and bytes >= 0x80) as is. Returns the
 * length written. */
size_t omx_json_quote(const char *p, size_t n, char *dst);

/* 0 when the N bytes at P are strict UTF-8 (shortest forms only, no
 * surrogates, nothing above U+10FFFF, no truncated sequence); otherwise the
 * 1-based offset of the first byte of the first bad sequence. */
size_t omx_utf8_check(const char *p, size_t n);

/* Where omx_json_decode_images puts what it finds. Any callback may also
 * longjmp (raise a Lua error): the scanner holds no resources of its own. */
typedef struct omx_json_images_ops {
    void *ud;
    /* Room for at least MAX bytes into which the next image is decoded;
     * NULL when out of memory. */
    unsigned char *(*image_room)(void *ud, size_t max);
    /* The INDEX-th image (1-based) is complete: LEN bytes in the room just
     * given. Nonzero when out of memory. */
    int (*image)(void *ud, size_t index, size_t len);
    /* Append N bytes to the rest text. Only called once an image has been
     * found: with none, the rest is the input text itself. Nonzero when out
     * of memory. */
    int (*rest)(void *ud, const char *p, size_t n);
} omx_json_images_ops;

enum {
    OMX_JSON_OK = 0,
    OMX_JSON_ESYNTAX,   /* the text is not well-formed JSON (as far as seen) */
    OMX_JSON_EBASE64,   /* an image string is not valid base64 */
    OMX_JSON_ENOMEM     /* a callback reported out of memory */
};

#define OMX_JSON_MAX_DEPTH 1000

typedef struct omx_json_error {
    int code;           /* OMX_JSON_* */
    size_t offset;      /* 0-based byte offset in the text */
    size_t index;       /* OMX_JSON_EBASE64: the 1-based data[] index
                           (0 for $.b64_json) */
    char message[160];  /* e.g. "unterminated string at byte 12" */
} omx_json_error;

/* Scan the N bytes of JSON at P in one pass. Every string value at
 * $.data[i].b64_json (member names compared after unescaping) is decoded
 * (JSON escapes, then base64 as omx_b64_decode_json) into ops->image_room and
 * reported through ops->image; the rest text is the input with each such
 * literal replaced by its 1-based image number. Other values are checked for
 * structure (brackets, strings and escapes, literals, number syntax,
 * nesting up to OMX_JSON_MAX_DEPTH, nothing after the top-level value) but
 * not decoded. Returns OMX_JSON_OK or the error code, with *ERR filled. Data
 * indexes in messages are 1-based, like the image numbers. */
int omx_json_decode_images(const char *p, size_t n,
                           const omx_json_images_ops *ops, omx_json_error *err);

/* Flags of omx_json_decode_images_ex. */
#define OMX_JSON_TOP_B64 1u /* also take the string at $.b64_json (the
                               OpenAI-style image stream events), numbered
                               in order of appearance with the data[] ones;
                               its base64 error says "b64_json", index 0 */

/* omx_json_decode_images with FLAGS (0: exactly omx_json_decode_images). */
int omx_json_decode_images_ex(const char *p, size_t n, unsigned flags,
                              const omx_json_images_ops *ops, omx_json_error *err);

#endif
