/* Reply accounting: which reply answers which request, as redis-server decides it. No libuv,
 * no sockets: the session hands in each framed request and each framed reply and gets back
 * a verdict, which it acts on (forward, answer locally, pass out of band, stop pairing).
 *
 * The queue holds one entry per group of requests that answer alike:
 *
 *   PLAIN    n requests, one reply each (run-length: a 10,000-GET pipeline is one entry)
 *   SUB      (P|S)(UN)SUBSCRIBE: one reply per channel; n = 0 is the bare form, one reply
 *            per current subscription and at least one
 *   HELLO    switches the protocol (and may authenticate and name the client) on success
 *   MONITOR  +OK, then MONITOR lines are out of band
 *   RESET    +RESET clears protocol, subscriptions, MONITOR, database, name
 *   LOCAL    a reply the proxy makes itself, sent once everything before it is answered
 *   OP       a rewritten lock command: its reply is captured for the policy
 *   EXEC     EXEC of a transaction holding rewritten commands: captured too; or, split, the
 *            EXEC of a transaction that queued commands changing reply accounting: only its
 *            header line is read (pairing_exec_header), then one entry per element
 *   SWALLOW  a reply the client already had from the proxy (+QUEUED): captured, dropped
 *   SYNC     SYNC or PSYNC: an error line is its reply; anything else (a bare "\n" keepalive,
 *            +FULLRESYNC, +CONTINUE, the RDB bulk) starts the replication stream, and the
 *            session passes bytes through both ways from then on (pairing_sync_starts)
 *   BARRIER  tracking lost: the replies before the proxy's own DISCARD and PING <marker>
 *            pass as they come, the replies to those two are dropped (local: the marker;
 *            prev: the frame held back until the next shows whether it was DISCARD's)
 *
 * Request-side state (MULTI, CLIENT REPLY OFF/SKIP) decides how many replies a request gets;
 * reply-side state (protocol, subscriptions, MONITOR) decides what is out of band.
 *
 * Inside MULTI, CLIENT REPLY, (P|S)(UN)SUBSCRIBE, HELLO, SELECT, AUTH and CLIENT SETNAME are
 * queued like any command and take effect when EXEC runs them: in order, each only if its
 * element is no error. Redis writes their replies inside the EXEC array (a SUBSCRIBE of two
 * channels writes two elements, CLIENT REPLY OFF/SKIP none, and OFF silences the elements
 * after it), so the array's count no longer tells where it ends. Such an EXEC is split: the
 * requests behind it wait (hold) until its header line and every element the transaction
 * produces are in, each queued as an entry of its own, in order; the state after EXEC
 * (replies on/off/skipped, database, protocol, subscriptions) is then known before the next
 * request is accounted for. Outside MULTI the requests behind a SELECT, HELLO, RESET, a
 * subscribe-family command or an AUTH before authentication wait for its reply in the same
 * way (the lock policy judges them in the database, protocol and mode it gives). In RESP2
 * subscribed mode every other command is refused by Redis and changes nothing.
 *
 * Where the proxy cannot be sure (a subscribe-family command or HELLO AUTH with replies
 * silenced, also after an OFF inside the same EXEC; CLIENT REPLY ON queued in MULTI with
 * replies off; an EXEC with replies silenced whose transaction subscribes or authenticates; a
 * reply with no request pending) tracking is lost: the verdict says so, every reply already
 * owed is still paired and delivered exactly once, in order, and once the queue is empty the
 * session passes bytes through. Requests are then only followed for whether replies are on
 * and how many are asked for (a protocol error's close depends on both). */
#ifndef LP_PAIRING_H
#define LP_PAIRING_H

#include <stddef.h>
#include <stdint.h>
#include "resp/request.h"
#include "resp/reply.h"
#include "resp/command.h"
#include "policy/lock.h"
#include "resp/encode.h"

enum pend_kind {
    PEND_PLAIN, PEND_SUB, PEND_HELLO, PEND_MONITOR, PEND_RESET, PEND_LOCAL, PEND_OP,
    PEND_EXEC, PEND_SWALLOW, PEND_SYNC, PEND_BARRIER
};

enum sub_family { SUB_CHANNEL, SUB_PATTERN, SUB_SHARD };

typedef struct pend {
    uint8_t kind;
    uint8_t family;          /* SUB: which subscription count the bare form empties */
    uint8_t close_after;     /* LOCAL: close the client once it is sent */
    uint8_t proto;           /* HELLO: the version asked for, 0 when none */
    uint8_t auth;            /* AUTH or HELLO AUTH: success authenticates the client */
    uint8_t probe;           /* sent unauthenticated: success proves no password is needed */
    uint8_t blocking;        /* may wait for other clients: no upstream-timeout */
    uint8_t select;          /* SELECT: db becomes the session's database on +OK */
    uint8_t setname;         /* CLIENT SETNAME / HELLO SETNAME: name taken on success */
    uint8_t reprobe;         /* CONFIG SET requirepass, ACL SETUSER default, ACL LOAD: who
                              * must authenticate may change */
    uint8_t acl_change;      /* ACL SETUSER/DELUSER/LOAD: users' rights may change */
    uint8_t script_probe;    /* SWALLOW: the proxy's own EVALSHA probe of scripting rights */
    uint8_t split;           /* EXEC: split (see the top); mspecs are its queued commands
                              * that change accounting */
    uint8_t exec_elem;       /* OP: an element of a split EXEC (no NOSCRIPT retry, no hold) */
    uint8_t reply_mode;      /* a queued CLIENT REPLY: MQ_REPLY_ON/OFF/SKIP */
    uint8_t holds;           /* the requests behind it wait for its reply (AUTH, SELECT) */
    int32_t index;           /* a command queued by MULTI: its place in the transaction */
    int32_t db;
    uint32_t n;
    char *name;              /* setname: the name ("" clears it) */
    size_t name_len;
    char *user;              /* auth: the ACL user it authenticates as (never the password) */
    size_t user_len;
    char *local;             /* LOCAL: the bytes */
    size_t local_len;
    char *prev;              /* BARRIER: the frames held back (n of them at most, nheld now;
                              * cut: where each ends in prev) */
    size_t prev_len;
    size_t cut[2];
    uint32_t nheld;
    lock_op *op;             /* OP: the decision */
    multi_op *mops;          /* EXEC: the rewritten commands of the transaction */
    int nmops;
    struct pend *mspecs;     /* split EXEC: the queued commands that change accounting */
    int nmspecs;
} pend;

enum { MQ_REPLY_NONE, MQ_REPLY_ON, MQ_REPLY_OFF, MQ_REPLY_SKIP };

/* Whether Redis's default user needs a password, as far as the proxy knows. */
enum { LP_AUTH_UNKNOWN, LP_AUTH_REQUIRED, LP_AUTH_NOT_REQUIRED };

typedef struct lp_pairing {
    pend *q;                      /* a ring */
    uint32_t qcap, qhead, qlen;
    size_t local_bytes;           /* bytes of the LOCAL entries' replies */
    /* request side */
    unsigned in_multi : 1;
    unsigned reply_off : 1;
    unsigned skip_cur : 1;        /* CLIENT REPLY SKIP: the current frame's reply is skipped */
    unsigned losing : 1;          /* tracking lost: requests are no longer accounted for; the
                                   * replies still queued are paired, then raw */
    unsigned raw : 1;             /* tracking lost and the queue empty: nothing is paired */
    unsigned authed : 1;          /* as far as the proxy knows, Redis has authenticated it */
    int multi_count;              /* commands queued by this MULTI */
    uint8_t multi_reply;          /* tracking lost: the last CLIENT REPLY queued by this MULTI */
    uint64_t nexpected;           /* replies asked of Redis so far (entries that await one) */
    uint64_t batch_mark;          /* nexpected when the client's current read began */
    multi_op *mops;               /* rewritten ones among them */
    int nmops;
    size_t mops_bytes;            /* what they hold (lock_op_bytes), while nmops > 0 */
    pend *mspecs;                 /* queued ones that change accounting (see the top) */
    int nmspecs;
    unsigned exec_hold : 1;       /* the requests behind a split EXEC wait (pairing_exec_done) */
    uint32_t exec_wait;           /* split EXEC entries and their element entries queued */
    int multi_db;                 /* the database the queued commands will run in, as far as
                                   * the SELECTs queued before them go */
    /* reply side */
    unsigned monitor : 1;
    unsigned last_protocol_error : 1;
    int proto;                    /* 2 or 3 */
    long nsub[3];
    int db;                       /* SELECTed database, from SELECT's +OK */
    char *name;                   /* the client's name, from an accepted SETNAME */
    size_t name_len;
    char *user;                   /* the ACL user of an accepted AUTH; NULL: default */
    size_t user_len;
} lp_pairing;

void pairing_init(lp_pairing *p, int authed);
void pairing_free(lp_pairing *p);

/* What the session does with a request once it is accounted for. */
typedef struct pair_req {
    const char *lost;        /* not NULL: tracking is lost from here on, for this reason */
    unsigned hold : 1;       /* frame no further request until this one's reply is in (AUTH,
                              * SYNC/PSYNC) */
    unsigned quit : 1;       /* QUIT: read no more; Redis closes after the reply */
    unsigned discard : 1;    /* QUIT with replies silenced: read and drop what follows */
    unsigned multi_begins : 1; /* a MULTI that opens a transaction */
} pair_req;

/* 1 once tracking is lost (the queue may still be draining): no request is accounted for,
 * no lock command rewritten. */
static inline int pairing_lost(const struct lp_pairing *p) { return p->losing || p->raw; }

/* Accounts for one framed request that goes to Redis as it is (the frame is forwarded
 * whatever the verdict). c is the command table's entry for its name,
 * resp_command_lookup(&r->argv[0]), when the caller has looked it up already; NULL: looked up
 * here. Subcommands (CLIENT REPLY, CONFIG SET, ACL SETUSER, ...) are read from argv[1]. */
pair_req pairing_request(lp_pairing *p, const resp_request *r, const resp_command *c);

/* 1 when the next request's reply is silenced by CLIENT REPLY OFF/SKIP. */
static inline int pairing_silent(const lp_pairing *p) { return p->reply_off || p->skip_cur; }

/* What a whole reply frame is. */
typedef enum {
    PAIR_ANSWER,             /* the reply to the request at the head: forwarded */
    PAIR_OUT_OF_BAND,        /* a push, a pub/sub message or a MONITOR line: forwarded */
    PAIR_CAPTURED,           /* the reply to an OP or EXEC entry: for the policy (the entry
                              * stays at the head until pairing_pop()) */
    PAIR_SWALLOWED,          /* a reply the client already had: dropped */
    PAIR_LOST                /* no request is pending: tracking is lost */
} pair_reply_kind;

typedef struct pair_reply {
    pair_reply_kind kind;
    unsigned auth_required : 1;      /* a NOAUTH: clients must authenticate */
    unsigned auth_not_required : 1;  /* an unauthenticated command succeeded */
    unsigned reprobe : 1;            /* a change of who must authenticate succeeded */
    unsigned acl_changed : 1;        /* an ACL change succeeded */
    unsigned auth_answered : 1;      /* the answer to an AUTH or HELLO AUTH */
    unsigned script_probe : 1;       /* SWALLOWED: the answer to the scripting probe */
    unsigned release_hold : 1;       /* the answer to a request that held those behind it */
    unsigned scripts_refused : 1;    /* ... which was NOPERM */
    unsigned sync_refused : 1;       /* the error line answering a SYNC or PSYNC */
} pair_reply;

/* The head entry is a split EXEC whose header line has not come yet. */
int pairing_wants_header(const lp_pairing *p);

/* The header line of a split EXEC's reply (line: its bytes with the CRLF). When it opens an
 * array of n >= 0 elements, queues one entry per element the transaction produces (the
 * rewritten commands' captured), applies what is known at once (CLIENT REPLY), writes into
 * hdr the header the client gets (the count grown by merged SETNX+EXPIRE elements) and returns
 * 1; *lost is set when the transaction leaves the proxy unsure (the entries before that
 * point are queued; the caller loses tracking). Any other line (an error, a null: EXEC did not run)
 * is the whole reply: the entry pops, nothing takes effect, 0 is returned and the line goes
 * to the client as it is. Either way the requests held behind the EXEC may go on. */
int pairing_exec_header(lp_pairing *p, const char *line, size_t len, lp_str *hdr, const char **lost);

/* 1 (once) when a split EXEC and every element it queued have been answered: the requests
 * held behind it may go on, with the state it left (replies on/off, database, protocol). */
int pairing_exec_done(lp_pairing *p);

/* Judges one whole reply frame. captured is 1 when the frame was kept whole because the
 * head entry was OP, EXEC or SWALLOW at its start (pairing_captures()). auth_state is the
 * proxy-wide LP_AUTH_* value (RESET falls back to it). */
pair_reply pairing_reply(lp_pairing *p, const resp_reply *r, int captured, int auth_state);

/* 1 when a reply frame starting with byte first starts a replication stream: a SYNC or PSYNC
 * is at the head and first is neither an error ('-') nor a RESP3 push ('>'). From there on
 * nothing is framed: the RDB payload has no trailing CRLF and the command stream after it is
 * not replies. */
int pairing_sync_starts(const lp_pairing *p, char first);

/* 1 when the next reply frame, unless out of band, belongs to a rewritten command. */
int pairing_captures(const lp_pairing *p);

/* The head entry, or NULL. */
pend *pairing_head(lp_pairing *p);
/* Appends an entry of a kind (n = 1). */
pend *pairing_push(lp_pairing *p, uint8_t kind);
/* Drops the head entry and what it owns. */
void pairing_pop(lp_pairing *p);
/* Expects n more replies of the PLAIN kind (merged into the tail entry when it can). */
void pairing_expect(lp_pairing *p, uint32_t n);
/* Queues a reply of the proxy's own (copied). */
void pairing_push_local(lp_pairing *p, const char *bytes, size_t len, int close_after);
/* Records a rewritten command queued by MULTI: its EXEC element goes through the policy. */
void pairing_add_multi_op(lp_pairing *p, lock_op *op);
/* Tracking is lost: no further request is accounted for; the entries queued are still
 * paired, and once the queue is empty (at once when it is) pairing stops (raw). */
void pairing_lose(lp_pairing *p);
/* A replication stream started (the reply to SYNC/PSYNC, the last request paired: those
 * behind it waited): pairing stops at once, keeping only the proxy's own replies queued. */
void pairing_stream(lp_pairing *p);
/* How many replies an entry still expects from Redis (for error lines when it is gone). */
uint32_t pairing_owed(const pend *e);
/* 1 while the client is subscribed to anything. */
int pairing_subscribed(const lp_pairing *p);

#endif
