/* The proxy's counters and their Prometheus text rendering: see metrics.h. */
#include "proxy/metrics.h"
#include "common/hash.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* 100 µs to 10 s: a request through the proxy on loopback takes tens of µs to a few ms; an
 * upstream connect about the same. */
const uint64_t lp_hist_bounds_ns[LP_HIST_NB] = {
    100000, 250000, 500000, 1000000, 2500000, 5000000, 10000000, 25000000, 50000000,
    100000000, 250000000, 500000000, 1000000000, 2500000000ULL, 10000000000ULL,
};

/* ---- audit counts ---- */

static uint64_t audit_hash(const char *rule, size_t rule_len, const char *event) {
    uint64_t h = lp_fnv1a(LP_FNV1A_OFFSET, rule, rule_len);
    h = lp_fnv1a(h, "", 1);
    return lp_fnv1a(h, event, strlen(event));
}

/* Doubles the table (or makes the first one). Returns 0 or -1. */
static int audit_grow(lp_audit_counts *t) {
    size_t ncap = t->cap ? t->cap * 2 : 64;
    lp_audit_count *nv = calloc(ncap, sizeof(*nv));
    if (nv == NULL) return -1;
    for (size_t i = 0; i < t->cap; i++) {
        if (t->v[i].event == NULL) continue;
        size_t j = t->v[i].hash & (ncap - 1);
        while (nv[j].event != NULL) j = (j + 1) & (ncap - 1);
        nv[j] = t->v[i];
    }
    free(t->v);
    t->v = nv;
    t->cap = ncap;
    return 0;
}

void lp_metrics_audit(lp_metrics *m, const char *rule, size_t rule_len, const char *event,
                      int suppressed) {
    lp_audit_counts *t = &m->audit;
    if (rule == NULL) rule = "", rule_len = 0;
    if (event == NULL) event = "";
    uint64_t h = audit_hash(rule, rule_len, event);
    if (t->cap > 0) {
        for (size_t j = h & (t->cap - 1); t->v[j].event != NULL; j = (j + 1) & (t->cap - 1)) {
            lp_audit_count *c = &t->v[j];
            if (c->hash == h && c->rule_len == rule_len && memcmp(c->rule, rule, rule_len) == 0 &&
                strcmp(c->event, event) == 0) {
                c->total++;
                c->suppressed += suppressed != 0;
                return;
            }
        }
    }
    if (t->n >= LP_AUDIT_COUNTS_MAX || ((t->n + 1) * 2 > t->cap && audit_grow(t) < 0)) {
        t->untracked++;
        return;
    }
    char *r = malloc(rule_len + 1), *e = strdup(event);
    if (r == NULL || e == NULL) {
        free(r);
        free(e);
        t->untracked++;
        return;
    }
    memcpy(r, rule, rule_len);
    r[rule_len] = '\0';
    size_t j = h & (t->cap - 1);
    while (t->v[j].event != NULL) j = (j + 1) & (t->cap - 1);
    t->v[j] = (lp_audit_count){r, rule_len, e, 1, suppressed != 0, h};
    t->n++;
}

void lp_metrics_free(lp_metrics *m) {
    for (size_t i = 0; i < m->audit.cap; i++) {
        free(m->audit.v[i].rule);
        free(m->audit.v[i].event);
    }
    free(m->audit.v);
    memset(&m->audit, 0, sizeof(m->audit));
}

/* ---- snapshots ---- */

void lp_metrics_snap_free(lp_metrics_snap *s) {
    lp_metrics_free(&s->m);
}

/* Copies the n used entries of src (packed or hashed, cap slots) into a packed array. */
static int copy_counts(lp_audit_counts *dst, const lp_audit_counts *src) {
    lp_audit_count *v = src->n ? calloc(src->n, sizeof(*v)) : NULL;
    if (src->n && v == NULL) return -1;
    size_t k = 0;
    for (size_t i = 0; i < src->cap && k < src->n; i++) {
        const lp_audit_count *c = &src->v[i];
        if (c->event == NULL) continue;
        v[k] = *c;
        v[k].rule = malloc(c->rule_len + 1);
        v[k].event = strdup(c->event);
        if (v[k].rule == NULL || v[k].event == NULL) {
            lp_audit_counts part = {v, k + 1, k + 1, 0};
            lp_metrics part_m = {.audit = part};
            lp_metrics_free(&part_m);
            return -1;
        }
        memcpy(v[k].rule, c->rule, c->rule_len + 1);
        k++;
    }
    dst->v = v;
    dst->cap = dst->n = k;
    dst->untracked = src->untracked;
    return 0;
}

int lp_metrics_snap_take(lp_metrics_snap *s, const lp_metrics *m) {
    lp_metrics_free(&s->m);
    s->m = *m;
    memset(&s->m.audit, 0, sizeof(s->m.audit));
    s->m.audit.untracked = m->audit.untracked;
    return copy_counts(&s->m.audit, &m->audit);
}

int lp_metrics_snap_copy(lp_metrics_snap *dst, const lp_metrics_snap *src) {
    lp_metrics_free(&dst->m);
    *dst = *src;
    memset(&dst->m.audit, 0, sizeof(dst->m.audit));
    dst->m.audit.untracked = src->m.audit.untracked;
    return copy_counts(&dst->m.audit, &src->m.audit);
}

/* ---- rendering ---- */

typedef struct out {
    char *p;
    size_t len, cap;
    int oom;
} out;

static void put(out *o, const char *s, size_t n) {
    if (o->oom) return;
    if (o->len + n + 1 > o->cap) {
        size_t ncap = o->cap ? o->cap : 4096;
        while (ncap < o->len + n + 1) ncap *= 2;
        char *np = realloc(o->p, ncap);
        if (np == NULL) { o->oom = 1; return; }
        o->p = np;
        o->cap = ncap;
    }
    memcpy(o->p + o->len, s, n);
    o->len += n;
    o->p[o->len] = '\0';
}

static void putf(out *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void putf(out *o, const char *fmt, ...) {
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    if (n < 0) return;
    put(o, buf, (size_t)n < sizeof(buf) ? (size_t)n : sizeof(buf) - 1);
}

/* Length of the valid UTF-8 sequence at p (at most n bytes), or 0 when it is not one. */
static size_t utf8_len(const unsigned char *p, size_t n) {
    size_t len;
    unsigned min;
    if (p[0] < 0x80) return 1;
    if (p[0] >= 0xc2 && p[0] <= 0xdf) len = 2, min = 0x80;
    else if (p[0] >= 0xe0 && p[0] <= 0xef) len = 3, min = 0x800;
    else if (p[0] >= 0xf0 && p[0] <= 0xf4) len = 4, min = 0x10000;
    else return 0;
    if (len > n) return 0;
    unsigned cp = p[0] & (0x7f >> len);
    for (size_t i = 1; i < len; i++) {
        if ((p[i] & 0xc0) != 0x80) return 0;
        cp = (cp << 6) | (p[i] & 0x3f);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return 0;
    return len;
}

/* A label value: the format's escapes (\\, \", \n); since label values must be UTF-8 and a
 * rule prefix is any bytes, other control bytes and bytes that are not UTF-8 are written as
 * the four characters \xHH (its backslash escaped, so the value reads "\xHH"). */
static void put_label(out *o, const char *s, size_t n) {
    const unsigned char *p = (const unsigned char *)s;
    size_t i = 0;
    while (i < n) {
        size_t l = utf8_len(p + i, n - i);
        if (p[i] == '\\') put(o, "\\\\", 2);
        else if (p[i] == '"') put(o, "\\\"", 2);
        else if (p[i] == '\n') put(o, "\\n", 2);
        else if (l == 0 || p[i] < 0x20 || p[i] == 0x7f) putf(o, "\\\\x%02x", p[i]);
        else { put(o, s + i, l); i += l; continue; }
        i++;
    }
}

static void family(out *o, const char *name, const char *type, const char *help) {
    putf(o, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void sample(out *o, const char *name, const char *labels, uint64_t v) {
    putf(o, "%s%s%s%s %llu\n", name, labels ? "{" : "", labels ? labels : "", labels ? "}" : "",
         (unsigned long long)v);
}

static void histogram(out *o, const char *name, const char *help, const lp_hist *h) {
    family(o, name, "histogram", help);
    uint64_t cum = 0;
    for (int i = 0; i < LP_HIST_NB; i++) {
        cum += h->bucket[i];
        putf(o, "%s_bucket{le=\"%g\"} %llu\n", name, (double)lp_hist_bounds_ns[i] / 1e9,
             (unsigned long long)cum);
    }
    cum += h->bucket[LP_HIST_NB];
    putf(o, "%s_bucket{le=\"+Inf\"} %llu\n", name, (unsigned long long)cum);
    putf(o, "%s_sum %.9f\n", name, (double)h->sum_ns / 1e9);
    putf(o, "%s_count %llu\n", name, (unsigned long long)h->count);
}

static void audit_family(out *o, const lp_metrics_snap *s, const char *name, const char *help, int suppressed) {
    family(o, name, "counter", help);
    for (size_t i = 0; i < s->m.audit.n; i++) {
        const lp_audit_count *c = &s->m.audit.v[i];
        put(o, name, strlen(name));
        put(o, "{rule=\"", 7);
        put_label(o, c->rule, c->rule_len);
        put(o, "\",event=\"", 9);
        put_label(o, c->event, strlen(c->event));
        putf(o, "\"} %llu\n", (unsigned long long)(suppressed ? c->suppressed : c->total));
    }
}

char *lp_metrics_render(const lp_metrics_snap *s, const char *version, size_t *len) {
    out o = {0};
    const lp_metrics *m = &s->m;

    family(&o, "lockproxy_build_info", "gauge", "The running lockproxy's version; always 1.");
    put(&o, "lockproxy_build_info{version=\"", 30);
    put_label(&o, version, strlen(version));
    put(&o, "\"} 1\n", 5);

    family(&o, "lockproxy_connections", "gauge", "Client connections open now.");
    sample(&o, "lockproxy_connections", NULL, s->connections);
    family(&o, "lockproxy_connections_accepted_total", "counter", "Client connections accepted.");
    sample(&o, "lockproxy_connections_accepted_total", NULL, m->accepted);
    family(&o, "lockproxy_connections_refused_total", "counter",
           "Client connections refused: maxclients reached, or accept() failed.");
    sample(&o, "lockproxy_connections_refused_total", "reason=\"maxclients\"", m->refused_maxclients);
    sample(&o, "lockproxy_connections_refused_total", "reason=\"accept_error\"", m->refused_accept);

    family(&o, "lockproxy_requests_total", "counter", "Request frames read from clients.");
    sample(&o, "lockproxy_requests_total", NULL, m->requests);
    family(&o, "lockproxy_bytes_total", "counter",
           "Bytes the proxy read from (in) and wrote to (out) clients and the upstream.");
    sample(&o, "lockproxy_bytes_total", "side=\"client\",direction=\"in\"", m->client_in);
    sample(&o, "lockproxy_bytes_total", "side=\"client\",direction=\"out\"", m->client_out);
    sample(&o, "lockproxy_bytes_total", "side=\"upstream\",direction=\"in\"", m->up_in);
    sample(&o, "lockproxy_bytes_total", "side=\"upstream\",direction=\"out\"", m->up_out);

    family(&o, "lockproxy_upstream_errors_total", "counter",
           "Upstream failures seen by client sessions, by kind.");
    sample(&o, "lockproxy_upstream_errors_total", "kind=\"connect\"", m->up_err_connect);
    sample(&o, "lockproxy_upstream_errors_total", "kind=\"timeout\"", m->up_err_timeout);
    sample(&o, "lockproxy_upstream_errors_total", "kind=\"closed\"", m->up_err_closed);
    sample(&o, "lockproxy_upstream_errors_total", "kind=\"protocol\"", m->up_err_protocol);
    family(&o, "lockproxy_upstream_up", "gauge", "1 when the upstream answered the last health PING.");
    sample(&o, "lockproxy_upstream_up", NULL, (uint64_t)(s->upstream_up != 0));
    histogram(&o, "lockproxy_upstream_connect_seconds",
              "Time to establish a client's upstream connection.", &m->connect_lat);
    histogram(&o, "lockproxy_request_duration_seconds",
              "From reading a request on an idle connection to forwarding its last pending reply.",
              &m->request_lat);

    family(&o, "lockproxy_lock_commands_total", "counter",
           "Commands on lock keys decided by the policy, by what was done.");
    sample(&o, "lockproxy_lock_commands_total", "action=\"rewritten\"", m->lock_rewritten);
    sample(&o, "lockproxy_lock_commands_total", "action=\"refused\"", m->lock_refused);
    sample(&o, "lockproxy_lock_commands_total", "action=\"forwarded\"", m->lock_forwarded);

    audit_family(&o, s, "lockproxy_audit_events_total",
                 "Audit events by rule and event, each counted, rate-limited ones included.", 0);
    audit_family(&o, s, "lockproxy_audit_events_suppressed_total",
                 "Of those, the events the rate limiter kept out of the log (counted in a later line's \"suppressed\").",
                 1);
    family(&o, "lockproxy_audit_events_untracked_total", "counter",
           "Audit events of (rule, event) pairs past the first 4096, counted only here.");
    sample(&o, "lockproxy_audit_events_untracked_total", NULL, m->audit.untracked);
    family(&o, "lockproxy_audit_log_dropped_lines_total", "counter",
           "Audit log lines dropped because the writer's queue was full or a write failed.");
    sample(&o, "lockproxy_audit_log_dropped_lines_total", NULL, s->audit_dropped);

    family(&o, "lockproxy_lock_rules", "gauge", "Lock rules loaded.");
    sample(&o, "lockproxy_lock_rules", NULL, s->rules);
    family(&o, "lockproxy_leases", "gauge", "Leases acquired through this proxy that have not ended.");
    sample(&o, "lockproxy_leases", NULL, s->leases_live);
    family(&o, "lockproxy_lease_cache_entries", "gauge",
           "Leases in the proxy's cache, ended ones kept for late-release detection included.");
    sample(&o, "lockproxy_lease_cache_entries", NULL, s->leases_cached);
    family(&o, "lockproxy_lease_cache_bytes", "gauge", "Bytes the lease cache holds.");
    sample(&o, "lockproxy_lease_cache_bytes", NULL, s->lease_bytes);
    family(&o, "lockproxy_lease_cache_budget_bytes", "gauge", "The lease cache's budget (lease-cache-bytes).");
    sample(&o, "lockproxy_lease_cache_budget_bytes", NULL, s->lease_budget);
    family(&o, "lockproxy_lease_cache_evictions_total", "counter",
           "Leases the budget evicted from the cache: live (before their deadline; the lease record in Redis still decides) or ended.");
    sample(&o, "lockproxy_lease_cache_evictions_total", "state=\"live\"", s->lease_evicted_live);
    sample(&o, "lockproxy_lease_cache_evictions_total", "state=\"ended\"", s->lease_evicted_ended);
    family(&o, "lockproxy_renewing_locks", "gauge", "Locks the proxy renews now.");
    sample(&o, "lockproxy_renewing_locks", NULL, s->renewing);
    family(&o, "lockproxy_renewals_total", "counter",
           "Lock renewals: ok (extended), lost (no longer that holder's lease), failed (no answer; retried).");
    sample(&o, "lockproxy_renewals_total", "result=\"ok\"", m->renew_ok);
    sample(&o, "lockproxy_renewals_total", "result=\"lost\"", m->renew_lost);
    sample(&o, "lockproxy_renewals_total", "result=\"failed\"", m->renew_failed);

    if (o.oom) {
        free(o.p);
        return NULL;
    }
    *len = o.len;
    return o.p;
}
