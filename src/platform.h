/* platform.h — the few calls that differ between POSIX and Windows, in one
 * place: every other file of the core (but the event backends) is plain C99
 * over Lua, libcurl and libcrypto.
 *
 *   omx_pid()                 this process's id (getpid, GetCurrentProcessId): a
 *                             multi tells a fork's child from its parent by it
 *   omx_now()                 monotonic seconds (clock_gettime(CLOCK_MONOTONIC),
 *                             QueryPerformanceCounter on Windows)
 *   omx_sleep(seconds)        nanosleep, resumed after a signal (Sleep on Windows)
 *   omx_pages_alloc(&size)    pages of their own for a big buffer: mmap where the
 *                             system has anonymous mappings, VirtualAlloc on
 *                             Windows, else malloc; SIZE is rounded up to whole
 *                             pages and written back; NULL when out of memory
 *   omx_pages_free(p, size)   gives them back (SIZE as written back)
 *   omx_replace_file(from, to, err, errlen)
 *                             renames FROM over TO atomically: rename(2) on POSIX,
 *                             MoveFileEx(MOVEFILE_REPLACE_EXISTING) on Windows,
 *                             where rename() refuses an existing TO; 0 on success,
 *                             else -1 and the system's reason in ERR
 *
 * Lua: core.now() -> seconds, core.sleep(seconds), core.replace_file(from, to)
 * -> true | nil, message (omixa.save and the cache rename through it). */
#ifndef OMIXA_PLATFORM_H
#define OMIXA_PLATFORM_H

#include <stddef.h>
#include <lua.h>

long omx_pid(void);
double omx_now(void);
void omx_sleep(double seconds);
void *omx_pages_alloc(size_t *size);
void omx_pages_free(void *p, size_t size);
int omx_replace_file(const char *from, const char *to, char *err, size_t errlen);

#endif
