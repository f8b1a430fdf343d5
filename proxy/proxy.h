/* The proxy: a libuv loop that accepts clients and pairs each with its own upstream
 * connection to redis-server.
 *
 *   client ──bytes──▶ resp/ request framer ──▶ policy/ decision ──▶ upstream (redis-server)
 *      ▲                 │ complete frames only;                          │
 *      │                 │ a protocol error becomes                       │
 *      │                 ▼ a local error line                             ▼
 *      │          pending-request queue  ◀──pairs──  resp/ reply scanner ◀─┘
 *      └──── replies, forwarded as they stream in, in request order;
 *            pushes, pub/sub messages and MONITOR lines pass out of band.
 *
 * Bytes are forwarded as spans of the blocks they were read into (proxy/buf.h): what one
 * event produced leaves in one write (uv_try_write first, a queued uv_write for the rest),
 * no copy of a request or a reply on the way through. Sessions: proxy/session.h. */
#ifndef LP_PROXY_H
#define LP_PROXY_H

#include <uv.h>
#include <sys/socket.h>
#include "proxy/config.h"
#include "policy/policy.h"
#include "policy/lock.h"
#include "proxy/auditlog.h"
#include "proxy/pairing.h"
#include "proxy/metrics.h"

typedef struct session session;


typedef struct proxy {
    uv_loop_t *loop;
    const lp_config *cfg;
    union { uv_tcp_t tcp; uv_pipe_t pipe; uv_stream_t stream; } listener;   /* owns the socket */
    int listening;
    uv_poll_t accept_poll;                 /* the listening socket, accepted by the proxy */
    uv_timer_t accept_timer;               /* resumes accepting after a pause at EMFILE */
    int polling;
    int listen_fd;
    int reserve_fd;                        /* /dev/null, closed to shed connections at EMFILE */
    uv_signal_t sig_term, sig_int, sig_hup;
    uv_timer_t drain_timer;
    struct sockaddr_storage upstream_sa;   /* the newest address of a TCP upstream (resolve.h) */
    int upstream_by_name;                  /* its host is a name, looked up for each connection */
    policy *policy;                        /* NULL: pure pass-through */
    lease_table *leases;                   /* the lease cache (late detection, renewal) */
    struct lp_renewer *renewer;
    char **noscript_users;                 /* ACL users Redis refused lock scripts for */
    size_t n_noscript_users;
    char **script_users;                   /* ACL users known to run scripts */
    size_t n_script_users;
    lock_ctx lock;                         /* what policy/lock.c decides with */
    lp_auditlog *audit;
    audit_limiter *limiter;
    uv_timer_t sweep_timer;                /* ends expired leases */
    uint64_t next_conn_id;
    /* LP_AUTH_*: whether Redis's default user needs a password, as far as the proxy knows,
     * from a probe and from replies. A new client starts unauthenticated only when it does,
     * and Redis's tighter limits before AUTH are applied only then; while it is unknown the
     * request goes to Redis, which answers for itself. */
    int auth_state;
    struct lp_upconn *auth_probe;          /* the probe in flight, or NULL */
    int auth_probe_again;                  /* asked for again while one was in flight */
    int auth_probe_done;                   /* its answer came (or never will) */
    uint64_t connect_failures, last_connect_log;
    session *sessions;                     /* every open session, for shutdown */
    int nclients;
    int draining;
    uint64_t accept_errors, accept_errors_logged;   /* refused connections; how many a line told */
    uint64_t unchecked_lock_cmds;          /* lock commands forwarded unchecked: tracking lost */
    uint64_t last_emfile_log;
    struct lp_sentinel *sentinel;          /* upstream sentinel://: follows the master */
    int activated;                         /* the listener came from systemd (LISTEN_FDS) */
    uv_timer_t grace_timer;                /* SIGTERM: sessions run on this long, then drain */
    lp_metrics m;                          /* counters, loop thread only (proxy/metrics.h) */
    struct lp_admin *admin;                /* the admin listener, or NULL */
    int last_accept_err;
    uint64_t evictions_logged, last_eviction_log;
} proxy;

/* Logs one "memory:" line with the sizes of the proxy's tables (lease cache bytes against
 * its budget, evictions, renewals, rate limiter): written at each SIGHUP. The numbers come
 * from lease_bytes(), lease_evicted(), lp_renewer_count() and audit_limiter_count(). */
void proxy_log_memory(proxy *px);

/* Runs the proxy until SIGTERM/SIGINT drain it. Returns the process exit status. */
int proxy_run(const lp_config *cfg);

/* Session life cycle, in session.c. */
int session_start(proxy *px, int fd);  /* serve an accepted client; closes fd on failure */
void session_drain(session *s);        /* stop reading; close once replies are flushed */
void session_close(session *s);        /* close now */
session *lp_session_next(session *s);
/* The upstream moved to another master: the session's upstream connection goes (requests
 * still owed are answered with the upstream-unavailable error, then the client connection
 * closes, so the client reconnects, to the new master). */
void session_upstream_switched(session *s);
/* Asks Redis, on a fresh connection of the proxy's own that sends a bare HELLO (answered
 * -NOAUTH exactly when a new client must authenticate), whether clients must authenticate,
 * and sets px->auth_state from the answer. Called at start and after a CONFIG SET requirepass,
 * ACL SETUSER default or ACL LOAD went through the proxy. */
void proxy_probe_auth(proxy *px);
/* ACL users without scripting: once Redis refuses a lock script to one connection of a user
 * (NOPERM), that user's other connections send their lock commands unchanged from the start,
 * MULTI included (where a refused script would abort the transaction). Forgotten when an ACL
 * change goes through the proxy. user NULL: the default user. */
int proxy_user_noscripts(const proxy *px, const char *user, size_t len);
void proxy_forget_script_users(proxy *px);
void proxy_user_set_noscripts(proxy *px, const char *user, size_t len);
/* Users known to run scripts (a lock script or the scripting probe succeeded for them). A
 * MULTI from a user known neither way is preceded by a probe, "EVALSHA <40 zeros> 0", whose
 * answer (NOSCRIPT or NOPERM) is not the client's: it is swallowed. The default user is
 * probed on the authentication probe's connection when no password is needed, so its
 * clients' MULTIs need no probe. */
int proxy_user_scripts(const proxy *px, const char *user, size_t len);
void proxy_user_set_scripts(proxy *px, const char *user, size_t len);
/* Called by session_close() when draining and the last session has gone. */
void proxy_drained(proxy *px);

/* Milliseconds since the epoch. */
int64_t lp_wall_ms(void);

/* Operational messages to stderr: "lockproxy: ...". */
void lp_logf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif
