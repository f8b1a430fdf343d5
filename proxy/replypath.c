/* The reply path: upstream bytes -> resp/ scanner -> pairing -> client, or captured whole
 * for the policy when the reply answers a rewritten command. */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <ctype.h>
#include <arpa/inet.h>
#include "proxy/session.h"

/* Sends LOCAL entries that reached the head of the queue. */
static void drain_locals(session *s) {
    pend *p;
    while ((p = pairing_head(&s->pg)) != NULL && p->kind == PEND_LOCAL) {
        sess_emit_copy(s, &s->to_client, p->local, p->local_len);
        if (p->close_after) sess_client_to(s, CL_FLUSH_CLOSE);
        pairing_pop(&s->pg);
    }
}

void sess_queue_local(session *s, const char *bytes, size_t len, int close_after) {
    pairing_push_local(&s->pg, bytes, len, close_after);
    drain_locals(s);
}

/* Stops pairing replies on this session: from now on bytes pass through both ways. */
void sess_lose_tracking(session *s, const char *why) {
    if (pairing_lost(&s->pg)) return;
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
    /* Replies still due are paired and delivered as before; then bytes pass through. */
    pairing_lose(&s->pg);
    drain_locals(s);
}

/* Redis started a replication stream: nothing is framed from here on, either way. */
void sess_start_repl_stream(session *s) {
    lp_logf("replication client=%s: SYNC/PSYNC answered with a replication stream; passing bytes through", s->peer);
    s->repl_stream = 1;
    s->hold = 0;
    pairing_stream(&s->pg);
    s->raw_unscanned = 1;     /* an RDB payload and a command stream: nothing to frame */
    drain_locals(s);
    uv_timer_stop(&s->timer);
}

int sess_barrier(session *s, const char *line, size_t len, int silent) {
    if (!pairing_lost(&s->pg) || s->raw_unscanned) return 0;
    char nonce[48], ping[160], want[64];
    int nn = snprintf(nonce, sizeof(nonce), "lockproxy-barrier-%llu", (unsigned long long)s->conn_id);
    /* DISCARD first: inside MULTI a PING would only be queued. It answers once whether a
     * MULTI is open or not, and the connection closes after the error anyway, as Redis closes
     * it (discarding the transaction). */
    if (silent && s->pg.proto == 2 && pairing_subscribed(&s->pg)) return 0;   /* ON refused */
    /* With replies off: DISCARD's reply is silenced (and a SKIP ends there), then ON answers:
     * one frame before the marker either way. */
    int pn = snprintf(ping, sizeof(ping), "DISCARD\r\n%s*2\r\n$4\r\nPING\r\n$%d\r\n%s\r\n",
                      silent ? "CLIENT REPLY ON\r\n" : "", nn, nonce);
    int wn = snprintf(want, sizeof(want), "$%d\r\n%s\r\n", nn, nonce);
    sess_emit_copy(s, &s->to_up, ping, (size_t)pn);
    s->pg.raw = 0;      /* still losing: nothing is accounted for, the queue is paired */
    pend *b = pairing_push(&s->pg, PEND_BARRIER);
    b->local = malloc((size_t)wn);
    if (b->local == NULL) abort();
    memcpy(b->local, want, (size_t)wn);
    b->local_len = (size_t)wn;
    b->n = 1;                  /* the frame before the marker that is the proxy's own */
    sess_queue_local(s, line, len, 1);
    return 1;
}

void lp_alloc_up(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
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

/* Redis refused the lock scripts for this connection (an ACL user without @scripting): its
 * lock commands go as it sends them from now on, and the log says so once. */
static void log_check_unavailable(session *s, const lock_op *op) {
    lp_logf("check_unavailable client=%s: Redis refuses scripts for this connection (NOPERM); "
            "its lock commands pass unchecked", s->peer);
    if (s->px->policy != NULL)
        lock_op_log_check_unavailable(&s->px->lock, op, s->peer, s->pg.name, s->pg.name_len);
}

/* The reply to a rewritten command, kept whole while it arrived. */
static void op_reply(session *s, pend *p, const char *f, size_t len) {
    lp_str out = {0};
    if (p->kind == PEND_EXEC && s->ex.phase != EX_NONE) {
        s->ex.phase = EX_NONE;    /* streamed: the client has had every byte of it */
    } else if (p->kind == PEND_OP && p->exec_elem) {
        /* An element of a split EXEC, in the protocol in force when it comes. */
        lock_op_set_proto(p->op, s->pg.proto);
        lock_op_reply(&s->px->lock, p->op, f, len, 1, &out);
    } else if (p->kind == PEND_EXEC) {
        /* Replies are in the protocol in force when they come (a HELLO pipelined before the
         * command may have changed it since the command was decided). */
        lock_exec_reply(&s->px->lock, p->mops, p->nmops, s->pg.proto, f, len, &out);
    } else if ((lock_op_set_proto(p->op, s->pg.proto), lock_op_reply(&s->px->lock, p->op, f, len, 0, &out)) ==
               LOCK_REPLY_RETRY) {
        /* EVAL after NOSCRIPT; the client's own command after NOPERM for scripting. */
        if (lock_op_noperm(p->op) && !s->no_scripts) {
            s->no_scripts = 1;
            proxy_user_set_noscripts(s->px, s->pg.user, s->pg.user_len);
            log_check_unavailable(s, p->op);
        }
        sess_emit_copy(s, &s->to_up, lock_op_retry(p->op)->p, lock_op_retry(p->op)->len);
        return;
    } else if (!lock_op_noperm(p->op) && lock_op_scripted(p->op) && len > 0 && f[0] != '-' &&
               !proxy_user_scripts(s->px, s->pg.user, s->pg.user_len)) {
        proxy_user_set_scripts(s->px, s->pg.user, s->pg.user_len);   /* a script ran for this user */
    }
    sess_emit_copy(s, &s->to_client, out.p, out.len);
    lp_str_free(&out);
    if (p->kind == PEND_OP && !p->exec_elem) s->hold = 0;
    pairing_pop(&s->pg);
}

/* Called when a whole reply frame has been seen: pairs it with its request, or recognises
 * it as out of band, and acts on what it teaches (authentication, a re-probe). */
static void reply_done(session *s) {
    int captured = s->capturing;
    s->capturing = 0;
    proxy *px = s->px;
    pend *bh = pairing_head(&s->pg);
    if (bh != NULL && bh->kind == PEND_BARRIER) {
        /* Tracking lost: replies pass until the proxy's own PING <marker> is answered. */
        if (captured && s->cap.len > 0 && s->cap.p[0] == '>') {
            sess_emit_copy(s, &s->to_client, s->cap.p, s->cap.len);   /* a push: never ours */
            s->cap.len = 0;
        } else if (captured) {
            const char *m = bh->local;
            size_t ml = bh->local_len, n = s->cap.len;
            int marker = n >= ml && memcmp(s->cap.p + n - ml, m, ml) == 0 &&
                         (n == ml || (n > 4 && memcmp(s->cap.p, "*2\r\n", 4) == 0));
            if (marker) {
                pairing_pop(&s->pg);      /* and the frames held back: the proxy's own */
            } else {
                /* Hold back the last bh->n frames (prev: their bytes, cut: where each ends). */
                if (bh->nheld == bh->n && bh->n > 0) {
                    size_t first = bh->cut[0];
                    sess_emit_copy(s, &s->to_client, bh->prev, first);
                    memmove(bh->prev, bh->prev + first, bh->prev_len - first);
                    bh->prev_len -= first;
                    bh->cut[0] = bh->cut[1] - first;
                    bh->nheld--;
                }
                char *np = realloc(bh->prev, bh->prev_len + n + 1);
                if (np == NULL) abort();
                bh->prev = np;
                memcpy(bh->prev + bh->prev_len, s->cap.p, n);
                bh->prev_len += n;
                bh->cut[bh->nheld++] = bh->prev_len;
            }
            s->cap.len = 0;
        }
        drain_locals(s);
        return;
    }
    pair_reply v = pairing_reply(&s->pg, &s->rep, captured, px->auth_state);
    if (v.auth_required) px->auth_state = LP_AUTH_REQUIRED;
    if (v.auth_not_required) px->auth_state = LP_AUTH_NOT_REQUIRED;
    if ((v.auth_answered || v.sync_refused || v.release_hold) && s->hold) {
        pend *h = pairing_head(&s->pg);
        if (h == NULL || h->kind != PEND_OP) s->hold = 0;
    }
    if (v.reprobe) proxy_probe_auth(px);
    if (v.acl_changed) proxy_forget_script_users(px);
    if (v.script_probe) {
        if (v.scripts_refused) proxy_user_set_noscripts(px, s->pg.user, s->pg.user_len);
        else proxy_user_set_scripts(px, s->pg.user, s->pg.user_len);
    }
    switch (v.kind) {
    case PAIR_OUT_OF_BAND:
        if (captured) {
            sess_emit_copy(s, &s->to_client, s->cap.p, s->cap.len);
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
        sess_lose_tracking(s, "reply with no request pending");
        return;
    case PAIR_ANSWER:
        break;
    }
    drain_locals(s);
}

/* 1 when the reply frame starting with byte c, due to the EXEC at the head of the queue, is
 * streamed element by element: an array ('*') that cannot be out of band (RESP2 pub/sub
 * messages and MONITOR lines are the only out-of-band frames that are not pushes). Anything
 * else (an error, a null, a push) is small or not the EXEC's, and is captured whole. */
static int exec_streams(session *s, char c) {
    pend *h = pairing_head(&s->pg);
    return h != NULL && h->kind == PEND_EXEC && c == '*' && !s->pg.monitor &&
           !(pairing_subscribed(&s->pg) && s->pg.proto != 3);
}

/* Feeds n bytes at off in b, all part of a streamed EXEC reply, to the client: the header with
 * the client's element count, the elements of plain commands as they are, those of lock
 * commands through the policy, each captured alone. */
static void exec_feed(session *s, lp_block *b, size_t off, size_t n) {
    pend *h = pairing_head(&s->pg);
    while (n > 0 && !s->closing) {
        if (s->ex.phase == EX_HEADER) {
            size_t k = 0;
            while (k < n && b->data[off + k] != '\n') k++;
            int line_done = k < n;
            if (line_done) k++;
            if (s->ex.hdr_len + k > sizeof(s->ex.hdr)) {
                /* Not a header Redis writes: passed on unchanged. */
                sess_emit_copy(s, &s->to_client, s->ex.hdr, s->ex.hdr_len);
                s->ex.phase = EX_PASS;
                continue;
            }
            memcpy(s->ex.hdr + s->ex.hdr_len, b->data + off, k);
            s->ex.hdr_len += k;
            off += k;
            n -= k;
            if (!line_done) return;
            char num[32];
            size_t dl = s->ex.hdr_len >= 3 ? s->ex.hdr_len - 3 : 0;    /* '*' ... "\r\n" */
            memcpy(num, s->ex.hdr + 1, dl);
            num[dl] = '\0';
            char *end;
            long long count = dl > 0 ? strtoll(num, &end, 10) : -1;
            if (dl == 0 || *end != '\0' || count < 0) {
                sess_emit_copy(s, &s->to_client, s->ex.hdr, s->ex.hdr_len);   /* "*-1": no run */
                s->ex.phase = EX_PASS;
                continue;
            }
            lp_str head = {0};
            resp_enc_num(&head, '*', lock_exec_count(h->mops, h->nmops, count));
            sess_emit_copy(s, &s->to_client, head.p, head.len);
            lp_str_free(&head);
            s->ex.count = count;
            s->ex.i = 0;
            s->ex.op = count > 0 ? lock_exec_op_at(h->mops, h->nmops, 0) : NULL;
            s->ex.phase = EX_ELEMS;
            continue;
        }
        if (s->ex.phase == EX_PASS || s->ex.i >= s->ex.count) {
            sess_emit(s, &s->to_client, b, off, n);
            return;
        }
        size_t used;
        resp_status st = resp_reply_scan(&s->ex.elem, b->data + off, n, &used);
        if (s->ex.op != NULL) lp_str_add(&s->cap, b->data + off, used);
        else sess_emit(s, &s->to_client, b, off, used);
        off += used;
        n -= used;
        if (st == RESP_ERROR) {
            /* The top-level scanner accepted these bytes: this cannot happen; pass them on. */
            s->ex.phase = EX_PASS;
            resp_reply_free(&s->ex.elem);
            continue;
        }
        if (st != RESP_OK) return;
        if (s->ex.op != NULL) {
            lp_str out = {0};
            lock_op_set_proto(s->ex.op, s->pg.proto);
            lock_op_reply(&s->px->lock, s->ex.op, s->cap.p, s->cap.len, 1, &out);
            sess_emit_copy(s, &s->to_client, out.p, out.len);
            lp_str_free(&out);
            s->cap.len = 0;
        }
        s->ex.i++;
        s->ex.op = s->ex.i < s->ex.count ? lock_exec_op_at(h->mops, h->nmops, s->ex.i) : NULL;
    }
}

/* The header line of a split EXEC (in s->cap) is in: the client gets the header it promises,
 * and the elements are queued (pairing_exec_header). */
static void exec_header(session *s) {
    lp_str hdr = {0};
    const char *lost = NULL;
    if (pairing_exec_header(&s->pg, s->cap.p, s->cap.len, &hdr, &lost)) sess_emit_copy(s, &s->to_client, hdr.p, hdr.len);
    else sess_emit_copy(s, &s->to_client, s->cap.p, s->cap.len);
    lp_str_free(&hdr);
    s->cap.len = 0;
    if (lost != NULL) sess_lose_tracking(s, lost);
    drain_locals(s);
}

/* Pass-through (tracking lost) still frames the replies, without pairing them, so that a
 * barrier (sess_barrier) starts at a frame boundary; bytes that are not RESP end that. */
static void raw_pass(session *s, lp_block *b, size_t off, size_t len) {
    size_t pos = off, end = off + len, used;
    while (!s->raw_unscanned && pos < end) {
        resp_status rs = resp_reply_scan(&s->rep, b->data + pos, end - pos, &used);
        pos += used;
        if (rs == RESP_ERROR) s->raw_unscanned = 1;
        s->rep_mid = rs == RESP_AGAIN;
    }
    sess_emit(s, &s->to_client, b, off, len);
}

static void process_upstream_input(session *s, size_t off, size_t len) {
    lp_block *b = s->rin;
    if (s->pg.raw) {
        raw_pass(s, b, off, len);
        return;
    }
    size_t start = off, end = off + len;
    while (off < end && !s->closing) {
        if (!s->rep_mid && pairing_sync_starts(&s->pg, b->data[off])) {
            if (off > start) sess_emit(s, &s->to_client, b, start, off - start);
            sess_start_repl_stream(s);
            sess_emit(s, &s->to_client, b, off, end - off);
            return;
        }
        if (!s->rep_mid && !s->exec_header && pairing_wants_header(&s->pg)) {
            /* A split EXEC: its header line alone, then its elements one by one. */
            if (off > start) sess_emit(s, &s->to_client, b, start, off - start);
            s->exec_header = 1;
        }
        if (s->exec_header) {
            const char *nl = memchr(b->data + off, '\n', end - off);
            size_t used = nl != NULL ? (size_t)(nl - (b->data + off)) + 1 : end - off;
            lp_str_add(&s->cap, b->data + off, used);
            off += used;
            start = off;
            if (nl == NULL && s->cap.len < 64) break;
            s->exec_header = 0;
            exec_header(s);
            if (pairing_exec_done(&s->pg)) s->hold = 0;
            if (s->pg.raw) {
                raw_pass(s, b, off, end - off);
                return;
            }
            continue;
        }
        if (!s->rep_mid) {
            /* A new frame: replies to rewritten commands are kept whole, not forwarded. */
            int cap = pairing_captures(&s->pg);
            if (cap && off > start) sess_emit(s, &s->to_client, b, start, off - start);
            if (cap) start = off;
            s->capturing = cap;
            s->ex.phase = EX_NONE;
            /* A large capture does not keep its memory for the rest of the session. */
            if (s->cap.len == 0 && s->cap.cap > 64 * 1024) lp_str_free(&s->cap);
            if (cap && exec_streams(s, b->data[off])) {
                s->ex.phase = EX_HEADER;
                s->ex.hdr_len = 0;
            }
        }
        size_t used;
        resp_status st = resp_reply_scan(&s->rep, b->data + off, end - off, &used);
        if (s->ex.phase != EX_NONE) {
            exec_feed(s, b, off, used);
            start = off + used;
        } else if (s->capturing) {
            lp_str_add(&s->cap, b->data + off, used);
            start = off + used;
        }
        off += used;
        if (st == RESP_AGAIN) { s->rep_mid = 1; break; }
        if (st == RESP_ERROR) {
            lp_logf("closing client=%s: upstream sent bytes that are not RESP (%s)", s->peer,
                    s->rep.errstr ? s->rep.errstr : "?");
            s->px->m.up_err_protocol++;
            sess_emit(s, &s->to_client, b, start, off - start);
            s->up_state = UP_GONE;
            sess_client_to(s, CL_FLUSH_CLOSE);
            return;
        }
        s->rep_mid = 0;
        /* A local reply may be due right after this frame: forward up to here first. */
        sess_emit(s, &s->to_client, b, start, off - start);
        start = off;
        reply_done(s);
        if (pairing_exec_done(&s->pg)) s->hold = 0;
        if (s->pg.raw) {
            raw_pass(s, b, off, end - off);
            return;
        }
    }
    if (off > start) sess_emit(s, &s->to_client, b, start, off - start);
}

/* The upstream is gone: every request still waiting gets an error line, then the client is
 * closed. When Redis itself closed after a protocol error, or mid-reply, it just closes. */
void sess_upstream_lost(session *s, const char *why) {
    int shut = s->up_state == UP_SHUT;
    s->up_state = UP_GONE;
    sess_client_to(s, CL_FLUSH_CLOSE);
    /* After the client's half-close was passed on, Redis closing is its answer to it: it
     * frees a half-closed client as it would a direct one, and nothing is made up for what
     * it did not answer. */
    if (s->pg.raw || s->rep_mid || s->pg.last_protocol_error || shut) return;
    char line[200];
    int n = snprintf(line, sizeof(line), UPSTREAM_ERR_FMT, why);
    lp_block *e = lp_block_copy(line, (size_t)n);
    if (e == NULL) abort();
    while (s->pg.qlen) {
        pend *p = pairing_head(&s->pg);
        if (p->kind == PEND_LOCAL) { drain_locals(s); continue; }
        uint32_t k = pairing_owed(p);
        for (uint32_t i = 0; i < k; i++)
            sess_emit(s, &s->to_client, e, 0, e->len);
        pairing_pop(&s->pg);
    }
    lp_block_unref(e);
}

void sess_up_read_cb(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf) {
    session *s = st->data;
    if (nread == 0) return;
    if (nread < 0) {
        /* Redis closing after a QUIT, or the client's own half-close, owes nothing. */
        if (nread != UV_EOF || (s->pg.qlen > 0 && !s->pg.raw)) s->px->m.up_err_closed++;
        sess_upstream_lost(s, nread == UV_EOF ? "connection closed" : uv_strerror((int)nread));
        uv_read_stop(st);
        s->up_reading = 0;
        sess_flush(s);
        sess_maybe_finish(s);
        return;
    }
    size_t off = s->rin->len;
    s->rin->len += (size_t)nread;
    s->px->m.up_in += (uint64_t)nread;
    process_upstream_input(s, off, (size_t)nread);
    /* A rewritten command held the requests behind it: go on with them. */
    if (!s->hold && !s->closing && s->in != NULL && s->in_start < s->in->len && s->client_state == CL_READING)
        sess_process_client_input(s);
    /* The batch's last reply is out (to the client's write queue): its latency. */
    if (s->lat_busy && (s->pg.qlen == 0 || s->pg.raw)) {
        if (!s->lat_skip && !s->pg.raw) lp_hist_observe(&s->px->m.request_lat, uv_hrtime() - s->lat_t0);
        s->lat_busy = 0;
    }
    if (s->eof_seen && !s->hold && !s->closing && s->client_state < CL_STOPPED) sess_client_eof(s);
    /* Writes hold what they need; an idle session keeps no read block. */
    lp_block_unref(s->rin);
    s->rin = NULL;
    if (s->closing) return;
    sess_eof_progress(s);
    sess_arm_upstream_timer(s, 1);
    sess_flush(s);
    sess_maybe_finish(s);
}
