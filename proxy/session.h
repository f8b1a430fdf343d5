/* One client session, private to proxy/: the client connection, its own upstream
 * connection, and the pairing (proxy/pairing.h) that matches every reply to the request it
 * answers. The work is split by stage:
 *
 *   reqpath.c    client bytes -> resp/ framer -> policy/ decision -> pairing -> upstream
 *   replypath.c  upstream bytes -> resp/ scanner -> pairing -> client (or captured for the
 *                policy when the reply answers a rewritten command)
 *   writer.c     spans of received blocks, uv_try_write, backpressure
 *   session.c    accept, connect, timeouts, half-close, drain, close
 *
 *                 client                                              redis-server
 *                   │ bytes                                               ▲
 *                   ▼                                                     │ spans of s->in,
 *   s->in ──▶ resp_request_parse ──▶ lock_decide ──forward/rewrite──▶ s->to_up  or op->send
 *                   │ (complete frames   │ (lock keys only)
 *                   │  only)             └─▶ pairing: OP entry, s->hold = 1
 *                   └─▶ pairing_request: PLAIN / SUB / HELLO / ... entries
 *
 *   s->rin ◀── resp_reply_scan ◀── bytes ◀──────────────────────────────── redis-server
 *      │            │ whole frame
 *      │            └─▶ pairing_reply: answer (forwarded as it streamed) / out of band /
 *      │                captured (OP, EXEC: rebuilt by policy/lock.c) / swallowed / lost
 *      └──▶ s->to_client ──▶ client, in request order; LOCAL replies when they reach the head
 *
 * Worked example: one read brings "SET a 1; SETNX lock:a x; GET a" (three frames in one
 * block of s->in).
 *   1. SET a 1: no lock key. pairing_request adds PLAIN n=1; its bytes stay in the span
 *      being forwarded (fwd_start .. pos).
 *   2. SETNX lock:a x: lock_decide rewrites it. The span so far (SET) goes to s->to_up, then
 *      the rewrite (EVALSHA of policy/lua/acquire.lua: SET lock:a x NX PX <ttl> and the lease
 *      record beside it) as a copy; the pairing gets an OP entry and s->hold = 1. Framing
 *      stops: GET a stays unread in s->in (in_start points at it). Queue: [PLAIN 1][OP].
 *   3. Replies "+OK" then "*2 :1 :30000": the first answers PLAIN and streams to the client
 *      as it arrives. At the start of the second, pairing_captures() says the head is OP: it
 *      is kept whole in s->cap, then lock_op_reply turns it into ":1" (and caches the lease,
 *      schedules its renewal), which goes to the client; the OP entry pops, s->hold = 0.
 *   4. up_read_cb sees requests held in s->in and frames again: GET a forwards as PLAIN 1,
 *      and its reply streams through as in step 3's first reply.
 * A LOCAL reply (a PERSIST the proxy refuses, a protocol error) is queued as a LOCAL entry
 * and written when every reply before it has been.
 *
 * SYNC and PSYNC hold the requests behind them like a lock command. When their reply starts
 * with anything but an error line, the session becomes a replication link (repl_stream): the
 * held requests and everything after go to Redis unframed, and Redis's bytes (keepalive
 * newlines, +FULLRESYNC, the RDB payload without a trailing CRLF, the command stream) go to
 * the client as they come, as MONITOR lines do but without framing. */
#ifndef LP_SESSION_H
#define LP_SESSION_H

#include "proxy/proxy.h"
#include "proxy/buf.h"
#include "proxy/pairing.h"
#include "resp/request.h"
#include "resp/reply.h"
#include "policy/lock.h"

#define UPSTREAM_ERR_FMT "-ERR lockproxy: upstream unavailable (%s)\r\n"

/* The upstream connection's life. It only moves down this list: CONNECTING to CONNECTED,
 * FAILED or GONE; CONNECTED to SHUT or GONE; SHUT to GONE. */
enum up_state {
    UP_CONNECTING,      /* the connect is in flight; connect-timeout runs on s->timer */
    UP_CONNECTED,
    UP_SHUT,            /* connected, and the client's half-close was passed on (uv_shutdown,
                         * sess_eof_progress): Redis still answers what it has */
    UP_FAILED,          /* the connect failed (fail_why): what the client sends is answered
                         * with UPSTREAM_ERR_FMT, then the session closes */
    UP_GONE,            /* closed, failed or not RESP after connecting, or never opened
                         * (maxclients): nothing more is read from it */
};

/* The client side's life. It only moves down this list (sess_client_to): a later reason to
 * stop never undoes a stronger one (a drain after the client's EOF stays HALF_CLOSED, a
 * QUIT's stop after a protocol error's FLUSH_CLOSE stays FLUSH_CLOSE). */
enum client_state {
    CL_READING,         /* frames are read, framed and forwarded */
    CL_DISCARDING,      /* read and dropped, as Redis does after a QUIT with replies off or a
                         * protocol error with nothing left to write */
    CL_STOPPED,         /* nothing more is read or run (QUIT, a protocol error whose line
                         * waits its turn, drain); the session ends once no reply is due, or
                         * the upstream is gone, and the client has all its bytes */
    CL_HALF_CLOSED,     /* stopped by the client's EOF: as STOPPED, and the half-close may be
                         * passed on to Redis (sess_eof_progress) */
    CL_FLUSH_CLOSE,     /* stopped, and the session ends as soon as the client has all its
                         * bytes, whatever is still due (a protocol error's line, the upstream
                         * lost, maxclients) */
};

struct session {
    proxy *px;
    session *prev, *next;
    union { uv_tcp_t tcp; uv_pipe_t pipe; uv_stream_t stream; uv_handle_t handle; } client, up;
    uv_timer_t timer;
    uv_connect_t connect_req;
    struct lp_resolve *resolving; /* the upstream name's lookup before the connect, or NULL */
    uv_shutdown_t shutdown_req;
    int open_handles;
    char peer[64];
    size_t ip_len;                /* bytes of the address part of peer */
    char fail_why[64];            /* why the upstream connect failed, for the client's error */

    /* life cycle */
    enum up_state up_state;
    enum client_state client_state;
    unsigned closing : 1;         /* session_close() ran: both handles are closing; the
                                   * session's own end, whatever the sides' states */
    /* EOF came while requests were held behind a lock command: they run first, then
     * sess_client_eof(). A bit of its own, not a client_state: it combines with READING and
     * with DISCARDING (a QUIT with replies off among the held requests), and stops mattering
     * once the client side has stopped. */
    unsigned eof_seen : 1;
    /* backpressure (sess_update_reading): whether each side is being read now */
    unsigned client_reading : 1;
    unsigned up_reading : 1;

    /* reply accounting: the pending-request queue and what Redis's answers depend on */
    lp_pairing pg;

    lock_txn txn;                 /* the lock commands of a transaction (policy/lock.h) */
    unsigned hold : 1;            /* a lock command is out: the requests behind it wait */
    unsigned capturing : 1;       /* the reply in progress is kept whole, for policy/lock.c */
    unsigned exec_header : 1;     /* reading a split EXEC's header line into cap (pairing.h) */
    unsigned raw_unscanned : 1;   /* tracking lost and the replies no longer framed (not RESP) */
    lp_str cap;
    /* An EXEC reply carrying rewritten commands is streamed element by element (replypath.c):
     * the header is rewritten, the elements of lock commands are captured one at a time and
     * go through the policy, the others are forwarded as they arrive. */
    struct {
        enum { EX_NONE, EX_HEADER, EX_ELEMS, EX_PASS } phase;
        char hdr[32];             /* the "*<count>\r\n" line so far */
        size_t hdr_len;
        long long count, i;       /* elements in Redis's array; the one in progress */
        lock_op *op;              /* the lock command element i answers, or NULL */
        resp_reply elem;          /* frames the elements */
    } ex;
    uint64_t conn_id;
    unsigned no_scripts : 1;      /* Redis refused a lock script (NOPERM): lock commands go as sent */
    /* Redis answered SYNC/PSYNC with the start of a replication stream: from then on bytes
     * pass through both ways unframed (no pairing, no lock rules, no upstream-timeout;
     * backpressure as ever). Redis refuses keyspace commands from a replica connection. */
    unsigned repl_stream : 1;
    uint64_t unchecked;           /* lock commands forwarded unchecked after tracking was lost */

    /* client input */
    lp_block *in;                 /* block holding the frame in progress, or NULL */
    size_t in_start;              /* where that frame starts in it */
    resp_request req;

    /* upstream input */
    lp_block *rin;
    resp_reply rep;
    int rep_mid;                  /* inside a reply frame */

    /* metrics (uv_hrtime): while UP_CONNECTING, when the connect started (the client is not
     * read until it is done); then the start of the batch of requests in progress, from the
     * read that found no reply due to the moment none is due again */
    uint64_t lat_t0;
    unsigned lat_busy : 1;        /* replies are due: lat_t0 is the batch's start */
    unsigned lat_skip : 1;        /* the batch holds a command that may block: not observed */

    /* output being collected during one event, and writes in flight */
    lp_out to_up, to_client;
    int up_writes, client_writes;
};

/* The upstream is connected and not gone: it is read, and upstream-timeout applies. */
static inline int sess_up_open(const session *s) {
    return s->up_state == UP_CONNECTED || s->up_state == UP_SHUT;
}

/* Moves the client side on to st; a side further down the list stays where it is. */
static inline void sess_client_to(session *s, enum client_state st) {
    if (st > s->client_state) s->client_state = st;
}

/* writer.c */
void sess_emit(session *s, lp_out *o, lp_block *b, size_t off, size_t len);
void sess_emit_copy(session *s, lp_out *o, const char *p, size_t len);
void sess_flush(session *s);
void sess_update_reading(session *s);
/* Every byte the proxy holds for the session: both write queues, unread and held requests,
 * queued local replies and the pending-request queue, a capture. hard-limit bounds it. */
size_t sess_held_bytes(const session *s);

/* reqpath.c */
void lp_alloc_client(uv_handle_t *h, size_t suggested, uv_buf_t *buf);
void sess_process_client_input(session *s);
void sess_client_read_cb(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf);
void sess_client_eof(session *s);

/* replypath.c */
void sess_queue_local(session *s, const char *bytes, size_t len, int close_after);
void sess_lose_tracking(session *s, const char *why);
void sess_start_repl_stream(session *s);
/* Tracking lost and a protocol error's line (line; empty when replies are silenced) is due
 * after the replies to the requests before it, whose end Redis does not mark: sends Redis the
 * proxy's own DISCARD and PING <marker> (with a CLIENT REPLY ON between when silent), passes the
 * replies until their answers (dropped), then queues the line and the close. Returns 0 when
 * it cannot (the replies are no longer framed): the caller does without. */
int sess_barrier(session *s, const char *line, size_t len, int silent);
void lp_alloc_up(uv_handle_t *h, size_t suggested, uv_buf_t *buf);
void sess_upstream_lost(session *s, const char *why);
void sess_up_read_cb(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf);

/* session.c */
void sess_arm_upstream_timer(session *s, int restart);
void sess_maybe_finish(session *s);
void sess_eof_progress(session *s);
void session_close(session *s);

#endif
