/* SHA-1 (FIPS 180-4) of a byte string, as 40 lowercase hex digits: the same text Redis's
 * redis.sha1hex() gives in a script, so the proxy can keep a token's hash instead of the
 * token and still have Redis compare it. Not used for anything that needs collision
 * resistance against an attacker choosing both inputs. */
#ifndef LP_COMMON_SHA1_H
#define LP_COMMON_SHA1_H

#include <stddef.h>

#define LP_SHA1_HEX_LEN 40

/* Writes the hex digest of the n bytes at p to out (41 bytes: 40 digits and a NUL). */
void lp_sha1_hex(const void *p, size_t n, char out[LP_SHA1_HEX_LEN + 1]);

#endif
