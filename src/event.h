/* event.h — the operating system's side of the transport's event loop: a
 * set of watched sockets plus one deadline, and (where the system has one)
 * a single descriptor that a caller's own loop (vim.uv, cqueues, select)
 * can wait on. Nothing else in the core calls an OS polling API. One
 * backend per file, chosen at build time (make BACKEND=...):
 *
 *   OMX_BACKEND_EPOLL     event_epoll.c    epoll + timerfd (Linux: the default)
 *   OMX_BACKEND_KQUEUE    event_kqueue.c   kqueue + EVFILT_TIMER (macOS, BSDs;
 *                                          only when asked: not yet run on one)
 *   OMX_BACKEND_PORTABLE  event_portable.c libcurl's curl_multi_poll: builds
 *                                          wherever libcurl does (Windows
 *                                          included); no pollable descriptor
 *
 * Every backend file is compiled everywhere and is empty unless chosen. */
#ifndef OMIXA_EVENT_H
#define OMIXA_EVENT_H

#include <curl/curl.h>

#include "platform.h" /* omx_now, omx_sleep */

#if !defined(OMX_BACKEND_EPOLL) && !defined(OMX_BACKEND_KQUEUE) && !defined(OMX_BACKEND_PORTABLE)
#if defined(__linux__)
#define OMX_BACKEND_EPOLL
#else
#define OMX_BACKEND_PORTABLE
#endif
#endif

#define OMX_NO_TIME 0.0   /* "no deadline" for omx_events_arm */

/* What a socket is watched for, and what it is ready for. */
#define OMX_EV_IN 1
#define OMX_EV_OUT 2
#define OMX_EV_ERR 4

#if defined(OMX_BACKEND_EPOLL)
#define OMX_BACKEND_NAME "epoll"
typedef struct omx_events {
    int epfd, tfd;
} omx_events;
#elif defined(OMX_BACKEND_KQUEUE)
#define OMX_BACKEND_NAME "kqueue"
typedef struct omx_events {
    int kq;
    int armed;                  /* the EVFILT_TIMER is in the queue */
} omx_events;
#else
#define OMX_BACKEND_NAME "portable"
typedef struct omx_socket {
    curl_socket_t fd;
    int what;
} omx_socket;
typedef struct omx_events {
    CURLM *cm;                  /* borrowed: the multi's own */
    omx_socket *socks;          /* the sockets curl asked to watch */
    int nsocks, cap;
    double at;                  /* the armed deadline, or OMX_NO_TIME */
} omx_events;
#endif

/* Set EV to "nothing open" (safe to close); never fails. */
void omx_events_init(omx_events *ev);
/* Open EV for the multi CM: 0, or -1 with errno set (EV then holds only
 * what omx_events_close releases). */
int omx_events_open(omx_events *ev, CURLM *cm);
/* Close what EV holds; idempotent. */
void omx_events_close(omx_events *ev);
/* The descriptor that becomes readable when omx_events_wait has work, or
 * -1 when the backend has none (then *WHY says so). */
int omx_events_fd(const omx_events *ev, const char **why);
/* Watch socket FD for WHAT (OMX_EV_IN | OMX_EV_OUT), or stop watching it
 * (0; curl may already have closed it). 0, or -1 when out of memory. */
int omx_events_watch(omx_events *ev, curl_socket_t fd, int what);
/* Make the descriptor readable (and omx_events_wait return) at monotonic
 * time AT (omx_now's clock); OMX_NO_TIME disarms. A time already past
 * fires at once. */
void omx_events_arm(omx_events *ev, double at);
/* Wait up to TIMEOUT_MS (0: not at all) and call READY for each watched
 * socket that is ready (WHAT: OMX_EV_* bits). Returns the number of events
 * seen, or -1 on an error of the wait itself. */
typedef void (*omx_ready_fn)(void *ud, curl_socket_t fd, int what);
int omx_events_wait(omx_events *ev, int timeout_ms, omx_ready_fn ready, void *ud);

#endif
