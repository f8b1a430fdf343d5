/* Lock policy replies: the reply to a script the proxy sent turned back into the reply the
 * client's own command promises, and what it teaches (the lease cache, renewals, events).
 * See lock.h. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <hiredis/hiredis.h>
#include "policy/lock_int.h"

/* A script's reply, decoded with hiredis: an array of integers and strings. Script replies
 * hold no null (the scripts return 0/1 and strings), so RESP3 decodes as RESP2 does. */
typedef struct script_reply {
    lock_ctx *ctx;
    redisReply *r;
} script_reply;

/* One reader serves every decode (the frames come whole); one that failed is replaced. */
static int decode(lock_ctx *ctx, script_reply *sr, const char *frame, size_t len) {
    sr->ctx = ctx;
    sr->r = NULL;
    if (ctx->reader == NULL && (ctx->reader = redisReaderCreate()) == NULL) return -1;
    redisReader *rd = ctx->reader;
    void *rep = NULL;
    if (redisReaderFeed(rd, frame, len) != REDIS_OK || redisReaderGetReply(rd, &rep) != REDIS_OK ||
        rep == NULL) {
        if (rep) freeReplyObject(rep);
        redisReaderFree(rd);
        ctx->reader = NULL;
        return -1;
    }
    sr->r = rep;
    if (sr->r->type != REDIS_REPLY_ARRAY) return -1;
    for (size_t i = 0; i < sr->r->elements; i++)
        if (sr->r->element[i]->type != REDIS_REPLY_INTEGER && sr->r->element[i]->type != REDIS_REPLY_STRING)
            return -1;
    return 0;
}

static void decode_done(script_reply *sr) {
    if (sr->r) freeReplyObject(sr->r);
    /* Bytes left over mean the frame was not one reply: start the next decode clean. */
    if (sr->ctx->reader != NULL && ((redisReader *)sr->ctx->reader)->pos < ((redisReader *)sr->ctx->reader)->len) {
        redisReaderFree(sr->ctx->reader);
        sr->ctx->reader = NULL;
    }
}

static long long int_at(const script_reply *sr, size_t i) {
    const redisReply *e = i < sr->r->elements ? sr->r->element[i] : NULL;
    return e != NULL && e->type == REDIS_REPLY_INTEGER ? e->integer : -1;
}

static int has_prefix(const char *f, size_t len, const char *p) {
    size_t n = strlen(p);
    return len >= n && memcmp(f, p, n) == 0;
}

/* An acquire's reply: the record is written; cache it and renew it if the rule says so. */
static void acquired(lock_ctx *ctx, lock_op *op, long long pttl) {
    lock_cache_put(ctx, op, pttl > 0 ? pttl : op->ttl_ms);
    if (op->renew && ctx->renew != NULL) {
        lock_renewal rn = {.conn_id = op->conn_id, .db = op->db, .key = op->keys[0].key,
                           .keylen = op->keys[0].keylen, .id = op->id, .ttl_ms = op->ttl_ms,
                           .max_hold_ms = op->max_hold_ms, .rule = op->rule, .client = op->client};
        ctx->renew(ctx->renew_ud, &rn);
    }
}

static void reply_acquire(lock_ctx *ctx, lock_op *op, const char *frame, size_t len, lp_str *out) {
    script_reply sr;
    if (decode(ctx, &sr, frame, len) < 0 || sr.r->elements < 1) {
        lp_str_add(out, frame, len);   /* not the script's answer: as it is */
        if (op->merged) lp_str_add(out, frame, len);
        decode_done(&sr);
        return;
    }
    int got = int_at(&sr, 0) == 1;
    if (got) acquired(ctx, op, int_at(&sr, 1));
    switch (op->shape) {
    case SHAPE_SETNX:
        lp_str_cstr(out, got ? ":1\r\n" : ":0\r\n");
        if (op->merged) {
            lp_str_cstr(out, got ? ":1\r\n" : ":0\r\n");
            /* The classic MULTI; SETNX; EXPIRE would have extended the holder's lock. */
            if (!got) lock_ev_op(ctx, op, NULL, "foreign_expire", "refused", "the EXPIRE after a failed SETNX was not applied", -1);
        }
        break;
    case SHAPE_SET:
        if (got) lp_str_cstr(out, "+OK\r\n");
        else resp_enc_null(out, op->proto);
        break;
    default:   /* SET NX GET: null when it set the key, else the value it found */
        if (got || sr.r->elements < 2 || sr.r->element[1]->type != REDIS_REPLY_STRING) {
            resp_enc_null(out, op->proto);
        } else {
            const redisReply *v = sr.r->element[1];
            resp_enc_num(out, '$', (long long)v->len);
            lp_str_add(out, v->str, v->len);
            lp_str_add(out, "\r\n", 2);
        }
        break;
    }
    decode_done(&sr);
}

static void reply_expire(lock_ctx *ctx, lock_op *op, const char *frame, size_t len, lp_str *out) {
    script_reply sr;
    if (decode(ctx, &sr, frame, len) < 0 || sr.r->elements != 2) {
        lp_str_add(out, frame, len);
        decode_done(&sr);
        return;
    }
    long long verdict = int_at(&sr, 0), res = int_at(&sr, 1);
    char detail[128];
    if (verdict == V_OWN && res == 1 && op->keys[0].held) lock_cache_stop_renewing(ctx, op);
    if (verdict == V_FOREIGN) {
        if (op->audit) snprintf(detail, sizeof(detail), "another owner's lock: enforce would apply PEXPIRE ... NX");
        else snprintf(detail, sizeof(detail), "another owner's lock: applied as PEXPIRE ... NX (%s)",
                      res == 1 ? "it had no TTL" : "not extended");
        lock_ev_op(ctx, op, NULL, "foreign_expire", op->audit ? "forwarded" : "rewritten", detail, -1);
    } else if (verdict == V_LATE) {
        lock_ev_op(ctx, op, NULL, "late_release", op->audit ? "forwarded" : "refused",
                   "EXPIRE after this connection's lease ended", -1);
    }
    resp_enc_num(out, ':', res);
    decode_done(&sr);
}

/* A reply event of a DEL key: at most LOCK_DEL_EVENTS_MAX of one verdict per command, the
 * others counted for the summary line that reply_del writes after the last part. */
static void del_event(lock_ctx *ctx, lock_op *op, int ki, int verdict, const char *event, const char *action,
                      const char *detail) {
    if (op->ev_logged[verdict] < LOCK_DEL_EVENTS_MAX) {
        op->ev_logged[verdict]++;
        lock_ev_op(ctx, op, &op->keys[ki], event, action, detail, -1);
    } else {
        op->ev_more[verdict]++;
        op->ev_last[verdict] = ki;
        op->ev_act[verdict] = action;
    }
}

/* One part's reply. Returns 1 when the next part has been encoded into op->retry (the
 * caller sends it and hands its reply here again), 0 when the client's reply is in out. */
static int reply_del(lock_ctx *ctx, lock_op *op, const char *frame, size_t len, lp_str *out) {
    script_reply sr;
    int nkeys = op->del_next - op->del_start;
    if (decode(ctx, &sr, frame, len) < 0 || (int)sr.r->elements != nkeys) {
        lp_str_add(out, frame, len);
        decode_done(&sr);
        return 0;
    }
    for (int i = 0; i < nkeys; i++) {
        int ki = op->del_start + i;
        lock_key *k = &op->keys[ki];
        long long code = int_at(&sr, (size_t)i);
        if (k->mode == 'o') {
            if (code > 0) op->del_total += code;
            continue;
        }
        long long verdict = code / 10, del = code % 10;
        op->del_total += del;
        const char *act = k->mode == 'r' ? (del ? "forwarded" : "refused") : "forwarded";
        if (verdict == V_OWN && del && k->held) lock_cache_del(ctx, op, k->key, k->keylen);
        if (k->mode == 'x') {
            if (verdict == V_FOREIGN || verdict == V_LATE)
                del_event(ctx, op, ki, V_FOREIGN, "exempt_release", "forwarded", "an exempt client deleted another owner's lock");
        } else if (verdict == V_FOREIGN) {
            del_event(ctx, op, ki, V_FOREIGN, "foreign_release", act, "the lease record names another owner");
        } else if (verdict == V_LATE) {
            del_event(ctx, op, ki, V_LATE, "late_release", act, "this connection's lease ended; the lock is someone else's");
        } else if (verdict == V_NO_RECORD) {
            del_event(ctx, op, ki, V_NO_RECORD, "unknown_lease", "forwarded", "no lease record: deleted as asked");
        }
    }
    decode_done(&sr);
    if (op->del_next < op->nkeys) {
        lock_del_encode_part(ctx, op, 0, NULL);
        lp_str_free(&op->retry);
        lp_str_add(&op->retry, op->send.p, op->send.len);
        return 1;
    }
    static const char *const event[5] = {NULL, "foreign_release", "late_release", "unknown_lease", NULL};
    for (int v = V_FOREIGN; v <= V_NO_RECORD; v++) {
        if (op->ev_more[v] == 0) continue;
        lock_key *k = &op->keys[op->ev_last[v]];
        char detail[128];
        snprintf(detail, sizeof(detail), "and %lld more keys of this command with the same verdict (not listed)", op->ev_more[v]);
        lock_ev_op(ctx, op, k, k->mode == 'x' ? "exempt_release" : event[v], op->ev_act[v], detail, -1);
    }
    resp_enc_num(out, ':', op->del_total);
    return 0;
}

void lock_ctx_free(lock_ctx *ctx) {
    if (ctx->reader != NULL) redisReaderFree(ctx->reader);
    ctx->reader = NULL;
}

void lock_op_sent_silently(lock_ctx *ctx, lock_op *op) {
    if (op->kind == OP_ACQUIRE && !op->audit) acquired(ctx, op, op->ttl_ms);
}

int lock_op_reply(lock_ctx *ctx, lock_op *op, const char *frame, size_t len, int in_exec, lp_str *out) {
    int err = len > 0 && (frame[0] == '-' || frame[0] == '!');
    if (op->kind == OP_PASS) {
        lp_str_add(out, frame, len);
        return LOCK_REPLY_DONE;
    }
    if (err && !in_exec && op->uses_sha && has_prefix(frame, len, "-NOSCRIPT")) {
        lp_str_free(&op->retry);   /* it may hold the part just sent */
        lock_op_retry(op);  /* the EVAL */
        op->uses_sha = 0;
        return LOCK_REPLY_RETRY;
    }
    if (err && !in_exec && op->kind != OP_PERSIST && has_prefix(frame, len, "-NOPERM")) {
        /* No scripting for this user: the client's own command goes instead. */
        op->noperm = 1;
        op->kind = OP_PASS;
        op->uses_sha = 0;
        op->script = NULL;
        lp_str_free(&op->retry);
        lp_str_add(&op->retry, op->orig.p, op->orig.len);
        return LOCK_REPLY_RETRY;
    }
    if (err && !(op->kind == OP_PERSIST && has_prefix(frame, len, "-NOPERM"))) {
        /* Redis's own error for what the client asked (WRONGTYPE, OOM, NOAUTH, READONLY on a
         * replica...). A refused PERSIST's NOPERM (no scripting for this user, or no access to
         * the key: the two cannot be told apart) leaves it refused: :0. */
        lp_str_add(out, frame, len);
        if (op->merged) lp_str_add(out, frame, len);
        return LOCK_REPLY_DONE;
    }
    switch (op->kind) {
    case OP_ACQUIRE: reply_acquire(ctx, op, frame, len, out); break;
    case OP_EXPIRE: reply_expire(ctx, op, frame, len, out); break;
    case OP_DEL:
        if (reply_del(ctx, op, frame, len, out)) return LOCK_REPLY_RETRY;   /* the next part */
        break;
    case OP_PERSIST: lp_str_cstr(out, ":0\r\n"); break;
    default: lp_str_add(out, frame, len); break;
    }
    return LOCK_REPLY_DONE;
}
