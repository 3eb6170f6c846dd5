/* transport.c — the libcurl transport, on the multi interface so that a
 * request never has to block its caller.
 *
 *   core.multi() -> multi            one per client: the connection pool,
 *                                    TLS sessions and DNS cache of its
 *                                    requests, and a pool of easy handles
 *   multi:add(req) -> transfer       starts a transfer at once
 *   multi:poll(timeout) -> { transfer, ... }   waits up to TIMEOUT seconds
 *                                    (0: not at all) for activity, drives
 *                                    every transfer, returns the finished ones
 *   multi:fd() -> integer            readable when poll has work to do
 *   multi:wake_at(t | nil)           also make fd readable at monotonic time T
 *   multi:running() -> integer
 *   multi:close()                    cancels every transfer; idempotent,
 *                                    __gc, __close
 *   transfer:result() -> res | nil, err     once finished
 *   transfer:done() -> boolean
 *   transfer:cancel()                finishes it now as cancelled
 *   transfer:progress() -> phase, sent, send_total, received, receive_total
 *   transfer:head() -> status, headers     once the header block is complete
 *   transfer:take() -> bytes               the body received since the last
 *                                    take (for streams read as they arrive)
 *   core.now(), core.sleep(s), core.curl_version()
 *
 * req = { url =, method = "GET"|"POST", headers = { "Name: value", ... },
 *         body = string|buffer|nil, timeout =, connect_timeout =, idle_timeout =
 *         (seconds), ca_file =, ca_path =, insecure =, proxy =, user_agent =,
 *         max_response_bytes =, scan_images = bool, progress =
 *         function(phase, sent, send_total, received, receive_total) -> false
 *         cancels }
 * res = { status =, headers = { [lower-case name] = value }, body = buffer,
 *         received_bytes =, sent = bool, received = bool }
 *       With scan_images, a 2xx body that is neither an event stream nor an
 *       image is scanned as it arrives (json.h): the base64 images are
 *       decoded straight from the network buffers, never kept as text, and
 *       res gets images = { bytes, ... } and rest = the JSON with each image
 *       replaced by its number as a string ("1"), or scan_error = message and scan_what =
 *       "json" | "base64"; body then keeps only the first SCAN_EXCERPT
 *       bytes (for error messages).
 * err = res's fields plus kind =, message =, curl_code =; a Lua error
 *       raised by the progress function gives kind = "callback_error" and
 *       error = <the value raised>, for the caller to raise again.
 *
 * Sockets and deadlines are gathered in one epoll descriptor (with a timerfd
 * for curl's timer, idle timeouts and the caller's wake time), so an event
 * loop (vim.uv, cqueues, select) can wait on multi:fd() alone.
 *
 * Lua runs inside curl only through lua_pcall of a trampoline that poll()
 * pushed beforehand; nothing that can raise is called from a curl callback,
 * and everything curl borrows (the body string, the header list) stays
 * anchored in the registry until the transfer is finished. */
#define _DEFAULT_SOURCE /* MAP_ANONYMOUS, MADV_HUGEPAGE */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/timerfd.h>

#include <curl/curl.h>
#include <lauxlib.h>

#include "buffer.h"
#include "compat.h"
#include "json.h"
#include "omixa.h"

#define OMX_MULTI "omixa.multi"
#define OMX_TRANSFER "omixa.transfer"

#define PROGRESS_INTERVAL 0.05 /* seconds between progress calls, at most */
#define EASY_POOL 8            /* idle easy handles kept for reuse */
#define NO_TIME 0.0
#define SCAN_EXCERPT 2048      /* body bytes kept when scanning */
#define BIG_ROOM (1u << 20)      /* image rooms this big are mapped pages */
#define SPARES 4                 /* big rooms a client keeps (images per answer) */
#define RECV_BUFFER 524288L      /* bytes per read from the socket (curl: 16 KiB) */

enum phase { PH_NONE, PH_CONNECTING, PH_UPLOADING, PH_WAITING, PH_RECEIVING };
static const char *const phase_names[] = {
    "none", "connecting", "uploading", "waiting", "receiving"
};

enum abort_reason {
    AB_NONE, AB_CANCEL, AB_CALLBACK_ERROR, AB_TOO_LARGE, AB_IDLE, AB_NOMEM, AB_CLOSED
};

typedef struct multi multi;

/* A response body scanned for images as it arrives. */
typedef struct scan_sink {
    omx_json_scan js;
    omx_json_images_ops ops;
    omx_buf cur;                /* the image being decoded */
    omx_buf *imgs;              /* the finished ones */
    size_t nimgs, cap;
    omx_buf rest;
    size_t hint, fed;           /* Content-Length (0: unknown), bytes fed */
    omx_buf *spare;             /* the multi's spare rooms (see room_free) */
} scan_sink;

enum { SCAN_OFF, SCAN_WANTED, SCAN_ON, SCAN_NOT };

typedef struct transfer {
    multi *m;                   /* NULL once finished or detached */
    CURL *easy;                 /* NULL once finished */
    struct curl_slist *headers;
    struct transfer *prev, *next; /* in m's running list */
    int running, finished;

    /* Registry references: the request table (anchors the body string and
     * the progress function), the response buffer, the progress function,
     * a slot for a callback's error, the result. LUA_NOREF when unset. */
    int req_ref, buf_ref, fn_ref, err_ref, res_ref, self_ref;
    omx_buf *body;
    omx_buf head;               /* raw header block of the last response */
    size_t max_response, rx_total; /* rx_total: body bytes, taken or not */
    curl_off_t upload_total;
    const char *body_src;       /* the request body (anchored by req_ref) */
    const omx_buf *body_buf;    /* or the buffer holding it, read through */
    size_t body_len, body_pos;
    double idle_timeout, last_rx_time, last_call;
    int got_headers, headers_done, phase;
    curl_off_t sent, send_total, received, receive_total;
    enum abort_reason abort;
    int scan_mode;              /* SCAN_* */
    scan_sink *scan;            /* SCAN_ON: owned */
    char errbuf[CURL_ERROR_SIZE];
} transfer;

struct multi {
    CURLM *cm;
    CURLSH *share;
    int epfd, tfd;
    double curl_deadline, wake_at;
    transfer *head;             /* running transfers */
    int nrunning;
    CURL *pool[EASY_POOL];
    int npool;
    lua_State *L;               /* during poll only */
    int trampoline;             /* its stack index during poll */
    omx_buf spare[SPARES];      /* image rooms kept for the next response */
};

static double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void unref(lua_State *L, int *ref)
{
    if (*ref != LUA_NOREF && *ref != LUA_REFNIL)
        luaL_unref(L, LUA_REGISTRYINDEX, *ref);
    *ref = LUA_NOREF;
}

/* ---- timers ---- */

static double min_time(double a, double b)
{
    if (a == NO_TIME) return b;
    if (b == NO_TIME) return a;
    return a < b ? a : b;
}

/* The earliest moment poll() has something to do without any I/O. */
static double next_deadline(multi *m)
{
    double d = min_time(m->curl_deadline, m->wake_at);
    transfer *t;
    for (t = m->head; t; t = t->next)
        if (t->idle_timeout > 0 && t->got_headers)
            d = min_time(d, t->last_rx_time + t->idle_timeout);
    return d;
}

/* Arm the timerfd so that fd() becomes readable at the next deadline. */
static void arm_timer(multi *m)
{
    struct itimerspec its;
    double d = next_deadline(m);
    memset(&its, 0, sizeof its);
    if (d != NO_TIME) {
        if (d <= 0)
            d = 1e-9;
        its.it_value.tv_sec = (time_t)d;
        its.it_value.tv_nsec = (long)((d - (double)its.it_value.tv_sec) * 1e9);
        if (its.it_value.tv_sec == 0 && its.it_value.tv_nsec == 0)
            its.it_value.tv_nsec = 1;
    }
    timerfd_settime(m->tfd, TFD_TIMER_ABSTIME, &its, NULL);
}

/* ---- curl multi callbacks (no Lua here) ---- */

static int on_socket(CURL *e, curl_socket_t s, int what, void *ud, void *sockp)
{
    multi *m = (multi *)ud;
    struct epoll_event ev;
    (void)e; (void)sockp;
    if (what == CURL_POLL_REMOVE) {
        epoll_ctl(m->epfd, EPOLL_CTL_DEL, s, NULL);
        return 0;
    }
    memset(&ev, 0, sizeof ev);
    ev.events = (what & CURL_POLL_IN ? EPOLLIN : 0u) | (what & CURL_POLL_OUT ? EPOLLOUT : 0u);
    ev.data.fd = s;
    if (epoll_ctl(m->epfd, EPOLL_CTL_MOD, s, &ev) != 0 && errno == ENOENT)
        epoll_ctl(m->epfd, EPOLL_CTL_ADD, s, &ev);
    return 0;
}

static int on_timer(CURLM *cm, long timeout_ms, void *ud)
{
    multi *m = (multi *)ud;
    (void)cm;
    m->curl_deadline = timeout_ms < 0 ? NO_TIME : now_seconds() + (double)timeout_ms / 1000.0;
    if (timeout_ms == 0)
        m->curl_deadline = 1e-9; /* already due */
    arm_timer(m);
    return 0;
}

/* ---- curl easy callbacks (no Lua API call that can raise) ---- */

static size_t on_header(char *p, size_t size, size_t n, void *ud)
{
    transfer *t = (transfer *)ud;
    size_t len = size * n;
    if (len >= 5 && memcmp(p, "HTTP/", 5) == 0) {
        t->head.len = 0; /* a new response (after 1xx, or a proxy's CONNECT) */
        t->headers_done = 0;
    } else if ((len == 2 && p[0] == '\r') || (len == 1 && p[0] == '\n')) {
        t->headers_done = 1;
    }
    t->got_headers = 1;
    t->last_rx_time = now_seconds();
    if (omx_buf_append(&t->head, p, len) != 0) {
        t->abort = AB_NOMEM;
        return 0;
    }
    return len;
}

/* ---- the image scan of a response body ---- */

/* Image rooms: small ones from malloc; big ones are pages of their own
 * (huge pages where the kernel allows: a few faults instead of thousands).
 * The multi keeps the biggest one of its last response for the next
 * (SPARE), so a client receiving big images in a row decodes into pages
 * that are already there: no fault, no zeroing; client:close() (the
 * multi's close) gives it back. (MADV_FREE on the spare was measured: it
 * makes the next use slower than fresh pages.) */
static void unmap_room(omx_buf *b)
{
    if (b->cap >= BIG_ROOM)
        munmap(b->data, b->cap);
    else
        free(b->data);
    omx_buf_init(b);
}

/* Done with room B: kept in a free slot of SPARE (or instead of a smaller
 * one), else given back. */
static void room_free(omx_buf *spare, omx_buf *b)
{
    if (spare != NULL && b->cap >= BIG_ROOM) {
        omx_buf *slot = NULL;
        int i;
        for (i = 0; i < SPARES; i++)
            if (slot == NULL || spare[i].cap < slot->cap)
                slot = &spare[i];
        if (slot->cap < b->cap) {
            unmap_room(slot);
            *slot = *b;
            slot->len = 0;
            omx_buf_init(b);
            return;
        }
    }
    unmap_room(b);
}

/* The smallest room of SPARE that holds WANT bytes, or NULL. */
static omx_buf *fitting_spare(omx_buf *spare, size_t want)
{
    omx_buf *best = NULL;
    int i;
    if (spare == NULL)
        return NULL;
    for (i = 0; i < SPARES; i++)
        if (spare[i].cap >= want && (best == NULL || spare[i].cap < best->cap))
            best = &spare[i];
    return best;
}

static int room_grow(omx_buf *spare, omx_buf *b, size_t have, size_t want)
{
    char *d;
    if (want < BIG_ROOM) {
        if ((d = (char *)realloc(b->data, want)) == NULL)
            return -1;
    } else if ((spare = fitting_spare(spare, want)) != NULL) {
        d = spare->data;
        want = spare->cap;
        omx_buf_init(spare);
        if (have > 0)
            memcpy(d, b->data, have);
        unmap_room(b);
    } else {
        long page = sysconf(_SC_PAGESIZE);
        size_t ps = page > 0 ? (size_t)page : 4096;
        if (want > (size_t)-1 - ps)
            return -1;
        want = (want + ps - 1) / ps * ps;
        d = (char *)mmap(NULL, want, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (d == (char *)MAP_FAILED)
            return -1;
#ifdef MADV_HUGEPAGE
        (void)madvise(d, want, MADV_HUGEPAGE); /* fewer page faults */
#endif
        if (have > 0)
            memcpy(d, b->data, have);
        unmap_room(b);
    }
    b->data = d;
    b->cap = want;
    return 0;
}

/* Room for image INDEX: the Content-Length still to come tells how big it
 * can be, so the first room is usually the last. */
static unsigned char *sink_room(void *ud, size_t index, size_t have, size_t need)
{
    scan_sink *k = (scan_sink *)ud;
    omx_buf *b = &k->cur;
    (void)index;
    if (b->cap < need) {
        size_t want = need, guess = 0;
        if (k->hint > k->fed)
            guess = (k->hint - k->fed) / 4 * 3 + 8; /* all that is still to come */
        if (k->nimgs > 0 && guess > 0) {
            /* a later image: likely the size of the one before */
            size_t prev = k->imgs[k->nimgs - 1].len;
            if (prev + prev / 8 + 64 < guess)
                guess = prev + prev / 8 + 64;
        }
        if (guess > want)
            want = guess;
        if (b->cap > 0 && b->cap < (size_t)-1 / 2 && b->cap * 2 > want)
            want = b->cap * 2;
        if (room_grow(k->spare, b, have, want) != 0)
            return NULL;
    }
    b->len = have;
    return (unsigned char *)b->data;
}

static int sink_image(void *ud, size_t index, size_t len)
{
    scan_sink *k = (scan_sink *)ud;
    (void)index;
    if (k->nimgs == k->cap) {
        size_t cap = k->cap ? 2 * k->cap : 4;
        omx_buf *v = (omx_buf *)realloc(k->imgs, cap * sizeof *v);
        if (v == NULL)
            return 1;
        k->imgs = v;
        k->cap = cap;
    }
    k->cur.len = len;
    k->imgs[k->nimgs++] = k->cur;
    omx_buf_init(&k->cur);
    return 0;
}

static int sink_rest(void *ud, const char *p, size_t n)
{
    return omx_buf_append(&((scan_sink *)ud)->rest, p, n);
}

static void scan_free(transfer *t)
{
    scan_sink *k = t->scan;
    size_t i;
    if (k == NULL)
        return;
    for (i = 0; i < k->nimgs; i++)
        room_free(k->spare, &k->imgs[i]);
    free(k->imgs);
    room_free(k->spare, &k->cur);
    omx_buf_free(&k->rest);
    free(k);
    t->scan = NULL;
}

/* The response's Content-Length when it is known and within
 * max_response_bytes, else 0: how much room its body may need. */
static size_t length_hint(transfer *t)
{
    curl_off_t cl = -1;
    if (curl_easy_getinfo(t->easy, CURLINFO_CONTENT_LENGTH_DOWNLOAD_T, &cl) == CURLE_OK
        && cl > 0 && (!t->max_response || (size_t)cl <= t->max_response))
        return (size_t)cl;
    return 0;
}

/* Does S begin with PREFIX (ASCII, any case)? */
static int has_prefix_ci(const char *s, const char *prefix)
{
    for (; *prefix; s++, prefix++) {
        int a = (unsigned char)*s, b = (unsigned char)*prefix;
        if (a >= 'A' && a <= 'Z') a += 'a' - 'A';
        if (a != b)
            return 0;
    }
    return 1;
}

/* At the first body byte: scan this body? Only a 2xx that is neither an
 * event stream nor an image. 0, or -1 when out of memory. */
static int scan_decide(transfer *t)
{
    long status = 0;
    char *ctype = NULL;
    scan_sink *k;
    t->scan_mode = SCAN_NOT;
    curl_easy_getinfo(t->easy, CURLINFO_RESPONSE_CODE, &status);
    curl_easy_getinfo(t->easy, CURLINFO_CONTENT_TYPE, &ctype);
    if (status < 200 || status > 299)
        return 0;
    if (ctype != NULL && (has_prefix_ci(ctype, "text/event-stream")
                          || has_prefix_ci(ctype, "image/")))
        return 0;
    if ((k = (scan_sink *)calloc(1, sizeof *k)) == NULL)
        return -1;
    k->ops.ud = k;
    k->ops.image_room = sink_room;
    k->ops.image = sink_image;
    k->ops.rest = sink_rest;
    omx_json_scan_init(&k->js, 0, &k->ops);
    k->hint = length_hint(t);
    k->spare = t->m != NULL ? t->m->spare : NULL;
    t->scan = k;
    t->scan_mode = SCAN_ON;
    return 0;
}

static size_t on_write(char *p, size_t size, size_t n, void *ud)
{
    transfer *t = (transfer *)ud;
    size_t len = size * n;
    omx_buf *b = t->body;
    t->last_rx_time = now_seconds();
    if (t->max_response && t->rx_total + len > t->max_response) {
        t->abort = AB_TOO_LARGE;
        return 0;
    }
    t->rx_total += len;
    if (t->scan_mode == SCAN_WANTED && scan_decide(t) != 0) {
        t->abort = AB_NOMEM;
        return 0;
    }
    if (t->scan_mode == SCAN_ON) {
        scan_sink *k = t->scan;
        /* the first bytes, for error messages; the rest only scanned */
        if (b->len < SCAN_EXCERPT
            && omx_buf_append(b, p, len < SCAN_EXCERPT - b->len ? len : SCAN_EXCERPT - b->len) != 0) {
            t->abort = AB_NOMEM;
            return 0;
        }
        /* after a syntax error the scanner ignores the rest of the body */
        if (omx_json_scan_feed(&k->js, p, len) == OMX_JSON_ENOMEM) {
            t->abort = AB_NOMEM;
            return 0;
        }
        k->fed += len;
        return len;
    }
    if (b->cap == 0) {
        /* Pre-size from Content-Length, within the limit. */
        size_t cl = length_hint(t);
        if (cl > 0)
            (void)omx_buf_reserve(b, cl);
    }
    if (omx_buf_append(b, p, len) != 0) {
        t->abort = AB_NOMEM;
        return 0;
    }
    return len;
}

static int current_phase(transfer *t)
{
    curl_off_t pretransfer = 0;
    if (t->got_headers || t->received > 0)
        return PH_RECEIVING;
    /* Set once the request starts going out, on a fresh connection (after
     * connect and TLS) and on a reused one alike. */
    curl_easy_getinfo(t->easy, CURLINFO_PRETRANSFER_TIME_T, &pretransfer);
    if (pretransfer == 0)
        return PH_CONNECTING;
    if (t->sent < (t->send_total > t->upload_total ? t->send_total : t->upload_total))
        return PH_UPLOADING;
    return PH_WAITING;
}

/* Runs protected: (progress function, transfer) -> boolean "go on". An error
 * the function raises is stored in the transfer's error slot (an existing
 * registry key: storing there allocates nothing) by the caller. */
static int progress_trampoline(lua_State *L)
{
    transfer *t = (transfer *)lua_touserdata(L, 2);
    lua_settop(L, 1);
    lua_pushstring(L, phase_names[t->phase]);
    lua_pushnumber(L, (lua_Number)t->sent);
    lua_pushnumber(L, (lua_Number)(t->send_total > t->upload_total ? t->send_total : t->upload_total));
    lua_pushnumber(L, (lua_Number)t->received);
    lua_pushnumber(L, (lua_Number)(t->receive_total > 0 ? t->receive_total : 0));
    lua_call(L, 5, 1);
    lua_pushboolean(L, !(lua_isboolean(L, -1) && !lua_toboolean(L, -1)));
    return 1;
}

static int on_xferinfo(void *ud, curl_off_t dltotal, curl_off_t dlnow,
                       curl_off_t ultotal, curl_off_t ulnow)
{
    transfer *t = (transfer *)ud;
    multi *m = t->m;
    lua_State *L;
    double now;
    int ph, go_on;

    t->sent = ulnow;
    t->send_total = ultotal;
    t->received = dlnow;
    t->receive_total = dltotal;
    if (t->abort != AB_NONE)
        return 1;
    if (t->fn_ref == LUA_NOREF || m == NULL || m->L == NULL)
        return 0;
    now = now_seconds();
    ph = current_phase(t);
    if (ph == t->phase && now - t->last_call < PROGRESS_INTERVAL)
        return 0;
    t->phase = ph;
    t->last_call = now;

    L = m->L; /* poll() reserved stack space and pushed the trampoline */
    lua_pushvalue(L, m->trampoline);
    lua_rawgeti(L, LUA_REGISTRYINDEX, t->fn_ref);
    lua_pushlightuserdata(L, t);
    if (lua_pcall(L, 2, 1, 0) != LUA_OK) {
        lua_rawseti(L, LUA_REGISTRYINDEX, t->err_ref); /* existing key: no allocation */
        t->abort = AB_CALLBACK_ERROR;
        return 1;
    }
    go_on = lua_toboolean(L, -1);
    lua_pop(L, 1);
    if (!go_on) {
        t->abort = AB_CANCEL;
        return 1;
    }
    return 0;
}

/* The request body goes out through a read callback that cannot seek: when
 * a reused connection dies after the request was written, libcurl would
 * silently send it again on a new one (its keep-alive retry), and a
 * generation could run and be billed twice. Unable to rewind, libcurl fails
 * the transfer instead, and the retry policy decides. */
static size_t on_read(char *dst, size_t size, size_t n, void *ud)
{
    transfer *t = (transfer *)ud;
    size_t room = size * n, left = t->body_len - t->body_pos;
    const char *src = t->body_src;
    if (t->body_buf != NULL) {
        /* Closed (or cut) under a running transfer: fail it, never read
         * freed memory. */
        if (t->body_buf->data == NULL || t->body_buf->len < t->body_len)
            return left > 0 ? CURL_READFUNC_ABORT : 0;
        src = t->body_buf->data;
    }
    if (room > left)
        room = left;
    memcpy(dst, src + t->body_pos, room);
    t->body_pos += room;
    return room;
}

static int on_seek(void *ud, curl_off_t offset, int origin)
{
    transfer *t = (transfer *)ud;
    /* Only the no-op "rewind" before anything was read is allowed. */
    if (origin == SEEK_SET && offset == 0 && t->body_pos == 0)
        return CURL_SEEKFUNC_OK;
    return CURL_SEEKFUNC_CANTSEEK;
}

/* ---- request setup ---- */

static double opt_number(lua_State *L, int tab, const char *k)
{
    double v;
    lua_getfield(L, tab, k);
    v = lua_isnumber(L, -1) ? (double)lua_tonumber(L, -1) : 0.0;
    lua_pop(L, 1);
    return v;
}

/* A string field as a pointer into the request table, which stays anchored
 * for the whole transfer; NULL when absent. */
static const char *opt_string(lua_State *L, int tab, const char *k)
{
    const char *v;
    lua_getfield(L, tab, k);
    v = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : NULL;
    lua_pop(L, 1);
    return v;
}

static int opt_bool(lua_State *L, int tab, const char *k)
{
    int v;
    lua_getfield(L, tab, k);
    v = lua_toboolean(L, -1);
    lua_pop(L, 1);
    return v;
}

static long to_ms(double seconds)
{
    if (seconds <= 0)
        return 0;
    if (seconds > 2e6)
        return 2000000000L;
    return (long)(seconds * 1000.0 + 0.5);
}

/* Set every option of T's easy handle from the request table at REQ. May
 * raise (bad arguments, out of memory): T owns all it has allocated. */
static void setup(lua_State *L, multi *m, transfer *t, int req)
{
    CURL *e = t->easy;
    const char *url, *method, *v, *body = NULL;
    size_t body_len = 0;
    int i, n;

    url = opt_string(L, req, "url");
    if (url == NULL)
        luaL_error(L, "omixa: request needs a url");
    method = opt_string(L, req, "method");
    if (method == NULL)
        method = "GET";

    curl_easy_setopt(e, CURLOPT_URL, url);
    curl_easy_setopt(e, CURLOPT_PRIVATE, (void *)t);
    curl_easy_setopt(e, CURLOPT_SHARE, m->share);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, t->errbuf);
    curl_easy_setopt(e, CURLOPT_ACCEPT_ENCODING, "");
    curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(e, CURLOPT_BUFFERSIZE, RECV_BUFFER);
    curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(e, CURLOPT_HEADERDATA, t);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_write);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, t);
    curl_easy_setopt(e, CURLOPT_XFERINFOFUNCTION, on_xferinfo);
    curl_easy_setopt(e, CURLOPT_XFERINFODATA, t);
    curl_easy_setopt(e, CURLOPT_NOPROGRESS, 0L);

    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, to_ms(opt_number(L, req, "timeout")));
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, to_ms(opt_number(L, req, "connect_timeout")));
    t->idle_timeout = opt_number(L, req, "idle_timeout");
    t->scan_mode = opt_bool(L, req, "scan_images") ? SCAN_WANTED : SCAN_OFF;
    t->max_response = (size_t)opt_number(L, req, "max_response_bytes");

    if ((v = opt_string(L, req, "ca_file")) != NULL)
        curl_easy_setopt(e, CURLOPT_CAINFO, v);
    if ((v = opt_string(L, req, "ca_path")) != NULL)
        curl_easy_setopt(e, CURLOPT_CAPATH, v);
    if (opt_bool(L, req, "insecure")) {
        curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, 0L);
        curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, 0L);
    }
    if ((v = opt_string(L, req, "proxy")) != NULL)
        curl_easy_setopt(e, CURLOPT_PROXY, v);
    if ((v = opt_string(L, req, "user_agent")) != NULL)
        curl_easy_setopt(e, CURLOPT_USERAGENT, v);

    /* A string or an omixa.buffer, anchored by the request table. */
    lua_getfield(L, req, "body");
    t->body_buf = NULL;
    if (lua_type(L, -1) == LUA_TSTRING) {
        body = lua_tolstring(L, -1, &body_len);
    } else if (!lua_isnil(L, -1)) {
        t->body_buf = (const omx_buf *)omx_testudata(L, -1, OMX_BUFFER);
        if (t->body_buf == NULL)
            luaL_error(L, "omixa: request body must be a string or an omixa.buffer (got %s)",
                       luaL_typename(L, -1));
        body_len = t->body_buf->len;
    }
    lua_pop(L, 1);
    t->upload_total = (curl_off_t)body_len;
    t->body_src = body ? body : "";
    t->body_len = body_len;
    t->body_pos = 0;
    if (strcmp(method, "POST") == 0) {
        curl_easy_setopt(e, CURLOPT_POST, 1L);
        curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)body_len);
        curl_easy_setopt(e, CURLOPT_READFUNCTION, on_read);
        curl_easy_setopt(e, CURLOPT_READDATA, t);
        curl_easy_setopt(e, CURLOPT_SEEKFUNCTION, on_seek);
        curl_easy_setopt(e, CURLOPT_SEEKDATA, t);
    } else if (strcmp(method, "GET") == 0) {
        curl_easy_setopt(e, CURLOPT_HTTPGET, 1L);
    } else {
        luaL_error(L, "omixa: unsupported method '%s'", method);
    }

    /* No 100-continue round trip before large bodies. */
    t->headers = curl_slist_append(t->headers, "Expect:");
    if (t->headers == NULL)
        luaL_error(L, "omixa: out of memory");
    lua_getfield(L, req, "headers");
    if (lua_istable(L, -1)) {
        n = (int)omx_rawlen(L, -1);
        for (i = 1; i <= n; i++) {
            struct curl_slist *next;
            lua_rawgeti(L, -1, i);
            v = lua_tostring(L, -1);
            next = v ? curl_slist_append(t->headers, v) : t->headers;
            lua_pop(L, 1);
            if (next == NULL)
                luaL_error(L, "omixa: out of memory");
            t->headers = next;
        }
    }
    lua_pop(L, 1);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, t->headers);
}

/* ---- results ---- */

/* Parse the kept header block into a table of lower-case names; repeated
 * headers are joined with ", ". Pushes the table. */
static void push_headers(lua_State *L, const omx_buf *h)
{
    const char *p = h->data, *end;
    lua_newtable(L);
    if (p == NULL)
        return; /* nothing received (and NULL + 0 is undefined) */
    end = p + h->len;
    while (p < end) {
        const char *eol = memchr(p, '\n', (size_t)(end - p));
        const char *line_end = eol ? eol : end, *colon, *vs, *ve;
        if (line_end > p && line_end[-1] == '\r')
            line_end--;
        colon = memchr(p, ':', (size_t)(line_end - p));
        if (colon != NULL && colon > p && !(line_end - p >= 5 && memcmp(p, "HTTP/", 5) == 0)) {
            char name[128];
            size_t nl = (size_t)(colon - p), k;
            if (nl < sizeof name) {
                for (k = 0; k < nl; k++) {
                    char c = p[k];
                    name[k] = (c >= 'A' && c <= 'Z') ? (char)(c + 32) : c;
                }
                name[nl] = '\0';
                vs = colon + 1;
                while (vs < line_end && (*vs == ' ' || *vs == '\t'))
                    vs++;
                ve = line_end;
                while (ve > vs && (ve[-1] == ' ' || ve[-1] == '\t'))
                    ve--;
                lua_getfield(L, -1, name);
                if (lua_isstring(L, -1)) {
                    lua_pushliteral(L, ", ");
                    lua_pushlstring(L, vs, (size_t)(ve - vs));
                    lua_concat(L, 3);
                } else {
                    lua_pop(L, 1);
                    lua_pushlstring(L, vs, (size_t)(ve - vs));
                }
                lua_setfield(L, -2, name);
            }
        }
        if (eol == NULL)
            break;
        p = eol + 1;
    }
}

static const char *kind_of(CURLcode rc, enum abort_reason ab, int headers_done)
{
    switch (ab) {
    case AB_CANCEL: case AB_CLOSED: return "cancelled";
    case AB_TOO_LARGE: return "too_large";
    case AB_IDLE: return "timeout";
    case AB_NOMEM: return "network";
    case AB_CALLBACK_ERROR: return "callback_error";
    default: break;
    }
    switch (rc) {
    case CURLE_OPERATION_TIMEDOUT:
        return "timeout";
    case CURLE_SSL_CONNECT_ERROR: case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_CERTPROBLEM: case CURLE_SSL_CIPHER: case CURLE_SSL_CACERT_BADFILE:
    case CURLE_SSL_ENGINE_NOTFOUND: case CURLE_SSL_ENGINE_SETFAILED:
    case CURLE_SSL_ENGINE_INITFAILED: case CURLE_SSL_CRL_BADFILE:
    case CURLE_SSL_ISSUER_ERROR: case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
    case CURLE_SSL_INVALIDCERTSTATUS: case CURLE_USE_SSL_FAILED:
    case CURLE_SSL_SHUTDOWN_FAILED: case CURLE_SSL_CLIENTCERT:
        return "tls";
    case CURLE_PARTIAL_FILE:
        /* A body cut short is a truncated response; a header block cut
         * short is a cut connection. */
        return headers_done ? "protocol" : "network";
    case CURLE_WEIRD_SERVER_REPLY: case CURLE_BAD_CONTENT_ENCODING: case CURLE_HTTP2_STREAM:
        return "protocol";
    case CURLE_UNSUPPORTED_PROTOCOL: case CURLE_URL_MALFORMAT:
        return "config";
    default:
        return "network";
    }
}

static const char *message_of(transfer *t, CURLcode rc)
{
    switch (t->abort) {
    case AB_CANCEL: return "cancelled";
    case AB_CLOSED: return "the client was closed";
    case AB_TOO_LARGE: return "response larger than max_response_bytes";
    case AB_IDLE: return "no data received for idle_timeout seconds";
    case AB_NOMEM: return "out of memory while receiving";
    case AB_CALLBACK_ERROR: return "a callback raised an error";
    default: break;
    }
    if (rc == CURLE_PARTIAL_FILE)
        return t->headers_done ? "response body truncated (connection closed early)"
                               : "connection closed in the middle of the response headers";
    if (rc == CURLE_SEND_FAIL_REWIND)
        return "the connection closed after the request was sent, before any answer";
    return t->errbuf[0] ? t->errbuf : curl_easy_strerror(rc);
}

static void set_bool(lua_State *L, const char *k, int v)
{
    lua_pushboolean(L, v);
    lua_setfield(L, -2, k);
}

static void set_int(lua_State *L, const char *k, lua_Integer v)
{
    lua_pushinteger(L, v);
    lua_setfield(L, -2, k);
}

/* Did the whole request (headers and body) leave this machine? Judged by
 * what the read callback handed to libcurl, which stays true when libcurl
 * resets its own counters to try again (and then fails, unable to rewind). */
static int request_sent(transfer *t, CURLcode rc)
{
    long req_size = 0;
    if (rc == CURLE_SEND_FAIL_REWIND)
        return 1;
    if (t->body_len > 0)
        return t->body_pos >= t->body_len;
    curl_easy_getinfo(t->easy, CURLINFO_REQUEST_SIZE, &req_size);
    return req_size > 0;
}

/* ---- transfer lifetime ---- */

static void list_remove(multi *m, transfer *t)
{
    if (!t->running)
        return;
    if (t->prev) t->prev->next = t->next;
    else m->head = t->next;
    if (t->next) t->next->prev = t->prev;
    t->prev = t->next = NULL;
    t->running = 0;
    m->nrunning--;
}

/* Give the easy handle back (to the pool, or free it). */
static void release_easy(multi *m, transfer *t)
{
    if (t->easy == NULL)
        return;
    if (m != NULL && m->cm != NULL) {
        curl_multi_remove_handle(m->cm, t->easy);
        if (m->npool < EASY_POOL) {
            curl_easy_reset(t->easy);
            m->pool[m->npool++] = t->easy;
            t->easy = NULL;
        }
    }
    if (t->easy != NULL) {
        curl_easy_cleanup(t->easy);
        t->easy = NULL;
    }
    curl_slist_free_all(t->headers);
    t->headers = NULL;
}

/* res.images and res.rest (or res.scan_error) of the scanned body, into
 * the table at 1 (T at 2), each image freed once it is a string. */
static int push_scan_result(lua_State *L)
{
    transfer *t = (transfer *)lua_touserdata(L, 2);
    scan_sink *k = t->scan;
    size_t i;
    int rc = omx_json_scan_finish(&k->js);
    if (rc != OMX_JSON_OK) {
        lua_pushstring(L, k->js.err.message);
        lua_setfield(L, 1, "scan_error");
        lua_pushstring(L, rc == OMX_JSON_EBASE64 ? "base64" : "json");
        lua_setfield(L, 1, "scan_what");
        return 0;
    }
    lua_createtable(L, (int)k->nimgs, 0);
    for (i = 0; i < k->nimgs; i++) {
        omx_buf *b = &k->imgs[i];
        lua_pushlstring(L, b->data ? b->data : "", b->len);
        lua_rawseti(L, -2, (int)i + 1);
        room_free(k->spare, b); /* now, not at the end: the peak stays one image */
    }
    lua_setfield(L, 1, "images");
    lua_pushlstring(L, k->rest.data ? k->rest.data : "", k->rest.len);
    lua_setfield(L, 1, "rest");
    return 0;
}

/* Under lua_pcall: out of memory while making the strings is a failed
 * transfer, never a half-finished one. */
static void scan_result(lua_State *L, transfer *t)
{
    int res = lua_gettop(L);
    lua_pushcfunction(L, push_scan_result);
    lua_pushvalue(L, res);
    lua_pushlightuserdata(L, t);
    if (lua_pcall(L, 2, 0, 0) != 0) {
        lua_pop(L, 1);
        t->abort = AB_NOMEM;
    }
}

/* Finish T with curl's code RC: build its result in the registry, release
 * curl's resources and the references that kept the request alive. Runs
 * outside curl callbacks (from poll, cancel, close). */
static void finish(lua_State *L, multi *m, transfer *t, CURLcode rc)
{
    long status = 0;
    int sent = 0;
    if (t->finished)
        return;
    if (t->easy) {
        curl_easy_getinfo(t->easy, CURLINFO_RESPONSE_CODE, &status);
        sent = request_sent(t, rc);
    }
    list_remove(m, t);
    lua_newtable(L);
    if (t->scan != NULL && rc == CURLE_OK && t->abort == AB_NONE)
        scan_result(L, t);
    scan_free(t);
    set_int(L, "received_bytes", (lua_Integer)t->rx_total);
    if (status > 0)
        set_int(L, "status", status);
    set_bool(L, "sent", sent);
    set_bool(L, "received", t->got_headers);
    push_headers(L, &t->head);
    lua_setfield(L, -2, "headers");
    lua_rawgeti(L, LUA_REGISTRYINDEX, t->buf_ref);
    lua_setfield(L, -2, "body");
    if (rc != CURLE_OK || t->abort != AB_NONE) {
        lua_pushstring(L, kind_of(rc, t->abort, t->headers_done));
        lua_setfield(L, -2, "kind");
        lua_pushstring(L, message_of(t, rc));
        lua_setfield(L, -2, "message");
        set_int(L, "curl_code", (lua_Integer)rc);
        if (t->abort == AB_CALLBACK_ERROR) {
            lua_rawgeti(L, LUA_REGISTRYINDEX, t->err_ref);
            lua_setfield(L, -2, "error");
        }
        set_bool(L, "failed", 1);
    }
    t->res_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    t->finished = 1;
    release_easy(m, t);
    omx_buf_free(&t->head);
    unref(L, &t->req_ref);
    unref(L, &t->fn_ref);
    unref(L, &t->err_ref);
    unref(L, &t->buf_ref);
    t->body = NULL;
    unref(L, &t->self_ref);
    t->m = NULL;
}

/* ---- multi methods ---- */

static multi *check_multi(lua_State *L, int idx)
{
    multi *m = (multi *)luaL_checkudata(L, idx, OMX_MULTI);
    if (m->cm == NULL)
        luaL_error(L, "omixa: the transport is closed");
    return m;
}

static CURL *take_easy(multi *m)
{
    if (m->npool > 0)
        return m->pool[--m->npool];
    return curl_easy_init();
}

static int multi_add(lua_State *L)
{
    multi *m = check_multi(L, 1);
    transfer *t;
    luaL_checktype(L, 2, LUA_TTABLE);
    lua_settop(L, 2);

    t = (transfer *)lua_newuserdata(L, sizeof *t);  /* 3 */
    memset(t, 0, sizeof *t);
    t->req_ref = t->buf_ref = t->fn_ref = t->err_ref = t->res_ref = t->self_ref = LUA_NOREF;
    omx_buf_init(&t->head);
    luaL_getmetatable(L, OMX_TRANSFER);
    lua_setmetatable(L, 3);
    t->easy = take_easy(m);                         /* owned by t from here */
    if (t->easy == NULL)
        return luaL_error(L, "omixa: curl_easy_init failed");

    setup(L, m, t, 2);

    t->body = omx_buffer_push(L);                   /* 4 */
    t->buf_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_pushvalue(L, 2);
    t->req_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_getfield(L, 2, "progress");
    if (lua_isfunction(L, -1))
        t->fn_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    else
        lua_pop(L, 1);
    lua_pushboolean(L, 0);
    t->err_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_pushvalue(L, 3);
    t->self_ref = luaL_ref(L, LUA_REGISTRYINDEX);   /* running: kept alive */

    t->last_rx_time = now_seconds();
    if (curl_multi_add_handle(m->cm, t->easy) != CURLM_OK) {
        unref(L, &t->self_ref);
        return luaL_error(L, "omixa: curl_multi_add_handle failed");
    }
    t->m = m;
    t->running = 1;
    t->next = m->head;
    if (m->head) m->head->prev = t;
    m->head = t;
    m->nrunning++;
    lua_settop(L, 3);
    return 1;
}

static void socket_action(multi *m, curl_socket_t s, int flags)
{
    int still = 0;
    curl_multi_socket_action(m->cm, s, flags, &still);
}

/* poll(timeout) -> { finished transfers } */
static int multi_poll(lua_State *L)
{
    multi *m = check_multi(L, 1);
    double timeout = luaL_optnumber(L, 2, 0), now, until, wait;
    struct epoll_event evs[32];
    int n, i, k = 0, wait_ms;
    CURLMsg *msg;
    int left;

    if (m->L != NULL)
        return luaL_error(L, "omixa: poll called from inside a callback of the same client");
    lua_settop(L, 2);
    luaL_checkstack(L, 24, "omixa: no stack space");
    lua_newtable(L);                               /* 3: finished list */
    lua_pushcfunction(L, progress_trampoline);     /* 4 */

    now = now_seconds();
    until = min_time(next_deadline(m), now + (timeout > 0 ? timeout : 0));
    wait = until - now;
    wait_ms = wait <= 0 ? 0 : (int)(wait * 1000.0 + 0.999);
    n = epoll_wait(m->epfd, evs, 32, wait_ms);

    m->L = L;
    m->trampoline = 4;
    for (i = 0; i < n; i++) {
        if (evs[i].data.fd == m->tfd) {
            uint64_t expirations;
            ssize_t r = read(m->tfd, &expirations, sizeof expirations);
            (void)r;
            continue;
        }
        socket_action(m, evs[i].data.fd,
                      (evs[i].events & EPOLLIN ? CURL_CSELECT_IN : 0) |
                      (evs[i].events & EPOLLOUT ? CURL_CSELECT_OUT : 0) |
                      (evs[i].events & (EPOLLERR | EPOLLHUP) ? CURL_CSELECT_ERR : 0));
    }
    now = now_seconds();
    if (m->curl_deadline != NO_TIME && m->curl_deadline <= now) {
        m->curl_deadline = NO_TIME;
        socket_action(m, CURL_SOCKET_TIMEOUT, 0);
    }
    if (m->wake_at != NO_TIME && m->wake_at <= now)
        m->wake_at = NO_TIME;
    m->L = NULL;

    /* Collect what curl finished, then what ran out of idle time (no byte
     * for idle_timeout seconds once the response began). */
    while ((msg = curl_multi_info_read(m->cm, &left)) != NULL) {
        transfer *t = NULL;
        if (msg->msg != CURLMSG_DONE)
            continue;
        curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&t);
        if (t == NULL || t->finished)
            continue;
        lua_rawgeti(L, LUA_REGISTRYINDEX, t->self_ref); /* the userdata, before finish drops it */
        finish(L, m, t, msg->data.result);
        lua_rawseti(L, 3, ++k);
    }
    {
        transfer *t = m->head, *next;
        for (; t; t = next) {
            next = t->next;
            if (t->idle_timeout > 0 && t->got_headers && now - t->last_rx_time >= t->idle_timeout) {
                lua_rawgeti(L, LUA_REGISTRYINDEX, t->self_ref);
                t->abort = AB_IDLE;
                finish(L, m, t, CURLE_OPERATION_TIMEDOUT);
                lua_rawseti(L, 3, ++k);
            }
        }
    }
    arm_timer(m);
    lua_settop(L, 3);
    return 1;
}

static int multi_fd(lua_State *L)
{
    multi *m = check_multi(L, 1);
    lua_pushinteger(L, m->epfd);
    return 1;
}

static int multi_wake_at(lua_State *L)
{
    multi *m = check_multi(L, 1);
    m->wake_at = lua_isnoneornil(L, 2) ? NO_TIME : (double)luaL_checknumber(L, 2);
    if (m->wake_at != NO_TIME && m->wake_at <= 0)
        m->wake_at = 1e-9;
    arm_timer(m);
    return 0;
}

static int multi_running(lua_State *L)
{
    multi *m = check_multi(L, 1);
    lua_pushinteger(L, m->nrunning);
    return 1;
}

static void multi_free(lua_State *L, multi *m)
{
    int i;
    while (m->head) {
        transfer *t = m->head;
        t->abort = AB_CLOSED;
        finish(L, m, t, CURLE_ABORTED_BY_CALLBACK);
    }
    for (i = 0; i < m->npool; i++)
        curl_easy_cleanup(m->pool[i]);
    m->npool = 0;
    if (m->cm) curl_multi_cleanup(m->cm);
    if (m->share) curl_share_cleanup(m->share);
    if (m->epfd >= 0) close(m->epfd);
    if (m->tfd >= 0) close(m->tfd);
    for (i = 0; i < SPARES; i++)
        unmap_room(&m->spare[i]);
    m->cm = NULL;
    m->share = NULL;
    m->epfd = m->tfd = -1;
}

static int multi_close(lua_State *L)
{
    multi *m = (multi *)luaL_checkudata(L, 1, OMX_MULTI);
    if (m->L != NULL)
        return luaL_error(L, "omixa: cannot close a client from inside its own callback");
    if (m->cm != NULL || m->epfd >= 0)
        multi_free(L, m);
    return 0;
}

static int multi_tostring(lua_State *L)
{
    multi *m = (multi *)luaL_checkudata(L, 1, OMX_MULTI);
    if (m->cm == NULL)
        lua_pushliteral(L, OMX_MULTI " (closed)");
    else
        lua_pushfstring(L, OMX_MULTI " (%d running)", m->nrunning);
    return 1;
}

static int multi_new(lua_State *L)
{
    multi *m = (multi *)lua_newuserdata(L, sizeof *m);
    struct epoll_event ev;
    memset(m, 0, sizeof *m);
    m->epfd = m->tfd = -1;
    luaL_getmetatable(L, OMX_MULTI);
    lua_setmetatable(L, -2);                        /* __gc owns what follows */
    m->epfd = epoll_create1(EPOLL_CLOEXEC);
    m->tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    m->cm = curl_multi_init();
    m->share = curl_share_init();
    if (m->epfd < 0 || m->tfd < 0 || m->cm == NULL || m->share == NULL)
        return luaL_error(L, "omixa: cannot create the transport (%s)", strerror(errno));
    memset(&ev, 0, sizeof ev);
    ev.events = EPOLLIN;
    ev.data.fd = m->tfd;
    if (epoll_ctl(m->epfd, EPOLL_CTL_ADD, m->tfd, &ev) != 0)
        return luaL_error(L, "omixa: epoll_ctl failed (%s)", strerror(errno));
    curl_share_setopt(m->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_SSL_SESSION);
    curl_share_setopt(m->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_DNS);
    curl_multi_setopt(m->cm, CURLMOPT_SOCKETFUNCTION, on_socket);
    curl_multi_setopt(m->cm, CURLMOPT_SOCKETDATA, m);
    curl_multi_setopt(m->cm, CURLMOPT_TIMERFUNCTION, on_timer);
    curl_multi_setopt(m->cm, CURLMOPT_TIMERDATA, m);
    return 1;
}

/* ---- transfer methods ---- */

static transfer *check_transfer(lua_State *L, int idx)
{
    return (transfer *)luaL_checkudata(L, idx, OMX_TRANSFER);
}

/* result() -> res | nil, err */
static int transfer_result(lua_State *L)
{
    transfer *t = check_transfer(L, 1);
    if (!t->finished)
        return luaL_error(L, "omixa: the transfer has not finished");
    lua_rawgeti(L, LUA_REGISTRYINDEX, t->res_ref);
    lua_getfield(L, -1, "failed");
    if (lua_toboolean(L, -1)) {
        lua_pop(L, 1);
        lua_pushnil(L);
        lua_insert(L, -2);
        return 2;
    }
    lua_pop(L, 1);
    return 1;
}

/* head() -> status, headers once the response's header block is complete
 * (nothing before): for a caller that reads the body as it arrives. */
static int transfer_head(lua_State *L)
{
    transfer *t = check_transfer(L, 1);
    long status = 0;
    if (t->finished || t->easy == NULL || !t->headers_done)
        return 0;
    curl_easy_getinfo(t->easy, CURLINFO_RESPONSE_CODE, &status);
    lua_pushinteger(L, (lua_Integer)status);
    push_headers(L, &t->head);
    return 2;
}

/* take() -> the body bytes received since the last take, as a string; the
 * transfer's buffer is emptied (max_response_bytes still counts them). */
static int transfer_take(lua_State *L)
{
    transfer *t = check_transfer(L, 1);
    omx_buf *b = t->body;
    if (b == NULL || b->len == 0) {
        lua_pushliteral(L, "");
        return 1;
    }
    lua_pushlstring(L, b->data, b->len);
    b->len = 0;
    return 1;
}

static int transfer_done(lua_State *L)
{
    lua_pushboolean(L, check_transfer(L, 1)->finished);
    return 1;
}

static int transfer_cancel(lua_State *L)
{
    transfer *t = check_transfer(L, 1);
    if (!t->finished && t->m != NULL) {
        if (t->m->L != NULL)
            return luaL_error(L, "omixa: cannot cancel from inside a callback; return false from it instead");
        t->abort = AB_CANCEL;
        finish(L, t->m, t, CURLE_ABORTED_BY_CALLBACK);
    }
    return 0;
}

static int transfer_progress(lua_State *L)
{
    transfer *t = check_transfer(L, 1);
    int ph = t->finished ? PH_RECEIVING : t->easy != NULL ? current_phase(t) : t->phase;
    lua_pushstring(L, phase_names[ph]);
    lua_pushnumber(L, (lua_Number)t->sent);
    lua_pushnumber(L, (lua_Number)(t->send_total > t->upload_total ? t->send_total : t->upload_total));
    lua_pushnumber(L, (lua_Number)t->received);
    lua_pushnumber(L, (lua_Number)(t->receive_total > 0 ? t->receive_total : 0));
    return 5;
}

static int transfer_gc(lua_State *L)
{
    transfer *t = check_transfer(L, 1);
    /* A running transfer is anchored by self_ref: only a finished or a
     * never-started one (setup raised) reaches here. */
    if (t->easy != NULL) {
        if (t->m != NULL && t->running) { /* at lua_close, before the multi's __gc */
            if (t->m->cm != NULL)
                curl_multi_remove_handle(t->m->cm, t->easy);
            list_remove(t->m, t);
        }
        curl_easy_cleanup(t->easy);
        t->easy = NULL;
    }
    curl_slist_free_all(t->headers);
    t->headers = NULL;
    omx_buf_free(&t->head);
    scan_free(t);
    unref(L, &t->res_ref);
    unref(L, &t->req_ref);
    unref(L, &t->fn_ref);
    unref(L, &t->err_ref);
    unref(L, &t->buf_ref);
    return 0;
}

static int transfer_tostring(lua_State *L)
{
    transfer *t = check_transfer(L, 1);
    lua_pushfstring(L, OMX_TRANSFER " (%s)", t->finished ? "finished" : "running");
    return 1;
}

/* ---- clock and version ---- */

/* core.now() -> monotonic seconds; core.sleep(seconds). */
static int clock_now(lua_State *L)
{
    lua_pushnumber(L, (lua_Number)now_seconds());
    return 1;
}

static int clock_sleep(lua_State *L)
{
    double t = (double)luaL_checknumber(L, 1);
    struct timespec ts;
    if (t <= 0)
        return 0;
    ts.tv_sec = (time_t)t;
    ts.tv_nsec = (long)((t - (double)ts.tv_sec) * 1e9);
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
    return 0;
}

/* The libcurl version number and its TLS backend (e.g. "OpenSSL/3.0.13",
 * nil when built without TLS): curl_version() would also initialise LDAP
 * and SASL just to name their versions (and leak doing so). */
static int curl_version_string(lua_State *L)
{
    const curl_version_info_data *v = curl_version_info(CURLVERSION_NOW);
    lua_pushstring(L, v && v->version ? v->version : "unknown");
    if (v && v->ssl_version)
        lua_pushstring(L, v->ssl_version);
    else
        lua_pushnil(L);
    return 2;
}

void omx_transport_open(lua_State *L)
{
    static const luaL_Reg multi_methods[] = {
        {"add", multi_add},
        {"poll", multi_poll},
        {"fd", multi_fd},
        {"wake_at", multi_wake_at},
        {"running", multi_running},
        {"close", multi_close},
        {"__gc", multi_close},
        {"__close", multi_close},
        {"__tostring", multi_tostring},
        {NULL, NULL}
    };
    static const luaL_Reg transfer_methods[] = {
        {"result", transfer_result},
        {"head", transfer_head},
        {"take", transfer_take},
        {"done", transfer_done},
        {"cancel", transfer_cancel},
        {"progress", transfer_progress},
        {"__gc", transfer_gc},
        {"__tostring", transfer_tostring},
        {NULL, NULL}
    };
    static const luaL_Reg functions[] = {
        {"multi", multi_new},
        {"now", clock_now},
        {"sleep", clock_sleep},
        {"curl_version", curl_version_string},
        {NULL, NULL}
    };
    curl_global_init(CURL_GLOBAL_DEFAULT);
    omx_newclass(L, OMX_MULTI, multi_methods);
    omx_newclass(L, OMX_TRANSFER, transfer_methods);
    lua_pop(L, 2);
    omx_setfuncs(L, functions, 0);
}
