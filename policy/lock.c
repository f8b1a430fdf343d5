/* Lock policy decisions: see lock.h. One decision function per lock pattern; each states
 * what enforce and audit mode do with it. Replies: lockreply.c. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <fcntl.h>
#include "policy/lock_int.h"
#include "policy/cmdargs.h"
#include "policy/lua_scripts.h"   /* generated from policy/lua/ */
#include "common/hash.h"
#include "common/sha1.h"

void lock_ctx_init(lock_ctx *ctx) {
    unsigned char b[6] = {0};
    int fd = open("/dev/urandom", O_RDONLY);
    if (fd < 0 || read(fd, b, sizeof(b)) != (ssize_t)sizeof(b)) {
        uint64_t x = (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32);
        memcpy(b, &x, sizeof(b));
    }
    if (fd >= 0) close(fd);
    snprintf(ctx->proxy_id, sizeof(ctx->proxy_id), "%02x%02x%02x%02x%02x%02x", b[0], b[1], b[2], b[3], b[4], b[5]);
}

/* ---- keys of the lease records ---- */

/* The part of key Redis Cluster hashes: the content of the first {...} when not empty. */
static void hash_tag(const char *key, size_t len, const char **tag, size_t *taglen) {
    const char *open = memchr(key, '{', len);
    if (open != NULL) {
        const char *close = memchr(open + 1, '}', len - (size_t)(open + 1 - key));
        if (close != NULL && close > open + 1) {
            *tag = open + 1;
            *taglen = (size_t)(close - open - 1);
            return;
        }
    }
    *tag = key;
    *taglen = len;
}

static void side_key(lp_str *out, const char *kind, const char *key, size_t keylen) {
    const char *tag;
    size_t taglen;
    hash_tag(key, keylen, &tag, &taglen);
    lp_str_cstr(out, POLICY_RECORD_PREFIX "{");
    lp_str_add(out, tag, taglen);
    lp_str_cstr(out, kind);
    lp_str_add(out, key, keylen);
}

void lock_record_key(lp_str *out, const char *key, size_t keylen) { side_key(out, "}:r:", key, keylen); }
void lock_history_key(lp_str *out, const char *key, size_t keylen) { side_key(out, "}:h:", key, keylen); }

static void enc_side_keys(lp_str *s, const char *key, size_t keylen) {
    lp_str k = {0};
    lock_record_key(&k, key, keylen);
    resp_enc_arg(s, k.p, k.len);
    k.len = 0;
    lock_history_key(&k, key, keylen);
    resp_enc_arg(s, k.p, k.len);
    lp_str_free(&k);
}

/* ---- the lease cache: (key, "c<conn>@<db>") -> "<id>\n<R|->\n<SHA-1 of the token>" ----
 *
 * The cache holds no application bytes beyond a short key: a token is kept as its SHA-1
 * (the scripts compare it with redis.sha1hex of the lock's value), and a key longer than
 * LOCK_CACHE_KEY_MAX bytes is filed under "\xff#" and its SHA-1. So one entry costs a
 * bounded number of bytes whatever the client sends, and the byte budget counts leases. */

size_t lock_cache_owner(uint64_t conn_id, int db, char *buf, size_t cap) {
    int n = snprintf(buf, cap, "c%llu@%d", (unsigned long long)conn_id, db);
    return n < 0 ? 0 : (size_t)n >= cap ? cap - 1 : (size_t)n;
}

size_t lock_cache_key(const char *key, size_t keylen, char buf[LOCK_CACHE_KEY_CAP], const char **out) {
    if (keylen <= LOCK_CACHE_KEY_MAX) {
        *out = key;
        return keylen;
    }
    buf[0] = '\xff';
    buf[1] = '#';
    lp_sha1_hex(key, keylen, buf + 2);
    *out = buf;
    return 2 + LP_SHA1_HEX_LEN;
}

const lease *lock_cache_lookup(lease_table *t, const char *key, size_t keylen, uint64_t conn_id, int db) {
    if (t == NULL) return NULL;
    char owner[64], kb[LOCK_CACHE_KEY_CAP];
    size_t ownerlen = lock_cache_owner(conn_id, db, owner, sizeof(owner));
    const char *k;
    size_t kl = lock_cache_key(key, keylen, kb, &k);
    return lease_get(t, k, kl, owner, ownerlen);
}

/* Files (or refiles) the lease of key for a connection with value v. */
static void cache_store(lease_table *t, const char *key, size_t keylen, uint64_t conn_id, int db,
                        const lp_str *v, int64_t acquired_ms, int64_t deadline_ms) {
    char owner[64], kb[LOCK_CACHE_KEY_CAP];
    size_t ownerlen = lock_cache_owner(conn_id, db, owner, sizeof(owner));
    const char *k;
    size_t kl = lock_cache_key(key, keylen, kb, &k);
    lease_put(t, k, kl, owner, ownerlen, v->p, v->len, conn_id, acquired_ms, deadline_ms, 1);
}

int lock_cache_value(const lease *l, char *id, size_t idcap, int *renewing, const char **token,
                     size_t *tokenlen) {
    const char *nl = memchr(l->value, '\n', l->valuelen);
    if (nl == NULL || (size_t)(nl - l->value) >= idcap || l->valuelen < (size_t)(nl - l->value) + 3) return -1;
    memcpy(id, l->value, (size_t)(nl - l->value));
    id[nl - l->value] = '\0';
    *renewing = nl[1] == 'R';
    *token = nl + 3;
    *tokenlen = l->valuelen - (size_t)(nl + 3 - l->value);
    return 0;
}

void lock_cache_put(lock_ctx *ctx, const lock_op *op, long long ttl_ms) {
    if (ctx->leases == NULL || op->nkeys < 1) return;
    char sha[LP_SHA1_HEX_LEN + 1];
    lp_sha1_hex(op->value, op->valuelen, sha);
    lp_str v = {0};
    lp_str_cstr(&v, op->id);
    lp_str_cstr(&v, op->renew ? "\nR\n" : "\n-\n");
    lp_str_cstr(&v, sha);
    cache_store(ctx->leases, op->keys[0].key, op->keys[0].keylen, op->conn_id, op->db, &v, op->sent_ms,
                op->sent_ms + (ttl_ms > 0 ? ttl_ms : op->ttl_ms));
    lp_str_free(&v);
}

void lock_cache_del(lock_ctx *ctx, const lock_op *op, const char *key, size_t keylen) {
    if (ctx->leases == NULL) return;
    char owner[64], kb[LOCK_CACHE_KEY_CAP];
    size_t ownerlen = lock_cache_owner(op->conn_id, op->db, owner, sizeof(owner));
    const char *k;
    size_t kl = lock_cache_key(key, keylen, kb, &k);
    lease_del(ctx->leases, k, kl, owner, ownerlen);
}

void lock_cache_stop_renewing(lock_ctx *ctx, const lock_op *op) {
    if (ctx->leases == NULL || op->nkeys < 1) return;
    const lock_key *k = &op->keys[0];
    const lease *l = lock_cache_lookup(ctx->leases, k->key, k->keylen, op->conn_id, op->db);
    char id[48];
    int renewing;
    const char *tok;
    size_t toklen;
    if (l == NULL || lock_cache_value(l, id, sizeof(id), &renewing, &tok, &toklen) < 0 || !renewing) return;
    lp_str v = {0};
    lp_str_cstr(&v, id);
    lp_str_cstr(&v, "\n-\n");
    lp_str_add(&v, tok, toklen);
    int64_t acquired = l->acquired_ms, deadline = l->deadline_ms;
    cache_store(ctx->leases, k->key, k->keylen, op->conn_id, op->db, &v, acquired, deadline);
    lp_str_free(&v);
}

/* What this connection holds of key, per the cache: 1 with id and token (its SHA-1) set.
 * 0 when the cache has nothing: id is then "" or, when the cache had to evict leases of
 * this connection, the prefix every acquire id of this connection starts with (ending in
 * ':'), with which the scripts find this connection's leases in the record and history. */
static int cache_get(lock_ctx *ctx, const lock_client *c, const resp_arg *key, char id[48],
                     const char **token, size_t *tokenlen) {
    const char *tid;
    if (c->in_multi && lock_txn_lease(c->txn, key->ptr, key->len, c->db, &tid, token, tokenlen)) {
        /* An acquire queued before it in this MULTI runs first in EXEC: its lease counts. */
        snprintf(id, 48, "%s", tid);
        return 1;
    }
    if (ctx->leases == NULL) return 0;
    const lease *l = lock_cache_lookup(ctx->leases, key->ptr, key->len, c->conn_id, c->db);
    int renewing;
    if (l != NULL && lock_cache_value(l, id, 48, &renewing, token, tokenlen) == 0) return 1;
    if (lease_conn_lost(ctx->leases, c->conn_id))
        snprintf(id, 48, "%s:%llx:", ctx->proxy_id, (unsigned long long)c->conn_id);
    return 0;
}

/* ---- scripts ---- */

/* Encodes EVALSHA with the EVAL fallback (outside MULTI), or EVALSHA alone inside MULTI,
 * where a NOSCRIPT could not be retried: the proxy queues "EVAL <script> 0" (a no-op that
 * loads it) ahead of the first EVALSHA of each script in a transaction (lock_op_preload),
 * so Redis holds a 40-byte SHA per queued command instead of the script. The keys and
 * arguments after the script are in args. */
static void enc_script(lock_op *op, const char *script, const char *sha, int in_multi,
                       int nkeys, int nargs, const lp_str *args) {
    if (in_multi) {
        resp_enc_head(&op->send, 3 + nargs);
        resp_enc_cstr(&op->send, "EVALSHA");
        resp_enc_cstr(&op->send, sha);
        resp_enc_ll(&op->send, nkeys);
        lp_str_add(&op->send, args->p, args->len);
        op->multi_script = script;
        return;
    }
    /* The EVAL that a NOSCRIPT needs is built only then (lock_op_retry): it carries the
     * whole script, and NOSCRIPT is rare. */
    op->script = script;
    op->script_nkeys = nkeys;
    op->script_nargs = nargs;
    lp_str_free(&op->script_args);
    lp_str_add(&op->script_args, args->p, args->len);
    resp_enc_head(&op->send, 3 + nargs);
    resp_enc_cstr(&op->send, "EVALSHA");
    resp_enc_cstr(&op->send, sha);
    resp_enc_ll(&op->send, nkeys);
    lp_str_add(&op->send, args->p, args->len);
    op->uses_sha = 1;
}

/* ---- helpers ---- */

/* EXPIRE/PEXPIRE/EXPIREAT/PEXPIREAT: whether its time is in ms and absolute; 0 for another. */
static int expire_kind(resp_command_id id, int *ms, int *at) {
    switch (id) {
    case CMD_EXPIRE: *ms = 0; *at = 0; return 1;
    case CMD_PEXPIRE: *ms = 1; *at = 0; return 1;
    case CMD_EXPIREAT: *ms = 0; *at = 1; return 1;
    case CMD_PEXPIREAT: *ms = 1; *at = 1; return 1;
    default: return 0;
    }
}

static int same(const resp_arg *a, const resp_arg *b) {
    return a->len == b->len && memcmp(a->ptr, b->ptr, a->len) == 0;
}

static const policy_rule *lock_rule(const lock_ctx *ctx, const resp_arg *key) {
    if (ctx->pol == NULL) return NULL;
    const policy_rule *r = policy_match(ctx->pol, key->ptr, key->len);
    return r != NULL && r->mode != POLICY_OFF ? r : NULL;
}

static void copy_prefix(char dst[64], const policy_rule *r) {
    size_t n = r->prefix_len < 63 ? r->prefix_len : 63;
    memcpy(dst, r->prefix, n);
    dst[n] = '\0';
}

/* A loopback or unix-socket client: its address alone does not tell hosts apart. */
static int local_client(const lock_client *c) {
    const char *ip = c->addr;
    size_t n = c->ip_len;
    return (n == 4 && memcmp(ip, "unix", 4) == 0) || (n >= 4 && memcmp(ip, "127.", 4) == 0) ||
           (n == 5 && memcmp(ip, "[::1]", 5) == 0) || (n > 12 && memcmp(ip, "[::ffff:127.", 12) == 0);
}

/* The owner identity a rule's scope gives this client. */
static void make_owner(const lock_ctx *ctx, const policy_rule *r, const lock_client *c, lp_str *out) {
    char b[160];
    int n;
    if (r->owner == POLICY_OWNER_CONNECTION) {
        n = snprintf(b, sizeof(b), "conn:%s:%llu", ctx->proxy_id, (unsigned long long)c->conn_id);
        lp_str_add(out, b, (size_t)n);
        return;
    }
    if (r->owner == POLICY_OWNER_CLIENT_NAME && c->name != NULL && c->name_len > 0) {
        lp_str_cstr(out, "name:");
        lp_str_add(out, c->name, c->name_len);
        return;
    }
    if (r->owner != POLICY_OWNER_CLIENT_ADDR && local_client(c)) {
        lp_str_cstr(out, "host:");
        lp_str_cstr(out, ctx->instance ? ctx->instance : "");
        lp_str_cstr(out, "/");
    } else {
        lp_str_cstr(out, "ip:");
    }
    lp_str_add(out, c->addr, c->ip_len);
}

static lock_op *op_new(lock_ctx *ctx, int kind, const policy_rule *r, const lock_client *c,
                       const char *frame, size_t framelen) {
    lock_op *op = calloc(1, sizeof(*op));
    if (op == NULL) abort();
    op->kind = kind;
    op->conn_id = c->conn_id;
    op->db = c->db;
    op->proto = c->proto;
    op->sent_ms = c->now_ms;
    lp_str_add(&op->orig, frame, framelen);
    if (r != NULL) {
        copy_prefix(op->rule, r);
        snprintf(op->mode, sizeof(op->mode), "%s", policy_mode_name(r->mode));
        op->ttl_ms = r->ttl_ms;
        op->max_ttl_ms = r->max_ttl_ms;
        op->max_hold_ms = r->max_hold_ms;
        op->audit = r->mode != POLICY_ENFORCE;
    }
    snprintf(op->client, sizeof(op->client), "%s", c->addr);
    if (c->name != NULL) {
        op->has_name = 1;
        op->client_name_len = c->name_len < sizeof(op->client_name) ? c->name_len : sizeof(op->client_name);
        memcpy(op->client_name, c->name, op->client_name_len);
    }
    return op;
}

static void op_set_value(lock_op *op, const resp_arg *v) {
    op->value = malloc(v->len + 1);
    if (op->value == NULL) abort();
    memcpy(op->value, v->ptr, v->len);
    op->value[v->len] = '\0';
    op->valuelen = v->len;
}

static lock_key *op_add_key(lock_op *op, const resp_arg *k, char mode, const policy_rule *r) {
    if (op->nkeys == op->keys_cap) {   /* doubling: a DEL may name a million keys */
        op->keys_cap = op->keys_cap ? op->keys_cap * 2 : 4;
        op->keys = realloc(op->keys, sizeof(*op->keys) * (size_t)op->keys_cap);
        if (op->keys == NULL) abort();
    }
    lock_key *lk = &op->keys[op->nkeys++];
    memset(lk, 0, sizeof(*lk));
    lk->key = malloc(k->len + 1);
    if (lk->key == NULL) abort();
    memcpy(lk->key, k->ptr, k->len);
    lk->key[k->len] = '\0';
    lk->keylen = k->len;
    lk->mode = mode;
    if (r) {
        copy_prefix(lk->rule, r);
        snprintf(lk->rule_mode, sizeof(lk->rule_mode), "%s", policy_mode_name(r->mode));
    }
    return lk;
}

void lock_op_free(lock_op *op) {
    if (op == NULL) return;
    lp_str_free(&op->send);
    lp_str_free(&op->retry);
    lp_str_free(&op->script_args);
    lp_str_free(&op->orig);
    lp_str_free(&op->owner);
    lp_str_free(&op->local);
    for (int i = 0; i < op->nkeys; i++) free(op->keys[i].key);
    free(op->keys);
    free(op->value);
    free(op);
}

int lock_op_extra_elements(const lock_op *op) { return op->merged ? 1 : 0; }

unsigned lock_op_preload(const lock_op *op, lp_str *out) {
    if (op == NULL || op->multi_script == NULL) return 0;
    unsigned bit = op->multi_script == lp_lua_acquire   ? 1u
                 : op->multi_script == lp_lua_expire  ? 2u
                 : op->multi_script == lp_lua_release ? 4u
                 : op->multi_script == lp_lua_persist ? 8u
                                                      : 16u;
    if (out != NULL) {
        resp_enc_head(out, 3);
        resp_enc_cstr(out, "EVAL");
        resp_enc_cstr(out, op->multi_script);
        resp_enc_ll(out, 0);
    }
    return bit;
}

int lock_op_multi_eval(lock_op *op) {
    if (op == NULL || op->multi_script == NULL || op->send.len == 0) return -1;
    /* op->send is "*N\r\n$7\r\nEVALSHA\r\n$40\r\n<sha>\r\n" then numkeys, keys and args. */
    const char *p = op->send.p, *end = op->send.p + op->send.len;
    const char *nl = memchr(p, '\n', op->send.len);
    static const char evalsha[] = "$7\r\nEVALSHA\r\n";
    size_t head = nl != NULL ? (size_t)(nl - p) + 1 : 0;
    size_t shabulk = 5 + 40 + 2;
    if (head == 0 || (size_t)(end - (p + head)) < sizeof(evalsha) - 1 + shabulk ||
        memcmp(p + head, evalsha, sizeof(evalsha) - 1) != 0)
        return -1;
    const char *rest = p + head + sizeof(evalsha) - 1 + shabulk;
    lp_str out = {0};
    lp_str_add(&out, p, head);
    resp_enc_cstr(&out, "EVAL");
    resp_enc_cstr(&out, op->multi_script);
    lp_str_add(&out, rest, (size_t)(end - rest));
    lp_str_free(&op->send);
    op->send = out;
    return 0;
}

int lock_op_is_setnx(const lock_op *op) {
    return op->kind == OP_ACQUIRE && op->shape == SHAPE_SETNX && !op->merged && !op->audit;
}

/* ---- logging ---- */

static void log_event(lock_ctx *ctx, const char *event, const char *action, const char *rule,
                      const char *mode, const char *client, const char *name, size_t name_len,
                      const void *key, size_t keylen, const char *detail, long long held_ms,
                      const void *token, size_t token_len) {
    if (ctx->log == NULL) return;
    audit_event e;
    memset(&e, 0, sizeof(e));
    e.event = event;
    e.mode = mode;
    e.action = action;
    e.rule = rule;
    e.rule_len = strlen(rule);
    e.key = key;
    e.key_len = keylen;
    e.client = client;
    e.client_name = name;
    e.client_name_len = name_len;
    e.detail = detail;
    e.held_ms = held_ms;
    e.token = token;
    e.token_len = token_len;
    ctx->log(ctx->log_ud, &e);
}

/* An event at decision time, for a key matched by rule r. */
static void ev_now(lock_ctx *ctx, const lock_client *c, const policy_rule *r, const char *event,
                   const char *action, const resp_arg *key, const char *detail, const resp_arg *token) {
    char rule[64];
    copy_prefix(rule, r);
    log_event(ctx, event, action, rule, policy_mode_name(r->mode), c->addr, c->name, c->name_len, key->ptr,
              key->len, detail, -1, token ? token->ptr : NULL, token ? token->len : 0);
}

void lock_ev_op(lock_ctx *ctx, const lock_op *op, const lock_key *k, const char *event,
                const char *action, const char *detail, long long held) {
    if (k == NULL) k = &op->keys[0];
    const char *rule = k->rule[0] ? k->rule : op->rule;
    const char *mode = k->rule_mode[0] ? k->rule_mode : op->mode;
    log_event(ctx, event, action, rule, mode, op->client, op->has_name ? op->client_name : NULL,
              op->client_name_len, k->key, k->keylen, detail, held, op->value, op->value ? op->valuelen : 0);
}

/* ---- acquire ---- */

/* Encodes acquire.lua for op (its key and token set): unit "px", "pxat" or "none". */
static void enc_acquire(lock_ctx *ctx, lock_op *op, const lock_client *c, const policy_rule *r,
                        const char *unit, long long val, int get) {
    if (op->id[0] == '\0')
        snprintf(op->id, sizeof(op->id), "%s:%llx:%llx", ctx->proxy_id, (unsigned long long)c->conn_id,
                 (unsigned long long)++ctx->next_acquire);
    if (op->owner.len == 0) make_owner(ctx, r, c, &op->owner);
    lp_str args = {0}, via = {0};
    lp_str_cstr(&via, ctx->instance ? ctx->instance : "");
    lp_str_cstr(&via, " ");
    lp_str_cstr(&via, c->addr);
    resp_enc_arg(&args, op->keys[0].key, op->keys[0].keylen);
    enc_side_keys(&args, op->keys[0].key, op->keys[0].keylen);
    resp_enc_arg(&args, op->value, op->valuelen);
    resp_enc_cstr(&args, unit);
    resp_enc_ll(&args, val);
    resp_enc_ll(&args, op->audit ? 0 : r->max_ttl_ms);
    resp_enc_arg(&args, op->owner.p, op->owner.len);
    resp_enc_cstr(&args, op->id);
    resp_enc_arg(&args, via.p, via.len);
    resp_enc_cstr(&args, get ? "get" : "-");
    resp_enc_ll(&args, r->ttl_ms);
    lp_str_free(&op->send);
    lp_str_free(&op->retry);
    enc_script(op, lp_lua_acquire, lp_lua_acquire_sha, c->in_multi, 3, 12, &args);
    lp_str_free(&args);
    lp_str_free(&via);
}

/* An acquire of argv[1] with token argv[2]. ttl_ms > 0: the client's own TTL (relative, or
 * absolute with at); 0: none, and enforce mode gives the rule's ttl and renews it. */
static lock_action acquire(lock_ctx *ctx, const lock_client *c, const policy_rule *r, const resp_arg *argv,
                           const char *frame, size_t framelen, int shape, int get, long long ttl_ms, int at,
                           long long at_ms, const char *event, lock_op **out) {
    lock_op *op = op_new(ctx, OP_ACQUIRE, r, c, frame, framelen);
    op->shape = shape;
    op_add_key(op, &argv[1], 'r', r);
    op_set_value(op, &argv[2]);
    char detail[128];
    const char *act = op->audit ? "forwarded" : "rewritten";
    if (ttl_ms <= 0) {
        op->renew = !op->audit && r->renew != POLICY_RENEW_OFF;
        if (op->audit) snprintf(detail, sizeof(detail), "no ttl; enforce would give ttl=%lld", r->ttl_ms);
        else snprintf(detail, sizeof(detail), "ttl=%lld%s", r->ttl_ms,
                      op->renew ? ", renewed while the holder is connected" : "");
        /* A SETNX queued in MULTI may still take the EXPIRE queued after it: its event waits
         * for that, so that it says the TTL really applied. */
        if (event && shape == SHAPE_SETNX && c->in_multi && !op->audit) op->log_pending = 1;
        else if (event) ev_now(ctx, c, r, event, act, &argv[1], detail, &argv[2]);
        enc_acquire(ctx, op, c, r, op->audit ? "none" : "px", r->ttl_ms, get);
    } else {
        op->renew = !op->audit && r->renew == POLICY_RENEW_ALWAYS && !at;
        op->ttl_ms = ttl_ms;
        if (r->max_ttl_ms > 0 && ttl_ms > r->max_ttl_ms) {
            snprintf(detail, sizeof(detail), "ttl=%lld capped to max-ttl=%lld", ttl_ms, r->max_ttl_ms);
            ev_now(ctx, c, r, "ttl_capped", act, &argv[1], detail, &argv[2]);
            if (!op->audit) op->ttl_ms = r->max_ttl_ms;
        }
        enc_acquire(ctx, op, c, r, at ? "pxat" : "px", at ? at_ms : ttl_ms, get);
    }
    *out = op;
    return LOCK_SEND;
}

/* SETNX k v. */
static lock_action decide_setnx(lock_ctx *ctx, const lock_client *c, const policy_rule *r, int argc,
                                const resp_arg *argv, const char *frame, size_t framelen, lock_op **out) {
    if (argc != 3) return LOCK_FORWARD;   /* Redis answers the arity error */
    return acquire(ctx, c, r, argv, frame, framelen, SHAPE_SETNX, 0, 0, 0, 0, "setnx_no_ttl", out);
}

/* SET k v [NX|XX] [GET] [EX s|PX ms|EXAT|PXAT|KEEPTTL]. */
static lock_action decide_set(lock_ctx *ctx, const lock_client *c, const policy_rule *r, int argc,
                              const resp_arg *argv, const char *frame, size_t framelen, lock_op **out) {
    set_args sa;
    if (lp_set_args(argc, argv, c->wall_ms, &sa) < 0) return LOCK_FORWARD;   /* Redis's error */
    if (!sa.nx) {
        if (sa.get)
            ev_now(ctx, c, r, "getset_lock", "forwarded", &argv[1], "SET ... GET on a lock key", &argv[2]);
        else if (!sa.xx)
            ev_now(ctx, c, r, "unconditional_set", "forwarded", &argv[1], "SET without NX overwrites any holder", &argv[2]);
        return LOCK_FORWARD;
    }
    int shape = sa.get ? SHAPE_SET_GET : SHAPE_SET;
    if (sa.expire_idx == 0)   /* no TTL, KEEPTTL included: the key does not exist, so none */
        return acquire(ctx, c, r, argv, frame, framelen, shape, sa.get, 0, 0, 0, "set_nx_no_ttl", out);
    if (sa.expire_at) {
        long long v;
        resp_parse_ll(argv[sa.expire_idx].ptr, argv[sa.expire_idx].len, &v);
        long long ms = sa.expire_ms_unit ? v : v * 1000;   /* range-checked by lp_set_args */
        /* The client's own absolute time goes to Redis as it is, even one already past. */
        return acquire(ctx, c, r, argv, frame, framelen, shape, sa.get, ms - c->wall_ms > 0 ? ms - c->wall_ms : 1,
                       1, ms, NULL, out);
    }
    return acquire(ctx, c, r, argv, frame, framelen, shape, sa.get, sa.ttl_ms, 0, 0, NULL, out);
}

/* EXPIRE/PEXPIRE/EXPIREAT/PEXPIREAT k t [NX|XX|GT|LT]: expire.lua decides by the record. */
static lock_action decide_expire(lock_ctx *ctx, const lock_client *c, const policy_rule *r, int argc,
                                 const resp_arg *argv, int ms, int at, const char *frame, size_t framelen,
                                 lock_op **out) {
    expire_args ea;
    if (lp_expire_args(argc, argv, ms, at, c->wall_ms, &ea) < 0) return LOCK_FORWARD;   /* Redis's error */
    /* The EXPIRE of a SETNX queued in the same audited transaction is the SETNX's own. */
    if (c->in_multi && c->multi_setnx != NULL && c->multi_setnx_len == argv[1].len &&
        memcmp(c->multi_setnx, argv[1].ptr, argv[1].len) == 0 && r->mode != POLICY_ENFORCE)
        return LOCK_FORWARD;
    lock_op *op = op_new(ctx, OP_EXPIRE, r, c, frame, framelen);
    lock_key *k = op_add_key(op, &argv[1], op->audit ? 'a' : 'r', r);
    op->ttl_ms = ea.ttl_ms;
    if (r->max_ttl_ms > 0 && ea.ttl_ms > r->max_ttl_ms) {
        char detail[96];
        snprintf(detail, sizeof(detail), "ttl=%lld capped to max-ttl=%lld for the holder", ea.ttl_ms, r->max_ttl_ms);
        ev_now(ctx, c, r, "ttl_capped", op->audit ? "forwarded" : "rewritten", &argv[1], detail, NULL);
    }
    char id[48] = "";
    const char *tok = "";
    size_t toklen = 0;
    k->held = cache_get(ctx, c, &argv[1], id, &tok, &toklen);
    lp_str args = {0}, owner = {0};
    make_owner(ctx, r, c, &owner);
    resp_enc_arg(&args, argv[1].ptr, argv[1].len);
    enc_side_keys(&args, argv[1].ptr, argv[1].len);
    resp_enc_arg(&args, owner.p, owner.len);
    resp_enc_cstr(&args, id);
    resp_enc_arg(&args, tok, toklen);
    resp_enc_cstr(&args, at ? "pexpireat" : "pexpire");
    resp_enc_ll(&args, at ? ea.when_ms : ea.ttl_ms);
    resp_enc_ll(&args, r->max_ttl_ms);
    resp_enc_cstr(&args, op->audit ? "a" : "e");
    for (int i = 3; i < argc; i++) resp_enc_arg(&args, argv[i].ptr, argv[i].len);
    enc_script(op, lp_lua_expire, lp_lua_expire_sha, c->in_multi, 3, 10 + argc - 3, &args);
    lp_str_free(&args);
    lp_str_free(&owner);
    *out = op;
    return LOCK_SEND;
}

void lock_del_encode_part(lock_ctx *ctx, lock_op *op, int in_multi, const struct lock_txn *txn) {
    int start = op->del_next;
    int end = op->del_chunk > 0 && op->nkeys - start > op->del_chunk ? start + op->del_chunk : op->nkeys;
    lp_str args = {0}, modes = {0};
    int nkeys = 0, nargs = 2;
    lock_client c = {.conn_id = op->conn_id, .db = op->db, .in_multi = in_multi, .txn = txn};
    for (int i = start; i < end; i++) {
        lock_key *k = &op->keys[i];
        resp_enc_arg(&args, k->key, k->keylen);
        nkeys++;
        if (k->mode == 'o') {
            resp_enc_cstr(&modes, "o");
            nargs++;
            continue;
        }
        enc_side_keys(&args, k->key, k->keylen);
        nkeys += 2;
        char id[48] = "";
        const char *tok = "";
        size_t toklen = 0;
        resp_arg key = {k->key, k->keylen};
        k->held = cache_get(ctx, &c, &key, id, &tok, &toklen);
        resp_enc_arg(&modes, &k->mode, 1);
        resp_enc_cstr(&modes, id);
        resp_enc_arg(&modes, tok, toklen);
        nargs += 3;
    }
    resp_enc_cstr(&args, op->unlink ? "unlink" : "del");
    resp_enc_arg(&args, op->owner.p, op->owner.len);
    lp_str_add(&args, modes.p, modes.len);
    lp_str_free(&op->send);
    enc_script(op, lp_lua_release, lp_lua_release_sha, in_multi, nkeys, nkeys + nargs, &args);
    op->del_start = start;
    op->del_next = end;
    lp_str_free(&args);
    lp_str_free(&modes);
}

/* DEL/UNLINK k [k ...]: release.lua when any key is a lock key. Outside MULTI (with replies
 * on) a command of more than LOCK_DEL_CHUNK keys goes in parts of that many, one after the
 * other (lock_op_reply asks for each next one), so Redis never runs one long script; inside
 * MULTI, or with replies off, it is one call. */
static lock_action decide_del(lock_ctx *ctx, const lock_client *c, int argc, const resp_arg *argv, int exempt,
                              const char *frame, size_t framelen, lock_op **out) {
    int first = 1;
    while (first < argc && lock_rule(ctx, &argv[first]) == NULL) first++;
    if (first == argc) return LOCK_FORWARD;    /* no lock key: an ordinary DEL */
    lock_op *op = op_new(ctx, OP_DEL, NULL, c, frame, framelen);
    op->unlink = resp_command_lookup(&argv[0])->id == CMD_UNLINK;
    int logged = 0;
    long long more = 0;
    const resp_arg *last = NULL;
    char last_mode = 'r';
    const policy_rule *last_rule = NULL;
    for (int i = 1; i < argc; i++) {
        const policy_rule *r = lock_rule(ctx, &argv[i]);
        if (r == NULL) {
            op_add_key(op, &argv[i], 'o', NULL);
            continue;
        }
        if (op->owner.len == 0) make_owner(ctx, r, c, &op->owner);
        char mode = exempt ? 'x' : r->mode == POLICY_ENFORCE ? 'r' : 'a';
        op_add_key(op, &argv[i], mode, r);
        if (exempt) continue;
        if (logged < LOCK_DEL_EVENTS_MAX) {
            logged++;
            ev_now(ctx, c, r, "del_unchecked", mode == 'r' ? "rewritten" : "forwarded", &argv[i],
                   mode == 'r' ? "checked against the lease record" : "unconditional delete of a lock key", NULL);
        } else {
            more++;
            last = &argv[i];
            last_mode = mode;
            last_rule = r;
        }
    }
    if (more > 0) {
        char detail[128];
        snprintf(detail, sizeof(detail), "and %lld more lock keys of this command (not listed)", more);
        ev_now(ctx, c, last_rule, "del_unchecked", last_mode == 'r' ? "rewritten" : "forwarded", last, detail, NULL);
    }
    op->del_chunk = c->in_multi || c->no_split ? 0 : LOCK_DEL_CHUNK;
    lock_del_encode_part(ctx, op, c->in_multi, c->txn);
    *out = op;
    return LOCK_SEND;
}

static int merge_expire(lock_ctx *ctx, lock_op *op, int64_t wall_ms, int argc, const resp_arg *argv) {
    if (!lock_op_is_setnx(op) || argc != 3 || op->nkeys < 1) return 0;
    int ms, at;
    if (!expire_kind(resp_command_lookup(&argv[0])->id, &ms, &at)) return 0;
    resp_arg key = {op->keys[0].key, op->keys[0].keylen};
    if (!same(&argv[1], &key)) return 0;
    expire_args ea;
    if (lp_expire_args(argc, argv, ms, at, wall_ms, &ea) < 0 || ea.ttl_ms <= 0) return 0;
    const policy_rule *r = lock_rule(ctx, &key);
    if (r == NULL) return 0;
    op->merged = 1;
    op->renew = r->renew == POLICY_RENEW_ALWAYS && !at;
    op->ttl_ms = r->max_ttl_ms > 0 && ea.ttl_ms > r->max_ttl_ms ? r->max_ttl_ms : ea.ttl_ms;
    /* The same acquire (its id and owner kept), re-encoded with the EXPIRE's TTL. */
    lock_client c = {.conn_id = op->conn_id, .addr = op->client, .db = op->db, .in_multi = 1};
    enc_acquire(ctx, op, &c, r, at ? "pxat" : "px", at ? ea.when_ms : ea.ttl_ms, 0);
    return 1;
}

int lock_op_merge_expire(lock_ctx *ctx, lock_op *op, int64_t wall_ms, int argc, const resp_arg *argv) {
    int merged = merge_expire(ctx, op, wall_ms, argc, argv);
    if (op->log_pending) {
        char detail[128];
        if (merged) snprintf(detail, sizeof(detail), "ttl=%lld from the EXPIRE queued after it in MULTI", op->ttl_ms);
        else snprintf(detail, sizeof(detail), "ttl=%lld%s", op->ttl_ms, op->renew ? ", renewed while the holder is connected" : "");
        lock_ev_op(ctx, op, NULL, "setnx_no_ttl", "rewritten", detail, -1);
        op->log_pending = 0;
    }
    return merged;
}

/* EVAL/EVALSHA/FCALL naming a lock key: forwarded, logged once per script, rule and client
 * IP an hour (the safe compare-and-delete releases of redis-py, node-redlock and Redisson
 * would flood the log otherwise). The script is known by its body's hash (EVAL) or its SHA1
 * (EVALSHA) or function name (FCALL). */
static void decide_script(lock_ctx *ctx, const lock_client *c, int argc, const resp_arg *argv) {
    long long nkeys;
    if (argc < 3 || !resp_parse_ll(argv[2].ptr, argv[2].len, &nkeys) || nkeys < 0 || nkeys > argc - 3) return;
    for (int i = 0; i < nkeys; i++) {
        const policy_rule *r = lock_rule(ctx, &argv[3 + i]);
        if (r == NULL) continue;
        if (ctx->script_once != NULL) {
            lp_str id = {0};
            char h[24];
            int n = snprintf(h, sizeof(h), "%016llx", (unsigned long long)lp_fnv1a(LP_FNV1A_OFFSET, argv[1].ptr, argv[1].len));
            lp_str_add(&id, h, (size_t)n);
            lp_str_add(&id, "\n", 1);
            lp_str_add(&id, r->prefix, r->prefix_len);
            lp_str_add(&id, "\n", 1);
            lp_str_add(&id, c->addr, c->ip_len);
            int first = audit_once_check(ctx->script_once, id.p, id.len, c->now_ms);
            lp_str_free(&id);
            if (!first) continue;
        }
        ev_now(ctx, c, r, "script_lock", "forwarded", &argv[3 + i],
               "a script or function names a lock key (logged once an hour per script, rule and client IP)", NULL);
    }
}

/* 1 when the client's lock commands pass unchecked: an exempt ACL user (an operator's
 * redis-cli, a migration job) or an exempt address. */
static int exempt_client(const lock_ctx *ctx, const lock_client *c) {
    const char *user = c->user ? c->user : "default";
    size_t ulen = c->user ? c->user_len : 7;
    return policy_exempt_user(ctx->pol, user, ulen) || policy_exempt_ip(ctx->pol, c->addr, c->ip_len);
}

lock_action lock_decide(lock_ctx *ctx, const lock_client *c, int argc, const resp_arg *argv,
                        const char *frame, size_t framelen, lock_op **out) {
    *out = NULL;
    if (ctx->pol == NULL || argc < 2) return LOCK_FORWARD;
    const resp_command *cmd = c->cmd != NULL ? c->cmd : resp_command_lookup(&argv[0]);
    if (!(cmd->flags & CMDF_LOCK_KEY)) return LOCK_FORWARD;   /* most commands stop here */
    int ms, at;
    switch (cmd->id) {   /* the commands some row of the lock table is about */
    case CMD_SETNX: case CMD_SET: case CMD_GETSET: case CMD_PERSIST: case CMD_DEL: case CMD_UNLINK:
    case CMD_EXPIRE: case CMD_PEXPIRE: case CMD_EXPIREAT: case CMD_PEXPIREAT:
        break;
    default:
        if (cmd->keys != RESP_KEYS_NUMKEYS) return LOCK_FORWARD;   /* GET and the like */
    }
    if (cmd->keys == RESP_KEYS_NUMKEYS) {
        decide_script(ctx, c, argc, argv);
        return LOCK_FORWARD;
    }
    int exempt = exempt_client(ctx, c);
    /* Without scripting (ACL), every lock command goes as the client sent it. */
    if (c->no_scripts) return LOCK_FORWARD;
    if (cmd->id == CMD_DEL || cmd->id == CMD_UNLINK)
        return decide_del(ctx, c, argc, argv, exempt, frame, framelen, out);
    if (exempt) return LOCK_FORWARD;

    const policy_rule *r = lock_rule(ctx, &argv[1]);
    if (r == NULL) return LOCK_FORWARD;
    if (cmd->id == CMD_SETNX) return decide_setnx(ctx, c, r, argc, argv, frame, framelen, out);
    if (cmd->id == CMD_SET) return decide_set(ctx, c, r, argc, argv, frame, framelen, out);
    if (expire_kind(cmd->id, &ms, &at)) return decide_expire(ctx, c, r, argc, argv, ms, at, frame, framelen, out);
    if (cmd->id == CMD_GETSET) {
        ev_now(ctx, c, r, "getset_lock", "forwarded", &argv[1], "GETSET on a lock key", argc > 2 ? &argv[2] : NULL);
        return LOCK_FORWARD;
    }
    if (cmd->id == CMD_PERSIST && argc == 2) {
        ev_now(ctx, c, r, "persist_lock", r->mode == POLICY_ENFORCE ? "refused" : "forwarded", &argv[1],
               "PERSIST would make the lock permanent", NULL);
        if (r->mode != POLICY_ENFORCE) return LOCK_FORWARD;
        lock_op *op = op_new(ctx, OP_PERSIST, r, c, frame, framelen);
        *out = op;
        /* Refused, but Redis still judges the command (persist.lua does nothing and has
         * PERSIST's flags): a read-only replica answers -READONLY, as for PERSIST itself.
         * Inside MULTI it keeps the EXEC array's shape; its element becomes :0. */
        lp_str args = {0};
        resp_enc_arg(&args, argv[1].ptr, argv[1].len);
        enc_script(op, lp_lua_persist, lp_lua_persist_sha, c->in_multi, 1, 1, &args);
        lp_str_free(&args);
        return LOCK_SEND;
    }
    return LOCK_FORWARD;
}
