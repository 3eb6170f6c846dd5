/* sink.c — where a response body goes as curl hands it over: the
 * transfer's buffer, or (scan_images, a 2xx JSON answer) the image scan of
 * json.h, which decodes the base64 images straight into rooms of their own
 * and keeps only an excerpt of the text. */
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>
#include <lualib.h> /* LUA_JITLIBNAME on LuaJIT */

#include "headers.h"
#include "json.h"
#include "platform.h"
#include "transport.h"

#define SCAN_EXCERPT 2048      /* body bytes kept when scanning */
#define BIG_ROOM (1u << 20)      /* image rooms this big are pages of their own */
#define TRUSTED_ROOM (8u << 20)  /* a declared length reserved at once, at most */
#define GC_IMAGE (1u << 20)      /* answers with an image this big: see collect_first */

/* A response body scanned for images as it arrives. */
struct scan_sink {
    omx_json_scan js;
    omx_json_images_ops ops;
    omx_buf cur;                /* the image being decoded */
    omx_buf *imgs;              /* the finished ones */
    size_t nimgs, cap;
    omx_buf rest;
    size_t hint, fed;           /* Content-Length (0: unknown), bytes fed */
    omx_rooms *rooms;           /* the multi's spare rooms (see room_free) */
};

/* ---- the image scan of a response body ---- */

/* Image rooms: small ones from malloc; big ones are pages of their own
 * (huge pages where the kernel allows: a few faults instead of thousands).
 * The multi keeps the biggest ones of its last responses for the next
 * (omx_rooms: up to SPARES rooms, at most rooms->keep bytes in all), so a
 * client receiving big images in a row decodes into pages that are already
 * there: no fault, no zeroing, no mmap per request. They are given back
 * by the client's first call (multi add or poll) after it has used none
 * for rooms->idle seconds, and by client:close(). (MADV_FREE on the
 * spare was measured: it makes the next use slower than fresh pages.) */
static void unmap_room(omx_buf *b)
{
    if (b->cap >= BIG_ROOM)
        omx_pages_free(b->data, b->cap);
    else
        free(b->data);
    omx_buf_init(b);
}

void omx_rooms_init(omx_rooms *r, size_t keep, double idle)
{
    int i;
    for (i = 0; i < SPARES; i++)
        omx_buf_init(&r->spare[i]);
    r->keep = keep;
    r->idle = idle;
    r->last_used = 0;
}

void omx_rooms_free(omx_rooms *r)
{
    int i;
    for (i = 0; i < SPARES; i++)
        unmap_room(&r->spare[i]);
}

size_t omx_rooms_kept(const omx_rooms *r)
{
    size_t n = 0;
    int i;
    for (i = 0; i < SPARES; i++)
        n += r->spare[i].cap;
    return n;
}

void omx_rooms_trim(omx_rooms *r, double now)
{
    if (omx_rooms_kept(r) > 0 && now - r->last_used >= r->idle)
        omx_rooms_free(r);
}

/* The smallest slot of R other than BUT (with FULL, the smallest that
 * holds a room; else an empty one first), or NULL. */
static omx_buf *smallest_spare(omx_rooms *r, const omx_buf *but, int full)
{
    omx_buf *slot = NULL;
    int i;
    for (i = 0; i < SPARES; i++) {
        omx_buf *s = &r->spare[i];
        if (s != but && (!full || s->cap > 0) && (slot == NULL || s->cap < slot->cap))
            slot = s;
    }
    return slot;
}

/* Done with room B: kept in a free slot of R (or instead of a smaller
 * one) when it fits the cap, the smallest others given back to stay
 * within it; else given back. */
static void room_free(omx_rooms *r, omx_buf *b)
{
    if (r != NULL && b->cap >= BIG_ROOM && b->cap <= r->keep) {
        omx_buf *slot = smallest_spare(r, NULL, 0);
        if (slot->cap < b->cap) {
            unmap_room(slot);
            *slot = *b;
            slot->len = 0;
            omx_buf_init(b);
            while (omx_rooms_kept(r) > r->keep)
                unmap_room(smallest_spare(r, slot, 1)); /* never NULL: slot->cap <= keep */
            r->last_used = omx_now();
            return;
        }
    }
    unmap_room(b);
}

/* The smallest room of R that holds WANT bytes, or NULL. */
static omx_buf *fitting_spare(omx_rooms *r, size_t want)
{
    omx_buf *best = NULL;
    int i;
    if (r == NULL)
        return NULL;
    for (i = 0; i < SPARES; i++)
        if (r->spare[i].cap >= want && (best == NULL || r->spare[i].cap < best->cap))
            best = &r->spare[i];
    if (best != NULL)
        r->last_used = omx_now();
    return best;
}

static int room_grow(omx_rooms *rooms, omx_buf *b, size_t have, size_t want)
{
    omx_buf *spare;
    char *d;
    if (want < BIG_ROOM) {
        if ((d = (char *)realloc(b->data, want)) == NULL)
            return -1;
    } else if ((spare = fitting_spare(rooms, want)) != NULL) {
        d = spare->data;
        want = spare->cap;
        omx_buf_init(spare);
        if (have > 0)
            memcpy(d, b->data, have);
        unmap_room(b);
    } else {
        if ((d = (char *)omx_pages_alloc(&want)) == NULL) /* mmap, huge pages where allowed */
            return -1;
        if (have > 0)
            memcpy(d, b->data, have);
        unmap_room(b);
    }
    b->data = d;
    b->cap = want;
    return 0;
}

/* The response's Content-Length when it is known, else 0: how much room
 * its body may need. A length above max_response_bytes never gets here (the
 * header reader refuses it, headers.c), but below a huge limit it may still
 * lie: see trusted_room. */
static size_t length_hint(transfer *t)
{
    const char *v;
    size_t vl;
    double cl;
    if (omx_headers_get(t->head.data, t->head.len, "content-length", &v, &vl) != 1)
        return 0;
    cl = omx_headers_length(v, vl);
    return cl > 0 && cl < (double)((size_t)-1 / 2) ? (size_t)cl : 0;
}

/* How much of a declared length HINT to reserve ahead of the data once
 * HAVE bytes have arrived: all of it up to TRUSTED_ROOM, else at most 8
 * times what came, so a lying header costs nothing until the data does. */
static size_t trusted_room(size_t hint, size_t have)
{
    size_t limit = have > TRUSTED_ROOM / 8 ? (have > (size_t)-1 / 8 ? (size_t)-1 : have * 8) : TRUSTED_ROOM;
    return hint < limit ? hint : limit;
}

/* Room for image INDEX: the Content-Length still to come tells how big it
 * can be (as far as trusted_room trusts it), so for an image of up to about
 * 6 MiB the first room is usually the last; bigger ones grow by doubling. */
static unsigned char *sink_room(void *ud, size_t index, size_t have, size_t need)
{
    scan_sink *k = (scan_sink *)ud;
    omx_buf *b = &k->cur;
    (void)index;
    if (b->cap < need) {
        size_t want = need, guess = 0;
        if (k->hint > k->fed)
            guess = trusted_room(k->hint - k->fed, k->fed) / 4 * 3 + 8; /* all that is still to come */
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
        if (room_grow(k->rooms, b, have, want) != 0)
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

void omx_scan_free(transfer *t)
{
    scan_sink *k = t->scan;
    size_t i;
    if (k == NULL)
        return;
    for (i = 0; i < k->nimgs; i++)
        room_free(k->rooms, &k->imgs[i]);
    free(k->imgs);
    room_free(k->rooms, &k->cur);
    omx_buf_free(&k->rest);
    free(k);
    t->scan = NULL;
}

/* At the first body byte: scan this body? Only a 2xx that is neither an
 * event stream nor an image. 0, or -1 when out of memory. */
static int scan_decide(transfer *t)
{
    int status = omx_headers_status(t->head.data, t->head.len);
    const char *ctype;
    size_t cl;
    scan_sink *k;
    t->scan_mode = SCAN_NOT;
    if (status < 200 || status > 299)
        return 0;
    if (omx_headers_get(t->head.data, t->head.len, "content-type", &ctype, &cl) != 0
        && (omx_media_is(ctype, cl, "text/event-stream") || omx_media_is(ctype, cl, "image/")))
        return 0;
    if ((k = (scan_sink *)calloc(1, sizeof *k)) == NULL)
        return -1;
    k->ops.ud = k;
    k->ops.image_room = sink_room;
    k->ops.image = sink_image;
    k->ops.rest = sink_rest;
    omx_json_scan_init(&k->js, 0, &k->ops);
    k->hint = length_hint(t);
    k->rooms = t->m != NULL ? &t->m->rooms : NULL;
    t->scan = k;
    t->scan_mode = SCAN_ON;
    return 0;
}

size_t omx_on_write(char *p, size_t size, size_t n, void *ud)
{
    transfer *t = (transfer *)ud;
    size_t len = size * n;
    omx_buf *b = t->body;
    t->last_rx_time = omx_now();
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
        /* Pre-size from Content-Length, as far as it is trusted. */
        size_t cl = trusted_room(length_hint(t), len);
        if (cl > len && omx_buf_reserve_exact(b, cl) != 0) {
            t->abort = AB_NOMEM;
            return 0;
        }
    }
    if (omx_buf_append(b, p, len) != 0) {
        t->abort = AB_NOMEM;
        return 0;
    }
    return len;
}

/* Before the strings of an answer whose biggest image has GC_IMAGE bytes
 * or more and more than half of its image bytes, on PUC Lua: a full
 * collection, unless the program stopped the collector (Lua 5.2+ can
 * tell). A Lua string is always a copy made in memory from the host's
 * allocator; images the program has already dropped are often still
 * uncollected then (the collector paces itself by allocation, and one
 * 20 MB string is one object), so the new string would be made in fresh
 * pages the kernel faults in and zeroes one by one while the dead images
 * hold theirs (measured: Lua 5.4, L, a third of the calls 3x slower, and
 * twice the peak RSS). Collecting first lets malloc hand the new string
 * the dead images' memory. It costs one full cycle, proportional to the
 * number of live objects (about 17 ms for 85 MiB of small tables; a
 * program holding few objects pays well under a millisecond), about what
 * the faults of 20 MB cost. Not for answers of several images of about
 * the same size: a collection that frees several such dead images at once
 * frees more than twice the biggest block, glibc's trim threshold (it
 * follows the biggest block freed), so glibc gives the pages back to the
 * kernel and every new string faults again (measured: Lua 5.4, M4, 4
 * images of 1.5 MiB: 1,639 faults per request instead of about 440). */
static void collect_first(lua_State *L, const scan_sink *k)
{
#ifndef LUA_JITLIBNAME /* LuaJIT: its allocator keeps big blocks; collecting first makes it worse */
    size_t i, big = 0, total = 0;
    for (i = 0; i < k->nimgs; i++) {
        total += k->imgs[i].len;
        if (k->imgs[i].len > big)
            big = k->imgs[i].len;
    }
    if (big < GC_IMAGE || big <= total - big)
        return;
#if LUA_VERSION_NUM >= 502
    if (!lua_gc(L, LUA_GCISRUNNING, 0))
        return;
#endif
    lua_gc(L, LUA_GCCOLLECT, 0);
#else
    (void)L; (void)k;
#endif
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
    collect_first(L, k);
    lua_createtable(L, (int)k->nimgs, 0);
    for (i = 0; i < k->nimgs; i++) {
        omx_buf *b = &k->imgs[i];
        lua_pushlstring(L, b->data ? b->data : "", b->len);
        lua_rawseti(L, -2, (int)i + 1);
        room_free(k->rooms, b); /* now, not at the end: the peak stays one image */
    }
    lua_setfield(L, 1, "images");
    lua_pushlstring(L, k->rest.data ? k->rest.data : "", k->rest.len);
    lua_setfield(L, 1, "rest");
    return 0;
}

/* Under lua_pcall: out of memory while making the strings is a failed
 * transfer, never a half-finished one. */
void omx_scan_result(lua_State *L, transfer *t)
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


