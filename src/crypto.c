/* crypto.c — core.sha256 and core.hmac_sha256, through OpenSSL's libcrypto
 * (never a home-made hash): cache keys, entry checksums and request
 * signatures.
 *
 *   core.sha256(part, ...) -> hex           several parts hash as their
 *                                           concatenation, never built
 *   core.hmac_sha256(key, part, ...) -> hex likewise for the message
 *
 * Parts are Lua strings or omixa.buffer userdata. Every argument is checked
 * before OpenSSL allocates anything, so a bad argument raises without
 * leaking a context; nothing after the allocation can raise until it is
 * freed. */
#include <string.h>
#include <lua.h>
#include <lauxlib.h>
#include <openssl/evp.h>
#include <openssl/opensslv.h>
#if OPENSSL_VERSION_NUMBER >= 0x30000000L
#include <openssl/core_names.h>
#include <openssl/params.h>
#else
#include <openssl/hmac.h>
#endif

#include "buffer.h"
#include "crypto.h"
#include "omixa.h"

#define SHA256_LEN 32

void omx_hex(const unsigned char *p, size_t n, char *out)
{
    static const char digits[] = "0123456789abcdef";
    size_t i;
    for (i = 0; i < n; i++) {
        out[2 * i] = digits[p[i] >> 4];
        out[2 * i + 1] = digits[p[i] & 15];
    }
}

/* Raise unless every argument from FIRST on is a string or a buffer, and
 * there is at least one. */
static int check_parts(lua_State *L, int first)
{
    int i, top = lua_gettop(L);
    size_t len;
    if (top < first)
        luaL_argerror(L, first, "string or omixa.buffer expected, got no value");
    for (i = first; i <= top; i++)
        omx_checkbytes(L, i, &len);
    return top;
}

/* The bytes of argument I, already checked: cannot raise. */
static const char *part(lua_State *L, int i, size_t *len)
{
    omx_buf *b;
    if (lua_type(L, i) == LUA_TSTRING)
        return lua_tolstring(L, i, len);
    b = (omx_buf *)lua_touserdata(L, i);
    *len = b->len;
    return b->data ? b->data : "";
}

static int push_digest(lua_State *L, const unsigned char *md, size_t n)
{
    char hex[2 * EVP_MAX_MD_SIZE];
    omx_hex(md, n, hex);
    lua_pushlstring(L, hex, 2 * n);
    return 1;
}

static int crypto_sha256(lua_State *L)
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    int i, ok, top = check_parts(L, 1);
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    ok = ctx != NULL && EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) == 1;
    for (i = 1; ok && i <= top; i++) {
        size_t len;
        const char *p = part(L, i, &len);
        ok = EVP_DigestUpdate(ctx, p, len) == 1;
    }
    ok = ok && EVP_DigestFinal_ex(ctx, md, &mdlen) == 1 && mdlen == SHA256_LEN;
    EVP_MD_CTX_free(ctx);
    if (!ok)
        return luaL_error(L, "omixa: sha256 failed in libcrypto");
    return push_digest(L, md, mdlen);
}

#if OPENSSL_VERSION_NUMBER >= 0x30000000L

static int hmac(lua_State *L, const char *key, size_t keylen, int first, int top,
                unsigned char *md, size_t *mdlen)
{
    char digest[] = "SHA256";
    OSSL_PARAM params[2];
    EVP_MAC *mac = EVP_MAC_fetch(NULL, "HMAC", NULL);
    EVP_MAC_CTX *ctx = mac ? EVP_MAC_CTX_new(mac) : NULL;
    int i, ok;
    params[0] = OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, digest, 0);
    params[1] = OSSL_PARAM_construct_end();
    /* A zero-length key is a valid HMAC key: hand over a non-NULL pointer
     * (NULL would mean "keep the current key"). */
    ok = ctx != NULL && EVP_MAC_init(ctx, (const unsigned char *)(keylen ? key : ""), keylen, params) == 1;
    for (i = first; ok && i <= top; i++) {
        size_t len;
        const char *p = part(L, i, &len);
        ok = EVP_MAC_update(ctx, (const unsigned char *)p, len) == 1;
    }
    ok = ok && EVP_MAC_final(ctx, md, mdlen, EVP_MAX_MD_SIZE) == 1;
    EVP_MAC_CTX_free(ctx);
    EVP_MAC_free(mac);
    return ok;
}

#else /* OpenSSL 1.1 */

static int hmac(lua_State *L, const char *key, size_t keylen, int first, int top,
                unsigned char *md, size_t *mdlen)
{
    unsigned int n = 0;
    int i, ok;
    HMAC_CTX *ctx = HMAC_CTX_new();
    ok = ctx != NULL && keylen <= 0x7fffffff
         && HMAC_Init_ex(ctx, keylen ? key : "", (int)keylen, EVP_sha256(), NULL) == 1;
    for (i = first; ok && i <= top; i++) {
        size_t len;
        const char *p = part(L, i, &len);
        ok = HMAC_Update(ctx, (const unsigned char *)p, len) == 1;
    }
    ok = ok && HMAC_Final(ctx, md, &n) == 1;
    HMAC_CTX_free(ctx);
    *mdlen = n;
    return ok;
}

#endif

static int crypto_hmac_sha256(lua_State *L)
{
    unsigned char md[EVP_MAX_MD_SIZE];
    size_t keylen, mdlen = 0;
    const char *key = omx_checkbytes(L, 1, &keylen);
    int top = check_parts(L, 2);
    if (!hmac(L, key, keylen, 2, top, md, &mdlen) || mdlen != SHA256_LEN)
        return luaL_error(L, "omixa: hmac_sha256 failed in libcrypto");
    return push_digest(L, md, mdlen);
}

void omx_crypto_open(lua_State *L)
{
    lua_pushcfunction(L, crypto_sha256);
    lua_setfield(L, -2, "sha256");
    lua_pushcfunction(L, crypto_hmac_sha256);
    lua_setfield(L, -2, "hmac_sha256");
}
