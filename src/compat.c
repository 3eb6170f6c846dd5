/* compat.c — helpers that differ between Lua versions (see compat.h). */
#include <limits.h>

#include "compat.h"

void omx_setfuncs(lua_State *L, const luaL_Reg *l, int nup)
{
    int i;
    luaL_checkstack(L, nup + 1, "too many upvalues");
    for (; l->name != NULL; l++) {
        for (i = 0; i < nup; i++)
            lua_pushvalue(L, -nup);
        lua_pushcclosure(L, l->func, nup);
        lua_setfield(L, -(nup + 2), l->name);
    }
    lua_pop(L, nup);
}

void omx_newclass(lua_State *L, const char *name, const luaL_Reg *methods)
{
    if (luaL_newmetatable(L, name)) {
        omx_setfuncs(L, methods, 0);
        lua_pushvalue(L, -1);
        lua_setfield(L, -2, "__index");
        lua_pushstring(L, name);
        lua_setfield(L, -2, "__name");
    }
}

void *omx_testudata(lua_State *L, int idx, const char *tname)
{
    void *p = lua_touserdata(L, idx);
    if (p == NULL || !lua_getmetatable(L, idx))
        return NULL;
    luaL_getmetatable(L, tname);
    if (!lua_rawequal(L, -1, -2))
        p = NULL;
    lua_pop(L, 2);
    return p;
}

lua_Integer omx_optinteger(lua_State *L, int idx, lua_Integer def)
{
    /* 2^(bits-1): the first integral value past lua_Integer's range */
    const lua_Number lim =
        (lua_Number)((lua_Integer)1 << (sizeof(lua_Integer) * CHAR_BIT - 2)) * 2;
    lua_Number n;
    if (lua_isnoneornil(L, idx))
        return def;
#if LUA_VERSION_NUM >= 503
    if (lua_isinteger(L, idx))
        return lua_tointeger(L, idx);
#endif
    n = luaL_checknumber(L, idx);
    /* tested before the cast: converting NaN or a value out of range is
     * undefined behaviour in C */
    if (!(n >= -lim && n < lim) || (lua_Number)(lua_Integer)n != n)
        luaL_argerror(L, idx, "number has no integer representation");
    return (lua_Integer)n;
}
