/* Load: 5,000 concurrent client connections through one proxy, each with its own upstream
 * connection (10,000 sockets in the proxy). Every client gets PONG, twice; a fresh client
 * is answered while they are all connected; when they go, Redis sees their upstream
 * connections go too and the proxy's descriptors return to where they were.
 *
 * Descriptors: this program holds 5,000 sockets, the proxy 10,000, Redis 5,000 (started with
 * --maxclients 10000). The soft RLIMIT_NOFILE is raised towards 20,000 and inherited by both
 * children; with a lower hard limit the test is skipped. */
#include "faults.h"

#include <stdint.h>

#define NCLIENTS 5000

static int got_pong(const fl_conn *c)
{
    return c->eof || c->in.len >= 7 * (size_t)(uintptr_t)c->ud;
}

/* Counts clients whose input is exactly rounds times "+PONG\r\n". */
static int count_pongs(const fl_conn *c, size_t n, int rounds)
{
    int good = 0;
    for (size_t i = 0; i < n; i++) {
        if (c[i].eof || c[i].in.len != 7 * (size_t)rounds)
            continue;
        int all = 1;
        for (int r = 0; r < rounds && all; r++)
            all = memcmp(c[i].in.data + 7 * r, "+PONG\r\n", 7) == 0;
        good += all;
    }
    return good;
}

int main(void)
{
    fl_init(100);
    long long need = 2LL * NCLIENTS + 500;
    long long lim = fl_raise_nofile(20000);
    if (lim < need)
        skip_all("RLIMIT_NOFILE can only reach %lld here; %d proxied clients need about %lld "
                 "descriptors in the proxy (raise the hard limit: ulimit -Hn)",
                 lim, NCLIENTS, need);
    plan_lazy();
    diag("RLIMIT_NOFILE soft limit for this test and its children: %lld", lim);

    const char *rextra[] = {"--maxclients", "10000", NULL};
    hp_proc *redis = hp_redis_start(rextra);
    /* 5,000 upstream connects in a burst can wait in Redis's accept backlog (SYN retries of
     * 1 s and more on a loaded machine): this test is about serving them all, so the proxy
     * gets a connect-timeout that such waits stay within. */
    char conf[4096];
    snprintf(conf, sizeof conf, "%s/many.conf", hp_tmpdir());
    FILE *f = fopen(conf, "w");
    if (f == NULL) hp_bail("cannot write %s", conf);
    fputs("connect-timeout 15s\n", f);
    fclose(f);
    const char *pextra[] = {"-c", conf, NULL};
    hp_proc *px = hp_proxy_start(redis, pextra);
    int base_fds = fl_nfds(px->pid);

    fl_conn *c = calloc(NCLIENTS, sizeof(*c));
    if (c == NULL)
        hp_bail("out of memory");
    long long t0 = hp_now_ms();
    size_t n = 0;
    for (; n < NCLIENTS; n++) {
        c[n].fd = hp_connect_proc(px, 5000);
        if (c[n].fd < 0) {
            diag("connection %zu failed: %s", n, strerror(errno));
            break;
        }
        c[n].out = "PING\r\n";
        c[n].outlen = 6;
        c[n].ud = (void *)(uintptr_t)1;
    }
    ok(n == NCLIENTS, "%d client connections made (%zu)", NCLIENTS, n);

    fl_pump(c, n, got_pong, 10, 40000);
    int pongs = count_pongs(c, n, 1);
    diag("%d clients connected and answered in %lld ms", pongs, hp_now_ms() - t0);
    is_int(pongs, NCLIENTS, "every client gets +PONG");

    long long in_redis = hp_info_int(redis, "connected_clients");
    ok(in_redis >= NCLIENTS, "Redis sees an upstream connection per client (%lld)", in_redis);
    int fds = fl_nfds(px->pid);
    diag("proxy descriptors: %d before, %d with %d clients", base_fds, fds, NCLIENTS);

    long long tp = hp_now_ms();
    ok(fl_ping(px, 5000), "a fresh client is answered while %d are connected", NCLIENTS);
    diag("its PING took %lld ms", hp_now_ms() - tp);

    /* A second round on every connection: the sessions are all still working. */
    for (size_t i = 0; i < n; i++) {
        c[i].sent = 0;
        c[i].done_at = 0;
        c[i].ud = (void *)(uintptr_t)2;
    }
    t0 = hp_now_ms();
    fl_pump(c, n, got_pong, 10, 30000);
    pongs = count_pongs(c, n, 2);
    diag("second round answered in %lld ms", hp_now_ms() - t0);
    is_int(pongs, NCLIENTS, "every client gets a second +PONG");
    ok(fl_alive(px), "the proxy is running");

    fl_conns_close(c, n);
    free(c);
    /* hp_info_int's own connection is the one left. */
    ok(hp_wait_info(redis, "connected_clients", 1, 15000),
       "when the clients go, their upstream connections go too");
    long long until = hp_now_ms() + 10000;
    while ((fds = fl_nfds(px->pid)) > base_fds && hp_now_ms() < until)
        hp_sleep_ms(50);
    ok(fds <= base_fds, "the proxy's descriptors are back to %d (%d)", base_fds, fds);
    ok(fl_ping(px, 5000), "the proxy still answers");
    is_int(hp_stop(px, 10000), 0, "the proxy exits 0 on SIGTERM");
    return 0;
}
