/* compat.h — one source for Lua 5.1, 5.2, 5.3, 5.4 and LuaJIT 2.1.
 * Every helper carries the omx_ prefix: LuaJIT 2.1 already declares some
 * 5.2 names (luaL_setfuncs, ...), so shims under the real names would clash. */
#ifndef OMIXA_COMPAT_H
#define OMIXA_COMPAT_H

#include <lua.h>
#include <lauxlib.h>

#if LUA_VERSION_NUM >= 502
#define omx_rawlen(L, i) lua_rawlen((L), (i))
#else
#define omx_rawlen(L, i) lua_objlen((L), (i))
#endif

#ifndef LUA_OK
#define LUA_OK 0
#endif

/* luaL_setfuncs for every version. */
void omx_setfuncs(lua_State *L, const luaL_Reg *l, int nup);

/* Create (or fetch) the metatable NAME with __index = itself, the methods
 * METHODS and __name = NAME (5.1 lacks __name; we set it everywhere so
 * tostring and error messages agree). Leaves it on the stack. */
void omx_newclass(lua_State *L, const char *name, const luaL_Reg *methods);

/* luaL_testudata for every version: the userdata at IDX if its metatable is
 * TNAME, else NULL. */
void *omx_testudata(lua_State *L, int idx, const char *tname);

/* The integer at IDX if it is a number with an integral value, else DEF when
 * absent (nil/none); raises on anything else. */
lua_Integer omx_optinteger(lua_State *L, int idx, lua_Integer def);

#endif
