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

/* Audit events from policy/lock.c: rate-limited, formatted, queued for the writer. */
static void audit_sink(void *ud, const audit_event *e) {
    proxy *px = ud;
    uint64_t suppressed = 0;
    if (px->audit == NULL) return;
    if (!audit_limiter_check(px->limiter, e, (int64_t)uv_now(px->loop), &suppressed)) return;
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
    probe_reap(px);
    proxy_forget_script_users(px);   /* an ACL change may have given scripting back */
    px->auth_state = LP_AUTH_UNKNOWN;
    if (px->auth_probe != NULL) { px->auth_probe_again = 1; return; }
    px->auth_probe = lp_upconn_open(px->loop, &px->cfg->upstream, (const struct sockaddr *)&px->upstream_sa,
                                    (int)px->cfg->connect_timeout_ms);
    if (px->auth_probe == NULL || lp_upconn_send(px->auth_probe, hello, sizeof(hello) - 1, probe_reply, px) < 0)
        px->auth_probe_done = 1;
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

/* Everything is closed: the loop ends once the last handle is. */
void proxy_drained(proxy *px) {
    stop_listening(px);
    close_quietly((uv_handle_t *)&px->sig_term);
    close_quietly((uv_handle_t *)&px->sig_int);
    close_quietly((uv_handle_t *)&px->sig_hup);
    close_quietly((uv_handle_t *)&px->drain_timer);
    close_quietly((uv_handle_t *)&px->sweep_timer);
    px->auth_probe_done = 1;
    px->auth_probe_again = 0;
    probe_reap(px);
    lp_renewer_close(px->renewer);
    px->renewer = NULL;
}

static void drain_timeout(uv_timer_t *t) {
    proxy *px = t->data;
    lp_logf("shutdown-timeout reached: closing %d connection(s)", px->nclients);
    while (px->sessions) session_close(px->sessions);
    proxy_drained(px);
}

/* SIGTERM/SIGINT: stop accepting, let the replies in flight reach their clients, exit. */
static void on_stop_signal(uv_signal_t *sig, int signum) {
    proxy *px = sig->data;
    if (px->draining) return;
    px->draining = 1;
    lp_logf("%s: draining %d connection(s)", signum == SIGINT ? "SIGINT" : "SIGTERM", px->nclients);
    if (px->listening) {
        stop_listening(px);
        if (px->cfg->listen.is_unix) unlink(px->cfg->listen.path);
    }
    uv_timer_start(&px->drain_timer, drain_timeout, (uint64_t)px->cfg->shutdown_timeout_ms, 0);
    session *s = px->sessions;
    while (s) {
        session *next = lp_session_next(s);
        session_drain(s);
        s = next;
    }
    if (px->sessions == NULL) proxy_drained(px);
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

static int resolve_upstream(proxy *px, char *err, size_t errlen) {
    const lp_addr *a = &px->cfg->upstream;
    if (a->is_unix) return 0;
    struct addrinfo hints, *res = NULL;
    memset(&hints, 0, sizeof(hints));
    hints.ai_socktype = SOCK_STREAM;
    char port[16];
    snprintf(port, sizeof(port), "%d", a->port);
    int rc = getaddrinfo(a->host, port, &hints, &res);
    if (rc != 0 || res == NULL) {
        snprintf(err, errlen, "upstream %s: %s", a->host, gai_strerror(rc));
        return -1;
    }
    memcpy(&px->upstream_sa, res->ai_addr, res->ai_addrlen);
    freeaddrinfo(res);
    return 0;
}

static int start_listener(proxy *px, char *err, size_t errlen) {
    const lp_addr *a = &px->cfg->listen;
    int rc;
    if (a->is_unix) {
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
            snprintf(err, errlen, "listen %s: %s", a->host, gai_strerror(g));
            return -1;
        }
        uv_tcp_init(px->loop, &px->listener.tcp);
        rc = uv_tcp_bind(&px->listener.tcp, res->ai_addr, 0);
        freeaddrinfo(res);
    }
    px->listener.stream.data = px;
    px->listening = 1;
    uv_os_fd_t fd = -1;
    if (rc == 0) rc = uv_fileno((uv_handle_t *)&px->listener, &fd);
    if (rc == 0 && listen(fd, 511) != 0) rc = LP_UV_ERR(errno);
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
        snprintf(err, errlen, "cannot listen on %s: %s", addr, uv_strerror(rc));
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
    if (resolve_upstream(&px, err, sizeof(err)) < 0 || start_listener(&px, err, sizeof(err)) < 0) {
        fprintf(stderr, "lockproxy: %s\n", err);
        policy_free(px.policy);
        lease_table_free(px.leases);
        audit_once_free(px.lock.script_once);
        lock_ctx_free(&px.lock);
        proxy_forget_script_users(&px);
        audit_limiter_free(px.limiter);
        if (px.audit) lp_auditlog_close(px.audit);
        stop_listening(&px);
        uv_run(px.loop, UV_RUN_DEFAULT);
        uv_loop_close(px.loop);
        return 1;
    }
    uv_signal_init(px.loop, &px.sig_term);
    uv_signal_init(px.loop, &px.sig_int);
    uv_signal_init(px.loop, &px.sig_hup);
    uv_timer_init(px.loop, &px.drain_timer);
    px.sig_term.data = px.sig_int.data = px.sig_hup.data = px.drain_timer.data = &px;
    uv_signal_start(&px.sig_term, on_stop_signal, SIGTERM);
    uv_signal_start(&px.sig_int, on_stop_signal, SIGINT);
    uv_signal_start(&px.sig_hup, on_hup, SIGHUP);
    uv_unref((uv_handle_t *)&px.drain_timer);
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
    lp_addr_format(&cfg->upstream, u, sizeof(u));
    lp_logf("listening on %s, upstream %s, %zu lock rule(s)", l, u, px.policy ? policy_count(px.policy) : (size_t)0);

    uv_run(px.loop, UV_RUN_DEFAULT);
    /* Every session has gone, so no event comes after this: the counts the rate limiter
     * still holds go out as summary lines (the sweep timer would have written them a
     * second later), then the log is written out and closed. */
    audit_limiter_flush_all(px.limiter, audit_summary, &px);
    if (px.audit) lp_auditlog_close(px.audit);
    px.audit = NULL;
    uv_run(px.loop, UV_RUN_DEFAULT);
    uv_loop_close(px.loop);
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
