/* `make run` on a terminal (a pseudo-terminal here): it builds only the proxy, starts a
 * private Redis and the proxy, says where the audit log is and how to read it, keeps the
 * JSON lines off the terminal, and Ctrl-C stops everything with exit status 0 (make
 * included). Three SETNX through it are counted by `lockproxy report` on the saved log.
 * With the listening port taken, it fails with the proxy's error and never says
 * "listening". */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "lib/harness.h"

static char build[1024];

static int spawn_make_run(hp_pty *t, const char *listen, const char *log)
{
    static char env_listen[128], env_log[4200];
    snprintf(env_listen, sizeof env_listen, "LOCKPROXY_LISTEN=%s", listen);
    snprintf(env_log, sizeof env_log, "LOCKPROXY_LOG=%s", log);
    char buildarg[1100];
    snprintf(buildarg, sizeof buildarg, "BUILD=%s", build);
    const char *argv[] = { "make", "-s", "-C", LOCKPROXY_SRC, "run", buildarg, NULL };
    const char *env[] = { env_listen, env_log, "LOCKPROXY_UPSTREAM=", NULL };
    return hp_pty_spawn(t, argv, env, 40, 200);
}

int main(void)
{
    if (getenv("LP_TEST_PROXY_IS_REDIS") && strcmp(getenv("LP_TEST_PROXY_IS_REDIS"), "1") == 0)
        skip_all("LP_TEST_PROXY_IS_REDIS=1: make run starts the proxy itself");
    plan_lazy();
    snprintf(build, sizeof build, "%s", LOCKPROXY_BIN);
    char *slash = strrchr(build, '/');
    if (slash) *slash = '\0';
    char log[4096], listen[64], want[16384];
    snprintf(log, sizeof log, "%s/audit.log", hp_tmpdir());
    int port = hp_free_port();
    snprintf(listen, sizeof listen, "127.0.0.1:%d", port);

    hp_pty t;
    is_int(spawn_make_run(&t, listen, log), 0, "make run started on a terminal");
    ok(hp_pty_expect(&t, "Ctrl-C stops it", 180000), "it says it is up and how to stop it");
    snprintf(want, sizeof want, "lockproxy: listening on %s,", listen);
    ok(hp_buf_has(&t.out, want, strlen(want)), "the proxy's own line: %s", want);
    snprintf(want, sizeof want, "try: redis-cli -p %d", port);
    ok(hp_buf_has(&t.out, want, strlen(want)), "it prints the redis-cli line");
    snprintf(want, sizeof want, "audit log: %s (JSON Lines); read it with: %s/lockproxy report %s", log, build, log);
    ok(hp_buf_has(&t.out, want, strlen(want)), "it names the audit log and how to read it");
    ok(!HP_HAS(&t.out, "Building C object") && !HP_HAS(&t.out, "Built target"), "no build output on the terminal");

    char p[16];
    snprintf(p, sizeof p, "%d", port);
    int good = 0;
    for (int i = 0; i < 3; i++) {
        const char *cli[] = { "redis-cli", "-p", p, "SETNX", "lock:run", "v", NULL };
        hp_buf o = {0};
        if (hp_run(cli, NULL, 0, &o, NULL, 10000) == 0 && o.data && (strcmp(o.data, "1\n") == 0 || strcmp(o.data, "0\n") == 0))
            good++;
        hp_buf_free(&o);
    }
    is_int(good, 3, "3 SETNX lock:run through it answered");
    hp_sleep_ms(200);
    hp_pty_write(&t, "\003");
    int st = hp_pty_close(&t, 30000);
    is_int(st, 0, "Ctrl-C: make run exits 0");
    ok(!HP_HAS(&t.out, "Error") && !HP_HAS(&t.out, "Interrupt"), "no make error: %s",
       hp_esc(t.out.data, t.out.len, 400));
    ok(HP_HAS(&t.out, "lockproxy: stopped"), "the proxy's last message reached the terminal");
    ok(!HP_HAS(&t.out, "{\"ts\""), "no audit JSON on the terminal");

    const char *rep[] = { LOCKPROXY_BIN, "report", "--json", log, NULL };
    hp_buf o = {0};
    is_int(hp_run(rep, NULL, 0, &o, NULL, 10000), 0, "lockproxy report on the saved log: exit 0");
    json_error_t je;
    json_t *j = o.data ? json_loadb(o.data, o.len, 0, &je) : NULL;
    json_t *c = json_object_get(json_object_get(json_object_get(j, "by_event"), "setnx_no_ttl"), "count");
    is_int(json_is_integer(c) ? json_integer_value(c) : -1, 3, "the report counts the 3 SETNX (setnx_no_ttl)");
    is_int(json_is_integer(json_object_get(j, "malformed")) ? json_integer_value(json_object_get(j, "malformed")) : -1, 0,
           "the log holds only JSON lines");
    json_decref(j);
    hp_buf_free(&o);
    hp_buf_free(&t.out);

    /* The port taken (by a Redis that answers PING there). */
    hp_proc *redis = hp_redis_start(NULL);
    snprintf(listen, sizeof listen, "127.0.0.1:%d", redis->port);
    snprintf(log, sizeof log, "%s/audit2.log", hp_tmpdir());
    hp_pty t2;
    is_int(spawn_make_run(&t2, listen, log), 0, "make run with the port taken");
    st = hp_pty_close(&t2, 180000);
    ok(st != 0, "it fails (status %d)", st);
    snprintf(want, sizeof want, "lockproxy: listen: %s: address already in use", listen);
    ok(hp_buf_has(&t2.out, want, strlen(want)), "with the proxy's error: %s", want);
    ok(!HP_HAS(&t2.out, "listening"), "and never says \"listening\": %s", hp_esc(t2.out.data, t2.out.len, 400));
    hp_buf_free(&t2.out);
    return 0;
}
