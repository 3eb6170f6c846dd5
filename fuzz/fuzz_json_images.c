/* fuzz_json_images — omx_json_decode_images (src/json.c), the one-pass
 * scanner that takes the base64 images out of a service response, against a
 * plain recursive-descent JSON parser written here from json.h's contract.
 * For every input both must agree on success, on the kind of error (syntax
 * or base64, and for base64 the data[] index), on the images (count and
 * bytes, decoded by fuzz/ref.h) and on the rest text (the input with each
 * $.data[i].b64_json literal replaced by its image number). The rest must
 * itself scan cleanly with no image left in it. Callbacks are checked for
 * order and room sizes (rooms are exact-size blocks, so ASan sees an
 * overrun), and the input is scanned once more with an out-of-memory answer
 * from one of the callbacks, which must give OMX_JSON_ENOMEM. */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "base64.h"
#include "json.h"
#include "ref.h"

/* ---- the reference ----------------------------------------------------- */

/* Where a value sits, as far as the image path $.data[i].b64_json goes. */
enum { AT_NONE, AT_TOP, AT_DATA, AT_ITEM, AT_B64 };

typedef struct image {
    unsigned char *bytes;
    size_t len;
    size_t open, close; /* the literal's quotes in the input */
} image;

typedef struct list {
    image *v;
    size_t n, cap;
} list;

static void list_push(list *l, unsigned char *bytes, size_t len, size_t open, size_t close)
{
    if (l->n == l->cap) {
        l->cap = l->cap ? 2 * l->cap : 4;
        l->v = (image *)realloc(l->v, l->cap * sizeof *l->v);
        if (l->v == NULL)
            abort();
    }
    l->v[l->n].bytes = bytes;
    l->v[l->n].len = len;
    l->v[l->n].open = open;
    l->v[l->n].close = close;
    l->n++;
}

static void list_free(list *l)
{
    size_t i;
    for (i = 0; i < l->n; i++)
        free(l->v[i].bytes);
    free(l->v);
    memset(l, 0, sizeof *l);
}

typedef struct ref {
    const unsigned char *s;
    size_t n, i;
    size_t item;   /* 1-based index in the data array being read */
    int code;      /* first error, OMX_JSON_* */
    size_t index;  /* its data[] index, for OMX_JSON_EBASE64 */
    list images;
} ref;

static int fail(ref *R, int code)
{
    if (R->code == OMX_JSON_OK)
        R->code = code;
    return -1;
}

static void ws(ref *R)
{
    while (R->i < R->n && (R->s[R->i] == ' ' || R->s[R->i] == '\t'
                           || R->s[R->i] == '\n' || R->s[R->i] == '\r'))
        R->i++;
}

/* A string at R->i (its opening quote). With NAME, its unescaped code
 * units (up to CAP of them) and their count go to NAME and *LEN. */
static int string(ref *R, unsigned long *name, size_t cap, size_t *len)
{
    const unsigned char *s = R->s;
    size_t k = 0;
    R->i++;
    for (;;) {
        unsigned long ch;
        if (R->i >= R->n)
            return fail(R, OMX_JSON_ESYNTAX);
        ch = s[R->i];
        if (ch == '"') {
            R->i++;
            break;
        }
        if (ch < 0x20)
            return fail(R, OMX_JSON_ESYNTAX);
        if (ch == '\\') {
            const char *simple = "\"\\/bfnrt", *hit;
            if (R->i + 1 >= R->n)
                return fail(R, OMX_JSON_ESYNTAX);
            if (s[R->i + 1] == 'u') {
                int j, h;
                ch = 0;
                for (j = 2; j < 6; j++) {
                    if (R->i + (size_t)j >= R->n || (h = ref_hex(s[R->i + (size_t)j])) < 0)
                        return fail(R, OMX_JSON_ESYNTAX);
                    ch = ch << 4 | (unsigned long)h;
                }
                R->i += 6;
            } else if (s[R->i + 1] != '\0'
                       && (hit = strchr(simple, s[R->i + 1])) != NULL) {
                ch = (unsigned long)(unsigned char)"\"\\/\b\f\n\r\t"[hit - simple];
                R->i += 2;
            } else {
                return fail(R, OMX_JSON_ESYNTAX);
            }
        } else {
            R->i++;
        }
        if (name != NULL && k < cap)
            name[k] = ch;
        k++;
    }
    if (len != NULL)
        *len = k;
    return 0;
}

static int name_is(const unsigned long *name, size_t len, const char *want)
{
    size_t k;
    if (len != strlen(want))
        return 0;
    for (k = 0; k < len; k++)
        if (name[k] != (unsigned char)want[k])
            return 0;
    return 1;
}

/* data[item].b64_json: find the closing quote (a backslash takes the next
 * byte with it), decode the contents as base64 in a JSON string. */
static int image_string(ref *R)
{
    const unsigned char *s = R->s;
    size_t open = R->i, j = R->i + 1, len;
    unsigned char *out;
    omx_b64_error err;
    int rc;
    while (j < R->n && s[j] != '"')
        j += s[j] == '\\' ? 2 : 1;
    if (j >= R->n)
        return fail(R, OMX_JSON_ESYNTAX);
    out = (unsigned char *)ref_alloc(j - open);
    rc = ref_b64_decode(s + open + 1, j - open - 1, 1, out, &len, &err);
    if (rc != OMX_B64_OK) {
        free(out);
        if (rc == OMX_B64_EJSONESC || rc == OMX_B64_EJSONCHAR)
            return fail(R, OMX_JSON_ESYNTAX);
        if (R->code == OMX_JSON_OK)
            R->index = R->item;
        return fail(R, OMX_JSON_EBASE64);
    }
    list_push(&R->images, out, len, open, j);
    R->i = j + 1;
    return 0;
}

static int literal(ref *R, const char *word)
{
    size_t len = strlen(word);
    if (R->n - R->i < len || memcmp(R->s + R->i, word, len) != 0)
        return fail(R, OMX_JSON_ESYNTAX);
    R->i += len;
    return 0;
}

static int digits(ref *R)
{
    size_t start = R->i;
    while (R->i < R->n && R->s[R->i] >= '0' && R->s[R->i] <= '9')
        R->i++;
    return R->i > start ? 0 : fail(R, OMX_JSON_ESYNTAX);
}

static int number(ref *R)
{
    const unsigned char *s = R->s;
    if (s[R->i] == '-')
        R->i++;
    if (R->i < R->n && s[R->i] == '0')
        R->i++;
    else if (R->i >= R->n || s[R->i] < '1' || s[R->i] > '9' || digits(R) != 0)
        return fail(R, OMX_JSON_ESYNTAX);
    if (R->i < R->n && s[R->i] == '.') {
        R->i++;
        if (digits(R) != 0)
            return -1;
    }
    if (R->i < R->n && (s[R->i] == 'e' || s[R->i] == 'E')) {
        R->i++;
        if (R->i < R->n && (s[R->i] == '+' || s[R->i] == '-'))
            R->i++;
        if (digits(R) != 0)
            return -1;
    }
    return 0;
}

static int value(ref *R, int at, size_t depth);

static int object(ref *R, int at, size_t depth)
{
    R->i++;
    ws(R);
    if (R->i < R->n && R->s[R->i] == '}') {
        R->i++;
        return 0;
    }
    for (;;) {
        unsigned long name[16];
        size_t len = 0;
        int child = AT_NONE;
        ws(R);
        if (R->i >= R->n || R->s[R->i] != '"')
            return fail(R, OMX_JSON_ESYNTAX);
        if (string(R, name, 16, &len) != 0)
            return -1;
        if (at == AT_TOP && name_is(name, len, "data"))
            child = AT_DATA;
        else if (at == AT_ITEM && name_is(name, len, "b64_json"))
            child = AT_B64;
        ws(R);
        if (R->i >= R->n || R->s[R->i] != ':')
            return fail(R, OMX_JSON_ESYNTAX);
        R->i++;
        if (value(R, child, depth + 1) != 0)
            return -1;
        ws(R);
        if (R->i < R->n && R->s[R->i] == ',') {
            R->i++;
            continue;
        }
        if (R->i < R->n && R->s[R->i] == '}') {
            R->i++;
            return 0;
        }
        return fail(R, OMX_JSON_ESYNTAX);
    }
}

static int array(ref *R, int at, size_t depth)
{
    int data = at == AT_DATA;
    if (data)
        R->item = 0;
    R->i++;
    ws(R);
    if (R->i < R->n && R->s[R->i] == ']') {
        R->i++;
        return 0;
    }
    for (;;) {
        if (data)
            R->item++;
        if (value(R, data ? AT_ITEM : AT_NONE, depth + 1) != 0)
            return -1;
        ws(R);
        if (R->i < R->n && R->s[R->i] == ',') {
            R->i++;
            continue;
        }
        if (R->i < R->n && R->s[R->i] == ']') {
            R->i++;
            return 0;
        }
        return fail(R, OMX_JSON_ESYNTAX);
    }
}

/* A value; AT says where it sits; DEPTH containers are open around it. */
static int value(ref *R, int at, size_t depth)
{
    ws(R);
    if (R->i >= R->n)
        return fail(R, OMX_JSON_ESYNTAX);
    switch (R->s[R->i]) {
    case '{':
        if (depth == OMX_JSON_MAX_DEPTH)
            return fail(R, OMX_JSON_ESYNTAX);
        return object(R, at == AT_TOP || at == AT_ITEM ? at : AT_NONE, depth);
    case '[':
        if (depth == OMX_JSON_MAX_DEPTH)
            return fail(R, OMX_JSON_ESYNTAX);
        return array(R, at, depth);
    case '"':
        return at == AT_B64 ? image_string(R) : string(R, NULL, 0, NULL);
    case 't':
        return literal(R, "true");
    case 'f':
        return literal(R, "false");
    case 'n':
        return literal(R, "null");
    default:
        if (R->s[R->i] == '-' || (R->s[R->i] >= '0' && R->s[R->i] <= '9'))
            return number(R);
        return fail(R, OMX_JSON_ESYNTAX);
    }
}

static void ref_scan(ref *R, const unsigned char *s, size_t n)
{
    memset(R, 0, sizeof *R);
    R->s = s;
    R->n = n;
    if (value(R, AT_TOP, 0) == 0) {
        ws(R);
        if (R->i != R->n)
            fail(R, OMX_JSON_ESYNTAX);
    }
}

/* ---- the core, through its callbacks ----------------------------------- */

typedef struct sink {
    list images;
    unsigned char *room;
    size_t room_size;
    char *rest;
    size_t rest_len, rest_cap;
    unsigned long calls, fail_at; /* answer "out of memory" at call FAIL_AT */
} sink;

static int sink_fails(sink *k)
{
    return ++k->calls == k->fail_at;
}

static unsigned char *sink_room(void *ud, size_t index, size_t have, size_t need)
{
    sink *k = (sink *)ud;
    unsigned char *room;
    CHECK(index == k->images.n + 1);
    CHECK(k->room != NULL ? have <= k->room_size : have == 0);
    CHECK(need >= have);
    if (sink_fails(k))
        return NULL;
    /* an exact-size block each time, the decoded bytes copied over */
    room = (unsigned char *)ref_alloc(need);
    if (have > 0)
        memcpy(room, k->room, have);
    free(k->room);
    k->room = room;
    k->room_size = need;
    return k->room;
}

static int sink_image(void *ud, size_t index, size_t len)
{
    sink *k = (sink *)ud;
    CHECK(k->room != NULL);
    CHECK(index == k->images.n + 1);
    CHECK(len <= k->room_size);
    list_push(&k->images, k->room, len, 0, 0);
    k->room = NULL;
    return sink_fails(k);
}

static int sink_rest(void *ud, const char *p, size_t n)
{
    sink *k = (sink *)ud;
    if (sink_fails(k))
        return 1;
    if (k->rest_len + n > k->rest_cap) {
        k->rest_cap = 2 * (k->rest_len + n) + 16;
        k->rest = (char *)realloc(k->rest, k->rest_cap);
        if (k->rest == NULL)
            abort();
    }
    if (n > 0)
        memcpy(k->rest + k->rest_len, p, n);
    k->rest_len += n;
    return 0;
}

/* One call (SEED 0), or fed in pieces of 1 to SEED % 61 bytes. */
static int scan_pieces(const unsigned char *data, size_t size, sink *k,
                       omx_json_error *err, unsigned seed)
{
    omx_json_images_ops ops;
    omx_json_scan S;
    size_t pos = 0;
    int rc;
    ops.ud = k;
    ops.image_room = sink_room;
    ops.image = sink_image;
    ops.rest = sink_rest;
    memset(err, 0xAB, sizeof *err);
    if (seed == 0) {
        rc = omx_json_decode_images((const char *)data, size, &ops, err);
    } else {
        unsigned max = 1 + seed % 61;
        omx_json_scan_init(&S, 0, &ops);
        rc = OMX_JSON_OK;
        while (pos < size && rc == OMX_JSON_OK) {
            size_t piece;
            seed = seed * 1103515245u + 12345u;
            piece = 1 + (seed >> 16) % max;
            if (piece > size - pos)
                piece = size - pos;
            rc = omx_json_scan_feed(&S, (const char *)data + pos, piece);
            pos += piece;
        }
        if (rc == OMX_JSON_OK)
            rc = omx_json_scan_finish(&S);
        CHECK(omx_json_scan_finish(&S) == rc); /* errors stay */
        *err = S.err;
    }
    CHECK(err->code == rc);
    if (rc != OMX_JSON_OK) {
        CHECK(memchr(err->message, '\0', sizeof err->message) != NULL);
        CHECK(err->message[0] != '\0');
        CHECK(err->offset <= size);
    }
    free(k->room); /* a room given just before an error */
    k->room = NULL;
    return rc;
}

static int scan(const unsigned char *data, size_t size, sink *k, omx_json_error *err)
{
    return scan_pieces(data, size, k, err, 0);
}

static void sink_free(sink *k)
{
    list_free(&k->images);
    free(k->rest);
    memset(k, 0, sizeof *k);
}

/* The rest text the reference expects: the input with each image literal
 * replaced by its number. */
static char *expected_rest(const unsigned char *s, size_t n, const list *images, size_t *len)
{
    char *out = (char *)ref_alloc(n + 1 + 20 * images->n), *o = out;
    size_t from = 0, k;
    for (k = 0; k < images->n; k++) {
        memcpy(o, s + from, images->v[k].open - from);
        o += images->v[k].open - from;
        o += sprintf(o, "\"%lu\"", (unsigned long)k + 1);
        from = images->v[k].close + 1;
    }
    memcpy(o, s + from, n - from);
    o += n - from;
    *len = (size_t)(o - out);
    return out;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    ref R;
    sink k;
    omx_json_error err;
    int rc;
    size_t i;
    unsigned long calls;

    memset(&k, 0, sizeof k);
    rc = scan(data, size, &k, &err);
    ref_scan(&R, data, size);

    CHECK(rc == R.code);
    if (rc == OMX_JSON_EBASE64)
        CHECK(err.index == R.index && err.index >= 1);
    if (rc == OMX_JSON_OK) {
        CHECK(k.images.n == R.images.n);
        for (i = 0; i < R.images.n; i++) {
            CHECK(k.images.v[i].len == R.images.v[i].len);
            CHECK(memcmp(k.images.v[i].bytes, R.images.v[i].bytes, R.images.v[i].len) == 0);
        }
        if (R.images.n == 0) {
            CHECK(k.rest_len == size && memcmp(k.rest, data, size) == 0);
        } else {
            size_t len;
            char *want = expected_rest(data, size, &R.images, &len);
            sink again;
            int rc2;
            omx_json_error err2;
            CHECK(k.rest_len == len);
            CHECK(memcmp(k.rest, want, len) == 0);
            free(want);
            /* the rest is JSON again, with the images' numbers as strings
             * where they were (each scans as base64 again: no syntax error,
             * and as many images, or a base64 error for a number like "1") */
            memset(&again, 0, sizeof again);
            rc2 = scan((const unsigned char *)k.rest, k.rest_len, &again, &err2);
            CHECK(rc2 == OMX_JSON_OK || rc2 == OMX_JSON_EBASE64);
            if (rc2 == OMX_JSON_OK)
                CHECK(again.images.n == R.images.n);
            sink_free(&again);
        }
    }
    /* Fed in pieces, even one byte at a time: the same outcome. */
    {
        unsigned seeds[2];
        int t;
        seeds[0] = 1; /* max 2 */
        seeds[1] = (unsigned)(size * 2654435761u) | 1u;
        for (t = 0; t < 2; t++) {
            sink p;
            omx_json_error perr;
            memset(&p, 0, sizeof p);
            CHECK(scan_pieces(data, size, &p, &perr, seeds[t]) == rc);
            CHECK(perr.code == err.code && perr.offset == err.offset);
            CHECK(strcmp(perr.message, err.message) == 0);
            if (rc == OMX_JSON_EBASE64)
                CHECK(perr.index == err.index);
            if (rc == OMX_JSON_OK) {
                CHECK(p.images.n == k.images.n);
                for (i = 0; i < k.images.n; i++) {
                    CHECK(p.images.v[i].len == k.images.v[i].len);
                    CHECK(memcmp(p.images.v[i].bytes, k.images.v[i].bytes, k.images.v[i].len) == 0);
                }
                CHECK(p.rest_len == k.rest_len && memcmp(p.rest, k.rest, k.rest_len) == 0);
            }
            sink_free(&p);
        }
    }
    calls = k.calls;
    sink_free(&k);
    list_free(&R.images);

    /* Once more, with one callback out of memory. */
    if (calls > 0) {
        unsigned long h = 2166136261u;
        for (i = 0; i < size; i++)
            h = (h ^ data[i]) * 16777619u;
        memset(&k, 0, sizeof k);
        k.fail_at = 1 + h % calls;
        CHECK(scan(data, size, &k, &err) == OMX_JSON_ENOMEM);
        CHECK(k.calls == k.fail_at);
        sink_free(&k);
    }
    return 0;
}
