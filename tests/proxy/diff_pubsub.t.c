/* Differential tests, messages that are not replies: SUBSCRIBE/PSUBSCRIBE/SSUBSCRIBE with
 * PUBLISH from another connection (the subscriber's streams are compared), subscribed-mode
 * rules in RESP2 and RESP3, and MONITOR (timestamps and client addresses masked). */
#include <string.h>

#include "lib/harness.h"

static hp_proc *redis, *proxy;

static void diff_has(const char *name, const hp_step *steps, const hp_diff_opts *o, const char *want)
{
    hp_side d, p;
    hp_diff_ex(redis, proxy, name, steps, o, &d, &p);
    ok(hp_buf_has(&d.out, want, strlen(want)), "%s: Redis's answer has \"%s\"", name,
       hp_esc(want, strlen(want), 100));
    hp_side_free(&d);
    hp_side_free(&p);
}

/* HP_CALL: publishes on another connection through the same side; arg != NULL when the
 * subscriber is no longer on ch1. */
static void publish(const hp_proc *side, const hp_proc *r, void *arg)
{
    (void)r;
    long long n1 = hp_cmd_int(side, "PUBLISH ch1 hello");
    long long n2 = hp_cmd_int(side, "PUBLISH ch2 %b", "bin\0ary\r\n", (size_t)9);
    long long n3 = hp_cmd_int(side, "PUBLISH nobody x");
    ok((arg != NULL ? n1 == 0 : n1 >= 1) && n2 >= 1 && n3 == 0,
       "%s: PUBLISH reached the subscriber (%lld %lld %lld)", side->name, n1, n2, n3);
}

static void spublish(const hp_proc *side, const hp_proc *r, void *arg)
{
    (void)r; (void)arg;
    ok(hp_cmd_int(side, "SPUBLISH sch sharded") >= 1, "%s: SPUBLISH reached the subscriber", side->name);
}

static void test_subscribe(void)
{
    static const hp_step s[] = {
        HP_SEND("SUBSCRIBE ch1 ch2\r\n"),
        HP_WAIT_MATCH("$3\r\nch2\r\n:2\r\n"),
        HP_CALL(publish, NULL),
        HP_WAIT_MATCH("$9\r\nbin"),
        HP_SEND("PING\r\nPING hi\r\nGET x\r\nSUBSCRIBE ch1\r\nUNSUBSCRIBE ch1\r\n"),
        HP_WAIT_MATCH("$11\r\nunsubscribe\r\n"),
        HP_CALL(publish, "ch1 gone"),
        HP_SEND("UNSUBSCRIBE\r\nPING\r\nGET x\r\n"),
        HP_END
    };
    hp_side d, p;
    hp_diff_ex(redis, proxy, "SUBSCRIBE, PUBLISH from another connection, UNSUBSCRIBE", s, NULL, &d, &p);
    ok(HP_HAS(&d.out, "*3\r\n$7\r\nmessage\r\n$3\r\nch1\r\n$5\r\nhello\r\n") &&
       HP_HAS(&d.out, "*2\r\n$4\r\npong\r\n$0\r\n\r\n") &&
       HP_HAS(&d.out, "-ERR Can't execute 'get'") &&
       d.out.len > 7 && memcmp(d.out.data + d.out.len - 12, "+PONG\r\n$-1\r\n", 12) == 0,
       "SUBSCRIBE: Redis sent messages, the subscribed-mode PING and error, then normal replies");
    hp_side_free(&d);
    hp_side_free(&p);

    static const hp_step ps[] = {
        HP_SEND("PSUBSCRIBE ch* nomatch?\r\n"),
        HP_WAIT_MATCH(":2\r\n"),
        HP_CALL(publish, NULL),
        HP_WAIT_MATCH("$9\r\nbin"),
        HP_SEND("PUNSUBSCRIBE ch*\r\nPUNSUBSCRIBE\r\nUNSUBSCRIBE\r\nPING\r\n"),
        HP_END
    };
    diff_has("PSUBSCRIBE, pmessage, PUNSUBSCRIBE", ps, NULL,
             "*4\r\n$8\r\npmessage\r\n$3\r\nch*\r\n$3\r\nch1\r\n$5\r\nhello\r\n");

    static const hp_step ss[] = {
        HP_SEND("SSUBSCRIBE sch\r\n"),
        HP_WAIT_MATCH(":1\r\n"),
        HP_CALL(spublish, NULL),
        HP_WAIT_MATCH("sharded"),
        HP_SEND("SUNSUBSCRIBE\r\nPING\r\n"),
        HP_END
    };
    diff_has("SSUBSCRIBE, SPUBLISH, SUNSUBSCRIBE", ss, NULL, "$8\r\nsmessage\r\n");

    /* Subscribing inside a pipeline with ordinary commands around it. */
    static const hp_step mixed[] = {
        HP_SEND("SET a 1\r\nSUBSCRIBE ch1\r\nPING\r\nUNSUBSCRIBE ch1\r\nGET a\r\n"), HP_END
    };
    diff_has("SUBSCRIBE and UNSUBSCRIBE inside a pipeline", mixed, NULL, "$1\r\n1\r\n");

    /* RESP3: messages are push frames and any command is allowed in between. */
    hp_diff_opts norm = { .normalise = hp_norm_hello };
    static const hp_step r3[] = {
        HP_SEND("HELLO 3\r\nSUBSCRIBE ch1 ch2\r\nSET k v\r\n"),
        HP_WAIT_MATCH("+OK\r\n"),
        HP_CALL(publish, NULL),
        HP_WAIT_MATCH("$9\r\nbin"),
        HP_SEND("GET k\r\nPING\r\nUNSUBSCRIBE\r\nPING\r\n"),
        HP_END
    };
    diff_has("RESP3 SUBSCRIBE: push messages between replies", r3, &norm,
             ">3\r\n$7\r\nmessage\r\n$3\r\nch1\r\n$5\r\nhello\r\n");

    static const hp_step reset[] = {
        HP_SEND("SUBSCRIBE ch1\r\nRESET\r\nGET a\r\nPUBLISH ch1 x\r\n"), HP_END
    };
    diff_has("RESET leaves subscribed mode", reset, NULL, "+RESET\r\n$-1\r\n:0\r\n");
}

/* HP_CALL: commands on another connection, seen by the MONITOR connection. */
static void monitored(const hp_proc *side, const hp_proc *r, void *arg)
{
    (void)r; (void)arg;
    ok(hp_cmd_ok(side, "SET mk %b", "a \"b\"\r\n\0", (size_t)8) && hp_cmd_ok(side, "GET mk") &&
       hp_cmd_ok(side, "SELECT 1") && hp_cmd_ok(side, "ECHO last"),
       "%s: commands on another connection", side->name);
}

static void test_monitor(void)
{
    hp_diff_opts norm = { .normalise = hp_norm_monitor };
    static const hp_step s[] = {
        HP_SEND("MONITOR\r\n"),
        HP_WAIT_MATCH("+OK\r\n"),
        HP_CALL(monitored, NULL),
        HP_WAIT_MATCH("\"last\""),
        HP_SEND("PING\r\n"),
        HP_PAUSE(100),
        HP_SEND("QUIT\r\n"),
        HP_END
    };
    hp_side d, p;
    hp_diff_ex(redis, proxy, "MONITOR sees another connection's commands", s, &norm, &d, &p);
    ok(HP_HAS(&d.out, "\"SET\" \"mk\" \"a \\\"b\\\"\\r\\n\\x00\"") &&
       HP_HAS(&d.out, "[1 127.0.0.1:"),
       "MONITOR: Redis showed the commands");
    ok(HP_HAS(&d.cmp, "\r\n+# [0 127.0.0.1:#] \"GET\" \"mk\"\r\n"),
       "MONITOR: timestamps and addresses are masked");
    hp_side_free(&d);
    hp_side_free(&p);
}

int main(void)
{
    plan_lazy();
    redis = hp_redis_start(NULL);
    proxy = hp_proxy_start(redis, NULL);

    test_subscribe();
    test_monitor();

    is_int(hp_stop(proxy, 10000), 0, "the proxy exits 0 on SIGTERM");
    return 0;
}
