/* Lock renewal: see renew.h. */
#include "proxy/renew.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proxy/proxy.h"
#include "proxy/upconn.h"
#include "policy/lua_scripts.h"

#define TICK_MS 100
#define BATCH_MAX 100
#define LONG_HOLD_MS (10 * 60 * 1000)

typedef struct rentry {
    int64_t next_ms;
    int64_t started_ms;
    uint64_t conn_id;
    int db;
    long long ttl_ms, max_hold_ms;
    int long_logged;
    char id[48];
    char rule[64];
    char client[64];
    size_t keylen;
    char key[];
} rentry;

typedef struct batch {
    lp_renewer *rn;
    int n;
    rentry *e[BATCH_MAX];
} batch;

struct lp_renewer {
    proxy *px;
    uv_timer_t timer;
    lp_upconn *up;
    int cur_db;
    rentry **heap;               /* by next_ms */
    size_t n, cap;
    size_t in_flight;
    int closing;
};

/* ---- heap ---- */

static void heap_push(lp_renewer *rn, rentry *e) {
    if (rn->n == rn->cap) {
        size_t ncap = rn->cap ? rn->cap * 2 : 64;
        rentry **nh = realloc(rn->heap, ncap * sizeof(*nh));
        if (nh == NULL) abort();
        rn->heap = nh;
        rn->cap = ncap;
    }
    size_t i = rn->n++;
    while (i > 0 && rn->heap[(i - 1) / 2]->next_ms > e->next_ms) {
        rn->heap[i] = rn->heap[(i - 1) / 2];
        i = (i - 1) / 2;
    }
    rn->heap[i] = e;
}

static rentry *heap_pop(lp_renewer *rn) {
    rentry *top = rn->heap[0], *last = rn->heap[--rn->n];
    size_t i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= rn->n) break;
        if (c + 1 < rn->n && rn->heap[c + 1]->next_ms < rn->heap[c]->next_ms) c++;
        if (rn->heap[c]->next_ms >= last->next_ms) break;
        rn->heap[i] = rn->heap[c];
        i = c;
    }
    if (rn->n > 0) rn->heap[i] = last;
    return top;
}

/* ---- events ---- */

static void log_hold(lp_renewer *rn, const rentry *e, const char *event, const char *detail, long long held) {
    lock_ctx *ctx = &rn->px->lock;
    if (ctx->log == NULL) return;
    audit_event ev;
    memset(&ev, 0, sizeof(ev));
    ev.event = event;
    ev.mode = "enforce";
    ev.action = strcmp(event, "max_hold") == 0 ? "refused" : "forwarded";
    ev.rule = e->rule;
    ev.rule_len = strlen(e->rule);
    ev.key = e->key;
    ev.key_len = e->keylen;
    ev.client = e->client;
    ev.detail = detail;
    ev.held_ms = held;
    ctx->log(ctx->log_ud, &ev);
}

/* 1 while the lease is still this connection's and still renewed (the cache says so). */
static int still_wanted(lp_renewer *rn, const rentry *e) {
    lease_table *t = rn->px->leases;
    if (t == NULL) return 0;
    char id[48];
    const lease *l = lock_cache_lookup(t, e->key, e->keylen, e->conn_id, e->db);
    /* A cache that had to evict this connection's lease cannot say: renew while the record
     * still holds the acquire id (renew.lua checks it) and the connection is open (its
     * mark goes with lease_drop_conn). */
    if (l == NULL) return lease_conn_lost(t, e->conn_id);
    int renewing;
    const char *tok;
    size_t toklen;
    return l != NULL && lock_cache_value(l, id, sizeof(id), &renewing, &tok, &toklen) == 0 && renewing &&
           strcmp(id, e->id) == 0;
}

/* ---- the connection ---- */

static void auth_reply(lp_upconn *c, const redisReply *r, void *ud) {
    (void)c;
    (void)ud;
    if (r != NULL && r->type == REDIS_REPLY_ERROR) lp_logf("renewal connection: AUTH refused: %s", r->str);
}

static lp_upconn *connection(lp_renewer *rn) {
    if (lp_upconn_alive(rn->up)) return rn->up;
    lp_upconn_close(rn->up);
    const lp_config *cfg = rn->px->cfg;
    rn->up = lp_upconn_open(rn->px->loop, &cfg->upstream, (const struct sockaddr *)&rn->px->upstream_sa,
                            (int)cfg->connect_timeout_ms);
    rn->cur_db = 0;
    lp_upconn_auth(rn->up, cfg->upstream_user, cfg->upstream_password, auth_reply, NULL);
    return rn->up;
}

static void select_reply(lp_upconn *c, const redisReply *r, void *ud) {
    (void)c;
    (void)ud;
    if (r != NULL && r->type == REDIS_REPLY_ERROR) lp_logf("renewal connection: SELECT refused: %s", r->str);
}

static void batch_reply(lp_upconn *c, const redisReply *r, void *ud) {
    batch *b = ud;
    lp_renewer *rn = b->rn;
    (void)c;
    int64_t now = (int64_t)uv_now(rn->px->loop);
    int ok = r != NULL && r->type == REDIS_REPLY_ARRAY && (int)r->elements == b->n;
    if (r != NULL && r->type == REDIS_REPLY_ERROR) lp_logf("renewal failed: %s", r->str);
    for (int i = 0; i < b->n; i++) {
        rentry *e = b->e[i];
        rn->in_flight--;
        if (rn->closing) { free(e); continue; }
        if (!ok) {
            rn->px->m.renew_failed++;
            e->next_ms = now + TICK_MS;   /* no answer: try again soon */
            heap_push(rn, e);
        } else if (r->element[i]->type == REDIS_REPLY_INTEGER && r->element[i]->integer == 1) {
            rn->px->m.renew_ok++;
            e->next_ms = now + (e->ttl_ms / 3 > 0 ? e->ttl_ms / 3 : 1);
            heap_push(rn, e);
        } else {
            rn->px->m.renew_lost++;
            free(e);   /* the lease is no longer this acquire's */
        }
    }
    free(b);
}

/* Sends one batch of locks of one database. */
static void send_batch(lp_renewer *rn, batch *b, int db) {
    rn->in_flight += (size_t)b->n;
    lp_upconn *up = connection(rn);
    if (up == NULL) {
        batch_reply(NULL, NULL, b);   /* out of memory: try again at the next tick */
        return;
    }
    if (db != rn->cur_db) {
        lp_str sel = {0};
        resp_enc_head(&sel, 2);
        resp_enc_cstr(&sel, "SELECT");
        resp_enc_ll(&sel, db);
        lp_upconn_send(up, sel.p, sel.len, select_reply, NULL);
        lp_str_free(&sel);
        rn->cur_db = db;
    }
    lp_str cmd = {0};
    resp_enc_head(&cmd, 3 + 4 * b->n);
    resp_enc_cstr(&cmd, "EVAL");
    resp_enc_cstr(&cmd, lp_lua_renew);
    resp_enc_ll(&cmd, 2 * b->n);
    lp_str rec = {0};
    for (int i = 0; i < b->n; i++) {
        resp_enc_arg(&cmd, b->e[i]->key, b->e[i]->keylen);
        rec.len = 0;
        lock_record_key(&rec, b->e[i]->key, b->e[i]->keylen);
        resp_enc_arg(&cmd, rec.p, rec.len);
    }
    for (int i = 0; i < b->n; i++) {
        resp_enc_cstr(&cmd, b->e[i]->id);
        resp_enc_ll(&cmd, b->e[i]->ttl_ms);
    }
    lp_str_free(&rec);
    if (lp_upconn_send(up, cmd.p, cmd.len, batch_reply, b) < 0) batch_reply(up, NULL, b);
    lp_str_free(&cmd);
}

static void tick(uv_timer_t *t) {
    lp_renewer *rn = t->data;
    int64_t now = (int64_t)uv_now(rn->px->loop);
    batch *open[16] = {0};   /* one batch per database seen in this tick (0..15), others go alone */
    while (rn->n > 0 && rn->heap[0]->next_ms <= now) {
        rentry *e = heap_pop(rn);
        if (!still_wanted(rn, e)) { free(e); continue; }
        long long held = now - e->started_ms;
        if (e->max_hold_ms > 0 && held >= e->max_hold_ms) {
            char d[96];
            snprintf(d, sizeof(d), "held %lld ms, max-hold=%lld: no longer renewed", held, e->max_hold_ms);
            log_hold(rn, e, "max_hold", d, held);
            free(e);
            continue;
        }
        if (held > LONG_HOLD_MS && !e->long_logged) {
            e->long_logged = 1;
            log_hold(rn, e, "long_hold", "held past 10 minutes, still renewed while the holder is connected", held);
        }
        int slot = e->db >= 0 && e->db < 16 ? e->db : -1;
        batch *b = slot >= 0 ? open[slot] : NULL;
        if (b == NULL) {
            b = calloc(1, sizeof(*b));
            if (b == NULL) abort();
            b->rn = rn;
            if (slot >= 0) open[slot] = b;
        }
        b->e[b->n++] = e;
        if (b->n == BATCH_MAX || slot < 0) {
            send_batch(rn, b, e->db);
            if (slot >= 0) open[slot] = NULL;
        }
    }
    for (int db = 0; db < 16; db++)
        if (open[db] != NULL) send_batch(rn, open[db], db);
}

lp_renewer *lp_renewer_new(proxy *px) {
    lp_renewer *rn = calloc(1, sizeof(*rn));
    if (rn == NULL) return NULL;
    rn->px = px;
    uv_timer_init(px->loop, &rn->timer);
    rn->timer.data = rn;
    uv_timer_start(&rn->timer, tick, TICK_MS, TICK_MS);
    uv_unref((uv_handle_t *)&rn->timer);
    return rn;
}

void lp_renewer_add(void *ud, const lock_renewal *r) {
    lp_renewer *rn = ud;
    if (rn == NULL || rn->closing || r->ttl_ms <= 0) return;
    rentry *e = calloc(1, sizeof(*e) + r->keylen + 1);
    if (e == NULL) return;
    int64_t now = (int64_t)uv_now(rn->px->loop);
    e->started_ms = now;
    e->next_ms = now + (r->ttl_ms / 3 > 0 ? r->ttl_ms / 3 : 1);
    e->conn_id = r->conn_id;
    e->db = r->db;
    e->ttl_ms = r->ttl_ms;
    e->max_hold_ms = r->max_hold_ms;
    snprintf(e->id, sizeof(e->id), "%s", r->id);
    snprintf(e->rule, sizeof(e->rule), "%s", r->rule ? r->rule : "");
    snprintf(e->client, sizeof(e->client), "%s", r->client ? r->client : "");
    memcpy(e->key, r->key, r->keylen);
    e->keylen = r->keylen;
    heap_push(rn, e);
}

size_t lp_renewer_count(const lp_renewer *rn) { return rn ? rn->n + rn->in_flight : 0; }

static void timer_closed(uv_handle_t *h) {
    lp_renewer *rn = h->data;
    while (rn->n > 0) free(heap_pop(rn));
    free(rn->heap);
    free(rn);
}

void lp_renewer_reconnect(lp_renewer *rn) {
    if (rn == NULL || rn->closing) return;
    lp_upconn *up = rn->up;
    rn->up = NULL;
    lp_upconn_close(up);
}

void lp_renewer_close(lp_renewer *rn) {
    if (rn == NULL || rn->closing) return;
    rn->closing = 1;
    lp_upconn_close(rn->up);   /* batches in flight get their callback now and free entries */
    rn->up = NULL;
    uv_close((uv_handle_t *)&rn->timer, timer_closed);
}
