/* Audit and off modes (audit forwards lock commands unchanged and logs what enforce would
 * have done; off does neither): the same lock traffic straight to Redis, through a proxy
 * whose rule is in audit mode, in off mode, and in enforce mode.
 *   - audit: every byte as Redis sends it, and the same events as enforce logs;
 *   - off:   every byte as Redis sends it, and no log line at all;
 *   - the log lines of every mode are JSON objects with the audit log's fields (ts, event,
 *     mode, action, rule, key, client, detail). */
#include "lock/lock_util.h"

static hp_proc *redis, *enforce, *audit, *off;
static char enforce_log[4096], audit_log[4096], off_log[4096];

/* ---- HP_CALL steps: other connections of the same side ---- */

static void call_foreign_expire(const hp_proc *s, const hp_proc *r, void *arg)
{
    (void)r;
    redisContext *c = lk_connect(s);
    lk_str(c, "EXPIRE %s 20", (const char *)arg);
    redisFree(c);
}

static void call_wait_gone(const hp_proc *s, const hp_proc *r, void *arg)
{
    (void)s;
    if (!lk_wait_gone(r, arg, 5000)) diag("%s did not expire", (const char *)arg);
    hp_sleep_ms(100);  /* the proxy's lease ends a little after Redis's TTL: see seeds.t.c */
}

static void call_hold(const hp_proc *s, const hp_proc *r, void *arg)
{
    (void)r;
    redisContext *c = lk_connect(s);
    lk_str(c, "SET %s other NX PX 8000", (const char *)arg);
    redisFree(c);
}

static void call_stuck(const hp_proc *s, const hp_proc *r, void *arg)
{
    (void)s;
    if (!hp_cmd_ok(r, "SET %s left-over", (const char *)arg)) diag("SET %s failed", (const char *)arg);
}

/* The lock traffic whose events are all decided when the command arrives. */
static hp_buf eval_cmd;

static void main_steps(hp_step *st, size_t cap)
{
    hp_buf_reset(&eval_cmd);
    hp_buf_cmd(&eval_cmd, "EVAL %s 1 %s", "return redis.call('exists', KEYS[1])", "lock:m:a");
    hp_step s[] = {
        HP_SEND("SETNX lock:m:a tok-a\r\n"), HP_WAIT_MATCH(":1\r\n"),
        HP_SEND("EXPIRE lock:m:a 10\r\n"), HP_WAIT_MATCH(":1\r\n"),
        HP_SEND("SET lock:m:b tok-b NX\r\n"), HP_WAIT_MATCH("+OK\r\n"),
        HP_SEND("SET lock:m:c tok-c\r\n"), HP_WAIT_MATCH("+OK\r\n"),
        HP_SEND("GETSET lock:m:c tok-c2\r\n"), HP_WAIT_MATCH("tok-c\r\n"),
        HP_SEND("SET lock:m:c2 tok-x GET\r\n"), HP_WAIT_MATCH("$-1\r\n"),
        HP_SEND("PERSIST lock:m:a\r\n"), HP_WAIT_MATCH(":"),
        HP_SEND("SETNX lock:m:d tok-d\r\nEXPIRE lock:m:d 10\r\n"), HP_WAIT_MATCH(":1\r\n:1\r\n"),
        HP_SENDN(eval_cmd.data, eval_cmd.len), HP_WAIT_MATCH(":1\r\n"),
        HP_CALL(call_foreign_expire, "lock:m:d"),
        HP_SEND("SET lock:m:g tok-g NX PX 200\r\n"), HP_WAIT_MATCH("+OK\r\n"),
        HP_CALL(call_wait_gone, "lock:m:g"),
        HP_SEND("DEL lock:m:g\r\n"), HP_WAIT_MATCH(":0\r\n"),
        HP_SEND("DEL lock:m:a plain\r\n"), HP_WAIT_MATCH(":1\r\n"),
        HP_SEND("TTL lock:m:b\r\nGET lock:m:d\r\n"), HP_WAIT_MATCH("tok-d\r\n"),
        HP_END
    };
    if (sizeof s / sizeof s[0] > cap) hp_abort("main_steps: %zu steps", sizeof s / sizeof s[0]);
    memcpy(st, s, sizeof s);
}

/* Traffic whose events enforce mode logs when the reply comes (foreign_release,
 * unknown_lease), and SETNX+EXPIRE queued in MULTI. Audit mode logs the same events: the
 * foreign_release and unknown_lease of the DELs, and no foreign_expire for the EXPIRE of the
 * merged SETNX+EXPIRE in MULTI. */
static const hp_step gap_steps[] = {
    HP_SEND("MULTI\r\nSETNX lock:x:e tok-e\r\nEXPIRE lock:x:e 10\r\nEXEC\r\n"), HP_WAIT_MATCH("*2\r\n:1\r\n:1\r\n"),
    HP_CALL(call_hold, "lock:x:h"),
    HP_SEND("DEL lock:x:h\r\n"), HP_WAIT_MATCH(":"),
    HP_CALL(call_stuck, "lock:x:f"),
    HP_SEND("DEL lock:x:f\r\n"), HP_WAIT_MATCH(":1\r\n"),
    HP_END
};

static void run_enforce(const hp_step *steps)
{
    hp_side s = {0};
    lk_flushall(redis);
    hp_run_steps(enforce, redis, steps, NULL, 0, &s);
    ok(!s.timed_out && !s.closed, "enforce: the traffic ran (%zu bytes back)", s.out.len);
    hp_side_free(&s);
}

static void compare_events(const char *prefix, const char *what)
{
    hp_buf e = {0}, a = {0};
    lk_log_sync(enforce, enforce_log);
    lk_log_sync(audit, audit_log);
    lk_log_events(enforce_log, prefix, &e);
    lk_log_events(audit_log, prefix, &a);
    ok(e.len > 0, "%s: enforce logged events", what);
    is_string(a.data, e.data, "%s: audit mode logs the same events as enforce", what);
    hp_buf_free(&e);
    hp_buf_free(&a);
}

/* Every audit-mode line says mode audit, action forwarded. */
static void check_audit_lines(void)
{
    hp_buf b = {0};
    lk_read_file(audit_log, &b);
    int locks = 0, marked = 0;
    for (char *line = b.data; line != NULL && *line; ) {
        char *nl = strchr(line, '\n');
        if (nl) *nl = '\0';
        if (strstr(line, "\"key\":\"sync:") == NULL) {
            locks++;
            if (strstr(line, "\"mode\":\"audit\"") && strstr(line, "\"action\":\"forwarded\"")) marked++;
            else diag("audit log line: %s", line);
        }
        line = nl ? nl + 1 : NULL;
    }
    ok(locks > 0 && marked == locks, "audit: all %d lock events say mode audit, action forwarded (%d do)", locks, marked);
    hp_buf_free(&b);
}

int main(void)
{
    lk_require_real_proxy();
    plan_lazy();
    redis = hp_redis_start(NULL);
    enforce = lk_proxy_start(redis, "enforce", "rule lock: enforce ttl=5s", enforce_log, sizeof enforce_log);
    audit = lk_proxy_start(redis, "audit", "rule lock: audit ttl=5s", audit_log, sizeof audit_log);
    off = lk_proxy_start(redis, "off", "rule lock: off ttl=5s", off_log, sizeof off_log);

    hp_step steps[40];
    main_steps(steps, sizeof steps / sizeof steps[0]);
    hp_diff(redis, audit, "audit mode: lock traffic", steps, NULL);
    hp_diff(redis, off, "off mode: lock traffic", steps, NULL);
    run_enforce(steps);
    compare_events("lock:m:", "decided on arrival");

    hp_diff(redis, audit, "audit mode: MULTI, foreign and stuck DEL", gap_steps, NULL);
    hp_diff(redis, off, "off mode: MULTI, foreign and stuck DEL", gap_steps, NULL);
    run_enforce(gap_steps);
    compare_events("lock:x:", "MULTI, foreign and stuck DEL");
    check_audit_lines();

    /* Off mode: nothing but the sync markers. */
    lk_log_sync(off, off_log);
    hp_buf b = {0};
    lk_read_file(off_log, &b);
    int all = lk_log_count(&b, NULL, NULL), markers = lk_log_count_prefix(&b, "sync:");
    is_int(all - markers, 0, "off mode: no log line for lock keys (%d lines, %d of them sync markers)", all, markers);
    ok(markers > 0, "off mode: (the sync marker was logged, so the log was written)");
    hp_buf_free(&b);

    lk_check_json_log(enforce_log, "enforce log");
    lk_check_json_log(audit_log, "audit log");
    lk_check_json_log(off_log, "off log");

    hp_buf_free(&eval_cmd);
    is_int(hp_stop(enforce, 10000), 0, "enforce proxy exits 0 on SIGTERM");
    is_int(hp_stop(audit, 10000), 0, "audit proxy exits 0 on SIGTERM");
    is_int(hp_stop(off, 10000), 0, "off proxy exits 0 on SIGTERM");
    return 0;
}
