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
    curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, omx_on_header);
    curl_easy_setopt(e, CURLOPT_HEADERDATA, t);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, omx_on_write);
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

