/* noinherit.c — preloaded after the ASan runtime into an uninstrumented Lua
 * (see build/<lua>-asan/<lua>, written by `make asan`): removes LD_PRELOAD
 * from this process's environment as soon as it is loaded, so that the
 * programs the specs start (sh, curl, nginx, openssl) run without the ASan
 * runtime, which they were not built for (curl deadlocks in setlocale under
 * it). A Lua child goes through the same wrapper and gets it back. */
#define _POSIX_C_SOURCE 200809L /* unsetenv */
#include <stdlib.h>

__attribute__((constructor)) static void omx_drop_preload(void)
{
    unsetenv("LD_PRELOAD");
}
