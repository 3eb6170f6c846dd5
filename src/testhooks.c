/* testhooks.c — fault injection for the specs, compiled in only with
 * -DOMX_TEST_HOOKS (the sanitizer build of `make asan`); in every other
 * build omx_testhooks_open registers nothing.
 *
 *   core._fail_alloc(n, f, ...) -> ok, err   calls f(...) protected; during
 *                          the call, Lua's allocations that grow memory
 *                          succeed N times, then one fails (twice in a row:
 *                          Lua 5.4 retries once after an emergency
 *                          collection), then they succeed again.
 * One failure, not all that follow: the error then still has the memory to
 * travel to the pcall. */
#include <lauxlib.h>

#include "omixa.h"

#ifdef OMX_TEST_HOOKS

static lua_Alloc real_alloc;
static void *real_ud;
static long left, failures;

static void *failing_alloc(void *ud, void *p, size_t osize, size_t nsize)
{
    if (nsize > 0 && (p == NULL || nsize > osize)) {
        if (left <= 0 && failures > 0) {
            failures--;
            return NULL;
        }
        left--;
    }
    return real_alloc(ud, p, osize, nsize);
}

static int fail_alloc(lua_State *L)
{
    int rc, n = lua_gettop(L) - 2;
    left = (long)luaL_checkinteger(L, 1);
    luaL_checktype(L, 2, LUA_TFUNCTION);
    real_alloc = lua_getallocf(L, &real_ud);
    failures = 2;
    lua_setallocf(L, failing_alloc, real_ud);
    rc = lua_pcall(L, n, 1, 0);
    lua_setallocf(L, real_alloc, real_ud);
    lua_pushboolean(L, rc == 0);
    lua_insert(L, -2);
    return 2;
}

void omx_testhooks_open(lua_State *L)
{
    lua_pushcfunction(L, fail_alloc);
    lua_setfield(L, -2, "_fail_alloc");
}

#else

void omx_testhooks_open(lua_State *L)
{
    (void)L;
}

#endif
