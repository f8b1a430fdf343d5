/* lockproxy report: true counts from audit logs. See proxy/report.h.
 *
 * Counting. A line stands for 1 event plus its "suppressed" count (identical events the rate
 * limiter left out before it), except a rate-limited summary (detail "rate-limited", or the
 * event "audit_suppressed"), which stands for its "suppressed" count alone. "log_dropped"
 * lines are no event: their detail says how many lines the writer lost.
 * Client IPs are the "client" field without its port ("10.0.0.5:41000" and the summaries'
 * "10.0.0.5" are one client; "[::1]:5000" is "::1"). Hold times come from "held_ms" of the
 * lines that carry one (the proxy writes it on long_hold and max_hold, when it stops renewing
 * a lock); suppressed occurrences carry none, so percentiles are over the logged lines. */
#include "proxy/report.h"
#include "common/hash.h"
#include "common/tokens.h"

#include <errno.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

#define TOP_N 10
#define MALFORMED_SHOWN 10
#define LINE_MAX_BYTES (1 << 20)    /* longer lines are malformed (the proxy writes < 4 KiB) */

/* ---- a growable vector of hold times ---- */

typedef struct llvec {
    long long *v;
    size_t n, cap;
} llvec;

static int llvec_push(llvec *h, long long x)
{
    if (h->n == h->cap) {
        size_t cap = h->cap ? h->cap * 2 : 16;
        long long *nv = realloc(h->v, cap * sizeof *nv);
        if (nv == NULL) return -1;
        h->v = nv;
        h->cap = cap;
    }
    h->v[h->n++] = x;
    return 0;
}

static int cmp_ll(const void *a, const void *b)
{
    long long x = *(const long long *)a, y = *(const long long *)b;
    return x < y ? -1 : x > y;
}

/* Nearest-rank percentile p (0 < p <= 100) of the sorted v[0..n), n > 0. */
static long long pct(const long long *v, size_t n, int p)
{
    size_t rank = ((size_t)p * n + 99) / 100;
    return v[rank > 0 ? rank - 1 : 0];
}

/* ---- a table of named counters ---- */

typedef struct item {
    struct item *next;          /* hash chain */
    char *name;                 /* NUL-terminated copy; len bytes may include NULs */
    size_t len;
    uint64_t count;             /* events */
    uint64_t refused;           /* releases refused (or, in audit mode, that would be) */
    /* keys: their rule, the first client IP seen, and whether any other IP was seen */
    char *rule;
    char *ip;
    size_t iplen;
    int many_ips;
    llvec held;                 /* rules: held_ms values */
} item;

typedef struct table {
    item **b;
    size_t nb, n;
} table;

static void table_free(table *t)
{
    for (size_t i = 0; i < t->nb; i++)
        for (item *it = t->b[i], *nx; it; it = nx) {
            nx = it->next;
            free(it->name);
            free(it->rule);
            free(it->ip);
            free(it->held.v);
            free(it);
        }
    free(t->b);
    memset(t, 0, sizeof *t);
}

static int table_grow(table *t)
{
    size_t nb = t->nb ? t->nb * 2 : 64;
    item **b = calloc(nb, sizeof *b);
    if (b == NULL) return -1;
    for (size_t i = 0; i < t->nb; i++)
        for (item *it = t->b[i], *nx; it; it = nx) {
            nx = it->next;
            size_t h = lp_fnv1a(LP_FNV1A_OFFSET, it->name, it->len) & (nb - 1);
            it->next = b[h];
            b[h] = it;
        }
    free(t->b);
    t->b = b;
    t->nb = nb;
    return 0;
}

/* The item named name[0..len), created (zeroed) when new. NULL when out of memory. */
static item *table_get(table *t, const char *name, size_t len)
{
    if (t->nb == 0 && table_grow(t) < 0) return NULL;
    size_t h = lp_fnv1a(LP_FNV1A_OFFSET, name, len) & (t->nb - 1);
    for (item *it = t->b[h]; it; it = it->next)
        if (it->len == len && memcmp(it->name, name, len) == 0) return it;
    if (t->n + 1 > t->nb && table_grow(t) == 0) h = lp_fnv1a(LP_FNV1A_OFFSET, name, len) & (t->nb - 1);
    item *it = calloc(1, sizeof *it);
    if (it == NULL || (it->name = malloc(len + 1)) == NULL) {
        free(it);
        return NULL;
    }
    memcpy(it->name, name, len);
    it->name[len] = '\0';
    it->len = len;
    it->next = t->b[h];
    t->b[h] = it;
    t->n++;
    return it;
}

/* The item named "a<0x1f>b" (a pair, e.g. rule and event). */
static item *table_get2(table *t, const char *a, size_t alen, const char *b, size_t blen)
{
    char stackbuf[1024], *buf = stackbuf;
    size_t len = alen + 1 + blen;
    if (len > sizeof stackbuf && (buf = malloc(len)) == NULL) return NULL;
    memcpy(buf, a, alen);
    buf[alen] = '\x1f';
    memcpy(buf + alen + 1, b, blen);
    item *it = table_get(t, buf, len);
    if (buf != stackbuf) free(buf);
    return it;
}

/* The items of t sorted by count (highest first), then name. The caller frees the array. */
static int cmp_items(const void *a, const void *b)
{
    const item *x = *(item *const *)a, *y = *(item *const *)b;
    if (x->count != y->count) return x->count > y->count ? -1 : 1;
    size_t m = x->len < y->len ? x->len : y->len;
    int c = memcmp(x->name, y->name, m);
    return c ? c : (x->len > y->len) - (x->len < y->len);
}

static item **table_sorted(const table *t)
{
    item **v = malloc((t->n ? t->n : 1) * sizeof *v);
    if (v == NULL) return NULL;
    size_t k = 0;
    for (size_t i = 0; i < t->nb; i++)
        for (item *it = t->b[i]; it; it = it->next) v[k++] = it;
    qsort(v, k, sizeof *v, cmp_items);
    return v;
}

/* ---- the report's state ---- */

typedef struct report {
    long long since_ms;         /* -1: every line */
    uint64_t files, lines, malformed, before_since, nevents, suppressed, dropped, unknown_identity;
    char malformed_at[MALFORMED_SHOWN][300];
    char first_ts[32], last_ts[32];
    table events;               /* event */
    table ev_action;            /* event, action */
    table rules;                /* rule: count, held */
    table rule_event;           /* rule, event */
    table rule_action;          /* rule, "event/action" counts for advice */
    table keys;                 /* key */
    table ips;                  /* client IP */
    table foreign;              /* client IP, key: foreign releases */
    llvec held;                 /* every held_ms */
    int oom;
} report;

static void report_free(report *r)
{
    table *ts[] = {&r->events, &r->ev_action, &r->rules, &r->rule_event, &r->rule_action,
                   &r->keys, &r->ips, &r->foreign};
    for (size_t i = 0; i < sizeof ts / sizeof ts[0]; i++) table_free(ts[i]);
    free(r->held.v);
}

/* "2026-11-23T10:00:00.123Z" as ms since the epoch, or -1. */
static long long parse_ts(const char *s)
{
    struct tm tm;
    int ms = 0, n = 0;
    memset(&tm, 0, sizeof tm);
    if (sscanf(s, "%4d-%2d-%2dT%2d:%2d:%2d%n", &tm.tm_year, &tm.tm_mon, &tm.tm_mday, &tm.tm_hour,
               &tm.tm_min, &tm.tm_sec, &n) != 6 || n != 19)
        return -1;
    const char *p = s + 19;
    if (*p == '.') {
        int digits = 0;
        for (p++; *p >= '0' && *p <= '9'; p++, digits++)
            if (digits < 3) ms = ms * 10 + (*p - '0');
        while (digits > 0 && digits < 3) ms *= 10, digits++;
    }
    if (*p != 'Z' || p[1] != '\0') return -1;
    tm.tm_year -= 1900;
    tm.tm_mon -= 1;
    time_t t = timegm(&tm);
    if (t == (time_t)-1) return -1;
    return (long long)t * 1000 + ms;
}

/* The IP of a "client" field: without ":port", without IPv6 brackets. */
static void client_ip(const char *c, size_t len, const char **ip, size_t *iplen)
{
    if (len > 0 && c[0] == '[') {
        const char *close = memchr(c, ']', len);
        if (close != NULL) {
            *ip = c + 1;
            *iplen = (size_t)(close - c - 1);
            return;
        }
    }
    const char *colon = memchr(c, ':', len);
    if (colon != NULL && memchr(colon + 1, ':', len - (size_t)(colon + 1 - c)) == NULL) len = (size_t)(colon - c);
    *ip = c;
    *iplen = len;
}

static const char *str_field(json_t *o, const char *name, size_t *len)
{
    json_t *v = json_object_get(o, name);
    if (!json_is_string(v)) {
        *len = 0;
        return NULL;
    }
    *len = json_string_length(v);
    return json_string_value(v);
}

static int is_release_refusal(const char *ev)
{
    return strcmp(ev, "foreign_release") == 0 || strcmp(ev, "late_release") == 0;
}

static void malformed(report *r, const char *file, uint64_t line, const char *why)
{
    if (r->malformed < MALFORMED_SHOWN)
        snprintf(r->malformed_at[r->malformed], sizeof r->malformed_at[0], "%s:%llu: %s", file,
                 (unsigned long long)line, why);
    r->malformed++;
}

#define NEED(x) do { if ((x) == NULL) { r->oom = 1; return; } } while (0)

/* Counts one line of file (line number lineno). */
static void take_line(report *r, const char *file, uint64_t lineno, const char *text, size_t len)
{
    json_error_t jerr;
    while (len > 0 && (text[len - 1] == '\n' || text[len - 1] == '\r')) len--;
    size_t i = 0;
    while (i < len && (text[i] == ' ' || text[i] == '\t')) i++;
    if (i == len) return;    /* blank lines are no lines */
    r->lines++;
    json_t *o = json_loadb(text, len, JSON_ALLOW_NUL | JSON_REJECT_DUPLICATES, &jerr);
    if (o == NULL || !json_is_object(o)) {
        malformed(r, file, lineno, o == NULL ? jerr.text : "not a JSON object");
        json_decref(o);
        return;
    }
    size_t evlen, tslen, rulelen, keylen, clen, actlen, detlen;
    const char *ev = str_field(o, "event", &evlen), *ts = str_field(o, "ts", &tslen);
    const char *rule = str_field(o, "rule", &rulelen), *key = str_field(o, "key", &keylen);
    const char *client = str_field(o, "client", &clen), *action = str_field(o, "action", &actlen);
    const char *detail = str_field(o, "detail", &detlen);
    json_t *sup = json_object_get(o, "suppressed"), *held = json_object_get(o, "held_ms");
    long long t = ts ? parse_ts(ts) : -1;
    if (ev == NULL || evlen == 0 || memchr(ev, '\0', evlen) != NULL || t < 0 ||
        (sup != NULL && (!json_is_integer(sup) || json_integer_value(sup) < 0)) ||
        (held != NULL && (!json_is_integer(held) || json_integer_value(held) < 0))) {
        malformed(r, file, lineno, ev == NULL || evlen == 0 ? "no \"event\"" :
                  t < 0 ? "no valid \"ts\"" : "bad \"suppressed\" or \"held_ms\"");
        json_decref(o);
        return;
    }
    if (r->since_ms >= 0 && t < r->since_ms) {
        r->before_since++;
        json_decref(o);
        return;
    }
    if (r->first_ts[0] == '\0' || strcmp(ts, r->first_ts) < 0) snprintf(r->first_ts, sizeof r->first_ts, "%s", ts);
    if (strcmp(ts, r->last_ts) > 0) snprintf(r->last_ts, sizeof r->last_ts, "%s", ts);

    if (strcmp(ev, "log_dropped") == 0) {
        r->dropped += detail ? strtoull(detail, NULL, 10) : 0;
        json_decref(o);
        return;
    }
    uint64_t s = sup ? (uint64_t)json_integer_value(sup) : 0;
    int summary = (detail != NULL && strcmp(detail, "rate-limited") == 0) || strcmp(ev, "audit_suppressed") == 0;
    uint64_t n = (summary ? 0 : 1) + s;
    r->nevents += n;
    r->suppressed += s;
    if (strcmp(ev, "audit_suppressed") == 0) {
        r->unknown_identity += n;
        json_decref(o);
        return;
    }
    if (!action) action = "", actlen = 0;
    if (!rule) rule = "", rulelen = 0;
    item *it;
    NEED(it = table_get(&r->events, ev, evlen));
    it->count += n;
    NEED(it = table_get2(&r->ev_action, ev, evlen, action, actlen));
    it->count += n;
    item *ri;
    NEED(ri = table_get(&r->rules, rule, rulelen));
    ri->count += n;
    NEED(it = table_get2(&r->rule_event, rule, rulelen, ev, evlen));
    it->count += n;
    char ea[160];
    snprintf(ea, sizeof ea, "%s/%.*s", ev, (int)(actlen < 64 ? actlen : 64), action);
    NEED(it = table_get2(&r->rule_action, rule, rulelen, ea, strlen(ea)));
    it->count += n;
    if (held != NULL) {
        if (llvec_push(&ri->held, json_integer_value(held)) < 0 ||
            llvec_push(&r->held, json_integer_value(held)) < 0)
            r->oom = 1;
    }
    const char *ip = NULL;
    size_t iplen = 0;
    if (client != NULL && clen > 0) client_ip(client, clen, &ip, &iplen);
    int refusal = is_release_refusal(ev);
    if (ip != NULL) {
        NEED(it = table_get(&r->ips, ip, iplen));
        it->count += n;
        if (refusal) it->refused += n;
    }
    if (key != NULL && keylen > 0) {
        item *k;
        NEED(k = table_get(&r->keys, key, keylen));
        k->count += n;
        if (refusal) k->refused += n;
        if (k->rule == NULL) NEED(k->rule = strdup(rule));
        if (ip != NULL) {
            if (k->ip == NULL) {
                NEED(k->ip = malloc(iplen + 1));
                memcpy(k->ip, ip, iplen);
                k->ip[iplen] = '\0';
                k->iplen = iplen;
            } else if (k->iplen != iplen || memcmp(k->ip, ip, iplen) != 0) {
                k->many_ips = 1;
            }
        }
        if (ip != NULL && strcmp(ev, "foreign_release") == 0) {
            NEED(it = table_get2(&r->foreign, ip, iplen, key, keylen));
            it->count += n;
        }
    }
    json_decref(o);
}

/* Reads one file ("-": stdin), plain or gzip. Returns 0, or -1 with a message on err. */
static int take_file(report *r, const char *path, FILE *err)
{
    gzFile f;
    if (strcmp(path, "-") == 0) {
        int fd = dup(0);
        f = fd >= 0 ? gzdopen(fd, "rb") : NULL;
        if (f == NULL && fd >= 0) close(fd);
    } else {
        f = gzopen(path, "rb");
    }
    if (f == NULL) {
        fprintf(err, "lockproxy report: %s: %s\n", path, errno ? strerror(errno) : "cannot open");
        return -1;
    }
    r->files++;
    char chunk[65536], *line = NULL;
    size_t len = 0, cap = 0;
    uint64_t lineno = 0;
    int too_long = 0, rc = 0;
    for (;;) {
        char *got = gzgets(f, chunk, sizeof chunk);
        if (got == NULL) break;
        size_t n = strlen(chunk);
        int eol = n > 0 && chunk[n - 1] == '\n';
        if (!too_long) {
            if (len + n > LINE_MAX_BYTES) {
                too_long = 1;
            } else {
                if (len + n + 1 > cap) {
                    size_t ncap = (len + n + 1) * 2;
                    char *nl = realloc(line, ncap);
                    if (nl == NULL) { r->oom = 1; break; }
                    line = nl;
                    cap = ncap;
                }
                memcpy(line + len, chunk, n);
                len += n;
            }
        }
        if (!eol) continue;
        lineno++;
        if (too_long) { r->lines++; malformed(r, path, lineno, "line longer than 1 MiB"); }
        else take_line(r, path, lineno, line, len);
        len = 0;
        too_long = 0;
    }
    int zerr = Z_OK;
    const char *zmsg = gzerror(f, &zerr);
    if (zerr != Z_OK && zerr != Z_STREAM_END) {
        fprintf(err, "lockproxy report: %s: %s (counted up to line %llu)\n", path,
                zerr == Z_ERRNO ? strerror(errno) : zmsg, (unsigned long long)lineno);
        rc = -1;
    }
    /* A last line without its newline (a log being written) still counts. */
    if (rc == 0 && (len > 0 || too_long)) {
        lineno++;
        if (too_long) { r->lines++; malformed(r, path, lineno, "line longer than 1 MiB"); }
        else take_line(r, path, lineno, line, len);
    }
    free(line);
    gzclose(f);
    return rc;
}

/* ---- output ---- */

static uint64_t pair_count(const table *t, const char *a, const char *b)
{
    char buf[1024];
    int n = snprintf(buf, sizeof buf, "%s\x1f%s", a, b);
    if (n < 0 || (size_t)n >= sizeof buf || t->nb == 0) return 0;
    size_t h = lp_fnv1a(LP_FNV1A_OFFSET, buf, (size_t)n) & (t->nb - 1);
    for (item *it = t->b[h]; it; it = it->next)
        if (it->len == (size_t)n && memcmp(it->name, buf, (size_t)n) == 0) return it->count;
    return 0;
}

/* Prints bytes for a terminal: controls, DEL and backslash as \xHH. */
static void put_text(FILE *out, const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x20 || c == 0x7f || c == '\\') fprintf(out, "\\x%02x", c);
        else fputc(c, out);
    }
}

typedef struct holds {
    size_t n;
    long long p50, p99, max;
} holds;

static holds hold_stats(llvec *h)
{
    holds s = {h->n, 0, 0, 0};
    if (h->n == 0) return s;
    qsort(h->v, h->n, sizeof *h->v, cmp_ll);
    s.p50 = pct(h->v, h->n, 50);
    s.p99 = pct(h->v, h->n, 99);
    s.max = h->v[h->n - 1];
    return s;
}

/* Collects advice lines (plain text) into *advice (a JSON array of strings). */
static void add_advice(json_t *advice, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void add_advice(json_t *advice, const char *fmt, ...)
{
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    json_array_append_new(advice, json_string(buf));
}

/* The advice the counts support, rule by rule, then client by client, then the log itself. */
static json_t *advise(report *r, item **rules)
{
    json_t *a = json_array();
    for (size_t i = 0; i < r->rules.n; i++) {
        item *ri = rules[i];
        const char *R = ri->name;
        if (ri->len == 0) continue;     /* events of no rule (tracking_lost) */
        uint64_t would = pair_count(&r->rule_action, R, "setnx_no_ttl/forwarded") +
                         pair_count(&r->rule_action, R, "set_nx_no_ttl/forwarded");
        if (would > 0)
            add_advice(a, "rule \"%s\": %llu acquisitions without a TTL (a crashed holder keeps such a lock "
                          "forever): enforce gives each the rule's ttl and renews it", R, (unsigned long long)would);
        uint64_t cap_a = pair_count(&r->rule_action, R, "ttl_capped/forwarded");
        uint64_t cap_e = pair_count(&r->rule_action, R, "ttl_capped/rewritten");
        if (cap_a > 0) add_advice(a, "rule \"%s\": max-ttl would cap %llu acquisitions", R, (unsigned long long)cap_a);
        if (cap_e > 0) add_advice(a, "rule \"%s\": max-ttl capped %llu acquisitions", R, (unsigned long long)cap_e);
        uint64_t dels = pair_count(&r->rule_action, R, "del_unchecked/forwarded");
        if (dels > 0)
            add_advice(a, "rule \"%s\": %llu releases by a plain DEL: enforce checks each against the lease "
                          "before deleting", R, (unsigned long long)dels);
        uint64_t late = pair_count(&r->rule_event, R, "late_release");
        holds hs = hold_stats(&ri->held);
        if (late > 0)
            add_advice(a, "rule \"%s\": %llu releases came after the lease ended (longest hold %lld ms): "
                          "raise ttl above the longest hold, or renew=always for locks taken with a TTL",
                       R, (unsigned long long)late, hs.max);
        if (hs.n > 0 && cap_a == 0 && cap_e == 0)
            add_advice(a, "rule \"%s\": holds p99 %lld ms, longest %lld ms: a max-ttl below %lld ms would cut "
                          "the longest holds short", R, hs.p99, hs.max, hs.max);
        uint64_t uncond = pair_count(&r->rule_event, R, "unconditional_set");
        if (uncond > 0)
            add_advice(a, "rule \"%s\": %llu SETs without NX overwrote whatever holder: they pass in every "
                          "mode; fix the application", R, (unsigned long long)uncond);
    }
    /* Foreign releases: of keys that no other client IP touched in these logs (other
     * connections of one application), or of keys others used. */
    table same = {0}, other = {0};
    for (size_t i = 0; i < r->foreign.nb; i++)
        for (item *it = r->foreign.b[i]; it; it = it->next) {
            const char *sep = memchr(it->name, '\x1f', it->len);
            size_t iplen = (size_t)(sep - it->name);
            const char *key = sep + 1;
            size_t keylen = it->len - iplen - 1;
            item *k = table_get(&r->keys, key, keylen);
            int only = k != NULL && !k->many_ips && k->iplen == iplen && memcmp(k->ip, it->name, iplen) == 0;
            item *c = table_get(only ? &same : &other, it->name, iplen);
            if (c == NULL) { r->oom = 1; continue; }
            c->count += it->count;
        }
    item **v = table_sorted(&same);
    for (size_t i = 0; v && i < same.n; i++)
        add_advice(a, "releases from other connections of %s (%llu foreign_release of keys only it used): "
                      "owner=auto fits", v[i]->name, (unsigned long long)v[i]->count);
    free(v);
    v = table_sorted(&other);
    for (size_t i = 0; v && i < other.n; i++)
        add_advice(a, "%s released %llu locks other clients hold (foreign_release): find out why before "
                      "enforce; owner=client-name fits when both are one application that names itself",
                   v[i]->name, (unsigned long long)v[i]->count);
    free(v);
    table_free(&same);
    table_free(&other);
    if (r->malformed > 0)
        add_advice(a, "%llu malformed lines were skipped (first: %s)", (unsigned long long)r->malformed,
                   r->malformed_at[0]);
    if (r->dropped > 0)
        add_advice(a, "the log writer dropped %llu lines (log_dropped): the counts are lower bounds",
                   (unsigned long long)r->dropped);
    if (r->unknown_identity > 0)
        add_advice(a, "%llu rate-limited events lost their identity (audit_suppressed): counted in the "
                      "total only", (unsigned long long)r->unknown_identity);
    if (r->nevents == 0) add_advice(a, "no lock events: nothing to change");
    return a;
}

static json_t *holds_json(holds s)
{
    if (s.n == 0) return json_pack("{s:I}", "count", (json_int_t)0);
    return json_pack("{s:I,s:I,s:I,s:I}", "count", (json_int_t)s.n, "p50", (json_int_t)s.p50, "p99",
                     (json_int_t)s.p99, "max", (json_int_t)s.max);
}

/* Sub-counts of one name in a pair table ("name<0x1f>sub") as a JSON object, highest first. */
static json_t *pairs_of(const table *t, const char *name, size_t len, item **sorted)
{
    json_t *o = json_object();
    for (size_t i = 0; i < t->n; i++) {
        item *it = sorted[i];
        if (it->len > len && it->name[len] == '\x1f' && memcmp(it->name, name, len) == 0)
            json_object_set_new(o, it->name + len + 1, json_integer((json_int_t)it->count));
    }
    return o;
}

static void print_pairs_text(FILE *out, const table *t, const char *name, size_t len, item **sorted)
{
    const char *sep = "";
    for (size_t i = 0; i < t->n; i++) {
        item *it = sorted[i];
        if (it->len > len && it->name[len] == '\x1f' && memcmp(it->name, name, len) == 0) {
            fprintf(out, "%s%s %llu", sep, it->name + len + 1, (unsigned long long)it->count);
            sep = ", ";
        }
    }
}

static int emit(report *r, FILE *out, int as_json)
{
    item **rules = table_sorted(&r->rules), **events = table_sorted(&r->events);
    item **keys = table_sorted(&r->keys), **ips = table_sorted(&r->ips);
    item **re = table_sorted(&r->rule_event), **ea = table_sorted(&r->ev_action);
    int rc = 0;
    if (!rules || !events || !keys || !ips || !re || !ea) {
        r->oom = 1;
        goto done;
    }
    holds all = hold_stats(&r->held);
    json_t *advice = advise(r, rules);
    uint64_t foreign_refused = pair_count(&r->ev_action, "foreign_release", "refused");
    uint64_t foreign_audit = pair_count(&r->ev_action, "foreign_release", "forwarded");
    uint64_t late_refused = pair_count(&r->ev_action, "late_release", "refused");
    uint64_t late_audit = pair_count(&r->ev_action, "late_release", "forwarded");
    size_t nkeys = r->keys.n < TOP_N ? r->keys.n : TOP_N, nips = r->ips.n < TOP_N ? r->ips.n : TOP_N;

    if (as_json) {
        json_t *o = json_object(), *x;
        json_object_set_new(o, "files", json_integer((json_int_t)r->files));
        json_object_set_new(o, "lines", json_integer((json_int_t)r->lines));
        json_object_set_new(o, "malformed", json_integer((json_int_t)r->malformed));
        x = json_array();
        for (uint64_t i = 0; i < r->malformed && i < MALFORMED_SHOWN; i++)
            json_array_append_new(x, json_string(r->malformed_at[i]));
        json_object_set_new(o, "malformed_lines", x);
        json_object_set_new(o, "before_since", json_integer((json_int_t)r->before_since));
        json_object_set_new(o, "events", json_integer((json_int_t)r->nevents));
        json_object_set_new(o, "suppressed", json_integer((json_int_t)r->suppressed));
        json_object_set_new(o, "dropped_lines", json_integer((json_int_t)r->dropped));
        json_object_set_new(o, "first", r->first_ts[0] ? json_string(r->first_ts) : json_null());
        json_object_set_new(o, "last", r->last_ts[0] ? json_string(r->last_ts) : json_null());
        x = json_object();
        for (size_t i = 0; i < r->rules.n; i++) {
            json_t *ro = json_object();
            json_object_set_new(ro, "events", json_integer((json_int_t)rules[i]->count));
            json_object_set_new(ro, "by_event", pairs_of(&r->rule_event, rules[i]->name, rules[i]->len, re));
            json_object_set_new(ro, "held_ms", holds_json(hold_stats(&rules[i]->held)));
            json_object_set_new(x, rules[i]->name, ro);
        }
        json_object_set_new(o, "rules", x);
        x = json_object();
        for (size_t i = 0; i < r->events.n; i++)
            json_object_set_new(x, events[i]->name, json_pack("{s:I,s:o}", "count", (json_int_t)events[i]->count,
                                "by_action", pairs_of(&r->ev_action, events[i]->name, events[i]->len, ea)));
        json_object_set_new(o, "by_event", x);
        x = json_array();
        for (size_t i = 0; i < nkeys; i++)
            json_array_append_new(x, json_pack("{s:s%,s:s,s:I,s:I}", "key", keys[i]->name, keys[i]->len, "rule",
                                  keys[i]->rule ? keys[i]->rule : "", "events", (json_int_t)keys[i]->count,
                                  "refused_releases", (json_int_t)keys[i]->refused));
        json_object_set_new(o, "hottest_keys", x);
        x = json_array();
        for (size_t i = 0; i < nips; i++)
            json_array_append_new(x, json_pack("{s:s%,s:I,s:I}", "ip", ips[i]->name, ips[i]->len, "events",
                                  (json_int_t)ips[i]->count, "refused_releases", (json_int_t)ips[i]->refused));
        json_object_set_new(o, "clients", x);
        json_object_set_new(o, "held_ms", holds_json(all));
        json_object_set_new(o, "refused_releases",
                            json_pack("{s:{s:I,s:I},s:{s:I,s:I}}", "foreign_release", "refused",
                                      (json_int_t)foreign_refused, "audit", (json_int_t)foreign_audit,
                                      "late_release", "refused", (json_int_t)late_refused, "audit",
                                      (json_int_t)late_audit));
        json_object_set_new(o, "advice", advice);
        advice = NULL;
        if (json_dumpf(o, out, JSON_INDENT(2) | JSON_PRESERVE_ORDER) < 0) rc = -1;
        fputc('\n', out);
        json_decref(o);
    } else {
        fprintf(out, "lockproxy report: %llu file(s), %llu line(s), %llu malformed",
                (unsigned long long)r->files, (unsigned long long)r->lines, (unsigned long long)r->malformed);
        if (r->since_ms >= 0) fprintf(out, ", %llu before --since", (unsigned long long)r->before_since);
        fprintf(out, "\n");
        for (uint64_t i = 0; i < r->malformed && i < MALFORMED_SHOWN; i++)
            fprintf(out, "  malformed: %s\n", r->malformed_at[i]);
        if (r->malformed > MALFORMED_SHOWN)
            fprintf(out, "  malformed: ... and %llu more\n", (unsigned long long)(r->malformed - MALFORMED_SHOWN));
        fprintf(out, "events: %llu (%llu of them rate-limited, counted from \"suppressed\")\n",
                (unsigned long long)r->nevents, (unsigned long long)r->suppressed);
        if (r->first_ts[0]) fprintf(out, "from %s to %s\n", r->first_ts, r->last_ts);
        if (r->dropped) fprintf(out, "lines the writer dropped: %llu\n", (unsigned long long)r->dropped);

        fprintf(out, "\nBy rule\n");
        for (size_t i = 0; i < r->rules.n; i++) {
            fprintf(out, "  %-20s %10llu  ", rules[i]->len ? rules[i]->name : "(none)",
                    (unsigned long long)rules[i]->count);
            print_pairs_text(out, &r->rule_event, rules[i]->name, rules[i]->len, re);
            fprintf(out, "\n");
        }
        fprintf(out, "\nBy event\n");
        for (size_t i = 0; i < r->events.n; i++) {
            fprintf(out, "  %-20s %10llu  ", events[i]->name, (unsigned long long)events[i]->count);
            print_pairs_text(out, &r->ev_action, events[i]->name, events[i]->len, ea);
            fprintf(out, "\n");
        }
        fprintf(out, "\nHottest lock keys (top %d)\n  %10s %8s  %-12s %s\n", TOP_N, "events", "refused", "rule", "key");
        for (size_t i = 0; i < nkeys; i++) {
            fprintf(out, "  %10llu %8llu  %-12s ", (unsigned long long)keys[i]->count,
                    (unsigned long long)keys[i]->refused, keys[i]->rule ? keys[i]->rule : "");
            put_text(out, keys[i]->name, keys[i]->len);
            fprintf(out, "\n");
        }
        fprintf(out, "\nWorst offending clients (by IP, top %d)\n  %10s %8s  %s\n", TOP_N, "events", "refused", "ip");
        for (size_t i = 0; i < nips; i++) {
            fprintf(out, "  %10llu %8llu  ", (unsigned long long)ips[i]->count, (unsigned long long)ips[i]->refused);
            put_text(out, ips[i]->name, ips[i]->len);
            fprintf(out, "\n");
        }
        fprintf(out, "\nHold times (held_ms of %zu line(s))\n", all.n);
        if (all.n > 0) {
            fprintf(out, "  all: p50 %lld ms, p99 %lld ms, max %lld ms\n", all.p50, all.p99, all.max);
            for (size_t i = 0; i < r->rules.n; i++) {
                holds h = hold_stats(&rules[i]->held);
                if (h.n > 0)
                    fprintf(out, "  rule \"%s\": %zu line(s), p50 %lld ms, p99 %lld ms, max %lld ms\n", rules[i]->name,
                            h.n, h.p50, h.p99, h.max);
            }
        }
        fprintf(out, "\nRefused releases\n");
        fprintf(out, "  foreign_release: %llu refused, %llu in audit mode (would be refused)\n",
                (unsigned long long)foreign_refused, (unsigned long long)foreign_audit);
        fprintf(out, "  late_release: %llu refused, %llu in audit mode (would be refused)\n",
                (unsigned long long)late_refused, (unsigned long long)late_audit);
        fprintf(out, "\nAdvice\n");
        for (size_t i = 0; i < json_array_size(advice); i++)
            fprintf(out, "  - %s\n", json_string_value(json_array_get(advice, i)));
    }
    json_decref(advice);
done:
    free(rules);
    free(events);
    free(keys);
    free(ips);
    free(re);
    free(ea);
    if (fflush(out) != 0) rc = -1;
    return rc;
}

/* ---- the command line ---- */

static const char usage[] =
    "Usage: lockproxy report [--since DUR] [--json] LOG...\n"
    "  Counts the events of audit logs (plain or .gz, rotated or not; - is stdin), honouring\n"
    "  \"suppressed\": by rule, event, key and client IP, with hold times, refused releases\n"
    "  and advice. --since DUR (e.g. 30m, 24h, 7d) keeps the lines of the last DUR only;\n"
    "  --json prints the same as one JSON object. See lockproxy(8).\n";

/* "7d" or a duration lp_tok_parse_duration_unit_ms() takes ("250ms", "30s", "5m", "24h"). */
static long long parse_since(const char *s)
{
    size_t n = strlen(s);
    if (n >= 2 && (s[n - 1] == 'd' || s[n - 1] == 'D')) {
        char buf[32];
        if (n >= sizeof buf) return -1;
        memcpy(buf, s, n - 1);
        buf[n - 1] = '\0';
        const char *rest;
        long long d = lp_tok_parse_digits(buf, &rest);
        if (d < 0 || *rest != '\0' || d > 1000000) return -1;
        return d * 86400000LL;
    }
    return lp_tok_parse_duration_unit_ms(s);
}

int lp_report_main(int argc, char **argv, FILE *out, FILE *err, long long now_ms)
{
    report r;
    int as_json = 0, nfiles = 0, rc = 0, i;
    memset(&r, 0, sizeof r);
    r.since_ms = -1;
    for (i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--") == 0) { i++; break; }
        if (strcmp(a, "--json") == 0) as_json = 1;
        else if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) { fputs(usage, out); return 0; }
        else if (strcmp(a, "--since") == 0 || strncmp(a, "--since=", 8) == 0) {
            const char *v = a[7] == '=' ? a + 8 : (i + 1 < argc ? argv[++i] : NULL);
            long long d = v ? parse_since(v) : -1;
            if (d < 0) {
                fprintf(err, "lockproxy report: --since: bad duration '%s' (expected e.g. 30m, 24h, 7d)\n",
                        v ? v : "");
                return 1;
            }
            r.since_ms = now_ms - d;
        } else if (a[0] == '-' && a[1] != '\0') {
            fprintf(err, "lockproxy report: unknown flag '%s'\n%s", a, usage);
            return 1;
        } else break;
    }
    for (; i < argc; i++, nfiles++)
        if (take_file(&r, argv[i], err) < 0) rc = 1;
    if (nfiles == 0) {
        fprintf(err, "lockproxy report: no log file given\n%s", usage);
        report_free(&r);
        return 1;
    }
    if (emit(&r, out, as_json) < 0) {
        fprintf(err, "lockproxy report: cannot write the report: %s\n", strerror(errno));
        rc = 1;
    }
    if (r.oom) {
        fprintf(err, "lockproxy report: out of memory: the counts are incomplete\n");
        rc = 1;
    }
    report_free(&r);
    return rc;
}
