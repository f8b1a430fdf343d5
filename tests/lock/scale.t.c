/* 120,000 leases through one proxy (rule "lock: enforce"), on one connection:
 *
 *   acquire   SET lock:s:<i> <uuid-i> NX PX 60000 for i < 120000, pipelined in batches of
 *             2,000: every reply +OK; then Redis holds exactly 120,000 lock keys, 120,000
 *             lease records (__lockproxy:{lock:s:<i>}:r:lock:s:<i>, each with the token's
 *             SHA1 and a TTL), 120,000 histories (__lockproxy:{...}:h:..., 10 min past the
 *             lease) and nothing else (DBSIZE = 360,000); no record without a TTL.
 *   release   DEL lock:s:<i> for every i, pipelined the same way on the same connection:
 *             every reply :1; then no lock key and no record is left, DBSIZE is at most the
 *             number of histories, and every key left is a history with a TTL.
 *
 * The time each phase took and the proxy's VmRSS (before, after the acquires, after the
 * releases) are reported with diag, not asserted. */
#include <time.h>

#include "lock/deploy_util.h"

#define N 120000
#define BATCH 2000

static hp_proc *redis, *proxy;
static char logpath[4096];

/* CPU time (user + system) a process used so far, in ms. */
static long long cpu_ms(pid_t pid)
{
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    if (f == NULL) return -1;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    const char *p = strrchr(buf, ')');
    unsigned long long ut = 0, st = 0;
    /* after "pid (comm)": state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime stime */
    if (p == NULL || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &st) != 2) return -1;
    return (long long)(ut + st) * 1000 / sysconf(_SC_CLK_TCK);
}

/* Pipelines fmt(i, token) for every i on c in batches; returns how many replies were want. */
static long long pipeline(redisContext *c, const char *cmd, char (*tokens)[37], int want_int, char *first_bad,
                          size_t cap, int *lost)
{
    long long good = 0, bad = 0;
    *lost = 0;
    for (int base = 0; base < N && !*lost; base += BATCH) {
        int n = N - base < BATCH ? N - base : BATCH;
        for (int i = base; i < base + n; i++) {
            if (want_int) redisAppendCommand(c, "%s lock:s:%d", cmd, i);
            else redisAppendCommand(c, "%s lock:s:%d %s NX PX 60000", cmd, i, tokens[i]);
        }
        for (int i = base; i < base + n; i++) {
            redisReply *r = NULL;
            if (redisGetReply(c, (void **)&r) != REDIS_OK) {
                diag("%s %d: %s", cmd, i, c->errstr);
                *lost = 1;
                break;
            }
            int is_good = want_int ? r->type == REDIS_REPLY_INTEGER && r->integer == 1
                                   : r->type == REDIS_REPLY_STATUS && strcmp(r->str, "OK") == 0;
            if (is_good) good++;
            else if (bad++ == 0) snprintf(first_bad, cap, "%s lock:s:%d: %s", cmd, i, lk_show(r));
            freeReplyObject(r);
        }
    }
    return good;
}

static long long vmrss_kb(pid_t pid)
{
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    FILE *f = fopen(path, "r");
    if (f == NULL) return -1;
    long long kb = -1;
    while (fgets(line, sizeof line, f) != NULL)
        if (strncmp(line, "VmRSS:", 6) == 0) kb = atoll(line + 6);
    fclose(f);
    return kb;
}

typedef struct census {
    long long locks, records, histories, other;
    long long untimed;           /* keys without a TTL (PTTL -1) */
    long long untimed_other;     /* ... that are not locks (the locks' own TTLs are checked apart) */
    long long hist_max_pttl;
    char first_other[256];
    char first_untimed[256];
} census;

/* One SCAN over the whole keyspace, classifying every key, with PTTL pipelined per page. */
static void take_census(redisContext *c, census *out)
{
    memset(out, 0, sizeof *out);
    char cursor[32] = "0";
    do {
        redisReply *r = redisCommand(c, "SCAN %s COUNT 5000", cursor);
        if (r == NULL || r->type != REDIS_REPLY_ARRAY || r->elements != 2) {
            diag("SCAN failed: %s", r == NULL ? c->errstr : lk_show(r));
            freeReplyObject(r);
            out->other = -1;
            return;
        }
        snprintf(cursor, sizeof cursor, "%s", r->element[0]->str);
        redisReply *keys = r->element[1];
        for (size_t i = 0; i < keys->elements; i++)
            redisAppendCommand(c, "PTTL %b", keys->element[i]->str, (size_t)keys->element[i]->len);
        for (size_t i = 0; i < keys->elements; i++) {
            const char *k = keys->element[i]->str;
            redisReply *p = NULL;
            if (redisGetReply(c, (void **)&p) != REDIS_OK || p == NULL || p->type != REDIS_REPLY_INTEGER) {
                diag("PTTL %s failed", k);
                freeReplyObject(p);
                out->other = -1;
                freeReplyObject(r);
                return;
            }
            long long pttl = p->integer;
            freeReplyObject(p);
            int is_lock = strncmp(k, "lock:s:", 7) == 0;
            int is_rec = strncmp(k, DP_RECORD_PREFIX "{", 13) == 0 && strstr(k, "}:r:") != NULL;
            int is_hist = strncmp(k, DP_RECORD_PREFIX "{", 13) == 0 && strstr(k, "}:h:") != NULL;
            if (is_lock) out->locks++;
            else if (is_rec) out->records++;
            else if (is_hist) {
                out->histories++;
                if (pttl > out->hist_max_pttl) out->hist_max_pttl = pttl;
            } else {
                if (out->other == 0) snprintf(out->first_other, sizeof out->first_other, "%s", k);
                out->other++;
            }
            if (pttl == -1) {
                if (out->untimed == 0) snprintf(out->first_untimed, sizeof out->first_untimed, "%s", k);
                out->untimed++;
                if (!is_lock) out->untimed_other++;
            }
        }
        freeReplyObject(r);
    } while (strcmp(cursor, "0") != 0);
}

static void show(const char *when, const census *c, long long dbsize)
{
    diag("%s: DBSIZE %lld: %lld locks, %lld records, %lld histories (max PTTL %lld), %lld other%s%s; %lld without TTL%s%s",
         when, dbsize, c->locks, c->records, c->histories, c->hist_max_pttl, c->other, c->other ? ", e.g. " : "",
         c->first_other, c->untimed, c->untimed ? ", e.g. " : "", c->first_untimed);
}

int main(void)
{
    lk_require_real_proxy();
    plan_lazy();
    redis = hp_redis_start(NULL);
    proxy = lk_proxy_start(redis, "scale", "rule lock: enforce", logpath, sizeof logpath);
    lk_flushall(redis);
    long long rss0 = vmrss_kb(proxy->pid);

    redisContext *c = lk_connect(proxy);
    struct timeval tv = { 30, 0 };
    redisSetTimeout(c, tv);
    char (*tokens)[37] = malloc((size_t)N * 37);
    if (tokens == NULL) hp_abort("out of memory");
    {
        /* UUIDs (version 4) from one read of /dev/urandom. */
        unsigned char *rnd = malloc((size_t)N * 16);
        FILE *f = fopen("/dev/urandom", "rb");
        if (rnd == NULL || f == NULL || fread(rnd, 16, N, f) != N) hp_abort("cannot read /dev/urandom");
        fclose(f);
        for (int i = 0; i < N; i++) {
            unsigned char *b = rnd + (size_t)i * 16;
            b[6] = (unsigned char)((b[6] & 0x0f) | 0x40);
            b[8] = (unsigned char)((b[8] & 0x3f) | 0x80);
            snprintf(tokens[i], 37, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", b[0], b[1],
                     b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]);
        }
        free(rnd);
    }

    /* For reference: the same pipeline straight to Redis (then flushed). */
    {
        redisContext *d0 = lk_connect(redis);
        redisSetTimeout(d0, tv);
        char fb[256] = "";
        int lost0;
        long long s0 = hp_now_ms();
        long long g0 = pipeline(d0, "SET", tokens, 0, fb, sizeof fb, &lost0);
        long long s1 = hp_now_ms();
        g0 += pipeline(d0, "DEL", tokens, 1, fb, sizeof fb, &lost0);
        diag("direct, for reference: %d SET NX PX in %lld ms, %d DEL in %lld ms (%lld good replies of %d)", N, s1 - s0,
             N, hp_now_ms() - s1, g0, 2 * N);
        redisFree(d0);
        lk_flushall(redis);
    }

    /* Acquires. */
    long long pc0 = cpu_ms(proxy->pid), rc0 = cpu_ms(redis->pid);
    long long t0 = hp_now_ms();
    char first_bad[256] = "";
    int lost;
    long long good = pipeline(c, "SET", tokens, 0, first_bad, sizeof first_bad, &lost), bad = N - good;
    long long t_acq = hp_now_ms() - t0;
    long long rss1 = vmrss_kb(proxy->pid);
    long long pc1 = cpu_ms(proxy->pid), rc1 = cpu_ms(redis->pid);
    diag("acquires: %d SET NX PX in %lld ms (%.0f/s); %lld +OK, %lld other%s%s; CPU: proxy %lld ms, redis %lld ms", N,
         t_acq, t_acq > 0 ? N * 1000.0 / (double)t_acq : 0.0, good, bad, bad ? ", first: " : "", first_bad, pc1 - pc0,
         rc1 - rc0);
    diag("proxy VmRSS: %lld kB before, %lld kB after %d acquires (+%lld kB, %.0f bytes a lease)", rss0, rss1, N,
         rss1 - rss0, rss0 > 0 && rss1 > 0 ? (double)(rss1 - rss0) * 1024.0 / N : 0.0);
    is_int(good, N, "acquire: all %d SET NX PX answered +OK", N);
    if (lost) hp_abort("the proxy connection failed during the acquires");

    redisContext *d = lk_connect(redis);
    redisSetTimeout(d, tv);
    census k;
    long long t1 = hp_now_ms();
    long long dbsize = hp_cmd_int(redis, "DBSIZE");
    take_census(d, &k);
    show("after the acquires", &k, dbsize);
    diag("census took %lld ms", hp_now_ms() - t1);
    is_int(k.locks, N, "acquire: Redis holds %d lock keys", N);
    is_int(k.records, N, "acquire: Redis holds %d lease records", N);
    is_int(k.histories, N, "acquire: and %d histories", N);
    is_int(k.other, 0, "acquire: and nothing else");
    is_int(dbsize, 3LL * N, "acquire: DBSIZE = locks + records + histories");
    is_int(k.untimed, 0, "acquire: every lock, record and history has a TTL");
    {
        /* A sample of records: they name the token's SHA1 and carry the lock's TTL. */
        int sample_good = 0, samples = 0;
        for (int i = 0; i < N; i += N / 20) {
            samples++;
            redisReply *h = redisCommand(d, "HGET __lockproxy:{lock:s:%d}:r:lock:s:%d token_sha1", i, i);
            redisReply *s = redisCommand(d, "EVAL %s 0 %s", "return redis.sha1hex(ARGV[1])", tokens[i]);
            long long lp = lk_int(d, "PTTL lock:s:%d", i), rp = lk_int(d, "PTTL __lockproxy:{lock:s:%d}:r:lock:s:%d", i, i);
            if (h != NULL && s != NULL && h->type == REDIS_REPLY_STRING && s->type == REDIS_REPLY_STRING &&
                strcmp(h->str, s->str) == 0 && lp > 0 && rp > 0 && rp <= lp + 5 && lp <= rp + 5000)
                sample_good++;
            else
                diag("record of lock:s:%d: token_sha1 %s, want %s, lock PTTL %lld, record PTTL %lld", i, lk_show(h),
                     lk_show(s), lp, rp);
            freeReplyObject(h);
            freeReplyObject(s);
        }
        is_int(sample_good, samples, "acquire: sampled records hold the token's SHA1 and the lock's TTL (%d/%d)",
               sample_good, samples);
    }

    /* Releases. */
    long long pc2 = cpu_ms(proxy->pid), rc2 = cpu_ms(redis->pid);
    long long t2 = hp_now_ms();
    first_bad[0] = '\0';
    good = pipeline(c, "DEL", tokens, 1, first_bad, sizeof first_bad, &lost);
    bad = N - good;
    long long t_del = hp_now_ms() - t2;
    long long rss2 = vmrss_kb(proxy->pid);
    long long pc3 = cpu_ms(proxy->pid), rc3 = cpu_ms(redis->pid);
    diag("releases: %d DEL in %lld ms (%.0f/s); %lld :1, %lld other%s%s; CPU: proxy %lld ms, redis %lld ms", N, t_del,
         t_del > 0 ? N * 1000.0 / (double)t_del : 0.0, good, bad, bad ? ", first: " : "", first_bad, pc3 - pc2, rc3 - rc2);
    diag("proxy VmRSS after the releases: %lld kB", rss2);
    is_int(good, N, "release: all %d DEL answered :1", N);
    if (lost) hp_abort("the proxy connection failed during the releases");

    long long t3 = hp_now_ms();
    dbsize = hp_cmd_int(redis, "DBSIZE");
    take_census(d, &k);
    show("after the releases", &k, dbsize);
    diag("census took %lld ms", hp_now_ms() - t3);
    is_int(k.locks, 0, "release: no lock key left");
    is_int(k.records, 0, "release: no lease record left");
    is_int(k.other, 0, "release: nothing else left");
    ok(dbsize <= k.histories && k.histories <= N, "release: DBSIZE (%lld) is at most the histories (%lld)", dbsize,
       k.histories);
    is_int(k.untimed, 0, "release: every key left (the histories) has a TTL");
    ok(k.hist_max_pttl <= 60000 + 600000, "release: the histories end within 10 min of the leases (max PTTL %lld)",
       k.hist_max_pttl);

    redisFree(d);
    redisFree(c);
    free(tokens);
    is_int(hp_stop(proxy, 10000), 0, "the proxy exits 0 on SIGTERM");
    return 0;
}
