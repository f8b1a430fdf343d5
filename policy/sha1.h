/* SHA-1 (FIPS 180-4), only to name the proxy's Lua scripts for EVALSHA as Redis does. */
#ifndef LP_SHA1_H
#define LP_SHA1_H

#include <stddef.h>

/* Writes the 40 lower-case hex digits of SHA-1(data) and a NUL into hex[41]. */
void lp_sha1_hex(const void *data, size_t len, char hex[41]);

#endif
