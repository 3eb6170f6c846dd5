/* transport.c — the libcurl transport, on the multi interface so that a
 * request never has to block its caller.
 *
 *   core.multi([opts]) -> multi      one per client: the connection pool,
 *                                    TLS sessions and DNS cache of its
 *                                    requests, a pool of easy handles, and
 *                                    the image rooms kept for the next
 *                                    answers: opts.keep_bytes (64 MiB) in
 *                                    all, given back after opts.keep_idle
 *                                    (30) seconds without use (sink.c)
 *   multi:add(req) -> transfer       starts a transfer at once
 *   multi:poll(timeout) -> { transfer, ... }   waits up to TIMEOUT seconds
 *                                    (0: not at all; NaN raises; a wait past
 *                                    ~23 days returns early) for activity,
 *                                    drives every transfer, returns the
 *                                    finished ones
 *   multi:fd() -> integer            readable when poll has work to do; nil,
 *                                    reason on a backend without one (portable)
 *   multi:poll_interval() -> seconds how long a caller polling from a timer
 *                                    may wait between polls
 *   multi:wake_at(t | nil)           also make fd readable at monotonic time T
 *   multi:running() -> integer
 *   multi:kept() -> bytes            of image rooms kept (0 once closed)
 *   multi:close()                    cancels every transfer; idempotent,
 *                                    __gc, __close
 *   transfer:result() -> res | nil, err     once finished
 *   transfer:done() -> boolean
 *   transfer:cancel()                finishes it now as cancelled
 *   transfer:progress() -> phase, sent, send_total, received, receive_total
 *   transfer:head() -> status, headers     once the header block is complete
 *   transfer:take() -> bytes               the body received since the last
 *                                    take (for streams read as they arrive;
 *                                    a scanned body keeps only its excerpt,
 *                                    and the event-stream test that rules
 *                                    scanning out is the header reader's,
 *                                    the same one head() reports through)
 *   core.now(), core.sleep(s), core.curl_version()
 *   core.event_backend               "epoll", "kqueue" or "portable" (event.h)
 *
 * req = { url =, method = "GET"|"POST", headers = { "Name: value", ... },
 *         body = string|buffer|nil, timeout =, connect_timeout =, idle_timeout =
 *         (seconds), ca_file =, ca_path =, insecure =, proxy =, user_agent =,
 *         max_response_bytes = (0 or absent: no limit), scan_images = bool,
 *         progress = function(phase, sent, send_total, received,
 *         receive_total) -> false cancels }
 *       A number outside its range (NaN, negative, absurd: easy.c) raises.
 *       A response refused at its header block (headers.c): conflicting
 *       Content-Type on a 2xx or conflicting Content-Length is kind
 *       "protocol", a Content-Length above max_response_bytes "too_large".
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
 * Sockets and deadlines are gathered behind one descriptor (event.h: with
 * a timer for curl's timer, idle timeouts and the caller's wake time), so an
 * event loop (vim.uv, cqueues, select) can wait on multi:fd() alone.
 *
 * Lua runs inside curl only through lua_pcall of a trampoline that poll()
 * pushed beforehand; nothing that can raise is called from a curl callback.
 * What curl borrows stays alive until the transfer is finished: the body
 * string or buffer by its own registry reference (body_ref), the header
 * list and the error buffer as memory the transfer owns. A multi belongs to
 * the process that made it (see forked).
 *
 * The parts: easy.c (a request's easy handle), sink.c (response bodies),
 * headers.c (the header reader), event.h and one event_<backend>.c (the OS
 * event loop), platform.h (clock, pages). */
#include <errno.h>
#include <string.h>

#include <curl/curl.h>
#include <lauxlib.h>

#include "buffer.h"
#include "compat.h"
#include "omixa.h"
#include "transport.h"

#define OMX_MULTI "omixa.multi"
#define OMX_TRANSFER "omixa.transfer"
#define BUILD_RESULT "omixa.transfer.build_result" /* registry key */

#define NO_TIME OMX_NO_TIME
#define MAX_TIME 1e12 /* seconds: any time or wait above is a mistake or "never" */

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

/* Make fd() readable at the next deadline. */
static void arm_timer(multi *m)
{
    omx_events_arm(&m->ev, next_deadline(m));
}

/* ---- curl multi callbacks (no Lua here) ---- */

static int on_socket(CURL *e, curl_socket_t s, int what, void *ud, void *sockp)
{
    multi *m = (multi *)ud;
    (void)e; (void)sockp;
    return omx_events_watch(&m->ev, s, what == CURL_POLL_REMOVE ? 0
                            : (what & CURL_POLL_IN ? OMX_EV_IN : 0) | (what & CURL_POLL_OUT ? OMX_EV_OUT : 0));
}

static int on_timer(CURLM *cm, long timeout_ms, void *ud)
{
    multi *m = (multi *)ud;
    (void)cm;
    m->curl_deadline = timeout_ms < 0 ? NO_TIME : omx_now() + (double)timeout_ms / 1000.0;
    if (timeout_ms == 0)
        m->curl_deadline = 1e-9; /* already due */
    arm_timer(m);
    return 0;
}

/* ---- curl easy callbacks (no Lua API call that can raise) ---- */

static const char *kind_of(CURLcode rc, enum abort_reason ab, int headers_done)
{
    switch (ab) {
    case AB_CANCEL: case AB_CLOSED: return "cancelled";
    case AB_TOO_LARGE: return "too_large";
    case AB_IDLE: return "timeout";
    case AB_PROTOCOL: return "protocol";
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
    if (t->abort_why != NULL)
        return t->abort_why;
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

typedef struct finish_args {
    transfer *t;
    CURLcode rc;
    long status;
    int sent;
} finish_args;

/* (finish_args) -> nothing: T's result table, into its slot. Runs under
 * lua_pcall: running out of memory here loses the result, never the
 * finish. */
static int build_result(lua_State *L)
{
    finish_args *a = (finish_args *)lua_touserdata(L, 1);
    transfer *t = a->t;
    lua_newtable(L);
    if (t->scan != NULL && a->rc == CURLE_OK && t->abort == AB_NONE)
        omx_scan_result(L, t);
    omx_scan_free(t);
    set_int(L, "received_bytes", (lua_Integer)t->rx_total);
    if (a->status > 0)
        set_int(L, "status", a->status);
    set_bool(L, "sent", a->sent);
    set_bool(L, "received", t->got_headers);
    omx_push_headers(L, &t->head);
    lua_setfield(L, -2, "headers");
    lua_rawgeti(L, LUA_REGISTRYINDEX, t->buf_ref);
    lua_setfield(L, -2, "body");
    if (a->rc != CURLE_OK || t->abort != AB_NONE) {
        lua_pushstring(L, kind_of(a->rc, t->abort, t->headers_done));
        lua_setfield(L, -2, "kind");
        lua_pushstring(L, message_of(t, a->rc));
        lua_setfield(L, -2, "message");
        set_int(L, "curl_code", (lua_Integer)a->rc);
        if (t->abort == AB_CALLBACK_ERROR) {
            lua_rawgeti(L, LUA_REGISTRYINDEX, t->err_ref);
            lua_setfield(L, -2, "error");
        }
        set_bool(L, "failed", 1);
    }
    lua_rawseti(L, LUA_REGISTRYINDEX, t->res_ref); /* an existing key: no allocation */
    return 0;
}

/* Finish T with curl's code RC: build its result in the registry, release
 * curl's resources and the references that kept the request alive. Runs
 * outside curl callbacks (from poll, cancel, close) and never raises: what
 * it calls that may allocate runs under lua_pcall, reached without an
 * allocation (build_result is kept in the registry, res_ref exists since
 * add), so a transfer never stays half-finished. */
static void finish(lua_State *L, multi *m, transfer *t, CURLcode rc)
{
    finish_args a;
    if (t->finished)
        return;
    a.t = t;
    a.rc = rc;
    a.status = 0;
    a.sent = 0;
    if (t->easy) {
        curl_easy_getinfo(t->easy, CURLINFO_RESPONSE_CODE, &a.status);
        a.sent = omx_request_sent(t, rc);
    }
    list_remove(m, t);
    lua_getfield(L, LUA_REGISTRYINDEX, BUILD_RESULT);
    lua_pushlightuserdata(L, &a);
    if (lua_pcall(L, 1, 0, 0) != LUA_OK) {
        lua_pop(L, 1);
        t->result_lost = 1;
    }
    omx_scan_free(t);
    t->finished = 1;
    release_easy(m, t);
    omx_buf_free(&t->head);
    unref(L, &t->req_ref);
    unref(L, &t->fn_ref);
    unref(L, &t->err_ref);
    unref(L, &t->buf_ref);
    unref(L, &t->body_ref);
    t->body = NULL;
    unref(L, &t->self_ref);
    t->m = NULL;
}

/* ---- multi methods ---- */

/* A multi belongs to the process that made it: after fork() the child
 * shares its sockets, its epoll set and its TLS sessions with the parent,
 * so the child's copy refuses every call, and closing or collecting it
 * there touches none of them (multi_free). */
static int forked(const multi *m)
{
    return m->pid != omx_pid();
}

static void refuse_fork(lua_State *L, const multi *m)
{
    if (forked(m))
        luaL_error(L, "omixa: this client belongs to process %d, not to this one (a fork): make a new client here",
                   (int)m->pid);
}

static multi *check_multi(lua_State *L, int idx)
{
    multi *m = (multi *)luaL_checkudata(L, idx, OMX_MULTI);
    if (m->cm == NULL)
        luaL_error(L, "omixa: the transport is closed");
    refuse_fork(L, m);
    return m;
}

static CURL *take_easy(multi *m)
{
    if (m->npool > 0)
        return m->pool[--m->npool];
    return curl_easy_init();
}

/* (multi, transfer, request) -> nothing: omx_setup under lua_pcall. */
static int setup_protected(lua_State *L)
{
    omx_setup(L, (multi *)lua_touserdata(L, 1), (transfer *)lua_touserdata(L, 2), 3);
    return 0;
}

/* The easy handle of a transfer that never started, freed. */
static void drop_easy(transfer *t)
{
    if (t->easy != NULL)
        curl_easy_cleanup(t->easy);
    t->easy = NULL;
    curl_slist_free_all(t->headers);
    t->headers = NULL;
}

static int multi_add(lua_State *L)
{
    multi *m = check_multi(L, 1);
    transfer *t;
    luaL_checktype(L, 2, LUA_TTABLE);
    lua_settop(L, 2);
    omx_rooms_trim(&m->rooms, omx_now());

    t = (transfer *)lua_newuserdata(L, sizeof *t);  /* 3 */
    memset(t, 0, sizeof *t);
    t->req_ref = t->buf_ref = t->fn_ref = t->err_ref = t->res_ref = t->self_ref = LUA_NOREF;
    t->body_ref = LUA_NOREF;
    omx_buf_init(&t->head);
    luaL_getmetatable(L, OMX_TRANSFER);
    lua_setmetatable(L, 3);
    t->easy = take_easy(m);                         /* owned by t from here */
    if (t->easy == NULL)
        return luaL_error(L, "omixa: curl_easy_init failed");

    /* Protected: a raise in setup gives the easy handle up at once, while
     * the share it was attached to still exists (else the share, still in
     * use, could not be freed). */
    lua_pushcfunction(L, setup_protected);
    lua_pushlightuserdata(L, m);
    lua_pushvalue(L, 3);
    lua_pushvalue(L, 2);
    if (lua_pcall(L, 3, 0, 0) != LUA_OK) {
        drop_easy(t);
        return lua_error(L);
    }

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
    lua_pushboolean(L, 0);
    t->res_ref = luaL_ref(L, LUA_REGISTRYINDEX);    /* the slot finish fills */
    lua_pushvalue(L, 3);
    t->self_ref = luaL_ref(L, LUA_REGISTRYINDEX);   /* running: kept alive */

    t->last_rx_time = omx_now();
    if (curl_multi_add_handle(m->cm, t->easy) != CURLM_OK) {
        unref(L, &t->self_ref);
        drop_easy(t);
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

/* An omx_ready_fn: socket FD is ready for WHAT. */
static void on_ready(void *ud, curl_socket_t fd, int what)
{
    socket_action((multi *)ud, fd,
                  (what & OMX_EV_IN ? CURL_CSELECT_IN : 0) |
                  (what & OMX_EV_OUT ? CURL_CSELECT_OUT : 0) |
                  (what & OMX_EV_ERR ? CURL_CSELECT_ERR : 0));
}

/* poll(timeout) -> { finished transfers } */
static int multi_poll(lua_State *L)
{
    multi *m = check_multi(L, 1);
    double timeout = luaL_optnumber(L, 2, 0), now, until, wait;
    int k = 0, wait_ms;
    CURLMsg *msg;
    int left;

    if (m->L != NULL)
        return luaL_error(L, "omixa: poll called from inside a callback of the same client");
    luaL_argcheck(L, timeout == timeout, 2, "timeout is NaN");
    lua_settop(L, 2);
    luaL_checkstack(L, 24, "omixa: no stack space");
    lua_createtable(L, m->nrunning, 0);            /* 3: finished list (room for all: filling it allocates nothing) */
    lua_pushcfunction(L, omx_progress_trampoline);     /* 4 */

    now = omx_now();
    until = min_time(next_deadline(m), now + (timeout > 0 ? timeout : 0));
    wait = until - now;
    /* a longer wait is cut to about 23 days (an int of milliseconds):
     * poll may return before its timeout, never after */
    wait_ms = wait <= 0 ? 0 : wait >= 2e6 ? 2000000000 : (int)(wait * 1000.0 + 0.999);
    m->L = L;
    m->trampoline = 4;
    omx_events_wait(&m->ev, wait_ms, on_ready, m);
    now = omx_now();
    if (m->curl_deadline != NO_TIME && m->curl_deadline <= now) {
        m->curl_deadline = NO_TIME;
        socket_action(m, CURL_SOCKET_TIMEOUT, 0);
    }
    if (m->wake_at != NO_TIME && m->wake_at <= now)
        m->wake_at = NO_TIME;
    omx_rooms_trim(&m->rooms, now);
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
    const char *why = NULL;
    int fd = omx_events_fd(&m->ev, &why);
    if (fd < 0) {
        lua_pushnil(L);
        lua_pushstring(L, why ? why : "omixa: this client has no event descriptor");
        return 2;
    }
    lua_pushinteger(L, fd);
    return 1;
}

/* poll_interval() -> seconds. Without fd(), sockets can only be seen by
 * polling: while transfers run, every POLL_BUSY seconds (sooner when a
 * deadline is due); with none running, the next deadline (a queued job's
 * wake time) or POLL_IDLE. */
#define POLL_BUSY 0.01
#define POLL_IDLE 0.25
static int multi_poll_interval(lua_State *L)
{
    multi *m = check_multi(L, 1);
    double d = next_deadline(m), t = m->nrunning > 0 ? POLL_BUSY : POLL_IDLE;
    if (d != NO_TIME) {
        double left = d - omx_now();
        if (left < t)
            t = left > 0 ? left : 0;
    }
    lua_pushnumber(L, (lua_Number)t);
    return 1;
}

static int multi_wake_at(lua_State *L)
{
    multi *m = check_multi(L, 1);
    m->wake_at = lua_isnoneornil(L, 2) ? NO_TIME : (double)luaL_checknumber(L, 2);
    luaL_argcheck(L, m->wake_at == m->wake_at, 2, "time is NaN");
    if (m->wake_at > MAX_TIME)
        m->wake_at = NO_TIME; /* never, for this clock */
    if (m->wake_at != NO_TIME && m->wake_at <= 0)
        m->wake_at = 1e-9;
    arm_timer(m);
    return 0;
}

/* kept() -> bytes of the image rooms kept for the next answers */
static int multi_kept(lua_State *L)
{
    multi *m = (multi *)luaL_checkudata(L, 1, OMX_MULTI); /* closed too: 0 */
    lua_pushinteger(L, (lua_Integer)omx_rooms_kept(&m->rooms));
    return 1;
}

static int multi_running(lua_State *L)
{
    multi *m = check_multi(L, 1);
    lua_pushinteger(L, m->nrunning);
    return 1;
}

/* In a fork's child: let go of every transfer and curl handle without a
 * call into curl. curl_multi_cleanup would close the connections the
 * parent still uses (a TLS close_notify, an HTTP/2 GOAWAY written on the
 * shared socket) and remove their sockets from the epoll set, which the
 * child shares with the parent. The handles' memory stays with the child
 * (it is not ours to free without curl); its own descriptors are closed. */
static void multi_abandon(lua_State *L, multi *m)
{
    while (m->head) {
        transfer *t = m->head;
        list_remove(m, t);
        t->easy = NULL;
        curl_slist_free_all(t->headers);
        t->headers = NULL;
        t->finished = 1;
        t->m = NULL;
        unref(L, &t->req_ref);
        unref(L, &t->fn_ref);
        unref(L, &t->body_ref);
        unref(L, &t->self_ref);
    }
    m->npool = 0;
    m->cm = NULL;
    m->share = NULL;
    omx_events_close(&m->ev);
    omx_rooms_free(&m->rooms);
}

static void multi_free(lua_State *L, multi *m)
{
    int i;
    if (forked(m)) {
        multi_abandon(L, m);
        return;
    }
    while (m->head) {
        transfer *t = m->head;
        t->abort = AB_CLOSED;
        finish(L, m, t, CURLE_ABORTED_BY_CALLBACK);
    }
    for (i = 0; i < m->npool; i++)
        curl_easy_cleanup(m->pool[i]);
    m->npool = 0;
    if (m->cm) curl_multi_cleanup(m->cm);
    /* Every easy handle let go of the share above (finish, the pool, and
     * drop_easy when setup raised): in use, it would only leak. */
    if (m->share) (void)curl_share_cleanup(m->share);
    omx_events_close(&m->ev);
    omx_rooms_free(&m->rooms);
    m->cm = NULL;
    m->share = NULL;
}

static int multi_close(lua_State *L)
{
    multi *m = (multi *)luaL_checkudata(L, 1, OMX_MULTI);
    if (m->L != NULL)
        return luaL_error(L, "omixa: cannot close a client from inside its own callback");
    multi_free(L, m); /* idempotent */
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

/* The number OPTS.NAME (OPTS at 1), DEF when absent; raises unless it is
 * a number from 0 to MAX. */
static double keep_option(lua_State *L, const char *name, double def, double max)
{
    double v = def;
    lua_getfield(L, 1, name);
    if (!lua_isnil(L, -1)) {
        if (lua_type(L, -1) != LUA_TNUMBER)
            luaL_error(L, "omixa: core.multi: %s must be a number", name);
        v = (double)lua_tonumber(L, -1);
        if (!(v >= 0 && v <= max))
            luaL_error(L, "omixa: core.multi: %s out of range", name);
    }
    lua_pop(L, 1);
    return v;
}

/* core.multi([{ keep_bytes =, keep_idle = }]): the image rooms kept for
 * the next answers, at most keep_bytes in all (KEEP_BYTES), given back
 * after keep_idle seconds without use (KEEP_IDLE). */
static int multi_new(lua_State *L)
{
    size_t keep = KEEP_BYTES;
    double idle = KEEP_IDLE;
    multi *m;
    if (lua_istable(L, 1)) {
        keep = (size_t)keep_option(L, "keep_bytes", (double)KEEP_BYTES, (double)((size_t)-1 / 2));
        idle = keep_option(L, "keep_idle", KEEP_IDLE, 1e9);
    } else if (!lua_isnoneornil(L, 1)) {
        luaL_argerror(L, 1, "table expected");
    }
    m = (multi *)lua_newuserdata(L, sizeof *m);
    memset(m, 0, sizeof *m);
    omx_rooms_init(&m->rooms, keep, idle);
    m->pid = omx_pid();
    omx_events_init(&m->ev);                        /* closable from here on */
    luaL_getmetatable(L, OMX_MULTI);
    lua_setmetatable(L, -2);                        /* __gc owns what follows */
    m->cm = curl_multi_init();
    m->share = curl_share_init();
    if (m->cm == NULL || m->share == NULL)
        return luaL_error(L, "omixa: cannot create the transport (out of memory)");
    if (omx_events_open(&m->ev, m->cm) != 0)       /* the portable backend borrows cm */
        return luaL_error(L, "omixa: cannot create the transport (%s)", strerror(errno));
    if (curl_share_setopt(m->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_SSL_SESSION) != CURLSHE_OK
        || curl_share_setopt(m->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_DNS) != CURLSHE_OK
        || curl_multi_setopt(m->cm, CURLMOPT_SOCKETFUNCTION, on_socket) != CURLM_OK
        || curl_multi_setopt(m->cm, CURLMOPT_SOCKETDATA, m) != CURLM_OK
        || curl_multi_setopt(m->cm, CURLMOPT_TIMERFUNCTION, on_timer) != CURLM_OK
        || curl_multi_setopt(m->cm, CURLMOPT_TIMERDATA, m) != CURLM_OK)
        return luaL_error(L, "omixa: cannot set up the transport (curl_share_setopt or curl_multi_setopt failed)");
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
    if (t->result_lost) {
        lua_pushnil(L);
        lua_newtable(L);
        lua_pushliteral(L, "network");
        lua_setfield(L, -2, "kind");
        lua_pushliteral(L, "out of memory while finishing the transfer");
        lua_setfield(L, -2, "message");
        return 2;
    }
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
    omx_push_headers(L, &t->head);
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
        refuse_fork(L, t->m);
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
    int ph = t->finished ? PH_RECEIVING : t->easy != NULL ? omx_current_phase(t) : t->phase;
    lua_pushstring(L, omx_phase_names[ph]);
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
    if (t->easy != NULL && t->m != NULL && forked(t->m)) {
        t->easy = NULL; /* a fork's child: see multi_abandon */
        if (t->running)
            list_remove(t->m, t);
    }
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
    omx_scan_free(t);
    unref(L, &t->res_ref);
    unref(L, &t->req_ref);
    unref(L, &t->fn_ref);
    unref(L, &t->err_ref);
    unref(L, &t->buf_ref);
    unref(L, &t->body_ref);
    unref(L, &t->self_ref);
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
    lua_pushnumber(L, (lua_Number)omx_now());
    return 1;
}

static int clock_sleep(lua_State *L)
{
    double s = (double)luaL_checknumber(L, 1);
    luaL_argcheck(L, s == s && s <= MAX_TIME, 1, "seconds must be a number below 1e12");
    omx_sleep(s);
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
        {"poll_interval", multi_poll_interval},
        {"wake_at", multi_wake_at},
        {"running", multi_running},
        {"kept", multi_kept},
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
    lua_pushcfunction(L, build_result);
    lua_setfield(L, LUA_REGISTRYINDEX, BUILD_RESULT);
    omx_newclass(L, OMX_MULTI, multi_methods);
    omx_newclass(L, OMX_TRANSFER, transfer_methods);
    lua_pop(L, 2);
    omx_setfuncs(L, functions, 0);
    lua_pushliteral(L, OMX_BACKEND_NAME);
    lua_setfield(L, -2, "event_backend");
}
