/* preload.c — preloaded after the sanitizer runtime into the uninstrumented
 * Lua of `make asan` (see spec/asan/wrapper), for two things:
 * - it removes LD_PRELOAD from the environment as soon as it is loaded, so
 *   that the programs the specs start (sh, curl, nginx, openssl) run without
 *   the ASan runtime, which they were not built for (curl deadlocks in
 *   setlocale under it); a Lua child goes through the wrapper and gets the
 *   preload back;
 * - dlclose does nothing, so omixa/core.so is still mapped when
 *   LeakSanitizer runs at exit (Lua unloads C modules in lua_close) and a
 *   leak in it is reported with its function and line. */
#define _POSIX_C_SOURCE 200809L /* unsetenv */
#include <stdlib.h>

int dlclose(void *handle);

__attribute__((constructor)) static void omx_drop_preload(void)
{
    unsetenv("LD_PRELOAD");
}

int dlclose(void *handle)
{
    (void)handle;
    return 0;
}
