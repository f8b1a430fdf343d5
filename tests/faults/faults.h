/* Helpers shared by the fault and load tests in tests/faults: what /proc says about a
 * process, small files, and a poll() loop that drives many raw connections at once.
 *
 *   fl_conn[0..n) ──send out[] (optionally a few bytes per tick)──► proxy / Redis
 *                 ◄──append to in, note EOF──────────────────────────
 *   fl_pump() returns when every connection is done (its own test) or at the deadline.
 *
 * Everything is bounded by deadlines; the harness watchdog ends a program that hangs anyway.
 * Header-only (CMake builds each test program from its one .t.c). */
#ifndef LP_FAULTS_H
#define LP_FAULTS_H

#include "lib/harness.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#define FL_UNUSED __attribute__((unused))

/* Every test program stops itself if it runs far past its budget (each is meant to take
 * well under a minute). Call before anything else of the harness. */
static FL_UNUSED void fl_init(int watchdog_s)
{
    const char *si = getenv("LP_TEST_PROXY_IS_REDIS");
    if (si != NULL && strcmp(si, "0") != 0 && *si != '\0')
        skip_all("fault tests watch the proxy process itself (LP_TEST_PROXY_IS_REDIS is set)");
    char v[16];
    snprintf(v, sizeof(v), "%d", watchdog_s);
    setenv("LP_TEST_WATCHDOG", v, 0);
    hp_init();
}

/* ---- /proc ---------------------------------------------------------------------------- */

/* User plus system CPU time of a process in milliseconds, or -1. */
static FL_UNUSED long long fl_cpu_ms(pid_t pid)
{
    char path[64], buf[2048];
    snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return -1;
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    /* The command name may hold spaces: fields are counted after its closing ')'. */
    char *p = strrchr(buf, ')');
    if (p == NULL)
        return -1;
    unsigned long long utime = 0, stime = 0;
    /* After ')': state(3) ppid(4) ... utime(14) stime(15). */
    if (sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &utime, &stime) != 2)
        return -1;
    long hz = sysconf(_SC_CLK_TCK);
    return (long long)((utime + stime) * 1000ULL / (unsigned long long)(hz > 0 ? hz : 100));
}

/* A "Name: <n> kB" field of /proc/PID/status (VmRSS, VmHWM), in KiB, or -1. */
static FL_UNUSED long long fl_status_kb(pid_t pid, const char *field)
{
    char path[64], line[256];
    size_t flen = strlen(field);
    long long v = -1;
    snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return -1;
    while (fgets(line, sizeof(line), f) != NULL)
        if (strncmp(line, field, flen) == 0 && line[flen] == ':') {
            v = atoll(line + flen + 1);
            break;
        }
    fclose(f);
    return v;
}

/* Open descriptors of a process, or -1. */
static FL_UNUSED int fl_nfds(pid_t pid)
{
    char path[64];
    snprintf(path, sizeof(path), "/proc/%d/fd", (int)pid);
    DIR *d = opendir(path);
    if (d == NULL)
        return -1;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        if (e->d_name[0] != '.')
            n++;
    closedir(d);
    return n;
}

/* 1 while p runs (it has not exited and was not reaped). */
static FL_UNUSED int fl_alive(hp_proc *p)
{
    return p->pid > 0 && hp_wait_exit(p, 0) == -1;
}

/* Writes text to path (replacing it). Returns 0 or -1. */
static FL_UNUSED int fl_write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    if (f == NULL)
        return -1;
    size_t n = strlen(text);
    int rc = fwrite(text, 1, n, f) == n ? 0 : -1;
    if (fclose(f) != 0)
        rc = -1;
    return rc;
}

/* A path in the test's temp dir. The result lives until four more calls. */
static FL_UNUSED const char *fl_tmp(const char *name)
{
    static char paths[4][4200];
    static int next;
    char *p = paths[next++ % 4];
    snprintf(p, sizeof(paths[0]), "%s/%s", hp_tmpdir(), name);
    return p;
}

/* Raises this process's soft descriptor limit towards want (children inherit it). Returns
 * the soft limit in force afterwards. */
static FL_UNUSED long long fl_raise_nofile(long long want)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
        return -1;
    if (rl.rlim_cur != RLIM_INFINITY && (long long)rl.rlim_cur < want) {
        rlim_t to = (rl.rlim_max == RLIM_INFINITY || (long long)rl.rlim_max >= want) ? (rlim_t)want
                                                                                     : rl.rlim_max;
        rl.rlim_cur = to;
        setrlimit(RLIMIT_NOFILE, &rl);
        getrlimit(RLIMIT_NOFILE, &rl);
    }
    return rl.rlim_cur == RLIM_INFINITY ? (1LL << 30) : (long long)rl.rlim_cur;
}

/* ---- many connections ------------------------------------------------------------------ */

typedef struct fl_conn {
    int fd;                      /* -1 when not connected (or closed by us) */
    const char *out;             /* bytes to send */
    size_t outlen, sent;
    int drip;                    /* >0: send at most this many bytes per tick */
    hp_buf in;                   /* what arrived */
    int eof;                     /* the peer closed (EOF or reset) */
    int shut_after_send;         /* shutdown(SHUT_WR) once everything is sent */
    int shut;
    long long done_at;           /* when the test below first said done (ms), or 0 */
    long long last;              /* last bytes sent or received (ms); 0: not yet */
    void *ud;
} fl_conn;

/* Says whether a connection got what it waits for. */
typedef int (*fl_done_fn)(const fl_conn *c);

/* The reply bytes expected so far have all arrived: ud points at a size_t. */
static FL_UNUSED int fl_done_len(const fl_conn *c)
{
    return c->eof || c->in.len >= *(const size_t *)c->ud;
}

static FL_UNUSED int fl_done_eof(const fl_conn *c)
{
    return c->eof;
}

/* Never done: fl_pump() then runs until its deadline (a window of time with traffic). */
static FL_UNUSED int fl_done_never(const fl_conn *c)
{
    (void)c;
    return 0;
}

/* Everything was sent and then the peer closed or went quiet for 300 ms. */
static FL_UNUSED int fl_done_quiet(const fl_conn *c)
{
    return c->sent == c->outlen && (c->eof || (c->last > 0 && hp_now_ms() - c->last >= 300));
}

/* Drives conns until done(c) holds for all of them (a connection whose fd is -1 counts as
 * done) or the deadline. tick_ms paces dripping connections. Returns how many are done. */
static FL_UNUSED size_t fl_pump(fl_conn *conns, size_t n, fl_done_fn done, int tick_ms,
                                long long deadline_ms)
{
    struct pollfd *pfd = calloc(n ? n : 1, sizeof(*pfd));
    size_t *idx = calloc(n ? n : 1, sizeof(*idx));
    long long until = hp_now_ms() + deadline_ms, next_tick = hp_now_ms();
    size_t ndone = 0;
    char buf[65536];
    if (pfd == NULL || idx == NULL)
        hp_bail("out of memory");
    for (;;) {
        long long now = hp_now_ms();
        int tick = now >= next_tick;
        if (tick)
            next_tick = now + tick_ms;
        size_t np = 0;
        ndone = 0;
        for (size_t i = 0; i < n; i++) {
            fl_conn *c = &conns[i];
            if (c->fd < 0 || done(c)) {
                if (c->fd >= 0 && c->done_at == 0)
                    c->done_at = now;
                ndone++;
                if (c->fd < 0 || c->eof)
                    continue;
            }
            short ev = c->eof ? 0 : POLLIN;
            if (c->sent < c->outlen && (c->drip == 0 || tick))
                ev |= POLLOUT;
            if (ev == 0)
                continue;
            pfd[np].fd = c->fd;
            pfd[np].events = ev;
            pfd[np].revents = 0;
            idx[np++] = i;
        }
        if (ndone == n || now >= until)
            break;
        long long wait = until - now;
        if (next_tick - now < wait)
            wait = next_tick - now > 0 ? next_tick - now : 0;
        if (wait > 100)
            wait = 100;
        int r = poll(pfd, (nfds_t)np, (int)wait);
        if (r < 0 && errno != EINTR)
            hp_bail("poll: %s", strerror(errno));
        for (size_t k = 0; r > 0 && k < np; k++) {
            fl_conn *c = &conns[idx[k]];
            if (pfd[k].revents & POLLOUT) {
                size_t left = c->outlen - c->sent;
                if (c->drip > 0 && left > (size_t)c->drip)
                    left = (size_t)c->drip;
                ssize_t w = send(c->fd, c->out + c->sent, left, MSG_NOSIGNAL);
                if (w > 0) {
                    c->sent += (size_t)w;
                    c->last = hp_now_ms();
                }
                else if (w < 0 && errno != EAGAIN && errno != EINTR)
                    c->sent = c->outlen;   /* the peer is gone: stop sending */
                if (c->sent == c->outlen && c->shut_after_send && !c->shut) {
                    shutdown(c->fd, SHUT_WR);
                    c->shut = 1;
                }
            }
            if (pfd[k].revents & (POLLIN | POLLHUP | POLLERR)) {
                for (;;) {
                    ssize_t got = recv(c->fd, buf, sizeof(buf), 0);
                    if (got > 0) {
                        hp_buf_append(&c->in, buf, (size_t)got);
                        c->last = hp_now_ms();
                        continue;
                    }
                    if (got == 0 || (errno != EAGAIN && errno != EINTR))
                        c->eof = 1;
                    break;
                }
            }
        }
    }
    free(pfd);
    free(idx);
    return ndone;
}

static FL_UNUSED void fl_conns_close(fl_conn *conns, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (conns[i].fd >= 0)
            close(conns[i].fd);
        conns[i].fd = -1;
        hp_buf_free(&conns[i].in);
    }
}

/* One PING on a fresh connection to p: 1 when +PONG came back within timeout_ms. */
static FL_UNUSED int fl_ping(const hp_proc *p, int timeout_ms)
{
    int fd = hp_connect_proc(p, timeout_ms);
    if (fd < 0)
        return 0;
    hp_buf b = {0};
    int good = hp_send_all(fd, "PING\r\n", 6, timeout_ms) == HP_IO_OK &&
               hp_read_until(fd, &b, 0, "\r\n", timeout_ms) == HP_IO_OK &&
               strcmp(b.data, "+PONG\r\n") == 0;
    hp_buf_free(&b);
    close(fd);
    return good;
}

#endif
