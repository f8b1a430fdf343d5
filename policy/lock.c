/* Lock policy decisions: see lock.h. One decision function per lock pattern; each states
 * what enforce and audit mode do with it. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <hiredis/hiredis.h>
#include "policy/lock.h"
#include "policy/cmdargs.h"
#include "policy/lua_scripts.h"   /* generated from policy/lua/ */

enum {
    OP_SETNX = 1,       /* SETNX k v → SET k v NX PX ttl; reply :1/:0 */
    OP_SET_NX,          /* SET k v NX [PX t]: reply unchanged, lease on +OK */
    OP_EXPIRE_HOLDER,   /* owner-checked EXPIRE by script */
    OP_EXPIRE_FOREIGN,  /* EXPIRE ... NX: only a lock without a TTL gets one */
    OP_PERSIST,         /* refused: :0 */
    OP_DEL              /* owner-checked DEL/UNLINK by script; reply :N */
};

/* ---- byte strings ---- */

void lp_str_add(lp_str *s, const void *p, size_t len) {
    if (s->len + len + 1 > s->cap) {
        size_t ncap = s->cap ? s->cap * 2 : 128;
        while (ncap < s->len + len + 1) ncap *= 2;
        char *np = realloc(s->p, ncap);
        if (np == NULL) abort();
        s->p = np;
        s->cap = ncap;
    }
    memcpy(s->p + s->len, p, len);
    s->len += len;
    s->p[s->len] = '\0';
}

void lp_str_free(lp_str *s) {
    free(s->p);
    s->p = NULL;
    s->len = s->cap = 0;
}

static void str_cstr(lp_str *s, const char *c) { lp_str_add(s, c, strlen(c)); }

/* A RESP line: a type byte, a number, CRLF. */
static void str_num(lp_str *s, char type, long long v) {
    char b[32];
    int n = snprintf(b, sizeof(b), "%c%lld\r\n", type, v);
    lp_str_add(s, b, (size_t)n);
}

/* RESP multibulk encoding of a command. */
static void enc_head(lp_str *s, int argc) { str_num(s, '*', argc); }
static void enc_arg(lp_str *s, const void *p, size_t len) {
    str_num(s, '$', (long long)len);
    lp_str_add(s, p, len);
    lp_str_add(s, "\r\n", 2);
}
static void enc_cstr(lp_str *s, const char *c) { enc_arg(s, c, strlen(c)); }
static void enc_ll(lp_str *s, long long v) {
    char b[32];
    int n = snprintf(b, sizeof(b), "%lld", v);
    enc_arg(s, b, (size_t)n);
}

/* ---- scripts ---- */

/* The scripts are policy/lua/del.lua and policy/lua/expire.lua; the build turns them into
 * lp_lua_NAME (the exact bytes) and lp_lua_NAME_sha (their SHA-1, the EVALSHA name) in the
 * generated header included above (cmake/lua_scripts.cmake). */

/* del.lua, for DEL/UNLINK with lock keys. ARGV[1] is "del" or "unlink"; ARGV[i+1] the mode
 * of KEYS[i]: "o" ordinary key, "f" no lease here (delete only when it has no TTL),
 * "c<token>" the holder's own lease (delete only when the value is still the token),
 * "a[<token>]" audit mode (delete as asked, and add 10 when enforce would have refused as
 * foreign_release, 20 when the lock had no TTL: unknown_lease). Returns one code per key:
 * 1 deleted, 0 kept, -1 absent; an error of Redis's comes back unchanged. */
static const char *const del_script = lp_lua_del;
static const char *const del_sha = lp_lua_del_sha;

/* expire.lua, the owner-checked expire: KEYS[1] the lock, ARGV[1] the holder's token,
 * ARGV[2] the command (pexpire or pexpireat), ARGV[3..] its arguments. 0 when the lock is
 * no longer the holder's. */
static const char *const expire_script = lp_lua_expire;
static const char *const expire_sha = lp_lua_expire_sha;

/* Nothing left to do at run time: the digests come with the build. */
static void scripts_init(void) {}

/* Encodes EVALSHA (outside MULTI) with the EVAL fallback, or EVAL inside MULTI, where a
 * NOSCRIPT could not be retried. The arguments after the script are in args. */
static void enc_script(lock_op *op, const char *script, const char *sha, int in_multi,
                       int nkeys, int nargs, const lp_str *args) {
    lp_str *dst = in_multi ? &op->send : &op->retry;
    enc_head(dst, 3 + nargs);
    enc_cstr(dst, "EVAL");
    enc_cstr(dst, script);
    enc_ll(dst, nkeys);
    lp_str_add(dst, args->p, args->len);
    if (in_multi) return;
    enc_head(&op->send, 3 + nargs);
    enc_cstr(&op->send, "EVALSHA");
    enc_cstr(&op->send, sha);
    enc_ll(&op->send, nkeys);
    lp_str_add(&op->send, args->p, args->len);
    op->uses_sha = 1;
}

/* ---- helpers ---- */

static int arg_eq(const resp_arg *a, const char *lower) { return resp_arg_is(a, lower); }

static int same(const resp_arg *a, const resp_arg *b) {
    return a->len == b->len && memcmp(a->ptr, b->ptr, a->len) == 0;
}

/* Parses an integer argument exactly as Redis does (string2ll). */
static int arg_ll(const resp_arg *a, long long *out) {
    return resp_parse_ll(a->ptr, a->len, out) ? 0 : -1;
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

/* The owner a rule's scope gives this client. */
static size_t make_owner(const policy_rule *r, const lock_client *c, char *buf, size_t cap, int *conn_scoped) {
    int n;
    *conn_scoped = 0;
    /* The database is part of the owner: a lease in db 0 says nothing about db 1. */
    if (r->owner == POLICY_OWNER_CLIENT_ADDR) {
        n = snprintf(buf, cap, "addr:%.*s@%d", (int)c->ip_len, c->addr, c->db);
    } else if (r->owner == POLICY_OWNER_CLIENT_NAME && c->name != NULL && c->name_len > 0) {
        n = snprintf(buf, cap, "name:%.*s@%d", (int)(c->name_len > 250 ? 250 : c->name_len), c->name, c->db);
    } else {
        n = snprintf(buf, cap, "conn:%llu@%d", (unsigned long long)c->conn_id, c->db);
        *conn_scoped = 1;
    }
    return n < 0 ? 0 : (size_t)n >= cap ? cap - 1 : (size_t)n;
}

/* A new decision. Its time is ctx->now_ms: the command is sent in the same loop iteration,
 * so a lease counts from before Redis set the TTL, never after. */
static lock_op *op_new(const lock_ctx *ctx, int kind, const policy_rule *r, const lock_client *c) {
    lock_op *op = calloc(1, sizeof(*op));
    if (op == NULL) abort();
    op->kind = kind;
    op->conn_id = c->conn_id;
    op->sent_ms = ctx->now_ms;
    if (r != NULL) {
        copy_prefix(op->rule, r);
        snprintf(op->mode, sizeof(op->mode), "%s", policy_mode_name(r->mode));
        op->ownerlen = make_owner(r, c, op->owner, sizeof(op->owner), &op->owner_conn_scoped);
        op->ttl_ms = r->ttl_ms;
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

static void op_add_key(lock_op *op, const resp_arg *k, char mode, const policy_rule *r) {
    op->keys = realloc(op->keys, sizeof(*op->keys) * (size_t)(op->nkeys + 1));
    if (op->keys == NULL) abort();
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
}

static char *dup_bytes(const void *p, size_t len) {
    char *d = malloc(len + 1);
    if (d == NULL) abort();
    memcpy(d, p, len);
    d[len] = '\0';
    return d;
}

/* Remembers the lease behind a key of a DEL: its token, owner and start. */
static void key_set_lease(lock_key *lk, const lease *l, const char *owner, size_t ownerlen) {
    lk->acquired_ms = l->acquired_ms;
    lk->token = dup_bytes(l->value, l->valuelen);
    lk->tokenlen = l->valuelen;
    lk->owner = dup_bytes(owner, ownerlen);
    lk->ownerlen = ownerlen;
}

void lock_op_free(lock_op *op) {
    if (op == NULL) return;
    lp_str_free(&op->send);
    lp_str_free(&op->retry);
    lp_str_free(&op->local);
    for (int i = 0; i < op->nkeys; i++) {
        free(op->keys[i].key);
        free(op->keys[i].token);
        free(op->keys[i].owner);
    }
    free(op->keys);
    free(op->value);
    free(op);
}

int lock_op_extra_elements(const lock_op *op) { return op->merged ? 1 : 0; }

/* ---- logging ---- */

static void log_event(lock_ctx *ctx, const char *event, const char *action, const char *rule,
                      const char *mode, const lock_client *c, const char *client, const char *name,
                      size_t name_len, const void *key, size_t keylen, const char *detail,
                      long long held_ms, const void *token, size_t token_len) {
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
    e.client = c ? c->addr : client;
    if (c) {
        e.client_name = c->name;
        e.client_name_len = c->name_len;
    } else if (name) {
        e.client_name = name;
        e.client_name_len = name_len;
    }
    e.detail = detail;
    e.held_ms = held_ms;
    e.token = token;
    e.token_len = token_len;
    ctx->log(ctx->log_ud, &e);
}

/* An event at decision time, for a key matched by rule r. */
static void ev_now(lock_ctx *ctx, const lock_client *c, const policy_rule *r, const char *event,
                   const char *action, const resp_arg *key, const char *detail, long long held,
                   const resp_arg *token) {
    char rule[64];
    copy_prefix(rule, r);
    log_event(ctx, event, action, rule, policy_mode_name(r->mode), c, NULL, NULL, 0, key->ptr, key->len,
              detail, held, token ? token->ptr : NULL, token ? token->len : 0);
}

/* An event at reply time, from what the op remembered. */
static void ev_op(lock_ctx *ctx, const lock_op *op, const char *rule, const char *event,
                  const char *action, const void *key, size_t keylen, const char *detail, long long held) {
    const char *mode = op->mode;
    for (int i = 0; i < op->nkeys; i++)
        if (op->keys[i].key == key && op->keys[i].rule_mode[0]) mode = op->keys[i].rule_mode;
    log_event(ctx, event, action, rule, mode, NULL, op->client, op->has_name ? op->client_name : NULL,
              op->client_name_len, key, keylen, detail, held, op->value, op->value ? op->valuelen : 0);
}

/* ---- decisions ---- */

static int is_expire_cmd(const resp_arg *a, int *ms, int *at) {
    if (arg_eq(a, "expire")) { *ms = 0; *at = 0; return 1; }
    if (arg_eq(a, "pexpire")) { *ms = 1; *at = 0; return 1; }
    if (arg_eq(a, "expireat")) { *ms = 0; *at = 1; return 1; }
    if (arg_eq(a, "pexpireat")) { *ms = 1; *at = 1; return 1; }
    return 0;
}

/* TTL in ms that an EXPIRE-family command with this time argument asks for, read as Redis
 * reads it; -1 when Redis would refuse the argument or the time has already passed (such an
 * EXPIRE is never merged into an acquire). */
static long long expire_ttl(lock_ctx *ctx, const resp_arg *arg, int ms, int at) {
    resp_arg argv[3] = {{"expire", 6}, {"", 0}, *arg};
    expire_args ea;
    if (lp_expire_args(3, argv, ms, at, ctx->wall_ms, &ea) < 0 || ea.ttl_ms <= 0) return -1;
    /* Merged, it becomes SET ... PX ttl, which Redis refuses when ttl + its clock overflows:
     * such a time is left to the EXPIRE itself (a day of margin for the two clocks). */
    if (ea.ttl_ms > INT64_MAX - ctx->wall_ms - 86400000LL) return -1;
    return ea.ttl_ms;
}

/* SETNX, and SETNX followed by an EXPIRE of the same key (merged). */
static lock_action decide_setnx(lock_ctx *ctx, const lock_client *c, const policy_rule *r,
                                int argc, const resp_arg *argv, int next_argc, const resp_arg *next,
                                lock_op **out, int *took_next) {
    if (argc != 3) return LOCK_FORWARD;   /* Redis answers the arity error */
    long long ttl = r->ttl_ms;
    int merged = 0, ms, at;
    char detail[96];
    if (next != NULL && next_argc == 3 && is_expire_cmd(&next[0], &ms, &at) && same(&next[1], &argv[1])) {
        long long t = expire_ttl(ctx, &next[2], ms, at);
        if (t > 0) {
            ttl = t;
            merged = 1;
        }
    }
    if (r->max_ttl_ms > 0 && ttl > r->max_ttl_ms) {
        snprintf(detail, sizeof(detail), "ttl=%lld capped to max-ttl=%lld", ttl, r->max_ttl_ms);
        ev_now(ctx, c, r, "ttl_capped", r->mode == POLICY_ENFORCE ? "rewritten" : "forwarded", &argv[1], detail, -1, &argv[2]);
        if (r->mode == POLICY_ENFORCE) ttl = r->max_ttl_ms;
    }
    snprintf(detail, sizeof(detail), merged ? "ttl=%lld from the pipelined EXPIRE" : "ttl=%lld", ttl);
    if (r->mode == POLICY_AUDIT) {
        ev_now(ctx, c, r, "setnx_no_ttl", "forwarded", &argv[1], "no ttl in the same command", -1, &argv[2]);
        lock_op *op = op_new(ctx, OP_SETNX, r, c);
        op->observe = 1;
        op_add_key(op, &argv[1], 'c', r);
        op_set_value(op, &argv[2]);
        *out = op;
        return LOCK_SEND;
    }
    ev_now(ctx, c, r, "setnx_no_ttl", "rewritten", &argv[1], detail, -1, &argv[2]);
    lock_op *op = op_new(ctx, OP_SETNX, r, c);
    op->max_ttl_ms = r->max_ttl_ms;
    op->merged = merged;
    op->ttl_ms = ttl;
    op_add_key(op, &argv[1], 'c', r);
    op_set_value(op, &argv[2]);
    enc_head(&op->send, 6);
    enc_cstr(&op->send, "SET");
    enc_arg(&op->send, argv[1].ptr, argv[1].len);
    enc_arg(&op->send, argv[2].ptr, argv[2].len);
    enc_cstr(&op->send, "NX");
    enc_cstr(&op->send, "PX");
    enc_ll(&op->send, ttl);
    *took_next = merged;
    *out = op;
    return LOCK_SEND;
}

/* SET k v [NX|XX] [GET] [EX s|PX ms|EXAT|PXAT|KEEPTTL]. */
static lock_action decide_set(lock_ctx *ctx, const lock_client *c, const policy_rule *r,
                              int argc, const resp_arg *argv, lock_op **out) {
    set_args sa;
    if (lp_set_args(argc, argv, ctx->wall_ms, &sa) < 0) return LOCK_FORWARD;   /* Redis's error */
    int nx = sa.nx, get = sa.get, has_ttl = sa.keepttl || sa.expire_idx > 0, ttl_idx = sa.expire_idx;
    const char *act = r->mode == POLICY_ENFORCE ? "rewritten" : "forwarded";
    if (get) {
        ev_now(ctx, c, r, "getset_lock", "forwarded", &argv[1], "SET ... GET on a lock key", -1, &argv[2]);
        return LOCK_FORWARD;
    }
    if (!nx) {
        ev_now(ctx, c, r, "unconditional_set", "forwarded", &argv[1], "SET without NX overwrites any holder", -1, &argv[2]);
        return LOCK_FORWARD;
    }
    lock_op *op = op_new(ctx, OP_SET_NX, r, c);
    op_add_key(op, &argv[1], 'c', r);
    op_set_value(op, &argv[2]);
    op->observe = r->mode != POLICY_ENFORCE;
    char detail[96];
    if (!has_ttl) {
        snprintf(detail, sizeof(detail), "ttl=%lld", r->ttl_ms);
        ev_now(ctx, c, r, "set_nx_no_ttl", act, &argv[1], detail, -1, &argv[2]);
        if (r->mode == POLICY_ENFORCE) {
            enc_head(&op->send, argc + 2);
            for (int i = 0; i < argc; i++) enc_arg(&op->send, argv[i].ptr, argv[i].len);
            enc_cstr(&op->send, "PX");
            enc_ll(&op->send, r->ttl_ms);
        }
        *out = op;
        return LOCK_SEND;
    }
    if (ttl_idx > 0) {
        long long t = sa.ttl_ms;
        if (t > 0) op->ttl_ms = t;
        if (t > 0 && r->max_ttl_ms > 0 && t > r->max_ttl_ms) {
            snprintf(detail, sizeof(detail), "ttl=%lld capped to max-ttl=%lld", t, r->max_ttl_ms);
            ev_now(ctx, c, r, "ttl_capped", act, &argv[1], detail, -1, &argv[2]);
            if (r->mode == POLICY_ENFORCE) {
                op->ttl_ms = r->max_ttl_ms;
                enc_head(&op->send, argc);
                for (int i = 0; i < argc; i++) {
                    if (i == ttl_idx - 1) enc_cstr(&op->send, "PX");
                    else if (i == ttl_idx) enc_ll(&op->send, r->max_ttl_ms);
                    else enc_arg(&op->send, argv[i].ptr, argv[i].len);
                }
            }
        }
    }
    *out = op;
    return LOCK_SEND;
}

/* EXPIRE/PEXPIRE/EXPIREAT/PEXPIREAT k t [NX|XX|GT|LT]. */
static lock_action decide_expire(lock_ctx *ctx, const lock_client *c, const policy_rule *r,
                                 int argc, const resp_arg *argv, int ms, int at, lock_op **out) {
    if (argc < 3) return LOCK_FORWARD;
    expire_args ea;
    if (lp_expire_args(argc, argv, ms, at, ctx->wall_ms, &ea) < 0) return LOCK_FORWARD;   /* Redis's error */
    long long ttl = ea.ttl_ms;
    char owner[300];
    int conn_scoped;
    size_t ownerlen = make_owner(r, c, owner, sizeof(owner), &conn_scoped);
    const lease *l = ctx->leases ? lease_get(ctx->leases, argv[1].ptr, argv[1].len, owner, ownerlen) : NULL;
    int holder = l != NULL && l->deadline_ms >= ctx->now_ms;
    const char *act = r->mode == POLICY_ENFORCE ? "rewritten" : "forwarded";
    char detail[128];
    int capped = 0;
    /* The EXPIRE of a SETNX queued in the same transaction is the SETNX's own (audit mode
     * forwards both; enforce merges them when it can). */
    if (!holder && c->in_multi && c->multi_setnx != NULL && c->multi_setnx_len == argv[1].len &&
        memcmp(c->multi_setnx, argv[1].ptr, argv[1].len) == 0 && r->mode != POLICY_ENFORCE)
        return LOCK_FORWARD;
    if (r->max_ttl_ms > 0 && ttl > r->max_ttl_ms) {
        snprintf(detail, sizeof(detail), "ttl=%lld capped to max-ttl=%lld", ttl, r->max_ttl_ms);
        ev_now(ctx, c, r, "ttl_capped", act, &argv[1], detail, -1, NULL);
        capped = 1;
    }
    if (!holder) {
        snprintf(detail, sizeof(detail), "ttl=%lld; only a lock without a TTL gets one", ttl);
        ev_now(ctx, c, r, "foreign_expire", act, &argv[1], detail, -1, NULL);
        if (r->mode != POLICY_ENFORCE) return LOCK_FORWARD;
        int has_opt = 0, has_nx = 0;
        for (int i = 3; i < argc; i++) {
            has_opt = 1;
            if (arg_eq(&argv[i], "nx")) has_nx = 1;
        }
        lock_op *op = op_new(ctx, OP_EXPIRE_FOREIGN, r, c);
        op_add_key(op, &argv[1], 'f', r);
        if (has_opt && !has_nx) {
            /* XX/GT/LT only ever touch a lock that has a TTL: never another holder's. */
            str_cstr(&op->local, ":0\r\n");
            if (!c->in_multi) { *out = op; return LOCK_LOCAL; }
            enc_head(&op->send, 1);
            enc_cstr(&op->send, "PING");
            op->kind = OP_PERSIST;
            *out = op;
            return LOCK_SEND;
        }
        enc_head(&op->send, 4);
        enc_cstr(&op->send, "PEXPIRE");
        enc_arg(&op->send, argv[1].ptr, argv[1].len);
        enc_ll(&op->send, capped ? r->max_ttl_ms : ttl);
        enc_cstr(&op->send, "NX");
        if (has_nx) {
            /* The client asked for NX itself: its own bytes are already safe. */
            lp_str_free(&op->send);
        }
        *out = op;
        return LOCK_SEND;
    }
    if (r->mode != POLICY_ENFORCE) return LOCK_FORWARD;
    lock_op *op = op_new(ctx, OP_EXPIRE_HOLDER, r, c);
    op_add_key(op, &argv[1], 'c', r);
    op->value = malloc(l->valuelen + 1);
    if (op->value == NULL) abort();
    memcpy(op->value, l->value, l->valuelen);
    op->valuelen = l->valuelen;
    op->ttl_ms = capped ? r->max_ttl_ms : ttl;
    lp_str args = {0};
    enc_arg(&args, argv[1].ptr, argv[1].len);
    enc_arg(&args, l->value, l->valuelen);
    int nargs = 4;
    if (capped || !at) {
        enc_cstr(&args, "pexpire");
        enc_ll(&args, op->ttl_ms);
    } else {
        enc_cstr(&args, "pexpireat");
        enc_ll(&args, ea.when_ms);
    }
    for (int i = 3; i < argc; i++) {
        enc_arg(&args, argv[i].ptr, argv[i].len);
        nargs++;
    }
    enc_script(op, expire_script, expire_sha, c->in_multi, 1, nargs, &args);
    lp_str_free(&args);
    *out = op;
    return LOCK_SEND;
}

/* DEL/UNLINK k [k ...]: one atomic script when any key is a lock key. */
static lock_action decide_del(lock_ctx *ctx, const lock_client *c, int argc, const resp_arg *argv, lock_op **out) {
    int first = 1;
    while (first < argc && lock_rule(ctx, &argv[first]) == NULL) first++;
    if (first == argc) return LOCK_FORWARD;    /* no lock key: an ordinary DEL */
    lock_op *op = op_new(ctx, OP_DEL, NULL, c);
    int to_script = 0;
    for (int i = 1; i < argc; i++) {
        const policy_rule *r = lock_rule(ctx, &argv[i]);
        if (r == NULL) { op_add_key(op, &argv[i], 'o', NULL); to_script++; continue; }
        char owner[300];
        int conn_scoped;
        size_t ownerlen = make_owner(r, c, owner, sizeof(owner), &conn_scoped);
        const lease *l = ctx->leases ? lease_get(ctx->leases, argv[i].ptr, argv[i].len, owner, ownerlen) : NULL;
        const char *act = r->mode == POLICY_ENFORCE ? "rewritten" : "forwarded";
        ev_now(ctx, c, r, "del_unchecked", act, &argv[i],
               r->mode == POLICY_ENFORCE ? "checked against the lease" : "unconditional delete of a lock key",
               l != NULL ? (long long)(ctx->now_ms - l->acquired_ms) : -1, NULL);
        if (l != NULL && l->deadline_ms < ctx->now_ms) {
            char detail[96];
            snprintf(detail, sizeof(detail), "lease ended %lld ms before the release",
                     (long long)(ctx->now_ms - l->deadline_ms));
            ev_now(ctx, c, r, "late_release", r->mode == POLICY_ENFORCE ? "refused" : "forwarded", &argv[i],
                   detail, (long long)(ctx->now_ms - l->acquired_ms), NULL);
            op_add_key(op, &argv[i], r->mode == POLICY_ENFORCE ? 'k' : 'o', r);
            if (r->mode == POLICY_ENFORCE) lease_del(ctx->leases, argv[i].ptr, argv[i].len, owner, ownerlen);
            else to_script++;
            continue;
        }
        /* Audit: deleted as asked; the script says what enforce would have done. Enforce:
         * the holder's own lease is compare-deleted, any other lock only when it has no TTL. */
        char mode = r->mode != POLICY_ENFORCE ? 'a' : l != NULL ? 'c' : 'f';
        op_add_key(op, &argv[i], mode, r);
        if (l != NULL) key_set_lease(&op->keys[op->nkeys - 1], l, owner, ownerlen);
        to_script++;
    }
    int unlink = arg_eq(&argv[0], "unlink");
    if (to_script == 0) {
        str_cstr(&op->local, ":0\r\n");
        if (!c->in_multi) { *out = op; return LOCK_LOCAL; }
        enc_head(&op->send, 1);
        enc_cstr(&op->send, "PING");
        op->kind = OP_PERSIST;
        *out = op;
        return LOCK_SEND;
    }
    lp_str args = {0};
    for (int i = 0; i < op->nkeys; i++)
        if (op->keys[i].mode != 'k') enc_arg(&args, op->keys[i].key, op->keys[i].keylen);
    enc_cstr(&args, unlink ? "unlink" : "del");
    for (int i = 0; i < op->nkeys; i++) {
        lock_key *lk = &op->keys[i];
        if (lk->mode == 'k') continue;
        if (lk->mode == 'c' || (lk->mode == 'a' && lk->token != NULL)) {
            lp_str m = {0};
            lp_str_add(&m, &lk->mode, 1);
            lp_str_add(&m, lk->token, lk->tokenlen);
            enc_arg(&args, m.p, m.len);
            lp_str_free(&m);
        } else {
            enc_arg(&args, &lk->mode, 1);
        }
    }
    enc_script(op, del_script, del_sha, c->in_multi, to_script, 2 * to_script + 1, &args);
    lp_str_free(&args);
    *out = op;
    return LOCK_SEND;
}

int lock_op_merge_expire(lock_ctx *ctx, lock_op *op, int argc, const resp_arg *argv) {
    int ms, at;
    if (op->kind != OP_SETNX || op->merged || op->observe || argc != 3 || op->nkeys < 1) return 0;
    if (!is_expire_cmd(&argv[0], &ms, &at)) return 0;
    if (argv[1].len != op->keys[0].keylen || memcmp(argv[1].ptr, op->keys[0].key, argv[1].len) != 0) return 0;
    long long ttl = expire_ttl(ctx, &argv[2], ms, at);
    if (ttl <= 0) return 0;
    if (op->max_ttl_ms > 0 && ttl > op->max_ttl_ms) ttl = op->max_ttl_ms;
    op->merged = 1;
    op->ttl_ms = ttl;
    lp_str_free(&op->send);
    enc_head(&op->send, 6);
    enc_cstr(&op->send, "SET");
    enc_arg(&op->send, op->keys[0].key, op->keys[0].keylen);
    enc_arg(&op->send, op->value, op->valuelen);
    enc_cstr(&op->send, "NX");
    enc_cstr(&op->send, "PX");
    enc_ll(&op->send, ttl);
    return 1;
}

int lock_op_is_setnx(const lock_op *op) {
    return op->kind == OP_SETNX && !op->merged && !op->observe;
}

lock_action lock_decide(lock_ctx *ctx, const lock_client *c, int argc, const resp_arg *argv,
                        int next_argc, const resp_arg *next, lock_op **out, int *took_next) {
    *out = NULL;
    *took_next = 0;
    if (ctx->pol == NULL || argc < 2) return LOCK_FORWARD;
    scripts_init();
    const resp_arg *cmd = &argv[0];
    int ms, at;

    if (arg_eq(cmd, "del") || arg_eq(cmd, "unlink")) return decide_del(ctx, c, argc, argv, out);

    if (arg_eq(cmd, "eval") || arg_eq(cmd, "evalsha") || arg_eq(cmd, "eval_ro") || arg_eq(cmd, "evalsha_ro") ||
        arg_eq(cmd, "fcall") || arg_eq(cmd, "fcall_ro")) {
        long long nkeys;
        if (argc < 3 || arg_ll(&argv[2], &nkeys) < 0 || nkeys < 0 || nkeys > argc - 3) return LOCK_FORWARD;
        for (int i = 0; i < nkeys; i++) {
            const policy_rule *r = lock_rule(ctx, &argv[3 + i]);
            if (r) ev_now(ctx, c, r, "script_lock", "forwarded", &argv[3 + i], "a script or function names a lock key", -1, NULL);
        }
        return LOCK_FORWARD;
    }

    const policy_rule *r = lock_rule(ctx, &argv[1]);
    if (r == NULL) return LOCK_FORWARD;

    if (arg_eq(cmd, "setnx")) return decide_setnx(ctx, c, r, argc, argv, next_argc, next, out, took_next);
    if (arg_eq(cmd, "set")) return decide_set(ctx, c, r, argc, argv, out);
    if (is_expire_cmd(cmd, &ms, &at)) return decide_expire(ctx, c, r, argc, argv, ms, at, out);
    if (arg_eq(cmd, "getset")) {
        ev_now(ctx, c, r, "getset_lock", "forwarded", &argv[1], "GETSET on a lock key", -1, argc > 2 ? &argv[2] : NULL);
        return LOCK_FORWARD;
    }
    if (arg_eq(cmd, "persist") && argc == 2) {
        ev_now(ctx, c, r, "persist_lock", r->mode == POLICY_ENFORCE ? "refused" : "forwarded", &argv[1],
               "PERSIST would make the lock permanent", -1, NULL);
        if (r->mode != POLICY_ENFORCE) return LOCK_FORWARD;
        lock_op *op = op_new(ctx, OP_PERSIST, r, c);
        str_cstr(&op->local, ":0\r\n");
        *out = op;
        if (!c->in_multi) return LOCK_LOCAL;
        /* Inside MULTI something must be queued so the EXEC array keeps its shape: a PING,
         * whose element becomes :0. */
        enc_head(&op->send, 1);
        enc_cstr(&op->send, "PING");
        return LOCK_SEND;
    }
    return LOCK_FORWARD;
}

/* ---- replies ---- */

static int frame_is_null(const char *f, size_t len) {
    return (len == 5 && (memcmp(f, "$-1\r\n", 5) == 0 || memcmp(f, "*-1\r\n", 5) == 0)) ||
           (len == 3 && memcmp(f, "_\r\n", 3) == 0);
}

static void record_lease(lock_ctx *ctx, lock_op *op) {
    if (ctx->leases == NULL || op->nkeys < 1 || op->ownerlen == 0) return;
    lock_key *k = &op->keys[0];
    lease_put(ctx->leases, k->key, k->keylen, op->owner, op->ownerlen, op->value, op->valuelen,
              op->conn_id, op->sent_ms, op->sent_ms + op->ttl_ms, op->owner_conn_scoped);
}

/* Decodes the integer array the DEL script returns (RESP2 and RESP3 alike) with hiredis. */
static int decode_codes(const char *frame, size_t len, long long *codes, int n) {
    redisReader *rd = redisReaderCreate();
    if (rd == NULL) return -1;
    void *rep = NULL;
    int ok = -1;
    if (redisReaderFeed(rd, frame, len) == REDIS_OK && redisReaderGetReply(rd, &rep) == REDIS_OK && rep != NULL) {
        redisReply *r = rep;
        if (r->type == REDIS_REPLY_ARRAY && (int)r->elements == n) {
            ok = 0;
            for (int i = 0; i < n; i++) {
                if (r->element[i]->type != REDIS_REPLY_INTEGER) { ok = -1; break; }
                codes[i] = r->element[i]->integer;
            }
        }
        freeReplyObject(rep);
    }
    redisReaderFree(rd);
    return ok;
}

int lock_op_reply(lock_ctx *ctx, lock_op *op, const char *frame, size_t len, int in_exec, lp_str *out) {
    int err = len > 0 && (frame[0] == '-' || frame[0] == '!');
    if (err && !in_exec && op->uses_sha && len >= 9 && memcmp(frame, "-NOSCRIPT", 9) == 0) {
        op->uses_sha = 0;
        return LOCK_REPLY_RETRY;
    }
    switch (op->kind) {
    case OP_SETNX:
        if (op->observe) {
            lp_str_add(out, frame, len);
            if (frame[0] == ':' && len >= 2 && frame[1] == '1') record_lease(ctx, op);
            return LOCK_REPLY_DONE;
        }
        if (err) {
            lp_str_add(out, frame, len);
            if (op->merged) lp_str_add(out, frame, len);
        } else if (frame_is_null(frame, len)) {
            str_cstr(out, op->merged ? ":0\r\n:0\r\n" : ":0\r\n");
            /* The classic MULTI; SETNX; EXPIRE would have extended the holder's lock. */
            if (op->merged)
                ev_op(ctx, op, op->rule, "foreign_expire", "refused", op->keys[0].key, op->keys[0].keylen,
                      "the EXPIRE after a failed SETNX was not applied", -1);
        } else {
            record_lease(ctx, op);
            str_cstr(out, op->merged ? ":1\r\n:1\r\n" : ":1\r\n");
        }
        return LOCK_REPLY_DONE;
    case OP_SET_NX:
        if (len >= 3 && frame[0] == '+' && frame[1] == 'O') record_lease(ctx, op);
        lp_str_add(out, frame, len);
        return LOCK_REPLY_DONE;
    case OP_EXPIRE_HOLDER:
        if (len >= 4 && memcmp(frame, ":1\r\n", 4) == 0 && ctx->leases) {
            lock_key *k = &op->keys[0];
            lease_set_deadline(ctx->leases, k->key, k->keylen, op->owner, op->ownerlen, op->sent_ms + op->ttl_ms);
        }
        if (len >= 4 && memcmp(frame, ":0\r\n", 4) == 0) {
            ev_op(ctx, op, op->rule, "foreign_expire", "refused", op->keys[0].key, op->keys[0].keylen,
                  "the lock is no longer this holder's", -1);
        }
        lp_str_add(out, frame, len);
        return LOCK_REPLY_DONE;
    case OP_EXPIRE_FOREIGN:
        lp_str_add(out, frame, len);
        return LOCK_REPLY_DONE;
    case OP_PERSIST:
        lp_str_add(out, ":0\r\n", 4);
        return LOCK_REPLY_DONE;
    case OP_DEL: {
        if (err) { lp_str_add(out, frame, len); return LOCK_REPLY_DONE; }
        int n = 0;
        for (int i = 0; i < op->nkeys; i++) n += op->keys[i].mode != 'k';
        long long *codes = calloc((size_t)n + 1, sizeof(*codes));
        if (codes == NULL) abort();
        if (decode_codes(frame, len, codes, n) < 0) {
            /* Not the script's answer: pass it on as it is. */
            free(codes);
            lp_str_add(out, frame, len);
            return LOCK_REPLY_DONE;
        }
        long long total = 0;
        for (int i = 0, j = 0; i < op->nkeys; i++) {
            lock_key *k = &op->keys[i];
            if (k->mode == 'k') continue;
            long long code = codes[j++];
            if (k->mode == 'a') {
                long long verdict = code / 10;
                code %= 10;
                if (k->owner != NULL && ctx->leases) lease_del(ctx->leases, k->key, k->keylen, k->owner, k->ownerlen);
                if (verdict == 1)
                    ev_op(ctx, op, k->rule, "foreign_release", "forwarded", k->key, k->keylen,
                          k->token ? "the lock held another token" : "not the holder; the lock had a TTL", -1);
                else if (verdict == 2)
                    ev_op(ctx, op, k->rule, "unknown_lease", "forwarded", k->key, k->keylen,
                          "no lease and no TTL", -1);
            }
            if (code > 0) total += code;
            if (k->mode == 'c') {
                if (ctx->leases) lease_del(ctx->leases, k->key, k->keylen, k->owner, k->ownerlen);
                if (code == 0) {
                    ev_op(ctx, op, k->rule, "foreign_release", "refused", k->key, k->keylen,
                          "the lock now holds another token", ctx->now_ms - k->acquired_ms);
                }
            } else if (k->mode == 'f') {
                if (code == 1)
                    ev_op(ctx, op, k->rule, "unknown_lease", "forwarded", k->key, k->keylen,
                          "no lease and no TTL: deleted as asked", -1);
                else if (code == 0)
                    ev_op(ctx, op, k->rule, "foreign_release", "refused", k->key, k->keylen,
                          "not the holder; the lock has a TTL", -1);
            }
        }
        free(codes);
        str_num(out, ':', total);
        return LOCK_REPLY_DONE;
    }
    }
    lp_str_add(out, frame, len);
    return LOCK_REPLY_DONE;
}
