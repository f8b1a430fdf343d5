/* Renewal of the locks whose holders are still connected (rule option renew=): every ttl/3
 * the proxy extends lock and lease record, on a connection of its own to Redis, many locks
 * per script call (renew.lua, which renews a lock only while its record still holds the
 * acquire id). So renewal goes on while the holder is blocked, subscribed or inside MULTI.
 *
 * A renewal stops when the holder releases the lock, when its connection closes (its entry
 * leaves the lease cache), when the holder sets its own TTL, when Redis says the lease is no
 * longer that acquire's, or after max-hold (logged as max_hold). A hold past 10 minutes is
 * logged once as long_hold. */
#ifndef LP_RENEW_H
#define LP_RENEW_H

#include "policy/lock.h"

struct proxy;
typedef struct lp_renewer lp_renewer;

lp_renewer *lp_renewer_new(struct proxy *px);
/* lock_ctx's renew callback (ud: the renewer): schedules a lease's renewals. */
void lp_renewer_add(void *ud, const lock_renewal *r);
/* Locks being renewed (scheduled or in flight). */
size_t lp_renewer_count(const lp_renewer *rn);
/* Drops the renewal connection (the renewals in flight are tried again at the next tick,
 * on a new connection to px->upstream_sa): after the upstream moved to a new master. */
void lp_renewer_reconnect(lp_renewer *rn);
/* Stops the timer and the connection; the memory goes once libuv has closed them. */
void lp_renewer_close(lp_renewer *rn);

#endif
