/* Hostile input from one client on the lock path: each case is sent byte for byte straight to
 * Redis and through a proxy with an enforce rule on "lock:", and both answers must be the
 * same bytes (and the same close).
 *
 *   1. EXPIRE-family times at the edges of long long (INT64_MIN, overflow on * 1000) on a
 *      held lock: no crash (the sanitizer build aborts on signed overflow), Redis's answer.
 *   2. Time arguments Redis refuses ("010", "-0", "\t10", "+5", 9223372036854776): the
 *      client gets Redis's own error, the lock is untouched.
 *   3. Passwords: HELLO AUTH with a user named "setname" never puts the password in the
 *      audit log; a failed HELLO AUTH ... SETNAME does not name the client.
 *   4. Limits before AUTH, from each connection's own state: a fresh unauthenticated
 *      client's 200 MiB bulk header is refused at once (and the proxy does not buffer the
 *      body), also after an unauthenticated QUIT; after CONFIG SET requirepass "" a new
 *      client's large request is accepted.
 *   5. An inline SETNX over 64 KiB is refused as Redis refuses it, not rewritten and run. */
#include "lock/lock_util.h"

#define SECRET "Pw-0f-s3tname-user"

static hp_proc *redis, *proxy;
static char logpath[4096];

static void diff_both(const char *name, const char *req)
{
    hp_diff_bytes(redis, proxy, name, req, strlen(req), NULL);
}

static void test_expire_edges(void)
{
    static const char *times[] = {
        "PEXPIREAT lock:o -9223372036854775808", "EXPIREAT lock:o -9223372036854775",
        "PEXPIRE lock:o -9223372036854775808", "EXPIRE lock:o -9223372036854775",
        "PEXPIREAT lock:o 9223372036854775807", "EXPIREAT lock:o 9223372036854775",
        "PEXPIRE lock:o 9223372036854775807", "EXPIRE lock:o 9223372036854775",
    };
    for (size_t i = 0; i < sizeof times / sizeof times[0]; i++) {
        char req[256], name[128];
        snprintf(req, sizeof req, "SETNX lock:o t1\r\n%s\r\nEXISTS lock:o\r\n", times[i]);
        snprintf(name, sizeof name, "held lock, %s", times[i]);
        diff_both(name, req);
        snprintf(req, sizeof req, "SET lock:o mine NX PX 60000\r\n%s\r\nEXISTS lock:o\r\n", times[i]);
        snprintf(name, sizeof name, "SET NX PX, then %s", times[i]);
        diff_both(name, req);
        /* From a client that does not hold it the answer differs by design (the EXPIRE
         * becomes PEXPIRE ... NX): only that nothing breaks is checked. */
        ok(hp_cmd_ok(proxy, "SET lock:o other PX 60000"), "someone else's lock");
        int fd = hp_connect_proc(proxy, 2000);
        hp_buf out = {0};
        int closed = 0;
        snprintf(req, sizeof req, "%s\r\nPING\r\n", times[i]);
        hp_exchange(fd, req, strlen(req), &out, hp_idle_ms(), 5000, &closed);
        ok(!closed && hp_buf_count(&out, "\r\n") == 2, "foreign lock, %s: two answers (%s)", times[i],
           hp_esc(out.data, out.len, 80));
        hp_buf_free(&out);
        close(fd);
    }
    diff_both("SET NX PXAT INT64_MIN",
              "*6\r\n$3\r\nSET\r\n$6\r\nlock:o\r\n$1\r\nv\r\n$2\r\nNX\r\n$4\r\nPXAT\r\n$20\r\n-9223372036854775808\r\n"
              "EXISTS lock:o\r\n");
    diff_both("SET NX EX overflow", "SET lock:o v NX EX 9223372036854775\r\nEXISTS lock:o\r\n");
    diff_both("SET NX PX 0", "SET lock:o v NX PX 0\r\nEXISTS lock:o\r\n");
    diff_both("SET NX XX", "SET lock:o v NX XX\r\nEXISTS lock:o\r\n");
    ok(hp_cmd_ok(proxy, "PING"), "the proxy is still up after the edge times");
}

static void test_bad_numbers(void)
{
    static const char *args[] = {"010", "-0", "+5", "9223372036854776", "-9223372036854776", "1e3", "", "10 "};
    for (size_t i = 0; i < sizeof args / sizeof args[0]; i++) {
        hp_buf req = {0};
        hp_buf_cmd(&req, "SETNX lock:i t");
        hp_buf_cmd(&req, "EXPIRE lock:i %s", args[i]);
        hp_buf_cmd(&req, "PEXPIRE lock:i %s", args[i]);
        hp_buf_cmd(&req, "EXPIREAT lock:i %s", args[i]);
        hp_buf_cmd(&req, "SET lock:j t NX PX %s", args[i]);
        hp_buf_cmd(&req, "EXISTS lock:i");
        hp_buf_cmd(&req, "EXISTS lock:j");
        char name[96];
        snprintf(name, sizeof name, "time argument \"%s\"", hp_esc(args[i], strlen(args[i]), 40));
        hp_diff_bytes(redis, proxy, name, req.data, req.len, NULL);
        hp_buf_free(&req);
    }
    /* Whitespace before the digits, sent as bulk strings. */
    diff_both("tab before the number",
              "SETNX lock:i t\r\n*3\r\n$6\r\nEXPIRE\r\n$6\r\nlock:i\r\n$3\r\n\t10\r\n"
              "*3\r\n$6\r\nEXPIRE\r\n$6\r\nlock:i\r\n$3\r\n\n10\r\nEXISTS lock:i\r\n");
}

static void test_passwords(void)
{
    ok(hp_cmd_ok(redis, "ACL SETUSER setname on >" SECRET " ~* &* +@all"), "ACL user named setname");
    hp_buf req = {0};
    hp_buf_cmd(&req, "HELLO 2 AUTH setname " SECRET);
    hp_buf_cmd(&req, "SETNX lock:pw a");
    hp_buf_cmd(&req, "HELLO 2 AUTH setname wrong-password SETNAME forged");
    hp_buf_cmd(&req, "SETNX lock:pw2 a");
    hp_buf_cmd(&req, "CLIENT SETNAME bad name");
    hp_buf_cmd(&req, "SETNX lock:pw3 a");
    hp_diff_opts o = {.normalise = hp_norm_hello};
    hp_diff_bytes(redis, proxy, "HELLO AUTH setname", req.data, req.len, &o);
    hp_buf_free(&req);
    ok(lk_log_sync(proxy, logpath), "audit log synced");
    hp_buf log = {0};
    lk_read_file(logpath, &log);
    ok(!HP_HAS(&log, SECRET), "the password is nowhere in the audit log");
    ok(!HP_HAS(&log, "\"client_name\":\"" SECRET), "  nor as a client name");
    ok(!HP_HAS(&log, "forged"), "a failed HELLO AUTH ... SETNAME names nobody");
    ok(!HP_HAS(&log, "bad name"), "a refused CLIENT SETNAME names nobody");
    ok(lk_log_count(&log, "setnx_no_ttl", "lock:pw2") >= 1, "the SETNX after the failed HELLO was logged");
    hp_buf_free(&log);
    lk_check_json_log(logpath, "audit log after the HELLO cases");
}

/* VmRSS of a process in KiB, or -1. */
static long rss_kib(pid_t pid)
{
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    FILE *f = fopen(path, "r");
    if (f == NULL) return -1;
    long kib = -1;
    while (fgets(line, sizeof line, f))
        if (strncmp(line, "VmRSS:", 6) == 0) kib = strtol(line + 6, NULL, 10);
    fclose(f);
    return kib;
}

/* A fresh client announces a 200 MiB bulk and starts sending it: Redis refuses the header
 * before authentication and closes. Returns the proxy's RSS growth in KiB (or -1). */
static long big_bulk_unauthenticated(const char *name)
{
    static const char head[] = "*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$209715200\r\n";
    hp_diff_bytes(redis, proxy, name, head, sizeof head - 1, NULL);
    long before = rss_kib(proxy->pid);
    int fd = hp_connect_proc(proxy, 2000);
    if (fd < 0) return -1;
    hp_send_all(fd, head, sizeof head - 1, 2000);
    static char chunk[1 << 20];
    memset(chunk, 'x', sizeof chunk);
    for (int i = 0; i < 64; i++)
        if (hp_send_all(fd, chunk, sizeof chunk, 500) != HP_IO_OK) break;
    long after = rss_kib(proxy->pid);
    close(fd);
    return before < 0 || after < 0 ? -1 : after - before;
}

static void test_preauth_limits(void)
{
    hp_proc *r = redis, *p = proxy;
    static const char *args[] = {"--requirepass", "s3cret", NULL};
    redis = hp_redis_start(args);
    char pol[64];
    snprintf(pol, sizeof pol, "rule lock: enforce\n");
    const char *extra[] = {"--policy", lk_write_file("auth.policy", pol), NULL};
    proxy = hp_proxy_start(redis, extra);

    long grew = big_bulk_unauthenticated("fresh client, 200 MiB bulk header");
    ok(grew >= 0 && grew < 16 * 1024, "the proxy did not buffer the refused body (grew %ld KiB)", grew);
    diff_both("unauthenticated QUIT", "QUIT\r\n");
    grew = big_bulk_unauthenticated("after an unauthenticated QUIT, 200 MiB bulk header");
    ok(grew >= 0 && grew < 16 * 1024, "  still not buffered (grew %ld KiB)", grew);
    diff_both("11 arguments before AUTH", "*11\r\n$4\r\nPING\r\n");
    diff_both("AUTH, then a 20 KB bulk",
              "AUTH s3cret\r\n*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$20000\r\n");

    /* The password goes away: new clients' large requests are fine at once. */
    redisContext *c = redisConnect("127.0.0.1", proxy->port);
    redisReply *rep = c ? redisCommand(c, "AUTH s3cret") : NULL;
    freeReplyObject(rep);
    rep = c ? redisCommand(c, "CONFIG SET requirepass %s", "") : NULL;
    ok(rep != NULL && rep->type == REDIS_REPLY_STATUS, "CONFIG SET requirepass \"\" through the proxy");
    freeReplyObject(rep);
    if (c) redisFree(c);
    redis->password[0] = '\0';
    proxy->password[0] = '\0';
    hp_buf big = {0};
    hp_buf_puts(&big, "*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$20000\r\n");
    for (int i = 0; i < 20000; i++) hp_buf_puts(&big, "y");
    hp_buf_puts(&big, "\r\nSTRLEN k\r\n");
    hp_diff_bytes(redis, proxy, "no password any more: a 20 KB bulk from a new client", big.data, big.len, NULL);
    hp_buf_free(&big);
    hp_stop(proxy, 5000);
    hp_stop(redis, 5000);
    redis = r;
    proxy = p;
}

static void test_big_inline(void)
{
    hp_buf req = {0};
    hp_buf_puts(&req, "SETNX lock:big ");
    for (int i = 0; i < 130 * 1024; i++) hp_buf_puts(&req, "z");
    hp_buf_puts(&req, "\r\n");
    hp_diff_opts o = {.deadline_ms = 10000};
    hp_diff_bytes(redis, proxy, "inline SETNX of 130 KB", req.data, req.len, &o);
    hp_buf_free(&req);
    is_int(hp_cmd_int(redis, "EXISTS lock:big"), 0, "  and no lock was taken");
}

int main(void)
{
    lk_require_real_proxy();
    plan_lazy();
    redis = hp_redis_start(NULL);
    proxy = lk_proxy_start(redis, "hostile", "rule lock: enforce", logpath, sizeof logpath);
    test_expire_edges();
    test_bad_numbers();
    test_passwords();
    test_big_inline();
    test_preauth_limits();
    ok(hp_cmd_ok(proxy, "PING"), "the proxy is up at the end");
    return 0;
}
