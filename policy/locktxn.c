/* Lock commands inside transactions and the accessors of lock_op: see lock.h. */
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include "common/sha1.h"
#include "policy/lock_int.h"
#include "resp/reply.h"

const lp_str *lock_op_send(const lock_op *op) { return &op->send; }
const lp_str *lock_op_retry(lock_op *op) {
    if (op->retry.len == 0 && op->script != NULL) {
        resp_enc_head(&op->retry, 3 + op->script_nargs);
        resp_enc_cstr(&op->retry, "EVAL");
        resp_enc_cstr(&op->retry, op->script);
        resp_enc_ll(&op->retry, op->script_nkeys);
        lp_str_add(&op->retry, op->script_args.p, op->script_args.len);
    }
    return &op->retry;
}
const lp_str *lock_op_local(const lock_op *op) { return &op->local; }
int lock_op_uses_sha(const lock_op *op) { return op->uses_sha; }
int lock_op_noperm(const lock_op *op) { return op->noperm; }
int lock_op_scripted(const lock_op *op) { return op->kind != OP_PERSIST && op->kind != OP_PASS && op->send.len > 0; }
void lock_op_set_proto(lock_op *op, int proto) { op->proto = proto; }
int lock_op_audit(const lock_op *op) { return op != NULL && op->audit; }
size_t lock_op_bytes(const lock_op *op) {
    size_t n = sizeof(*op) + op->send.cap + op->retry.cap + op->script_args.cap + op->orig.cap + op->local.cap +
               op->owner.cap + op->valuelen + (size_t)op->nkeys * sizeof(lock_key);
    for (int i = 0; i < op->nkeys; i++) n += op->keys[i].keylen;
    return n;
}

void lock_op_log_check_unavailable(lock_ctx *ctx, const lock_op *op, const char *client,
                                   const char *name, size_t name_len) {
    if (ctx->log == NULL || op->nkeys < 1) return;
    audit_event e;
    memset(&e, 0, sizeof(e));
    e.event = "check_unavailable";
    e.mode = op->keys[0].rule_mode[0] ? op->keys[0].rule_mode : op->mode[0] ? op->mode : "enforce";
    e.action = "forwarded";
    e.rule = op->keys[0].rule[0] ? op->keys[0].rule : op->rule;
    e.rule_len = strlen(e.rule);
    e.key = op->keys[0].key;
    e.key_len = op->keys[0].keylen;
    e.client = client;
    e.client_name = name;
    e.client_name_len = name_len;
    e.detail = "Redis refuses scripts for this user (NOPERM): lock commands of this connection pass unchecked";
    e.held_ms = -1;
    ctx->log(ctx->log_ud, &e);
}

void lock_exec_reply(lock_ctx *ctx, multi_op *mops, int nmops, int proto, const char *f, size_t len,
                     lp_str *out) {
    long long count = -1;
    const char *nl = memchr(f, '\n', len);
    if (len > 3 && f[0] == '*' && nl != NULL) {
        char num[24];
        size_t n = (size_t)(nl - f - 1);
        if (n > 0 && f[n] == '\r') n--;
        if (n > 0 && n < sizeof(num)) {
            memcpy(num, f + 1, n);
            num[n] = '\0';
            char *end;
            count = strtoll(num, &end, 10);
            if (*end != '\0') count = -1;
        }
    }
    if (count < 0) { lp_str_add(out, f, len); return; }
    resp_enc_num(out, '*', lock_exec_count(mops, nmops, count));
    size_t pos = (size_t)(nl + 1 - f);
    int m = 0;
    for (long long i = 0; i < count && pos < len; i++) {
        resp_reply sc;
        resp_reply_init(&sc);
        size_t used;
        resp_status st = resp_reply_scan(&sc, f + pos, len - pos, &used);
        resp_reply_free(&sc);
        if (st != RESP_OK) break;
        while (m < nmops && mops[m].index < i) m++;
        if (m < nmops && mops[m].index == i) {
            mops[m].op->proto = proto;
            lock_op_reply(ctx, mops[m].op, f + pos, used, 1, out);
        } else {
            lp_str_add(out, f + pos, used);
        }
        pos += used;
    }
}

long long lock_exec_count(const multi_op *mops, int nmops, long long count) {
    long long extra = 0;
    for (int i = 0; i < nmops; i++)
        if (mops[i].index < count) extra += lock_op_extra_elements(mops[i].op);
    return count + extra;
}

lock_op *lock_exec_op_at(const multi_op *mops, int nmops, long long i) {
    int lo = 0, hi = nmops;
    while (lo < hi) {
        int mid = lo + (hi - lo) / 2;
        if (mops[mid].index < i) lo = mid + 1;
        else hi = mid;
    }
    return lo < nmops && mops[lo].index == i ? mops[lo].op : NULL;
}

static void free_acq(lock_txn *t) {
    for (int i = 0; i < t->nacq; i++) {
        free(t->acq[i].key);
        free(t->acq[i].token);
    }
    free(t->acq);
    t->acq = NULL;
    t->nacq = 0;
}

void lock_txn_begin(lock_txn *t) {
    t->preloaded = 0;
    free(t->setnx_key);
    t->setnx_key = NULL;
    t->setnx_len = 0;
    free_acq(t);
}

void lock_txn_queued(lock_txn *t, const lock_op *op) {
    if (op == NULL || op->kind != OP_ACQUIRE || op->nkeys < 1 || op->id[0] == '\0') return;
    t->acq = realloc(t->acq, sizeof(*t->acq) * (size_t)(t->nacq + 1));
    if (t->acq == NULL) abort();
    lock_txn_acq *a = &t->acq[t->nacq++];
    memset(a, 0, sizeof(*a));
    a->key = malloc(op->keys[0].keylen + 1);
    a->token = malloc(LP_SHA1_HEX_LEN + 1);
    if (a->key == NULL || a->token == NULL) abort();
    memcpy(a->key, op->keys[0].key, op->keys[0].keylen);
    a->keylen = op->keys[0].keylen;
    /* As in the lease cache: the token's SHA-1, which the scripts compare with the lock's. */
    lp_sha1_hex(op->value, op->valuelen, a->token);
    a->tokenlen = LP_SHA1_HEX_LEN;
    a->db = op->db;
    snprintf(a->id, sizeof(a->id), "%s", op->id);
}

int lock_txn_lease(const lock_txn *t, const char *key, size_t keylen, int db, const char **id,
                   const char **token, size_t *tokenlen) {
    if (t == NULL) return 0;
    for (int i = t->nacq - 1; i >= 0; i--) {     /* the latest acquire of the key counts */
        const lock_txn_acq *a = &t->acq[i];
        if (a->db != db || a->keylen != keylen || memcmp(a->key, key, keylen) != 0) continue;
        *id = a->id;
        *token = a->token;
        *tokenlen = a->tokenlen;
        return 1;
    }
    return 0;
}

void lock_txn_note(lock_txn *t, const resp_command *cmd, int argc, const resp_arg *argv) {
    if (argc < 2 || cmd->id != CMD_SETNX) return;
    free(t->setnx_key);
    t->setnx_key = malloc(argv[1].len + 1);
    if (t->setnx_key == NULL) abort();
    memcpy(t->setnx_key, argv[1].ptr, argv[1].len);
    t->setnx_len = argv[1].len;
}

int lock_txn_hold(lock_txn *t, lock_op *op) {
    if (t->held != NULL || !lock_op_is_setnx(op)) return 0;
    t->held = op;
    return 1;
}

lock_op *lock_txn_release(lock_txn *t, lock_ctx *ctx, int64_t wall_ms, int argc, const resp_arg *argv,
                          int *merged) {
    lock_op *op = t->held;
    t->held = NULL;
    *merged = 0;
    if (op == NULL) return NULL;
    *merged = lock_op_merge_expire(ctx, op, wall_ms, argc, argv);
    return op;
}

void lock_txn_free(lock_txn *t) {
    lock_op_free(t->held);
    free(t->setnx_key);
    free_acq(t);
    memset(t, 0, sizeof(*t));
}
