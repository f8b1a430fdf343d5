/* The audit log never holds a password: AUTH, HELLO ... AUTH, CONFIG SET
 * requirepass/masterauth and MIGRATE ... AUTH/AUTH2 go through the proxy between lock
 * commands that are logged, and afterwards neither the audit log nor the proxy's own output
 * contains any of the passwords. The log lines are JSON objects with the audit log's fields
 * (ts, event, mode, action, rule, key, client, detail). */
#include "lock/lock_util.h"

static hp_proc *redis, *proxy;
static char logpath[4096];
static char pw[6][64];

/* Sends one command (hiredis formatting) and reads until want appears in what it answers. */
static void step(int fd, const char *want, const char *fmt, ...)
{
    hp_buf req = {0}, out = {0};
    va_list ap;
    va_start(ap, fmt);
    char *cmd = NULL;
    int n = redisvFormatCommand(&cmd, fmt, ap);
    va_end(ap);
    if (n < 0) hp_abort("cannot format %s", fmt);
    hp_buf_append(&req, cmd, (size_t)n);
    free(cmd);
    hp_io io = hp_send_all(fd, req.data, req.len, 5000);
    if (io == HP_IO_OK) io = hp_read_until(fd, &out, 0, want, 5000);
    /* The command's text would show a password: name it by its first word only. */
    char word[32];
    snprintf(word, sizeof word, "%.*s", (int)strcspn(fmt, " "), fmt);
    ok(io == HP_IO_OK, "%s ... answers %s (got %s)", word, hp_esc(want, strlen(want), 40),
       hp_esc(out.data, out.len, 60));
    hp_buf_free(&req);
    hp_buf_free(&out);
}

int main(void)
{
    lk_require_real_proxy();
    plan_lazy();
    for (int i = 0; i < 6; i++) {
        const char *u = lk_uuid();
        /* pw[0] looks like a lock key to tempt the policy; the others are plain. */
        snprintf(pw[i], sizeof pw[i], "%sS3cret-%d-%.8s", i == 0 ? "lock:" : "", i, u);
    }
    redis = hp_redis_start((const char *[]){ "--requirepass", pw[0], NULL });
    proxy = lk_proxy_start(redis, "secrets", "rule lock: enforce ttl=5s", logpath, sizeof logpath);

    /* A client that authenticates with HELLO first. */
    int fd0 = lk_raw_open(proxy);
    step(fd0, "proto", "HELLO 3 AUTH default %s SETNAME app", pw[0]);
    step(fd0, ":1\r\n", "SETNX lock:s0 v");
    close(fd0);

    int fd = lk_raw_open(proxy);
    step(fd, "-NOAUTH", "SETNX lock:s1 v");
    step(fd, "+OK\r\n", "AUTH %s", pw[0]);
    step(fd, ":1\r\n", "SETNX lock:s1 v");
    step(fd, ":1\r\n", "EXPIRE lock:s1 5");
    step(fd, "proto", "HELLO 3 AUTH default %s", pw[0]);
    step(fd, "+OK\r\n", "SET lock:s2 v NX");
    step(fd, ":0\r\n", "SETNX lock:s2 w");
    step(fd, "+OK\r\n", "CONFIG SET requirepass %s", pw[1]);
    step(fd, "+OK\r\n", "AUTH %s", pw[1]);
    step(fd, "-WRONGPASS", "AUTH default %s", pw[2]);
    step(fd, "proto", "HELLO 2 AUTH default %s SETNAME worker", pw[1]);
    step(fd, "+OK\r\n", "CONFIG SET masterauth %s", pw[3]);
    step(fd, "+OK\r\n", "CONFIG SET requirepass %s masterauth %s", pw[0], pw[3]);
    step(fd, "\r\n", "MIGRATE 127.0.0.1 1 %s 0 100 AUTH %s", "lock:s1", pw[4]);
    step(fd, "\r\n", "MIGRATE 127.0.0.1 1 %s 0 100 AUTH2 default %s KEYS lock:s2", "", pw[5]);
    step(fd, ":0\r\n", "PERSIST lock:s1");
    step(fd, ":2\r\n", "DEL lock:s1 lock:s2");
    close(fd);

    ok(lk_log_wait(logpath, "persist_lock", "lock:s1", 5000), "the lock commands were logged");
    ok(lk_log_sync(proxy, logpath), "log synced");
    is_int(hp_stop(proxy, 10000), 0, "the proxy exits 0 on SIGTERM");

    hp_buf log = {0}, out = {0};
    lk_read_file(logpath, &log);
    hp_log_read(proxy, &out);
    for (int i = 0; i < 6; i++) {
        const char *secret = strstr(pw[i], "S3cret");
        ok(!hp_buf_has(&log, secret, strlen(secret)), "password %d is not in the audit log", i);
        ok(!hp_buf_has(&out, secret, strlen(secret)), "password %d is not in the proxy's output", i);
    }
    ok(lk_log_count(&log, "setnx_no_ttl", "lock:s0") == 1, "the HELLO-authenticated client's SETNX was logged");
    lk_check_json_log(logpath, "audit log with AUTH traffic");
    hp_buf_free(&log);
    hp_buf_free(&out);
    return 0;
}
