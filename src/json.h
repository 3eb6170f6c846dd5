/* json.h — the little JSON the C core needs: quoting a string, strict UTF-8
 * checking, and a one-pass scanner that pulls the base64 images out of an
 * image-service response. No Lua types here: fuzzers call these directly;
 * the binding omx_json_open is declared in omixa.h. */
#ifndef OMIXA_JSON_H
#define OMIXA_JSON_H

#include <stddef.h>

#include "base64.h"

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

/* Where the image scanner puts what it finds. Any callback may also longjmp
 * (raise a Lua error) from a one-call scan (omx_json_decode_images): it
 * holds no resources of its own. */
typedef struct omx_json_images_ops {
    void *ud;
    /* Room for at least NEED bytes for image number INDEX (1-based), whose
     * first HAVE bytes, in the room given for it before (if any), must be
     * kept. NULL when out of memory. The image's final length is never more
     * than the last NEED. */
    unsigned char *(*image_room)(void *ud, size_t index, size_t have, size_t need);
    /* Image number INDEX is complete: LEN bytes in its room. Nonzero when
     * out of memory. */
    int (*image)(void *ud, size_t index, size_t len);
    /* Append N bytes to the rest text: the input with each image literal
     * replaced by its number as a JSON string ("1": a number there is the
     * service's own, never an image), given in pieces as the scan goes. Nonzero
     * when out of memory. */
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

/* Flags of the scanner. */
#define OMX_JSON_TOP_B64 1u /* also take the string at $.b64_json (the
                               OpenAI-style image stream events), numbered
                               in order of appearance with the data[] ones;
                               its base64 error says "b64_json", index 0 */

/* The image scanner, fed the text in pieces of any size (a response body as
 * it arrives): every string value at $.data[i].b64_json (member names
 * compared after unescaping) is decoded (JSON escapes, then base64 as
 * omx_b64_decode_json) into ops->image_room and reported through
 * ops->image; everything else goes to ops->rest. Other values are checked
 * for structure (brackets, strings and escapes, literals, number syntax,
 * nesting up to OMX_JSON_MAX_DEPTH, nothing after the top-level value) but
 * not decoded. Linear in the text; no byte is looked at twice but inside
 * an escape. Results and errors do not depend on how the text is cut. */
typedef struct omx_json_scan {
    const omx_json_images_ops *ops;
    unsigned flags;
    int state, sub, rc;
    size_t pos;             /* offset of the next byte to be fed */
    size_t depth, item, nimages;
    int pend;
    size_t tok;             /* where the current token began */
    size_t namelen;         /* a member name on the image path */
    char name[9];
    int keyrole;
    unsigned nesc;          /* an escape in a string: its bytes so far */
    unsigned char esc[6];
    size_t esc_at;
    const char *lit;        /* a literal: the word, and how much matched */
    unsigned litlen, litpos;
    omx_b64_stream b64;     /* the image being decoded */
    unsigned char *room;
    size_t room_size, out;
    size_t img_item;
    omx_json_error err;     /* the first error (err.code: as rc) */
    unsigned char stack[OMX_JSON_MAX_DEPTH]; /* role << 1 | is_array */
} omx_json_scan;

void omx_json_scan_init(omx_json_scan *S, unsigned flags,
                        const omx_json_images_ops *ops);
/* Scan N more bytes. Returns OMX_JSON_OK or the error (S->err), which
 * every later call returns again. */
int omx_json_scan_feed(omx_json_scan *S, const char *p, size_t n);
/* The end of the text. */
int omx_json_scan_finish(omx_json_scan *S);

/* The whole text in one call; *ERR is filled. Data indexes in messages are
 * 1-based, like the image numbers. */
int omx_json_decode_images(const char *p, size_t n,
                           const omx_json_images_ops *ops, omx_json_error *err);

/* omx_json_decode_images with FLAGS (0: exactly omx_json_decode_images). */
int omx_json_decode_images_ex(const char *p, size_t n, unsigned flags,
                              const omx_json_images_ops *ops, omx_json_error *err);

#endif
