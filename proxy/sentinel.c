/* The Sentinel-named upstream: see sentinel.h. */
#include "proxy/sentinel.h"

#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "proxy/proxy.h"
#include "proxy/renew.h"
#include "proxy/session.h"
#include "policy/lease.h"
#include "policy/lock.h"
#include "proxy/upconn.h"
#include "resp/encode.h"

#define RETRY_MS 1000    /* between discovery rounds that found no master */
#define PING_MS 1000     /* keepalive of the subscription */

struct lp_sentinel {
    proxy *px;
    const lp_sentinel_cfg *cfg;
    struct sockaddr_storage sa[LP_SENTINELS_MAX];
    int resolved[LP_SENTINELS_MAX];
    char name[LP_SENTINELS_MAX][300];  /* "HOST:PORT", for messages */
    uv_timer_t retry, ping;
    int refs;                          /* timers not yet closed, a getaddrinfo in flight */
    int closing;

    /* A discovery round: the sentinels asked in turn, from next on. */
    int round_active, next, asked;
    lp_upconn *q;
    int q_idx;

    /* The candidate master being confirmed with ROLE. */
    char cand_host[256];
    int cand_port;
    int cand_from;                     /* the sentinel that named it */
    struct sockaddr_storage cand_sa;
    unsigned cand_gen;                 /* bumped for every new candidate */
    lp_upconn *v;
    uv_getaddrinfo_t gai;
    int gai_busy;
    unsigned gai_gen;

    /* The +switch-master subscription. */
    lp_upconn *sub;
    int sub_idx;
    int sub_confirmed;

    /* The master in use. */
    int have;
    char host[256];
    int port;
    unsigned long switches;
    uint64_t last_kick;                /* when a failed connect last started a round */
};

static const lp_addr tcp_addr;         /* is_unix 0: what lp_upconn_open needs to know */

static void ask_next(lp_sentinel *sn);
static void round_start(lp_sentinel *sn);
static void confirm(lp_sentinel *sn);

static void unref_one(lp_sentinel *sn) {
    if (--sn->refs == 0 && sn->closing) free(sn);
}

static void timer_closed(uv_handle_t *h) { unref_one(h->data); }

static int timeout_ms(const lp_sentinel *sn) { return (int)sn->px->cfg->connect_timeout_ms; }

/* Releases a connection of ours; the pointer that held it is cleared first, so that the
 * NULL replies its closing delivers are recognised as stale. */
static void drop(lp_upconn **slot) {
    lp_upconn *c = *slot;
    *slot = NULL;
    lp_upconn_close(c);
}

/* ---- discovery ---- */

static void retry_cb(uv_timer_t *t) { round_start(t->data); }

static void round_fail(lp_sentinel *sn) {
    sn->round_active = 0;
    lp_logf("sentinel: no sentinel named a confirmed master for '%s'; asking again in %d ms", sn->cfg->master,
            RETRY_MS);
    uv_timer_start(&sn->retry, retry_cb, RETRY_MS, 0);
}

static void round_start(lp_sentinel *sn) {
    if (sn->closing || sn->round_active) return;
    uv_timer_stop(&sn->retry);
    sn->round_active = 1;
    sn->asked = 0;
    ask_next(sn);
}

/* A candidate was not confirmed: the round goes on with the next sentinel, or, for a
 * candidate a +switch-master message named, a round starts. */
static void confirm_failed(lp_sentinel *sn) {
    if (sn->round_active) ask_next(sn);
    else round_start(sn);
}

static void q_reply(lp_upconn *c, const redisReply *r, void *ud) {
    lp_sentinel *sn = ud;
    if (c != sn->q || sn->closing) return;
    const char *who = sn->name[sn->q_idx];
    if (r == NULL) {
        lp_logf("sentinel %s: no answer (down or unreachable): skipped", who);
    } else if (r->type == REDIS_REPLY_ERROR) {
        lp_logf("sentinel %s: %s: skipped", who, r->str);
    } else if (r->type != REDIS_REPLY_ARRAY || r->elements != 2 || r->element[0]->type != REDIS_REPLY_STRING ||
               r->element[1]->type != REDIS_REPLY_STRING || r->element[0]->len >= sizeof(sn->cand_host)) {
        lp_logf("sentinel %s: does not know a master named '%s': skipped", who, sn->cfg->master);
    } else {
        int port = atoi(r->element[1]->str);
        if (port <= 0 || port > 65535) {
            lp_logf("sentinel %s: named a bad port '%s': skipped", who, r->element[1]->str);
        } else {
            memcpy(sn->cand_host, r->element[0]->str, r->element[0]->len);
            sn->cand_host[r->element[0]->len] = '\0';
            sn->cand_port = port;
            sn->cand_from = sn->q_idx;
            drop(&sn->q);
            confirm(sn);
            return;
        }
    }
    drop(&sn->q);
    ask_next(sn);
}

/* Asks the next sentinel of this round; ends the round when every one was asked. */
static void ask_next(lp_sentinel *sn) {
    while (!sn->closing) {
        if (sn->asked >= sn->cfg->n) { round_fail(sn); return; }
        int i = sn->next;
        sn->next = (sn->next + 1) % sn->cfg->n;
        sn->asked++;
        if (!sn->resolved[i]) continue;
        sn->q = lp_upconn_open(sn->px->loop, &tcp_addr, (const struct sockaddr *)&sn->sa[i], timeout_ms(sn));
        sn->q_idx = i;
        lp_str cmd = {0};
        resp_enc_head(&cmd, 3);
        resp_enc_cstr(&cmd, "SENTINEL");
        resp_enc_cstr(&cmd, "get-master-addr-by-name");
        resp_enc_cstr(&cmd, sn->cfg->master);
        int rc = lp_upconn_send(sn->q, cmd.p, cmd.len, q_reply, sn);
        lp_str_free(&cmd);
        if (rc == 0) return;
        lp_logf("sentinel %s: cannot connect: skipped", sn->name[i]);
        drop(&sn->q);
    }
}

/* ---- the subscription ---- */

static void sub_lost(lp_sentinel *sn, const char *why) {
    lp_logf("sentinel %s: +switch-master subscription lost (%s); asking the sentinels again",
            sn->name[sn->sub_idx], why);
    drop(&sn->sub);
    sn->sub_confirmed = 0;
    if (!sn->round_active) uv_timer_start(&sn->retry, retry_cb, sn->have ? 100 : RETRY_MS, 0);
}

static void sub_reply(lp_upconn *c, const redisReply *r, void *ud) {
    lp_sentinel *sn = ud;
    if (c != sn->sub || sn->closing) return;
    if (r == NULL) { sub_lost(sn, "no answer"); return; }
    if (r->type == REDIS_REPLY_ERROR) { sub_lost(sn, r->str); return; }
    if (!sn->sub_confirmed) {
        sn->sub_confirmed = 1;
        lp_logf("sentinel %s: subscribed to +switch-master", sn->name[sn->sub_idx]);
    }
}

/* "+switch-master NAME OLD-IP OLD-PORT NEW-IP NEW-PORT": the new address is confirmed with
 * ROLE before anything moves to it; whatever was being asked is given up. */
static void message_cb(lp_upconn *c, const redisReply *r, void *ud) {
    lp_sentinel *sn = ud;
    if (c != sn->sub || sn->closing || r == NULL) return;
    const redisReply *ch = r->element[1], *msg = r->element[2];
    if (ch->type != REDIS_REPLY_STRING || msg->type != REDIS_REPLY_STRING) return;
    if (strcmp(ch->str, "+switch-master") != 0) return;
    char name[128], oh[256], nh[256];
    int op, np;
    if (sscanf(msg->str, "%127s %255s %d %255s %d", name, oh, &op, nh, &np) != 5) {
        lp_logf("sentinel %s: unreadable +switch-master message '%s'", sn->name[sn->sub_idx], msg->str);
        return;
    }
    if (strcmp(name, sn->cfg->master) != 0) return;
    lp_logf("sentinel %s: +switch-master %s from %s:%d to %s:%d", sn->name[sn->sub_idx], name, oh, op, nh, np);
    drop(&sn->q);
    drop(&sn->v);
    sn->round_active = 0;
    uv_timer_stop(&sn->retry);
    snprintf(sn->cand_host, sizeof(sn->cand_host), "%s", nh);
    sn->cand_port = np;
    sn->cand_from = sn->sub_idx;
    confirm(sn);
}

static void subscribe(lp_sentinel *sn, int idx) {
    if (sn->closing || lp_upconn_alive(sn->sub)) return;
    drop(&sn->sub);
    sn->sub_idx = idx;
    sn->sub_confirmed = 0;
    sn->sub = lp_upconn_open(sn->px->loop, &tcp_addr, (const struct sockaddr *)&sn->sa[idx], timeout_ms(sn));
    lp_upconn_on_message(sn->sub, message_cb, sn);
    static const char cmd[] = "*2\r\n$9\r\nSUBSCRIBE\r\n$14\r\n+switch-master\r\n";
    if (lp_upconn_send(sn->sub, cmd, sizeof(cmd) - 1, sub_reply, sn) < 0) sub_lost(sn, "cannot connect");
}

static void ping_cb(uv_timer_t *t) {
    lp_sentinel *sn = t->data;
    static const char cmd[] = "*1\r\n$4\r\nPING\r\n";
    if (sn->sub != NULL && lp_upconn_pending(sn->sub) == 0 &&
        lp_upconn_send(sn->sub, cmd, sizeof(cmd) - 1, sub_reply, sn) < 0)
        sub_lost(sn, "connection closed");
}

/* ---- after a failover: which locks held through the closed connections survived ---- */

/* Each lock held (by the lease cache) through a connection the switch closes is looked up on
 * the new master: its lease record must still name the acquire id (HGET record id). One
 * that does not was lost with the old master's last writes: an audit line "failover_lost"
 * each, and a summary on stderr. At most HELD_MAX locks are looked up. */
#define HELD_MAX 10000

typedef struct fcheck fcheck;

typedef struct held {
    fcheck *fc;
    uint64_t conn_id;
    int db;
    char id[48];
    char client[64];
    size_t keylen;
    char *key;
} held;

struct fcheck {
    proxy *px;
    lp_upconn *up;
    char master[300];
    held *h;
    size_t n, cap, skipped, pending, kept, lost, unchecked;
    int64_t now;
};

static void collect(const lease *l, void *ud) {
    fcheck *fc = ud;
    char id[48];
    int renewing, db = 0;
    unsigned long long conn;
    const char *tok;
    size_t toklen;
    if (!l->conn_scoped || l->deadline_ms < fc->now) return;
    if (lock_cache_value(l, id, sizeof(id), &renewing, &tok, &toklen) < 0) return;
    if (sscanf(l->owner, "c%llu@%d", &conn, &db) != 2) return;
    if (fc->n == HELD_MAX) { fc->skipped++; return; }
    if (fc->n == fc->cap) {
        size_t ncap = fc->cap ? fc->cap * 2 : 16;
        held *nh = realloc(fc->h, ncap * sizeof(*nh));
        if (nh == NULL) { fc->skipped++; return; }
        fc->h = nh;
        fc->cap = ncap;
    }
    char *key = malloc(l->keylen + 1);
    if (key == NULL) { fc->skipped++; return; }
    memcpy(key, l->key, l->keylen + 1);
    held *e = &fc->h[fc->n++];
    memset(e, 0, sizeof(*e));
    e->conn_id = conn;
    e->db = db;
    snprintf(e->id, sizeof(e->id), "%s", id);
    e->key = key;
    e->keylen = l->keylen;
}

static int by_conn(const void *a, const void *b) {
    const held *x = a, *y = b;
    return x->conn_id < y->conn_id ? -1 : x->conn_id > y->conn_id;
}

static void fcheck_free(fcheck *fc) {
    for (size_t i = 0; i < fc->n; i++) free(fc->h[i].key);
    free(fc->h);
    free(fc);
}

static void fcheck_done(fcheck *fc) {
    lp_logf("failover: %zu lock(s) held through the closed connections: %zu on the new master %s, %zu lost "
            "(audit event failover_lost)%s", fc->n + fc->skipped, fc->kept, fc->master, fc->lost,
            fc->unchecked + fc->skipped > 0 ? ", some not checked (connection failed or too many)" : "");
    lp_upconn *up = fc->up;
    fcheck_free(fc);
    lp_upconn_close(up);
}

static void lost_event(fcheck *fc, const held *e) {
    lock_ctx *ctx = &fc->px->lock;
    if (ctx->log == NULL) return;
    const policy_rule *r = fc->px->policy ? policy_match(fc->px->policy, e->key, e->keylen) : NULL;
    char detail[512];
    snprintf(detail, sizeof(detail), "held through a connection closed by the failover; its lease record is not on "
             "the new master %s: lost with the old master's last writes", fc->master);
    audit_event ev;
    memset(&ev, 0, sizeof(ev));
    ev.event = "failover_lost";
    ev.mode = r ? policy_mode_name(r->mode) : "enforce";
    ev.action = "lost";
    ev.rule = r ? r->prefix : "";
    ev.rule_len = r ? r->prefix_len : 0;
    ev.key = e->key;
    ev.key_len = e->keylen;
    ev.client = e->client;
    ev.detail = detail;
    ev.held_ms = -1;
    ctx->log(ctx->log_ud, &ev);
}

static void hget_reply(lp_upconn *c, const redisReply *r, void *ud) {
    held *e = ud;
    (void)c;
    fcheck *fc = e->fc;
    if (r == NULL) fc->unchecked++;
    else if (r->type == REDIS_REPLY_STRING && strcmp(r->str, e->id) == 0) fc->kept++;
    else if (r->type == REDIS_REPLY_ERROR) fc->unchecked++;
    else { fc->lost++; lost_event(fc, e); }
    if (--fc->pending == 0) fcheck_done(fc);
}

static void ignore_reply(lp_upconn *c, const redisReply *r, void *ud) {
    (void)c;
    (void)r;
    (void)ud;
}

/* Collects the live leases of the open sessions, before they close. NULL when there is none. */
static fcheck *fcheck_collect(proxy *px) {
    if (px->leases == NULL || lease_count(px->leases) == 0) return NULL;
    fcheck *fc = calloc(1, sizeof(*fc));
    if (fc == NULL) return NULL;
    fc->px = px;
    fc->now = (int64_t)uv_now(px->loop);
    lease_each(px->leases, collect, fc);
    if (fc->n == 0) { fcheck_free(fc); return NULL; }
    qsort(fc->h, fc->n, sizeof(*fc->h), by_conn);
    for (session *s = px->sessions; s != NULL; s = s->next) {
        held probe = { .conn_id = s->conn_id };
        held *e = bsearch(&probe, fc->h, fc->n, sizeof(*fc->h), by_conn);
        if (e == NULL) continue;
        while (e > fc->h && e[-1].conn_id == s->conn_id) e--;
        for (; e < fc->h + fc->n && e->conn_id == s->conn_id; e++) snprintf(e->client, sizeof(e->client), "%s", s->peer);
    }
    return fc;
}

/* Sends the lookups to the new master at sa. */
static void fcheck_start(fcheck *fc, const struct sockaddr *sa, const char *master) {
    proxy *px = fc->px;
    const lp_config *cfg = px->cfg;
    snprintf(fc->master, sizeof(fc->master), "%s", master);
    for (size_t i = 0; i < fc->n; i++) fc->h[i].fc = fc;   /* the array no longer moves */
    fc->up = lp_upconn_open(px->loop, &tcp_addr, sa, (int)cfg->connect_timeout_ms);
    lp_upconn_auth(fc->up, cfg->upstream_user, cfg->upstream_password, ignore_reply, NULL);
    int db = 0;
    lp_str cmd = {0}, rec = {0};
    fc->pending = fc->n;
    for (size_t i = 0; i < fc->n; i++) {
        held *e = &fc->h[i];
        if (e->db != db) {
            cmd.len = 0;
            resp_enc_head(&cmd, 2);
            resp_enc_cstr(&cmd, "SELECT");
            resp_enc_ll(&cmd, e->db);
            lp_upconn_send(fc->up, cmd.p, cmd.len, ignore_reply, NULL);
            db = e->db;
        }
        cmd.len = 0;
        rec.len = 0;
        lock_record_key(&rec, e->key, e->keylen);
        resp_enc_head(&cmd, 3);
        resp_enc_cstr(&cmd, "HGET");
        resp_enc_arg(&cmd, rec.p, rec.len);
        resp_enc_cstr(&cmd, "id");
        if (lp_upconn_send(fc->up, cmd.p, cmd.len, hget_reply, e) < 0) {
            fc->unchecked += fc->n - i;
            fc->pending -= fc->n - i;
            break;
        }
    }
    lp_str_free(&cmd);
    lp_str_free(&rec);
    if (fc->pending == 0) fcheck_done(fc);
}

/* ---- confirming and adopting a master ---- */

/* Every client's upstream connection goes: its clients reconnect, to the new master. */
static int switch_sessions(proxy *px) {
    int n = 0;
    session *s = px->sessions;
    while (s != NULL) {
        session *next = lp_session_next(s);
        session_upstream_switched(s);
        s = next;
        n++;
    }
    lp_renewer_reconnect(px->renewer);
    if (!px->draining) proxy_probe_auth(px);
    return n;
}

static void adopt(lp_sentinel *sn) {
    sn->round_active = 0;
    uv_timer_stop(&sn->retry);
    proxy *px = sn->px;
    const char *who = sn->name[sn->cand_from];
    if (!sn->have) {
        lp_logf("sentinel %s: master '%s' is %s:%d (ROLE: master)", who, sn->cfg->master, sn->cand_host,
                sn->cand_port);
    } else if (strcmp(sn->host, sn->cand_host) != 0 || sn->port != sn->cand_port) {
        sn->switches++;
        int n = px->nclients;
        lp_logf("sentinel %s: master '%s' moved from %s:%d to %s:%d (ROLE: master): closing %d client "
                "connection(s) to the old master; new ones go to the new one", who, sn->cfg->master, sn->host,
                sn->port, sn->cand_host, sn->cand_port, n);
    }
    int changed = !sn->have || strcmp(sn->host, sn->cand_host) != 0 || sn->port != sn->cand_port;
    int first = !sn->have;
    sn->have = 1;
    snprintf(sn->host, sizeof(sn->host), "%s", sn->cand_host);
    sn->port = sn->cand_port;
    memcpy(&px->upstream_sa, &sn->cand_sa, sizeof(px->upstream_sa));
    if (changed && !first) {
        fcheck *fc = fcheck_collect(px);
        switch_sessions(px);
        if (fc != NULL) {
            char where[300];
            snprintf(where, sizeof(where), "%s:%d", sn->host, sn->port);
            fcheck_start(fc, (const struct sockaddr *)&sn->cand_sa, where);
        }
    }
    if (!sn->closing) subscribe(sn, sn->cand_from);
}

static void auth_reply(lp_upconn *c, const redisReply *r, void *ud) {
    lp_sentinel *sn = ud;
    (void)c;
    if (r != NULL && r->type == REDIS_REPLY_ERROR && !sn->closing)
        lp_logf("sentinel: master candidate %s:%d refused upstream-auth: %s", sn->cand_host, sn->cand_port, r->str);
}

static void role_reply(lp_upconn *c, const redisReply *r, void *ud) {
    lp_sentinel *sn = ud;
    if (c != sn->v || sn->closing) return;
    const char *who = sn->name[sn->cand_from];
    if (r != NULL && r->type == REDIS_REPLY_ARRAY && r->elements >= 1 && r->element[0]->type == REDIS_REPLY_STRING &&
        strcmp(r->element[0]->str, "master") == 0) {
        drop(&sn->v);
        adopt(sn);
        return;
    }
    if (r == NULL)
        lp_logf("sentinel %s named %s:%d for '%s', which does not answer: skipped", who, sn->cand_host, sn->cand_port,
                sn->cfg->master);
    else if (r->type == REDIS_REPLY_ERROR)
        lp_logf("sentinel %s named %s:%d for '%s', whose ROLE failed (%s): skipped", who, sn->cand_host,
                sn->cand_port, sn->cfg->master, r->str);
    else
        lp_logf("sentinel %s named %s:%d for '%s', which says its role is %s: skipped", who, sn->cand_host,
                sn->cand_port, sn->cfg->master,
                r->type == REDIS_REPLY_ARRAY && r->elements >= 1 && r->element[0]->type == REDIS_REPLY_STRING
                    ? r->element[0]->str : "unknown");
    drop(&sn->v);
    confirm_failed(sn);
}

static void confirm_connect(lp_sentinel *sn) {
    const lp_config *cfg = sn->px->cfg;
    sn->v = lp_upconn_open(sn->px->loop, &tcp_addr, (const struct sockaddr *)&sn->cand_sa, timeout_ms(sn));
    lp_upconn_auth(sn->v, cfg->upstream_user, cfg->upstream_password, auth_reply, sn);
    static const char role[] = "*1\r\n$4\r\nROLE\r\n";
    if (lp_upconn_send(sn->v, role, sizeof(role) - 1, role_reply, sn) < 0) {
        lp_logf("sentinel: cannot connect to master candidate %s:%d: skipped", sn->cand_host, sn->cand_port);
        drop(&sn->v);
        confirm_failed(sn);
    }
}

static void gai_cb(uv_getaddrinfo_t *req, int status, struct addrinfo *res) {
    lp_sentinel *sn = req->data;
    sn->gai_busy = 0;
    int stale = sn->gai_gen != sn->cand_gen;
    if (status == 0 && res != NULL && !stale && !sn->closing) memcpy(&sn->cand_sa, res->ai_addr, res->ai_addrlen);
    uv_freeaddrinfo(res);
    if (sn->closing) { unref_one(sn); return; }
    unref_one(sn);
    if (stale) { confirm(sn); return; }   /* a newer candidate came meanwhile */
    if (status < 0 || res == NULL) {
        lp_logf("sentinel: master candidate %s does not resolve: %s", sn->cand_host, uv_strerror(status));
        confirm_failed(sn);
        return;
    }
    confirm_connect(sn);
}

/* Confirms the candidate (cand_host, cand_port) with ROLE, resolving its name first when it
 * is not a literal address. */
static void confirm(lp_sentinel *sn) {
    if (sn->closing) return;
    sn->cand_gen++;
    memset(&sn->cand_sa, 0, sizeof(sn->cand_sa));
    if (uv_ip4_addr(sn->cand_host, sn->cand_port, (struct sockaddr_in *)&sn->cand_sa) == 0 ||
        uv_ip6_addr(sn->cand_host, sn->cand_port, (struct sockaddr_in6 *)&sn->cand_sa) == 0) {
        confirm_connect(sn);
        return;
    }
    if (sn->gai_busy) return;   /* its callback sees the newer candidate and comes back here */
    char port[16];
    snprintf(port, sizeof(port), "%d", sn->cand_port);
    struct addrinfo hints;
    memset(&hints, 0, sizeof(hints));
    hints.ai_socktype = SOCK_STREAM;
    sn->gai.data = sn;
    sn->gai_gen = sn->cand_gen;
    if (uv_getaddrinfo(sn->px->loop, &sn->gai, gai_cb, sn->cand_host, port, &hints) < 0) {
        lp_logf("sentinel: master candidate %s: cannot resolve", sn->cand_host);
        confirm_failed(sn);
        return;
    }
    sn->gai_busy = 1;
    sn->refs++;
}

/* ---- life cycle ---- */

lp_sentinel *lp_sentinel_new(proxy *px, char *err, size_t errlen) {
    lp_sentinel *sn = calloc(1, sizeof(*sn));
    if (sn == NULL) { snprintf(err, errlen, "out of memory"); return NULL; }
    sn->px = px;
    sn->cfg = &px->cfg->sentinel;
    int any = 0;
    for (int i = 0; i < sn->cfg->n; i++) {
        const lp_addr *a = &sn->cfg->addr[i];
        lp_addr_format(a, sn->name[i], sizeof(sn->name[i]));
        struct addrinfo hints, *res = NULL;
        memset(&hints, 0, sizeof(hints));
        hints.ai_socktype = SOCK_STREAM;
        char port[16];
        snprintf(port, sizeof(port), "%d", a->port);
        int rc = getaddrinfo(a->host, port, &hints, &res);
        if (rc != 0 || res == NULL) {
            lp_logf("sentinel %s: %s: left out", sn->name[i], gai_strerror(rc));
            continue;
        }
        memcpy(&sn->sa[i], res->ai_addr, res->ai_addrlen);
        freeaddrinfo(res);
        sn->resolved[i] = any = 1;
    }
    if (!any) {
        snprintf(err, errlen, "upstream: no sentinel address resolves");
        free(sn);
        return NULL;
    }
    uv_timer_init(px->loop, &sn->retry);
    uv_timer_init(px->loop, &sn->ping);
    sn->retry.data = sn->ping.data = sn;
    sn->refs = 2;
    uv_timer_start(&sn->ping, ping_cb, PING_MS, PING_MS);
    uv_unref((uv_handle_t *)&sn->ping);
    round_start(sn);
    return sn;
}

void lp_sentinel_wait_master(lp_sentinel *sn) {
    while (!sn->have && !sn->closing) uv_run(sn->px->loop, UV_RUN_ONCE);
}

void lp_sentinel_upstream_failed(lp_sentinel *sn) {
    if (sn == NULL || sn->closing || sn->round_active || uv_is_active((uv_handle_t *)&sn->retry)) return;
    uint64_t now = uv_now(sn->px->loop);
    if (sn->last_kick != 0 && now - sn->last_kick < RETRY_MS) return;
    sn->last_kick = now;
    round_start(sn);
}

unsigned long lp_sentinel_switches(const lp_sentinel *sn) { return sn ? sn->switches : 0; }

void lp_sentinel_close(lp_sentinel *sn) {
    if (sn == NULL || sn->closing) return;
    sn->closing = 1;
    drop(&sn->q);
    drop(&sn->v);
    drop(&sn->sub);
    if (sn->gai_busy) uv_cancel((uv_req_t *)&sn->gai);
    uv_close((uv_handle_t *)&sn->retry, timer_closed);
    uv_close((uv_handle_t *)&sn->ping, timer_closed);
}
