/* event_kqueue.c — the event backend of event.h on macOS and the BSDs: one
 * kqueue holding curl's sockets (EVFILT_READ / EVFILT_WRITE) and a one-shot
 * EVFILT_TIMER for the deadline; the kqueue descriptor is itself pollable
 * (readable while events are pending), so it is client:fd().
 *
 * Built only with make BACKEND=kqueue (-DOMX_BACKEND_KQUEUE): it has been
 * reviewed against kqueue(2) but never run on a Mac or a BSD, so those
 * systems build the portable backend by default until it has been.
 *
 * kqueue(2) points this relies on:
 * - Each (ident, filter) pair is one knote: EV_ADD adds it or modifies the
 *   existing one (so re-adding the timer re-arms it with the new period);
 *   EV_DELETE removes it and fails with ENOENT when there is none.
 * - Changes are applied one per kevent() call with no eventlist: with
 *   nevents = 0, an error in a changelist entry makes kevent() return -1
 *   and leaves the entries after it unapplied, so batching a delete that
 *   may fail (ENOENT) with an add would lose the add. Per-change calls also
 *   never drain pending events (EV_RECEIPT is not needed).
 * - Closing a descriptor removes its knotes: curl may close a socket before
 *   or after telling us CURL_POLL_REMOVE, so EV_DELETE may fail with ENOENT
 *   or EBADF; both are ignored.
 * - EVFILT_TIMER's data is a period in milliseconds when no NOTE_*SECONDS
 *   unit flag is given (the only unit every BSD and macOS share); it is
 *   relative, so the absolute deadline is turned into "from now", rounded
 *   up, at least 1 ms. EV_ONESHOT removes the knote once it fires. The
 *   timer's ident lives in EVFILT_TIMER's own namespace (not a descriptor).
 * - EV_ERROR appears in the eventlist only for changelist errors, and we
 *   pass no changelist when waiting: such entries are skipped regardless.
 * - EV_EOF on a socket filter means the peer closed (read) or the socket
 *   cannot be written; fflags then holds the socket error, if any: that
 *   is reported as OMX_EV_ERR, a plain EOF as readiness (curl reads the 0).
 * - The queue is not inherited by fork(2): the Lua layer refuses a
 *   client's use in a child (API.md), and closing there may fail (EBADF),
 *   which is ignored. */
#include "event.h"

#if defined(OMX_BACKEND_KQUEUE)
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>
#include <sys/types.h>
#include <sys/event.h>
#include <sys/time.h>

#define TIMER_IDENT 1 /* EVFILT_TIMER's own ident space */

static void change(int kq, uintptr_t ident, short filter, unsigned short flags, intptr_t data)
{
    struct kevent k;
    EV_SET(&k, ident, filter, flags, 0, data, NULL);
    (void)kevent(kq, &k, 1, NULL, 0, NULL); /* ENOENT / EBADF on delete: see above */
}

void omx_events_init(omx_events *ev)
{
    ev->kq = -1;
    ev->armed = 0;
}

int omx_events_open(omx_events *ev, CURLM *cm)
{
    (void)cm;
    omx_events_init(ev);
    ev->kq = kqueue();
    if (ev->kq < 0)
        return -1;
    (void)fcntl(ev->kq, F_SETFD, FD_CLOEXEC);
    return 0;
}

void omx_events_close(omx_events *ev)
{
    if (ev->kq >= 0)
        close(ev->kq);
    omx_events_init(ev);
}

int omx_events_fd(const omx_events *ev, const char **why)
{
    *why = NULL;
    return ev->kq;
}

int omx_events_watch(omx_events *ev, curl_socket_t fd, int what)
{
    change(ev->kq, (uintptr_t)fd, EVFILT_READ, what & OMX_EV_IN ? EV_ADD | EV_ENABLE : EV_DELETE, 0);
    change(ev->kq, (uintptr_t)fd, EVFILT_WRITE, what & OMX_EV_OUT ? EV_ADD | EV_ENABLE : EV_DELETE, 0);
    return 0;
}

void omx_events_arm(omx_events *ev, double at)
{
    double left;
    intptr_t ms;
    if (at == OMX_NO_TIME) {
        if (ev->armed)
            change(ev->kq, TIMER_IDENT, EVFILT_TIMER, EV_DELETE, 0);
        ev->armed = 0;
        return;
    }
    left = at - omx_now();
    ms = left <= 0.001 ? 1 : left >= (double)INT_MAX / 1000.0 ? (intptr_t)INT_MAX
                               : (intptr_t)(left * 1000.0 + 0.999);
    change(ev->kq, TIMER_IDENT, EVFILT_TIMER, EV_ADD | EV_ENABLE | EV_ONESHOT, ms);
    ev->armed = 1;
}

int omx_events_wait(omx_events *ev, int timeout_ms, omx_ready_fn ready, void *ud)
{
    struct kevent evs[32];
    struct timespec ts;
    int n, i;
    ts.tv_sec = timeout_ms / 1000;
    ts.tv_nsec = (long)(timeout_ms % 1000) * 1000000L;
    /* a NULL timeout waits for ever (as epoll_wait's -1); EINTR: -1, and
     * the caller's loop comes back */
    n = kevent(ev->kq, NULL, 0, evs, 32, timeout_ms < 0 ? NULL : &ts);
    for (i = 0; i < n; i++) {
        int what;
        if (evs[i].flags & EV_ERROR)
            continue;
        if (evs[i].filter == EVFILT_TIMER) {
            ev->armed = 0; /* EV_ONESHOT: gone */
            continue;
        }
        what = evs[i].filter == EVFILT_READ ? OMX_EV_IN : evs[i].filter == EVFILT_WRITE ? OMX_EV_OUT : 0;
        if ((evs[i].flags & EV_EOF) && evs[i].fflags != 0)
            what |= OMX_EV_ERR;
        if (what != 0)
            ready(ud, (curl_socket_t)evs[i].ident, what);
    }
    return n;
}

#else
typedef int omx_event_kqueue_not_chosen; /* ISO C: no empty file */
#endif
