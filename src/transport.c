/* transport.c — the libcurl transport: one reusable easy handle per session
 * (so keep-alive connections and TLS sessions are reused between requests).
 *
 *   core.session() -> session
 *   session:perform(req) -> res | nil, err
 *   session:close()      -- idempotent; also __gc and __close
 *   core.curl_version() -> "7.88.1"
 *   core.now() -> monotonic seconds;  core.sleep(seconds)
 *
 * req = { url =, method = "GET"|"POST", headers = { "Name: value", ... },
 *         body = string|nil, timeout =, connect_timeout =, idle_timeout =
 *         (seconds), ca_file =, ca_path =, insecure =, proxy =, user_agent =,
 *         max_response_bytes =, progress = function(phase, sent, send_total,
 *         received, receive_total) -> false cancels }
 * res = { status =, headers = { [lower-case name] = value }, body = buffer,
 *         sent = bool, received = bool }
 * err = { kind =, message =, curl_code =, sent =, received =, status =,
 *         headers = }
 *
 * Lua is never called from a curl callback except through lua_pcall of a
 * trampoline pushed before the transfer; an error it raises is kept on the
 * stack, the transfer is aborted, and the error is raised again once
 * curl_easy_perform has returned. Everything curl borrows (the body string,
 * the header list) is owned by the session or anchored on the stack. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <curl/curl.h>
#include <lauxlib.h>

#include "buffer.h"
#include "compat.h"
#include "omixa.h"

#define OMX_SESSION "omixa.session"

/* Progress callbacks at most this often (seconds), besides phase changes. */
#define PROGRESS_INTERVAL 0.05

enum phase { PH_NONE, PH_CONNECTING, PH_UPLOADING, PH_WAITING, PH_RECEIVING };
static const char *const phase_names[] = {
    "none", "connecting", "uploading", "waiting", "receiving"
};

enum abort_reason { AB_NONE, AB_CANCEL, AB_CALLBACK_ERROR, AB_TOO_LARGE, AB_IDLE, AB_NOMEM };

typedef struct session {
    CURL *easy;
    struct curl_slist *headers; /* owned; freed before the next request */
    int busy;

    /* Per transfer; valid while perform runs. */
    lua_State *L;
    int trampoline;             /* stack index of the progress trampoline */
    int progress;               /* stack index of the Lua progress function, or 0 */
    int err_index;              /* stack index of a kept callback error, or 0 */
    omx_buf *body;              /* response body (userdata on the stack) */
    omx_buf head;               /* raw header block of the last response */
    size_t max_response;
    curl_off_t upload_total;    /* request body size */
    double idle_timeout, last_rx_time, last_call;
    curl_off_t last_rx;
    int got_headers, headers_done, phase;
    enum abort_reason abort;
    char errbuf[CURL_ERROR_SIZE];
} session;

static double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static session *check_session(lua_State *L, int idx)
{
    session *s = (session *)luaL_checkudata(L, idx, OMX_SESSION);
    if (s->easy == NULL)
        luaL_error(L, "omixa: session is closed");
    return s;
}

/* ---- curl callbacks: no Lua API call here that can raise. ---- */

static size_t on_header(char *p, size_t size, size_t n, void *ud)
{
    session *s = (session *)ud;
    size_t len = size * n;
    if (len >= 5 && memcmp(p, "HTTP/", 5) == 0) {
        s->head.len = 0; /* a new response (after 1xx, or a proxy's CONNECT) */
        s->headers_done = 0;
    } else if ((len == 2 && p[0] == '\r') || (len == 1 && p[0] == '\n')) {
        s->headers_done = 1;
    }
    s->got_headers = 1;
    if (omx_buf_append(&s->head, p, len) != 0) {
        s->abort = AB_NOMEM;
        return 0;
    }
    return len;
}

static size_t on_write(char *p, size_t size, size_t n, void *ud)
{
    session *s = (session *)ud;
    size_t len = size * n;
    omx_buf *b = s->body;
    if (s->max_response && b->len + len > s->max_response) {
        s->abort = AB_TOO_LARGE;
        return 0;
    }
    if (b->cap == 0) {
        /* Pre-size from Content-Length, within the limit. */
        curl_off_t cl = -1;
        if (curl_easy_getinfo(s->easy, CURLINFO_CONTENT_LENGTH_DOWNLOAD_T, &cl) == CURLE_OK
            && cl > 0 && (!s->max_response || (size_t)cl <= s->max_response))
            (void)omx_buf_reserve(b, (size_t)cl);
    }
    if (omx_buf_append(b, p, len) != 0) {
        s->abort = AB_NOMEM;
        return 0;
    }
    return len;
}

static int current_phase(session *s, curl_off_t ultotal, curl_off_t ulnow, curl_off_t dlnow)
{
    curl_off_t connected = 0;
    if (s->got_headers || dlnow > 0)
        return PH_RECEIVING;
    curl_easy_getinfo(s->easy, CURLINFO_APPCONNECT_TIME_T, &connected);
    if (connected == 0) {
        char *scheme = NULL;
        curl_easy_getinfo(s->easy, CURLINFO_SCHEME, &scheme);
        if (scheme == NULL || strcmp(scheme, "HTTP") == 0 || strcmp(scheme, "http") == 0)
            curl_easy_getinfo(s->easy, CURLINFO_CONNECT_TIME_T, &connected);
    }
    if (connected == 0)
        return PH_CONNECTING;
    if (ulnow < (ultotal > s->upload_total ? ultotal : s->upload_total))
        return PH_UPLOADING;
    return PH_WAITING;
}

/* Runs protected: (progress function, session) -> boolean "go on". */
static int progress_trampoline(lua_State *L)
{
    session *s = (session *)lua_touserdata(L, 2);
    curl_off_t ultotal = 0, ulnow = 0, dltotal = 0, dlnow = 0;
    lua_settop(L, 1);
    curl_easy_getinfo(s->easy, CURLINFO_SIZE_UPLOAD_T, &ulnow);
    curl_easy_getinfo(s->easy, CURLINFO_CONTENT_LENGTH_UPLOAD_T, &ultotal);
    curl_easy_getinfo(s->easy, CURLINFO_SIZE_DOWNLOAD_T, &dlnow);
    curl_easy_getinfo(s->easy, CURLINFO_CONTENT_LENGTH_DOWNLOAD_T, &dltotal);
    lua_pushstring(L, phase_names[s->phase]);
    lua_pushnumber(L, (lua_Number)ulnow);
    lua_pushnumber(L, (lua_Number)(ultotal > 0 ? ultotal : 0));
    lua_pushnumber(L, (lua_Number)dlnow);
    lua_pushnumber(L, (lua_Number)(dltotal > 0 ? dltotal : 0));
    lua_call(L, 5, 1);
    lua_pushboolean(L, !(lua_isboolean(L, -1) && !lua_toboolean(L, -1)));
    return 1;
}

static int on_xferinfo(void *ud, curl_off_t dltotal, curl_off_t dlnow,
                       curl_off_t ultotal, curl_off_t ulnow)
{
    session *s = (session *)ud;
    lua_State *L = s->L;
    double t = now_seconds();
    int ph, go_on;
    (void)dltotal;

    if (dlnow != s->last_rx) {
        s->last_rx = dlnow;
        s->last_rx_time = t;
    }
    if (s->idle_timeout > 0 && s->got_headers && t - s->last_rx_time > s->idle_timeout) {
        s->abort = AB_IDLE;
        return 1;
    }
    if (s->progress == 0)
        return 0;
    ph = current_phase(s, ultotal, ulnow, dlnow);
    if (ph == s->phase && t - s->last_call < PROGRESS_INTERVAL)
        return 0;
    s->phase = ph;
    s->last_call = t;

    /* The stack has room: perform reserved it. No allocation before pcall. */
    lua_pushvalue(L, s->trampoline);
    lua_pushvalue(L, s->progress);
    lua_pushlightuserdata(L, s);
    if (lua_pcall(L, 2, 1, 0) != LUA_OK) {
        s->err_index = lua_gettop(L); /* keep the error where it is */
        s->abort = AB_CALLBACK_ERROR;
        return 1;
    }
    go_on = lua_toboolean(L, -1);
    lua_pop(L, 1);
    if (!go_on) {
        s->abort = AB_CANCEL;
        return 1;
    }
    return 0;
}

/* ---- request setup (shared with the multi interface later) ---- */

static double opt_number(lua_State *L, int t, const char *k)
{
    double v;
    lua_getfield(L, t, k);
    v = lua_isnumber(L, -1) ? (double)lua_tonumber(L, -1) : 0.0;
    lua_pop(L, 1);
    return v;
}

/* A string field as a pointer into the request table, which stays on the
 * stack for the whole transfer; NULL when absent. */
static const char *opt_string(lua_State *L, int t, const char *k)
{
    const char *v;
    lua_getfield(L, t, k);
    v = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : NULL;
    lua_pop(L, 1);
    return v;
}

static int opt_bool(lua_State *L, int t, const char *k)
{
    int v;
    lua_getfield(L, t, k);
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

static void setup(lua_State *L, session *s, int req)
{
    CURL *e = s->easy;
    const char *url, *method, *v;
    size_t body_len = 0;
    const char *body = NULL;
    int i, n;

    url = opt_string(L, req, "url");
    if (url == NULL)
        luaL_error(L, "omixa: request needs a url");
    method = opt_string(L, req, "method");
    if (method == NULL)
        method = "GET";

    curl_easy_reset(e);
    curl_slist_free_all(s->headers);
    s->headers = NULL;

    curl_easy_setopt(e, CURLOPT_URL, url);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, s->errbuf);
    curl_easy_setopt(e, CURLOPT_ACCEPT_ENCODING, "");
    curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(e, CURLOPT_HEADERDATA, s);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_write);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, s);
    curl_easy_setopt(e, CURLOPT_XFERINFOFUNCTION, on_xferinfo);
    curl_easy_setopt(e, CURLOPT_XFERINFODATA, s);
    curl_easy_setopt(e, CURLOPT_NOPROGRESS, 0L);

    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, to_ms(opt_number(L, req, "timeout")));
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, to_ms(opt_number(L, req, "connect_timeout")));
    s->idle_timeout = opt_number(L, req, "idle_timeout");
    s->max_response = (size_t)opt_number(L, req, "max_response_bytes");

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

    lua_getfield(L, req, "body");
    if (lua_type(L, -1) == LUA_TSTRING)
        body = lua_tolstring(L, -1, &body_len); /* anchored by req */
    lua_pop(L, 1);
    if (strcmp(method, "POST") == 0) {
        curl_easy_setopt(e, CURLOPT_POST, 1L);
        curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)body_len);
        curl_easy_setopt(e, CURLOPT_POSTFIELDS, body ? body : "");
    } else if (strcmp(method, "GET") == 0) {
        curl_easy_setopt(e, CURLOPT_HTTPGET, 1L);
    } else {
        luaL_error(L, "omixa: unsupported method '%s'", method);
    }

    /* No 100-continue round trip before large bodies. */
    s->headers = curl_slist_append(s->headers, "Expect:");
    lua_getfield(L, req, "headers");
    if (lua_istable(L, -1)) {
        n = (int)omx_rawlen(L, -1);
        for (i = 1; i <= n; i++) {
            struct curl_slist *next;
            lua_rawgeti(L, -1, i);
            v = lua_tostring(L, -1);
            next = v ? curl_slist_append(s->headers, v) : s->headers;
            lua_pop(L, 1);
            if (next == NULL)
                luaL_error(L, "omixa: out of memory");
            s->headers = next;
        }
    }
    lua_pop(L, 1);
    if (s->headers == NULL)
        luaL_error(L, "omixa: out of memory");
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, s->headers);
}

/* ---- results ---- */

/* Parse the kept header block into a table of lower-case names; repeated
 * headers are joined with ", ". Pushes the table. */
static void push_headers(lua_State *L, const omx_buf *h)
{
    const char *p = h->data, *end = h->data + h->len;
    lua_newtable(L);
    if (p == NULL)
        return;
    while (p < end) {
        const char *eol = memchr(p, '\n', (size_t)(end - p));
        const char *line_end = eol ? eol : end, *colon, *vs, *ve;
        if (line_end > p && line_end[-1] == '\r')
            line_end--;
        colon = memchr(p, ':', (size_t)(line_end - p));
        if (colon != NULL && colon > p && memcmp(p, "HTTP/", 5) != 0) {
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
    case AB_CANCEL: return "cancelled";
    case AB_TOO_LARGE: return "too_large";
    case AB_IDLE: return "timeout";
    case AB_NOMEM: return "network";
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
    case CURLE_WEIRD_SERVER_REPLY:
    case CURLE_BAD_CONTENT_ENCODING: case CURLE_HTTP2_STREAM:
        return "protocol";
    case CURLE_UNSUPPORTED_PROTOCOL: case CURLE_URL_MALFORMAT:
        return "config";
    default:
        return "network";
    }
}

static const char *message_of(session *s, CURLcode rc)
{
    switch (s->abort) {
    case AB_CANCEL: return "cancelled by the progress callback";
    case AB_TOO_LARGE: return "response larger than max_response_bytes";
    case AB_IDLE: return "no data received for idle_timeout seconds";
    case AB_NOMEM: return "out of memory while receiving";
    default: break;
    }
    if (rc == CURLE_PARTIAL_FILE)
        return s->headers_done ? "response body truncated (connection closed early)"
                               : "connection closed in the middle of the response headers";
    return s->errbuf[0] ? s->errbuf : curl_easy_strerror(rc);
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

/* Did the whole request (headers and body) leave this machine? */
static int request_sent(session *s, int req_has_body, curl_off_t body_len)
{
    long req_size = 0;
    curl_off_t up = 0;
    curl_easy_getinfo(s->easy, CURLINFO_REQUEST_SIZE, &req_size);
    curl_easy_getinfo(s->easy, CURLINFO_SIZE_UPLOAD_T, &up);
    if (req_size <= 0)
        return 0;
    return !req_has_body || up >= body_len;
}

static int session_perform(lua_State *L)
{
    session *s = check_session(L, 1);
    CURLcode rc;
    long status = 0;
    int req = 2, sent, body_index;
    size_t body_len = 0;
    int has_body;

    luaL_checktype(L, 2, LUA_TTABLE);
    if (s->busy)
        return luaL_error(L, "omixa: session is busy (a callback started another request on it)");
    lua_settop(L, 2);
    luaL_checkstack(L, 24, "omixa: no stack space");

    lua_getfield(L, req, "body");
    has_body = lua_type(L, -1) == LUA_TSTRING;
    if (has_body)
        (void)lua_tolstring(L, -1, &body_len);
    lua_pop(L, 1);

    setup(L, s, req);                          /* may raise; owns nothing new */
    lua_pushcfunction(L, progress_trampoline); /* 3 */
    lua_getfield(L, req, "progress");          /* 4 */
    s->body = omx_buffer_push(L);              /* 5 */
    body_index = 5;
    s->L = L;
    s->trampoline = 3;
    s->progress = lua_isfunction(L, 4) ? 4 : 0;
    s->err_index = 0;
    s->head.len = 0;
    s->got_headers = 0;
    s->headers_done = 0;
    s->phase = PH_NONE;
    s->last_call = 0;
    s->last_rx = 0;
    s->last_rx_time = now_seconds();
    s->abort = AB_NONE;
    s->errbuf[0] = '\0';
    s->upload_total = (curl_off_t)body_len;

    s->busy = 1;
    rc = curl_easy_perform(s->easy);
    s->busy = 0;
    s->L = NULL;

    if (s->abort == AB_CALLBACK_ERROR) {
        lua_pushvalue(L, s->err_index);
        return lua_error(L); /* curl has returned: safe to unwind now */
    }
    curl_easy_getinfo(s->easy, CURLINFO_RESPONSE_CODE, &status);
    sent = request_sent(s, has_body, (curl_off_t)body_len);

    lua_newtable(L);
    if (status > 0)
        set_int(L, "status", status);
    set_bool(L, "sent", sent);
    set_bool(L, "received", s->got_headers);
    push_headers(L, &s->head);
    lua_setfield(L, -2, "headers");
    if (rc == CURLE_OK) {
        lua_pushvalue(L, body_index);
        lua_setfield(L, -2, "body");
        return 1;
    }
    lua_pushstring(L, kind_of(rc, s->abort, s->headers_done));
    lua_setfield(L, -2, "kind");
    lua_pushstring(L, message_of(s, rc));
    lua_setfield(L, -2, "message");
    set_int(L, "curl_code", (lua_Integer)rc);
    lua_pushvalue(L, body_index);  /* what arrived, for a body excerpt */
    lua_setfield(L, -2, "body");
    lua_pushnil(L);
    lua_insert(L, -2);
    return 2;
}

static int session_close(lua_State *L)
{
    session *s = (session *)luaL_checkudata(L, 1, OMX_SESSION);
    if (s->busy)
        return luaL_error(L, "omixa: cannot close a session during its own transfer");
    if (s->easy != NULL) {
        curl_easy_cleanup(s->easy);
        s->easy = NULL;
    }
    curl_slist_free_all(s->headers);
    s->headers = NULL;
    omx_buf_free(&s->head);
    return 0;
}

static int session_gc(lua_State *L)
{
    session *s = (session *)luaL_checkudata(L, 1, OMX_SESSION);
    s->busy = 0; /* a collected session cannot be mid-transfer */
    return session_close(L);
}

static int session_tostring(lua_State *L)
{
    session *s = (session *)luaL_checkudata(L, 1, OMX_SESSION);
    lua_pushfstring(L, OMX_SESSION " (%s)", s->easy ? "open" : "closed");
    return 1;
}

static int session_new(lua_State *L)
{
    session *s = (session *)lua_newuserdata(L, sizeof *s);
    memset(s, 0, sizeof *s);
    omx_buf_init(&s->head);
    luaL_getmetatable(L, OMX_SESSION);
    lua_setmetatable(L, -2);
    s->easy = curl_easy_init(); /* after the userdata: __gc owns it */
    if (s->easy == NULL)
        return luaL_error(L, "omixa: curl_easy_init failed");
    return 1;
}

/* core.now() -> monotonic seconds; core.sleep(seconds) for back-off waits
 * of the blocking path (jobs use deadlines instead). */
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

/* The libcurl version number only: curl_version() would also initialise
 * LDAP and SASL just to name their versions (and leak doing so). */
static int curl_version_string(lua_State *L)
{
    const curl_version_info_data *v = curl_version_info(CURLVERSION_NOW);
    lua_pushstring(L, v && v->version ? v->version : "unknown");
    return 1;
}

void omx_transport_open(lua_State *L)
{
    static const luaL_Reg methods[] = {
        {"perform", session_perform},
        {"close", session_close},
        {"__gc", session_gc},
        {"__close", session_close},
        {"__tostring", session_tostring},
        {NULL, NULL}
    };
    curl_global_init(CURL_GLOBAL_DEFAULT);
    omx_newclass(L, OMX_SESSION, methods);
    lua_pop(L, 1);
    lua_pushcfunction(L, session_new);
    lua_setfield(L, -2, "session");
    lua_pushcfunction(L, curl_version_string);
    lua_setfield(L, -2, "curl_version");
    lua_pushcfunction(L, clock_now);
    lua_setfield(L, -2, "now");
    lua_pushcfunction(L, clock_sleep);
    lua_setfield(L, -2, "sleep");
}
