/* Flow control that never deadlocks and never cuts a slow reader off, through a proxy with a
 * lock rule in enforce mode. Each case is differential: the same bytes straight to Redis and
 * through the proxy, compared byte for byte, RESP2 and RESP3.
 *
 *   write-all-then-read  The client writes its whole pipeline before it reads anything, as
 *                        redis-py's Pipeline does: GET of an 8 MiB value, a lock command
 *                        (which holds the requests behind it until its reply is in), an
 *                        8 MiB SET, the lock's DEL. Redis reads it all (1 GiB query buffer)
 *                        and answers; the proxy must read and buffer within its limits
 *                        instead of stopping both directions. The same with local replies
 *                        (PERSIST of a lock key) behind the large reply, and with a
 *                        transaction whose EXEC carries a lock command and large replies.
 *   slow reader          A client reads two 8 MiB replies at about 3 MiB/s with
 *                        upstream-timeout 500ms and a 4 MiB high-water mark (16 KiB low):
 *                        the proxy stops reading Redis for over a second at a time
 *                        (backpressure), which is not Redis's silence; every byte arrives and
 *                        nothing is logged.
 *
 * Every wait is bounded by a deadline; nothing asserts a duration. */
#include "faults.h"


#define BIG (8 * 1024 * 1024)

static const char *lock_policy(void)
{
    const char *pol = fl_tmp("policy.conf");
    if (fl_write_file(pol, "rule lock: enforce ttl=30s max-ttl=5m\n") != 0)
        hp_bail("cannot write %s", pol);
    return pol;
}

static char *big_value(size_t n, char c0)
{
    char *v = malloc(n);
    if (v == NULL)
        hp_bail("out of memory");
    for (size_t i = 0; i < n; i++)
        v[i] = (char)(c0 + i % 23);
    return v;
}

/* 1 when b holds more than BIG bytes and ends with tail. */
static int ends_with(const hp_buf *b, const char *tail)
{
    size_t n = strlen(tail);
    return b->len > BIG && b->len >= n && memcmp(b->data + b->len - n, tail, n) == 0;
}

/* Writes req without reading, as a write-all-then-read client does, then reads: want bytes
 * when want > 0, else until the stream ends with tail (after more than BIG bytes) or EOF;
 * then whatever follows within 300 ms. Returns 1 when the whole request went out within
 * 30 s. */
static int write_then_read(const hp_proc *p, const hp_buf *req, size_t want, const char *tail, hp_buf *out)
{
    int fd = hp_connect_proc(p, 5000);
    if (fd < 0)
        hp_abort("cannot connect to %s", p->name);
    int sent = hp_send_all(fd, req->data, req->len, 30000) == HP_IO_OK;
    if (sent) {
        if (want > 0) {
            hp_read_n(fd, out, want, 60000);
        } else {
            long long until = hp_now_ms() + 60000;
            while (!ends_with(out, tail) && hp_now_ms() < until &&
                   hp_read_idle(fd, out, 200, 2000) != HP_IO_EOF) {
            }
        }
        hp_read_idle(fd, out, 300, 2000);
    }
    close(fd);
    return sent;
}

/* The pipeline straight to Redis, then through the proxy; both read only after writing. */
static void diff_write_all(const hp_proc *redis, const hp_proc *px, const char *name, const hp_buf *req,
                           int resp3)
{
    hp_buf direct = {0}, proxied = {0};
    /* Every pipeline here ends with the DEL of a lock the pipeline holds. */
    ok(write_then_read(redis, req, 0, "\r\n:1\r\n", &direct), "%s: Redis takes the whole pipeline before any read",
       name);
    int sent = write_then_read(px, req, direct.len, NULL, &proxied);
    ok(sent, "%s: the proxy takes the whole pipeline before any read (no deadlock)", name);
    if (resp3) {
        hp_norm_hello(&direct, NULL);
        hp_norm_hello(&proxied, NULL);
    }
    ok(direct.len > BIG, "%s: Redis answers it (%zu bytes)", name, direct.len);
    is_bytes(proxied.data, proxied.len, direct.data, direct.len, "%s: same bytes through the proxy", name);
    hp_buf_free(&direct);
    hp_buf_free(&proxied);
}

static void cmd_big(hp_buf *b, const char *verb, const char *key, const char *v, size_t n)
{
    const char *argv[] = {verb, key, v};
    size_t lens[] = {strlen(verb), strlen(key), n};
    hp_buf_cmdargv(b, 3, argv, lens);
}

/* Reads slowly: at most 64 KiB every 20 ms (about 3 MiB/s). */
static size_t slow_read(int fd, hp_buf *out, size_t want, int *eof)
{
    char buf[65536];
    long long until = hp_now_ms() + 60000;
    *eof = 0;
    while (out->len < want && hp_now_ms() < until) {
        struct pollfd pfd = {.fd = fd, .events = POLLIN};
        if (poll(&pfd, 1, 1000) <= 0)
            continue;
        ssize_t n = recv(fd, buf, sizeof(buf), 0);
        if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
            *eof = 1;
            break;
        }
        if (n > 0) {
            hp_buf_append(out, buf, (size_t)n);
            hp_sleep_ms(20);
        }
    }
    return out->len;
}

int main(void)
{
    fl_init(300);
    plan_lazy();
    hp_proc *redis = hp_redis_start(NULL);
    const char *pol = lock_policy();
    const char *extra[] = {"--policy", pol, NULL};
    hp_proc *px = hp_proxy_start(redis, extra);

    char *v1 = big_value(BIG, 'a'), *v2 = big_value(BIG, 'A');
    ok(hp_cmd_ok(redis, "SET big %b", v1, (size_t)BIG), "an 8 MiB value is stored");

    /* redis-py's Pipeline, as in the report: GET big, SETNX, SET filler <8 MiB>, DEL. */
    for (int resp3 = 0; resp3 <= 1; resp3++) {
        hp_buf req = {0};
        if (resp3)
            hp_buf_cmd(&req, "HELLO 3");
        hp_buf_cmd(&req, "GET big");
        hp_buf_cmd(&req, "SETNX lock:pipe x");
        cmd_big(&req, "SET", "filler", v2, BIG);
        hp_buf_cmd(&req, "DEL lock:pipe");
        diff_write_all(redis, px, resp3 ? "pipeline GET big, SETNX, SET 8 MiB, DEL (RESP3)"
                                        : "pipeline GET big, SETNX, SET 8 MiB, DEL", &req, resp3);
        hp_buf_free(&req);
    }

    /* Local replies (PERSIST of a lock key, answered by the proxy) behind the large reply. */
    for (int resp3 = 0; resp3 <= 1; resp3++) {
        hp_buf req = {0};
        if (resp3)
            hp_buf_cmd(&req, "HELLO 3");
        hp_buf_cmd(&req, "GET big");
        for (int i = 0; i < 20000; i++)
            hp_buf_cmd(&req, "PERSIST lock:a");
        cmd_big(&req, "SET", "filler", v2, BIG);
        hp_buf_cmd(&req, "SETNX lock:b x");
        hp_buf_cmd(&req, "GET big");
        hp_buf_cmd(&req, "DEL lock:b");
        diff_write_all(redis, px, resp3 ? "20,000 local replies between large ones (RESP3)"
                                        : "20,000 local replies between large ones", &req, resp3);
        hp_buf_free(&req);
    }

    /* A transaction whose EXEC carries a lock command and two large replies: streamed. */
    for (int resp3 = 0; resp3 <= 1; resp3++) {
        hp_buf req = {0};
        if (resp3)
            hp_buf_cmd(&req, "HELLO 3");
        hp_buf_cmd(&req, "MULTI");
        hp_buf_cmd(&req, "SET lock:x v NX");
        hp_buf_cmd(&req, "GET big");
        hp_buf_cmd(&req, "SETNX lock:y v");
        hp_buf_cmd(&req, "EXPIRE lock:y 60");
        hp_buf_cmd(&req, "GET big");
        hp_buf_cmd(&req, "DEL lock:x");
        hp_buf_cmd(&req, "EXEC");
        cmd_big(&req, "SET", "filler", v2, BIG);
        hp_buf_cmd(&req, "DEL lock:y");
        diff_write_all(redis, px, resp3 ? "MULTI with lock commands and 2 x 8 MiB, EXEC (RESP3)"
                                        : "MULTI with lock commands and 2 x 8 MiB, EXEC", &req, resp3);
        hp_buf_free(&req);
    }

    /* The slow reader. */
    const char *conf = fl_tmp("slow.conf");
    if (fl_write_file(conf, "upstream-timeout 500ms\nhigh-water 4mb\nlow-water 16kb\n") != 0)
        hp_bail("cannot write %s", conf);
    const char *sextra[] = {"-c", conf, "--policy", pol, NULL};
    hp_proc *slow = hp_proxy_start(redis, sextra);
    for (int resp3 = 0; resp3 <= 1; resp3++) {
        hp_buf req = {0}, direct = {0}, proxied = {0};
        if (resp3)
            hp_buf_cmd(&req, "HELLO 3");
        hp_buf_cmd(&req, "GET big");
        hp_buf_cmd(&req, "SETNX lock:slow v");
        hp_buf_cmd(&req, "GET big");
        hp_buf_cmd(&req, "DEL lock:slow");
        hp_buf_puts(&req, "PING\r\n");
        ok(write_then_read(redis, &req, 0, "+PONG\r\n", &direct), "slow reader%s: Redis answers", resp3 ? " (RESP3)" : "");
        int fd = hp_connect_proc(slow, 5000);
        ok(hp_send_all(fd, req.data, req.len, 10000) == HP_IO_OK, "slow reader%s: request sent",
           resp3 ? " (RESP3)" : "");
        int eof;
        slow_read(fd, &proxied, direct.len, &eof);
        close(fd);
        if (resp3) {
            hp_norm_hello(&direct, NULL);
            hp_norm_hello(&proxied, NULL);
        }
        ok(!eof, "slow reader%s: the proxy does not close the connection", resp3 ? " (RESP3)" : "");
        is_bytes(proxied.data, proxied.len, direct.data, direct.len,
                 "slow reader%s: every byte of 2 x 8 MiB read at ~3 MiB/s arrives, as from Redis", resp3 ? " (RESP3)" : "");
        hp_buf_free(&req);
        hp_buf_free(&direct);
        hp_buf_free(&proxied);
    }
    hp_buf log = {0};
    hp_log_read(slow, &log);
    ok(!HP_HAS(&log, "upstream silent"), "no 'upstream silent' while backpressure kept the proxy from reading");
    hp_buf_free(&log);

    free(v1);
    free(v2);
    ok(fl_ping(px, 5000) && fl_ping(slow, 5000), "the proxies still answer");
    is_int(hp_stop(slow, 5000), 0, "the slow-reader proxy exits 0");
    is_int(hp_stop(px, 5000), 0, "the proxy exits 0");
    return 0;
}
