/* Lock policy decisions: which commands on lock keys are rewritten,
 * what is sent instead, and how the reply is turned back into the shape the client's own
 * command promises. No sockets: the proxy hands in arguments and reply frames, and gets
 * back bytes to send, bytes to answer, and audit events through a callback.
 *
 * A decision is a lock_op. The proxy sends op->send (or the client's own bytes when
 * op->send is empty), pairs the reply frame with the op, and calls lock_op_reply() with it,
 * which yields the client's reply and records or ends leases. Inside MULTI the reply to a
 * queued command is passed through and the EXEC array element goes through
 * lock_op_reply() instead. */
#ifndef LP_LOCK_H
#define LP_LOCK_H

#include <stdint.h>
#include <stddef.h>
#include "resp/request.h"
#include "policy/policy.h"
#include "policy/lease.h"
#include "policy/audit.h"

/* A growable byte string. */
typedef struct lp_str {
    char *p;
    size_t len, cap;
} lp_str;

void lp_str_add(lp_str *s, const void *p, size_t len);
void lp_str_free(lp_str *s);

/* What the proxy knows about the client, for ownership and logging. */
typedef struct lock_client {
    uint64_t conn_id;
    const char *addr;         /* "ip:port" */
    size_t ip_len;            /* bytes of the IP part of addr */
    const char *name;         /* CLIENT SETNAME, or NULL */
    size_t name_len;
    int proto;                /* 2 or 3 */
    int in_multi;             /* the command is being queued by MULTI */
    int db;                   /* SELECTed database */
    const char *multi_setnx;  /* the key of a SETNX queued earlier in this MULTI, or NULL */
    size_t multi_setnx_len;
} lock_client;

typedef struct lock_ctx {
    const policy *pol;
    lease_table *leases;
    void (*log)(void *ud, const audit_event *e);
    void *log_ud;
    int64_t now_ms;           /* monotonic clock, set by the caller before each call */
    int64_t wall_ms;          /* wall clock, for EXPIREAT */
} lock_ctx;

typedef enum {
    LOCK_FORWARD,             /* send the client's bytes; no op (events may have been logged) */
    LOCK_SEND,                /* send op->send (or the client's bytes when empty); reply to op */
    LOCK_LOCAL                /* answer op->local without sending anything */
} lock_action;

typedef struct lock_key {
    char *key;
    size_t keylen;
    char mode;                /* DEL: 'o' ordinary, 'c' compare-delete, 'f' foreign, 'k' keep */
    char rule[64];            /* the rule's prefix, for logging (truncated) */
    char rule_mode[8];
    int64_t acquired_ms;      /* 'c': when the lease began */
    char *token;              /* 'c': the holder's token */
    size_t tokenlen;
    char *owner;              /* 'c': the lease's owner */
    size_t ownerlen;
} lock_key;

typedef struct lock_op {
    int kind;
    uint64_t conn_id;         /* the session that sent it */
    int64_t sent_ms;          /* when it was decided and sent: leases count from here */
    int merged;               /* SETNX+EXPIRE answered as two replies */
    int observe;              /* audit mode: reply passes unchanged, leases are still kept */
    lp_str send;              /* the command to send instead, RESP-encoded */
    lp_str retry;             /* EVAL to send when EVALSHA answers NOSCRIPT */
    int uses_sha;             /* op->send is an EVALSHA: the caller must not pipeline past it */
    lp_str local;             /* LOCK_LOCAL: the reply */
    char *value;              /* the token of a SET NX, or a holder's token */
    size_t valuelen;
    lock_key *keys;
    int nkeys;
    char owner[300];
    size_t ownerlen;
    int owner_conn_scoped;
    long long ttl_ms;         /* lease length to record on success */
    long long max_ttl_ms;     /* the rule's cap, for a later merge */
    char rule[64];
    char mode[8];
    char client[64];
    char client_name[64];
    size_t client_name_len;
    int has_name;
} lock_op;

/* Decides what to do with one command. next/next_argc, when not NULL, is the command that
 * follows it in the same read (pipelined): a SETNX followed by an EXPIRE of the same key is
 * merged into one SET NX PX, and *took_next is set to 1. */
lock_action lock_decide(lock_ctx *ctx, const lock_client *c, int argc, const resp_arg *argv,
                        int next_argc, const resp_arg *next, lock_op **op, int *took_next);

enum { LOCK_REPLY_DONE, LOCK_REPLY_RETRY };

/* Turns the reply frame to op->send (or one EXEC element, when in_exec) into the client's
 * reply, appended to out. Returns LOCK_REPLY_RETRY when the script was not cached: send
 * op->retry and give its reply to lock_op_reply() again. */
int lock_op_reply(lock_ctx *ctx, lock_op *op, const char *frame, size_t len, int in_exec, lp_str *out);

/* A SETNX queued inside MULTI waits for the next queued command: when that is an EXPIRE of
 * the same key, the two become one SET NX PX with the EXPIRE's TTL (op->send is rewritten,
 * op->merged set) and 1 is returned. */
int lock_op_merge_expire(lock_ctx *ctx, lock_op *op, int argc, const resp_arg *argv);
/* 1 for a plain rewritten SETNX, the kind that may wait for its EXPIRE inside MULTI. */
int lock_op_is_setnx(const lock_op *op);

/* Extra EXEC elements this op makes: 1 for a merged SETNX+EXPIRE, else 0. */
int lock_op_extra_elements(const lock_op *op);

void lock_op_free(lock_op *op);

#endif
