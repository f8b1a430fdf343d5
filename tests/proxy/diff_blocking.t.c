/* Differential tests, blocking commands: BLPOP and friends woken by a write from another
 * connection, or timing out; commands pipelined behind a blocked one; and a client that
 * goes away while blocked must not leave a blocked connection behind in Redis. */
#include <string.h>
#include <unistd.h>

#include "lib/harness.h"

static hp_proc *redis, *proxy;

/* HP_CALL: waits until Redis counts one blocked client, then runs arg (a command) on another
 * connection through the same side. */
static void wake(const hp_proc *side, const hp_proc *r, void *arg)
{
    int blocked = hp_wait_info(r, "blocked_clients", 1, 5000);
    ok(blocked && hp_cmd_ok(side, (const char *)arg), "%s: blocked, then \"%s\"",
       side->name, (const char *)arg);
}

static void diff_has(const char *name, const hp_step *steps, const char *want)
{
    hp_side d, p;
    hp_diff_ex(redis, proxy, name, steps, NULL, &d, &p);
    ok(hp_buf_has(&d.out, want, strlen(want)), "%s: Redis's answer has \"%s\"", name,
       hp_esc(want, strlen(want), 100));
    hp_side_free(&d);
    hp_side_free(&p);
}

static void test_woken(void)
{
    static const hp_step blpop[] = {
        HP_SEND("PING\r\nBLPOP list 10\r\nPING\r\n"),
        HP_WAIT_MATCH("+PONG\r\n"),
        HP_CALL(wake, "LPUSH list a b"),
        HP_WAIT_MATCH("$4\r\nlist\r\n"),
        HP_SEND("LRANGE list 0 -1\r\n"),
        HP_END
    };
    diff_has("BLPOP woken by LPUSH from another connection, with a pipelined PING", blpop,
             "+PONG\r\n*2\r\n$4\r\nlist\r\n$1\r\nb\r\n+PONG\r\n*1\r\n$1\r\na\r\n");

    static const hp_step blmove[] = {
        HP_SEND("BLMOVE src dst LEFT RIGHT 10\r\n"),
        HP_CALL(wake, "RPUSH src x"),
        HP_WAIT_MATCH("$1\r\nx\r\n"),
        HP_SEND("LRANGE dst 0 -1\r\n"),
        HP_END
    };
    diff_has("BLMOVE woken by RPUSH", blmove, "$1\r\nx\r\n*1\r\n$1\r\nx\r\n");

    static const hp_step bzpop[] = {
        HP_SEND("BZPOPMIN z1 z2 10\r\n"),
        HP_CALL(wake, "ZADD z2 1.5 m"),
        HP_WAIT_MATCH("m\r\n"),
        HP_END
    };
    diff_has("BZPOPMIN woken by ZADD", bzpop, "*3\r\n$2\r\nz2\r\n$1\r\nm\r\n$3\r\n1.5\r\n");

    static const hp_step xread[] = {
        HP_SEND("XADD s 1-1 f v\r\nXREAD BLOCK 10000 STREAMS s $\r\n"),
        HP_CALL(wake, "XADD s 2-1 g w"),
        HP_WAIT_MATCH("$3\r\n2-1\r\n"),
        HP_END
    };
    diff_has("XREAD BLOCK woken by XADD", xread, "$3\r\n2-1\r\n*2\r\n$1\r\ng\r\n$1\r\nw\r\n");

    hp_diff_opts norm = { .normalise = hp_norm_hello };
    static const hp_step r3[] = {
        HP_SEND("HELLO 3\r\nBLPOP l3 10\r\n"),
        HP_CALL(wake, "LPUSH l3 v"),
        HP_WAIT_MATCH("$1\r\nv\r\n"),
        HP_SEND("BLPOP none 0.1\r\n"),
        HP_WAIT_MATCH("_\r\n"),
        HP_END
    };
    hp_diff(redis, proxy, "RESP3 BLPOP woken, then timing out (_)", r3, &norm);
}

static void test_timeout(void)
{
    static const hp_step t[] = {
        HP_SEND("BLPOP none 0.2\r\nPING\r\n"), HP_WAIT_MATCH("+PONG\r\n"), HP_END
    };
    diff_has("BLPOP times out: nil array, then the pipelined PING", t, "*-1\r\n+PONG\r\n");

    static const hp_step tx[] = {
        HP_SEND("MULTI\r\nBLPOP none 5\r\nEXEC\r\n"), HP_END
    };
    diff_has("BLPOP inside MULTI does not block", tx, "*1\r\n*-1\r\n");

    static const hp_step bad[] = { HP_SEND("BLPOP none -1\r\nBLPOP none x\r\nPING\r\n"), HP_END };
    diff_has("BLPOP with a bad timeout", bad, "-ERR timeout is negative\r\n");
}

static void test_disconnect_while_blocked(void)
{
    int fd = hp_connect_proc(proxy, 5000);
    ok(fd >= 0, "a client connects through the proxy");
    if (fd < 0) return;
    static const char req[] = "BLPOP gone 30\r\n";
    hp_send_all(fd, req, sizeof req - 1, 2000);
    ok(hp_wait_info(redis, "blocked_clients", 1, 5000), "its BLPOP blocks in Redis");
    close(fd);
    ok(hp_wait_info(redis, "blocked_clients", 0, 5000),
       "the client goes away: Redis has no blocked client left");
    ok(hp_cmd_ok(proxy, "LPUSH gone x") && hp_cmd_int(redis, "LLEN gone") == 1,
       "a later push stays in the list (nobody popped it)");
}

int main(void)
{
    plan_lazy();
    redis = hp_redis_start(NULL);
    proxy = hp_proxy_start(redis, NULL);

    test_woken();
    test_timeout();
    test_disconnect_while_blocked();

    is_int(hp_stop(proxy, 10000), 0, "the proxy exits 0 on SIGTERM");
    return 0;
}
