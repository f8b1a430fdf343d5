/* Fault: the proxy runs out of file descriptors (EMFILE). It is started with a soft
 * RLIMIT_NOFILE of 64 (set in this program before the fork, inherited through exec, as
 * `prlimit --nofile=64` would), so it can hold about 25 client/upstream pairs; then 100
 * connection attempts are made, half at once and half spread over a 2-second window.
 * (The test itself raises its own descriptor limit to hold them.)
 *
 *   - the loop does not spin: the proxy's CPU time (/proc/PID/stat) grows by less than 0.5 s
 *     over those 2 s;
 *   - a client connected before keeps working (PONG);
 *   - every attempt ends: PONG, "-ERR lockproxy: upstream unavailable (...)" (accepted, but
 *     no descriptor left for its upstream), or a close without a reply (libuv's EMFILE
 *     trick: it accepts and closes pending connections with a reserved descriptor);
 *   - when descriptors are freed, accepting resumes: a new client gets PONG;
 *   - every refused connection is logged: the proxy's "accept failed: ... (N so far)" lines
 *     (at most one a second) reach at least the number of attempts closed without a reply. */
#define _GNU_SOURCE
#include "faults.h"

#define LIMIT 64
#define ATTEMPTS 200

/* Descriptors of pid numbered at or above the limit: inherited from whoever started this
 * test (the proxy cannot open them under its limit). */
static int high_fds(pid_t pid)
{
    char dir[64];
    snprintf(dir, sizeof dir, "/proc/%d/fd", (int)pid);
    DIR *d = opendir(dir);
    int n = 0;
    struct dirent *e;
    while (d && (e = readdir(d)) != NULL)
        if (e->d_name[0] != '.' && atoi(e->d_name) >= LIMIT) n++;
    if (d) closedir(d);
    return n;
}

static int line_or_eof(const fl_conn *c)
{
    return c->eof || hp_buf_find(&c->in, 0, "\r\n", 2) != (size_t)-1;
}

static void connect_one(const hp_proc *px, fl_conn *c)
{
    memset(c, 0, sizeof(*c));
    c->fd = hp_connect_proc(px, 2000);
    c->out = "PING\r\n";
    c->outlen = 6;
    if (c->fd < 0)
        diag("connect failed: %s", strerror(errno));
}

int main(void)
{
    fl_init(100);
    plan_lazy();
    fl_raise_nofile(4096);
    hp_proc *redis = hp_redis_start(NULL);

    struct rlimit saved, low;
    if (getrlimit(RLIMIT_NOFILE, &saved) != 0)
        hp_bail("getrlimit: %s", strerror(errno));
    low = saved;
    low.rlim_cur = LIMIT;
    if (setrlimit(RLIMIT_NOFILE, &low) != 0)
        hp_bail("setrlimit: %s", strerror(errno));
    hp_proc *px = hp_proxy_start(redis, NULL);
    if (setrlimit(RLIMIT_NOFILE, &saved) != 0)
        hp_bail("setrlimit: %s", strerror(errno));
    struct rlimit got;
    if (prlimit(px->pid, RLIMIT_NOFILE, NULL, &got) == 0)
        is_int((long long)got.rlim_cur, LIMIT, "the proxy runs with RLIMIT_NOFILE %d", LIMIT);

    int inherited = high_fds(px->pid);
    fl_conn established;
    connect_one(px, &established);
    fl_pump(&established, 1, line_or_eof, 10, 5000);
    ok(HP_HAS(&established.in, "+PONG\r\n"), "a client connected before gets PONG");
    int base = fl_nfds(px->pid);
    diag("the proxy holds %d descriptors with one client", base);

    static fl_conn c[ATTEMPTS];
    size_t n = 0;
    for (; n < ATTEMPTS / 2; n++)
        connect_one(px, &c[n]);
    fl_pump(c, n, line_or_eof, 10, 1500);

    /* The window: more attempts, one every 40 ms, and the proxy's CPU time over it. */
    long long cpu0 = fl_cpu_ms(px->pid), t0 = hp_now_ms();
    while (n < ATTEMPTS) {
        connect_one(px, &c[n]);
        n++;
        fl_pump(c, n, fl_done_never, 10, 40);
    }
    long long left = 2000 - (hp_now_ms() - t0);
    if (left > 0)
        fl_pump(c, n, fl_done_never, 10, left);
    long long cpu = fl_cpu_ms(px->pid) - cpu0, wall = hp_now_ms() - t0;
    diag("over the limit: the proxy used %lld ms of CPU in %lld ms", cpu, wall);
    ok(cpu0 >= 0 && cpu < 500, "no busy loop at EMFILE: CPU time grew by %lld ms (< 500) in %lld ms", cpu, wall);
    ok(fl_nfds(px->pid) <= LIMIT + inherited, "the proxy stays within its limit (%d descriptors, %d inherited above it)",
       fl_nfds(px->pid), inherited);

    int pong = 0, err = 0, closed = 0, silent = 0, other = 0;
    for (size_t i = 0; i < n; i++) {
        if (HP_HAS(&c[i].in, "+PONG\r\n"))
            pong++;
        else if (HP_HAS(&c[i].in, "-ERR lockproxy: upstream unavailable ("))
            err++;
        else if (c[i].in.len == 0 && c[i].eof)
            closed++;
        else if (c[i].in.len == 0)
            silent++;
        else {
            other++;
            diag("attempt %zu got '%s'", i, hp_esc(c[i].in.data, c[i].in.len, 100));
        }
    }
    diag("%d attempts: %d PONG, %d upstream errors, %d closed without a reply, %d waiting",
         ATTEMPTS, pong, err, closed, silent);
    is_int(other, 0, "every answer is PONG or an upstream error");
    ok(pong > 0, "attempts within the limit are served");
    ok(err + closed + silent > 0, "attempts beyond it are turned away or wait");

    established.sent = 0;
    hp_buf_reset(&established.in);
    fl_pump(&established, 1, line_or_eof, 10, 5000);
    ok(HP_HAS(&established.in, "+PONG\r\n"), "the client connected before still gets PONG at EMFILE");

    /* Free descriptors: the served clients go. Those still waiting get through or are closed. */
    for (size_t i = 0; i < n; i++)
        if (c[i].in.len > 0 || c[i].eof) {
            close(c[i].fd);
            c[i].fd = -1;
        }
    fl_pump(c, n, line_or_eof, 10, 8000);
    int stuck = 0, late_pong = 0;
    for (size_t i = 0; i < n; i++) {
        if (c[i].fd < 0)
            continue;
        if (HP_HAS(&c[i].in, "+PONG\r\n"))
            late_pong++;
        else if (!line_or_eof(&c[i]))
            stuck++;
    }
    diag("after descriptors were freed, %d waiting attempts got PONG", late_pong);
    is_int(stuck, 0, "no attempt waits forever once descriptors are free");
    fl_conns_close(c, n);

    long long until = hp_now_ms() + 5000;
    while (fl_nfds(px->pid) > base && hp_now_ms() < until)
        hp_sleep_ms(20);
    ok(fl_ping(px, 5000), "accepting resumes: a new client gets PONG");
    established.sent = 0;
    hp_buf_reset(&established.in);
    fl_pump(&established, 1, line_or_eof, 10, 5000);
    ok(HP_HAS(&established.in, "+PONG\r\n"), "the first client still works");
    fl_conns_close(&established, 1);

    /* The last count can wait for the next one-second report. */
    long long logged = 0;
    for (int tries = 0; tries < 40 && logged < closed; tries++) {
        hp_buf log = {0};
        hp_log_read(px, &log);
        hp_buf_append(&log, "", 1);
        for (const char *p = log.data; (p = strstr(p, "accept failed: ")) != NULL; p++) {
            const char *q = strstr(p, " so far)");
            const char *o = q ? q : p;
            while (o > p && o[-1] >= '0' && o[-1] <= '9') o--;
            if (q && o < q) logged = atoll(o);
        }
        hp_buf_free(&log);
        if (logged < closed) hp_sleep_ms(100);
    }
    ok(logged > 0, "refused accepts are logged (\"accept failed: ... (%lld so far)\")", logged);
    ok(logged >= closed, "  the count covers every attempt closed without a reply (%lld >= %d)", logged, closed);
    is_int(hp_stop(px, 5000), 0, "the proxy exits 0");
    return 0;
}
