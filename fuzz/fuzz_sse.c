/* fuzz_sse.c — libFuzzer target for the SSE parser (src/sse.c), and the
 * image scanner it feeds in images mode (omx_json_decode_images_ex with
 * OMX_JSON_TOP_B64, src/json.c).
 *
 * The oracle is differential: the input is parsed by omx_sse_feed whole and
 * in chunks cut where the input's first bytes say, and by a plain reference
 * parser written straight from the standard's text over the whole input;
 * events, errors, heartbeat count, retry and the "cut" answer of
 * omx_sse_finish must agree. Each event's data also goes through the image
 * scanner, under the sanitizers.
 *
 * Errors (issue 13, defect 7): the events a chunk completes before an event
 * over the limit are delivered (the records above hold the events and then
 * the error, so they must match the reference's events up to its error);
 * after an error every later feed returns the same error and delivers
 * nothing. Two more runs stop the parser at the Kth event (K from the
 * input): once by the callback's return value, once by a longjmp out of the
 * callback (what a Lua error raised in it does). Each must have delivered
 * exactly the reference's first K events, and then be dead: every feed
 * returns OMX_SSE_ESTOPPED (OMX_SSE_EABANDONED after the longjmp) and no
 * event comes out of the rest of the input.
 *
 * Build and run by hand (from the repository root):
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
 *     -D_POSIX_C_SOURCE=200809L -Isrc $(pkg-config --cflags lua5.4) \
 *     fuzz/fuzz_sse.c src/sse.c src/json.c src/base64.c src/buffer.c src/compat.c \
 *     -llua5.4 -o build/fuzz_sse
 *   mkdir -p build/fuzz-sse-corpus && build/fuzz_sse -max_total_time=60 build/fuzz-sse-corpus fuzz/corpus/fuzz_sse
 * (liblua is linked only because those files also hold their Lua bindings;
 * nothing here calls Lua.) */
#include <limits.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json.h"
#include "sse.h"
#include "ref.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* ---- a growable record of what a parser said ---------------------------- */

typedef struct rec {
    unsigned char *p;
    size_t len, cap;
} rec;

static void put(rec *r, const void *s, size_t n)
{
    if (r->len + n > r->cap) {
        size_t cap = r->cap ? r->cap : 256;
        while (cap < r->len + n)
            cap *= 2;
        r->p = (unsigned char *)realloc(r->p, cap);
        if (r->p == NULL)
            abort();
        r->cap = cap;
    }
    memcpy(r->p + r->len, s, n);
    r->len += n;
}

static void put_field(rec *r, const char *s, size_t n)
{
    put(r, &n, sizeof n);
    put(r, s, n);
}

static void put_event(rec *r, const char *type, size_t type_len,
                      const char *data, size_t data_len,
                      const char *id, size_t id_len, long long retry)
{
    put(r, "E", 1);
    put_field(r, type, type_len);
    put_field(r, data, data_len);
    put(r, id ? "I" : "-", 1);
    if (id)
        put_field(r, id, id_len);
    put(r, &retry, sizeof retry);
}

/* ---- the image scanner over each event's data -------------------------- */

typedef struct scan_ud {
    unsigned char *room;
    size_t rest;
} scan_ud;

static unsigned char *scan_room(void *ud, size_t index, size_t have, size_t need)
{
    scan_ud *u = (scan_ud *)ud;
    unsigned char *r = (unsigned char *)realloc(u->room, need + 1);
    (void)index;
    (void)have; /* realloc keeps them */
    if (r != NULL)
        u->room = r;
    return r;
}

static int scan_image(void *ud, size_t index, size_t len)
{
    scan_ud *u = (scan_ud *)ud;
    volatile unsigned char sink = 0;
    (void)index;
    if (len > 0)
        sink = u->room[len - 1]; /* the decoded bytes must be there */
    (void)sink;
    return 0;
}

static int scan_rest(void *ud, const char *p, size_t n)
{
    scan_ud *u = (scan_ud *)ud;
    volatile char sink = 0;
    if (n > 0)
        sink = p[n - 1];
    (void)sink;
    u->rest += n;
    return 0;
}

/* ---- the parser under test ------------------------------------------- */

typedef struct run {
    rec out;
    int scan;
    size_t events;      /* events delivered */
    size_t stop_at;     /* stop at this event (1-based); 0: never */
    int jump;           /* stop by longjmp to ENV rather than by returning 1 */
    jmp_buf env;
} run;

static int on_event(void *ud, const omx_sse_event *ev)
{
    run *r = (run *)ud;
    r->events++;
    put_event(&r->out, ev->type, ev->type_len, ev->data, ev->data_len,
              ev->id, ev->id_len, ev->retry);
    if (r->scan) {
        omx_json_images_ops ops;
        omx_json_error err;
        scan_ud u = { NULL, 0 };
        ops.ud = &u;
        ops.image_room = scan_room;
        ops.image = scan_image;
        ops.rest = scan_rest;
        omx_json_decode_images_ex(ev->data, ev->data_len, OMX_JSON_TOP_B64, &ops, &err);
        free(u.room);
    }
    if (r->stop_at != 0 && r->events == r->stop_at) {
        if (r->jump)
            longjmp(r->env, 1);
        return 1;
    }
    return 0;
}

static void finish_record(rec *out, int rc, size_t comments, long long retry, int cut)
{
    put(out, "R", 1);
    put(out, &rc, sizeof rc);
    if (rc == OMX_SSE_OK) {
        put(out, &comments, sizeof comments);
        put(out, &retry, sizeof retry);
        put(out, &cut, sizeof cut);
    }
}

/* The size of the next chunk of what is left (N) when cutting by *SEED. */
static size_t next_chunk(unsigned *seed, size_t n)
{
    size_t k = n;
    if (*seed) {
        *seed = *seed * 1103515245u + 12345u;
        k = (*seed >> 16) % 17; /* empty chunks too */
        if (k > n)
            k = n;
    }
    return k;
}

/* After error RC, feeding P the rest (or a byte) returns RC again and
 * delivers nothing. */
static void check_dead(omx_sse_parser *p, run *r, const char *s, size_t n, int rc)
{
    size_t events = r->events;
    CHECK(omx_sse_feed(p, n ? s : "x", n ? n : 1, on_event, r) == rc);
    CHECK(omx_sse_feed(p, "data: x\n\n", 9, on_event, r) == rc);
    CHECK(r->events == events);
}

/* Parse S in chunks whose sizes come from SEED (0: whole). */
static void run_parser(run *r, const char *s, size_t n, size_t max, unsigned seed)
{
    omx_sse_parser *p = omx_sse_new(max);
    size_t i = 0;
    int rc = OMX_SSE_OK, cut;
    if (p == NULL)
        abort();
    while (i < n && rc == OMX_SSE_OK) {
        size_t k = next_chunk(&seed, n - i);
        rc = omx_sse_feed(p, s + i, k, on_event, r);
        i += k;
    }
    if (rc == OMX_SSE_OK && omx_sse_feed(p, "", 0, on_event, r) != OMX_SSE_OK)
        abort();
    if (rc != OMX_SSE_OK)
        check_dead(p, r, s + i, n - i, rc);
    cut = omx_sse_finish(p);
    finish_record(&r->out, rc, omx_sse_comments(p), omx_sse_retry(p), cut);
    if (omx_sse_feed(p, "x", 1, on_event, r) != (rc ? rc : OMX_SSE_EFINISHED))
        abort();
    omx_sse_free(p);
}

/* Parse S in chunks from SEED, stopped at event R->stop_at (by return or by
 * longjmp, R->jump); then P must be dead. The events delivered are left in
 * R->out, without the end record. */
static void run_stopped(run *r, const char *s, size_t n, size_t max, unsigned seed)
{
    omx_sse_parser *p = omx_sse_new(max);
    volatile size_t i = 0;
    volatile unsigned cutter = seed;
    volatile int rc = OMX_SSE_OK;
    if (p == NULL)
        abort();
    if (setjmp(r->env) == 0) {
        while (i < n && rc == OMX_SSE_OK) {
            unsigned sd = cutter;
            size_t k = next_chunk(&sd, n - i);
            cutter = sd;
            rc = omx_sse_feed(p, s + i, k, on_event, r);
            i += k;
        }
    } else {
        rc = OMX_SSE_EABANDONED; /* left by the longjmp */
    }
    CHECK(r->events <= r->stop_at);
    if (r->events == r->stop_at)
        CHECK(rc == (r->jump ? OMX_SSE_EABANDONED : OMX_SSE_ESTOPPED));
    if (rc != OMX_SSE_OK) {
        r->stop_at = 0; /* no more stopping: only dead answers */
        check_dead(p, r, s + i, n - i, rc);
    }
    omx_sse_finish(p);
    omx_sse_free(p);
}

/* The first K events of the record WHOLE (all when it holds fewer). */
static size_t first_events(const rec *whole, size_t k)
{
    size_t at = 0, len, seen;
    for (seen = 0; seen < k && at < whole->len && whole->p[at] == 'E'; seen++) {
        at++;
        memcpy(&len, whole->p + at, sizeof len);   /* type */
        at += sizeof len + len;
        memcpy(&len, whole->p + at, sizeof len);   /* data */
        at += sizeof len + len;
        if (whole->p[at++] == 'I') {               /* id */
            memcpy(&len, whole->p + at, sizeof len);
            at += sizeof len + len;
        }
        at += sizeof(long long);                   /* retry */
    }
    return at;
}

/* ---- the reference: the standard's steps over the whole input ---------- */

typedef struct refbuf {
    char *p;
    size_t len;
} refbuf;

static void ref_set(refbuf *b, const char *s, size_t n)
{
    free(b->p);
    b->p = (char *)malloc(n ? n : 1);
    if (b->p == NULL)
        abort();
    if (n)
        memcpy(b->p, s, n);
    b->len = n;
}

static void ref_append(refbuf *b, const char *s, size_t n)
{
    b->p = (char *)realloc(b->p, b->len + n + 1);
    if (b->p == NULL)
        abort();
    if (n)
        memcpy(b->p + b->len, s, n);
    b->len += n;
}

/* Split LINE (not empty, not a comment) into name and value. */
static void split_line(const char *line, size_t len, const char **name, size_t *name_len,
                       const char **value, size_t *value_len)
{
    size_t colon;
    for (colon = 0; colon < len && line[colon] != ':'; colon++)
        ;
    *name = line;
    *name_len = colon;
    if (colon < len) {
        *value = line + colon + 1;
        *value_len = len - colon - 1;
        if (*value_len > 0 && **value == ' ') {
            (*value)++;
            (*value_len)--;
        }
    } else {
        *value = line + len;
        *value_len = 0;
    }
}

/* The bytes an event holds once LINE (COMPLETE or cut) has been read. */
static size_t held_after(const char *line, size_t len, int complete,
                         const refbuf *data, const refbuf *type)
{
    const char *name, *value;
    size_t name_len, value_len;
    split_line(line, len, &name, &name_len, &value, &value_len);
    if (name_len == 4 && memcmp(name, "data", 4) == 0)
        return data->len + type->len + value_len + (complete ? 1 : 0);
    if (name_len == 5 && memcmp(name, "event", 5) == 0)
        return data->len + value_len;
    if (name_len == 2 && memcmp(name, "id", 2) == 0) {
        const char *nul = (const char *)memchr(value, '\0', value_len);
        return data->len + type->len + (nul ? (size_t)(nul - value) : value_len);
    }
    return data->len + type->len;
}

static void reference(rec *out, const char *s, size_t n, size_t max)
{
    refbuf data = { NULL, 0 }, type = { NULL, 0 }, lastid = { NULL, 0 };
    size_t pos = 0, comments = 0;
    long long retry = -1, event_retry = -1;
    int rc = OMX_SSE_OK, cut = 0;

    if (n >= 3 && memcmp(s, "\xEF\xBB\xBF", 3) == 0)
        pos = 3;
    for (;;) {
        size_t end = pos, len;
        const char *line, *name, *value;
        size_t name_len, value_len;
        while (end < n && s[end] != '\r' && s[end] != '\n')
            end++;
        line = s + pos;
        len = end - pos;
        if (end == n) {
            /* no line end: the rest is discarded, but what an incremental
             * parser holds of it still counts toward the limit */
            if (len > 0 && line[0] != ':' && held_after(line, len, 0, &data, &type) > max && max)
                rc = OMX_SSE_ETOOBIG;
            cut = data.len > 0 || (len > 0 && line[0] != ':');
            break;
        }
        pos = end + 1;
        if (s[end] == '\r' && pos < n && s[pos] == '\n')
            pos++;

        if (len == 0) {
            if (data.len > 0) {
                put_event(out, type.len ? type.p : "message", type.len ? type.len : 7,
                          data.p, data.len - 1, lastid.len ? lastid.p : NULL,
                          lastid.len, event_retry);
            }
            data.len = 0;
            type.len = 0;
            event_retry = -1;
            continue;
        }
        if (line[0] == ':') {
            comments++;
            continue;
        }
        if (max && held_after(line, len, 1, &data, &type) > max) {
            rc = OMX_SSE_ETOOBIG;
            break;
        }
        split_line(line, len, &name, &name_len, &value, &value_len);
        if (name_len == 4 && memcmp(name, "data", 4) == 0) {
            ref_append(&data, value, value_len);
            ref_append(&data, "\n", 1);
        } else if (name_len == 5 && memcmp(name, "event", 5) == 0) {
            ref_set(&type, value, value_len);
        } else if (name_len == 2 && memcmp(name, "id", 2) == 0) {
            if (memchr(value, '\0', value_len) == NULL)
                ref_set(&lastid, value, value_len);
        } else if (name_len == 5 && memcmp(name, "retry", 5) == 0) {
            long long v = 0;
            size_t i;
            int ok = value_len > 0;
            for (i = 0; i < value_len && ok; i++) {
                unsigned d = (unsigned char)value[i] - (unsigned)'0';
                if (d > 9 || v > (LLONG_MAX - (long long)d) / 10)
                    ok = 0;
                else
                    v = v * 10 + (long long)d;
            }
            if (ok)
                retry = event_retry = v;
        }
    }
    if (n > 0 && n < 3 && memcmp(s, "\xEF\xBB\xBF", n) == 0)
        cut = 1; /* a BOM begun but not finished */
    finish_record(out, rc, comments, retry, cut);
    free(data.p);
    free(type.p);
    free(lastid.p);
}

/* ---- the target ----------------------------------------------------- */

static void check_same(const rec *a, const rec *b, const char *what)
{
    if (a->len != b->len || memcmp(a->p, b->p, a->len) != 0) {
        fprintf(stderr, "fuzz_sse: %s differs\n", what);
        abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static run whole, pieces, stopped;
    rec ref = { NULL, 0, 0 };
    int jump;
    size_t max;
    unsigned seed;
    const char *s;
    size_t n;
    if (size < 2)
        return 0;
    /* byte 0: max_bytes (0: none, else 1..255); byte 1: how to cut */
    max = data[0] < 128 ? 0 : data[0] - 127u;
    seed = data[1] + 1u;
    s = (const char *)data + 2;
    n = size - 2;

    memset(&whole, 0, sizeof whole);
    memset(&pieces, 0, sizeof pieces);
    whole.scan = 1;
    run_parser(&whole, s, n, max, 0);
    run_parser(&pieces, s, n, max, seed);
    reference(&ref, s, n, max);
    check_same(&whole.out, &pieces.out, "chunked parse");
    check_same(&whole.out, &ref, "reference parse");
    /* stopped at event 1..4, by return and by longjmp */
    for (jump = 0; jump <= 1; jump++) {
        size_t upto;
        memset(&stopped, 0, sizeof stopped);
        stopped.stop_at = data[1] % 4 + 1;
        stopped.jump = jump;
        upto = first_events(&ref, stopped.stop_at);
        run_stopped(&stopped, s, n, max, seed);
        CHECK(stopped.out.len == upto && (upto == 0 || memcmp(stopped.out.p, ref.p, upto) == 0));
        free(stopped.out.p);
    }
    free(whole.out.p);
    free(pieces.out.p);
    free(ref.p);
    return 0;
}
