/* transport.h — what the files of the transport share (not a public API):
 *   transport.c    the Lua classes omixa.multi and omixa.transfer, the
 *                  multi's event loop over event.h, and each transfer's end
 *   easy.c         one request's easy handle: options, upload, progress
 *   sink.c         where a response body goes: a buffer, or the image scan
 *   headers.c      the one reader of a response's header block
 * See transport.c for the Lua-facing contract. */
#ifndef OMIXA_TRANSPORT_H
#define OMIXA_TRANSPORT_H

#include <curl/curl.h>
#include <lua.h>

#include "buffer.h"
#include "event.h"

#define EASY_POOL 8            /* idle easy handles kept for reuse */
#define SPARES 4               /* big rooms a client keeps (images per answer) */
#define KEEP_BYTES (64u << 20) /* default cap on the bytes of the rooms kept */
#define KEEP_IDLE 30.0         /* default seconds without use before they go */

enum phase { PH_NONE, PH_CONNECTING, PH_UPLOADING, PH_WAITING, PH_RECEIVING };
extern const char *const omx_phase_names[];

enum abort_reason {
    AB_NONE, AB_CANCEL, AB_CALLBACK_ERROR, AB_TOO_LARGE, AB_IDLE, AB_NOMEM, AB_CLOSED,
    AB_PROTOCOL
};

typedef struct multi multi;
typedef struct scan_sink scan_sink; /* sink.c */

/* The image rooms a multi keeps from one answer to the next (sink.c): at
 * most KEEP bytes in all, given back by the first add or poll after none
 * was taken or returned for IDLE seconds (omx_rooms_trim), and when the
 * multi is closed. */
typedef struct omx_rooms {
    omx_buf spare[SPARES];
    size_t keep;
    double idle, last_used;
} omx_rooms;

enum { SCAN_OFF, SCAN_WANTED, SCAN_ON, SCAN_NOT };

typedef struct transfer {
    multi *m;                   /* NULL once finished or detached */
    CURL *easy;                 /* NULL once finished */
    struct curl_slist *headers;
    struct transfer *prev, *next; /* in m's running list */
    int running, finished;
    int result_lost;            /* out of memory while finishing: result() says so */

    /* Registry references: the request table, the response buffer, the
     * progress function,
     * a slot for a callback's error, the result, itself while running, the
     * request body curl reads. LUA_NOREF when unset. */
    int req_ref, buf_ref, fn_ref, err_ref, res_ref, self_ref, body_ref;
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
    const char *abort_why;      /* a static message for abort, or NULL */
    int scan_mode;              /* SCAN_* */
    scan_sink *scan;            /* SCAN_ON: owned */
    char errbuf[CURL_ERROR_SIZE];
} transfer;

struct multi {
    CURLM *cm;
    CURLSH *share;
    omx_events ev;
    double curl_deadline, wake_at;
    transfer *head;             /* running transfers */
    int nrunning;
    CURL *pool[EASY_POOL];
    int npool;
    lua_State *L;               /* during poll only */
    int trampoline;             /* its stack index during poll */
    omx_rooms rooms;            /* image rooms kept for the next response */
    long pid;                   /* the process that made it (see fork, transport.c) */
};

/* easy.c */
void omx_setup(lua_State *L, multi *m, transfer *t, int req);
int omx_current_phase(transfer *t);
int omx_progress_trampoline(lua_State *L);
int omx_request_sent(transfer *t, CURLcode rc);

/* sink.c */
size_t omx_on_write(char *p, size_t size, size_t n, void *ud);
void omx_scan_result(lua_State *L, transfer *t);
void omx_scan_free(transfer *t);
void omx_rooms_init(omx_rooms *r, size_t keep, double idle);
void omx_rooms_free(omx_rooms *r);
size_t omx_rooms_kept(const omx_rooms *r);
/* Give them back if they have been idle for their time by NOW (at every
 * add and poll: never a wake-up of fd() of its own, which a host with no
 * job left would not expect). */
void omx_rooms_trim(omx_rooms *r, double now);

/* headers.c */
size_t omx_on_header(char *p, size_t size, size_t n, void *ud);
void omx_push_headers(lua_State *L, const omx_buf *h);

#endif
