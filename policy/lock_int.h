/* Shared between policy/lock.c (decisions) and policy/lockreply.c (replies). Private to
 * policy/. */
#ifndef LP_LOCK_INT_H
#define LP_LOCK_INT_H

#include "policy/lock.h"

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

#endif
