/* Differential tests, CLIENT REPLY OFF/SKIP/ON: commands without replies must not shift the
 * proxy's matching of replies to requests, and its own error lines must follow Redis's rule
 * (nothing is sent while replies are off, protocol errors included). */
#include <string.h>

#include "lib/harness.h"

static hp_proc *redis, *proxy;

static void diff_exact(const char *name, const hp_step *steps, const char *want, int closes)
{
    hp_side d, p;
    hp_diff_ex(redis, proxy, name, steps, NULL, &d, &p);
    if (!is_bytes(d.out.data, d.out.len, want, strlen(want), "%s: Redis answers \"%s\"", name,
                  hp_esc(want, strlen(want), 100)) ||
        !is_int(d.closed, closes, "%s: Redis %s", name, closes ? "closes" : "stays open"))
        diag("%s: the expectation does not match this Redis: fix the test", name);
    hp_side_free(&d);
    hp_side_free(&p);
}

static void test_reply_modes(void)
{
    static const hp_step off[] = {
        HP_SEND("CLIENT REPLY OFF\r\nSET a 1\r\nGET a\r\nNOSUCH\r\nINCR a\r\nCLIENT REPLY ON\r\nGET a\r\n"),
        HP_END
    };
    diff_exact("CLIENT REPLY OFF ... ON", off, "+OK\r\n$1\r\n2\r\n", 0);

    static const hp_step skip[] = {
        HP_SEND("SET a 1\r\nCLIENT REPLY SKIP\r\nINCR a\r\nINCR a\r\nCLIENT REPLY SKIP\r\nNOSUCH\r\nGET a\r\n"),
        HP_END
    };
    diff_exact("CLIENT REPLY SKIP skips one reply, errors too", skip, "+OK\r\n:3\r\n$1\r\n3\r\n", 0);

    static const hp_step skip_skip[] = {
        HP_SEND("CLIENT REPLY SKIP\r\nCLIENT REPLY SKIP\r\nPING\r\nPING\r\n"), HP_END
    };
    diff_exact("CLIENT REPLY SKIP twice in a row", skip_skip, "+PONG\r\n", 0);

    static const hp_step skip_off[] = {
        HP_SEND("CLIENT REPLY SKIP\r\nCLIENT REPLY OFF\r\nPING\r\nCLIENT REPLY SKIP\r\nPING\r\n"
                "CLIENT REPLY ON\r\nPING\r\n"),
        HP_END
    };
    diff_exact("SKIP then OFF, SKIP while OFF, ON", skip_off, "+OK\r\n+PONG\r\n", 0);

    static const hp_step on_on[] = {
        HP_SEND("CLIENT REPLY ON\r\nCLIENT REPLY on\r\nCLIENT REPLY maybe\r\nPING\r\n"), HP_END
    };
    diff_exact("CLIENT REPLY ON twice, bad argument", on_on,
               "+OK\r\n+OK\r\n-ERR syntax error\r\n+PONG\r\n", 0);

    static const hp_step multi[] = {
        HP_SEND("MULTI\r\nCLIENT REPLY OFF\r\nSET m 1\r\nEXEC\r\nGET m\r\nCLIENT REPLY ON\r\nGET m\r\n"),
        HP_END
    };
    hp_diff(redis, proxy, "CLIENT REPLY OFF inside MULTI", multi, NULL);

    /* In pieces, with the mode change in its own packet. */
    static const hp_step pieces[] = {
        HP_SEND("PING\r\n"), HP_WAIT_MATCH("+PONG\r\n"), HP_SEND("CLIENT REPLY OFF\r\n"), HP_PAUSE(100),
        HP_SEND("PING\r\nPING\r\n"), HP_PAUSE(100), HP_SEND("CLIENT REPLY ON\r\n"), HP_PAUSE(100),
        HP_SEND("ECHO done\r\n"), HP_END
    };
    diff_exact("CLIENT REPLY OFF/ON over several packets", pieces, "+PONG\r\n+OK\r\n$4\r\ndone\r\n", 0);
}

static void test_reply_protocol_errors(void)
{
    static const hp_step off[] = { HP_SEND("PING\r\nCLIENT REPLY OFF\r\n*1\r\n$x\r\n"), HP_END };
    diff_exact("protocol error while replies are off: no error line, close", off, "+PONG\r\n", 1);

    /* Redis closes a connection "after the reply" only when it has something to write: with
     * no reply pending the connection stays open, silent, and ignores what follows. */
    static const hp_step skip[] = { HP_SEND("CLIENT REPLY SKIP\r\n\"unbalanced\r\n"), HP_PAUSE(100),
                                    HP_SEND("PING\r\n"), HP_END };
    diff_exact("protocol error right after SKIP, nothing pending: silent, stays open", skip, "", 0);

    static const hp_step skip2[] = { HP_SEND("CLIENT REPLY SKIP\r\nPING\r\n*1\r\n$x\r\n"), HP_END };
    diff_exact("protocol error one command after SKIP: error line, close", skip2,
               "-ERR Protocol error: invalid bulk length\r\n", 1);

    static const hp_step quit[] = { HP_SEND("CLIENT REPLY OFF\r\nQUIT\r\nPING\r\n"), HP_PAUSE(100),
                                    HP_SEND("CLIENT REPLY ON\r\nPING\r\n"), HP_END };
    diff_exact("QUIT while replies are off: silent, stays open, ignores the rest", quit, "", 0);
}

int main(void)
{
    plan_lazy();
    redis = hp_redis_start(NULL);
    proxy = hp_proxy_start(redis, NULL);

    test_reply_modes();
    test_reply_protocol_errors();

    is_int(hp_stop(proxy, 10000), 0, "the proxy exits 0 on SIGTERM");
    return 0;
}
