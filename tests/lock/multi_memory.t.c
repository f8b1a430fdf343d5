/* What a transaction full of lock commands costs Redis: MULTI, 100,000 x DEL lock:m, then
 * (before DISCARD) Redis's INFO memory used_memory against what it was before the MULTI,
 * straight to Redis and through the proxy ("rule lock: enforce").
 *
 * Through the proxy each queued DEL is an EVALSHA of release.lua (its SHA, the lock key, its
 * record and history keys, the owner, mode, id and token), and the script itself is queued
 * once ("EVAL <script> 0", which loads it), not once per command. Asserted: the proxy's
 * transaction costs Redis at most 6x the direct one (it was about 12x when each queued
 * command carried the whole script); every DEL got +QUEUED and DISCARD +OK; then
 * MULTI, DEL lock:m (held by this client), EXEC answers [1] and the lock is gone, after a
 * SCRIPT FLUSH run between the queueing and the EXEC (the script is loaded by the
 * transaction itself). The measured ratio is reported with diag. */
#include "lock/deploy_util.h"

#define N 100000

static long long used_memory(const hp_proc *redis)
{
    return hp_info_int(redis, "used_memory");
}

/* MULTI + N x DEL lock:m on a raw connection to target; returns Redis's used_memory growth
 * measured while the transaction is queued, then DISCARDs it. */
static long long queued_cost(const hp_proc *target, const hp_proc *redis, int *queued, int *discarded)
{
    int fd = hp_connect_proc(target, 5000);
    if (fd < 0) hp_bail("connect: %s", strerror(errno));
    hp_buf out = {0};
    hp_send_all(fd, "MULTI\r\n", 7, 5000);
    hp_read_until(fd, &out, 0, "+OK\r\n", 5000);
    long long before = used_memory(redis);
    hp_buf req = {0};
    for (int i = 0; i < N; i++) hp_buf_puts(&req, "*2\r\n$3\r\nDEL\r\n$6\r\nlock:m\r\n");
    hp_buf_reset(&out);
    int closed = 0;
    hp_exchange(fd, req.data, req.len, &out, 0, 60000, &closed);
    while (!closed && hp_buf_count(&out, "+QUEUED\r\n") < (size_t)N)
        if (hp_read_n(fd, &out, out.len + 1, 60000) != HP_IO_OK) break;
    *queued = (int)hp_buf_count(&out, "+QUEUED\r\n");
    long long after = used_memory(redis);
    hp_buf_reset(&out);
    hp_send_all(fd, "DISCARD\r\n", 9, 5000);
    *discarded = hp_read_until(fd, &out, 0, "\r\n", 10000) == HP_IO_OK && HP_HAS(&out, "+OK\r\n");
    close(fd);
    hp_buf_free(&req);
    hp_buf_free(&out);
    return after - before;
}

int main(void)
{
    lk_require_real_proxy();
    plan_lazy();
    hp_proc *redis = hp_redis_start(NULL);
    char logpath[4096];
    hp_proc *proxy = lk_proxy_start(redis, "multi_memory", "rule lock: enforce", logpath, sizeof logpath);

    int q = 0, d = 0;
    long long direct = queued_cost(redis, redis, &q, &d);
    is_int(q, N, "direct: %d x +QUEUED", N);
    ok(d, "  DISCARD +OK");
    long long via = queued_cost(proxy, redis, &q, &d);
    is_int(q, N, "through the proxy: %d x +QUEUED", N);
    ok(d, "  DISCARD +OK");
    diag("Redis used_memory while %d DEL lock:m are queued: +%lld bytes direct, +%lld through the proxy (%.2fx)", N,
         direct, via, direct > 0 ? (double)via / (double)direct : 0.0);
    ok(direct > 0 && via <= 6 * direct, "through the proxy the queued transaction costs Redis at most 6x (%.2fx)",
       direct > 0 ? (double)via / (double)direct : 0.0);

    /* The script is loaded by the transaction itself: a SCRIPT FLUSH after the queueing does
     * not make the EXEC fail. */
    redisContext *c = lk_connect(proxy);
    is_int(strcmp(lk_str(c, "SET lock:m tok NX PX 60000"), "+OK"), 0, "SET lock:m NX PX through the proxy");
    is_int(strcmp(lk_str(c, "MULTI"), "+OK"), 0, "MULTI");
    is_int(strcmp(lk_str(c, "DEL lock:m"), "+QUEUED"), 0, "DEL lock:m: +QUEUED");
    ok(hp_cmd_ok(redis, "SCRIPT FLUSH"), "SCRIPT FLUSH straight to Redis meanwhile");
    is_string(lk_str(c, "EXEC"), "[:1]", "EXEC: [1]");
    is_int(hp_cmd_int(redis, "EXISTS lock:m"), 0, "  the lock is gone");
    redisFree(c);
    is_int(hp_stop(proxy, 5000), 0, "the proxy exits 0");
    hp_stop(redis, 5000);
    return 0;
}
