/* json.c — JSON string quoting, strict UTF-8 checking and the image
 * scanner (see json.h), and core.json_quote, core.utf8_check,
 * core.decode_images. Plain runs of text are skipped eight bytes at a time
 * (SWAR) and copied with memcpy; image strings go straight to the base64
 * decoder. */
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <lua.h>
#include <lauxlib.h>

#include "base64.h"
#include "buffer.h"
#include "compat.h"
#include "json.h"
#include "omixa.h"

#define ONES  ((uint64_t)0x0101010101010101ULL)
#define HIGHS ((uint64_t)0x8080808080808080ULL)

static uint64_t load64(const unsigned char *p)
{
    uint64_t w;
    memcpy(&w, p, sizeof w);
    return w;
}

/* Nonzero when some byte of W is below 0x20, '"' or '\' (exact: the usual
 * has-zero/has-less tricks, valid for thresholds up to 0x80). */
static uint64_t has_string_special(uint64_t w)
{
    uint64_t q = w ^ (ONES * '"'), b = w ^ (ONES * '\\');
    return ((w - ONES * 0x20) & ~w & HIGHS)
         | ((q - ONES) & ~q & HIGHS)
         | ((b - ONES) & ~b & HIGHS);
}

/* How many bytes quoting adds for each byte: \b \t \n \f \r \" \\ add one,
 * other control characters (\u00XX) five. */
static const unsigned char quote_extra[256] = {
    5, 5, 5, 5, 5, 5, 5, 5, 1, 1, 1, 5, 1, 1, 5, 5,
    5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5,
    0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0,
    /* the rest: 0 */
};

size_t omx_json_quoted_len(const char *src, size_t n)
{
    const unsigned char *p = (const unsigned char *)src, *e = p + n;
    size_t extra = 0, limit;
    int i;
    if (n > (size_t)-1 - 2)
        return 0;
    limit = (size_t)-1 - 2 - n;
    while (e - p >= 8) {
        if (has_string_special(load64(p))) {
            for (i = 0; i < 8; i++)
                extra += quote_extra[p[i]];
            /* at most 40 more per block: checking here is exact */
            if (extra > limit)
                return 0;
        }
        p += 8;
    }
    while (p < e)
        extra += quote_extra[*p++];
    if (extra > limit)
        return 0;
    return n + 2 + extra;
}

static char *quote_byte(char *o, unsigned c)
{
    static const char hex[] = "0123456789abcdef";
    *o++ = '\\';
    switch (c) {
    case '"': *o++ = '"'; break;
    case '\\': *o++ = '\\'; break;
    case '\b': *o++ = 'b'; break;
    case '\f': *o++ = 'f'; break;
    case '\n': *o++ = 'n'; break;
    case '\r': *o++ = 'r'; break;
    case '\t': *o++ = 't'; break;
    default:
        *o++ = 'u';
        *o++ = '0';
        *o++ = '0';
        *o++ = hex[c >> 4];
        *o++ = hex[c & 15];
        break;
    }
    return o;
}

size_t omx_json_quote(const char *src, size_t n, char *dst)
{
    const unsigned char *p = (const unsigned char *)src, *e = p + n, *run = p;
    char *o = dst;
    *o++ = '"';
    for (;;) {
        const unsigned char *stop;
        while (e - p >= 8 && !has_string_special(load64(p)))
            p += 8;
        stop = e - p >= 8 ? p + 8 : e;
        if (p == stop)
            break;
        for (; p < stop; p++) {
            if (quote_extra[*p]) {
                memcpy(o, run, (size_t)(p - run));
                o = quote_byte(o + (p - run), *p);
                run = p + 1;
            }
        }
    }
    memcpy(o, run, (size_t)(e - run));
    o += e - run;
    *o++ = '"';
    return (size_t)(o - dst);
}

size_t omx_utf8_check(const char *src, size_t n)
{
    const unsigned char *s = (const unsigned char *)src, *p = s, *e = s + n;
    while (p < e) {
        unsigned c, lo = 0x80, hi = 0xBF;
        size_t need, i;
        while (e - p >= 8 && !(load64(p) & HIGHS))
            p += 8;
        if (p == e)
            break;
        c = *p;
        if (c < 0x80) {
            p++;
            continue;
        }
        if (c >= 0xC2 && c <= 0xDF) {
            need = 1;
        } else if (c >= 0xE0 && c <= 0xEF) {
            need = 2;
            if (c == 0xE0) lo = 0xA0;       /* overlong */
            else if (c == 0xED) hi = 0x9F;  /* surrogates */
        } else if (c >= 0xF0 && c <= 0xF4) {
            need = 3;
            if (c == 0xF0) lo = 0x90;       /* overlong */
            else if (c == 0xF4) hi = 0x8F;  /* above U+10FFFF */
        } else {
            return (size_t)(p - s) + 1;     /* continuation, C0, C1, F5.. */
        }
        if ((size_t)(e - p) <= need || p[1] < lo || p[1] > hi)
            return (size_t)(p - s) + 1;
        for (i = 2; i <= need; i++)
            if ((p[i] & 0xC0) != 0x80)
                return (size_t)(p - s) + 1;
        p += need + 1;
    }
    return 0;
}

/* ---- the image scanner ----------------------------------------------- */

/* What a container is, as far as the image path $.data[i].b64_json goes. */
enum { R_NONE, R_TOP, R_DATA, R_ITEM };
/* What the next value is: P_TOPB64 is $.b64_json (OMX_JSON_TOP_B64). */
enum { P_NONE, P_DATA, P_ITEM, P_B64, P_TOPB64 };
/* Where the scanner is. */
enum {
    ST_VALUE,       /* before a value */
    ST_OBJ_FIRST,   /* after '{' */
    ST_ARR_FIRST,   /* after '[' */
    ST_KEY,         /* before a member name (after ',') */
    ST_KEYSTR,      /* in a member name */
    ST_COLON,       /* after a member name */
    ST_STRING,      /* in a string value */
    ST_IMAGE,       /* in an image string */
    ST_LITERAL,     /* in true, false or null */
    ST_NUMBER,      /* in a number; sub is one of N_* */
    ST_AFTER        /* after a value */
};
/* Number states: after '-', '0', digits, '.', fraction digits, 'e', the
 * exponent's sign, exponent digits. */
enum { N_MINUS, N_ZERO, N_INT, N_DOT, N_FRAC, N_EXP, N_EXPSIGN, N_EXPDIGITS };

static void describe_byte(char *buf, size_t size, unsigned c)
{
    if (c > 0x20 && c < 0x7F)
        snprintf(buf, size, "'%c'", (int)c);
    else
        snprintf(buf, size, "0x%02X", c);
}

/* Record a syntax error "<what> at byte N" at offset AT; returns its code. */
static int jfail(omx_json_scan *S, size_t at, const char *fmt, ...)
{
    char what[112];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    S->err.code = S->rc = OMX_JSON_ESYNTAX;
    S->err.offset = at;
    snprintf(S->err.message, sizeof S->err.message, "%s at byte %lu",
             what, (unsigned long)at + 1);
    return S->rc;
}

static int jnomem(omx_json_scan *S, size_t at)
{
    S->err.code = S->rc = OMX_JSON_ENOMEM;
    S->err.offset = at;
    snprintf(S->err.message, sizeof S->err.message, "not enough memory");
    return S->rc;
}

static int junexpected(omx_json_scan *S, size_t at, unsigned c)
{
    char d[8];
    describe_byte(d, sizeof d, c);
    return jfail(S, at, "unexpected character %s", d);
}

static int jend(omx_json_scan *S)
{
    return jfail(S, S->pos, "unexpected end of JSON");
}

static int hexval(int c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* The escape in S->esc (S->nesc bytes, a backslash first): 1 with its code
 * unit in *CH when complete, 0 when it needs more bytes, or the error. */
static int escape_step(omx_json_scan *S, unsigned long *ch)
{
    const unsigned char *q = S->esc;
    unsigned k;
    if (S->nesc < 2)
        return 0;
    switch (q[1]) {
    case '"': case '\\': case '/': *ch = q[1]; return 1;
    case 'b': *ch = '\b'; return 1;
    case 'f': *ch = '\f'; return 1;
    case 'n': *ch = '\n'; return 1;
    case 'r': *ch = '\r'; return 1;
    case 't': *ch = '\t'; return 1;
    case 'u':
        for (k = 2; k < S->nesc; k++)
            if (hexval(q[k]) < 0)
                return -jfail(S, S->esc_at, "invalid \\u escape in string");
        if (S->nesc < 6)
            return 0;
        *ch = (unsigned long)(hexval(q[2]) << 12 | hexval(q[3]) << 8
                              | hexval(q[4]) << 4 | hexval(q[5]));
        return 1;
    default: {
        char c[8];
        describe_byte(c, sizeof c, q[1]);
        return -jfail(S, S->esc_at, "invalid escape \\%s in string", c);
    }
    }
}

/* Inside a string (a member name when NAME, whose code units are kept when
 * the member is on the image path): on to its closing quote. Returns where
 * it stopped, after the closing quote (*CLOSED set) or at E; NULL on an
 * error. */
static const unsigned char *string_body(omx_json_scan *S, const unsigned char *s,
                                        const unsigned char *p,
                                        const unsigned char *e, int name,
                                        int *closed)
{
    int keep = name && (S->keyrole == R_TOP || S->keyrole == R_ITEM);
    *closed = 0;
    for (;;) {
        unsigned long ch;
        if (S->nesc > 0) {
            int r = 0;
            while (p < e && (r = escape_step(S, &ch)) == 0)
                S->esc[S->nesc++] = *p++;
            if (r == 0)
                r = escape_step(S, &ch);
            if (r < 0)
                return NULL;
            if (r == 0)
                return p; /* more to come */
            S->nesc = 0;
            if (keep) {
                if (S->namelen < sizeof S->name)
                    S->name[S->namelen] = (char)(ch < 0x80 ? ch : 0xFF);
                S->namelen++;
            }
        }
        if (!keep)
            while (e - p >= 8 && !has_string_special(load64(p)))
                p += 8;
        while (p < e && *p >= 0x20 && *p != '"' && *p != '\\') {
            if (keep) {
                if (S->namelen < sizeof S->name)
                    S->name[S->namelen] = (char)(*p < 0x80 ? *p : 0xFF);
                S->namelen++;
            }
            p++;
        }
        if (p == e)
            return p;
        if (*p == '"') {
            *closed = 1;
            return p + 1;
        }
        if (*p == '\\') {
            S->esc_at = S->pos + (size_t)(p - s);
            S->esc[0] = '\\';
            S->nesc = 1;
            p++;
            continue;
        }
        {
            char c[8];
            describe_byte(c, sizeof c, *p);
            jfail(S, S->pos + (size_t)(p - s), "control character %s in string", c);
            return NULL;
        }
    }
}

/* The member name just read: what its value is. */
static int key_pend(const omx_json_scan *S)
{
    if (S->keyrole == R_TOP && S->namelen == 4 && memcmp(S->name, "data", 4) == 0)
        return P_DATA;
    if (S->keyrole == R_TOP && (S->flags & OMX_JSON_TOP_B64)
        && S->namelen == 8 && memcmp(S->name, "b64_json", 8) == 0)
        return P_TOPB64;
    if (S->keyrole == R_ITEM && S->namelen == 8 && memcmp(S->name, "b64_json", 8) == 0)
        return P_B64;
    return P_NONE;
}

/* The image's decoder met an error: the scanner's error for it. */
static int image_error(omx_json_scan *S, const omx_b64_error *be)
{
    char what[64];
    if (be->code == OMX_B64_EJSONESC) {
        if (be->after == 'u')
            return jfail(S, be->offset, "invalid \\u escape in string");
        describe_byte(what, sizeof what, be->after);
        return jfail(S, be->offset, "invalid escape \\%s in string", what);
    }
    if (be->code == OMX_B64_EJSONCHAR) {
        describe_byte(what, sizeof what, (unsigned)be->ch);
        return jfail(S, be->offset, "control character %s in string", what);
    }
    omx_b64_describe(be, what, sizeof what);
    S->err.code = S->rc = OMX_JSON_EBASE64;
    S->err.offset = be->offset;
    S->err.index = S->img_item;
    if (S->img_item == 0)
        snprintf(S->err.message, sizeof S->err.message,
                 "invalid base64 in b64_json at byte %lu (%s)",
                 (unsigned long)be->offset + 1, what);
    else
        snprintf(S->err.message, sizeof S->err.message,
                 "invalid base64 in data[%lu].b64_json at byte %lu (%s)",
                 (unsigned long)S->img_item, (unsigned long)be->offset + 1, what);
    return S->rc;
}

/* Make the image's room hold NEED bytes. */
static int image_reserve(omx_json_scan *S, size_t need)
{
    if (S->room != NULL && S->room_size >= need)
        return 0;
    S->room = S->ops->image_room(S->ops->ud, S->nimages + 1, S->out, need);
    if (S->room == NULL)
        return -1;
    S->room_size = need;
    return 0;
}

/* Inside an image string: decode up to its closing quote. Returns where it
 * stopped (after the quote, state changed, or E); NULL on an error. */
static const unsigned char *image_body(omx_json_scan *S, const unsigned char *p,
                                       const unsigned char *e)
{
    const omx_json_images_ops *ops = S->ops;
    omx_b64_error be;
    size_t got = 0, used = 0, avail = (size_t)(e - p);
    char num[32];

    if (image_reserve(S, S->out + omx_b64_stream_room(avail) + 2) != 0) {
        jnomem(S, S->tok);
        return NULL;
    }
    omx_b64_stream_feed(&S->b64, (const char *)p, avail, S->room + S->out, &got, &used, &be);
    S->out += got;
    p += used;
    if (p == e)
        return p;
    /* the closing quote (the room has 2 bytes to spare for the last group) */
    if (omx_b64_stream_finish(&S->b64, S->room + S->out, &got, &be) != OMX_B64_OK) {
        image_error(S, &be);
        return NULL;
    }
    S->out += got;
    S->nimages++;
    snprintf(num, sizeof num, "\"%lu\"", (unsigned long)S->nimages);
    if (ops->rest(ops->ud, num, strlen(num)) != 0
        || ops->image(ops->ud, S->nimages, S->out) != 0) {
        jnomem(S, S->tok);
        return NULL;
    }
    S->room = NULL;
    S->room_size = S->out = 0;
    S->state = ST_AFTER;
    return p + 1;
}

#define IS_DIGIT(c) ((c) >= '0' && (c) <= '9')
#define IS_WS(c) ((c) == ' ' || (c) == '\n' || (c) == '\r' || (c) == '\t')

/* Inside a number: on to its end. Returns where it stopped (at the byte
 * after the number, state ST_AFTER, or E); NULL on an error. */
static const unsigned char *number_body(omx_json_scan *S, const unsigned char *s,
                                        const unsigned char *p,
                                        const unsigned char *e)
{
    for (; p < e; p++) {
        int c = *p, digit = IS_DIGIT(c);
        switch (S->sub) {
        case N_MINUS:
            if (c == '0') { S->sub = N_ZERO; continue; }
            if (digit) { S->sub = N_INT; continue; }
            break;
        case N_ZERO:
        case N_INT:
            if (digit && S->sub == N_INT) continue;
            if (c == '.') { S->sub = N_DOT; continue; }
            if (c == 'e' || c == 'E') { S->sub = N_EXP; continue; }
            S->state = ST_AFTER;
            return p;
        case N_DOT:
            if (digit) { S->sub = N_FRAC; continue; }
            break;
        case N_FRAC:
            if (digit) continue;
            if (c == 'e' || c == 'E') { S->sub = N_EXP; continue; }
            S->state = ST_AFTER;
            return p;
        case N_EXP:
            if (c == '+' || c == '-') { S->sub = N_EXPSIGN; continue; }
            if (digit) { S->sub = N_EXPDIGITS; continue; }
            break;
        case N_EXPSIGN:
            if (digit) { S->sub = N_EXPDIGITS; continue; }
            break;
        default: /* N_EXPDIGITS */
            if (digit) continue;
            S->state = ST_AFTER;
            return p;
        }
        jfail(S, S->pos + (size_t)(p - s), "invalid number");
        return NULL;
    }
    return p;
}

void omx_json_scan_init(omx_json_scan *S, unsigned flags,
                        const omx_json_images_ops *ops)
{
    S->ops = ops;
    S->flags = flags;
    S->state = ST_VALUE;
    S->sub = S->rc = 0;
    S->pos = S->depth = S->item = S->nimages = 0;
    S->pend = P_NONE;
    S->tok = S->namelen = 0;
    S->keyrole = R_NONE;
    S->nesc = 0;
    S->lit = NULL;
    S->litlen = S->litpos = 0;
    S->room = NULL;
    S->room_size = S->out = S->img_item = 0;
    S->err.code = OMX_JSON_OK;
    S->err.offset = S->err.index = 0;
    S->err.message[0] = '\0';
}

int omx_json_scan_feed(omx_json_scan *S, const char *text, size_t n)
{
    const unsigned char *const s = (const unsigned char *)text, *const e = s + n;
    const unsigned char *p = s, *from = s; /* rest text not yet given */
    const omx_json_images_ops *ops = S->ops;
    int closed;

#define AT(q) (S->pos + (size_t)((q) - s))
#define SKIP_WS() do { while (p < e && IS_WS(*p)) p++; if (p == e) goto out; } while (0)
#define FAIL(call) do { (void)(call); goto out; } while (0)

    if (S->rc != OMX_JSON_OK)
        return S->rc;
    if (S->state == ST_IMAGE)
        from = NULL; /* nothing of an image literal goes to the rest */
    while (p < e) {
        switch (S->state) {
        case ST_VALUE:
            SKIP_WS();
            switch (*p) {
            case '{':
            case '[': {
                int is_array = *p == '[', role = R_NONE;
                if (S->depth == OMX_JSON_MAX_DEPTH)
                    FAIL(jfail(S, AT(p), "nesting deeper than %d", OMX_JSON_MAX_DEPTH));
                if (is_array) {
                    if (S->pend == P_DATA) {
                        role = R_DATA;
                        S->item = 0;
                    }
                } else {
                    role = S->depth == 0 ? R_TOP : S->pend == P_ITEM ? R_ITEM : R_NONE;
                }
                S->stack[S->depth++] = (unsigned char)(role << 1 | is_array);
                S->state = is_array ? ST_ARR_FIRST : ST_OBJ_FIRST;
                p++;
                break;
            }
            case '"':
                S->tok = AT(p);
                if (S->pend == P_B64 || S->pend == P_TOPB64) {
                    if (ops->rest(ops->ud, (const char *)from, (size_t)(p - from)) != 0)
                        FAIL(jnomem(S, AT(p)));
                    from = NULL;
                    S->img_item = S->pend == P_B64 ? S->item : 0;
                    S->room = NULL;
                    S->room_size = S->out = 0;
                    omx_b64_stream_init(&S->b64, OMX_B64_JSON | OMX_B64_QUOTE_ENDS, AT(p) + 1);
                    S->state = ST_IMAGE;
                } else {
                    S->state = ST_STRING;
                }
                p++;
                break;
            case 't': S->lit = "true"; S->litlen = 4; goto literal;
            case 'f': S->lit = "false"; S->litlen = 5; goto literal;
            case 'n': S->lit = "null"; S->litlen = 4;
            literal:
                S->tok = AT(p);
                S->litpos = 0;
                S->state = ST_LITERAL;
                break;
            default:
                if (*p == '-' || IS_DIGIT(*p)) {
                    S->tok = AT(p);
                    S->sub = *p == '-' ? N_MINUS : *p == '0' ? N_ZERO : N_INT;
                    S->state = ST_NUMBER;
                    p++;
                    break;
                }
                FAIL(junexpected(S, AT(p), *p));
            }
            break;

        case ST_OBJ_FIRST:
            SKIP_WS();
            if (*p == '}') {
                S->depth--;
                S->state = ST_AFTER;
                p++;
            } else {
                S->state = ST_KEY;
            }
            break;

        case ST_ARR_FIRST:
            SKIP_WS();
            if (*p == ']') {
                S->depth--;
                S->state = ST_AFTER;
                p++;
                break;
            }
            S->pend = P_NONE;
            if ((S->stack[S->depth - 1] >> 1) == R_DATA) {
                S->item++;
                S->pend = P_ITEM;
            }
            S->state = ST_VALUE;
            break;

        case ST_KEY:
            SKIP_WS();
            if (*p != '"') {
                if (*p == '}')
                    FAIL(jfail(S, AT(p), "unexpected '}' after ','"));
                FAIL(jfail(S, AT(p), "expected a member name"));
            }
            S->tok = AT(p);
            S->keyrole = S->stack[S->depth - 1] >> 1;
            S->namelen = 0;
            S->state = ST_KEYSTR;
            p++;
            break;

        case ST_KEYSTR:
            if ((p = string_body(S, s, p, e, 1, &closed)) == NULL)
                goto out;
            if (closed) {
                S->pend = key_pend(S);
                S->state = ST_COLON;
            }
            break;

        case ST_COLON:
            SKIP_WS();
            if (*p != ':')
                FAIL(jfail(S, AT(p), "expected ':'"));
            S->state = ST_VALUE;
            p++;
            break;

        case ST_STRING:
            if ((p = string_body(S, s, p, e, 0, &closed)) == NULL)
                goto out;
            if (closed)
                S->state = ST_AFTER;
            break;

        case ST_IMAGE:
            if ((p = image_body(S, p, e)) == NULL)
                goto out;
            if (S->state == ST_AFTER)
                from = p;
            break;

        case ST_LITERAL:
            while (p < e && S->litpos < S->litlen) {
                if (*p != (unsigned char)S->lit[S->litpos])
                    FAIL(jfail(S, S->tok, "invalid literal"));
                p++;
                S->litpos++;
            }
            if (S->litpos == S->litlen)
                S->state = ST_AFTER;
            break;

        case ST_NUMBER:
            if ((p = number_body(S, s, p, e)) == NULL)
                goto out;
            break;

        default: { /* ST_AFTER */
            int top, role;
            SKIP_WS();
            if (S->depth == 0)
                FAIL(jfail(S, AT(p), "trailing garbage after JSON value"));
            top = S->stack[S->depth - 1];
            role = top >> 1;
            if (*p == ',') {
                p++;
                if (top & 1) {
                    S->pend = P_NONE;
                    if (role == R_DATA) {
                        S->item++;
                        S->pend = P_ITEM;
                    }
                    S->state = ST_VALUE;
                } else {
                    S->state = ST_KEY;
                }
                break;
            }
            if (*p == ((top & 1) ? ']' : '}')) {
                S->depth--;
                p++;
                break;
            }
            {
                char c[8];
                describe_byte(c, sizeof c, *p);
                FAIL(jfail(S, AT(p), "expected ',' or '%c' but found %s",
                           (top & 1) ? ']' : '}', c));
            }
        }
        }
    }
out:
    if (S->rc == OMX_JSON_OK && from != NULL && S->state != ST_IMAGE
        && ops->rest(ops->ud, (const char *)from, (size_t)(e - from)) != 0)
        jnomem(S, AT(e));
    S->pos += n;
    return S->rc;
#undef AT
#undef SKIP_WS
#undef FAIL
}

int omx_json_scan_finish(omx_json_scan *S)
{
    if (S->rc != OMX_JSON_OK)
        return S->rc;
    switch (S->state) {
    case ST_AFTER:
        return S->depth == 0 ? OMX_JSON_OK : jend(S);
    case ST_NUMBER:
        if (S->sub == N_ZERO || S->sub == N_INT || S->sub == N_FRAC || S->sub == N_EXPDIGITS)
            return S->depth == 0 ? OMX_JSON_OK : jend(S);
        return jend(S);
    case ST_STRING:
    case ST_KEYSTR:
        if (S->nesc > 0)
            return jend(S);
        return jfail(S, S->tok, "unterminated string");
    case ST_IMAGE:
        return jfail(S, S->tok, "unterminated string");
    default:
        return jend(S);
    }
}

int omx_json_decode_images(const char *text, size_t n,
                           const omx_json_images_ops *ops, omx_json_error *err)
{
    return omx_json_decode_images_ex(text, n, 0, ops, err);
}

int omx_json_decode_images_ex(const char *text, size_t n, unsigned flags,
                              const omx_json_images_ops *ops, omx_json_error *err)
{
    omx_json_scan S;
    omx_json_scan_init(&S, flags, ops);
    if (omx_json_scan_feed(&S, text, n) == OMX_JSON_OK)
        omx_json_scan_finish(&S);
    *err = S.err;
    return S.rc;
}

/* ---- Lua bindings ---------------------------------------------------- */

/* core.json_quote(s) -> string */
static int l_json_quote(lua_State *L)
{
    size_t n, len;
    const char *s = omx_checkbytes(L, 1, &n);
    omx_buf *b;
    len = omx_json_quoted_len(s, n);
    if (len == 0)
        return luaL_error(L, "json_quote: input too large");
    b = omx_buffer_push(L);
    if (omx_buf_reserve(b, len) != 0)
        return luaL_error(L, "not enough memory");
    omx_json_quote(s, n, b->data);
    lua_pushlstring(L, b->data, len);
    omx_buf_free(b);
    return 1;
}

/* core.utf8_check(s) -> true | nil, pos */
static int l_utf8_check(lua_State *L)
{
    size_t n, bad;
    const char *s = omx_checkbytes(L, 1, &n);
    bad = omx_utf8_check(s, n);
    if (bad == 0) {
        lua_pushboolean(L, 1);
        return 1;
    }
    lua_pushnil(L);
    lua_pushinteger(L, (lua_Integer)bad);
    return 2;
}

typedef struct images_ctx {
    lua_State *L;
    omx_buf *scratch, *rest;
    int images; /* stack index of the images table */
    size_t nimages;
} images_ctx;

static unsigned char *images_room(void *ud, size_t index, size_t have, size_t need)
{
    (void)index;
    return omx_buf_room(((images_ctx *)ud)->scratch, have, need);
}

static int images_image(void *ud, size_t index, size_t len)
{
    images_ctx *c = (images_ctx *)ud;
    lua_pushlstring(c->L, c->scratch->data, len);
    lua_rawseti(c->L, c->images, (int)index);
    c->nimages = index;
    return 0;
}

static int images_rest(void *ud, const char *p, size_t n)
{
    images_ctx *c = (images_ctx *)ud;
    return omx_buf_append(c->rest, p, n);
}

/* core.decode_images(body) -> images, rest | nil, message, what */
static int l_decode_images(lua_State *L)
{
    size_t n;
    const char *p = omx_checkbytes(L, 1, &n);
    omx_json_images_ops ops;
    omx_json_error err;
    images_ctx c;
    int rc;

    lua_settop(L, 1);
    lua_newtable(L);
    c.L = L;
    c.images = 2;
    c.nimages = 0;
    c.scratch = omx_buffer_push(L);
    c.rest = omx_buffer_push(L);
    ops.ud = &c;
    ops.image_room = images_room;
    ops.image = images_image;
    ops.rest = images_rest;
    rc = omx_json_decode_images(p, n, &ops, &err);
    omx_buf_free(c.scratch);
    if (rc == OMX_JSON_ENOMEM) {
        omx_buf_free(c.rest);
        return luaL_error(L, "not enough memory");
    }
    if (rc != OMX_JSON_OK) {
        omx_buf_free(c.rest);
        lua_pushnil(L);
        lua_pushstring(L, err.message);
        lua_pushstring(L, rc == OMX_JSON_EBASE64 ? "base64" : "json");
        return 3;
    }
    lua_pushvalue(L, 2);
    if (c.nimages > 0)
        lua_pushlstring(L, c.rest->data, c.rest->len);
    else if (lua_type(L, 1) == LUA_TSTRING)
        lua_pushvalue(L, 1); /* no image: the rest is the text itself */
    else
        lua_pushlstring(L, p, n);
    omx_buf_free(c.rest);
    return 2;
}

void omx_json_open(lua_State *L)
{
    static const luaL_Reg funcs[] = {
        {"json_quote", l_json_quote},
        {"utf8_check", l_utf8_check},
        {"decode_images", l_decode_images},
        {NULL, NULL}
    };
    omx_setfuncs(L, funcs, 0);
}
