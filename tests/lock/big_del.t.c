/* A DEL of 1,000,000 lock keys through the proxy ("rule lock: enforce").
 *
 * The proxy sends it as release.lua calls of 1,000 keys each, one after the other, so other
 * clients are served between them; the client gets the same integer reply as Redis gives a
 * plain DEL (the count of keys deleted). Each part is atomic, the whole command is not (see
 * the README).
 *
 *   direct   DEBUG POPULATE 1000000 lock:d, then DEL of all the keys straight to Redis:
 *            :1000000; its time (Redis is blocked for it) is measured.
 *   proxy    the same keys again, 100 of them acquired through the proxy by this client
 *            (SET NX PX 60000, so they have lease records) and 100 by another connection
 *            (owner=auto on loopback: the same owner, so they are deleted too), then the
 *            DEL through the proxy: :1000000, no lock key, record or lease left; the
 *            audit log has fewer than 100 lines for it (events of one kind beyond 16 are
 *            summed into one line) and no log_dropped line; a client connected to Redis
 *            keeps getting PONG meanwhile.
 *   UNLINK   200,000 keys with UNLINK through the proxy: :200000.
 *   odd      a DEL of 2,500 keys where every other one does not exist and a few are
 *            ordinary keys (no rule): the count matches Redis's own for the same keys.
 *
 * Another client's PING latency while each big DEL runs (p99 and max), and both DELs' times,
 * are reported with diag; the ratio is a benchmark number, not asserted here. */
#include <pthread.h>
#include <time.h>

#include "lock/deploy_util.h"

#define NKEYS 1000000

static hp_proc *redis, *proxy;
static char logpath[4096];

typedef struct pinger {
    const hp_proc *target;
    volatile int stop;
    long long *lat_us;
    size_t n, cap;
    int errors;
} pinger;

static long long now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static void *ping_loop(void *arg)
{
    pinger *p = arg;
    redisContext *c = hp_redis_connect(p->target);
    while (c != NULL && !p->stop) {
        long long t = now_us();
        redisReply *r = redisCommand(c, "PING");
        if (r == NULL || r->type != REDIS_REPLY_STATUS) p->errors++;
        freeReplyObject(r);
        if (r == NULL) break;
        if (p->n < p->cap) p->lat_us[p->n++] = now_us() - t;
        usleep(200);
    }
    if (c) redisFree(c);
    return NULL;
}

static int cmp_ll(const void *a, const void *b)
{
    long long x = *(const long long *)a, y = *(const long long *)b;
    return x < y ? -1 : x > y;
}

/* Sends DEL/UNLINK of prefix:0..n-1 to target on a raw socket; returns the integer reply
 * (or -1) and the time it took in *ms, with another client's PING latencies in *pg. */
static long long big_del(const hp_proc *target, const char *cmd, const char *prefix, int n, long long *ms, pinger *pg)
{
    hp_buf req = {0};
    hp_buf_printf(&req, "*%d\r\n$%zu\r\n%s\r\n", n + 1, strlen(cmd), cmd);
    for (int i = 0; i < n; i++) {
        char k[64];
        int kl = snprintf(k, sizeof k, "%s:%d", prefix, i);
        hp_buf_printf(&req, "$%d\r\n%s\r\n", kl, k);
    }
    int fd = hp_connect_proc(target, 5000);
    if (fd < 0) hp_bail("connect: %s", strerror(errno));
    memset(pg, 0, sizeof(*pg));
    pg->target = redis;
    pg->cap = 200000;
    pg->lat_us = calloc(pg->cap, sizeof(long long));
    pthread_t th;
    pthread_create(&th, NULL, ping_loop, pg);
    usleep(20000);
    long long t0 = hp_now_ms();
    hp_buf out = {0};
    long long v = -1;
    if (hp_send_all(fd, req.data, req.len, 60000) == HP_IO_OK &&
        hp_read_until(fd, &out, 0, "\r\n", 120000) == HP_IO_OK && out.len > 1 && out.data[0] == ':')
        v = atoll(out.data + 1);
    else
        diag("%s through %s: '%s'", cmd, target->name, hp_esc(out.data, out.len, 200));
    *ms = hp_now_ms() - t0;
    usleep(20000);
    pg->stop = 1;
    pthread_join(th, NULL);
    close(fd);
    hp_buf_free(&req);
    hp_buf_free(&out);
    return v;
}

static void report(const char *what, long long ms, pinger *pg)
{
    long long p99 = 0, max = 0;
    if (pg->n > 0) {
        qsort(pg->lat_us, pg->n, sizeof(long long), cmp_ll);
        p99 = pg->lat_us[(pg->n * 99) / 100];
        max = pg->lat_us[pg->n - 1];
    }
    diag("%s: %lld ms; another client's PING meanwhile: %zu answered, p99 %.1f ms, max %.1f ms", what, ms, pg->n,
         (double)p99 / 1000.0, (double)max / 1000.0);
}

static long long count_lines(const char *path, const char *needle)
{
    FILE *f = fopen(path, "r");
    if (f == NULL) return -1;
    char line[8192];
    long long n = 0;
    while (fgets(line, sizeof line, f))
        if (needle == NULL || strstr(line, needle)) n++;
    fclose(f);
    return n;
}

int main(void)
{
    lk_require_real_proxy();
    plan_lazy();
    redis = hp_redis_start(NULL);
    proxy = lk_proxy_start(redis, "big_del", "rule lock: enforce", logpath, sizeof logpath);
    pinger pg;
    long long ms;

    ok(hp_cmd_ok(redis, "DEBUG POPULATE %d lock:d", NKEYS), "DEBUG POPULATE %d lock:d", NKEYS);
    is_int(big_del(redis, "DEL", "lock:d", NKEYS, &ms, &pg), NKEYS, "direct: DEL of %d keys answers :%d", NKEYS, NKEYS);
    long long direct_ms = ms;
    report("direct DEL of 1,000,000 keys", ms, &pg);
    free(pg.lat_us);

    ok(hp_cmd_ok(redis, "DEBUG POPULATE %d lock:d", NKEYS), "the keys again");
    /* 100 held through the proxy by this client, 100 by another connection. */
    redisContext *a = lk_connect(proxy), *b = lk_connect(proxy);
    int held = 0;
    for (int i = 0; i < 200; i++) {
        lk_int(a, "DEL lock:d:%d", i);   /* make room for an acquire */
        const char *r = lk_str(i < 100 ? a : b, "SET lock:d:%d t%d NX PX 60000", i, i);
        if (strcmp(r, "+OK") == 0) held++;
    }
    is_int(held, 200, "200 of them acquired through the proxy (lease records)");
    long long lines0 = count_lines(logpath, NULL);
    is_int(big_del(proxy, "DEL", "lock:d", NKEYS, &ms, &pg), NKEYS, "through the proxy: the same :%d", NKEYS);
    long long proxy_ms = ms;
    report("DEL of 1,000,000 lock keys through the proxy", ms, &pg);
    is_int(pg.errors, 0, "the other client got PONG every time");
    ok(pg.n > 0, "  and was answered while the DEL ran (%zu PINGs)", pg.n);
    free(pg.lat_us);
    diag("DEL through the proxy took %.1fx the direct DEL (%lld ms vs %lld ms)", direct_ms > 0 ? (double)proxy_ms / (double)direct_ms : 0.0,
         proxy_ms, direct_ms);
    is_int(dp_count_keys(redis, "lock:d"), 0, "no lock key left");
    is_int(dp_count_records(redis), 0, "no lease record left");
    lk_log_sync(proxy, logpath);
    long long lines = count_lines(logpath, NULL) - lines0;
    ok(lines > 0 && lines < 100, "the audit log has %lld lines for it (capped per kind, with counts)", lines);
    is_int(count_lines(logpath, "log_dropped"), 0, "no audit line dropped");
    ok(count_lines(logpath, "more lock keys of this command") == 1, "  one del_unchecked summary line");
    ok(count_lines(logpath, "more keys of this command with the same verdict") >= 1, "  and an unknown_lease summary");

    ok(hp_cmd_ok(redis, "DEBUG POPULATE 200000 lock:u"), "200,000 keys lock:u");
    is_int(big_del(proxy, "UNLINK", "lock:u", 200000, &ms, &pg), 200000, "UNLINK of 200,000 lock keys through the proxy: :200000");
    free(pg.lat_us);
    is_int(dp_count_keys(redis, "lock:u"), 0, "  none left");

    /* Every other key missing, and ordinary keys among them: the count is Redis's. */
    hp_buf req = {0};
    hp_buf_printf(&req, "*%d\r\n$3\r\nDEL\r\n", 2500 + 1);
    int want = 0;
    for (int i = 0; i < 2500; i++) {
        char k[32];
        if (i % 100 == 7) snprintf(k, sizeof k, "plain:%d", i);
        else snprintf(k, sizeof k, "lock:o:%d", i);
        if (i % 2 == 0) {
            hp_cmd_ok(redis, "SET %s v", k);
            want++;
        }
        hp_buf_printf(&req, "$%zu\r\n%s\r\n", strlen(k), k);
    }
    int fd = hp_connect_proc(proxy, 5000);
    hp_buf out = {0};
    hp_send_all(fd, req.data, req.len, 10000);
    hp_read_until(fd, &out, 0, "\r\n", 30000);
    char wantline[32];
    snprintf(wantline, sizeof wantline, ":%d\r\n", want);
    ok(out.len == strlen(wantline) && memcmp(out.data, wantline, out.len) == 0,
       "2,500 keys, half missing, some ordinary, in 3 parts: %s (Redis: %d)", hp_esc(out.data, out.len, 40), want);
    close(fd);
    hp_buf_free(&out);
    hp_buf_free(&req);
    is_int(dp_count_keys(redis, "lock:o") + dp_count_keys(redis, "plain:"), 0, "  none left");

    redisFree(a);
    redisFree(b);
    is_int(hp_stop(proxy, 10000), 0, "the proxy exits 0");
    hp_stop(redis, 5000);
    return 0;
}
