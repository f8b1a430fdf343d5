/* The admin listener: HTTP on the `admin HOST:PORT` address, served by libmicrohttpd in a
 * thread of its own.
 *
 *   GET /metrics   the counters in the Prometheus text format (proxy/metrics.h)
 *   GET /health    200 "ok" when the upstream answered the last PING, 503 with the reason
 *                  otherwise, and 503 from the moment the proxy starts draining
 *   other paths    404; other methods on these two paths 405 (HEAD is served as GET)
 *
 * Threads: the loop thread owns every counter and the health probe. Once a second (a
 * uv_timer) it copies the counters into a snapshot guarded by a mutex, and sends a PING on a
 * connection of its own to the upstream (proxy/upconn.h); the PING's answer updates the
 * health under the same mutex. The HTTP thread only ever reads that snapshot: so the request
 * path's counters are plain increments, with no lock and no atomic instruction, and a
 * scrape never waits for the loop nor the loop for a scrape (the mutex is held for a copy).
 * What a scrape shows is at most about a second old. A health check also fails when the
 * loop has not published for 5 seconds (a stuck loop is not healthy). */
#ifndef LP_ADMIN_H
#define LP_ADMIN_H

#include <stddef.h>

struct proxy;
typedef struct lp_admin lp_admin;

/* Binds px->cfg->admin, starts the HTTP thread and the loop's timer. Returns NULL with a
 * message ("admin ADDR: reason") in err when it cannot. */
lp_admin *lp_admin_start(struct proxy *px, char *err, size_t errlen);
/* The proxy is draining (SIGTERM/SIGINT): /health answers 503 "draining" from now on, so
 * that a load balancer stops sending new clients while the old ones finish. Accepts NULL. */
void lp_admin_drain(lp_admin *a);
/* Stops the loop's side (the timer and the probe's connection), so that the loop can end;
 * the HTTP thread keeps answering from the last snapshot. Accepts NULL. */
void lp_admin_stop_loop(lp_admin *a);
/* Stops the HTTP thread and frees a: after the loop has ended. Accepts NULL. */
void lp_admin_free(lp_admin *a);

#endif
