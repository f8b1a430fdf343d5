/* The admin listener: see admin.h. */
#include "proxy/admin.h"

#include <errno.h>
#include <netdb.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <microhttpd.h>

#include "proxy/metrics.h"
#include "proxy/proxy.h"
#include "proxy/renew.h"
#include "proxy/upconn.h"
#include "resp/encode.h"

#ifndef LOCKPROXY_VERSION
#define LOCKPROXY_VERSION "unknown"
#endif

#define TICK_MS 1000
/* A PING not answered within this long counts as no answer. */
#define PROBE_TIMEOUT_MS 1000
/* /health fails when the loop has published nothing for this long. */
#define STALE_MS 5000

struct lp_admin {
    proxy *px;
    struct MHD_Daemon *daemon;
    /* loop thread only */
    uv_timer_t timer;
    lp_upconn *probe;
    int stopped;
    int draining;               /* health stays 503 whatever PING says */
    /* shared with the HTTP thread, under mu */
    pthread_mutex_t mu;
    lp_metrics_snap snap;
    int healthy;
    char health[200];           /* "ok", or why not */
};

static int64_t mono_ms(void) { return (int64_t)(uv_hrtime() / 1000000); }

/* ---- the loop's side ---- */

static void set_health(lp_admin *a, int healthy, const char *why) {
    if (a->draining) healthy = 0, why = "draining: the proxy is shutting down";
    pthread_mutex_lock(&a->mu);
    a->healthy = healthy;
    snprintf(a->health, sizeof(a->health), "%s", why);
    a->snap.upstream_up = healthy;
    pthread_mutex_unlock(&a->mu);
}

/* The answer to the health PING. +PONG is healthy; so is -NOAUTH (Redis is up and answers,
 * it wants the client to authenticate, and the proxy has no upstream-auth of its own). Any
 * other error (LOADING, MASTERDOWN, BUSY, ...) or no answer is not. */
static void ping_reply(lp_upconn *c, const redisReply *r, void *ud) {
    lp_admin *a = ud;
    char why[200];
    (void)c;
    if (r == NULL) {
        set_health(a, 0, "upstream did not answer PING (connection failed, closed or timed out)");
    } else if (r->type == REDIS_REPLY_STATUS && strcmp(r->str, "PONG") == 0) {
        set_health(a, 1, "ok");
    } else if (r->type == REDIS_REPLY_ERROR && strncmp(r->str, "NOAUTH", 6) == 0) {
        set_health(a, 1, "ok (upstream requires authentication)");
    } else {
        snprintf(why, sizeof(why), "upstream answered PING with: %.150s",
                 r->type == REDIS_REPLY_ERROR || r->type == REDIS_REPLY_STATUS ? r->str : "an unexpected reply");
        set_health(a, 0, why);
    }
}

static void auth_reply(lp_upconn *c, const redisReply *r, void *ud) {
    (void)c;
    (void)r;
    (void)ud;   /* a refused AUTH shows in PING's answer */
}

/* Sends PING when the last one has been answered, on a connection opened when needed. */
static void probe(lp_admin *a) {
    const lp_config *cfg = a->px->cfg;
    if (lp_upconn_alive(a->probe) && lp_upconn_pending(a->probe) > 0) return;
    if (!lp_upconn_alive(a->probe)) {
        lp_upconn_close(a->probe);
        a->probe = lp_upconn_open(a->px->loop, &cfg->upstream, (const struct sockaddr *)&a->px->upstream_sa,
                                  PROBE_TIMEOUT_MS);
        if (a->probe == NULL) { set_health(a, 0, "out of memory"); return; }
        lp_upconn_auth(a->probe, cfg->upstream_user, cfg->upstream_password, auth_reply, a);
    }
    static const char ping[] = "*1\r\n$4\r\nPING\r\n";
    if (lp_upconn_send(a->probe, ping, sizeof(ping) - 1, ping_reply, a) < 0)
        set_health(a, 0, "upstream connection failed");
}

/* Copies the counters for the HTTP thread. The copy is taken outside the lock (a new
 * snapshot) and swapped in under it, so the lock is held for a struct assignment. */
static void publish(lp_admin *a) {
    proxy *px = a->px;
    lp_metrics_snap s;
    memset(&s, 0, sizeof(s));
    lp_metrics_snap_take(&s, &px->m);
    s.connections = px->nclients > 0 ? (uint64_t)px->nclients : 0;
    s.leases_live = lease_count_live(px->leases, (int64_t)uv_now(px->loop));
    s.leases_cached = lease_count(px->leases);
    s.lease_bytes = lease_bytes(px->leases);
    s.lease_budget = px->cfg->lease_cache_bytes > 0 ? (uint64_t)px->cfg->lease_cache_bytes : 0;
    s.lease_evicted_live = lease_evicted(px->leases, 1);
    s.lease_evicted_ended = lease_evicted(px->leases, 0);
    s.renewing = lp_renewer_count(px->renewer);
    s.audit_dropped = lp_auditlog_dropped(px->audit);
    s.rules = px->policy ? policy_count(px->policy) : 0;
    s.taken_ms = mono_ms();
    pthread_mutex_lock(&a->mu);
    s.upstream_up = a->healthy;
    lp_metrics_snap old = a->snap;
    a->snap = s;
    pthread_mutex_unlock(&a->mu);
    lp_metrics_snap_free(&old);
}

static void tick(uv_timer_t *t) {
    lp_admin *a = t->data;
    probe(a);
    publish(a);
}

/* ---- the HTTP thread ---- */

static enum MHD_Result respond(struct MHD_Connection *c, unsigned status, char *body, size_t len,
                               const char *type) {
    struct MHD_Response *r = MHD_create_response_from_buffer(len, body, MHD_RESPMEM_MUST_FREE);
    if (r == NULL) {
        free(body);
        return MHD_NO;
    }
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, type);
    if (status == MHD_HTTP_METHOD_NOT_ALLOWED) MHD_add_response_header(r, MHD_HTTP_HEADER_ALLOW, "GET, HEAD");
    enum MHD_Result ok = MHD_queue_response(c, status, r);
    MHD_destroy_response(r);
    return ok;
}

static enum MHD_Result respond_text(struct MHD_Connection *c, unsigned status, const char *text) {
    char *body = strdup(text);
    if (body == NULL) return MHD_NO;
    return respond(c, status, body, strlen(body), "text/plain; charset=utf-8");
}

static enum MHD_Result serve_metrics(lp_admin *a, struct MHD_Connection *c) {
    lp_metrics_snap s;
    memset(&s, 0, sizeof(s));
    pthread_mutex_lock(&a->mu);
    int rc = lp_metrics_snap_copy(&s, &a->snap);
    pthread_mutex_unlock(&a->mu);
    size_t len = 0;
    char *body = rc == 0 ? lp_metrics_render(&s, LOCKPROXY_VERSION, &len) : NULL;
    lp_metrics_snap_free(&s);
    if (body == NULL) return respond_text(c, MHD_HTTP_INTERNAL_SERVER_ERROR, "out of memory\n");
    return respond(c, MHD_HTTP_OK, body, len, "text/plain; version=0.0.4; charset=utf-8");
}

static enum MHD_Result serve_health(lp_admin *a, struct MHD_Connection *c) {
    char text[300];
    pthread_mutex_lock(&a->mu);
    int healthy = a->healthy;
    int64_t age = mono_ms() - a->snap.taken_ms;
    snprintf(text, sizeof(text), "%s\n", a->health);
    pthread_mutex_unlock(&a->mu);
    if (age > STALE_MS) {
        snprintf(text, sizeof(text), "event loop has not reported for %lld ms\n", (long long)age);
        healthy = 0;
    }
    return respond_text(c, healthy ? MHD_HTTP_OK : MHD_HTTP_SERVICE_UNAVAILABLE, text);
}

/* libmicrohttpd's request handler. It is called once when the headers are in (*con_cls is
 * still NULL), then for each piece of a body, then once more with no data: the answer goes
 * out on that last call, so that a request with a body is read to its end first. */
static enum MHD_Result handle(void *cls, struct MHD_Connection *c, const char *url, const char *method,
                              const char *version, const char *upload_data, size_t *upload_data_size,
                              void **con_cls) {
    static int seen;
    lp_admin *a = cls;
    (void)version;
    (void)upload_data;
    if (*con_cls == NULL) {
        *con_cls = &seen;
        return MHD_YES;
    }
    if (*upload_data_size > 0) {
        *upload_data_size = 0;
        return MHD_YES;
    }
    int metrics = strcmp(url, "/metrics") == 0, health = strcmp(url, "/health") == 0;
    if (!metrics && !health) return respond_text(c, MHD_HTTP_NOT_FOUND, "not found: try /metrics or /health\n");
    if (strcmp(method, MHD_HTTP_METHOD_GET) != 0 && strcmp(method, MHD_HTTP_METHOD_HEAD) != 0)
        return respond_text(c, MHD_HTTP_METHOD_NOT_ALLOWED, "method not allowed: use GET\n");
    return metrics ? serve_metrics(a, c) : serve_health(a, c);
}

/* ---- start and stop ---- */

/* A listening socket on addr, or -1 with a message in err. Bound here rather than by
 * libmicrohttpd so that the reason for a failure (EADDRINUSE, ...) can be told. */
static int listen_on(const lp_addr *addr, int *v6, char *err, size_t errlen) {
    struct addrinfo hints, *res = NULL;
    char port[16];
    memset(&hints, 0, sizeof(hints));
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE;
    snprintf(port, sizeof(port), "%d", addr->port);
    int g = getaddrinfo(addr->host[0] ? addr->host : NULL, port, &hints, &res);
    if (g != 0 || res == NULL) {
        snprintf(err, errlen, "%s", gai_strerror(g));
        return -1;
    }
    int fd = socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0), one = 1;
    if (fd >= 0) setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (fd < 0 || bind(fd, res->ai_addr, res->ai_addrlen) < 0 || listen(fd, 64) < 0) {
        snprintf(err, errlen, "%s", strerror(errno));
        if (fd >= 0) close(fd);
        freeaddrinfo(res);
        return -1;
    }
    *v6 = res->ai_family == AF_INET6;
    freeaddrinfo(res);
    return fd;
}

lp_admin *lp_admin_start(proxy *px, char *err, size_t errlen) {
    char where[300], why[200];
    lp_addr_format(&px->cfg->admin, where, sizeof(where));
    lp_admin *a = calloc(1, sizeof(*a));
    if (a == NULL) {
        snprintf(err, errlen, "admin %s: out of memory", where);
        return NULL;
    }
    a->px = px;
    pthread_mutex_init(&a->mu, NULL);
    snprintf(a->health, sizeof(a->health), "no answer from the upstream yet");
    a->snap.taken_ms = mono_ms();
    int v6 = 0, fd = listen_on(&px->cfg->admin, &v6, why, sizeof(why));
    if (fd < 0) {
        snprintf(err, errlen, "admin %s: %s", where, why);
        pthread_mutex_destroy(&a->mu);
        free(a);
        return NULL;
    }
    /* The HTTP thread takes no signal: they are the loop's (libuv's signal handles). It
     * inherits the mask in force when it is created. */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    a->daemon = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_AUTO | (v6 ? MHD_USE_IPv6 : 0), 0,
                                 NULL, NULL, handle, a,
                                 MHD_OPTION_LISTEN_SOCKET, fd,
                                 MHD_OPTION_CONNECTION_LIMIT, (unsigned int)64,
                                 MHD_OPTION_CONNECTION_TIMEOUT, (unsigned int)10,
                                 MHD_OPTION_END);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (a->daemon == NULL) {
        snprintf(err, errlen, "admin %s: the HTTP server did not start", where);
        close(fd);
        pthread_mutex_destroy(&a->mu);
        free(a);
        return NULL;
    }
    uv_timer_init(px->loop, &a->timer);
    a->timer.data = a;
    uv_timer_start(&a->timer, tick, 0, TICK_MS);
    uv_unref((uv_handle_t *)&a->timer);
    return a;
}

void lp_admin_drain(lp_admin *a) {
    if (a == NULL) return;
    a->draining = 1;
    set_health(a, 0, "draining");
}

void lp_admin_stop_loop(lp_admin *a) {
    if (a == NULL || a->stopped) return;
    a->stopped = 1;
    if (!uv_is_closing((uv_handle_t *)&a->timer)) uv_close((uv_handle_t *)&a->timer, NULL);
    lp_upconn_close(a->probe);
    a->probe = NULL;
    a->draining = 1;
    set_health(a, 0, "shutting down");
}

void lp_admin_free(lp_admin *a) {
    if (a == NULL) return;
    MHD_stop_daemon(a->daemon);   /* joins the HTTP thread; closes its socket */
    lp_metrics_snap_free(&a->snap);
    pthread_mutex_destroy(&a->mu);
    free(a);
}
