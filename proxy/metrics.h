/* The proxy's counters, and their rendering in the Prometheus text format (version 0.0.4).
 *
 * Threads: an lp_metrics belongs to the loop thread, which alone updates it, with plain
 * increments (no atomics, no lock: nothing on the request path pays for the admin
 * listener). Other threads never read it; they read an lp_metrics_snap, a copy the loop
 * takes (lp_metrics_snap_take) and hands over under a mutex (proxy/admin.c). No libuv, no
 * sockets: the rendering can be tested on its own. */
#ifndef LP_METRICS_H
#define LP_METRICS_H

#include <stddef.h>
#include <stdint.h>

/* Latency histogram: bucket upper bounds in nanoseconds (lp_hist_bounds_ns, rendered in
 * seconds), plus +Inf. Counts are per bucket here and cumulative when rendered. */
#define LP_HIST_NB 15
extern const uint64_t lp_hist_bounds_ns[LP_HIST_NB];

typedef struct lp_hist {
    uint64_t bucket[LP_HIST_NB + 1];   /* the last one: above every bound */
    uint64_t count;
    uint64_t sum_ns;
} lp_hist;

static inline void lp_hist_observe(lp_hist *h, uint64_t ns) {
    int i = 0;
    while (i < LP_HIST_NB && ns > lp_hist_bounds_ns[i]) i++;
    h->bucket[i]++;
    h->count++;
    h->sum_ns += ns;
}

/* Audit events per (rule, event): how many occurred, and how many of those the rate limiter
 * kept out of the log (they are in the log only as a "suppressed" count). */
typedef struct lp_audit_count {
    char *rule;                 /* the rule's prefix, binary, owned (a copy) */
    size_t rule_len;
    char *event;                /* owned */
    uint64_t total, suppressed;
    uint64_t hash;
} lp_audit_count;

/* At most this many (rule, event) pairs are counted apart; events of further pairs are
 * counted in audit_untracked only. */
#define LP_AUDIT_COUNTS_MAX 4096

typedef struct lp_audit_counts {
    lp_audit_count *v;          /* open addressing, cap slots (a power of two) */
    size_t cap, n;
    uint64_t untracked;
} lp_audit_counts;

typedef struct lp_metrics {
    uint64_t accepted;                  /* client connections accepted */
    uint64_t refused_maxclients;        /* accepted, then closed: maxclients reached */
    uint64_t refused_accept;            /* accept() failed (EMFILE, ...) */
    uint64_t requests;                  /* request frames read from clients */
    uint64_t client_in, client_out;     /* bytes read from / written to clients */
    uint64_t up_in, up_out;             /* bytes read from / written to the upstream */
    uint64_t up_err_connect;            /* a client's upstream connect failed or timed out */
    uint64_t up_err_timeout;            /* upstream-timeout ended a session */
    uint64_t up_err_closed;             /* the upstream closed or failed with replies due */
    uint64_t up_err_protocol;           /* the upstream sent bytes that are not RESP */
    lp_hist connect_lat;                /* client's upstream connect, start to established */
    lp_hist request_lat;                /* see README: idle connection to all replies out */
    uint64_t lock_rewritten, lock_refused, lock_forwarded;   /* lock commands decided */
    uint64_t renew_ok;                  /* lock renewals Redis applied */
    uint64_t renew_lost;                /* the lease was no longer that acquire's */
    uint64_t renew_failed;              /* no answer (connection, error): retried */
    lp_audit_counts audit;
} lp_metrics;

/* Counts one audit event (suppressed: the rate limiter kept it out of the log). Never
 * fails: without memory the event is counted as untracked. */
void lp_metrics_audit(lp_metrics *m, const char *rule, size_t rule_len, const char *event,
                      int suppressed);
/* Frees the audit table. */
void lp_metrics_free(lp_metrics *m);

/* A copy of the counters plus the gauges the loop reads when it takes it. */
typedef struct lp_metrics_snap {
    lp_metrics m;                       /* m.audit.v: a packed copy of n entries, owned */
    uint64_t connections;               /* client connections open */
    uint64_t leases_live;               /* leases in the proxy's cache, not yet ended */
    uint64_t leases_cached;             /* ... including ended ones kept for late releases */
    uint64_t lease_bytes;               /* the cache's bytes (lease-cache-bytes is its budget) */
    uint64_t lease_budget;
    uint64_t lease_evicted_live;        /* evicted by the budget before their deadline */
    uint64_t lease_evicted_ended;
    uint64_t renewing;                  /* locks being renewed */
    uint64_t audit_dropped;             /* audit lines dropped by the writer */
    uint64_t rules;                     /* lock rules loaded */
    int upstream_up;                    /* the last health probe got its answer */
    int64_t taken_ms;                   /* monotonic clock, when taken */
} lp_metrics_snap;

/* Copies m into s (replacing what s held; the gauges are the caller's to fill in). Returns
 * 0, or -1 when out of memory (s then has no audit entries). */
int lp_metrics_snap_take(lp_metrics_snap *s, const lp_metrics *m);
/* Copies one snapshot into another (for the reader, to render outside the lock). */
int lp_metrics_snap_copy(lp_metrics_snap *dst, const lp_metrics_snap *src);
void lp_metrics_snap_free(lp_metrics_snap *s);

/* Renders s in the Prometheus text format into a malloc'd, NUL-terminated string (*len: its
 * length). NULL when out of memory. */
char *lp_metrics_render(const lp_metrics_snap *s, const char *version, size_t *len);

#endif
