/* The upstream Redis Sentinel names (upstream sentinel://HOST:PORT[,...]/MASTER), followed
 * through failovers as client libraries' Sentinel support does.
 *
 *   discovery:  each sentinel in turn ── SENTINEL get-master-addr-by-name MASTER ──▶ A:P
 *               A:P ── [AUTH upstream-auth] ROLE ──▶ "master"?  yes: adopt A:P
 *                                                   no / no answer: logged, next sentinel
 *               no sentinel gave a confirmed master: logged, the round again a second later
 *   following:  SUBSCRIBE +switch-master on the sentinel that answered (PING every second;
 *               a lost subscription is logged and discovery runs again, then resubscribes)
 *               "+switch-master MASTER old-ip old-port new-ip new-port" ── ROLE ──▶ adopt
 *
 * Adopting a new master: new client connections, the renewal connection and the
 * authentication probe go to it; every existing client's upstream connection is closed
 * (the requests it still owed are answered "-ERR lockproxy: upstream unavailable (master
 * switched)", then the client connection closes), so clients reconnect, to the new master.
 * The locks those connections held (the lease cache's) are looked up on the new master; each
 * whose lease record is missing is logged as failover_lost. A client's failed upstream
 * connect starts a discovery round too (at most one a second).
 * Sentinels themselves are asked without authentication. Everything is non-blocking, except
 * resolving the sentinels' host names once at start. */
#ifndef LP_SENTINEL_H
#define LP_SENTINEL_H

#include <stddef.h>

struct proxy;
typedef struct lp_sentinel lp_sentinel;

/* Resolves the configured sentinels and starts discovery. NULL with a message in err when
 * no sentinel name resolves or memory runs out. */
lp_sentinel *lp_sentinel_new(struct proxy *px, char *err, size_t errlen);
/* Runs the loop until a master is known and confirmed (it keeps asking, and logs each round
 * that fails). The master's address is then in px->upstream_sa. */
void lp_sentinel_wait_master(lp_sentinel *sn);
/* A client's upstream connect failed: the sentinels are asked again (at most once a
 * second), in case a switch was missed. */
void lp_sentinel_upstream_failed(lp_sentinel *sn);
/* Failovers followed so far. */
unsigned long lp_sentinel_switches(const lp_sentinel *sn);
/* Stops asking and closes its connections and timers; the memory goes once libuv has
 * closed them. Accepts NULL. */
void lp_sentinel_close(lp_sentinel *sn);

#endif
