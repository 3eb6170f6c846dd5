/* sse.h — an incremental parser for server-sent events (the WHATWG HTML
 * "event stream" rules): bytes go in as they arrive, in chunks split
 * anywhere, and each complete event comes out through a callback. Linear
 * in the stream's size: every byte is looked at a bounded number of times
 * and copied at most once (into the event's data). No Lua types here: the
 * fuzz target calls it directly; the binding omx_sse_open is in omixa.h.
 *
 * What it follows, per the standard: CR, LF and CRLF line ends (a CR that
 * ends one chunk and an LF that starts the next are one line end); one
 * leading U+FEFF (EF BB BF) skipped; lines starting with ':' are comments
 * (heartbeats), skipped but counted; "name:value" with one optional space
 * after the colon, a line without a colon is a name with an empty value;
 * "data" lines are joined with '\n'; "event" names the event ("message"
 * when absent); "id" sets the last event ID, which persists across events
 * (ignored when the value holds a NUL); "retry" with ASCII digits only sets
 * the reconnection time; other names are ignored; a blank line dispatches
 * the event unless no data line was seen; at the end of the stream an event
 * without its blank line is discarded. Bytes are passed through as they are
 * (no UTF-8 decoding or replacement). */
#ifndef OMIXA_SSE_H
#define OMIXA_SSE_H

#include <stddef.h>

typedef struct omx_sse_parser omx_sse_parser;

/* One event. The pointers are valid only during the callback. */
typedef struct omx_sse_event {
    const char *type;   /* the event field, or "message" */
    size_t type_len;
    const char *data;   /* the data lines joined with '\n' (no final '\n') */
    size_t data_len;
    const char *id;     /* the last event ID; NULL when it is empty */
    size_t id_len;
    long long retry;    /* a valid retry field of this event, else -1 */
} omx_sse_event;

/* Called for each event; return 0 to go on, nonzero to stop the parser
 * (omx_sse_feed then returns OMX_SSE_ESTOPPED, now and after). The callback
 * may also longjmp (raise a Lua error) out of omx_sse_feed: the parser holds
 * nothing on the C stack, and notices at the next call that the last one
 * never returned: from then on omx_sse_feed returns OMX_SSE_EABANDONED (the
 * event being delivered was never cleared, so going on would merge it into
 * the next). Freeing it is always fine. */
typedef int (*omx_sse_event_fn)(void *ud, const omx_sse_event *ev);

enum {
    OMX_SSE_OK = 0,
    OMX_SSE_ETOOBIG,    /* one event would hold more than max_bytes */
    OMX_SSE_ENOMEM,     /* out of memory */
    OMX_SSE_ESTOPPED,   /* the callback asked to stop */
    OMX_SSE_EFINISHED,  /* fed after omx_sse_finish */
    OMX_SSE_EABANDONED  /* an earlier omx_sse_feed was left by a longjmp */
};

/* A parser holding at most MAX_BYTES bytes of one event (data, event name
 * and id together; 0: no limit). Comment lines and unknown fields are never
 * held, so their length is not limited. NULL when out of memory. */
omx_sse_parser *omx_sse_new(size_t max_bytes);

/* Free P and everything it holds (NULL is fine). */
void omx_sse_free(omx_sse_parser *p);

/* Parse the N bytes at CHUNK, calling FN(UD, event) for each event they
 * complete. Returns OMX_SSE_OK or an error; errors are sticky (every later
 * call returns the same), and events completed before it in this chunk have
 * already been delivered. */
int omx_sse_feed(omx_sse_parser *p, const char *chunk, size_t n,
                 omx_sse_event_fn fn, void *ud);

/* The end of the stream: discards what is pending and frees the buffers.
 * Returns 1 when that was part of an event (a data line seen since the last
 * blank line, or a cut line other than a comment), else 0. Later feeds
 * return the sticky error if there was one, else OMX_SSE_EFINISHED; calling
 * it again returns 0. */
int omx_sse_finish(omx_sse_parser *p);

/* Comment lines (heartbeats) seen so far. */
size_t omx_sse_comments(const omx_sse_parser *p);

/* The reconnection time of the last valid retry field, else -1. */
long long omx_sse_retry(const omx_sse_parser *p);

/* A fixed English message for an OMX_SSE_* code. */
const char *omx_sse_strerror(int code);

#endif
