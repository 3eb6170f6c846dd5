/* easy.c — one request's easy handle: its options from the request table
 * (omx_setup), the upload of its body, and its progress calls into Lua. */
#include <stdio.h>
#include <string.h>

#include <lauxlib.h>

#include "buffer.h"
#include "compat.h"
#include "transport.h"

#define PROGRESS_INTERVAL 0.05 /* seconds between progress calls, at most */
#define RECV_BUFFER 524288L      /* bytes per read from the socket (curl: 16 KiB) */

const char *const omx_phase_names[] = {
    "none", "connecting", "uploading", "waiting", "receiving"
};

int omx_current_phase(transfer *t)
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
int omx_progress_trampoline(lua_State *L)
{
    transfer *t = (transfer *)lua_touserdata(L, 2);
    lua_settop(L, 1);
    lua_pushstring(L, omx_phase_names[t->phase]);
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
    now = omx_now();
    ph = omx_current_phase(t);
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

/* Number field K of the request table, absent: 0. Anything else than a
 * number in [LO, HI] (NaN included) raises: every number the core takes
 * from Lua is checked here, before a cast can meet it. */
static double opt_number(lua_State *L, int tab, const char *k, double lo, double hi)
{
    double v;
    lua_getfield(L, tab, k);
    if (lua_isnil(L, -1)) {
        lua_pop(L, 1);
        return 0.0;
    }
    if (!lua_isnumber(L, -1))
        luaL_error(L, "omixa: request field '%s' must be a number (got %s)", k, luaL_typename(L, -1));
    v = (double)lua_tonumber(L, -1);
    lua_pop(L, 1);
    if (!(v >= lo && v <= hi))
        luaL_error(L, "omixa: request field '%s' must be a number from %f to %f (got %f)",
                   k, (lua_Number)lo, (lua_Number)hi, (lua_Number)v);
    return v;
}

/* A string field as a pointer into the request table, NULL when absent:
 * used only while setting up (curl copies every string option). */
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

#define MAX_SECONDS 1e7   /* any timeout above this (115 days) is a mistake */

/* Seconds in [0, MAX_SECONDS] as curl's milliseconds, capped at 2e9 ms
 * (about 23 days) so that a 32-bit long holds them. */
static long to_ms(double seconds)
{
    if (seconds <= 0)
        return 0;
    if (seconds > 2e6)
        return 2000000000L;
    return (long)(seconds * 1000.0 + 0.5);
}

/* Every curl_easy_setopt of setup: a failure raises (T owns what it holds). */
#define SET(L, e, opt, val) set_checked((L), curl_easy_setopt((e), (opt), (val)), #opt)

static void set_checked(lua_State *L, CURLcode rc, const char *what)
{
    if (rc != CURLE_OK)
        luaL_error(L, "omixa: curl_easy_setopt(%s) failed: %s", what, curl_easy_strerror(rc));
}

/* Set every option of T's easy handle from the request table at REQ. May
 * raise (bad arguments, out of memory): T owns all it has allocated. */
void omx_setup(lua_State *L, multi *m, transfer *t, int req)
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

    SET(L, e, CURLOPT_URL, url);
    SET(L, e, CURLOPT_PRIVATE, (void *)t);
    SET(L, e, CURLOPT_SHARE, m->share);
    SET(L, e, CURLOPT_NOSIGNAL, 1L);
    SET(L, e, CURLOPT_FOLLOWLOCATION, 0L);
    SET(L, e, CURLOPT_PROTOCOLS_STR, "http,https");
    SET(L, e, CURLOPT_ERRORBUFFER, t->errbuf);
    SET(L, e, CURLOPT_ACCEPT_ENCODING, "");
    SET(L, e, CURLOPT_TCP_KEEPALIVE, 1L);
    SET(L, e, CURLOPT_BUFFERSIZE, RECV_BUFFER);
    SET(L, e, CURLOPT_HEADERFUNCTION, omx_on_header);
    SET(L, e, CURLOPT_HEADERDATA, t);
    SET(L, e, CURLOPT_WRITEFUNCTION, omx_on_write);
    SET(L, e, CURLOPT_WRITEDATA, t);
    SET(L, e, CURLOPT_XFERINFOFUNCTION, on_xferinfo);
    SET(L, e, CURLOPT_XFERINFODATA, t);
    SET(L, e, CURLOPT_NOPROGRESS, 0L);

    SET(L, e, CURLOPT_TIMEOUT_MS, to_ms(opt_number(L, req, "timeout", 0, MAX_SECONDS)));
    SET(L, e, CURLOPT_CONNECTTIMEOUT_MS, to_ms(opt_number(L, req, "connect_timeout", 0, MAX_SECONDS)));
    t->idle_timeout = opt_number(L, req, "idle_timeout", 0, MAX_SECONDS);
    t->scan_mode = opt_bool(L, req, "scan_images") ? SCAN_WANTED : SCAN_OFF;
    {
        /* 0: no limit; at most 2^53 (exact in a double) and what size_t holds */
        double most = (double)(size_t)-1 < 9007199254740992.0 ? (double)(size_t)-1 : 9007199254740992.0;
        double lim = opt_number(L, req, "max_response_bytes", 0, most);
        if (lim != (double)(size_t)lim)
            luaL_error(L, "omixa: request field 'max_response_bytes' must be an integer (got %f)", (lua_Number)lim);
        t->max_response = (size_t)lim;
    }

    if ((v = opt_string(L, req, "ca_file")) != NULL)
        SET(L, e, CURLOPT_CAINFO, v);
    if ((v = opt_string(L, req, "ca_path")) != NULL)
        SET(L, e, CURLOPT_CAPATH, v);
    if (opt_bool(L, req, "insecure")) {
        SET(L, e, CURLOPT_SSL_VERIFYPEER, 0L);
        SET(L, e, CURLOPT_SSL_VERIFYHOST, 0L);
    }
    if ((v = opt_string(L, req, "proxy")) != NULL)
        SET(L, e, CURLOPT_PROXY, v);
    if ((v = opt_string(L, req, "user_agent")) != NULL)
        SET(L, e, CURLOPT_USERAGENT, v);

    /* A string or an omixa.buffer, anchored by body_ref (not only by the
     * request table, which its owner may change while curl reads). */
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
    t->body_ref = luaL_ref(L, LUA_REGISTRYINDEX); /* pops it; nil: LUA_REFNIL */
    t->upload_total = (curl_off_t)body_len;
    t->body_src = body ? body : "";
    t->body_len = body_len;
    t->body_pos = 0;
    if (strcmp(method, "POST") == 0) {
        SET(L, e, CURLOPT_POST, 1L);
        SET(L, e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)body_len);
        SET(L, e, CURLOPT_READFUNCTION, on_read);
        SET(L, e, CURLOPT_READDATA, t);
        SET(L, e, CURLOPT_SEEKFUNCTION, on_seek);
        SET(L, e, CURLOPT_SEEKDATA, t);
    } else if (strcmp(method, "GET") == 0) {
        SET(L, e, CURLOPT_HTTPGET, 1L);
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
    SET(L, e, CURLOPT_HTTPHEADER, t->headers);
}
#undef SET

/* Did the whole request (headers and body) leave this machine? Judged by
 * what the read callback handed to libcurl, which stays true when libcurl
 * resets its own counters to try again (and then fails, unable to rewind). */
int omx_request_sent(transfer *t, CURLcode rc)
{
    long req_size = 0;
    if (rc == CURLE_SEND_FAIL_REWIND)
        return 1;
    if (t->body_len > 0)
        return t->body_pos >= t->body_len;
    curl_easy_getinfo(t->easy, CURLINFO_REQUEST_SIZE, &req_size);
    return req_size > 0;
}

