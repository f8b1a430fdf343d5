/* The session's life cycle: accept, connect (with its timeout), upstream-timeout,
 * half-close, drain and close. */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <ctype.h>
#include <unistd.h>
#include <arpa/inet.h>
#include "proxy/session.h"
#include "proxy/resolve.h"
#include "proxy/sentinel.h"

/* upstream-timeout: the upstream must say something within the limit while a request that
 * does not block waits at the head of the queue and the proxy is reading the upstream. */
static void upstream_timeout_cb(uv_timer_t *t) {
    session *s = t->data;
    if (s->closing || !sess_up_open(s)) return;
    lp_logf("upstream silent for %lld ms with a request pending, client=%s: closing",
            s->px->cfg->upstream_timeout_ms, s->peer);
    s->px->m.up_err_timeout++;
    sess_upstream_lost(s, "upstream timeout");
    uv_read_stop(&s->up.stream);
    s->up_reading = 0;
    sess_flush(s);
    sess_maybe_finish(s);
}

void sess_arm_upstream_timer(session *s, int restart) {
    long long ms = s->px->cfg->upstream_timeout_ms;
    if (ms <= 0 || !sess_up_open(s) || s->closing) return;
    pend *h = pairing_head(&s->pg);
    /* Only time spent reading the upstream counts: while backpressure keeps the proxy from
     * reading it, Redis's silence is the proxy's own doing. */
    int want = s->up_reading && h != NULL && !h->blocking && h->kind != PEND_LOCAL && !s->pg.raw && !s->pg.monitor;
    if (!want) {
        uv_timer_stop(&s->timer);
    } else if (restart || !uv_is_active((uv_handle_t *)&s->timer)) {
        uv_timer_start(&s->timer, upstream_timeout_cb, (uint64_t)ms, 0);
    }
}

/* Closes the session once nothing is left to do: no input will come, no reply is due,
 * and every byte for the client has been written. */
void sess_maybe_finish(session *s) {
    if (s->closing) return;
    if (s->client_writes > 0 || s->to_client.w != NULL) return;
    if (s->client_state == CL_FLUSH_CLOSE) { session_close(s); return; }
    if (s->client_state >= CL_STOPPED && ((s->pg.qlen == 0 && !s->pg.raw) || s->up_state == UP_GONE))
        session_close(s);
}

/* After the client's EOF the replies still due are delivered and the session closes once
 * the queue is empty. Only where no end would come (a blocking command, pass-through mode)
 * is the half-close passed on to Redis, which then frees the client as for a direct one.
 * (Redis itself drops unwritten output when it reads EOF: the proxy delivers more.) */
void sess_eof_progress(session *s) {
    if (s->client_state != CL_HALF_CLOSED || s->up_state != UP_CONNECTED || s->closing) return;
    pend *h = pairing_head(&s->pg);
    if (!s->pg.raw && (h == NULL || !h->blocking)) return;
    /* Requests collected during this event (held ones just released) go before the FIN:
     * libuv refuses writes after uv_shutdown, which waits only for writes already queued. */
    if (s->to_up.w != NULL) {
        sess_flush(s);
        if (s->closing) return;
    }
    s->up_state = UP_SHUT;
    if (uv_shutdown(&s->shutdown_req, &s->up.stream, NULL) < 0) s->up_state = UP_GONE;
}

/* ---- connecting ---- */

static void handle_closed(uv_handle_t *h) {
    session *s = h->data;
    if (--s->open_handles > 0) return;
    resp_request_free(&s->req);
    resp_reply_free(&s->rep);
    if (s->px->leases) lease_drop_conn(s->px->leases, s->conn_id);
    lp_str_free(&s->cap);
    resp_reply_free(&s->ex.elem);
    lock_txn_free(&s->txn);
    lp_block_unref(s->in);
    lp_block_unref(s->rin);
    pairing_free(&s->pg);
    lp_wreq_free(lp_out_take(&s->to_up));
    lp_wreq_free(lp_out_take(&s->to_client));
    free(s);
}

static void close_handle(uv_handle_t *h) {
    if (!uv_is_closing(h)) uv_close(h, handle_closed);
}

static void idle_close_cb(uv_timer_t *t) {
    session_close(t->data);
}

static void connect_failed(session *s, const char *why) {
    snprintf(s->fail_why, sizeof(s->fail_why), "%s", why);
    /* At most one line a second: under EMFILE every accepted client fails the same way. */
    proxy *px = s->px;
    uint64_t now = uv_now(px->loop);
    px->connect_failures++;
    px->m.up_err_connect++;
    if (now - px->last_connect_log >= 1000) {
        lp_logf("upstream connect failed for client=%s: %s (%llu failures so far)", s->peer, why,
                (unsigned long long)px->connect_failures);
        px->last_connect_log = now;
    }
    s->up_state = UP_FAILED;
    if (px->sentinel != NULL) lp_sentinel_upstream_failed(px->sentinel);
    /* Answer what the client sends with an error line, then close; a client that sends
     * nothing is closed after connect-timeout. */
    uv_timer_start(&s->timer, idle_close_cb, (uint64_t)s->px->cfg->connect_timeout_ms, 0);
    sess_update_reading(s);
}

static void connect_cb(uv_connect_t *req, int status) {
    session *s = req->data;
    uv_timer_stop(&s->timer);
    if (s->closing) return;
    if (status < 0) {
        connect_failed(s, status == UV_ECANCELED ? "connect timeout" : uv_strerror(status));
        return;
    }
    s->up_state = UP_CONNECTED;
    lp_hist_observe(&s->px->m.connect_lat, uv_hrtime() - s->lat_t0);
    if (s->up.handle.type == UV_TCP) uv_tcp_nodelay(&s->up.tcp, 1);
    sess_update_reading(s);
}

/* Closing the handle cancels the connect: connect_cb then sees UV_ECANCELED. A name still
 * being looked up is forgotten instead. */
static void connect_timeout_cb(uv_timer_t *t) {
    session *s = t->data;
    if (s->up_state != UP_CONNECTING || s->closing) return;
    if (s->resolving != NULL) {
        lp_upstream_resolve_cancel(s->resolving);
        s->resolving = NULL;
        connect_failed(s, "connect timeout");
        return;
    }
    close_handle(&s->up.handle);
}

/* The upstream name's address for this connection: connect to it. */
static void resolved_cb(void *ud, int status, const struct sockaddr *sa) {
    session *s = ud;
    s->resolving = NULL;
    if (status < 0) {
        uv_timer_stop(&s->timer);
        connect_failed(s, uv_strerror(status));
        return;
    }
    int rc = uv_tcp_connect(&s->connect_req, &s->up.tcp, sa, connect_cb);
    if (rc < 0) {
        uv_timer_stop(&s->timer);
        connect_failed(s, uv_strerror(rc));
    }
}

void session_close(session *s) {
    if (s->closing) return;
    s->closing = 1;
    proxy *px = s->px;
    lp_upstream_resolve_cancel(s->resolving);
    s->resolving = NULL;
    if (s->prev) s->prev->next = s->next;
    else px->sessions = s->next;
    if (s->next) s->next->prev = s->prev;
    px->nclients--;
    close_handle(&s->client.handle);
    close_handle(&s->up.handle);
    close_handle((uv_handle_t *)&s->timer);
    if (px->draining && px->sessions == NULL) proxy_drained(px);
}

void session_drain(session *s) {
    sess_client_to(s, CL_STOPPED);
    sess_update_reading(s);
    sess_maybe_finish(s);
}

static void format_peer(session *s) {
    struct sockaddr_storage sa;
    int len = sizeof(sa);
    strcpy(s->peer, "unix");
    if (s->client.handle.type != UV_TCP) return;
    if (uv_tcp_getpeername(&s->client.tcp, (struct sockaddr *)&sa, &len) != 0) return;
    char ip[INET6_ADDRSTRLEN] = "?";
    int port = 0;
    if (sa.ss_family == AF_INET) {
        struct sockaddr_in *a = (struct sockaddr_in *)&sa;
        uv_ip4_name(a, ip, sizeof(ip));
        port = ntohs(a->sin_port);
        snprintf(s->peer, sizeof(s->peer), "%s:%d", ip, port);
    } else if (sa.ss_family == AF_INET6) {
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)&sa;
        uv_ip6_name(a, ip, sizeof(ip));
        port = ntohs(a->sin6_port);
        snprintf(s->peer, sizeof(s->peer), "[%s]:%d", ip, port);
    }
}

/* Takes an accepted client socket (non-blocking) and starts connecting its upstream.
 * Returns 0, or a libuv error when the client could not be served (fd is closed then). */
int session_start(proxy *px, int fd) {
    const lp_config *c = px->cfg;
    session *s = calloc(1, sizeof(*s));
    if (s == NULL) {
        close(fd);
        return UV_ENOMEM;
    }
    s->px = px;
    resp_request_init(&s->req);
    s->req.max_bulk_len = c->proto_max_bulk_len;
    s->conn_id = ++px->next_conn_id;
    pairing_init(&s->pg, px->auth_state == LP_AUTH_NOT_REQUIRED);
    resp_reply_init(&s->rep);
    resp_reply_init(&s->ex.elem);
    int unix_client = px->listener.stream.type == UV_NAMED_PIPE;   /* the listener may come from systemd */
    if (unix_client) uv_pipe_init(px->loop, &s->client.pipe, 0);
    else uv_tcp_init(px->loop, &s->client.tcp);
    if (c->upstream.is_unix) uv_pipe_init(px->loop, &s->up.pipe, 0);
    else uv_tcp_init(px->loop, &s->up.tcp);
    uv_timer_init(px->loop, &s->timer);
    s->client.handle.data = s->up.handle.data = s->timer.data = s;
    s->open_handles = 3;
    s->next = px->sessions;
    if (s->next) s->next->prev = s;
    px->sessions = s;
    px->nclients++;

    int rc = c->listen.is_unix ? uv_pipe_open(&s->client.pipe, fd) : uv_tcp_open(&s->client.tcp, fd);
    if (rc < 0) {
        close(fd);
        sess_client_to(s, CL_STOPPED);
        session_close(s);
        return rc;
    }
    px->m.accepted++;
    format_peer(s);
    const char *colon = strrchr(s->peer, ':');
    s->ip_len = colon ? (size_t)(colon - s->peer) : strlen(s->peer);
    if (!unix_client) uv_tcp_nodelay(&s->client.tcp, 1);

    if (px->nclients > c->maxclients) {
        static const char full[] = "-ERR max number of clients reached\r\n";
        px->m.refused_maxclients++;
        lp_block *e = lp_block_copy(full, sizeof(full) - 1);
        sess_emit(s, &s->to_client, e, 0, e->len);
        lp_block_unref(e);
        sess_client_to(s, CL_FLUSH_CLOSE);
        s->up_state = UP_GONE;
        sess_flush(s);
        sess_maybe_finish(s);
        return 0;
    }

    s->connect_req.data = s;
    s->lat_t0 = uv_hrtime();
    if (c->upstream.is_unix) {
        uv_pipe_connect(&s->connect_req, &s->up.pipe, c->upstream.path, connect_cb);
    } else if (px->upstream_by_name) {
        rc = lp_upstream_resolve(px, resolved_cb, s, &s->resolving);
        if (rc < 0) { connect_failed(s, uv_strerror(rc)); return 0; }
    } else {
        rc = uv_tcp_connect(&s->connect_req, &s->up.tcp, (const struct sockaddr *)&px->upstream_sa, connect_cb);
        if (rc < 0) { connect_failed(s, uv_strerror(rc)); return 0; }
    }
    uv_timer_start(&s->timer, connect_timeout_cb, (uint64_t)c->connect_timeout_ms, 0);
    return 0;
}

session *lp_session_next(session *s) { return s->next; }

void session_upstream_switched(session *s) {
    if (s->closing) return;
    if (s->up_state == UP_CONNECTING) { session_close(s); return; }
    if (!sess_up_open(s)) return;
    sess_upstream_lost(s, "master switched");
    uv_read_stop(&s->up.stream);
    s->up_reading = 0;
    sess_flush(s);
    sess_maybe_finish(s);
}
