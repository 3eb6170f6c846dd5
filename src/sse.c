/* sse.c — the server-sent-events parser (see sse.h) and core.sse_parser.
 *
 * A chunk is cut into line pieces at CR and LF (found with memchr, each
 * position remembered until it is passed, so no byte is searched twice);
 * a piece continues the current line through a small state machine: the
 * field name is only compared (its first bytes kept), the value of a data
 * line is appended straight to the event's data, so a long line is copied
 * once and never rescanned. */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <lua.h>
#include <lauxlib.h>

#include "buffer.h"
#include "compat.h"
#include "json.h"
#include "omixa.h"
#include "sse.h"

/* Where the current line is. */
enum {
    L_START,        /* nothing yet: a line end here is a blank line */
    L_NAME,         /* in the field name */
    L_VALUE_START,  /* just after the colon: one space may be skipped */
    L_VALUE,        /* in the value */
    L_COMMENT       /* a line that began with ':' */
};

/* Which field the current line is. */
enum { F_OTHER, F_DATA, F_EVENT, F_ID, F_RETRY };

#define NAME_KEEP 8  /* longer names are no field we know */

struct omx_sse_parser {
    size_t max;             /* bytes one event may hold; 0: no limit */
    omx_buf data;           /* "value\n" per data line */
    omx_buf type;           /* the event name */
    omx_buf idval;          /* the id value being read */
    omx_buf lastid;         /* the last event ID */
    int line, field;
    char name[NAME_KEEP];
    size_t name_len;
    int id_nul;             /* the id value holds a NUL */
    long long acc;          /* the retry value being read */
    int acc_ok, acc_digits;
    long long event_retry;  /* a retry field of this event, or -1 */
    long long retry;        /* the last valid retry, or -1 */
    int bom;                /* BOM bytes matched; -1 once past the start */
    int after_cr;           /* the last chunk ended with CR */
    int error;              /* sticky OMX_SSE_* */
    int feeding;            /* inside omx_sse_feed (still set: it was left
                             * by a longjmp) */
    int finished;
    size_t comments;
};

static const unsigned char BOM[3] = { 0xEF, 0xBB, 0xBF };

omx_sse_parser *omx_sse_new(size_t max_bytes)
{
    omx_sse_parser *p = (omx_sse_parser *)calloc(1, sizeof *p);
    if (p == NULL)
        return NULL;
    p->max = max_bytes;
    omx_buf_init(&p->data);
    omx_buf_init(&p->type);
    omx_buf_init(&p->idval);
    omx_buf_init(&p->lastid);
    p->line = L_START;
    p->event_retry = p->retry = -1;
    return p;
}

static void free_buffers(omx_sse_parser *p)
{
    omx_buf_free(&p->data);
    omx_buf_free(&p->type);
    omx_buf_free(&p->idval);
    omx_buf_free(&p->lastid);
}

void omx_sse_free(omx_sse_parser *p)
{
    if (p == NULL)
        return;
    free_buffers(p);
    free(p);
}

size_t omx_sse_comments(const omx_sse_parser *p)
{
    return p->comments;
}

long long omx_sse_retry(const omx_sse_parser *p)
{
    return p->retry;
}

const char *omx_sse_strerror(int code)
{
    switch (code) {
    case OMX_SSE_OK: return "no error";
    case OMX_SSE_ETOOBIG: return "event larger than the limit";
    case OMX_SSE_ENOMEM: return "not enough memory";
    case OMX_SSE_ESTOPPED: return "stopped by the event callback";
    case OMX_SSE_EFINISHED: return "the stream has already finished";
    case OMX_SSE_EABANDONED: return "an error was raised in an earlier feed";
    default: return "unknown error";
    }
}

/* Append N bytes to B, one of the buffers an event holds, within the limit. */
static int hold(omx_sse_parser *p, omx_buf *b, const char *s, size_t n)
{
    if (p->max) {
        size_t held = p->data.len + p->type.len + p->idval.len;
        if (held > p->max || n > p->max - held)
            return OMX_SSE_ETOOBIG;
    }
    if (omx_buf_append(b, s, n) != 0)
        return OMX_SSE_ENOMEM;
    return OMX_SSE_OK;
}

/* The name is complete (at its colon, or at the end of a colon-less line). */
static void begin_field(omx_sse_parser *p)
{
    size_t n = p->name_len;
    p->field = F_OTHER;
    if (n == 4 && memcmp(p->name, "data", 4) == 0) {
        p->field = F_DATA;
    } else if (n == 5 && memcmp(p->name, "event", 5) == 0) {
        p->field = F_EVENT;
        p->type.len = 0;
    } else if (n == 2 && memcmp(p->name, "id", 2) == 0) {
        p->field = F_ID;
        p->idval.len = 0;
        p->id_nul = 0;
    } else if (n == 5 && memcmp(p->name, "retry", 5) == 0) {
        p->field = F_RETRY;
        p->acc = 0;
        p->acc_ok = 1;
        p->acc_digits = 0;
    }
}

/* Value bytes of the current field. */
static int value(omx_sse_parser *p, const char *s, size_t n)
{
    size_t i;
    switch (p->field) {
    case F_DATA:
        return hold(p, &p->data, s, n);
    case F_EVENT:
        return hold(p, &p->type, s, n);
    case F_ID: {
        /* the bytes before a NUL count toward the limit however the line
         * is cut into chunks; after it the value is dropped */
        const char *nul;
        int rc;
        if (p->id_nul)
            return OMX_SSE_OK;
        nul = (const char *)memchr(s, '\0', n);
        if ((rc = hold(p, &p->idval, s, nul ? (size_t)(nul - s) : n)) != OMX_SSE_OK)
            return rc;
        if (nul != NULL) {
            p->id_nul = 1;
            p->idval.len = 0;
        }
        return OMX_SSE_OK;
    }
    case F_RETRY:
        for (i = 0; i < n && p->acc_ok; i++) {
            unsigned d = (unsigned char)s[i] - (unsigned)'0';
            if (d > 9 || p->acc > (LLONG_MAX - (long long)d) / 10)
                p->acc_ok = 0; /* not digits only, or too large to keep */
            else
                p->acc = p->acc * 10 + (long long)d;
            p->acc_digits = 1;
        }
        return OMX_SSE_OK;
    default:
        return OMX_SSE_OK;
    }
}

/* Bytes of the current line (no CR or LF among them). */
static int take(omx_sse_parser *p, const char *s, size_t n)
{
    while (n > 0) {
        switch (p->line) {
        case L_START:
            if (*s == ':') {
                p->line = L_COMMENT;
                return OMX_SSE_OK;
            }
            p->line = L_NAME;
            p->name_len = 0;
            break;
        case L_NAME: {
            const char *colon = (const char *)memchr(s, ':', n);
            size_t k = colon ? (size_t)(colon - s) : n, keep;
            if (p->name_len < NAME_KEEP) {
                keep = NAME_KEEP - p->name_len < k ? NAME_KEEP - p->name_len : k;
                memcpy(p->name + p->name_len, s, keep);
            }
            p->name_len = p->name_len + k < p->name_len ? (size_t)-1 : p->name_len + k;
            if (colon == NULL)
                return OMX_SSE_OK;
            begin_field(p);
            p->line = L_VALUE_START;
            s += k + 1;
            n -= k + 1;
            break;
        }
        case L_VALUE_START:
            p->line = L_VALUE;
            if (*s == ' ') {
                s++;
                n--;
            }
            break;
        case L_VALUE:
            return value(p, s, n);
        default: /* L_COMMENT */
            return OMX_SSE_OK;
        }
    }
    return OMX_SSE_OK;
}

/* A blank line: hand the event over and start the next. */
static int dispatch(omx_sse_parser *p, omx_sse_event_fn fn, void *ud)
{
    omx_sse_event ev;
    int stop;
    if (p->data.len == 0) {
        p->type.len = 0;
        p->event_retry = -1;
        return OMX_SSE_OK;
    }
    if (p->type.len) {
        ev.type = p->type.data;
        ev.type_len = p->type.len;
    } else {
        ev.type = "message";
        ev.type_len = 7;
    }
    ev.data = p->data.data;
    ev.data_len = p->data.len - 1; /* the last line's '\n' */
    ev.id = p->lastid.len ? p->lastid.data : NULL;
    ev.id_len = p->lastid.len;
    ev.retry = p->event_retry;
    stop = fn(ud, &ev);
    p->data.len = 0;
    p->type.len = 0;
    p->event_retry = -1;
    return stop ? OMX_SSE_ESTOPPED : OMX_SSE_OK;
}

static int end_line(omx_sse_parser *p, omx_sse_event_fn fn, void *ud)
{
    int line = p->line, rc = OMX_SSE_OK;
    p->line = L_START;
    switch (line) {
    case L_START:
        return dispatch(p, fn, ud);
    case L_COMMENT:
        p->comments++;
        return OMX_SSE_OK;
    case L_NAME:
        begin_field(p); /* a name alone: the field with an empty value */
        break;
    default:
        break;
    }
    switch (p->field) {
    case F_DATA:
        rc = hold(p, &p->data, "\n", 1);
        break;
    case F_ID:
        if (!p->id_nul) {
            omx_buf t = p->lastid;
            p->lastid = p->idval;
            p->idval = t;
        }
        p->idval.len = 0;
        break;
    case F_RETRY:
        if (p->acc_ok && p->acc_digits)
            p->retry = p->event_retry = p->acc;
        break;
    default:
        break;
    }
    return rc;
}

static int feed(omx_sse_parser *p, const char *chunk, size_t n,
                omx_sse_event_fn fn, void *ud)
{
    const char *s = chunk, *e = chunk + n, *lf = NULL, *cr = NULL;
    int rc;
    if (p->after_cr) {
        p->after_cr = 0;
        if (*s == '\n')
            s++;
    }
    while (p->bom >= 0 && s < e) {
        if ((unsigned char)*s == BOM[p->bom]) {
            s++;
            if (++p->bom == 3)
                p->bom = -1;
        } else {
            /* not a BOM after all: what matched is line content */
            int matched = p->bom;
            p->bom = -1;
            if ((rc = take(p, (const char *)BOM, (size_t)matched)) != OMX_SSE_OK)
                return p->error = rc;
        }
    }
    while (s < e) {
        const char *q;
        if ((lf == NULL || lf < s) && (lf = (const char *)memchr(s, '\n', (size_t)(e - s))) == NULL)
            lf = e;
        if ((cr == NULL || cr < s) && (cr = (const char *)memchr(s, '\r', (size_t)(e - s))) == NULL)
            cr = e;
        q = lf < cr ? lf : cr;
        if (q > s && (rc = take(p, s, (size_t)(q - s))) != OMX_SSE_OK)
            return p->error = rc;
        if (q == e)
            break;
        if ((rc = end_line(p, fn, ud)) != OMX_SSE_OK)
            return p->error = rc;
        if (*q == '\r') {
            if (q + 1 == e)
                p->after_cr = 1;
            else if (q[1] == '\n')
                q++;
        }
        s = q + 1;
    }
    return OMX_SSE_OK;
}

int omx_sse_feed(omx_sse_parser *p, const char *chunk, size_t n,
                 omx_sse_event_fn fn, void *ud)
{
    int rc;
    if (p->feeding)
        p->error = OMX_SSE_EABANDONED;
    if (p->error)
        return p->error;
    if (p->finished)
        return OMX_SSE_EFINISHED;
    if (n == 0)
        return OMX_SSE_OK;
    p->feeding = 1;
    rc = feed(p, chunk, n, fn, ud);
    p->feeding = 0;
    return rc;
}

int omx_sse_finish(omx_sse_parser *p)
{
    int pending;
    if (p->finished)
        return 0;
    pending = p->data.len > 0
           || (p->line != L_START && p->line != L_COMMENT)
           || p->bom > 0;
    p->finished = 1;
    p->line = L_START;
    free_buffers(p);
    return pending;
}

/* ---- Lua binding ----------------------------------------------------- */

#define OMX_SSE_PARSER "omixa.sse_parser"

typedef struct sse_ud {
    omx_sse_parser *p;      /* NULL once closed */
    omx_buf scratch, rest;  /* images mode: decoded image, rest text */
    size_t max;
    int images;
    int in_feed;            /* set for the whole of parser:feed: still set at
                               the next call when an error left it midway */
} sse_ud;

static sse_ud *check_parser(lua_State *L)
{
    sse_ud *u = (sse_ud *)luaL_checkudata(L, 1, OMX_SSE_PARSER);
    if (u->p == NULL)
        luaL_error(L, OMX_SSE_PARSER " is closed");
    return u;
}

static int parser_close(lua_State *L)
{
    sse_ud *u = (sse_ud *)luaL_checkudata(L, 1, OMX_SSE_PARSER);
    omx_sse_free(u->p);
    u->p = NULL;
    omx_buf_free(&u->scratch);
    omx_buf_free(&u->rest);
    return 0;
}

/* core.sse_parser([max_bytes | { max_bytes = n, images = bool }]) */
static int l_sse_parser(lua_State *L)
{
    lua_Integer max = 0;
    int images = 0;
    sse_ud *u;
    if (lua_istable(L, 1)) {
        lua_getfield(L, 1, "max_bytes");
        max = omx_optinteger(L, -1, 0);
        lua_getfield(L, 1, "images");
        if (!lua_isnil(L, -1) && !lua_isboolean(L, -1))
            return luaL_error(L, "sse_parser: images must be a boolean");
        images = lua_toboolean(L, -1);
        lua_pop(L, 2);
    } else if (!lua_isnoneornil(L, 1)) {
        if (lua_type(L, 1) != LUA_TNUMBER)
            return luaL_argerror(L, 1, "max_bytes or an options table expected");
        max = omx_optinteger(L, 1, 0);
    }
    if (max < 0)
        return luaL_error(L, "sse_parser: max_bytes must not be negative");
    lua_settop(L, 0);
    u = (sse_ud *)lua_newuserdata(L, sizeof *u);
    u->p = NULL;
    omx_buf_init(&u->scratch);
    omx_buf_init(&u->rest);
    u->images = images;
    u->in_feed = 0;
    u->max = (size_t)max;
    luaL_getmetatable(L, OMX_SSE_PARSER);
    lua_setmetatable(L, -2);
    if ((u->p = omx_sse_new((size_t)max)) == NULL)
        return luaL_error(L, "not enough memory");
    return 1;
}

typedef struct feed_ctx {
    lua_State *L;
    sse_ud *u;
    int events;     /* stack index of the events array */
    int count;
    int images;     /* stack index of the current event's images */
    size_t nimages;
} feed_ctx;

static unsigned char *img_room(void *ud, size_t index, size_t have, size_t need)
{
    (void)index;
    return omx_buf_room(&((feed_ctx *)ud)->u->scratch, have, need);
}

static int img_image(void *ud, size_t index, size_t len)
{
    feed_ctx *c = (feed_ctx *)ud;
    lua_pushlstring(c->L, c->u->scratch.data, len);
    lua_rawseti(c->L, c->images, (int)index);
    c->nimages = index;
    return 0;
}

static int img_rest(void *ud, const char *p, size_t n)
{
    feed_ctx *c = (feed_ctx *)ud;
    return omx_buf_append(&c->u->rest, p, n);
}

/* event.images and event.data of the event table on top: the b64_json
 * strings decoded, the data with each replaced by its image number as a
 * JSON string ("1"). */
static void set_images(feed_ctx *c, const omx_sse_event *ev)
{
    lua_State *L = c->L;
    omx_json_images_ops ops;
    omx_json_error err;
    int rc;
    ops.ud = c;
    ops.image_room = img_room;
    ops.image = img_image;
    ops.rest = img_rest;
    lua_newtable(L);
    c->images = lua_gettop(L);
    c->nimages = 0;
    c->u->rest.len = 0;
    rc = omx_json_decode_images_ex(ev->data, ev->data_len, OMX_JSON_TOP_B64, &ops, &err);
    c->u->scratch.len = 0;
    if (rc == OMX_JSON_ENOMEM)
        luaL_error(L, "not enough memory");
    if (rc != OMX_JSON_OK) {
        /* not JSON (e.g. [DONE]), or a bad image: the data as it is */
        lua_pop(L, 1);
        lua_newtable(L);
        if (rc == OMX_JSON_EBASE64) {
            lua_pushstring(L, err.message);
            lua_setfield(L, -3, "image_error");
        }
    }
    lua_setfield(L, -2, "images");
    if (rc == OMX_JSON_OK && c->nimages > 0)
        lua_pushlstring(L, c->u->rest.data, c->u->rest.len);
    else
        lua_pushlstring(L, ev->data, ev->data_len);
    lua_setfield(L, -2, "data");
}

static int feed_event(void *ud, const omx_sse_event *ev)
{
    feed_ctx *c = (feed_ctx *)ud;
    lua_State *L = c->L;
    lua_createtable(L, 0, 6);
    lua_pushlstring(L, ev->type, ev->type_len);
    lua_setfield(L, -2, "event");
    if (c->u->images) {
        set_images(c, ev);
    } else {
        lua_pushlstring(L, ev->data, ev->data_len);
        lua_setfield(L, -2, "data");
    }
    if (ev->id != NULL) {
        lua_pushlstring(L, ev->id, ev->id_len);
        lua_setfield(L, -2, "id");
    }
    if (ev->retry >= 0) {
        lua_pushinteger(L, (lua_Integer)ev->retry);
        lua_setfield(L, -2, "retry");
    }
    lua_rawseti(L, c->events, ++c->count);
    return 0;
}

/* parser:feed(chunk) -> events | nil, message, "too_large", events: the
 * events the chunk completed before the one over the limit (the parser
 * then answers the same to every feed). After an error raised in a feed
 * (out of memory), every later feed raises until parser:reset(). */
static int parser_feed(lua_State *L)
{
    sse_ud *u = check_parser(L);
    size_t n;
    const char *s = omx_checkbytes(L, 2, &n);
    feed_ctx c;
    int rc;
    /* An error raised anywhere inside an earlier feed (a finalizer, out of
     * memory) leaves the parser dead until reset, even one raised before the
     * chunk was touched: one rule a caller can rely on. */
    if (u->in_feed)
        return luaL_error(L, OMX_SSE_PARSER ": %s; reset it", omx_sse_strerror(OMX_SSE_EABANDONED));
    u->in_feed = 1;
    lua_settop(L, 2);
    lua_newtable(L);
    c.L = L;
    c.u = u;
    c.events = 3;
    c.count = 0;
    c.images = 0;
    c.nimages = 0;
    rc = omx_sse_feed(u->p, s, n, feed_event, &c);
    u->in_feed = 0;
    switch (rc) {
    case OMX_SSE_OK:
        return 1;
    case OMX_SSE_ETOOBIG:
        lua_pushnil(L);
        {
            char msg[80];
            snprintf(msg, sizeof msg, "an event of the stream is larger than %lu bytes",
                     (unsigned long)u->max);
            lua_pushstring(L, msg);
        }
        lua_pushliteral(L, "too_large");
        lua_pushvalue(L, c.events);
        return 4;
    case OMX_SSE_EFINISHED:
        return luaL_error(L, OMX_SSE_PARSER ": feed after finish");
    case OMX_SSE_EABANDONED:
        return luaL_error(L, OMX_SSE_PARSER ": %s; reset it", omx_sse_strerror(rc));
    default:
        return luaL_error(L, "%s", omx_sse_strerror(rc));
    }
}

/* parser:finish() -> events (always empty: an event without its blank line
 * is discarded), cut (true when such an event was discarded) */
static int parser_finish(lua_State *L)
{
    sse_ud *u = check_parser(L);
    int cut = omx_sse_finish(u->p);
    omx_buf_free(&u->scratch);
    omx_buf_free(&u->rest);
    lua_newtable(L);
    lua_pushboolean(L, cut);
    return 2;
}

/* parser:reset() -> the parser, as new (same options): the way back from
 * an error */
static int parser_reset(lua_State *L)
{
    sse_ud *u = check_parser(L);
    omx_sse_parser *p = omx_sse_new(u->max);
    if (p == NULL)
        return luaL_error(L, "not enough memory");
    omx_sse_free(u->p);
    u->p = p;
    u->in_feed = 0;
    omx_buf_free(&u->scratch);
    omx_buf_free(&u->rest);
    lua_settop(L, 1);
    return 1;
}

static int parser_heartbeats(lua_State *L)
{
    lua_pushinteger(L, (lua_Integer)omx_sse_comments(check_parser(L)->p));
    return 1;
}

/* parser:retry() -> the last valid retry value, or nil */
static int parser_retry(lua_State *L)
{
    long long r = omx_sse_retry(check_parser(L)->p);
    if (r < 0)
        lua_pushnil(L);
    else
        lua_pushinteger(L, (lua_Integer)r);
    return 1;
}

static int parser_tostring(lua_State *L)
{
    sse_ud *u = (sse_ud *)luaL_checkudata(L, 1, OMX_SSE_PARSER);
    lua_pushfstring(L, OMX_SSE_PARSER " (%s)", u->p ? "open" : "closed");
    return 1;
}

void omx_sse_open(lua_State *L)
{
    static const luaL_Reg methods[] = {
        {"feed", parser_feed},
        {"finish", parser_finish},
        {"heartbeats", parser_heartbeats},
        {"retry", parser_retry},
        {"reset", parser_reset},
        {"close", parser_close},
        {"__gc", parser_close},
        {"__close", parser_close},
        {"__tostring", parser_tostring},
        {NULL, NULL}
    };
    omx_newclass(L, OMX_SSE_PARSER, methods);
    lua_pop(L, 1);
    lua_pushcfunction(L, l_sse_parser);
    lua_setfield(L, -2, "sse_parser");
}
