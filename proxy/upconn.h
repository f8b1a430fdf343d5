/* A connection of the proxy's own to the upstream Redis, for what the proxy asks Redis
 * itself (whether new clients must authenticate; later lease renewals), never for a
 * client's traffic.
 *
 * Commands are RESP bytes the caller encodes; replies are decoded with hiredis's
 * redisReader and handed to the command's callback in order. Commands sent before the
 * connection is up wait for it. When the connection fails, closes, or a reply takes longer
 * than timeout_ms, every command still waiting gets its callback with a NULL reply, and the
 * connection is dead: lp_upconn_alive() says so and the owner opens a new one when it
 * needs one. The owner releases every connection it opened with lp_upconn_close(), dead or
 * alive, and not from within one of its callbacks' NULL replies caused by that same call.
 * The reply object belongs to the connection: it is freed after the callback. */
#ifndef LP_UPCONN_H
#define LP_UPCONN_H

#include <uv.h>
#include <hiredis/hiredis.h>
#include "proxy/addr.h"

typedef struct lp_upconn lp_upconn;

/* r is NULL when no reply came (connection failed, closed or timed out). */
typedef void (*lp_upconn_cb)(lp_upconn *c, const redisReply *r, void *ud);

/* Starts connecting to addr (sa: its resolved address when TCP). Returns NULL only when out
 * of memory. */
lp_upconn *lp_upconn_open(uv_loop_t *loop, const lp_addr *addr, const struct sockaddr *sa,
                          int timeout_ms);
/* Queues one command. Returns 0, or -1 when the connection is dead (cb is not called). */
int lp_upconn_send(lp_upconn *c, const char *bytes, size_t len, lp_upconn_cb cb, void *ud);
/* Queues AUTH [user] password (upstream-auth) when password is not empty; the encoded
 * command is wiped once queued. Returns 0 when nothing was needed or it was queued, else -1. */
int lp_upconn_auth(lp_upconn *c, const char *user, const char *password, lp_upconn_cb cb, void *ud);
/* Pub/sub: once set, a reply that is an array whose first element is "message" (what a
 * SUBSCRIBE'd RESP2 connection receives) goes to cb instead of answering a command; the
 * SUBSCRIBE itself, and a PING sent while subscribed, are answered as commands. */
void lp_upconn_on_message(lp_upconn *c, lp_upconn_cb cb, void *ud);
/* 1 while the connection can still carry commands. */
int lp_upconn_alive(const lp_upconn *c);
/* Commands sent and not yet answered. */
size_t lp_upconn_pending(const lp_upconn *c);
/* Releases it: waiting commands get their callback with NULL (from within this call), and
 * the memory goes once libuv has closed the handles. Accepts NULL. */
void lp_upconn_close(lp_upconn *c);

#endif
