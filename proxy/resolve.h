/* The upstream's address for each new upstream connection. A numeric upstream host (and a
 * unix socket) is resolved once at start; a host name is looked up again for every new
 * connection, asynchronously (uv_getaddrinfo, in libuv's thread pool), so that a changed DNS
 * record is followed without a restart. The newest answer is also kept in px->upstream_sa for
 * the proxy's own connections (renewal, the authentication probe). */
#ifndef LP_RESOLVE_H
#define LP_RESOLVE_H

#include <sys/socket.h>

struct proxy;
typedef struct lp_resolve lp_resolve;

/* status 0 and sa the address to connect to (valid during the call only), or a libuv error
 * (UV_EAI_*) and sa NULL. */
typedef void (*lp_resolve_cb)(void *ud, int status, const struct sockaddr *sa);

/* Resolves the upstream at start, synchronously (getaddrinfo), into px->upstream_sa, and
 * notes whether it is a name to look up again. Returns 0, or -1 with "upstream: HOST:PORT:
 * reason" in err. Nothing to do for a unix socket. For a sentinel:// upstream it starts the
 * Sentinel client instead (px->sentinel), which keeps upstream_sa on the master. */
int lp_upstream_resolve_now(struct proxy *px, char *err, size_t errlen);

/* Starts looking the upstream name up for one connection; cb runs later from the loop,
 * exactly once unless lp_upstream_resolve_cancel() comes first. Returns 0 with *out set,
 * or a libuv error (cb is not called). */
int lp_upstream_resolve(struct proxy *px, lp_resolve_cb cb, void *ud, lp_resolve **out);

/* Forgets the caller: cb is never called; the lookup's memory goes when libuv is done. */
void lp_upstream_resolve_cancel(lp_resolve *r);

#endif
