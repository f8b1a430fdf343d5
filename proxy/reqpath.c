/* The request path: client bytes -> resp/ framer -> policy/ decision -> pairing -> upstream. */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <ctype.h>
#include <arpa/inet.h>
#include "proxy/session.h"

static int preauth_limits(const session *s);

/* ---- reading ---- */

/* Client reads continue the block holding the frame in progress; when it is full the frame
 * moves to a block twice its size, or just large enough for the bulk argument being read.
 * A move that would take what the session holds (both blocks counted, as both live during
 * the copy) past hard-limit ends the session instead: libuv then reports UV_ENOBUFS. */
void lp_alloc_client(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
    session *s = h->data;
    lp_block *b = s->in;
    if (b != NULL && b->cap - b->len < 1024) {
        size_t keep = b->len - s->in_start;
        size_t want = keep * 2 > LP_BLOCK_SIZE ? keep * 2 : LP_BLOCK_SIZE;
        if (!s->hold && s->req.bulk_len >= 0) {
            size_t exact = s->req.pos + (size_t)s->req.bulk_len + 2 + LP_BLOCK_SIZE;
            if (exact > keep + 1024 && exact < want) want = exact;
        }
        if ((long long)(sess_held_bytes(s) + want) > s->px->cfg->hard_limit) {
            lp_logf("closing client=%s: %zu bytes held for it and a request of more than %zu bytes, over hard-limit",
                    s->peer, sess_held_bytes(s), keep);
            buf->base = NULL;
            buf->len = 0;
            return;
        }
        lp_block *nb = lp_block_new(want);
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

/* Records how Redis will answer one framed request that goes to it as it is, and acts on
 * the verdict: tracking lost, a hold until an AUTH's reply, QUIT. */
static void account_request(session *s, const resp_request *r, const resp_command *cmd) {
    pair_req v = pairing_request(&s->pg, r, cmd);
    if (v.multi_begins) lock_txn_begin(&s->txn);
    if (v.lost) sess_lose_tracking(s, v.lost);
    if (v.hold) s->hold = 1;
    if (v.quit) sess_client_to(s, CL_STOPPED);
    if (v.discard) sess_client_to(s, CL_DISCARDING);
}

/* Fills in what policy/lock.c needs to know about the client. */
static void lock_client_of(session *s, const resp_command *cmd, lock_client *c) {
    c->cmd = cmd;
    c->conn_id = s->conn_id;
    c->addr = s->peer;
    c->ip_len = s->ip_len;
    c->name = s->pg.name;
    c->name_len = s->pg.name_len;
    c->proto = s->pg.proto;
    c->in_multi = s->pg.in_multi;
    /* Inside MULTI: the database the SELECTs queued before it give. */
    c->db = s->pg.in_multi ? s->pg.multi_db : s->pg.db;
    c->multi_setnx = s->pg.in_multi ? s->txn.setnx_key : NULL;
    c->multi_setnx_len = s->txn.setnx_len;
    c->txn = s->pg.in_multi ? &s->txn : NULL;
    c->now_ms = (int64_t)uv_now(s->px->loop);
    c->wall_ms = lp_wall_ms();
    c->user = s->pg.user;
    c->user_len = s->pg.user_len;
    c->no_split = pairing_silent(&s->pg);
    c->no_scripts = s->no_scripts || (s->px->n_noscript_users > 0 &&
                                      proxy_user_noscripts(s->px, s->pg.user, s->pg.user_len));
}

/* 1 when a MULTI from this connection should be preceded by the scripting probe: a policy is
 * loaded, the client is authenticated and its replies are on, and whether its user may run
 * scripts is not known yet. */
static int need_script_probe(session *s) {
    if (s->px->policy == NULL || pairing_lost(&s->pg) || s->no_scripts || pairing_silent(&s->pg)) return 0;
    if (!(s->pg.authed || s->px->auth_state == LP_AUTH_NOT_REQUIRED)) return 0;
    return !proxy_user_scripts(s->px, s->pg.user, s->pg.user_len) &&
           !proxy_user_noscripts(s->px, s->pg.user, s->pg.user_len);
}

/* An op queued in MULTI goes as an EVALSHA, except the first of its script in this
 * transaction, which goes as an EVAL carrying the script (lock_op_multi_eval): EXEC runs it
 * first and loads the script for the EVALSHAs after it (a SCRIPT FLUSH between the queueing
 * and EXEC cannot make them NOSCRIPT), and Redis judges it at queue time as it judges the
 * client's command. */
static void preload_script(session *s, lock_op *op) {
    unsigned bit = lock_op_preload(op, NULL);
    if (bit == 0 || (s->txn.preloaded & bit)) return;
    if (lock_op_multi_eval(op) == 0) s->txn.preloaded |= bit;
}

/* The request after a held SETNX (argc 0: none, the transaction ends) lets the SETNX go, with
 * Redis's +QUEUED for it swallowed (the client had one). An EXPIRE of its key merges into it:
 * then the EXPIRE is taken (1) and answered +QUEUED here; otherwise 0. */
static int release_held_setnx(session *s, lp_block *b, size_t fwd_start, size_t pos) {
    if (pos > fwd_start) sess_emit(s, &s->to_up, b, fwd_start, pos - fwd_start);
    int merged;
    lock_op *op = lock_txn_release(&s->txn, &s->px->lock, lp_wall_ms(), s->pg.in_multi ? s->req.argc : 0,
                                   s->req.argv, &merged);
    preload_script(s, op);
    const lp_str *send = lock_op_send(op);
    sess_emit_copy(s, &s->to_up, send->p, send->len);
    pairing_push(&s->pg, PEND_SWALLOW);
    pairing_add_multi_op(&s->pg, op);
    if (merged) {
        s->pg.skip_cur = 0;
        sess_queue_local(s, "+QUEUED\r\n", 9, 0);
    }
    return merged;
}

/* Tracking is lost on this connection, so lock commands go as the client sent them: each one
 * a rule would have rewritten is logged (lock_unchecked) and counted, proxy-wide and per
 * connection, so that no lock command passes unprotected unseen. */
static void log_unchecked(session *s, const resp_command *cmd, const char *frame, size_t framelen) {
    if (cmd->keys == RESP_KEYS_NUMKEYS) return;   /* scripts are forwarded anyway */
    proxy *px = s->px;
    lock_client c;
    lock_client_of(s, cmd, &c);
    c.in_multi = 0;
    c.txn = NULL;
    lock_op *op = NULL;
    /* The decision only: its own events would say "rewritten". */
    void (*log)(void *, const audit_event *) = px->lock.log;
    px->lock.log = NULL;
    lock_action act = lock_decide(&px->lock, &c, s->req.argc, s->req.argv, frame, framelen, &op);
    px->lock.log = log;
    lock_op_free(op);
    if (act == LOCK_FORWARD) return;
    px->unchecked_lock_cmds++;
    s->unchecked++;
    const resp_arg *key = &s->req.argv[1];
    for (int i = 1; i < s->req.argc; i++)     /* DEL names its lock keys anywhere */
        if (policy_match(px->policy, s->req.argv[i].ptr, s->req.argv[i].len) != NULL) { key = &s->req.argv[i]; break; }
    lp_logf("lock_unchecked client=%s: a lock command passes unchecked (tracking lost); %llu on this "
            "connection, %llu in all", s->peer, (unsigned long long)s->unchecked,
            (unsigned long long)px->unchecked_lock_cmds);
    if (log == NULL) return;
    char detail[160];
    snprintf(detail, sizeof(detail), "tracking lost on this connection: forwarded as sent (%llu on this "
             "connection, %llu in all)", (unsigned long long)s->unchecked, (unsigned long long)px->unchecked_lock_cmds);
    const policy_rule *r = policy_match(px->policy, key->ptr, key->len);
    audit_event e;
    memset(&e, 0, sizeof(e));
    e.event = "lock_unchecked";
    e.mode = r != NULL ? policy_mode_name(r->mode) : "-";
    e.action = "forwarded";
    e.rule = r != NULL ? r->prefix : "";
    e.rule_len = r != NULL ? r->prefix_len : 0;
    e.key = key->ptr;
    e.key_len = key->len;
    e.client = s->peer;
    e.client_name = s->pg.name;
    e.client_name_len = s->pg.name_len;
    e.detail = detail;
    e.held_ms = -1;
    log(px->lock.log_ud, &e);
}

/* Asks the lock policy about the request just framed (at pos in b). Returns 0 when it is
 * forwarded as usual; 1 when the policy took it, with *consumed the bytes it covered. Each
 * command is judged on its own: several workers may share one connection, so a SETNX and
 * the EXPIRE pipelined after it are never merged outside MULTI. */
static int lock_request(session *s, const resp_command *cmd, lp_block *b, size_t fwd_start, size_t pos,
                        size_t framelen, size_t *consumed) {
    proxy *px = s->px;
    const resp_request *r = &s->req;
    lock_client c;
    lock_client_of(s, cmd, &c);
    lock_op *op = NULL;
    lock_action act = lock_decide(&px->lock, &c, r->argc, r->argv, b->data + pos, framelen, &op);
    /* Rewritten: sent as a script of the proxy's in enforce mode; forwarded: with its own
     * effect (as sent, or in audit mode inside a script that only records the lease). */
    if (act == LOCK_LOCAL) px->m.lock_refused++;
    else if (act == LOCK_SEND && lock_op_send(op)->len > 0 && !lock_op_audit(op)) px->m.lock_rewritten++;
    else px->m.lock_forwarded++;
    if (s->pg.in_multi) lock_txn_note(&s->txn, cmd, r->argc, r->argv);
    if (act == LOCK_FORWARD) { lock_op_free(op); return 0; }
    if (s->pg.in_multi) lock_txn_queued(&s->txn, op);
    int silent = pairing_silent(&s->pg);
    /* What came before this request goes first. */
    if (pos > fwd_start) sess_emit(s, &s->to_up, b, fwd_start, pos - fwd_start);
    *consumed = framelen;
    if (silent) {
        /* Replies are off or skipped: the rewrite still goes out (EVAL, since a NOSCRIPT
         * could not be seen) and nothing is paired. An acquire is taken as done: its lease is
         * cached and renewed, which checks the record in Redis, so one that failed renews
         * nothing. A command the proxy answers itself sends nothing but, under SKIP, an empty
         * line: Redis ends a SKIP at every frame, and the client's frame did not go. Inside
         * MULTI (replies off) the rewrite is queued, and its EXEC reply is never sent. */
        if (act == LOCK_SEND) {
            const lp_str *bytes = lock_op_uses_sha(op) ? lock_op_retry(op) : lock_op_send(op);
            if (bytes->len > 0) sess_emit_copy(s, &s->to_up, bytes->p, bytes->len);
            else sess_emit(s, &s->to_up, b, pos, framelen);
            lock_op_sent_silently(&px->lock, op);
        } else if (s->pg.skip_cur) {
            sess_emit_copy(s, &s->to_up, "\r\n", 2);
        }
        if (s->pg.in_multi) s->pg.multi_count++;
        s->pg.skip_cur = 0;   /* resetClient(), for this request */
        lock_op_free(op);
        return 1;
    }
    if (act == LOCK_LOCAL) {
        sess_queue_local(s, lock_op_local(op)->p, lock_op_local(op)->len, 0);
        lock_op_free(op);
        return 1;
    }
    if (s->pg.in_multi && lock_txn_hold(&s->txn, op)) {
        /* Not sent yet: an EXPIRE of the same key may follow (clients send a transaction
         * one command at a time, waiting for each +QUEUED, so it gets one now). */
        sess_queue_local(s, "+QUEUED\r\n", 9, 0);
        return 1;
    }
    if (s->pg.in_multi) preload_script(s, op);
    const lp_str *send = lock_op_send(op);
    if (send->len > 0) {
        sess_emit_copy(s, &s->to_up, send->p, send->len);
    } else {
        sess_emit(s, &s->to_up, b, pos, framelen);
    }
    if (s->pg.in_multi) {
        /* Queued: Redis answers +QUEUED; the EXEC element goes through the policy. */
        pairing_add_multi_op(&s->pg, op);
        pairing_expect(&s->pg, 1);
        if (lock_op_extra_elements(op)) sess_queue_local(s, "+QUEUED\r\n", 9, 0);
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
void sess_process_client_input(session *s) {
    lp_block *b = s->in;
    if (s->repl_stream) {
        /* A replication link: what the replica sends (REPLCONF ACK ...) goes as it is. */
        if (b->len > s->in_start && s->up_state != UP_FAILED)
            sess_emit(s, &s->to_up, b, s->in_start, b->len - s->in_start);
        lp_block_unref(b);
        s->in = NULL;
        s->in_start = 0;
        return;
    }
    size_t fwd_start = s->in_start, pos = s->in_start;
    while (s->client_state == CL_READING && !s->closing && !s->hold) {
        size_t framelen;
        s->req.unauthenticated = preauth_limits(s);
        resp_status st = resp_request_parse(&s->req, b->data + pos, b->len - pos, &framelen);
        if (st == RESP_AGAIN) break;
        if (st == RESP_ERROR) {
            if (pos > fwd_start && s->up_state != UP_FAILED) sess_emit(s, &s->to_up, b, fwd_start, pos - fwd_start);
            fwd_start = pos = b->len;
            if (pairing_silent(&s->pg)) {
                /* Redis closes "after the reply": with nothing left to write it never does,
                 * and ignores what the client sends. A reply asked for in the same read is
                 * still unwritten in Redis. With tracking lost, the queue's end cannot be
                 * waited for: what has come is delivered, then the close. */
                int owed = s->pg.qlen > 0 || s->pg.nexpected != s->pg.batch_mark;
                if (owed && pairing_lost(&s->pg) && sess_barrier(s, "", 0, 1)) sess_client_to(s, CL_STOPPED);
                else sess_client_to(s, !owed ? CL_DISCARDING : pairing_lost(&s->pg) ? CL_FLUSH_CLOSE : CL_STOPPED);
            } else if (pairing_lost(&s->pg) && sess_barrier(s, s->req.errstr, s->req.errlen, 0)) {
                sess_client_to(s, CL_STOPPED);
            } else if (pairing_lost(&s->pg)) {
                lp_block *e = lp_block_copy(s->req.errstr, s->req.errlen);
                sess_emit(s, &s->to_client, e, 0, e->len);
                lp_block_unref(e);
                sess_client_to(s, CL_FLUSH_CLOSE);
            } else {
                sess_queue_local(s, s->req.errstr, s->req.errlen, 1);
                sess_client_to(s, CL_STOPPED);
            }
            break;
        }
        /* The command is named once per frame: pairing and policy switch on its id. */
        const resp_command *cmd = s->req.argc > 0 ? resp_command_lookup(&s->req.argv[0]) : NULL;
        s->px->m.requests++;
        if (cmd != NULL && (cmd->flags & (CMDF_BLOCKING | CMDF_BLOCKING_MAYBE))) s->lat_skip = 1;
        if (s->up_state == UP_FAILED) {
            if (s->req.argc > 0) {
                char line[160];
                int n = snprintf(line, sizeof(line), UPSTREAM_ERR_FMT, s->fail_why[0] ? s->fail_why : "connect failed");
                sess_queue_local(s, line, (size_t)n, 0);
            }
            pos += framelen;
            fwd_start = pos;
            continue;
        }
        if (s->txn.held != NULL && s->req.argc > 0) {
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
        /* Nor is anything before authentication: Redis answers the client's own command
         * with NOAUTH, and would refuse a script's argument count as a protocol error. */
        if (s->px->policy != NULL && cmd != NULL && (cmd->flags & CMDF_LOCK_KEY) && pairing_lost(&s->pg) &&
            s->req.argc >= 2)
            log_unchecked(s, cmd, b->data + pos, framelen);
        /* Nor while subscribed in RESP2, where Redis refuses the command by its name. */
        if (s->px->policy != NULL && cmd != NULL && (cmd->flags & CMDF_LOCK_KEY) && !pairing_lost(&s->pg) &&
            s->req.argc >= 2 && (s->pg.authed || s->px->auth_state == LP_AUTH_NOT_REQUIRED) &&
            !(s->pg.proto == 2 && pairing_subscribed(&s->pg)) &&
            !(s->req.inline_req && framelen > RESP_INLINE_MAX_SIZE)) {
            size_t consumed;
            if (lock_request(s, cmd, b, fwd_start, pos, framelen, &consumed)) {
                pos += consumed;
                fwd_start = pos;
                continue;
            }
        }
        if (cmd != NULL && cmd->id == CMD_MULTI && s->req.argc == 1 && !s->pg.in_multi && need_script_probe(s)) {
            /* Before the MULTI goes, learn whether this user may run scripts: a lock
             * script Redis refused inside the transaction would abort it. */
            if (pos > fwd_start) sess_emit(s, &s->to_up, b, fwd_start, pos - fwd_start);
            fwd_start = pos;
            static const char probe[] = "*3\r\n$7\r\nEVALSHA\r\n$40\r\n0000000000000000000000000000000000000000\r\n$1\r\n0\r\n";
            sess_emit_copy(s, &s->to_up, probe, sizeof(probe) - 1);
            pairing_push(&s->pg, PEND_SWALLOW)->script_probe = 1;
        }
        account_request(s, &s->req, cmd);
        pos += framelen;
    }
    if (pos > fwd_start && s->up_state != UP_FAILED) sess_emit(s, &s->to_up, b, fwd_start, pos - fwd_start);
    s->in_start = pos;
    if (s->in_start == b->len || s->client_state != CL_READING) {
        /* Nothing of a frame in progress: drop our reference (writes keep theirs). */
        lp_block_unref(b);
        s->in = NULL;
        s->in_start = 0;
    } else if ((long long)(b->len - s->in_start) > s->px->cfg->client_query_buffer_limit) {
        lp_logf("closing client=%s: query buffer over client-query-buffer-limit", s->peer);
        session_close(s);
    }
    if (s->up_state == UP_FAILED) sess_client_to(s, CL_FLUSH_CLOSE);
}

void sess_client_read_cb(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf) {
    session *s = st->data;
    if (nread == 0) return;
    if (nread < 0) {
        if (nread != UV_EOF) { session_close(s); return; }
        if (s->hold && s->in != NULL && s->in_start < s->in->len) {
            /* Requests wait behind a lock command: they run first, then the EOF counts. */
            s->eof_seen = 1;
            sess_update_reading(s);
            return;
        }
        sess_client_eof(s);
        return;
    }
    s->in->len += (size_t)nread;
    s->px->m.client_in += (uint64_t)nread;
    /* Request latency: a batch starts with a read that finds no reply due. */
    if (!s->lat_busy) {
        s->lat_t0 = uv_hrtime();
        s->lat_skip = 0;
    }
    if (!s->hold) s->pg.batch_mark = s->pg.nexpected;   /* a read of its own, for Redis too */
    sess_process_client_input(s);
    if (s->closing) return;
    if (s->pg.qlen > 0 && !s->pg.raw) s->lat_busy = 1;
    sess_arm_upstream_timer(s, 0);
    sess_flush(s);
    sess_maybe_finish(s);
}

/* EOF: pass the half-close on to Redis, which (as for a direct client) finishes what it
 * read, frees the client and closes; replies on the way still reach a client that only
 * half-closed. A frame still incomplete is dropped, as Redis drops it. */
void sess_client_eof(session *s) {
    sess_client_to(s, CL_HALF_CLOSED);
    lp_block_unref(s->in);
    s->in = NULL;
    /* Requests framed just now go out before a half-close is passed on after them. */
    sess_flush(s);
    if (s->closing) return;
    sess_eof_progress(s);
    sess_update_reading(s);
    sess_maybe_finish(s);
}

/* Redis's tighter limits before AUTH apply to this session now: it has not authenticated
 * and, as far as the proxy knows, Redis's default user needs a password. While that is not
 * known the frame goes to Redis, which answers for itself. */
static int preauth_limits(const session *s) {
    return !s->pg.authed && s->px->auth_state == LP_AUTH_REQUIRED;
}
