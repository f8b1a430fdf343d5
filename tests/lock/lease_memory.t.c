/* The lease cache is bounded in bytes (lease-cache-bytes) and a full cache loses no safety.
 *
 *   big tokens   600 x SET lock:big<i> <1 MiB token> NX PX 1 through a proxy with the default
 *                budget (64mb), 8 in flight at a time: every reply +OK, and 3 s later the
 *                proxy's VmRSS is within 48 MiB of what it was before (the cache keeps the
 *                token's SHA-1, not the token; freed memory goes back to the system). The
 *                "memory:" line the proxy logs at SIGHUP says the cache holds at most
 *                600 * 512 bytes. Peak and final RSS are reported with diag.
 *   full cache   a proxy with lease-cache-bytes 64kb (a few hundred leases) and 40 client
 *                connections: 120,000 leases, each acquired (SET NX PX 60000) and released
 *                (DEL) by its holder in pipelined rounds, so the cache evicts all the time.
 *                Interleaved, 200 late releases (A's lease ends by its 40 ms TTL, B takes the
 *                key, A's DEL must answer 0 and B keep its lock) and 200 foreign releases on
 *                an owner=connection rule (B's DEL of A's lock answers 0). Asserted: 0
 *                refused legitimate releases, 0 foreign or late deletions, 0 locks left, the
 *                proxy logged evictions, and its memory line says the budget held. */
#include <signal.h>
#include <time.h>

#include "lock/deploy_util.h"

static hp_proc *redis;

static long long rss_kb(pid_t pid)
{
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    FILE *f = fopen(path, "r");
    if (f == NULL) return -1;
    long long kb = -1;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "VmRSS: %lld kB", &kb) == 1) break;
    fclose(f);
    return kb;
}

static hp_proc *start(const char *name, const char *conf, const char *policy, char *logpath, size_t cap)
{
    char file[64], text[4096];
    snprintf(file, sizeof file, "%s.conf", name);
    const char *confpath = lk_write_file(file, conf);
    snprintf(file, sizeof file, "%s.policy", name);
    snprintf(text, sizeof text, "%s\nrule sync: enforce\n", policy);
    const char *pol = lk_write_file(file, text);
    snprintf(logpath, cap, "%s/%s.audit.log", hp_tmpdir(), name);
    const char *extra[] = {"-c", confpath, "--policy", pol, "--log", logpath, NULL};
    return hp_proxy_start(redis, extra);
}

/* The numbers of the last "memory:" line the proxy logged after a SIGHUP. */
static int memory_line(hp_proc *px, unsigned long long *leases, unsigned long long *bytes,
                       unsigned long long *evicted_live, unsigned long long *evicted_dead)
{
    hp_signal(px, SIGHUP);
    for (int tries = 0; tries < 100; tries++) {
        hp_sleep_ms(50);
        hp_buf log = {0};
        hp_log_read(px, &log);
        hp_buf_append(&log, "", 1);
        const char *p = NULL, *q = log.data;
        while ((q = strstr(q, "memory: lease cache ")) != NULL) p = q++;
        int n = p ? sscanf(p, "memory: lease cache %llu leases, %llu bytes (budget %*d), evicted %llu live %llu expired",
                           leases, bytes, evicted_live, evicted_dead) : 0;
        hp_buf_free(&log);
        if (n == 4) return 0;
    }
    return -1;
}

static void big_tokens(void)
{
    char logpath[4096];
    hp_proc *px = start("bigtok", "# defaults\n", "rule lock: enforce", logpath, sizeof logpath);
    redisContext *c = lk_connect(px);
    lk_str(c, "PING");   /* warm */
    long long before = rss_kb(px->pid), peak = before;
    size_t len = 1 << 20;
    char *tok = malloc(len);
    if (tok == NULL) hp_bail("out of memory");
    int okc = 0;
    for (int base = 0; base < 600; base += 8) {
        for (int i = base; i < base + 8; i++) {
            memset(tok, 'a' + i % 26, len);
            tok[0] = (char)('0' + i % 10);
            redisAppendCommand(c, "SET lock:big%d %b NX PX 1", i, tok, len);
        }
        for (int i = base; i < base + 8; i++) {
            redisReply *r = NULL;
            if (redisGetReply(c, (void **)&r) != REDIS_OK) hp_bail("SET lock:big%d: %s", i, c->errstr);
            if (r->type == REDIS_REPLY_STATUS && strcmp(r->str, "OK") == 0) okc++;
            freeReplyObject(r);
        }
        long long now = rss_kb(px->pid);
        if (now > peak) peak = now;
    }
    free(tok);
    is_int(okc, 600, "600 SET lock:big<i> <1 MiB> NX PX 1: every one +OK");
    hp_sleep_ms(3000);
    long long after = rss_kb(px->pid);
    diag("proxy VmRSS: %lld kB before, peak %lld kB, %lld kB 3 s after", before, peak, after);
#if defined(__SANITIZE_ADDRESS__)
    skip(1, "AddressSanitizer's allocator keeps freed memory (quarantine): RSS says nothing here");
#else
    ok(after >= 0 && after - before < 48 * 1024, "3 s later the proxy holds less than 48 MiB more than before (%lld kB more)",
       after - before);
#endif
    unsigned long long leases = 0, bytes = 0, el = 0, ed = 0;
    ok(memory_line(px, &leases, &bytes, &el, &ed) == 0, "the proxy logs its memory line at SIGHUP");
    diag("lease cache: %llu leases, %llu bytes", leases, bytes);
    ok(bytes < 600 * 512 + 65536, "the lease cache holds %llu bytes for 600 leases of 1 MiB tokens (< 600 * 512 + 64 KiB)", bytes);
    is_int(dp_count_keys(redis, "lock:big"), 0, "Redis holds no lock:big key");
    redisFree(c);
    hp_stop(px, 5000);
    lk_flushall(redis);
}

#define CLIENTS 40
#define LEASES 120000
#define ROUND 100   /* leases per client per round */
#define SPECIAL 200

/* One late release and one foreign release, on two connections of the proxy. Counts what
 * went wrong. */
static void special(hp_proc *px, redisContext *a, redisContext *b, int i, int *bad_late, int *bad_foreign, int *refused)
{
    (void)px;
    char tb[64], ta[64];
    snprintf(ta, sizeof ta, "A-%d", i);
    snprintf(tb, sizeof tb, "B-%d", i);
    /* late: A's lease ends by its TTL, B acquires, A's DEL must not delete B's lock */
    const char *r = lk_str(a, "SET lock:late:%d %s NX PX 40", i, ta);
    if (strcmp(r, "+OK") != 0) { diag("late %d: A's SET answered %s", i, r); (*bad_late)++; return; }
    long long until = hp_now_ms() + 5000;
    while (hp_cmd_int(redis, "EXISTS lock:late:%d", i) == 1 && hp_now_ms() < until) hp_sleep_ms(5);
    r = lk_str(b, "SET lock:late:%d %s NX PX 60000", i, tb);
    if (strcmp(r, "+OK") != 0) { diag("late %d: B's SET answered %s", i, r); (*bad_late)++; return; }
    long long d = lk_int(a, "DEL lock:late:%d", i);
    const char *v = lk_pstr(redis, "GET lock:late:%d", i);
    if (d != 0 || strcmp(v, tb) != 0) { diag("late %d: A's DEL answered %lld, the lock holds '%s'", i, d, v); (*bad_late)++; }
    if (lk_int(b, "DEL lock:late:%d", i) != 1) (*refused)++;
    /* foreign (owner=connection): B's DEL of A's lock is refused */
    r = lk_str(a, "SET conn:f:%d %s NX PX 60000", i, ta);
    if (strcmp(r, "+OK") != 0) { (*bad_foreign)++; return; }
    d = lk_int(b, "DEL conn:f:%d", i);
    v = lk_pstr(redis, "GET conn:f:%d", i);
    if (d != 0 || strcmp(v, ta) != 0) { diag("foreign %d: B's DEL answered %lld, the lock holds '%s'", i, d, v); (*bad_foreign)++; }
    if (lk_int(a, "DEL conn:f:%d", i) != 1) (*refused)++;
}

static void full_cache(void)
{
    char logpath[4096];
    hp_proc *px = start("fullcache", "lease-cache-bytes 64kb\n",
                        "rule lock: enforce\nrule conn: enforce owner=connection", logpath, sizeof logpath);
    redisContext *c[CLIENTS];
    for (int i = 0; i < CLIENTS; i++) c[i] = lk_connect(px);
    long long t0 = hp_now_ms();
    int refused = 0, bad_acquire = 0, bad_late = 0, bad_foreign = 0, lost = 0, specials = 0;
    int rounds = LEASES / (CLIENTS * ROUND);
    for (int round = 0; round < rounds && !lost; round++) {
        /* every client acquires ROUND fresh keys, pipelined */
        for (int k = 0; k < CLIENTS; k++)
            for (int j = 0; j < ROUND; j++)
                redisAppendCommand(c[k], "SET lock:fc:%d:%d:%d t%d.%d NX PX 60000", round, k, j, k, j);
        for (int k = 0; k < CLIENTS && !lost; k++)
            for (int j = 0; j < ROUND; j++) {
                redisReply *r = NULL;
                if (redisGetReply(c[k], (void **)&r) != REDIS_OK) { diag("client %d: %s", k, c[k]->errstr); lost = 1; break; }
                if (!(r->type == REDIS_REPLY_STATUS && strcmp(r->str, "OK") == 0)) bad_acquire++;
                freeReplyObject(r);
            }
        /* the late and foreign cases while the cache is full of other leases */
        int per = SPECIAL / rounds + 1;
        for (int s = 0; s < per && specials < SPECIAL && !lost; s++, specials++)
            special(px, c[specials % CLIENTS], c[(specials + 1) % CLIENTS], specials, &bad_late, &bad_foreign, &refused);
        /* every holder releases its own, pipelined: each DEL must answer 1 */
        for (int k = 0; k < CLIENTS; k++)
            for (int j = 0; j < ROUND; j++)
                redisAppendCommand(c[k], "DEL lock:fc:%d:%d:%d", round, k, j);
        for (int k = 0; k < CLIENTS && !lost; k++)
            for (int j = 0; j < ROUND; j++) {
                redisReply *r = NULL;
                if (redisGetReply(c[k], (void **)&r) != REDIS_OK) { diag("client %d: %s", k, c[k]->errstr); lost = 1; break; }
                if (!(r->type == REDIS_REPLY_INTEGER && r->integer == 1)) {
                    if (refused < 5) diag("DEL lock:fc:%d:%d:%d answered %s", round, k, j, lk_show(r));
                    refused++;
                }
                freeReplyObject(r);
            }
    }
    diag("%d leases on %d connections and %d late/foreign cases in %.1f s", rounds * CLIENTS * ROUND, CLIENTS,
         specials, dp_secs(t0));
    is_int(lost, 0, "no connection lost");
    is_int(rounds * CLIENTS * ROUND, LEASES, "%d leases acquired and released", LEASES);
    is_int(bad_acquire, 0, "every acquire +OK");
    is_int(refused, 0, "0 refused legitimate releases");
    is_int(specials, SPECIAL, "%d late and %d foreign releases tried", SPECIAL, SPECIAL);
    is_int(bad_late, 0, "0 late deletions: each late DEL answered 0 and the new holder kept its lock");
    is_int(bad_foreign, 0, "0 foreign deletions on the owner=connection rule");
    is_int(dp_count_keys(redis, "lock:") + dp_count_keys(redis, "conn:"), 0, "0 locks left behind");
    is_int(dp_count_untimed(redis, "__lockproxy:{lock:late") + dp_count_untimed(redis, "__lockproxy:{conn:"), 0,
           "no lease record or history of the late and foreign cases without a TTL");
    unsigned long long leases = 0, bytes = 0, el = 0, ed = 0;
    ok(memory_line(px, &leases, &bytes, &el, &ed) == 0, "memory line at SIGHUP");
    diag("lease cache: %llu leases, %llu bytes, evicted %llu live and %llu expired", leases, bytes, el, ed);
    ok(bytes <= 64 * 1024, "the cache stayed within its 64 KiB budget (%llu bytes)", bytes);
    ok(el + ed > 100000, "it evicted (%llu leases)", el + ed);
    hp_buf log = {0};
    hp_log_read(px, &log);
    ok(HP_HAS(&log, "lease cache full ("), "the proxy logged that its lease cache was full");
    hp_buf_free(&log);
    for (int i = 0; i < CLIENTS; i++) redisFree(c[i]);
    is_int(hp_stop(px, 5000), 0, "the proxy exits 0");
}

int main(void)
{
    lk_require_real_proxy();
    plan_lazy();
    redis = hp_redis_start(NULL);
    big_tokens();
    full_cache();
    hp_stop(redis, 5000);
    return 0;
}
