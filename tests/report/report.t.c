/* `lockproxy report` on logs a real proxy wrote in front of a real Redis: rate-limited
 * events (100 and then 50 pipelined SETNX of one key, which the limiter folds into
 * "suppressed" counts), a foreign release from another connection of the same client, a
 * capped TTL, a max-hold stop with its held_ms, a log rotated (rename, SIGHUP) and gzipped,
 * two hand-corrupted lines and an old line that --since leaves out. The report's counts are
 * asserted exactly, in --json (read back with jansson) and in the text output. */
#include <errno.h>
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "lib/harness.h"

static char logpath[4096], rotated[4096], gzpath[4096];

static void write_text(const char *path, const char *mode, const char *text)
{
    FILE *f = fopen(path, mode);
    if (f == NULL) hp_abort("cannot write %s: %s", path, strerror(errno));
    fputs(text, f);
    fclose(f);
}

static int file_has(const char *path, const char *needle)
{
    hp_buf b = {0};
    FILE *f = fopen(path, "rb");
    if (f == NULL) return 0;
    char chunk[8192];
    size_t n;
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0) hp_buf_append(&b, chunk, n);
    fclose(f);
    int has = b.len > 0 && hp_buf_find(&b, 0, needle, strlen(needle)) != (size_t)-1;
    hp_buf_free(&b);
    return has;
}

static int wait_for(const char *path, const char *needle, int timeout_ms)
{
    long long until = hp_now_ms() + timeout_ms;
    while (!file_has(path, needle)) {
        if (hp_now_ms() >= until) return 0;
        hp_sleep_ms(20);
    }
    return 1;
}

/* n pipelined "SETNX key v" on one connection; returns the replies :0/:1 seen. */
static int setnx_many(const hp_proc *px, const char *key, int n)
{
    hp_buf req = {0}, out = {0};
    for (int i = 0; i < n; i++) hp_buf_cmd(&req, "SETNX %s v%d", key, i);
    int fd = hp_connect_proc(px, 5000), closed = 0;
    hp_exchange(fd, req.data, req.len, &out, 200, 10000, &closed);
    close(fd);
    int got = (int)(hp_buf_count(&out, ":1\r\n") + hp_buf_count(&out, ":0\r\n"));
    hp_buf_free(&req);
    hp_buf_free(&out);
    return got;
}

/* Runs lockproxy report with args; stdout to out, stderr to err. Returns the exit status. */
static int report(hp_buf *out, hp_buf *err, const char *a1, const char *a2, const char *a3, const char *a4,
                  const char *a5)
{
    const char *bin = getenv("LOCKPROXY_BIN");
    const char *argv[] = { bin && *bin ? bin : LOCKPROXY_BIN, "report", a1, a2, a3, a4, a5, NULL };
    hp_buf_reset(out);
    hp_buf_reset(err);
    return hp_run(argv, NULL, 0, out, err, 20000);
}

static json_t *parse(const hp_buf *out)
{
    json_error_t e;
    json_t *o = out->data ? json_loadb(out->data, out->len, 0, &e) : NULL;
    if (o == NULL) diag("report --json is not JSON: %s", out->data ? e.text : "(no output)");
    return o;
}

static long long num(json_t *o, const char *path)
{
    /* path: "a.b.c" through objects */
    char buf[256];
    snprintf(buf, sizeof buf, "%s", path);
    json_t *v = o;
    for (char *s = strtok(buf, "."); s && v; s = strtok(NULL, ".")) v = json_object_get(v, s);
    return json_is_integer(v) ? (long long)json_integer_value(v) : -1;
}

static int advice_has(json_t *o, const char *text)
{
    json_t *a = json_object_get(o, "advice");
    for (size_t i = 0; i < json_array_size(a); i++)
        if (strstr(json_string_value(json_array_get(a, i)), text) != NULL) return 1;
    diag("no advice containing \"%s\"", text);
    return 0;
}

static long long key_events(json_t *o, const char *key)
{
    json_t *a = json_object_get(o, "hottest_keys");
    for (size_t i = 0; i < json_array_size(a); i++) {
        json_t *k = json_array_get(a, i);
        if (strcmp(json_string_value(json_object_get(k, "key")), key) == 0)
            return (long long)json_integer_value(json_object_get(k, "events"));
    }
    return -1;
}

static long long client_events(json_t *o, const char *ip)
{
    json_t *a = json_object_get(o, "clients");
    for (size_t i = 0; i < json_array_size(a); i++) {
        json_t *k = json_array_get(a, i);
        if (strcmp(json_string_value(json_object_get(k, "ip")), ip) == 0)
            return (long long)json_integer_value(json_object_get(k, "events"));
    }
    return -1;
}

/* The sum of "suppressed" over the lines of a plain file. */
static long long suppressed_in(const char *path)
{
    FILE *f = fopen(path, "r");
    char line[8192];
    long long sum = 0;
    while (f && fgets(line, sizeof line, f)) {
        const char *s = strstr(line, "\"suppressed\":");
        if (s) sum += strtoll(s + 13, NULL, 10);
    }
    if (f) fclose(f);
    return sum;
}

int main(void)
{
    if (getenv("LP_TEST_PROXY_IS_REDIS") && strcmp(getenv("LP_TEST_PROXY_IS_REDIS"), "1") == 0)
        skip_all("LP_TEST_PROXY_IS_REDIS=1: the report needs the real proxy's log");
    plan_lazy();
    hp_proc *redis = hp_redis_start(NULL);
    char pol[4096];
    snprintf(pol, sizeof pol, "%s/policy.conf", hp_tmpdir());
    write_text(pol, "w",
               "rule \"lock:\" audit ttl=30s max-ttl=5m\n"
               "rule \"olock:\" audit owner=connection\n"
               "rule \"hlock:\" enforce ttl=300ms max-hold=600ms\n");
    snprintf(logpath, sizeof logpath, "%s/audit.log", hp_tmpdir());
    snprintf(rotated, sizeof rotated, "%s/audit.log.1", hp_tmpdir());
    snprintf(gzpath, sizeof gzpath, "%s/audit.log.1.gz", hp_tmpdir());
    const char *extra[] = { "--policy", pol, "--log", logpath, NULL };
    hp_proc *px = hp_proxy_start(redis, extra);

    /* Before the rotation: 100 SETNX lock:a, a capped TTL, a foreign release of olock:c. */
    is_int(setnx_many(px, "lock:a", 100), 100, "100 SETNX lock:a answered");
    ok(hp_cmd_ok(px, "SET lock:e x NX EX 1000"), "SET lock:e NX EX 1000 (over max-ttl) answered");
    ok(hp_cmd_ok(px, "SET olock:c x NX PX 100000"), "SET olock:c on one connection");
    is_int(hp_cmd_int(px, "DEL olock:c"), 1, "DEL olock:c on another connection (audit: deleted)");
    ok(wait_for(logpath, "\"foreign_release\"", 10000), "the foreign release is in the log");

    /* Rotation as logrotate does it: rename, SIGHUP (reopens the log by name), then a marker
     * event that reaches the new file, so every earlier line is in the old one. */
    ok(rename(logpath, rotated) == 0, "audit.log renamed to audit.log.1");
    hp_signal(px, SIGHUP);
    struct stat st;
    long long until = hp_now_ms() + 10000;
    while (stat(logpath, &st) != 0 && hp_now_ms() < until) hp_sleep_ms(20);
    ok(stat(logpath, &st) == 0, "SIGHUP: audit.log opened again");
    is_int(setnx_many(px, "lock:z", 1), 1, "SETNX lock:z (marker)");
    ok(wait_for(logpath, "\"lock:z\"", 10000), "the marker is in the new audit.log");
    const char *gz[] = { "gzip", "-n", rotated, NULL };
    hp_buf gout = {0};
    is_int(hp_run(gz, NULL, 0, &gout, &gout, 20000), 0, "gzip audit.log.1 -> audit.log.1.gz");
    hp_buf_free(&gout);

    /* After it: 50 more SETNX lock:a, and a lock held past max-hold (max_hold with held_ms). */
    is_int(setnx_many(px, "lock:a", 50), 50, "50 more SETNX lock:a answered");
    redisContext *c = hp_redis_connect(px);
    redisReply *r = c ? redisCommand(c, "SETNX hlock:f v") : NULL;
    ok(r != NULL && r->type == REDIS_REPLY_INTEGER && r->integer == 1, "SETNX hlock:f (enforce, max-hold=600ms)");
    if (r) freeReplyObject(r);
    ok(wait_for(logpath, "\"max_hold\"", 15000), "max_hold logged once the hold passed 600 ms");
    r = c ? redisCommand(c, "DEL hlock:f") : NULL;
    ok(r != NULL && r->type == REDIS_REPLY_INTEGER, "DEL hlock:f by its holder");
    if (r) freeReplyObject(r);
    if (c) redisFree(c);
    is_int(hp_stop(px, 10000), 0, "SIGTERM: the proxy exits 0 (pending rate-limited counts written)");

    long long sup = suppressed_in(logpath);
    diag("suppressed counts in the plain audit.log: %lld", sup);

    /* Hand-made lines: a truncated one, garbage, and an old event with its own count. */
    write_text(logpath, "a",
               "{\"ts\":\"2026-12-02T00:00:00.000Z\",\"event\":\"setnx_no\n"
               "garbage\n"
               "{\"ts\":\"2020-01-01T00:00:00.000Z\",\"event\":\"setnx_no_ttl\",\"mode\":\"audit\","
               "\"action\":\"forwarded\",\"rule\":\"lock:\",\"key\":\"lock:old\",\"client\":\"10.9.9.9:1\","
               "\"detail\":\"x\",\"suppressed\":4}\n");

    hp_buf out = {0}, err = {0};
    is_int(report(&out, &err, "--json", gzpath, logpath, NULL, NULL), 0, "report --json LOG.1.gz LOG: exit 0");
    json_t *o = parse(&out);
    ok(o != NULL, "the --json output parses");
    if (o == NULL) o = json_object();
    is_int(num(o, "files"), 2, "2 files read");
    is_int(num(o, "malformed"), 2, "2 malformed lines counted");
    json_t *where = json_object_get(o, "malformed_lines");
    ok(json_array_size(where) == 2 && strstr(json_string_value(json_array_get(where, 1)), "audit.log:") != NULL,
       "malformed lines named by file and line: %s", json_string_value(json_array_get(where, 0)));
    is_int(num(o, "by_event.setnx_no_ttl.count"), 157, "setnx_no_ttl: 100 + 50 lock:a, lock:z, hlock:f, 1+4 lock:old");
    is_int(key_events(o, "lock:a"), 150, "lock:a: 150 events, whatever the rate limiter folded");
    is_int(key_events(o, "lock:old"), 5, "lock:old: the line and its 4 suppressed");
    is_int(num(o, "by_event.foreign_release.count"), 1, "1 foreign_release");
    is_int(num(o, "refused_releases.foreign_release.audit"), 1, "refused releases: 1 in audit mode");
    is_int(num(o, "refused_releases.foreign_release.refused"), 0, "refused releases: none refused");
    is_int(num(o, "by_event.ttl_capped.count"), 1, "1 ttl_capped");
    is_int(num(o, "by_event.max_hold.count"), 1, "1 max_hold");
    is_int(num(o, "rules.hlock:.events"), num(o, "rules.hlock:.by_event.setnx_no_ttl") +
           num(o, "rules.hlock:.by_event.max_hold") + num(o, "rules.hlock:.by_event.del_unchecked"),
           "rule hlock: its events add up");
    is_int(num(o, "held_ms.count"), 1, "hold times: one held_ms (max_hold)");
    ok(num(o, "held_ms.max") >= 600, "held_ms max %lld >= max-hold 600", num(o, "held_ms.max"));
    is_int(client_events(o, "10.9.9.9"), 5, "client 10.9.9.9: 5 events (grouped by IP, not ip:port)");
    is_int(client_events(o, "127.0.0.1"), num(o, "events") - 5, "client 127.0.0.1: every other event");
    ok(advice_has(o, "max-ttl would cap 1 acquisitions"), "advice: max-ttl would cap 1 acquisitions");
    ok(advice_has(o, "releases from other connections of 127.0.0.1"), "advice: owner=auto for 127.0.0.1");
    ok(advice_has(o, "owner=auto fits"), "advice: owner=auto fits");
    ok(advice_has(o, "2 malformed lines"), "advice: the malformed lines");
    if (sup > 0) ok(num(o, "suppressed") >= sup + 4, "suppressed %lld counted", num(o, "suppressed"));
    else skip(1, "the limiter folded nothing (a stalled machine)");
    long long all_lines = num(o, "lines"), total = num(o, "events");
    json_decref(o);

    is_int(report(&out, &err, "--json", "--since", "1h", gzpath, logpath), 0, "report --since 1h: exit 0");
    o = parse(&out);
    if (o == NULL) o = json_object();
    is_int(num(o, "before_since"), 1, "--since 1h: the 2020 line left out");
    is_int(num(o, "by_event.setnx_no_ttl.count"), 152, "--since 1h: setnx_no_ttl 152");
    is_int(num(o, "events"), total - 5, "--since 1h: 5 events fewer");
    json_decref(o);

    is_int(report(&out, &err, "--json", gzpath, NULL, NULL, NULL), 0, "report of the .gz alone: exit 0");
    o = parse(&out);
    if (o == NULL) o = json_object();
    long long gz_lines = num(o, "lines");
    is_int(num(o, "malformed"), 0, ".gz: no malformed line");
    ok(gz_lines > 0 && num(o, "by_event.foreign_release.count") == 1, ".gz: %lld lines, the foreign release among them", gz_lines);
    json_decref(o);
    is_int(report(&out, &err, "--json", logpath, NULL, NULL, NULL), 0, "report of the plain log alone");
    o = parse(&out);
    if (o == NULL) o = json_object();
    is_int(num(o, "lines") + gz_lines, all_lines, "lines of both = lines of each added");
    json_decref(o);

    /* The text report: same counts. */
    is_int(report(&out, &err, gzpath, logpath, NULL, NULL, NULL), 0, "text report: exit 0");
    char want[128];
    snprintf(want, sizeof want, "events: %lld (", total);
    ok(out.data && strstr(out.data, want), "text: \"%s\"", want);
    ok(out.data && strstr(out.data, "2 malformed"), "text: 2 malformed");
    ok(out.data && strstr(out.data, "       150        0  lock:        lock:a"), "text: lock:a 150 among the hottest keys");
    ok(out.data && strstr(out.data, "foreign_release: 0 refused, 1 in audit mode"), "text: refused releases");
    ok(out.data && strstr(out.data, "Advice\n  - "), "text: advice");
    if (!ok(out.data && strstr(out.data, "max-ttl would cap 1"), "text: max-ttl advice")) diag("%s", out.data);

    /* Errors. */
    char missing[4096];
    snprintf(missing, sizeof missing, "%s/nope.log", hp_tmpdir());
    is_int(report(&out, &err, missing, NULL, NULL, NULL, NULL), 1, "a missing file: exit 1");
    ok(err.data && strstr(err.data, "nope.log: No such file"), "and it is named: %s", hp_esc(err.data, err.len, 200));
    is_int(report(&out, &err, "--since", "soon", logpath, NULL, NULL), 1, "--since soon: exit 1");
    ok(err.data && strstr(err.data, "--since: bad duration 'soon'"), "and it says why");
    is_int(report(&out, &err, NULL, NULL, NULL, NULL, NULL), 1, "no file: exit 1");
    hp_buf_free(&out);
    hp_buf_free(&err);
    return 0;
}
