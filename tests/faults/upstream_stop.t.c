/* Fault: the upstream redis-server is stopped (SIGSTOP) under the proxy.
 *
 * A stopped Redis still completes TCP handshakes through the kernel's listen backlog, so the
 * proxy's upstream connect usually succeeds and requests then get no answer: what bounds the
 * wait is upstream-timeout, not connect-timeout. The test pins down what the proxy does:
 *
 *   A. connect-timeout 500ms, default upstream-timeout (60s): a client connecting while Redis
 *      is stopped is accepted; its PING is answered with an error, or (what happens) it
 *      waits and gets +PONG once Redis continues; established clients too; new clients work.
 *   B. The same with Redis's backlog full (--tcp-backlog 1): upstream connects that the
 *      kernel no longer completes fail after connect-timeout, and those clients get
 *      "-ERR lockproxy: upstream unavailable (...)" and a close within it; the others finish
 *      after SIGCONT.
 *   C. upstream-timeout 1s: a PING to a stopped Redis gets the upstream-timeout error and a
 *      close within about a second; after SIGCONT new clients work.
 *
 * No socket waits without a deadline; what was observed is printed with diag(). */
#include "faults.h"

static const char upstream_err[] = "-ERR lockproxy: upstream unavailable (";

/* Connects n clients to p and sends PING on each. */
static void connect_and_ping(const hp_proc *p, fl_conn *c, size_t n, long long *t0)
{
    for (size_t i = 0; i < n; i++) {
        memset(&c[i], 0, sizeof(c[i]));
        c[i].fd = hp_connect_proc(p, 2000);
        c[i].out = "PING\r\n";
        c[i].outlen = 6;
        t0[i] = hp_now_ms();
        if (c[i].fd < 0)
            diag("client %zu: connect failed: %s", i, strerror(errno));
    }
}

/* A line or a close arrived. */
static int got_line_or_eof(const fl_conn *c)
{
    return c->eof || hp_buf_find(&c->in, 0, "\r\n", 2) != (size_t)-1;
}

static int got_pong_or_eof(const fl_conn *c)
{
    return c->eof || hp_buf_find(&c->in, 0, "+PONG\r\n", 7) != (size_t)-1;
}

static const char *what(const fl_conn *c)
{
    if (c->in.len == 0)
        return c->eof ? "a close" : "nothing";
    return hp_esc(c->in.data, c->in.len, 100);
}

static void phase_a(hp_proc *redis)
{
    const char *cfg = fl_tmp("a.conf");
    fl_write_file(cfg, "connect-timeout 500ms\n");
    const char *extra[] = {"-c", cfg, NULL};
    hp_proc *px = hp_proxy_start(redis, extra);

    fl_conn c[2];
    long long t0[2];
    connect_and_ping(px, c, 1, t0);   /* A: established before the stop */
    fl_pump(c, 1, got_pong_or_eof, 10, 3000);
    ok(HP_HAS(&c[0].in, "+PONG\r\n"), "A: PONG before the stop");
    hp_buf_reset(&c[0].in);

    hp_pause(redis);
    connect_and_ping(px, &c[1], 1, &t0[1]);   /* B: connects while Redis is stopped */
    ok(c[1].fd >= 0, "B: connecting to the proxy while Redis is stopped succeeds");
    c[0].sent = 0;
    c[0].done_at = 0;
    fl_pump(c, 2, got_line_or_eof, 10, 2000);
    diag("Redis stopped, 2 s later: A got %s, B got %s", what(&c[0]), what(&c[1]));
    for (int i = 0; i < 2; i++) {
        const char *name = i == 0 ? "A" : "B";
        ok(c[i].in.len == 0 || hp_buf_has(&c[i].in, upstream_err, sizeof(upstream_err) - 1),
           "%s: while Redis is stopped, nothing or an upstream error", name);
    }

    hp_resume(redis);
    fl_pump(c, 2, got_pong_or_eof, 10, 5000);
    for (int i = 0; i < 2; i++) {
        const char *name = i == 0 ? "A" : "B";
        int errored = hp_buf_has(&c[i].in, upstream_err, sizeof(upstream_err) - 1);
        ok(HP_HAS(&c[i].in, "+PONG\r\n") || (errored && c[i].eof),
           "%s: after SIGCONT its PING completes (got %s)", name, what(&c[i]));
    }
    ok(fl_ping(px, 5000), "a new client gets PONG after SIGCONT");
    fl_conns_close(c, 2);
    ok(hp_stop(px, 5000) == 0, "proxy A exits 0");
}

static void phase_b(void)
{
    const char *rextra[] = {"--tcp-backlog", "1", NULL};
    hp_proc *redis = hp_redis_start(rextra);
    const char *cfg = fl_tmp("b.conf");
    fl_write_file(cfg, "connect-timeout 500ms\n");
    const char *extra[] = {"-c", cfg, NULL};
    hp_proc *px = hp_proxy_start(redis, extra);

    enum { N = 8 };
    fl_conn c[N];
    long long t0[N];
    hp_pause(redis);
    connect_and_ping(px, c, N, t0);
    fl_pump(c, N, got_line_or_eof, 10, 3000);
    int errors = 0, silent = 0, late = 0, other = 0;
    for (int i = 0; i < N; i++) {
        if (c[i].in.len == 0 && !c[i].eof) {
            silent++;
            continue;
        }
        if (hp_buf_has(&c[i].in, upstream_err, sizeof(upstream_err) - 1) ||
            (c[i].in.len == 0 && c[i].eof)) {
            errors++;
            long long ms = c[i].done_at - t0[i];
            if (ms > 500 + 1500)
                late++;
            diag("backlog full: client %d got %s after %lld ms%s", i, what(&c[i]), ms,
                 c[i].eof ? ", then a close" : "");
        } else {
            other++;
            diag("backlog full: client %d got %s", i, what(&c[i]));
        }
    }
    diag("Redis stopped with a full backlog: %d of %d clients got an error or a close, %d nothing",
         errors, N, silent);
    ok(other == 0, "every answer while Redis is stopped is an upstream error or a close");
    ok(errors > 0, "connects the stopped Redis cannot complete fail (connect-timeout 500ms)");
    ok(late == 0, "they fail within connect-timeout plus 1.5 s");

    hp_resume(redis);
    fl_pump(c, N, got_pong_or_eof, 10, 5000);
    int unanswered = 0;
    for (int i = 0; i < N; i++)
        if (!c[i].eof && !HP_HAS(&c[i].in, "+PONG\r\n"))
            unanswered++;
    ok(unanswered == 0, "after SIGCONT every client has its PONG or was closed (%d left waiting)",
       unanswered);
    ok(fl_ping(px, 5000), "a new client gets PONG after SIGCONT");
    fl_conns_close(c, N);
    ok(hp_stop(px, 5000) == 0, "proxy B exits 0");
    hp_stop(redis, 5000);
}

static void phase_c(hp_proc *redis)
{
    const char *cfg = fl_tmp("c.conf");
    fl_write_file(cfg, "connect-timeout 500ms\nupstream-timeout 1s\n");
    const char *extra[] = {"-c", cfg, NULL};
    hp_proc *px = hp_proxy_start(redis, extra);

    fl_conn c[1];
    long long t0[1];
    hp_pause(redis);
    connect_and_ping(px, c, 1, t0);
    fl_pump(c, 1, fl_done_eof, 10, 4000);
    long long ms = c[0].done_at ? c[0].done_at - t0[0] : -1;
    diag("upstream-timeout 1s, Redis stopped: the client got %s%s after %lld ms", what(&c[0]),
         c[0].eof ? " and a close" : "", ms);
    ok(HP_HAS(&c[0].in, "-ERR lockproxy: upstream unavailable (upstream timeout)\r\n"),
       "upstream-timeout: the pending PING gets the upstream-timeout error");
    ok(c[0].eof, "upstream-timeout: then the connection closes");
    ok(ms >= 0 && ms < 1000 + 2000, "upstream-timeout: within the timeout plus 2 s");
    hp_resume(redis);
    ok(fl_ping(px, 5000), "a new client gets PONG after SIGCONT");
    fl_conns_close(c, 1);
    ok(hp_stop(px, 5000) == 0, "proxy C exits 0");
}

int main(void)
{
    fl_init(100);
    plan_lazy();
    hp_proc *redis = hp_redis_start(NULL);
    phase_a(redis);
    phase_b();
    phase_c(redis);
    return 0;
}
