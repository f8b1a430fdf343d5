/* Signals under load: SIGHUP re-reads the policy file and keeps the old rules when the new
 * one is bad; SIGTERM drains the connections and exits 0.
 *
 * SIGHUP re-reads the policy: a broken file (bad mode, then a missing file) is reported on
 * stderr ("keeping the old one") and the old rules stay in force, which shows as lock
 * rewrites still happening (SETNX through the proxy leaves a TTL on the key); a good file
 * replaces them (the new ttl shows).
 *
 * SIGTERM drains: a pipeline of slow commands (DEBUG SLEEP 0.2, five times, then PING) is in
 * flight when the signal arrives; the client still gets every reply, then the close; new
 * connections are refused at once; an idle client is closed; the proxy exits 0. */
#include "faults.h"

/* Waits until the proxy's log holds text at or after offset from. */
static int wait_log(const hp_proc *p, size_t from, const char *text, int timeout_ms)
{
    long long until = hp_now_ms() + timeout_ms;
    hp_buf log = {0};
    int found = 0;
    do {
        if (hp_log_read(p, &log) == 0 && hp_buf_find(&log, from, text, strlen(text)) != (size_t)-1)
            found = 1;
        else
            hp_sleep_ms(20);
    } while (!found && hp_now_ms() < until);
    hp_buf_free(&log);
    return found;
}

static size_t log_len(const hp_proc *p)
{
    hp_buf log = {0};
    hp_log_read(p, &log);
    size_t n = log.len;
    hp_buf_free(&log);
    return n;
}

/* SETNX through the proxy, then the key's PTTL straight from Redis. */
static long long setnx_pttl(const hp_proc *px, const hp_proc *redis, const char *key)
{
    long long r = hp_cmd_int(px, "SETNX %s token", key);
    if (r != 1) {
        diag("SETNX %s answered %lld", key, r);
        return -100;
    }
    return hp_cmd_int(redis, "PTTL %s", key);
}

static void sighup(hp_proc *redis)
{
    const char *pol = fl_tmp("policy.conf");
    fl_write_file(pol, "rule lock: enforce ttl=30s\n");
    const char *extra[] = {"--policy", pol, NULL};
    hp_proc *px = hp_proxy_start(redis, extra);

    long long t = setnx_pttl(px, redis, "lock:a");
    ok(t > 0 && t <= 30000, "enforce: SETNX on a lock key is rewritten with the 30 s lease (PTTL %lld)", t);

    size_t mark = log_len(px);
    fl_write_file(pol, "rule lock: bogus\n");
    hp_signal(px, SIGHUP);
    ok(wait_log(px, mark, "keeping the old one", 5000), "SIGHUP with a bad mode: stderr says the old policy is kept");
    ok(wait_log(px, mark, "bogus", 100), "and names the bad token");
    t = setnx_pttl(px, redis, "lock:b");
    ok(t > 0 && t <= 30000, "the old rules still rewrite (PTTL %lld)", t);

    mark = log_len(px);
    unlink(pol);
    hp_signal(px, SIGHUP);
    ok(wait_log(px, mark, "keeping the old one", 5000), "SIGHUP with the file missing: the old policy is kept");
    t = setnx_pttl(px, redis, "lock:c");
    ok(t > 0 && t <= 30000, "the old rules still rewrite (PTTL %lld)", t);

    mark = log_len(px);
    fl_write_file(pol, "rule lock: enforce ttl=5s\n");
    hp_signal(px, SIGHUP);
    ok(wait_log(px, mark, "reloaded", 5000), "SIGHUP with a good file: stderr says it was reloaded");
    t = setnx_pttl(px, redis, "lock:d");
    ok(t > 0 && t <= 5000, "the new rules rewrite with the 5 s lease (PTTL %lld)", t);

    ok(fl_alive(px), "the proxy runs on after the reloads");
    is_int(hp_stop(px, 5000), 0, "the proxy exits 0");
}

static void sigterm(hp_proc *redis)
{
    hp_proc *px = hp_proxy_start(redis, NULL);

    fl_conn c[2];
    memset(c, 0, sizeof(c));
    hp_buf req = {0};
    for (int i = 0; i < 5; i++)
        hp_buf_cmd(&req, "DEBUG SLEEP %s", "0.2");
    hp_buf_puts(&req, "PING\r\n");
    c[0].fd = hp_connect_proc(px, 5000);
    c[0].out = req.data;
    c[0].outlen = req.len;
    c[1].fd = hp_connect_proc(px, 5000);   /* idle */
    ok(c[0].fd >= 0 && c[1].fd >= 0, "two clients connected");
    ok(fl_ping(px, 5000), "the proxy answers");

    /* Send, let the first sleep begin, then SIGTERM. */
    fl_pump(c, 1, fl_done_never, 10, 100);
    long long t0 = hp_now_ms();
    hp_signal(px, SIGTERM);
    hp_sleep_ms(50);
    int fd = hp_connect_proc(px, 1000);
    int refused = fd < 0;
    if (fd >= 0)
        close(fd);
    ok(refused, "after SIGTERM new connections are refused");

    fl_pump(c, 2, fl_done_eof, 10, 10000);
    long long drained = hp_now_ms() - t0;
    is_bytes(c[0].in.data, c[0].in.len, "+OK\r\n+OK\r\n+OK\r\n+OK\r\n+OK\r\n+PONG\r\n", 32,
             "the pipeline in flight gets every reply");
    ok(c[0].eof, "then its connection closes");
    ok(c[1].eof && c[1].in.len == 0, "the idle client is closed without a reply");
    int status = hp_wait_exit(px, 10000);
    is_int(status, 0, "the proxy exits 0 after draining");
    diag("drained and exited %lld ms after SIGTERM (shutdown-timeout 5s)", hp_now_ms() - t0);
    ok(drained < 5000, "the drain ended with the replies, before shutdown-timeout (%lld ms)", drained);
    fl_conns_close(c, 2);
    hp_buf_free(&req);
}

int main(void)
{
    fl_init(100);
    plan_lazy();
    hp_proc *redis = hp_redis_start(NULL);
    sighup(redis);
    sigterm(redis);
    return 0;
}
