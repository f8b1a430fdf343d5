/* One client session: the client connection, its own upstream connection, and the
 * pending-request queue that pairs every reply with the request it answers.
 *
 * Requests. Client bytes are read into blocks and framed by resp/request.c. Only complete
 * frames are forwarded, as spans of the block they arrived in; a frame still arriving stays
 * at the end of the block (or is moved to a larger one) until it is complete. A protocol
 * error becomes a local error line, queued behind the replies still due, then the client is
 * closed: the bytes that could not be framed never reach Redis.
 *
 * Replies. Upstream bytes are forwarded as they arrive. The streaming scanner of
 * resp/reply.c finds where each top-level frame ends; at that point the frame is either out
 * of band (a RESP3 push, a RESP2 pub/sub message, a MONITOR line) or the reply to the
 * request at the head of the queue.
 *
 * The queue holds one entry per group of requests that answer alike: PLAIN entries are
 * run-length encoded (a 10,000-command pipeline of GETs is one entry), SUB entries expect
 * one reply per channel, and LOCAL entries carry a reply the proxy makes itself, sent when
 * everything before it has been answered. Request-side state (MULTI, CLIENT REPLY) decides
 * how many replies a request gets; reply-side state (protocol version, subscriptions,
 * MONITOR) decides what is out of band. Where the proxy cannot be sure (CLIENT REPLY or
 * subscriptions inside MULTI), it stops pairing on that session and passes bytes through. */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <ctype.h>
#include <arpa/inet.h>
#include "proxy/proxy.h"
#include "proxy/buf.h"
#include "resp/request.h"
#include "resp/reply.h"
#include "policy/lock.h"
#include "proxy/pairing.h"

struct session {
    proxy *px;
    session *prev, *next;
    union { uv_tcp_t tcp; uv_pipe_t pipe; uv_stream_t stream; uv_handle_t handle; } client, up;
    uv_timer_t timer;
    uv_connect_t connect_req;
    uv_shutdown_t shutdown_req;
    int open_handles;
    char peer[64];
    size_t ip_len;                /* bytes of the address part of peer */
    char fail_why[64];            /* why the upstream connect failed, for the client's error */

    /* life cycle */
    unsigned closing : 1;
    unsigned up_connected : 1;
    unsigned up_failed : 1;       /* connect failed: answer with errors, then close */
    unsigned up_gone : 1;         /* upstream closed or failed after connecting */
    unsigned client_stop : 1;     /* read no more client input (QUIT, error, EOF, drain) */
    unsigned client_reading : 1;
    unsigned up_reading : 1;
    unsigned close_when_flushed : 1;
    unsigned discard : 1;         /* as Redis after a silent QUIT or protocol error: read and drop */
    unsigned up_shut : 1;         /* the client half-closed and so did we, towards Redis */

    /* reply accounting: the pending-request queue and what Redis's answers depend on */
    lp_pairing pg;

    lock_op *held_setnx;          /* a SETNX queued in MULTI, waiting to see if EXPIRE follows */
    char *multi_setnx;            /* the key of the last SETNX queued in this MULTI */
    size_t multi_setnx_len;
    unsigned hold : 1;            /* a lock command is out: the requests behind it wait */
    unsigned eof_seen : 1;        /* EOF came while requests were held */
    unsigned got_eof : 1;         /* the client half-closed (or closed) */
    unsigned capturing : 1;       /* the reply in progress is kept whole, for policy/lock.c */
    lp_str cap;
    uint64_t conn_id;

    /* client input */
    lp_block *in;                 /* block holding the frame in progress, or NULL */
    size_t in_start;              /* where that frame starts in it */
    resp_request req;
    resp_request peek;            /* looks at the request after a SETNX */

    /* upstream input */
    lp_block *rin;
    resp_reply rep;
    int rep_mid;                  /* inside a reply frame */

    /* output being collected during one event, and writes in flight */
    lp_out to_up, to_client;
    int up_writes, client_writes;
};

static const char upstream_err_fmt[] = "-ERR lockproxy: upstream unavailable (%s)\r\n";

static void client_read_cb(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf);
static void up_read_cb(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf);
static void flush(session *s);
static void update_reading(session *s);
static void client_eof(session *s);
static void eof_progress(session *s);
static void maybe_finish(session *s);
static void lp_alloc_client(uv_handle_t *h, size_t suggested, uv_buf_t *buf);
static void lp_alloc_up(uv_handle_t *h, size_t suggested, uv_buf_t *buf);
static int preauth_limits(const session *s);

/* ---- pending queue ---- */

/* Adds a span to an output, writing what was collected when the request is full. */
static void emit(session *s, lp_out *o, lp_block *b, size_t off, size_t len) {
    if (lp_out_add(o, b, off, len)) flush(s);
}

static void emit_copy(session *s, lp_out *o, const char *p, size_t len) {
    if (len == 0) return;
    lp_block *blk = lp_block_copy(p, len);
    if (blk == NULL) abort();
    emit(s, o, blk, 0, len);
    lp_block_unref(blk);
}

/* Sends LOCAL entries that reached the head of the queue. */
static void drain_locals(session *s) {
    pend *p;
    while ((p = pairing_head(&s->pg)) != NULL && p->kind == PEND_LOCAL) {
        emit_copy(s, &s->to_client, p->local, p->local_len);
        if (p->close_after) {
            s->client_stop = 1;
            s->close_when_flushed = 1;
        }
        pairing_pop(&s->pg);
    }
}

static void queue_local(session *s, const char *bytes, size_t len, int close_after) {
    pairing_push_local(&s->pg, bytes, len, close_after);
    drain_locals(s);
}

/* Stops pairing replies on this session: from now on bytes pass through both ways. */
static void lose_tracking(session *s, const char *why) {
    if (s->pg.raw) return;
    lp_logf("tracking_lost client=%s: %s; passing bytes through", s->peer, why);
    if (s->px->lock.log != NULL && s->px->policy != NULL) {
        audit_event e;
        memset(&e, 0, sizeof(e));
        e.event = "tracking_lost";
        e.mode = "-";
        e.action = "forwarded";
        e.rule = "";
        e.key = "";
        e.client = s->peer;
        e.client_name = s->pg.name;
        e.client_name_len = s->pg.name_len;
        e.detail = why;
        e.held_ms = -1;
        s->px->lock.log(s->px->lock.log_ud, &e);
    }
    /* Replies still due are no longer paired; local replies queued behind them go now. */
    pairing_lose(&s->pg);
    drain_locals(s);
}

/* ---- writing ---- */

static void write_cb(uv_write_t *req, int status) {
    lp_wreq *w = (lp_wreq *)req;
    session *s = req->data;
    int to_client = req->handle == &s->client.stream;
    if (to_client) s->client_writes--;
    else s->up_writes--;
    lp_wreq_free(w);
    if (s->closing) return;
    if (status < 0) {
        if (!to_client) lp_logf("upstream write failed for client=%s: %s", s->peer, uv_strerror(status));
        session_close(s);
        return;
    }
    update_reading(s);
    maybe_finish(s);
}

/* Writes what one event produced. Most of the time the socket takes it all at once
 * (uv_try_write, which answers EAGAIN itself while earlier writes are queued): no write
 * request, and none of the epoll changes libuv makes when a queued write drains. What the
 * socket does not take goes into a uv_write. */
static void write_out(session *s, lp_out *o, uv_stream_t *dst, int *count) {
    lp_wreq *w = lp_out_take(o);
    if (w == NULL) return;
    if (s->closing) { lp_wreq_free(w); return; }
    int first = 0;
    int n = uv_try_write(dst, w->bufs, (unsigned)w->n);
    if (n < 0 && n != UV_EAGAIN) {
        lp_wreq_free(w);
        session_close(s);
        return;
    }
    if (n > 0 && (size_t)n == w->bytes) {
        lp_wreq_free(w);
        return;
    }
    for (size_t left = n > 0 ? (size_t)n : 0; left > 0; first++) {
        if (left < w->bufs[first].len) {
            w->bufs[first].base += left;
            w->bufs[first].len -= left;
            break;
        }
        left -= w->bufs[first].len;
    }
    w->req.data = s;
    int rc = uv_write(&w->req, dst, w->bufs + first, (unsigned)(w->n - first), write_cb);
    if (rc < 0) {
        lp_wreq_free(w);
        session_close(s);
        return;
    }
    (*count)++;
}

/* Writes what the current event produced: one uv_write per direction. */
static void flush(session *s) {
    write_out(s, &s->to_up, &s->up.stream, &s->up_writes);
    write_out(s, &s->to_client, &s->client.stream, &s->client_writes);
    if (s->closing) return;
    size_t cq = uv_stream_get_write_queue_size(&s->client.stream);
    if ((long long)cq > s->px->cfg->hard_limit) {
        lp_logf("closing client=%s: %zu bytes waiting to be written, over hard-limit", s->peer, cq);
        session_close(s);
        return;
    }
    update_reading(s);
}

/* Backpressure: a side is read only while the other side's write queue is below the
 * high-water mark; once stopped it resumes below the low-water mark. */
static void update_reading(session *s) {
    if (s->closing) return;
    const lp_config *c = s->px->cfg;
    size_t upq = uv_stream_get_write_queue_size(&s->up.stream);
    size_t cq = uv_stream_get_write_queue_size(&s->client.stream);

    /* While a lock command holds the requests behind it, reading goes on (no epoll change
     * per lock command) but stops once high-water bytes are waiting. */
    int held_full = s->hold && s->in != NULL && (long long)(s->in->len - s->in_start) > c->high_water;
    int want_client = !s->client_stop && !s->eof_seen && !held_full &&
                      ((s->up_connected && !s->up_gone) || s->up_failed);
    if (want_client) {
        if (s->client_reading) want_client = (long long)upq <= c->high_water;
        else want_client = (long long)upq <= c->low_water;
    }
    if (want_client && !s->client_reading) {
        if (uv_read_start(&s->client.stream, lp_alloc_client, client_read_cb) == 0) s->client_reading = 1;
    } else if (!want_client && s->client_reading) {
        uv_read_stop(&s->client.stream);
        s->client_reading = 0;
    }

    int want_up = s->up_connected && !s->up_gone;
    if (want_up) {
        if (s->up_reading) want_up = (long long)cq <= c->high_water;
        else want_up = (long long)cq <= c->low_water;
    }
    if (want_up && !s->up_reading) {
        if (uv_read_start(&s->up.stream, lp_alloc_up, up_read_cb) == 0) s->up_reading = 1;
    } else if (!want_up && s->up_reading) {
        uv_read_stop(&s->up.stream);
        s->up_reading = 0;
    }
}

static void upstream_lost(session *s, const char *why);

/* upstream-timeout: the upstream must say something within the limit while a request that
 * does not block waits at the head of the queue. */
static void upstream_timeout_cb(uv_timer_t *t) {
    session *s = t->data;
    if (s->closing || s->up_gone || !s->up_connected) return;
    lp_logf("upstream silent for %lld ms with a request pending, client=%s: closing",
            s->px->cfg->upstream_timeout_ms, s->peer);
    upstream_lost(s, "upstream timeout");
    uv_read_stop(&s->up.stream);
    s->up_reading = 0;
    flush(s);
    maybe_finish(s);
}

static void arm_upstream_timer(session *s, int restart) {
    long long ms = s->px->cfg->upstream_timeout_ms;
    if (ms <= 0 || !s->up_connected || s->up_gone || s->closing) return;
    pend *h = pairing_head(&s->pg);
    int want = h != NULL && !h->blocking && h->kind != PEND_LOCAL && !s->pg.raw && !s->pg.monitor;
    if (!want) {
        uv_timer_stop(&s->timer);
    } else if (restart || !uv_is_active((uv_handle_t *)&s->timer)) {
        uv_timer_start(&s->timer, upstream_timeout_cb, (uint64_t)ms, 0);
    }
}

/* Closes the session once nothing is left to do: no input will come, no reply is due,
 * and every byte for the client has been written. */
static void maybe_finish(session *s) {
    if (s->closing) return;
    if (s->client_writes > 0 || s->to_client.w != NULL) return;
    if (s->close_when_flushed) { session_close(s); return; }
    if (s->client_stop && ((s->pg.qlen == 0 && !s->pg.raw) || s->up_gone)) session_close(s);
}

/* ---- reading ---- */

/* Client reads continue the block holding the frame in progress; when it is full the frame
 * moves to a block twice its size. */
static void lp_alloc_client(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
    session *s = h->data;
    lp_block *b = s->in;
    if (b != NULL && b->cap - b->len < 1024) {
        size_t keep = b->len - s->in_start;
        lp_block *nb = lp_block_new(keep * 2 > LP_BLOCK_SIZE ? keep * 2 : LP_BLOCK_SIZE);
        if (nb == NULL) { buf->base = NULL; buf->len = 0; return; }
        memcpy(nb->data, b->data + s->in_start, keep);
        nb->len = keep;
        lp_block_unref(b);
        b = s->in = nb;
        s->in_start = 0;
    }
    if (b == NULL) {
        b = s->in = lp_block_new(LP_BLOCK_SIZE);
        s->in_start = 0;
        if (b == NULL) { buf->base = NULL; buf->len = 0; return; }
    }
    buf->base = b->data + b->len;
    buf->len = b->cap - b->len;
}

static void lp_alloc_up(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
    session *s = h->data;
    lp_block *b = s->rin;
    if (b != NULL && b->cap - b->len < 1024) {
        lp_block_unref(b);
        b = s->rin = NULL;
    }
    if (b == NULL) b = s->rin = lp_block_new(LP_BLOCK_SIZE);
    if (b == NULL) { buf->base = NULL; buf->len = 0; return; }
    buf->base = b->data + b->len;
    buf->len = b->cap - b->len;
}

/* Records how Redis will answer one framed request that goes to it as it is, and acts on
 * the verdict: tracking lost, a hold until an AUTH's reply, QUIT. */
static void account_request(session *s, const resp_request *r) {
    pair_req v = pairing_request(&s->pg, r);
    if (v.multi_begins) {
        free(s->multi_setnx);
        s->multi_setnx = NULL;
        s->multi_setnx_len = 0;
    }
    if (v.lost) lose_tracking(s, v.lost);
    if (v.hold) s->hold = 1;
    if (v.quit) s->client_stop = 1;
    if (v.discard) s->discard = 1;
}

/* Fills in what policy/lock.c needs to know about the client. */
static void lock_client_of(session *s, lock_client *c) {
    c->conn_id = s->conn_id;
    c->addr = s->peer;
    c->ip_len = s->ip_len;
    c->name = s->pg.name;
    c->name_len = s->pg.name_len;
    c->proto = s->pg.proto;
    c->in_multi = s->pg.in_multi;
    c->db = s->pg.db;
    c->multi_setnx = s->pg.in_multi ? s->multi_setnx : NULL;
    c->multi_setnx_len = s->multi_setnx_len;
}

/* Sends the SETNX held inside MULTI: Redis's +QUEUED for it is swallowed (the client had
 * one). */
static void send_held_setnx(session *s) {
    lock_op *op = s->held_setnx;
    s->held_setnx = NULL;
    emit_copy(s, &s->to_up, op->send.p, op->send.len);
    pairing_push(&s->pg, PEND_SWALLOW);
    pairing_add_multi_op(&s->pg, op);
}

/* The request after a held SETNX: an EXPIRE of its key merges into it (1, answered
 * +QUEUED here); anything else first lets the SETNX go (0). */
static int release_held_setnx(session *s, lp_block *b, size_t fwd_start, size_t pos) {
    if (pos > fwd_start) emit(s, &s->to_up, b, fwd_start, pos - fwd_start);
    int merged = s->pg.in_multi && lock_op_merge_expire(&s->px->lock, s->held_setnx, s->req.argc, s->req.argv);
    send_held_setnx(s);
    if (merged) {
        s->pg.skip_cur = 0;
        queue_local(s, "+QUEUED\r\n", 9, 0);
    }
    return merged;
}

/* Asks the lock policy about the request just framed (at pos in b). Returns 0 when it is
 * forwarded as usual; 1 when the policy took it (and, for SETNX+EXPIRE, the next request
 * too), with *consumed the bytes it covered. */
static int lock_request(session *s, lp_block *b, size_t fwd_start, size_t pos, size_t framelen,
                        size_t *consumed) {
    proxy *px = s->px;
    const resp_request *r = &s->req;
    lock_client c;
    lock_client_of(s, &c);
    int next_argc = 0;
    const resp_arg *next = NULL;
    size_t next_len = 0;
    if (resp_arg_is(&r->argv[0], "setnx")) {
        resp_request_reset(&s->peek);
        if (resp_request_parse(&s->peek, b->data + pos + framelen, b->len - pos - framelen, &next_len) == RESP_OK) {
            next_argc = s->peek.argc;
            next = s->peek.argv;
        }
    }
    px->lock.now_ms = (int64_t)uv_now(px->loop);
    px->lock.wall_ms = lp_wall_ms();
    lock_op *op = NULL;
    int took = 0;
    lock_action act = lock_decide(&px->lock, &c, r->argc, r->argv, next_argc, next, &op, &took);
    if (s->pg.in_multi && resp_arg_is(&r->argv[0], "setnx")) {
        free(s->multi_setnx);
        s->multi_setnx = malloc(r->argv[1].len + 1);
        if (s->multi_setnx == NULL) abort();
        memcpy(s->multi_setnx, r->argv[1].ptr, r->argv[1].len);
        s->multi_setnx_len = r->argv[1].len;
    }
    if (act == LOCK_FORWARD) { lock_op_free(op); return 0; }
    int silent = pairing_silent(&s->pg);
    if (silent && s->pg.in_multi) {
        lock_op_free(op);
        return 0;    /* replies off inside MULTI: forwarded as it is */
    }
    /* What came before this request goes first. */
    if (pos > fwd_start) emit(s, &s->to_up, b, fwd_start, pos - fwd_start);
    s->pg.skip_cur = 0;   /* resetClient(), for this request and a merged EXPIRE */
    *consumed = framelen + (took ? next_len : 0);
    if (silent) {
        /* Replies are off: the rewrite still goes out (EVAL, since a NOSCRIPT could not be
         * seen), nothing is paired, and no lease is recorded, so a later DEL from this
         * client counts as foreign: its lock ends with its TTL. */
        if (act == LOCK_SEND) {
            const lp_str *cmd = op->uses_sha ? &op->retry : &op->send;
            if (cmd->len > 0) emit_copy(s, &s->to_up, cmd->p, cmd->len);
            else emit(s, &s->to_up, b, pos, framelen);
        }
        lock_op_free(op);
        return 1;
    }
    if (act == LOCK_LOCAL) {
        queue_local(s, op->local.p, op->local.len, 0);
        lock_op_free(op);
        return 1;
    }
    if (s->pg.in_multi && !took && lock_op_is_setnx(op) && s->held_setnx == NULL) {
        /* Not sent yet: an EXPIRE of the same key may follow (clients send a transaction
         * one command at a time, waiting for each +QUEUED, so it gets one now). */
        s->held_setnx = op;
        queue_local(s, "+QUEUED\r\n", 9, 0);
        return 1;
    }
    if (op->send.len > 0) {
        emit_copy(s, &s->to_up, op->send.p, op->send.len);
    } else {
        emit(s, &s->to_up, b, pos, framelen);
    }
    if (s->pg.in_multi) {
        /* Queued: Redis answers +QUEUED; the EXEC element goes through the policy. */
        pairing_add_multi_op(&s->pg, op);
        pairing_expect(&s->pg, 1);
        if (op->merged) queue_local(s, "+QUEUED\r\n", 9, 0);
        return 1;
    }
    pend *p = pairing_push(&s->pg, PEND_OP);
    p->op = op;
    /* Requests behind a lock command wait for its reply: the lease it records decides how
     * they are treated, and a NOSCRIPT retry must come next in the stream. */
    s->hold = 1;
    return 1;
}

/* Frames and forwards what the client sent. */
static void process_client_input(session *s) {
    lp_block *b = s->in;
    size_t fwd_start = s->in_start, pos = s->in_start;
    while (!s->client_stop && !s->discard && !s->closing && !s->hold) {
        size_t framelen;
        s->req.unauthenticated = preauth_limits(s);
        resp_status st = resp_request_parse(&s->req, b->data + pos, b->len - pos, &framelen);
        if (st == RESP_AGAIN) break;
        if (st == RESP_ERROR) {
            if (pos > fwd_start && !s->up_failed) emit(s, &s->to_up, b, fwd_start, pos - fwd_start);
            fwd_start = pos = b->len;
            if (pairing_silent(&s->pg)) {
                /* Redis closes "after the reply": with nothing left to write it never does,
                 * and ignores what the client sends. */
                if (s->pg.qlen > 0 && !s->pg.raw) s->client_stop = 1;
                else s->discard = 1;
            } else if (s->pg.raw) {
                lp_block *e = lp_block_copy(s->req.errstr, s->req.errlen);
                emit(s, &s->to_client, e, 0, e->len);
                lp_block_unref(e);
                s->client_stop = 1;
                s->close_when_flushed = 1;
            } else {
                queue_local(s, s->req.errstr, s->req.errlen, 1);
                s->client_stop = 1;
            }
            break;
        }
        if (s->up_failed) {
            if (s->req.argc > 0) {
                char line[160];
                int n = snprintf(line, sizeof(line), upstream_err_fmt, s->fail_why[0] ? s->fail_why : "connect failed");
                queue_local(s, line, (size_t)n, 0);
            }
            pos += framelen;
            fwd_start = pos;
            continue;
        }
        if (s->held_setnx != NULL && s->req.argc > 0) {
            int merged = release_held_setnx(s, b, fwd_start, pos);
            fwd_start = pos;
            if (merged) {
                pos += framelen;
                fwd_start = pos;
                continue;
            }
        }
        /* An inline command longer than Redis's 64 KiB limit is never rewritten: Redis
         * (which reads inline requests 16 KiB at a time) refuses it as too big, and only
         * the client's own bytes can get that answer. */
        if (s->px->policy != NULL && !s->pg.raw && s->req.argc >= 2 &&
            !(s->req.inline_req && framelen > RESP_INLINE_MAX_SIZE)) {
            size_t consumed;
            if (lock_request(s, b, fwd_start, pos, framelen, &consumed)) {
                pos += consumed;
                fwd_start = pos;
                continue;
            }
        }
        account_request(s, &s->req);
        pos += framelen;
    }
    if (pos > fwd_start && !s->up_failed) emit(s, &s->to_up, b, fwd_start, pos - fwd_start);
    s->in_start = pos;
    if (s->in_start == b->len || s->client_stop || s->discard) {
        /* Nothing of a frame in progress: drop our reference (writes keep theirs). */
        lp_block_unref(b);
        s->in = NULL;
        s->in_start = 0;
    } else if ((long long)(b->len - s->in_start) > s->px->cfg->client_query_buffer_limit) {
        lp_logf("closing client=%s: query buffer over client-query-buffer-limit", s->peer);
        session_close(s);
    }
    if (s->up_failed) {
        s->client_stop = 1;
        s->close_when_flushed = 1;
    }
}

static void client_read_cb(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf) {
    session *s = st->data;
    if (nread == 0) return;
    if (nread < 0) {
        if (nread != UV_EOF) { session_close(s); return; }
        if (s->hold && s->in != NULL && s->in_start < s->in->len) {
            /* Requests wait behind a lock command: they run first, then the EOF counts. */
            s->eof_seen = 1;
            update_reading(s);
            return;
        }
        client_eof(s);
        return;
    }
    s->in->len += (size_t)nread;
    process_client_input(s);
    if (s->closing) return;
    arm_upstream_timer(s, 0);
    flush(s);
    maybe_finish(s);
}

/* EOF: pass the half-close on to Redis, which (as for a direct client) finishes what it
 * read, frees the client and closes; replies on the way still reach a client that only
 * half-closed. A frame still incomplete is dropped, as Redis drops it. */
static void client_eof(session *s) {
    s->client_stop = 1;
    s->got_eof = 1;
    lp_block_unref(s->in);
    s->in = NULL;
    eof_progress(s);
    update_reading(s);
    maybe_finish(s);
}

/* After the client's EOF the replies still due are delivered and the session closes once
 * the queue is empty. Only where no end would come (a blocking command, pass-through mode)
 * is the half-close passed on to Redis, which then frees the client as for a direct one.
 * (Redis itself drops unwritten output when it reads EOF: the proxy delivers more.) */
static void eof_progress(session *s) {
    if (!s->got_eof || s->up_shut || !s->up_connected || s->up_gone || s->closing) return;
    pend *h = pairing_head(&s->pg);
    if (!s->pg.raw && (h == NULL || !h->blocking)) return;
    s->up_shut = 1;
    if (uv_shutdown(&s->shutdown_req, &s->up.stream, NULL) < 0) s->up_gone = 1;
}

/* Redis's tighter limits before AUTH apply to this session now: it has not authenticated
 * and, as far as the proxy knows, Redis's default user needs a password. While that is not
 * known the frame goes to Redis, which answers for itself. */
static int preauth_limits(const session *s) {
    return !s->pg.authed && s->px->auth_state == LP_AUTH_REQUIRED;
}

/* Rebuilds an EXEC array: elements of rewritten commands go through the policy (a merged
 * SETNX+EXPIRE answers for two), the others are copied as they are. An EXEC that did not
 * run (an error, or a null after a WATCH conflict) passes unchanged. */
static void exec_reply(session *s, pend *p, const char *f, size_t len, lp_str *out) {
    char *end;
    long long count = len > 3 && f[0] == '*' ? strtoll(f + 1, &end, 10) : -1;
    const char *nl = memchr(f, '\n', len);
    if (count < 0 || nl == NULL) { lp_str_add(out, f, len); return; }
    int extra = 0;
    for (int i = 0; i < p->nmops; i++)
        if (p->mops[i].index < count) extra += lock_op_extra_elements(p->mops[i].op);
    char head[32];
    int hn = snprintf(head, sizeof(head), "*%lld\r\n", count + extra);
    lp_str_add(out, head, (size_t)hn);
    size_t pos = (size_t)(nl + 1 - f);
    resp_reply sc;
    resp_reply_init(&sc);
    int m = 0;
    for (long long i = 0; i < count && pos < len; i++) {
        size_t used;
        if (resp_reply_scan(&sc, f + pos, len - pos, &used) != RESP_OK) break;
        while (m < p->nmops && p->mops[m].index < i) m++;
        if (m < p->nmops && p->mops[m].index == i)
            lock_op_reply(&s->px->lock, p->mops[m].op, f + pos, used, 1, out);
        else
            lp_str_add(out, f + pos, used);
        pos += used;
    }
    resp_reply_free(&sc);
}

/* The reply to a rewritten command, kept whole while it arrived. */
static void op_reply(session *s, pend *p, const char *f, size_t len) {
    lp_str out = {0};
    s->px->lock.now_ms = (int64_t)uv_now(s->px->loop);
    s->px->lock.wall_ms = lp_wall_ms();
    if (p->kind == PEND_EXEC) {
        exec_reply(s, p, f, len, &out);
    } else if (lock_op_reply(&s->px->lock, p->op, f, len, 0, &out) == LOCK_REPLY_RETRY) {
        emit_copy(s, &s->to_up, p->op->retry.p, p->op->retry.len);   /* EVAL after NOSCRIPT */
        return;
    }
    emit_copy(s, &s->to_client, out.p, out.len);
    lp_str_free(&out);
    if (p->kind == PEND_OP) s->hold = 0;
    pairing_pop(&s->pg);
}

/* Called when a whole reply frame has been seen: pairs it with its request, or recognises
 * it as out of band, and acts on what it teaches (authentication, a re-probe). */
static void reply_done(session *s) {
    int captured = s->capturing;
    s->capturing = 0;
    proxy *px = s->px;
    pair_reply v = pairing_reply(&s->pg, &s->rep, captured, px->auth_state);
    if (v.auth_required) px->auth_state = LP_AUTH_REQUIRED;
    if (v.auth_not_required) px->auth_state = LP_AUTH_NOT_REQUIRED;
    if (v.auth_answered && s->hold) {
        pend *h = pairing_head(&s->pg);
        if (h == NULL || h->kind != PEND_OP) s->hold = 0;
    }
    if (v.reprobe) proxy_probe_auth(px);
    switch (v.kind) {
    case PAIR_OUT_OF_BAND:
        if (captured) {
            emit_copy(s, &s->to_client, s->cap.p, s->cap.len);
            s->cap.len = 0;
        }
        return;
    case PAIR_SWALLOWED:
        s->cap.len = 0;
        break;
    case PAIR_CAPTURED:
        op_reply(s, pairing_head(&s->pg), s->cap.p, s->cap.len);
        s->cap.len = 0;
        break;
    case PAIR_LOST:
        lose_tracking(s, "reply with no request pending");
        return;
    case PAIR_ANSWER:
        break;
    }
    drain_locals(s);
}

static void process_upstream_input(session *s, size_t off, size_t len) {
    lp_block *b = s->rin;
    if (s->pg.raw) {
        emit(s, &s->to_client, b, off, len);
        return;
    }
    size_t start = off, end = off + len;
    while (off < end && !s->closing) {
        if (!s->rep_mid) {
            /* A new frame: replies to rewritten commands are kept whole, not forwarded. */
            int cap = pairing_captures(&s->pg);
            if (cap && off > start) emit(s, &s->to_client, b, start, off - start);
            if (cap) start = off;
            s->capturing = cap;
        }
        size_t used;
        resp_status st = resp_reply_scan(&s->rep, b->data + off, end - off, &used);
        if (s->capturing) {
            lp_str_add(&s->cap, b->data + off, used);
            start = off + used;
        }
        off += used;
        if (st == RESP_AGAIN) { s->rep_mid = 1; break; }
        if (st == RESP_ERROR) {
            lp_logf("closing client=%s: upstream sent bytes that are not RESP (%s)", s->peer,
                    s->rep.errstr ? s->rep.errstr : "?");
            emit(s, &s->to_client, b, start, off - start);
            s->up_gone = 1;
            s->close_when_flushed = 1;
            return;
        }
        s->rep_mid = 0;
        /* A local reply may be due right after this frame: forward up to here first. */
        emit(s, &s->to_client, b, start, off - start);
        start = off;
        reply_done(s);
        if (s->pg.raw) {
            emit(s, &s->to_client, b, off, end - off);
            return;
        }
    }
    if (off > start) emit(s, &s->to_client, b, start, off - start);
}

/* The upstream is gone: every request still waiting gets an error line, then the client is
 * closed. When Redis itself closed after a protocol error, or mid-reply, it just closes. */
static void upstream_lost(session *s, const char *why) {
    s->up_gone = 1;
    s->client_stop = 1;
    s->close_when_flushed = 1;
    if (s->pg.raw || s->rep_mid || s->pg.last_protocol_error) return;
    char line[200];
    int n = snprintf(line, sizeof(line), upstream_err_fmt, why);
    lp_block *e = lp_block_copy(line, (size_t)n);
    if (e == NULL) abort();
    while (s->pg.qlen) {
        pend *p = pairing_head(&s->pg);
        if (p->kind == PEND_LOCAL) { drain_locals(s); continue; }
        uint32_t k = pairing_owed(p);
        for (uint32_t i = 0; i < k; i++)
            emit(s, &s->to_client, e, 0, e->len);
        pairing_pop(&s->pg);
    }
    lp_block_unref(e);
}

static void up_read_cb(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf) {
    session *s = st->data;
    if (nread == 0) return;
    if (nread < 0) {
        upstream_lost(s, nread == UV_EOF ? "connection closed" : uv_strerror((int)nread));
        uv_read_stop(st);
        s->up_reading = 0;
        flush(s);
        maybe_finish(s);
        return;
    }
    size_t off = s->rin->len;
    s->rin->len += (size_t)nread;
    process_upstream_input(s, off, (size_t)nread);
    /* A rewritten command held the requests behind it: go on with them. */
    if (!s->hold && !s->closing && s->in != NULL && s->in_start < s->in->len && !s->client_stop && !s->discard)
        process_client_input(s);
    if (s->eof_seen && !s->hold && !s->closing && !s->client_stop) client_eof(s);
    /* Writes hold what they need; an idle session keeps no read block. */
    lp_block_unref(s->rin);
    s->rin = NULL;
    if (s->closing) return;
    eof_progress(s);
    arm_upstream_timer(s, 1);
    flush(s);
    maybe_finish(s);
}

/* ---- connecting ---- */

static void handle_closed(uv_handle_t *h) {
    session *s = h->data;
    if (--s->open_handles > 0) return;
    resp_request_free(&s->req);
    resp_request_free(&s->peek);
    resp_reply_free(&s->rep);
    if (s->px->leases) lease_drop_conn(s->px->leases, s->conn_id);
    lp_str_free(&s->cap);
    lock_op_free(s->held_setnx);
    free(s->multi_setnx);
    lp_block_unref(s->in);
    lp_block_unref(s->rin);
    pairing_free(&s->pg);
    lp_wreq_free(lp_out_take(&s->to_up));
    lp_wreq_free(lp_out_take(&s->to_client));
    free(s);
}

static void close_handle(uv_handle_t *h) {
    if (!uv_is_closing(h)) uv_close(h, handle_closed);
}

static void idle_close_cb(uv_timer_t *t) {
    session_close(t->data);
}

static void connect_failed(session *s, const char *why) {
    snprintf(s->fail_why, sizeof(s->fail_why), "%s", why);
    /* At most one line a second: under EMFILE every accepted client fails the same way. */
    proxy *px = s->px;
    uint64_t now = uv_now(px->loop);
    px->connect_failures++;
    if (now - px->last_connect_log >= 1000) {
        lp_logf("upstream connect failed for client=%s: %s (%llu failures so far)", s->peer, why,
                (unsigned long long)px->connect_failures);
        px->last_connect_log = now;
    }
    s->up_failed = 1;
    /* Answer what the client sends with an error line, then close; a client that sends
     * nothing is closed after connect-timeout. */
    uv_timer_start(&s->timer, idle_close_cb, (uint64_t)s->px->cfg->connect_timeout_ms, 0);
    update_reading(s);
}

static void connect_cb(uv_connect_t *req, int status) {
    session *s = req->data;
    uv_timer_stop(&s->timer);
    if (s->closing) return;
    if (status < 0) {
        connect_failed(s, status == UV_ECANCELED ? "connect timeout" : uv_strerror(status));
        return;
    }
    s->up_connected = 1;
    if (s->up.handle.type == UV_TCP) uv_tcp_nodelay(&s->up.tcp, 1);
    update_reading(s);
}

/* Closing the handle cancels the connect: connect_cb then sees UV_ECANCELED. */
static void connect_timeout_cb(uv_timer_t *t) {
    session *s = t->data;
    if (s->up_connected || s->closing) return;
    close_handle(&s->up.handle);
}

void session_close(session *s) {
    if (s->closing) return;
    s->closing = 1;
    proxy *px = s->px;
    if (s->prev) s->prev->next = s->next;
    else px->sessions = s->next;
    if (s->next) s->next->prev = s->prev;
    px->nclients--;
    close_handle(&s->client.handle);
    close_handle(&s->up.handle);
    close_handle((uv_handle_t *)&s->timer);
    if (px->draining && px->sessions == NULL) proxy_drained(px);
}

void session_drain(session *s) {
    s->client_stop = 1;
    update_reading(s);
    maybe_finish(s);
}

static void format_peer(session *s) {
    struct sockaddr_storage sa;
    int len = sizeof(sa);
    strcpy(s->peer, "unix");
    if (s->client.handle.type != UV_TCP) return;
    if (uv_tcp_getpeername(&s->client.tcp, (struct sockaddr *)&sa, &len) != 0) return;
    char ip[INET6_ADDRSTRLEN] = "?";
    int port = 0;
    if (sa.ss_family == AF_INET) {
        struct sockaddr_in *a = (struct sockaddr_in *)&sa;
        uv_ip4_name(a, ip, sizeof(ip));
        port = ntohs(a->sin_port);
        snprintf(s->peer, sizeof(s->peer), "%s:%d", ip, port);
    } else if (sa.ss_family == AF_INET6) {
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)&sa;
        uv_ip6_name(a, ip, sizeof(ip));
        port = ntohs(a->sin6_port);
        snprintf(s->peer, sizeof(s->peer), "[%s]:%d", ip, port);
    }
}

const char *session_peer(const session *s) { return s->peer; }
session *lp_session_next(session *s) { return s->next; }

/* Accepts one client and starts connecting its upstream. Returns 0, or a libuv error when
 * nothing could be accepted. */
int session_start(proxy *px) {
    const lp_config *c = px->cfg;
    session *s = calloc(1, sizeof(*s));
    if (s == NULL) return UV_ENOMEM;
    s->px = px;
    resp_request_init(&s->req);
    s->req.max_bulk_len = c->proto_max_bulk_len;
    resp_request_init(&s->peek);
    s->peek.max_bulk_len = c->proto_max_bulk_len;
    s->conn_id = ++px->next_conn_id;
    pairing_init(&s->pg, px->auth_state == LP_AUTH_NOT_REQUIRED);
    resp_reply_init(&s->rep);
    if (c->listen.is_unix) uv_pipe_init(px->loop, &s->client.pipe, 0);
    else uv_tcp_init(px->loop, &s->client.tcp);
    if (c->upstream.is_unix) uv_pipe_init(px->loop, &s->up.pipe, 0);
    else uv_tcp_init(px->loop, &s->up.tcp);
    uv_timer_init(px->loop, &s->timer);
    s->client.handle.data = s->up.handle.data = s->timer.data = s;
    s->open_handles = 3;
    s->next = px->sessions;
    if (s->next) s->next->prev = s;
    px->sessions = s;
    px->nclients++;

    int rc = uv_accept(&px->listener.stream, &s->client.stream);
    if (rc < 0) {
        s->client_stop = 1;
        session_close(s);
        return rc;
    }
    format_peer(s);
    const char *colon = strrchr(s->peer, ':');
    s->ip_len = colon ? (size_t)(colon - s->peer) : strlen(s->peer);
    if (!c->listen.is_unix) uv_tcp_nodelay(&s->client.tcp, 1);

    if (px->nclients > c->maxclients) {
        static const char full[] = "-ERR max number of clients reached\r\n";
        lp_block *e = lp_block_copy(full, sizeof(full) - 1);
        emit(s, &s->to_client, e, 0, e->len);
        lp_block_unref(e);
        s->client_stop = 1;
        s->up_gone = 1;
        s->close_when_flushed = 1;
        flush(s);
        maybe_finish(s);
        return 0;
    }

    s->connect_req.data = s;
    if (c->upstream.is_unix) {
        uv_pipe_connect(&s->connect_req, &s->up.pipe, c->upstream.path, connect_cb);
    } else {
        rc = uv_tcp_connect(&s->connect_req, &s->up.tcp, (const struct sockaddr *)&px->upstream_sa, connect_cb);
        if (rc < 0) { connect_failed(s, uv_strerror(rc)); return 0; }
    }
    uv_timer_start(&s->timer, connect_timeout_cb, (uint64_t)c->connect_timeout_ms, 0);
    return 0;
}
