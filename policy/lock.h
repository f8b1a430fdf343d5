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
 * and lock, the acquire id and the SHA-1 of the token it got, for late detection and renewal
 * only, within a byte budget (lease_table_set_max_bytes); what it had to evict is found again
 * in Redis (see lock_cache_lookup and the scripts' id prefixes).
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
#include "resp/command.h"
#include "policy/policy.h"
#include "policy/lease.h"
#include "policy/audit.h"

struct lock_txn;

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
    int no_split;             /* replies are off: a command must go as one script call */
    const char *multi_setnx;  /* the key of a SETNX queued earlier in this MULTI, or NULL */
    size_t multi_setnx_len;
    const struct lock_txn *txn;   /* in_multi: the acquires queued earlier in this MULTI, which
                               * later lock commands of the same transaction are judged after
                               * (their lease is the one they will see); NULL: none */
    const struct resp_command *cmd;   /* the command, looked up once per frame; NULL: look it up */
    int64_t now_ms;           /* when the command is decided: monotonic clock */
    int64_t wall_ms;          /* and the wall clock, for reading EXPIREAT/PXAT as Redis does */
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
    void *reader;             /* hiredis's redisReader for script replies (lockreply.c) */
    const char *instance;     /* instance-name: owner of loopback and unix clients */
    char proxy_id[24];        /* this process, in acquire ids */
    uint64_t next_acquire;
} lock_ctx;

typedef enum {
    LOCK_FORWARD,             /* send the client's bytes; no op (events may have been logged) */
    LOCK_SEND,                /* send op->send (or the client's bytes when empty); reply to op */
    LOCK_LOCAL                /* answer op->local without sending anything */
} lock_action;

/* A decision: what to send, what the client's reply will be made of. Opaque: see the
 * accessors below. */
typedef struct lock_op lock_op;

/* Sets up ctx: a random proxy id for acquire ids. */
void lock_ctx_init(lock_ctx *ctx);
/* Frees what lock_ctx_init and the replies allocated (not the tables the caller set). */
void lock_ctx_free(lock_ctx *ctx);

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
int lock_op_merge_expire(lock_ctx *ctx, lock_op *op, int64_t wall_ms, int argc, const resp_arg *argv);
/* 1 for a rewritten SETNX, the kind that may wait for its EXPIRE inside MULTI. */
int lock_op_is_setnx(const lock_op *op);

/* Extra EXEC elements this op makes: 1 for a merged SETNX+EXPIRE, else 0. */
int lock_op_extra_elements(const lock_op *op);

/* An op queued in MULTI is an EVALSHA whose script must be loaded when EXEC runs it:
 * returns which script (a bit: 1, 2, 4, 8 or 16, one per script; 0 when op needs none) and,
 * when out is not NULL, appends "EVAL <script> 0" to it. The proxy uses the bit to send the
 * first op of each script in a transaction as that script's EVAL (lock_op_multi_eval). */
unsigned lock_op_preload(const lock_op *op, lp_str *out);
/* Makes an op queued in MULTI (an EVALSHA) an EVAL that carries its script: the proxy does
 * so for the first op of each script in a transaction. EXEC runs that EVAL before the
 * EVALSHAs queued after it, so they find the script loaded; and at queue time Redis judges
 * the EVAL by its script's flags as it judges the command the client sent (-READONLY on a
 * read-only replica, -OOM), with the error in the client's own reply. Returns 0, or -1 when
 * op is not such an EVALSHA. */
int lock_op_multi_eval(lock_op *op);

void lock_op_free(lock_op *op);
/* The bytes op holds (itself, its strings, its keys), for per-connection accounting. */
size_t lock_op_bytes(const lock_op *op);

/* What the proxy sends for op: the rewritten command (empty: the client's own bytes). */
const lp_str *lock_op_send(const lock_op *op);
/* What to send instead when Redis refused op_send (see lock_op_reply). */
const lp_str *lock_op_retry(lock_op *op);
/* LOCK_LOCAL: the reply the proxy gives itself. */
const lp_str *lock_op_local(const lock_op *op);
/* 1 when op_send is an EVALSHA, whose EVAL (lock_op_retry) is what goes under CLIENT REPLY
 * OFF, where a NOSCRIPT could not be seen. */
int lock_op_uses_sha(const lock_op *op);
/* 1 after Redis refused the script for scripting rights (NOPERM). */
int lock_op_noperm(const lock_op *op);
/* 1 when op sent a script (so a reply that is no error proves the user may run scripts). */
int lock_op_scripted(const lock_op *op);
/* 1 when op's rule is in audit mode: what is sent keeps the command's own effect. */
int lock_op_audit(const lock_op *op);
/* The protocol the reply arrives in (the one in force when it comes, set by the caller). */
void lock_op_set_proto(lock_op *op, int proto);
/* Logs check_unavailable for the connection op came from (Redis refused it scripts). */
void lock_op_log_check_unavailable(lock_ctx *ctx, const lock_op *op, const char *client,
                                   const char *name, size_t name_len);

/* A rewritten command queued inside MULTI, by its place in the transaction. */
typedef struct multi_op {
    int index;
    lock_op *op;
} multi_op;

/* EXEC's reply rebuilt: the elements of rewritten commands go through lock_op_reply (a merged
 * SETNX+EXPIRE answers for two), the others are copied. An EXEC that did not run (an error,
 * or a null after a WATCH conflict) passes unchanged. proto: the protocol in force. */
void lock_exec_reply(lock_ctx *ctx, multi_op *mops, int nmops, int proto, const char *f, size_t len,
                     lp_str *out);

/* The same rebuild, streamed for replies too large to keep whole: lock_exec_count() is the
 * element count the client sees for an EXEC array of count elements (>= 0), and
 * lock_exec_op_at() the rewritten command whose reply element i is, or NULL when the element
 * passes unchanged. An op's element goes through lock_op_reply(ctx, op, elem, len, 1, out)
 * after lock_op_set_proto(). mops is in index order, as the proxy records it. */
long long lock_exec_count(const multi_op *mops, int nmops, long long count);
lock_op *lock_exec_op_at(const multi_op *mops, int nmops, long long i);

/* The lock commands of one connection's transaction: a SETNX queued in MULTI is held until
 * the next command shows whether an EXPIRE of its key follows (the two then become one
 * acquire with the EXPIRE's TTL: clients send a transaction one command at a time, so this
 * cannot wait for both in one read), and the key of the last SETNX queued is kept (audit mode
 * forwards that SETNX's own EXPIRE). */
typedef struct lock_txn_acq {
    char *key;                /* the lock key */
    size_t keylen;
    int db;
    char id[48];              /* the acquire id the lease record will hold */
    char *token;              /* the token's SHA-1 (hex), as the lease cache keeps it */
    size_t tokenlen;
} lock_txn_acq;

typedef struct lock_txn {
    lock_op *held;
    unsigned preloaded;       /* scripts queued for loading in this transaction (bits) */
    char *setnx_key;
    size_t setnx_len;
    lock_txn_acq *acq;        /* the acquires queued in this MULTI, oldest first */
    int nacq;
} lock_txn;

/* MULTI opened a transaction. */
void lock_txn_begin(lock_txn *t);
/* A command is queued inside MULTI: remembers a SETNX's key. */
void lock_txn_note(lock_txn *t, const resp_command *cmd, int argc, const resp_arg *argv);
/* A rewritten command was queued in MULTI: when it is an acquire, the lock commands queued
 * after it in the same transaction see its lease (an EXPIRE or DEL of its key runs after it
 * in EXEC, as its holder's). */
void lock_txn_queued(lock_txn *t, const lock_op *op);
/* The lease an acquire queued earlier in this transaction gives key in db: 1 with id and
 * token set, else 0. */
int lock_txn_lease(const lock_txn *t, const char *key, size_t keylen, int db, const char **id,
                   const char **token, size_t *tokenlen);
/* Holds op when it is a rewritten SETNX queued in MULTI and none is held yet: returns 1 (the
 * caller answers +QUEUED), else 0. */
int lock_txn_hold(lock_txn *t, lock_op *op);
/* The next command of the transaction arrived (argc may be 0: EXEC, DISCARD or a close):
 * returns the held SETNX, now to be sent, merged with this command when it is an EXPIRE of
 * the same key (*merged = 1: the command is taken). NULL when nothing was held. */
lock_op *lock_txn_release(lock_txn *t, lock_ctx *ctx, int64_t wall_ms, int argc, const resp_arg *argv,
                          int *merged);
void lock_txn_free(lock_txn *t);

/* The lease-record and history keys of a lock key (appended to out). */
void lock_record_key(lp_str *out, const char *key, size_t keylen);
void lock_history_key(lp_str *out, const char *key, size_t keylen);

/* The owner of a connection's leases in the lease cache ("c<conn>@<db>"). */
size_t lock_cache_owner(uint64_t conn_id, int db, char *buf, size_t cap);
/* The key the lease cache files a lock key under: the key itself up to LOCK_CACHE_KEY_MAX
 * bytes, else "\xff#" and the key's SHA-1 in buf. Sets *out and returns its length. */
#define LOCK_CACHE_KEY_MAX 64
#define LOCK_CACHE_KEY_CAP 44
size_t lock_cache_key(const char *key, size_t keylen, char buf[LOCK_CACHE_KEY_CAP], const char **out);
/* The cached lease of a connection (conn_id, db) on a lock key, or NULL. */
const lease *lock_cache_lookup(lease_table *t, const char *key, size_t keylen, uint64_t conn_id, int db);
/* Reads a lease-cache value: the acquire id (NUL-terminated into id), whether the proxy
 * renews it, and the token. Returns 0, or -1 when it is not one. */
int lock_cache_value(const lease *l, char *id, size_t idcap, int *renewing, const char **token,
                     size_t *tokenlen);

#endif
