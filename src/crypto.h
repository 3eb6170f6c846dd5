/* crypto.h — SHA-256 and HMAC-SHA256 through libcrypto (see crypto.c). */
#ifndef OMIXA_CRYPTO_H
#define OMIXA_CRYPTO_H

#include <stddef.h>
#include <lua.h>

/* Write the 2*N lower-case hex digits of P to OUT (not terminated). */
void omx_hex(const unsigned char *p, size_t n, char *out);

/* Register core.sha256 and core.hmac_sha256 into the module table on top. */
void omx_crypto_open(lua_State *L);

#endif
