/* event_portable.c — the event backend of event.h over libcurl alone:
 * curl_multi_poll (libcurl >= 7.66) waits on the multi's own sockets plus
 * the ones curl asked us to watch (passed as extra descriptors, so their
 * readiness comes back to drive curl_multi_socket_action as on the other
 * backends), bounded by the armed deadline. It builds wherever libcurl
 * does, Windows included, and has no descriptor for a caller's loop: such
 * a caller polls from a timer (client:poll_interval()). */
#include "event.h"

#if defined(OMX_BACKEND_PORTABLE)
#include <stdlib.h>
#include <string.h>

#define READY_MAX 64 /* ready sockets handled per wait; the rest next time */

void omx_events_init(omx_events *ev)
{
    memset(ev, 0, sizeof *ev);
    ev->at = OMX_NO_TIME;
}

int omx_events_open(omx_events *ev, CURLM *cm)
{
    omx_events_init(ev);
    ev->cm = cm;
    return 0;
}

void omx_events_close(omx_events *ev)
{
    free(ev->socks);
    omx_events_init(ev);
}

int omx_events_fd(const omx_events *ev, const char **why)
{
    (void)ev;
    *why = "the portable event backend has no descriptor to wait on: "
           "call poll() from a timer every client:poll_interval() seconds";
    return -1;
}

int omx_events_watch(omx_events *ev, curl_socket_t fd, int what)
{
    int i;
    for (i = 0; i < ev->nsocks && ev->socks[i].fd != fd; i++)
        ;
    if (what == 0) {
        if (i < ev->nsocks)
            ev->socks[i] = ev->socks[--ev->nsocks];
        return 0;
    }
    if (i == ev->nsocks) {
        if (ev->nsocks == ev->cap) {
            int cap = ev->cap ? 2 * ev->cap : 8;
            omx_socket *s = (omx_socket *)realloc(ev->socks, (size_t)cap * sizeof *s);
            if (s == NULL)
                return -1;
            ev->socks = s;
            ev->cap = cap;
        }
        ev->socks[ev->nsocks++].fd = fd;
    }
    ev->socks[i].what = what;
    return 0;
}

void omx_events_arm(omx_events *ev, double at)
{
    ev->at = at;
}

int omx_events_wait(omx_events *ev, int timeout_ms, omx_ready_fn ready, void *ud)
{
    struct curl_waitfd fds[READY_MAX];
    omx_socket got[READY_MAX];
    int n = ev->nsocks < READY_MAX ? ev->nsocks : READY_MAX, numfds = 0, ngot = 0, i;
    if (timeout_ms < 0) /* for ever, as epoll_wait's -1 (curl refuses a negative wait) */
        timeout_ms = 86400000;
    if (ev->at != OMX_NO_TIME) {
        double left = ev->at - omx_now();
        int ms = left <= 0 ? 0 : left >= 86400.0 ? 86400000 : (int)(left * 1000.0 + 0.999);
        if (ms < timeout_ms)
            timeout_ms = ms;
    }
    for (i = 0; i < n; i++) {
        fds[i].fd = ev->socks[i].fd;
        fds[i].events = (short)((ev->socks[i].what & OMX_EV_IN ? CURL_WAIT_POLLIN : 0) |
                                (ev->socks[i].what & OMX_EV_OUT ? CURL_WAIT_POLLOUT : 0));
        fds[i].revents = 0;
    }
    if (curl_multi_poll(ev->cm, fds, (unsigned)n, timeout_ms, &numfds) != CURLM_OK)
        return -1;
    /* READY may change the watch list (curl's socket callback): copy first.
     * curl reports POLLIN, POLLPRI and POLLOUT only; a socket woken by an
     * error or hang-up alone shows nothing, so when the wait saw activity
     * and no socket says so, each watched one is offered what it waits for
     * (curl takes a socket that is not ready in its stride). */
    for (i = 0; i < n; i++) {
        int what = (fds[i].revents & (CURL_WAIT_POLLIN | CURL_WAIT_POLLPRI) ? OMX_EV_IN : 0) |
                   (fds[i].revents & CURL_WAIT_POLLOUT ? OMX_EV_OUT : 0);
        if (what != 0) {
            got[ngot].fd = fds[i].fd;
            got[ngot++].what = what;
        }
    }
    if (ngot == 0 && numfds > 0)
        for (i = 0; i < n; i++)
            got[ngot++] = ev->socks[i];
    for (i = 0; i < ngot; i++)
        ready(ud, got[i].fd, got[i].what);
    return ngot;
}

#else
typedef int omx_event_portable_not_chosen; /* ISO C: no empty file */
#endif
