/* The listener, signals and shutdown. Sessions live in session.c. */
#define _GNU_SOURCE   /* accept4 */
#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#if defined(__GLIBC__)
#include <malloc.h>
#endif
#include <netdb.h>
#include <fcntl.h>
#include <sys/socket.h>
#include "proxy/proxy.h"
#include "proxy/buf.h"
#include "proxy/upconn.h"
#include "proxy/renew.h"
#include "proxy/resolve.h"
#include "proxy/sentinel.h"
#include "proxy/admin.h"

void lp_logf(const char *fmt, ...) {
    char line[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    fprintf(stderr, "lockproxy: %s\n", line);
}

int64_t lp_wall_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Audit events from policy/lock.c: counted (those the limiter suppresses too), rate-limited,
 * formatted, queued for the writer. */
static void audit_sink(void *ud, const audit_event *e) {
    proxy *px = ud;
    uint64_t suppressed = 0;
    if (px->audit == NULL) return;
    int logged = audit_limiter_check(px->limiter, e, (int64_t)uv_now(px->loop), &suppressed);
    lp_metrics_audit(&px->m, e->rule, e->rule_len, e->event, !logged);
    if (!logged) return;
    char line[4096];
    size_t n = audit_format(e, lp_wall_ms(), suppressed, line, sizeof(line));
    if (n > 0) lp_auditlog_write(px->audit, line, n);
}

static void probe_reap(proxy *px);

/* A libuv error code from an errno value. */
#define LP_UV_ERR(e) (-(e))

/* Leases past their deadline are kept a while, so that a late DEL is still recognised as
 * late_release; then they go. */
#define LEASE_GRACE_MS (10 * 60 * 1000)
/* The lease cache holds what each connection acquired (late detection, renewal); the
 * leases themselves live in Redis, so a full cache loses no safety. */
#define LEASE_MAX 1000000

/* A summary of events the limiter left out, once their window is over. */
static void audit_summary(void *ud, const audit_event *e, uint64_t suppressed) {
    proxy *px = ud;
    char line[4096];
    size_t n = audit_format(e, lp_wall_ms(), suppressed, line, sizeof(line));
    if (n > 0 && px->audit) lp_auditlog_write(px->audit, line, n);
}

/* Memory the allocator keeps after a burst goes back to the system once more than this
 * lies free in its arenas (glibc keeps freed heap memory, and raises its mmap threshold
 * after large frees so that later large blocks come from the heap too). */
#define TRIM_FREE_BYTES (8u << 20)

static void trim_memory(void) {
#if defined(__GLIBC__)
    struct mallinfo2 mi = mallinfo2();
    if (mi.fordblks > TRIM_FREE_BYTES) malloc_trim(0);
#endif
}

/* Says once a minute at most that the lease cache evicts (see lease.h: what it forgot is
 * found again in Redis). */
static void report_evictions(proxy *px) {
    uint64_t live = lease_evicted(px->leases, 1), dead = lease_evicted(px->leases, 0);
    uint64_t now = uv_now(px->loop);
    if (live + dead == px->evictions_logged || now - px->last_eviction_log < 60000) return;
    lp_logf("lease cache full (%zu bytes, budget %lld): %llu live and %llu expired leases evicted so far",
            lease_bytes(px->leases), px->cfg->lease_cache_bytes, (unsigned long long)live, (unsigned long long)dead);
    px->evictions_logged = live + dead;
    px->last_eviction_log = now;
}

static void accept_report(proxy *px);
static void sweep_cb(uv_timer_t *t) {
    proxy *px = t->data;
    probe_reap(px);
    if (px->leases) {
        lease_sweep(px->leases, (int64_t)uv_now(px->loop), LEASE_GRACE_MS);
        report_evictions(px);
    }
    if (px->limiter) audit_limiter_flush(px->limiter, (int64_t)uv_now(px->loop), audit_summary, px);
    accept_report(px);
    trim_memory();
}

void proxy_log_memory(proxy *px) {
    lp_logf("memory: lease cache %zu leases, %zu bytes (budget %lld), evicted %llu live %llu expired; "
            "renewing %zu locks; rate limiter %zu identities",
            lease_count(px->leases), lease_bytes(px->leases), px->cfg->lease_cache_bytes,
            (unsigned long long)lease_evicted(px->leases, 1), (unsigned long long)lease_evicted(px->leases, 0),
            lp_renewer_count(px->renewer), audit_limiter_count(px->limiter));
}

/* ---- accepting ----
 *
 * The proxy accepts for itself (a uv_poll on the listening socket) rather than through
 * uv_listen: libuv handles EMFILE by dropping pending connections without telling the
 * application, and every refused connection must be counted and logged. Out of descriptors,
 * the proxy closes its reserved one, accepts and closes every pending connection, and takes
 * the reserve back, so the loop does not spin on a listening socket it cannot serve; the
 * refusals are logged at most once a second with their count. */

#define ACCEPT_BATCH 256        /* connections accepted per wake-up, so others get a turn */
#define ACCEPT_PAUSE_MS 100     /* no reserve descriptor: stop polling this long */

/* Counts n refused connections (err: why) and logs at most once a second. */
static void accept_refused(proxy *px, int err, unsigned n) {
    uint64_t now = uv_now(px->loop);
    px->accept_errors += n;
    px->m.refused_accept += n;
    px->last_accept_err = err;
    if (now - px->last_emfile_log >= 1000) {
        lp_logf("accept failed: %s (%llu so far)", uv_strerror(err), (unsigned long long)px->accept_errors);
        px->last_emfile_log = now;
        px->accept_errors_logged = px->accept_errors;
    }
}

/* From the sweep timer: the refusals the rate limit held back get their line. */
static void accept_report(proxy *px) {
    if (px->accept_errors == px->accept_errors_logged || uv_now(px->loop) - px->last_emfile_log < 1000) return;
    lp_logf("accept failed: %s (%llu so far)", uv_strerror(px->last_accept_err), (unsigned long long)px->accept_errors);
    px->last_emfile_log = uv_now(px->loop);
    px->accept_errors_logged = px->accept_errors;
}

static void on_acceptable(uv_poll_t *h, int status, int events);

static void accept_resume(uv_timer_t *t) {
    proxy *px = t->data;
    if (px->listening && !px->draining) uv_poll_start(&px->accept_poll, UV_READABLE, on_acceptable);
}

/* Out of descriptors: drops what is pending with the reserve's help. */
static void shed_pending(proxy *px, int fd, int err) {
    unsigned n = 1;   /* the connection accept() could not take is still pending: counted here */
    if (px->reserve_fd >= 0) {
        close(px->reserve_fd);
        px->reserve_fd = -1;
        n = 0;
        for (;;) {
            int c = accept4(fd, NULL, NULL, SOCK_CLOEXEC);
            if (c < 0) break;
            close(c);
            n++;
        }
        px->reserve_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    }
    if (n == 0) n = 1;
    accept_refused(px, err, n);
    if (px->reserve_fd < 0) {
        /* Nothing to shed with: pause, or the readable socket would spin the loop. */
        uv_poll_stop(&px->accept_poll);
        uv_timer_start(&px->accept_timer, accept_resume, ACCEPT_PAUSE_MS, 0);
    }
}

static void on_acceptable(uv_poll_t *h, int status, int events) {
    proxy *px = h->data;
    (void)events;
    if (status < 0 || px->draining) return;
    int fd = px->listen_fd;
    for (int i = 0; i < ACCEPT_BATCH; i++) {
        int c = accept4(fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (c < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK) return;
            if (errno == EINTR || errno == ECONNABORTED) continue;
            if (errno == EMFILE || errno == ENFILE) shed_pending(px, fd, LP_UV_ERR(errno));
            else accept_refused(px, LP_UV_ERR(errno), 1);
            return;
        }
        int rc = session_start(px, c);
        if (rc < 0) accept_refused(px, rc, 1);
    }
}

static void probe_reply(lp_upconn *c, const redisReply *r, void *ud) {
    proxy *px = ud;
    (void)c;
    if (r == NULL) px->auth_state = LP_AUTH_UNKNOWN;
    else if (r->type == REDIS_REPLY_ERROR) px->auth_state = strncmp(r->str, "NOAUTH", 6) == 0 ? LP_AUTH_REQUIRED : LP_AUTH_UNKNOWN;
    else px->auth_state = LP_AUTH_NOT_REQUIRED;
    px->auth_probe_done = 1;
}

/* The answer to the scripting probe sent behind the HELLO: when no password is needed, the
 * probe's connection is the default user's, and NOSCRIPT or NOPERM says whether that user
 * may run scripts. Known up front, a client's MULTI needs no probe of its own (which
 * MONITOR would show and CLIENT PAUSE WRITE would hold, EVALSHA being a write for it). */
static void script_probe_reply(lp_upconn *c, const redisReply *r, void *ud) {
    proxy *px = ud;
    (void)c;
    if (r == NULL || r->type != REDIS_REPLY_ERROR || px->auth_state != LP_AUTH_NOT_REQUIRED) return;
    if (strncmp(r->str, "NOSCRIPT", 8) == 0) proxy_user_set_scripts(px, NULL, 0);
    else if (strncmp(r->str, "NOPERM", 6) == 0) proxy_user_set_noscripts(px, NULL, 0);
}

/* The probe's connection is released from the sweep timer or the next probe, never from
 * inside its own callback. */
static void probe_reap(proxy *px) {
    if (px->auth_probe == NULL || !px->auth_probe_done) return;
    lp_upconn_close(px->auth_probe);
    px->auth_probe = NULL;
    px->auth_probe_done = 0;
    if (px->auth_probe_again && !px->draining) {
        px->auth_probe_again = 0;
        proxy_probe_auth(px);
    }
}

#define USERS_MAX 1024

static void forget_users(char ***v, size_t *n) {
    for (size_t i = 0; i < *n; i++) free((*v)[i]);
    free(*v);
    *v = NULL;
    *n = 0;
}

void proxy_forget_script_users(proxy *px) {
    forget_users(&px->noscript_users, &px->n_noscript_users);
    forget_users(&px->script_users, &px->n_script_users);
}


static int user_in(char *const *v, size_t n, const char *user, size_t len) {
    if (user == NULL) user = "default", len = 7;
    for (size_t i = 0; i < n; i++)
        if (strlen(v[i]) == len && memcmp(v[i], user, len) == 0) return 1;
    return 0;
}

static void user_add(char ***v, size_t *n, const char *user, size_t len) {
    if (user == NULL) user = "default", len = 7;
    if (user_in(*v, *n, user, len) || *n >= USERS_MAX || memchr(user, '\0', len) != NULL) return;
    char **nv = realloc(*v, (*n + 1) * sizeof(*nv));
    if (nv == NULL) return;
    *v = nv;
    char *u = malloc(len + 1);
    if (u == NULL) return;
    memcpy(u, user, len);
    u[len] = '\0';
    (*v)[(*n)++] = u;
}

int proxy_user_noscripts(const proxy *px, const char *user, size_t len) {
    return user_in(px->noscript_users, px->n_noscript_users, user, len);
}

void proxy_user_set_noscripts(proxy *px, const char *user, size_t len) {
    user_add(&px->noscript_users, &px->n_noscript_users, user, len);
}

int proxy_user_scripts(const proxy *px, const char *user, size_t len) {
    return user_in(px->script_users, px->n_script_users, user, len);
}

void proxy_user_set_scripts(proxy *px, const char *user, size_t len) {
    user_add(&px->script_users, &px->n_script_users, user, len);
}

void proxy_probe_auth(proxy *px) {
    static const char hello[] = "*1\r\n$5\r\nHELLO\r\n";
    static const char script_probe[] =
        "*3\r\n$7\r\nEVALSHA\r\n$40\r\n0000000000000000000000000000000000000000\r\n$1\r\n0\r\n";
    probe_reap(px);
    proxy_forget_script_users(px);   /* an ACL change may have given scripting back */
    px->auth_state = LP_AUTH_UNKNOWN;
    if (px->auth_probe != NULL) { px->auth_probe_again = 1; return; }
    px->auth_probe = lp_upconn_open(px->loop, &px->cfg->upstream, (const struct sockaddr *)&px->upstream_sa,
                                    (int)px->cfg->connect_timeout_ms);
    if (px->auth_probe == NULL || lp_upconn_send(px->auth_probe, hello, sizeof(hello) - 1, probe_reply, px) < 0)
        px->auth_probe_done = 1;
    else if (px->policy != NULL)
        lp_upconn_send(px->auth_probe, script_probe, sizeof(script_probe) - 1, script_probe_reply, px);
}

static void close_quietly(uv_handle_t *h) {
    if (!uv_is_closing(h)) uv_close(h, NULL);
}

/* Stops accepting: the poll goes first, then the socket it watches. */
static void stop_listening(proxy *px) {
    if (px->polling) {
        close_quietly((uv_handle_t *)&px->accept_poll);
        close_quietly((uv_handle_t *)&px->accept_timer);
        px->polling = 0;
    }
    if (px->reserve_fd >= 0) close(px->reserve_fd);
    px->reserve_fd = -1;
    if (px->listening) close_quietly((uv_handle_t *)&px->listener);
    px->listening = 0;
}

/* Everything is closed: the loop ends once the last handle is. The signal handlers stay
 * installed (unreferenced, so they keep nothing alive) until proxy_run() has written the
 * last audit lines: a second SIGTERM or SIGINT meanwhile (an init system or a wrapper
 * script sending both) is ignored instead of killing the process mid-flush. */
void proxy_drained(proxy *px) {
    stop_listening(px);
    uv_unref((uv_handle_t *)&px->sig_term);
    uv_unref((uv_handle_t *)&px->sig_int);
    uv_unref((uv_handle_t *)&px->sig_hup);
    close_quietly((uv_handle_t *)&px->drain_timer);
    close_quietly((uv_handle_t *)&px->grace_timer);
    close_quietly((uv_handle_t *)&px->sweep_timer);
    lp_sentinel_close(px->sentinel);
    px->sentinel = NULL;
    px->auth_probe_done = 1;
    px->auth_probe_again = 0;
    probe_reap(px);
    lp_renewer_close(px->renewer);
    px->renewer = NULL;
    lp_admin_stop_loop(px->admin);
}

static void drain_timeout(uv_timer_t *t) {
    proxy *px = t->data;
    lp_logf("shutdown-timeout reached: closing %d connection(s)", px->nclients);
    while (px->sessions) session_close(px->sessions);
    proxy_drained(px);
}

/* After the grace period every session stops reading and closes once its replies are out. */
static void grace_over(uv_timer_t *t) {
    proxy *px = t->data;
    session *s = px->sessions;
    while (s) {
        session *next = lp_session_next(s);
        session_drain(s);
        s = next;
    }
    if (px->sessions == NULL) proxy_drained(px);
}

/* How long sessions already accepted go on as usual after SIGTERM: a client that connected
 * just before it gets the answer to the request it sent right after connecting. */
#define DRAIN_GRACE_MS 500

/* SIGTERM/SIGINT: stop accepting (under socket activation new connections wait in the
 * kernel's backlog for the next process), serve the sessions already accepted for a short
 * grace period, then let the replies in flight reach their clients and exit;
 * shutdown-timeout bounds the whole. */
static void on_stop_signal(uv_signal_t *sig, int signum) {
    proxy *px = sig->data;
    if (px->draining) return;
    px->draining = 1;
    lp_logf("%s: draining %d connection(s)", signum == SIGINT ? "SIGINT" : "SIGTERM", px->nclients);
    lp_admin_drain(px->admin);
    if (px->listening) {
        stop_listening(px);
        if (px->cfg->listen.is_unix && !px->activated) unlink(px->cfg->listen.path);
    }
    uv_timer_start(&px->drain_timer, drain_timeout, (uint64_t)px->cfg->shutdown_timeout_ms, 0);
    if (px->sessions == NULL) { proxy_drained(px); return; }
    long long grace = px->cfg->shutdown_timeout_ms / 2;
    if (grace > DRAIN_GRACE_MS) grace = DRAIN_GRACE_MS;
    uv_timer_start(&px->grace_timer, grace_over, (uint64_t)grace, 0);
}

static void on_hup(uv_signal_t *sig, int signum) {
    proxy *px = sig->data;
    const char *path = px->cfg->policy_file;
    char err[512];
    proxy_log_memory(px);
    /* The audit log is reopened too, for log rotation. */
    if (px->audit && lp_auditlog_reopen(px->audit, err, sizeof(err)) < 0)
        lp_logf("SIGHUP: audit log not reopened: %s", err);
    if (path == NULL) { lp_logf("SIGHUP: no policy file configured"); return; }
    policy *p = policy_load(path, err, sizeof(err));
    if (p == NULL) {
        lp_logf("SIGHUP: policy not reloaded, keeping the old one: %s", err);
        return;
    }
    policy_free(px->policy);
    px->policy = p;
    px->lock.pol = p;
    lp_logf("SIGHUP: policy reloaded from %s (%zu rules)", path, policy_count(p));
}

/* Socket activation: systemd passes listening sockets from fd 3 on, with LISTEN_FDS (how
 * many) and LISTEN_PID (this process). Returns the first such fd, or -1 when none was
 * passed to this process. The variables are removed so that no child inherits them. */
static int activated_fd(void) {
    const char *pid = getenv("LISTEN_PID"), *fds = getenv("LISTEN_FDS");
    if (pid == NULL || fds == NULL) return -1;
    char *end;
    long p = strtol(pid, &end, 10);
    if (*end != '\0' || p != (long)getpid()) return -1;
    long n = strtol(fds, &end, 10);
    unsetenv("LISTEN_PID");
    unsetenv("LISTEN_FDS");
    unsetenv("LISTEN_FDNAMES");
    if (*end != '\0' || n < 1) return -1;
    if (n > 1) lp_logf("socket activation: %ld sockets passed; fd 3 is the listener, the others are unused", n);
    return 3;
}

/* Takes the listener from systemd. Returns 0 (with *taken 1), 0 with *taken 0 when no socket
 * was passed, or -1 with a message. */
static int take_activated(proxy *px, int *taken, char *err, size_t errlen) {
    *taken = 0;
    int fd = activated_fd();
    if (fd < 0) return 0;
    int listening = 0;
    socklen_t len = sizeof(listening);
    struct sockaddr_storage sa;
    socklen_t salen = sizeof(sa);
    if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &len) < 0 || !listening ||
        getsockname(fd, (struct sockaddr *)&sa, &salen) < 0) {
        snprintf(err, errlen, "socket activation: fd %d is not a listening socket", fd);
        return -1;
    }
    int rc;
    if (sa.ss_family == AF_UNIX) {
        uv_pipe_init(px->loop, &px->listener.pipe, 0);
        rc = uv_pipe_open(&px->listener.pipe, fd);
    } else {
        uv_tcp_init(px->loop, &px->listener.tcp);
        rc = uv_tcp_open(&px->listener.tcp, fd);
    }
    px->listening = 1;
    if (rc < 0) {
        snprintf(err, errlen, "socket activation: fd %d: %s", fd, uv_strerror(rc));
        return -1;
    }
    px->activated = 1;
    *taken = 1;
    return 0;
}

static int start_listener(proxy *px, char *err, size_t errlen) {
    const lp_addr *a = &px->cfg->listen;
    int rc, taken;
    if (take_activated(px, &taken, err, errlen) < 0) return -1;
    if (taken) {
        rc = 0;
    } else if (a->is_unix) {
        uv_pipe_init(px->loop, &px->listener.pipe, 0);
        unlink(a->path);
        rc = uv_pipe_bind(&px->listener.pipe, a->path);
    } else {
        struct addrinfo hints, *res = NULL;
        memset(&hints, 0, sizeof(hints));
        hints.ai_socktype = SOCK_STREAM;
        hints.ai_flags = AI_PASSIVE;
        char port[16];
        snprintf(port, sizeof(port), "%d", a->port);
        int g = getaddrinfo(a->host[0] ? a->host : NULL, port, &hints, &res);
        if (g != 0 || res == NULL) {
            snprintf(err, errlen, "listen: %s: %s", a->host, gai_strerror(g));
            return -1;
        }
        /* The socket is made and bound here rather than by uv_tcp_bind, which defers
         * EADDRINUSE to uv_listen: the proxy calls listen(2) itself (it accepts for itself),
         * and listen on a socket whose bind failed would quietly take an ephemeral port. */
        uv_tcp_init(px->loop, &px->listener.tcp);
        int sfd = socket(res->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        int one = 1;
        if (sfd < 0) rc = LP_UV_ERR(errno);
        else if (setsockopt(sfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) != 0 ||
                 bind(sfd, res->ai_addr, res->ai_addrlen) != 0) {
            rc = LP_UV_ERR(errno);
            close(sfd);
        } else {
            rc = uv_tcp_open(&px->listener.tcp, sfd);
            if (rc < 0) close(sfd);
        }
        freeaddrinfo(res);
    }
    px->listener.stream.data = px;
    px->listening = 1;
    uv_os_fd_t fd = -1;
    if (rc == 0) rc = uv_fileno((uv_handle_t *)&px->listener, &fd);
    /* A socket from systemd listens already, with the backlog its unit set. */
    if (rc == 0 && !taken && listen(fd, 511) != 0) rc = LP_UV_ERR(errno);
    if (rc == 0) {
        px->listen_fd = fd;
        px->reserve_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
        uv_timer_init(px->loop, &px->accept_timer);
        px->accept_timer.data = px;
        uv_unref((uv_handle_t *)&px->accept_timer);
        rc = uv_poll_init_socket(px->loop, &px->accept_poll, fd);
        if (rc == 0) {
            px->accept_poll.data = px;
            px->polling = 1;
            rc = uv_poll_start(&px->accept_poll, UV_READABLE, on_acceptable);
        }
    }
    if (rc < 0) {
        char addr[300];
        lp_addr_format(a, addr, sizeof(addr));
        snprintf(err, errlen, "listen: %s: %s", addr, uv_strerror(rc));
        return -1;
    }
    return 0;
}

int proxy_run(const lp_config *cfg) {
    proxy px;
    char err[600];
    memset(&px, 0, sizeof(px));
    px.reserve_fd = -1;
    px.listen_fd = -1;
    px.cfg = cfg;
    px.loop = uv_default_loop();
    signal(SIGPIPE, SIG_IGN);

    if (cfg->policy_file) {
        px.policy = policy_load(cfg->policy_file, err, sizeof(err));
        if (px.policy == NULL) { fprintf(stderr, "%s\n", err); return 1; }
    }
    if (px.policy) {
        px.audit = lp_auditlog_open(px.loop, cfg->log_file, err, sizeof(err));
        if (px.audit == NULL) {
            fprintf(stderr, "lockproxy: %s\n", err);
            policy_free(px.policy);
            return 1;
        }
        px.limiter = audit_limiter_new(1000, 10000);
        px.leases = lease_table_new(LEASE_MAX);
        lease_table_set_max_bytes(px.leases, (size_t)cfg->lease_cache_bytes);
    }
    static char host[256];
    if (gethostname(host, sizeof(host) - 1) != 0) snprintf(host, sizeof(host), "localhost");
    lock_ctx_init(&px.lock);
    px.lock.instance = cfg->instance_name[0] ? cfg->instance_name : host;
    px.lock.pol = px.policy;
    px.lock.leases = px.leases;
    px.lock.script_once = px.policy ? audit_once_new(100000, 3600 * 1000) : NULL;
    px.lock.log = audit_sink;
    px.lock.log_ud = &px;
    if (lp_upstream_resolve_now(&px, err, sizeof(err)) < 0 || start_listener(&px, err, sizeof(err)) < 0 ||
        (cfg->admin_set && (px.admin = lp_admin_start(&px, err, sizeof(err))) == NULL)) {
        fprintf(stderr, "lockproxy: %s\n", err);
        policy_free(px.policy);
        lease_table_free(px.leases);
        audit_once_free(px.lock.script_once);
        lock_ctx_free(&px.lock);
        proxy_forget_script_users(&px);
        audit_limiter_free(px.limiter);
        if (px.audit) lp_auditlog_close(px.audit);
        stop_listening(&px);
        lp_sentinel_close(px.sentinel);
        uv_run(px.loop, UV_RUN_DEFAULT);
        uv_loop_close(px.loop);
        return 1;
    }
    uv_signal_init(px.loop, &px.sig_term);
    uv_signal_init(px.loop, &px.sig_int);
    uv_signal_init(px.loop, &px.sig_hup);
    uv_timer_init(px.loop, &px.drain_timer);
    uv_timer_init(px.loop, &px.grace_timer);
    px.sig_term.data = px.sig_int.data = px.sig_hup.data = px.drain_timer.data = px.grace_timer.data = &px;
    uv_signal_start(&px.sig_term, on_stop_signal, SIGTERM);
    uv_signal_start(&px.sig_int, on_stop_signal, SIGINT);
    uv_signal_start(&px.sig_hup, on_hup, SIGHUP);
    uv_unref((uv_handle_t *)&px.drain_timer);
    uv_unref((uv_handle_t *)&px.grace_timer);
    uv_timer_init(px.loop, &px.sweep_timer);
    px.sweep_timer.data = &px;
    uv_timer_start(&px.sweep_timer, sweep_cb, 1000, 1000);
    uv_unref((uv_handle_t *)&px.sweep_timer);
    proxy_probe_auth(&px);
    if (px.policy != NULL) {
        px.renewer = lp_renewer_new(&px);
        px.lock.renew = lp_renewer_add;
        px.lock.renew_ud = px.renewer;
    }

    char l[300], u[300];
    lp_addr_format(&cfg->listen, l, sizeof(l));
    if (px.activated) snprintf(l, sizeof(l), "fd 3 from systemd");
    if (cfg->sentinel.n > 0) lp_sentinel_format(&cfg->sentinel, u, sizeof(u));
    else lp_addr_format(&cfg->upstream, u, sizeof(u));
    lp_logf("listening on %s, upstream %s, %zu lock rule(s)", l, u, px.policy ? policy_count(px.policy) : (size_t)0);
    if (px.admin) {
        lp_addr_format(&cfg->admin, l, sizeof(l));
        lp_logf("admin listener on http://%s (/metrics, /health)", l);
    }

    uv_run(px.loop, UV_RUN_DEFAULT);
    /* Every session has gone, so no event comes after this: the counts the rate limiter
     * still holds go out as summary lines (the sweep timer would have written them a
     * second later), then the log is written out and closed. */
    audit_limiter_flush_all(px.limiter, audit_summary, &px);
    if (px.audit) lp_auditlog_close(px.audit);
    px.audit = NULL;
    uv_run(px.loop, UV_RUN_DEFAULT);
    /* Closing the last handle of a signal restores its default action; from here on the
     * process only frees memory and exits 0, so stop signals are ignored. */
    close_quietly((uv_handle_t *)&px.sig_term);
    close_quietly((uv_handle_t *)&px.sig_int);
    close_quietly((uv_handle_t *)&px.sig_hup);
    signal(SIGTERM, SIG_IGN);
    signal(SIGINT, SIG_IGN);
    signal(SIGHUP, SIG_IGN);
    uv_run(px.loop, UV_RUN_DEFAULT);
    uv_loop_close(px.loop);
    lp_admin_free(px.admin);
    lp_metrics_free(&px.m);
    policy_free(px.policy);
    lease_table_free(px.leases);
    audit_once_free(px.lock.script_once);
    lock_ctx_free(&px.lock);
    proxy_forget_script_users(&px);
    audit_limiter_free(px.limiter);
    lp_block_pool_drain();
    lp_logf("stopped");
    return 0;
}
