/* platform.c — see platform.h. */
#if !defined(_WIN32)
#define _DEFAULT_SOURCE   /* glibc: MAP_ANONYMOUS, MADV_HUGEPAGE */
#define _DARWIN_C_SOURCE  /* macOS: MAP_ANON under _POSIX_C_SOURCE */
#endif
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#if defined(_WIN32)
#include <windows.h>
#else
#include <time.h>
#include <unistd.h>
#include <sys/mman.h>
#if !defined(MAP_ANONYMOUS) && defined(MAP_ANON)
#define MAP_ANONYMOUS MAP_ANON
#endif
#endif

#include <lauxlib.h>

#include "compat.h"
#include "omixa.h"
#include "platform.h"

#if defined(_WIN32)

long omx_pid(void)
{
    return (long)GetCurrentProcessId();
}

double omx_now(void)
{
    static LARGE_INTEGER freq;
    LARGE_INTEGER t;
    if (freq.QuadPart == 0)
        QueryPerformanceFrequency(&freq); /* never fails since Windows XP */
    QueryPerformanceCounter(&t);
    return (double)t.QuadPart / (double)freq.QuadPart;
}

void omx_sleep(double seconds)
{
    if (seconds > 0)
        Sleep(seconds >= 4e6 ? (DWORD)4e9 : (DWORD)(seconds * 1000.0 + 0.999));
}

static size_t page_size(void)
{
    SYSTEM_INFO si;
    GetSystemInfo(&si);
    return si.dwPageSize > 0 ? (size_t)si.dwPageSize : 4096;
}

#else

long omx_pid(void)
{
    return (long)getpid();
}

double omx_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

void omx_sleep(double seconds)
{
    struct timespec ts;
    if (!(seconds > 0))
        return;
    if (seconds > 1e9)
        seconds = 1e9;
    ts.tv_sec = (time_t)seconds;
    ts.tv_nsec = (long)((seconds - (double)ts.tv_sec) * 1e9);
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

static size_t page_size(void)
{
    long page = sysconf(_SC_PAGESIZE);
    return page > 0 ? (size_t)page : 4096;
}

#endif

void *omx_pages_alloc(size_t *size)
{
    size_t ps = page_size(), want = *size;
    void *p;
    if (want > (size_t)-1 - ps)
        return NULL;
    want = (want + ps - 1) / ps * ps;
#if defined(_WIN32)
    p = VirtualAlloc(NULL, want, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE);
#elif defined(MAP_ANONYMOUS)
    p = mmap(NULL, want, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        p = NULL;
#ifdef MADV_HUGEPAGE
    else
        (void)madvise(p, want, MADV_HUGEPAGE); /* fewer page faults */
#endif
#else
    p = malloc(want);
#endif
    if (p != NULL)
        *size = want;
    return p;
}

void omx_pages_free(void *p, size_t size)
{
    if (p == NULL)
        return;
#if defined(_WIN32)
    (void)size;
    VirtualFree(p, 0, MEM_RELEASE);
#elif defined(MAP_ANONYMOUS)
    munmap(p, size);
#else
    (void)size;
    free(p);
#endif
}

int omx_replace_file(const char *from, const char *to, char *err, size_t errlen)
{
#if defined(_WIN32)
    DWORD code;
    if (MoveFileExA(from, to, MOVEFILE_REPLACE_EXISTING | MOVEFILE_WRITE_THROUGH))
        return 0;
    code = GetLastError();
    if (FormatMessageA(FORMAT_MESSAGE_FROM_SYSTEM | FORMAT_MESSAGE_IGNORE_INSERTS, NULL, code, 0,
                       err, (DWORD)errlen, NULL) == 0)
        snprintf(err, errlen, "system error %lu", (unsigned long)code);
    else
        err[strcspn(err, "\r\n")] = '\0';
    return -1;
#else
    if (rename(from, to) == 0)
        return 0;
    snprintf(err, errlen, "%s", strerror(errno));
    return -1;
#endif
}

/* core.replace_file(from, to) -> true | nil, "from: reason" */
static int l_replace_file(lua_State *L)
{
    const char *from = luaL_checkstring(L, 1), *to = luaL_checkstring(L, 2);
    char err[256];
    if (omx_replace_file(from, to, err, sizeof err) == 0) {
        lua_pushboolean(L, 1);
        return 1;
    }
    lua_pushnil(L);
    lua_pushfstring(L, "%s: %s", from, err);
    return 2;
}

void omx_platform_open(lua_State *L)
{
    static const luaL_Reg functions[] = {
        {"replace_file", l_replace_file},
        {NULL, NULL}
    };
    omx_setfuncs(L, functions, 0);
}
