/* Shared between policy/lock.c (decisions) and policy/lockreply.c (replies). Private to
 * policy/. */
#ifndef LP_LOCK_INT_H
#define LP_LOCK_INT_H

#include "policy/lock.h"

typedef struct lock_key {
    char *key;
    size_t keylen;
    char mode;                /* DEL: 'o' ordinary, 'r' checked, 'a' audit, 'x' exempt */
    char rule[64];            /* the rule's prefix, for logging (truncated) */
    char rule_mode[8];
    int held;                 /* this connection had a lease on it (in the cache) */
} lock_key;

struct lock_op {
    int kind;
    int shape;                /* acquire: the reply the client's command promises */
    uint64_t conn_id;
    int db;
    int proto;
    int64_t sent_ms;          /* when it was decided and sent */
    int merged;               /* SETNX+EXPIRE inside MULTI, answered as two elements */
    int audit;                /* audit mode: the reply is what the client's command gives */
    int renew;                /* acquire: the proxy renews it while the connection lives */
    int log_pending;          /* a SETNX held in MULTI: its event is logged once the merge is decided */
    int noperm;               /* Redis refused the script (NOPERM): the client's own command
                               * went instead; the caller stops sending scripts for it */
    lp_str send;              /* the command to send instead, RESP-encoded */
    lp_str retry;             /* what to send when Redis refuses op->send (NOSCRIPT, NOPERM) */
    const char *script;       /* EVALSHA: the script, its key count, argument count and */
    int script_nkeys, script_nargs;
    lp_str script_args;       /* encoded keys and arguments, for the EVAL built on NOSCRIPT */
    lp_str orig;              /* the client's own command */
    int uses_sha;             /* op->send is an EVALSHA */
    lp_str local;             /* LOCK_LOCAL: the reply */
    char *value;              /* the token of an acquire */
    size_t valuelen;
    lock_key *keys;
    int nkeys, keys_cap;
    char id[48];              /* acquire id */
    lp_str owner;             /* acquire: the owner identity written in the record */
    long long ttl_ms;         /* the TTL an acquire asks for */
    long long max_ttl_ms;
    long long max_hold_ms;
    int expire_at;            /* a merged EXPIRE: absolute time */
    char rule[64];
    char mode[8];
    char client[64];
    char client_name[64];
    size_t client_name_len;
    int has_name;
    const char *multi_script; /* queued in MULTI as EVALSHA: the script it needs loaded */
    /* DEL/UNLINK, sent in parts of at most del_chunk keys (0: one part): the part in flight
     * covers keys [del_start, del_next); del_total sums the parts' counts. */
    int unlink;
    int del_chunk, del_start, del_next;
    long long del_total;
    long long ev_more[5];     /* reply events left out per verdict (see lock_ev_capped) */
    int ev_logged[5];
    int ev_last[5];           /* the last key left out, per verdict */
    const char *ev_act[5];    /* and its action */
};

/* A DEL/UNLINK is sent as several release.lua calls of this many keys each, so that Redis
 * serves other clients between them. */
#define LOCK_DEL_CHUNK 1000
/* Events of one kind logged for one DEL; the rest are counted in one summary line. */
#define LOCK_DEL_EVENTS_MAX 16

/* Encodes the next part of a DEL op (keys from op->del_next) into op->send. */
void lock_del_encode_part(lock_ctx *ctx, lock_op *op, int in_multi, const struct lock_txn *txn);

enum {
    OP_ACQUIRE = 1,     /* SETNX, SET NX: acquire.lua */
    OP_EXPIRE,          /* EXPIRE family: expire.lua */
    OP_PERSIST,         /* refused: :0 */
    OP_DEL,             /* DEL/UNLINK with lock keys: release.lua */
    OP_PASS             /* Redis refused scripts: the client's own command, reply unchanged */
};

enum {
    SHAPE_SETNX,        /* :1 / :0 */
    SHAPE_SET,          /* +OK / null */
    SHAPE_SET_GET       /* null when acquired, the old value when not */
};

/* Release verdicts, as release.lua and expire.lua return them. */
enum { V_OWN, V_FOREIGN, V_LATE, V_NO_RECORD, V_ABSENT };

/* An event at reply time, from what the op remembered. key NULL: the op's first key. */
void lock_ev_op(lock_ctx *ctx, const lock_op *op, const lock_key *k, const char *event,
                const char *action, const char *detail, long long held);

/* The lease cache: what this connection got for a key. */
void lock_cache_put(lock_ctx *ctx, const lock_op *op, long long ttl_ms);
void lock_cache_del(lock_ctx *ctx, const lock_op *op, const char *key, size_t keylen);
/* The holder set its own TTL: the cached lease is marked as no longer renewed. */
void lock_cache_stop_renewing(lock_ctx *ctx, const lock_op *op);

#endif
