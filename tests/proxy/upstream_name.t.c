/* Start-up and the upstream's address. An upstream given by host name ("localhost:PORT") is
 * looked up again for every new upstream connection, asynchronously: many connections in a
 * row work, each through its own lookup; with Redis stopped a new client gets the
 * upstream-unavailable error, and once Redis is back the next one works (a fresh lookup and
 * connect). A listening address already taken stops start-up with an error naming the
 * directive, and "listening" is never printed. */
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "lib/harness.h"

int main(void)
{
    if (getenv("LP_TEST_PROXY_IS_REDIS") && strcmp(getenv("LP_TEST_PROXY_IS_REDIS"), "1") == 0)
        skip_all("LP_TEST_PROXY_IS_REDIS=1: start-up of the proxy itself");
    plan_lazy();
    /* Bound on both loopbacks, whichever one "localhost" names first here. */
    const char *rextra[] = { "--bind", "127.0.0.1 -::1", NULL };
    hp_proc *redis = hp_redis_start(rextra);
    char up[64];
    snprintf(up, sizeof up, "localhost:%d", redis->port);
    const char *extra[] = { "--upstream", up, NULL };
    hp_proc *px = hp_proxy_start(redis, extra);

    int good = 0;
    for (int i = 0; i < 30; i++) {
        redisReply *r = hp_cmd(px, "INCR named");
        if (r != NULL && r->type == REDIS_REPLY_INTEGER && r->integer == i + 1) good++;
        if (r) freeReplyObject(r);
    }
    is_int(good, 30, "30 connections in a row to upstream %s, each looked up: INCR counts 1..30", up);

    /* Redis gone: a new client is told so; Redis back: the next client works. */
    is_int(hp_stop(redis, 10000), 0, "Redis stopped");
    int fd = hp_connect_proc(px, 5000);
    hp_buf out = {0};
    int closed = 0;
    hp_exchange(fd, "PING\r\n", 6, &out, 300, 10000, &closed);
    close(fd);
    ok(HP_HAS(&out, "-ERR lockproxy: upstream unavailable ("), "Redis stopped: a new client gets %s",
       hp_esc(out.data, out.len, 120));
    ok(hp_restart(redis) == 0, "Redis restarted on its port");
    redisReply *r = hp_cmd(px, "PING");
    ok(r != NULL && r->type == REDIS_REPLY_STATUS && strcmp(r->str, "PONG") == 0, "the next client reaches it: PONG");
    if (r) freeReplyObject(r);
    is_int(hp_stop(px, 10000), 0, "proxy stops with 0");

    /* The listening port taken (by Redis): no "listening", an error naming the directive. */
    char taken[64];
    snprintf(taken, sizeof taken, "127.0.0.1:%d", redis->port);
    const char *bad[] = { "--listen", taken, NULL };
    hp_proc *px2 = hp_proxy_spawn(redis, bad);
    is_int(hp_wait_exit(px2, 10000), 1, "listen on a taken port: exit 1");
    hp_buf log = {0};
    hp_log_read(px2, &log);
    char want[128];
    snprintf(want, sizeof want, "lockproxy: listen: %s: address already in use", taken);
    ok(hp_buf_has(&log, want, strlen(want)), "the error names the directive: %s", hp_esc(log.data, log.len, 200));
    ok(!HP_HAS(&log, "listening"), "and \"listening\" was never printed");
    hp_buf_free(&log);
    hp_buf_free(&out);
    return 0;
}
