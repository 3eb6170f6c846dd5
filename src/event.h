/* event.h — the operating system's side of the transport's event loop:
 * a set of watched sockets plus one timer, gathered behind one descriptor
 * that a caller's own loop (vim.uv, cqueues, select) can wait on, and the
 * monotonic clock. One backend per platform implements it (event_epoll.c:
 * epoll + timerfd on Linux); nothing else in the core calls the OS's
 * polling API. */
#ifndef OMIXA_EVENT_H
#define OMIXA_EVENT_H

#define OMX_NO_TIME 0.0   /* "no deadline" for omx_events_arm */

/* What a socket is watched for, and what it is ready for. */
#define OMX_EV_IN 1
#define OMX_EV_OUT 2
#define OMX_EV_ERR 4

typedef struct omx_events {
    int epfd, tfd;
} omx_events;

/* Open EV: 0, or -1 with errno set (EV then holds only what needs closing). */
int omx_events_open(omx_events *ev);
/* Close what EV holds; idempotent. */
void omx_events_close(omx_events *ev);
/* The descriptor that becomes readable when omx_events_wait has work. */
int omx_events_fd(const omx_events *ev);
/* Watch FD for WHAT (OMX_EV_IN | OMX_EV_OUT), or stop watching it (0). */
void omx_events_watch(omx_events *ev, int fd, int what);
/* Make the descriptor readable at monotonic time AT (omx_now's clock);
 * OMX_NO_TIME disarms. A time already past fires at once. */
void omx_events_arm(omx_events *ev, double at);
/* Wait up to TIMEOUT_MS (0: not at all) and call READY for each watched
 * socket that is ready (WHAT: OMX_EV_* bits). Returns the number of events
 * seen, or -1 on an error of the wait itself. */
typedef void (*omx_ready_fn)(void *ud, int fd, int what);
int omx_events_wait(omx_events *ev, int timeout_ms, omx_ready_fn ready, void *ud);

/* Monotonic seconds; sleep for SECONDS (<= 0: not at all). */
double omx_now(void);
void omx_sleep(double seconds);

#endif
