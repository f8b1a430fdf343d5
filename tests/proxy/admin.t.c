/* The admin listener over real HTTP, in front of a real redis-server: /metrics follows known
 * traffic (requests, bytes, connections, latency histograms, lock commands, audit events per
 * rule and event counting the rate-limited ones), parses as the Prometheus text format, and
 * escapes label values; /health is 200 while Redis answers PING, 503 once it is stopped, 200
 * again once it is back; other paths are 404, other methods 405; a bad admin address stops
 * the start with a message naming it.
 *
 * The counters are published once a second, so every check of a count polls the endpoint
 * until it gets there (with a generous deadline); none measures time. */
#include <ctype.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <unistd.h>

#include "lib/harness.h"
#include "tap.h"

#define POLL_MS 20000

static int admin_port;
static int checker_quiet;   /* the checker's self-test: no diag for the bad lines it is fed */

/* ---- a tiny HTTP/1.0 client ---- */

/* Sends "METHOD PATH HTTP/1.0" and reads the answer to EOF. Returns the status code (body in
 * *body), or -1 when there was no well-formed answer. */
static int http(const char *method, const char *path, hp_buf *body) {
    hp_buf req = {0}, resp = {0};
    hp_buf_reset(body);
    int fd = hp_connect(admin_port, 3000);
    if (fd < 0) return -1;
    hp_buf_printf(&req, "%s %s HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Length: %d\r\n\r\n%s", method, path,
                  strcmp(method, "POST") == 0 ? 3 : 0, strcmp(method, "POST") == 0 ? "a=b" : "");
    int status = -1;
    if (hp_send_all(fd, req.data, req.len, 3000) == HP_IO_OK && hp_read_eof(fd, &resp, 5000) == HP_IO_EOF &&
        resp.len > 12 && strncmp(resp.data, "HTTP/1.", 7) == 0) {
        status = atoi(resp.data + 9);
        size_t at = hp_buf_find(&resp, 0, "\r\n\r\n", 4);
        if (at != (size_t)-1) hp_buf_append(body, resp.data + at + 4, resp.len - at - 4);
        else status = -1;
    }
    close(fd);
    hp_buf_free(&req);
    hp_buf_free(&resp);
    return status;
}

/* The value of the sample whose name and labels are exactly series ("name" or
 * "name{a=\"b\"}"), or -1 when there is none. */
static double sample(const hp_buf *m, const char *series) {
    size_t n = strlen(series);
    const char *p = m->data;
    while (p != NULL && *p) {
        if (strncmp(p, series, n) == 0 && p[n] == ' ') return strtod(p + n + 1, NULL);
        p = strchr(p, '\n');
        if (p) p++;
    }
    return -1;
}

static double scrape(const char *series) {
    hp_buf m = {0};
    double v = http("GET", "/metrics", &m) == 200 ? sample(&m, series) : -1;
    hp_buf_free(&m);
    return v;
}

/* Polls the series until it reaches at least want. Returns the last value seen. */
static double wait_at_least(const char *series, double want) {
    long long end = hp_now_ms() + POLL_MS;
    double v;
    while ((v = scrape(series)) < want && hp_now_ms() < end) hp_sleep_ms(100);
    return v;
}

/* Polls the series until it equals want. Returns the last value seen. */
static double wait_equal(const char *series, double want) {
    long long end = hp_now_ms() + POLL_MS;
    double v;
    while ((v = scrape(series)) != want && hp_now_ms() < end) hp_sleep_ms(100);
    return v;
}

/* Polls /health until it answers want. Returns the last status. */
static int wait_health(int want, hp_buf *body) {
    long long end = hp_now_ms() + POLL_MS;
    int st;
    while ((st = http("GET", "/health", body)) != want && hp_now_ms() < end) hp_sleep_ms(100);
    return st;
}

/* ---- the Prometheus text format (0.0.4), line by line ---- */

static const char *metric_name(const char *p) {
    if (!(isalpha((unsigned char)*p) || *p == '_' || *p == ':')) return NULL;
    while (isalnum((unsigned char)*p) || *p == '_' || *p == ':') p++;
    return p;
}

/* A label set "{name="value",...}" (escapes \\ \" \n only). Returns the end or NULL. */
static const char *labels(const char *p) {
    if (*p != '{') return p;
    p++;
    while (*p != '}') {
        if (!(isalpha((unsigned char)*p) || *p == '_')) return NULL;
        while (isalnum((unsigned char)*p) || *p == '_') p++;
        if (*p++ != '=' || *p++ != '"') return NULL;
        while (*p != '"') {
            if (*p == '\0' || *p == '\n') return NULL;
            if (*p == '\\') {
                p++;
                if (*p != '\\' && *p != '"' && *p != 'n') return NULL;
            }
            p++;
        }
        p++;
        if (*p == ',') p++;
        else if (*p != '}') return NULL;
    }
    return p + 1;
}

static int is_value(const char *p, const char *end) {
    char buf[64];
    size_t n = (size_t)(end - p);
    if (n == 0 || n >= sizeof buf) return 0;
    memcpy(buf, p, n);
    buf[n] = '\0';
    if (!strcmp(buf, "+Inf") || !strcmp(buf, "-Inf") || !strcmp(buf, "NaN")) return 1;
    char *e;
    strtod(buf, &e);
    return *e == '\0';
}

/* Checks every line; returns the number of bad ones (the first is shown). Besides the
 * grammar: each family has one TYPE line before its samples, samples belong to the family
 * last typed (histograms: _bucket, _sum, _count), counters end in _total, and histogram
 * buckets are cumulative with +Inf equal to _count. */
static int check_format(const hp_buf *m, int *nsamples) {
    char family[128] = "", type[32] = "", typed[64][128];
    int ntyped = 0, bad = 0, line = 0;
    double last_bucket = 0, inf = -1;
    *nsamples = 0;
    if (m->len == 0 || m->data[m->len - 1] != '\n') {
        if (!checker_quiet) diag("no final newline");
        bad++;
    }
    for (const char *p = m->data; p < m->data + m->len; line++) {
        const char *nl = memchr(p, '\n', (size_t)(m->data + m->len - p));
        if (nl == NULL) nl = m->data + m->len;
        char l[1024];
        size_t n = (size_t)(nl - p) < sizeof l - 1 ? (size_t)(nl - p) : sizeof l - 1;
        memcpy(l, p, n);
        l[n] = '\0';
        p = nl + 1;
        const char *why = NULL;
        if (strncmp(l, "# HELP ", 7) == 0) {
            const char *e = metric_name(l + 7);
            if (e == NULL || *e != ' ') why = "bad HELP";
        } else if (strncmp(l, "# TYPE ", 7) == 0) {
            const char *e = metric_name(l + 7);
            if (e == NULL || *e != ' ') why = "bad TYPE";
            else {
                snprintf(family, sizeof family, "%.*s", (int)(e - l - 7), l + 7);
                snprintf(type, sizeof type, "%s", e + 1);
                if (strcmp(type, "counter") && strcmp(type, "gauge") && strcmp(type, "histogram") &&
                    strcmp(type, "summary") && strcmp(type, "untyped"))
                    why = "unknown type";
                if (!strcmp(type, "counter") && (strlen(family) < 6 || strcmp(family + strlen(family) - 6, "_total")))
                    why = "counter without _total";
                for (int i = 0; i < ntyped; i++)
                    if (!strcmp(typed[i], family)) why = "family typed twice";
                if (ntyped < 64) snprintf(typed[ntyped++], sizeof typed[0], "%s", family);
                last_bucket = 0;
                inf = -1;
            }
        } else if (l[0] == '#') {
            /* another comment */
        } else {
            const char *e = metric_name(l);
            const char *lb = e ? labels(e) : NULL;
            const char *sp = lb && *lb == ' ' ? lb + 1 : NULL;
            if (sp == NULL || !is_value(sp, l + strlen(l))) why = "bad sample";
            else {
                (*nsamples)++;
                size_t fl = strlen(family), nl2 = (size_t)(e - l);
                const char *suffix = nl2 >= fl && strncmp(l, family, fl) == 0 ? l + fl : NULL;
                double v = strtod(sp, NULL);
                if (suffix == NULL) why = "sample outside its family";
                else if (!strcmp(type, "histogram")) {
                    if (!strncmp(suffix, "_bucket{", 8)) {
                        if (v < last_bucket) why = "buckets not cumulative";
                        last_bucket = v;
                        if (strstr(suffix, "le=\"+Inf\"")) inf = v;
                    } else if (!strncmp(suffix, "_count ", 7)) {
                        if (v != inf) why = "+Inf bucket differs from _count";
                    } else if (strncmp(suffix, "_sum ", 5)) why = "histogram sample not _bucket/_sum/_count";
                } else if (*suffix != ' ' && *suffix != '{') why = "sample outside its family";
            }
        }
        if (why != NULL && bad++ == 0 && !checker_quiet) diag("line %d: %s: %s", line + 1, why, hp_esc(l, strlen(l), 200));
    }
    return bad;
}

/* The checker itself finds what it is meant to find. */
static void check_the_checker(void) {
    static const char *const bad[] = {
        "# TYPE a_total counter\na_total{x=\"y} 1\n",            /* unterminated label */
        "# TYPE a counter\na 1\n",                                 /* counter without _total */
        "# TYPE a_total counter\na_total one\n",                   /* bad value */
        "# TYPE a_total counter\nb_total 1\n",                     /* outside its family */
        "# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 1\nh_sum 0\nh_count 1\n",
        "# TYPE h histogram\nh_bucket{le=\"+Inf\"} 2\nh_sum 0\nh_count 1\n",
        "# TYPE a_total counter\na_total{x=\"\\q\"} 1\n",          /* bad escape */
        "# TYPE a_total counter\na_total 1",                         /* no final newline */
    };
    int caught = 0, n;
    checker_quiet = 1;
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        hp_buf b = {0};
        hp_buf_puts(&b, bad[i]);
        caught += check_format(&b, &n) > 0;
        hp_buf_free(&b);
    }
    checker_quiet = 0;
    hp_buf g = {0};
    hp_buf_puts(&g, "# HELP a_total x\n# TYPE a_total counter\na_total{x=\"\\\\ \\\" \\n\"} 1\n");
    is_int(caught, (int)(sizeof bad / sizeof bad[0]), "the format checker rejects each of %zu bad texts",
           sizeof bad / sizeof bad[0]);
    is_int(check_format(&g, &n), 0, "... and accepts a good one");
    hp_buf_free(&g);
}

/* ---- the tests ---- */

static void write_file(const char *path, const char *text) {
    FILE *f = fopen(path, "w");
    if (f == NULL || fputs(text, f) < 0 || fclose(f) != 0) hp_abort("cannot write %s", path);
}

static size_t count_in_file(const char *path, const char *needle) {
    hp_buf b = {0};
    char chunk[65536];
    FILE *f = fopen(path, "r");
    size_t n;
    if (f == NULL) return 0;
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0) hp_buf_append(&b, chunk, n);
    fclose(f);
    size_t c = b.len ? hp_buf_count(&b, needle) : 0;
    hp_buf_free(&b);
    return c;
}

static void bad_addresses(const hp_proc *redis, int busy_port) {
    char busy[64];
    snprintf(busy, sizeof busy, "127.0.0.1:%d", busy_port);
    const char *const unix_args[] = {"--admin", "unix:/tmp/lockproxy-admin.sock", NULL};
    const char *const busy_args[] = {"--admin", busy, NULL};
    hp_buf log = {0};

    hp_proc *p = hp_proxy_spawn(redis, unix_args);
    is_int(hp_wait_exit(p, 10000), 1, "admin on a unix socket: the proxy does not start");
    hp_log_read(p, &log);
    ok(strstr(log.data ? log.data : "", "--admin") && strstr(log.data, "unix socket"),
       "... and says --admin takes HOST:PORT");

    p = hp_proxy_spawn(redis, busy_args);
    is_int(hp_wait_exit(p, 10000), 1, "admin on a port in use: the proxy does not start");
    hp_log_read(p, &log);
    char want[96];
    snprintf(want, sizeof want, "admin %s:", busy);
    ok(strstr(log.data ? log.data : "", want) != NULL, "... and names the admin address (%s)",
       hp_esc(log.data ? log.data : "", log.len, 200));
    hp_buf_free(&log);
}

int main(void) {
    plan_lazy();
    check_the_checker();
    hp_proc *redis = hp_redis_start(NULL);
    char policy[4200], logpath[4200], admin[64];
    snprintf(policy, sizeof policy, "%s/policy.conf", hp_tmpdir());
    snprintf(logpath, sizeof logpath, "%s/audit.log", hp_tmpdir());
    /* A rule whose prefix holds a quote, a backslash, a newline and a byte that is not
     * UTF-8: its label value must come out escaped. */
    write_file(policy, "rule lock: audit ttl=30s\nrule \"od\\\"d\\\\\\x0a\\xff:\" audit ttl=30s\n");
    admin_port = hp_free_port();
    snprintf(admin, sizeof admin, "127.0.0.1:%d", admin_port);
    /* A long shutdown-timeout: the drain test below ends the drain itself. */
    char conf[4200];
    snprintf(conf, sizeof conf, "%s/lockproxy.conf", hp_tmpdir());
    write_file(conf, "shutdown-timeout 120s\nlease-cache-bytes 1mb\n");
    const char *const args[] = {"-c", conf, "--admin", admin, "--policy", policy, "--log", logpath, NULL};
    hp_proc *proxy = hp_proxy_start(redis, args);

    hp_buf body = {0};
    is_int(wait_health(200, &body), 200, "/health: 200 while Redis answers PING");
    ok(body.len > 0 && strncmp(body.data, "ok", 2) == 0, "... with body 'ok' (%s)", hp_esc(body.data, body.len, 80));

    /* The format. */
    int st = http("GET", "/metrics", &body), nsamples = 0;
    is_int(st, 200, "/metrics: 200");
    int bad = check_format(&body, &nsamples);
    is_int(bad, 0, "/metrics parses as the Prometheus text format (%d samples)", nsamples);
    ok(nsamples >= 40, "... with every family's samples (%d)", nsamples);
    ok(hp_buf_has(&body, "lockproxy_build_info{version=\"", 30), "build info is there");
    is_int((long long)sample(&body, "lockproxy_lease_cache_budget_bytes"), 1048576,
           "the lease cache's budget is lease-cache-bytes (1mb)");
    ok(sample(&body, "lockproxy_lease_cache_bytes") >= 0 &&
           sample(&body, "lockproxy_lease_cache_evictions_total{state=\"live\"}") == 0,
       "the lease cache's bytes and evictions are there");

    /* Known traffic: N requests on one connection. */
    double req0 = scrape("lockproxy_requests_total"), acc0 = scrape("lockproxy_connections_accepted_total");
    double lat0 = scrape("lockproxy_request_duration_seconds_count");
    double cin0 = scrape("lockproxy_bytes_total{side=\"client\",direction=\"in\"}");
    ok(req0 >= 0 && acc0 >= 0 && lat0 >= 0 && cin0 >= 0, "the counters are there before traffic");
    enum { N = 200 };
    redisContext *c = hp_redis_connect(proxy);
    if (c == NULL) hp_abort("cannot connect to the proxy");
    int replies = 0;
    for (int i = 0; i < N; i++) {
        redisReply *r = redisCommand(c, "SET k%d %d", i, i);
        replies += r != NULL && r->type == REDIS_REPLY_STATUS;
        if (r) freeReplyObject(r);
    }
    is_int(replies, N, "%d SETs through the proxy", N);
    double req1 = wait_at_least("lockproxy_requests_total", req0 + N);
    ok(req1 >= req0 + N, "lockproxy_requests_total grew by at least %d (%.0f -> %.0f)", N, req0, req1);
    ok(wait_at_least("lockproxy_connections_accepted_total", acc0 + 1) >= acc0 + 1, "accepted connections grew");
    ok(wait_at_least("lockproxy_connections", 1) >= 1, "the open connection is counted");
    ok(wait_at_least("lockproxy_request_duration_seconds_count", lat0 + N) >= lat0 + N,
       "the request latency histogram has an observation per request of a waiting client");
    ok(wait_at_least("lockproxy_bytes_total{side=\"client\",direction=\"in\"}", cin0 + N * 20) >= cin0 + N * 20,
       "client bytes in grew by the requests' size at least");
    ok(scrape("lockproxy_bytes_total{side=\"upstream\",direction=\"out\"}") >= N * 20 &&
       scrape("lockproxy_bytes_total{side=\"upstream\",direction=\"in\"}") >= N * 5 &&
       scrape("lockproxy_bytes_total{side=\"client\",direction=\"out\"}") >= N * 5,
       "bytes to and from the upstream and to the client are counted");
    ok(scrape("lockproxy_upstream_connect_seconds_count") >= 1, "the upstream connect latency has an observation");

    /* 300 identical violations: rate-limited in the log, all counted. */
    const char *ev = "lockproxy_audit_events_total{rule=\"lock:\",event=\"setnx_no_ttl\"}";
    const char *sup = "lockproxy_audit_events_suppressed_total{rule=\"lock:\",event=\"setnx_no_ttl\"}";
    double fwd0 = scrape("lockproxy_lock_commands_total{action=\"forwarded\"}");
    replies = 0;
    for (int i = 0; i < 300; i++) {
        redisReply *r = redisCommand(c, "SETNX lock:hot me");
        replies += r != NULL && r->type == REDIS_REPLY_INTEGER;
        if (r) freeReplyObject(r);
    }
    is_int(replies, 300, "300 SETNX lock:hot (audit mode) answered");
    double total = wait_at_least(ev, 300);
    is_int((long long)total, 300, "audit events setnx_no_ttl for rule lock: counted 300 times");
    double suppressed = scrape(sup);
    size_t lines = count_in_file(logpath, "\"event\":\"setnx_no_ttl\"");
    ok(suppressed >= 1 && suppressed < 300, "... of which the rate limiter kept %.0f out of the log", suppressed);
    ok(lines < 300, "... and the log has fewer lines than events (%zu)", lines);
    ok(wait_at_least("lockproxy_lock_commands_total{action=\"forwarded\"}", fwd0 + 300) >= fwd0 + 300,
       "lock commands forwarded (audit mode) grew by 300");
    ok(scrape("lockproxy_lock_rules") == 2, "lock rules: 2");

    /* A label value that needs escaping. */
    redisReply *r = redisCommand(c, "SETNX %b x", "od\"d\\\n\xff:k", (size_t)9);
    ok(r != NULL && r->type == REDIS_REPLY_INTEGER, "SETNX on the odd rule's key");
    if (r) freeReplyObject(r);
    const char *odd = "lockproxy_audit_events_total{rule=\"od\\\"d\\\\\\n\\\\xff:\",event=\"setnx_no_ttl\"}";
    is_int((long long)wait_at_least(odd, 1), 1, "its label is escaped: \\\" \\\\ \\n, and \\\\xff for a byte not UTF-8");
    http("GET", "/metrics", &body);
    bad = check_format(&body, &nsamples);
    is_int(bad, 0, "/metrics still parses (%d samples)", nsamples);
    redisFree(c);

    /* Paths and methods. */
    is_int(http("GET", "/nope", &body), 404, "GET /nope: 404");
    is_int(http("GET", "/", &body), 404, "GET /: 404");
    is_int(http("POST", "/metrics", &body), 405, "POST /metrics: 405");
    is_int(http("DELETE", "/health", &body), 405, "DELETE /health: 405");
    is_int(http("HEAD", "/health", &body), 200, "HEAD /health: 200");

    /* Health follows Redis. */
    hp_stop(redis, 10000);
    is_int(wait_health(503, &body), 503, "/health: 503 once Redis is stopped");
    ok(body.len > 0, "... with a reason (%s)", hp_esc(body.data, body.len, 120));
    ok(wait_equal("lockproxy_upstream_up", 0) == 0, "lockproxy_upstream_up is 0");
    if (hp_restart(redis) < 0) hp_abort("redis did not restart");
    is_int(wait_health(200, &body), 200, "/health: 200 again once Redis is back");
    ok(wait_equal("lockproxy_upstream_up", 1) == 1, "lockproxy_upstream_up is 1");
    ok(hp_cmd_ok(proxy, "PING"), "the proxy serves again");

    bad_addresses(redis, admin_port);

    /* Draining: a client blocked in BLPOP keeps the proxy draining after SIGTERM (for up to
     * shutdown-timeout, 120 s here); meanwhile /health says so. Then its reply comes and
     * the proxy exits. */
    int fd = hp_connect_proc(proxy, 3000);
    hp_buf got = {0};
    static const char blpop[] = "*3\r\n$5\r\nBLPOP\r\n$6\r\ndrainq\r\n$1\r\n0\r\n";
    ok(fd >= 0 && hp_send_all(fd, blpop, sizeof blpop - 1, 3000) == HP_IO_OK, "a client blocks in BLPOP");
    ok(hp_wait_info(redis, "blocked_clients", 1, 10000), "... Redis sees it blocked");
    is_int(wait_health(200, &body), 200, "/health: 200 before SIGTERM");
    hp_signal(proxy, SIGTERM);
    is_int(wait_health(503, &body), 503, "/health: 503 while the proxy drains");
    ok(body.len > 0 && strstr(body.data, "draining") != NULL, "... saying so (%s)", hp_esc(body.data, body.len, 80));
    ok(http("GET", "/metrics", &body) == 200 && sample(&body, "lockproxy_upstream_up") == 0,
       "/metrics is still served while draining, with lockproxy_upstream_up 0");
    ok(hp_cmd_int(redis, "RPUSH drainq x") == 1, "RPUSH on Redis directly answers the BLPOP");
    ok(hp_read_until(fd, &got, 0, "drainq", 10000) == HP_IO_OK, "... whose reply reaches the client");
    is_int(hp_wait_exit(proxy, 20000), 0, "the proxy exits 0 once the drain is over");
    if (fd >= 0) close(fd);
    hp_buf_free(&got);
    hp_buf_free(&body);
    return 0;
}
