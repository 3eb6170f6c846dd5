/* event_epoll.c — the event backend of event.h on Linux: one epoll
 * descriptor holding curl's sockets and a timerfd for the deadline. */
#include "event.h"

#if defined(OMX_BACKEND_EPOLL)
#include <errno.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <stdint.h>
#include <sys/epoll.h>
#include <sys/timerfd.h>

void omx_events_init(omx_events *ev)
{
    ev->epfd = ev->tfd = -1;
}

int omx_events_open(omx_events *ev, CURLM *cm)
{
    struct epoll_event e;
    (void)cm;
    ev->tfd = -1;
    ev->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (ev->epfd < 0)
        return -1;
    ev->tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    if (ev->epfd < 0 || ev->tfd < 0)
        return -1;
    memset(&e, 0, sizeof e);
    e.events = EPOLLIN;
    e.data.fd = ev->tfd;
    return epoll_ctl(ev->epfd, EPOLL_CTL_ADD, ev->tfd, &e) != 0 ? -1 : 0;
}

void omx_events_close(omx_events *ev)
{
    if (ev->epfd >= 0) close(ev->epfd);
    if (ev->tfd >= 0) close(ev->tfd);
    ev->epfd = ev->tfd = -1;
}

int omx_events_fd(const omx_events *ev, const char **why)
{
    *why = NULL;
    return ev->epfd;
}

int omx_events_watch(omx_events *ev, curl_socket_t fd, int what)
{
    struct epoll_event e;
    if (what == 0) {
        epoll_ctl(ev->epfd, EPOLL_CTL_DEL, fd, NULL);
        return 0;
    }
    memset(&e, 0, sizeof e);
    e.events = (what & OMX_EV_IN ? EPOLLIN : 0u) | (what & OMX_EV_OUT ? EPOLLOUT : 0u);
    e.data.fd = fd;
    if (epoll_ctl(ev->epfd, EPOLL_CTL_MOD, fd, &e) != 0 && errno == ENOENT)
        epoll_ctl(ev->epfd, EPOLL_CTL_ADD, fd, &e);
    return 0;
}

void omx_events_arm(omx_events *ev, double d)
{
    struct itimerspec its;
    memset(&its, 0, sizeof its);
    if (d != OMX_NO_TIME) {
        if (d <= 0)
            d = 1e-9;
        its.it_value.tv_sec = (time_t)d;
        its.it_value.tv_nsec = (long)((d - (double)its.it_value.tv_sec) * 1e9);
        if (its.it_value.tv_sec == 0 && its.it_value.tv_nsec == 0)
            its.it_value.tv_nsec = 1;
    }
    timerfd_settime(ev->tfd, TFD_TIMER_ABSTIME, &its, NULL);
}

int omx_events_wait(omx_events *ev, int timeout_ms, omx_ready_fn ready, void *ud)
{
    struct epoll_event evs[32];
    int n = epoll_wait(ev->epfd, evs, 32, timeout_ms), i;
    for (i = 0; i < n; i++) {
        if (evs[i].data.fd == ev->tfd) {
            uint64_t expirations;
            ssize_t r = read(ev->tfd, &expirations, sizeof expirations);
            (void)r;
            continue;
        }
        ready(ud, evs[i].data.fd,
              (evs[i].events & EPOLLIN ? OMX_EV_IN : 0) |
              (evs[i].events & EPOLLOUT ? OMX_EV_OUT : 0) |
              (evs[i].events & (EPOLLERR | EPOLLHUP) ? OMX_EV_ERR : 0));
    }
    return n;
}

#else
typedef int omx_event_epoll_not_chosen; /* ISO C: no empty file */
#endif
