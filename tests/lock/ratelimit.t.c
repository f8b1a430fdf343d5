/* Rate-limited audit counts survive shutdown. Identical events (same event, rule, key and
 * client IP) are logged once a second, the rest counted and reported later in a line with
 * "suppressed"; a SIGTERM inside that second must not lose the count. For an enforce rule and
 * an audit rule: 200 SETNX of one lock key, then SIGTERM; in the log, the lines of that
 * event and key (occurrences, each possibly carrying the count of a window before it, and
 * rate-limited summaries) account for all 200: occurrences + sum of suppressed = 200. */
#include "lock/lock_util.h"

#define N 200

/* Counts, over the log lines with "event":"<event>" and "key":"<key>", the occurrences (lines
 * that are not rate-limited summaries) and the sum of their "suppressed" values. */
static void tally(const hp_buf *log, const char *event, const char *key, int *occurrences, long long *suppressed,
                  int *summaries)
{
    char ev[128], k[256];
    snprintf(ev, sizeof ev, "\"event\":\"%s\"", event);
    snprintf(k, sizeof k, "\"key\":\"%s\"", key);
    *occurrences = 0;
    *suppressed = 0;
    *summaries = 0;
    const char *p = log->data, *end = log->data + log->len;
    while (p != NULL && p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        size_t len = nl ? (size_t)(nl - p) : (size_t)(end - p);
        char line[8192];
        size_t n = len < sizeof line - 1 ? len : sizeof line - 1;
        memcpy(line, p, n);
        line[n] = '\0';
        p = nl ? nl + 1 : NULL;
        if (strstr(line, ev) == NULL || strstr(line, k) == NULL) continue;
        const char *s = strstr(line, "\"suppressed\":");
        if (s != NULL) *suppressed += strtoll(s + 13, NULL, 10);
        if (strstr(line, "\"detail\":\"rate-limited\"") != NULL) (*summaries)++;
        else (*occurrences)++;
    }
}

/* N pipelined SETNX of key on one connection; returns the number of replies that are :0 or :1. */
static int send_setnx(const hp_proc *proxy, const char *key)
{
    hp_buf req = {0}, out = {0};
    for (int i = 0; i < N; i++) hp_buf_cmd(&req, "SETNX %s v%d", key, i);
    int fd = lk_raw_open(proxy);
    int closed = 0;
    hp_exchange(fd, req.data, req.len, &out, 200, 10000, &closed);
    close(fd);
    int replies = (int)(hp_buf_count(&out, ":1\r\n") + hp_buf_count(&out, ":0\r\n"));
    hp_buf_free(&req);
    hp_buf_free(&out);
    return replies;
}

int main(void)
{
    lk_require_real_proxy();
    plan_lazy();
    hp_proc *redis = hp_redis_start(NULL);
    char logpath[4096];
    hp_proc *px = lk_proxy_start(redis, "ratelimit", "rule lock: enforce\nrule alock: audit", logpath, sizeof logpath);

    long long t0 = hp_now_ms();
    is_int(send_setnx(px, "lock:x"), N, "enforce: %d SETNX of lock:x answered", N);
    is_int(send_setnx(px, "alock:x"), N, "audit: %d SETNX of alock:x answered", N);
    long long took = hp_now_ms() - t0;
    is_int(hp_stop(px, 10000), 0, "SIGTERM: the proxy exits 0");
    diag("sent in %lld ms, then SIGTERM", took);

    hp_buf log = {0};
    lk_read_file(logpath, &log);
    static const struct { const char *key, *name; } cases[] = {{"lock:x", "enforce"}, {"alock:x", "audit"}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int occ, summaries;
        long long sup;
        tally(&log, "setnx_no_ttl", cases[i].key, &occ, &sup, &summaries);
        diag("%s: %d occurrence line(s), %d summary line(s), %lld suppressed", cases[i].name, occ, summaries, sup);
        is_int(occ + sup, N, "%s: occurrences + suppressed counts in the log = %d", cases[i].name, N);
        if (took < 900) {
            /* All inside one window: one line logged at once, the rest counted in the summary
             * written at shutdown. */
            is_int(occ, 1, "%s: sent within a second: 1 occurrence logged", cases[i].name);
            is_int(sup, N - 1, "%s: and %d suppressed, reported at shutdown", cases[i].name, N - 1);
        } else {
            skip(2, "sending took %lld ms: the events span more than one window", took);
        }
    }
    lk_check_json_log(logpath, "ratelimit");
    hp_buf_free(&log);
    return 0;
}
