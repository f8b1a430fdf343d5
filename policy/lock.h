/* Lock policy decisions: which commands on lock keys are rewritten, what is sent instead,
 * and how the reply is turned back into the shape the client's own command promises. No
 * sockets: the proxy hands in arguments and reply frames, and gets back bytes to send,
 * bytes to answer, and audit events through a callback.
 *
 * Leases live in Redis, beside each lock: an acquire through the proxy writes, in the same
 * script, a lease record (owner, acquire id, the token's SHA-1, the acquire time by Redis's
 * clock) with the lock's TTL, at "__lockproxy:{T}:r:<lock key>" (T: the lock key's hash tag,
 * or the whole key), and a short history at "__lockproxy:{T}:h:<lock key>" (the last acquire
 * id, the last released one, the ids that ended by their TTL). Releases and renewals are
 * checked against the record, so any number of proxies may front one Redis and a proxy may
 * restart while locks are held. The proxy's memory (the lease cache) holds, per connection
 * and lock, the acquire id and token it got, for late detection and renewal only.
 *
 * A decision is a lock_op. The proxy sends op->send (or the client's own bytes when
 * op->send is empty), pairs the reply frame with the op, and calls lock_op_reply() with it,
 * which yields the client's reply. Inside MULTI the reply to a queued command is passed
 * through and the EXEC array element goes through lock_op_reply() instead. */
#ifndef LP_LOCK_H
#define LP_LOCK_H

#include <stdint.h>
#include <stddef.h>
#include "resp/request.h"
#include "resp/encode.h"
#include "policy/policy.h"
#include "policy/lease.h"
#include "policy/audit.h"

/* What the proxy knows about the client, for ownership and logging. */
typedef struct lock_client {
    uint64_t conn_id;
    const char *addr;         /* "ip:port", "[v6]:port" or "unix" */
    size_t ip_len;            /* bytes of the IP part of addr */
    const char *name;         /* CLIENT SETNAME, or NULL */
    size_t name_len;
    const char *user;         /* the ACL user it authenticated as, or NULL */
    size_t user_len;
    int proto;                /* 2 or 3 */
    int in_multi;             /* the command is being queued by MULTI */
    int db;                   /* SELECTed database */
    int no_scripts;           /* Redis refused a script for this connection (NOPERM) */
    const char *multi_setnx;  /* the key of a SETNX queued earlier in this MULTI, or NULL */
    size_t multi_setnx_len;
} lock_client;

/* A lock to renew: handed to the proxy when a lease that renew= covers is acquired. */
typedef struct lock_renewal {
    uint64_t conn_id;
    int db;
    const char *key;
    size_t keylen;
    const char *id;           /* the acquire id */
    long long ttl_ms;         /* the TTL each renewal gives */
    long long max_hold_ms;    /* 0: none */
    const char *rule;         /* the rule's prefix, for logging */
    const char *client;       /* "ip:port" */
} lock_renewal;

typedef struct lock_ctx {
    const policy *pol;
    lease_table *leases;      /* the lease cache; NULL: no late detection, no renewal */
    void (*log)(void *ud, const audit_event *e);
    void *log_ud;
    void (*renew)(void *ud, const lock_renewal *r);   /* NULL: no renewal */
    void *renew_ud;
    audit_once *script_once;  /* script_lock: once per script, rule and client IP an hour */
    const char *instance;     /* instance-name: owner of loopback and unix clients */
    char proxy_id[24];        /* this process, in acquire ids */
    uint64_t next_acquire;
    int64_t now_ms;           /* monotonic clock, set by the caller before each call */
    int64_t wall_ms;          /* wall clock, for reading EXPIREAT arguments as Redis does */
} lock_ctx;

typedef enum {
    LOCK_FORWARD,             /* send the client's bytes; no op (events may have been logged) */
    LOCK_SEND,                /* send op->send (or the client's bytes when empty); reply to op */
    LOCK_LOCAL                /* answer op->local without sending anything */
} lock_action;

typedef struct lock_key {
    char *key;
    size_t keylen;
    char mode;                /* DEL: 'o' ordinary, 'r' checked, 'a' audit, 'x' exempt */
    char rule[64];            /* the rule's prefix, for logging (truncated) */
    char rule_mode[8];
    int held;                 /* this connection had a lease on it (in the cache) */
} lock_key;

typedef struct lock_op {
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
    lp_str orig;              /* the client's own command */
    int uses_sha;             /* op->send is an EVALSHA */
    lp_str local;             /* LOCK_LOCAL: the reply */
    char *value;              /* the token of an acquire */
    size_t valuelen;
    lock_key *keys;
    int nkeys;
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
} lock_op;

/* Sets up ctx: a random proxy id for acquire ids. */
void lock_ctx_init(lock_ctx *ctx);

/* Decides what to do with one command (argv; its RESP bytes in frame, kept for the
 * fallback when Redis refuses scripts). */
lock_action lock_decide(lock_ctx *ctx, const lock_client *c, int argc, const resp_arg *argv,
                        const char *frame, size_t framelen, lock_op **op);

enum { LOCK_REPLY_DONE, LOCK_REPLY_RETRY };

/* Turns the reply frame to op->send (or one EXEC element, when in_exec) into the client's
 * reply, appended to out. Returns LOCK_REPLY_RETRY when Redis refused the script (NOSCRIPT:
 * op->retry is the EVAL; NOPERM: op->retry is the client's own command and op->noperm is
 * set): send op->retry and give its reply to lock_op_reply() again. */
int lock_op_reply(lock_ctx *ctx, lock_op *op, const char *frame, size_t len, int in_exec, lp_str *out);

/* The op went out under CLIENT REPLY OFF/SKIP: no reply will come. An acquire is taken as
 * done (cached, renewed); renewals check the record, so a failed one renews nothing. */
void lock_op_sent_silently(lock_ctx *ctx, lock_op *op);

/* A SETNX queued inside MULTI waits for the next queued command: when that is an EXPIRE of
 * the same key, the two become one acquire with the EXPIRE's TTL (op->send is rewritten,
 * op->merged set) and 1 is returned. */
int lock_op_merge_expire(lock_ctx *ctx, lock_op *op, int argc, const resp_arg *argv);
/* 1 for a rewritten SETNX, the kind that may wait for its EXPIRE inside MULTI. */
int lock_op_is_setnx(const lock_op *op);

/* Extra EXEC elements this op makes: 1 for a merged SETNX+EXPIRE, else 0. */
int lock_op_extra_elements(const lock_op *op);

void lock_op_free(lock_op *op);

/* The lease-record and history keys of a lock key (appended to out). */
void lock_record_key(lp_str *out, const char *key, size_t keylen);
void lock_history_key(lp_str *out, const char *key, size_t keylen);

/* The owner of a connection's leases in the lease cache ("c<conn>@<db>"). */
size_t lock_cache_owner(uint64_t conn_id, int db, char *buf, size_t cap);
/* Reads a lease-cache value: the acquire id (NUL-terminated into id), whether the proxy
 * renews it, and the token. Returns 0, or -1 when it is not one. */
int lock_cache_value(const lease *l, char *id, size_t idcap, int *renewing, const char **token,
                     size_t *tokenlen);

#endif
