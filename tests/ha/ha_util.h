/* Helpers of the high-availability tests (the programs in tests/ha): programs the harness does not
 * start itself (redis-sentinel, haproxy, a lockproxy handed a listening socket as systemd
 * does), started as children the harness kills when the test ends, with their output in a
 * log in the test's temp dir.
 *
 * Everything is static (HA_FN) on top of lock/deploy_util.h: each program includes this once. */
#ifndef LP_TEST_HA_UTIL_H
#define LP_TEST_HA_UTIL_H

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <unistd.h>

#include "lock/deploy_util.h"
#include "lib/hp_internal.h"

#define HA_FN static __attribute__((unused))

typedef struct ha_child {
    pid_t pid;
    char name[64];
    char log[4096];
    int status;                  /* after ha_wait(): as hp_stop() returns */
} ha_child;

/* Starts argv as a child with stdout and stderr appended to <tmpdir>/<name>.log. With
 * listen_fd >= 0 the child gets it as fd 3 with LISTEN_FDS=1 and LISTEN_PID set to its own
 * pid, as systemd's socket activation passes sockets. */
HA_FN void ha_start(ha_child *c, const char *name, const char *const *argv, int listen_fd)
{
    memset(c, 0, sizeof *c);
    snprintf(c->name, sizeof c->name, "%s", name);
    snprintf(c->log, sizeof c->log, "%s/%s.log", hp_tmpdir(), name);
    c->status = -2;
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid < 0) hp_abort("%s: fork: %s", name, strerror(errno));
    if (pid == 0) {
        hp_child_setup();
        int in = open("/dev/null", O_RDONLY);
        int out = open(c->log, O_WRONLY | O_CREAT | O_APPEND, 0644);
        if (in < 0 || out < 0) _exit(127);
        dup2(in, STDIN_FILENO);
        dup2(out, STDOUT_FILENO);
        dup2(out, STDERR_FILENO);
        if (listen_fd >= 0) {
            if (listen_fd != 3 && dup2(listen_fd, 3) < 0) _exit(127);
            hp_close_fds_from(4);
            char pidtext[32];
            snprintf(pidtext, sizeof pidtext, "%ld", (long)getpid());
            setenv("LISTEN_FDS", "1", 1);
            setenv("LISTEN_PID", pidtext, 1);
        } else {
            hp_close_fds_from(3);
        }
        execvp(argv[0], (char *const *)argv);
        dprintf(STDERR_FILENO, "ha: cannot run %s: %s\n", argv[0], strerror(errno));
        _exit(127);
    }
    c->pid = pid;
    hp_child_add(pid);
}

/* Waits up to timeout_ms for the child to exit. Returns its status as hp_stop() does (exit
 * code, 128+signal), or -1 while it still runs. */
HA_FN int ha_wait(ha_child *c, int timeout_ms)
{
    if (c->pid <= 0) return c->status;
    long long until = hp_now_ms() + timeout_ms;
    for (;;) {
        int st;
        pid_t r = waitpid(c->pid, &st, WNOHANG);
        if (r == c->pid) {
            hp_child_del(c->pid);
            c->pid = 0;
            c->status = WIFEXITED(st) ? WEXITSTATUS(st) : WIFSIGNALED(st) ? 128 + WTERMSIG(st) : -1;
            return c->status;
        }
        if (hp_now_ms() >= until) return -1;
        hp_sleep_ms(5);
    }
}

/* SIGTERM, then SIGKILL after timeout_ms. Returns the status, -1 when it had to be killed. */
HA_FN int ha_stop(ha_child *c, int timeout_ms)
{
    if (c->pid <= 0) return c->status;
    kill(c->pid, SIGTERM);
    int st = ha_wait(c, timeout_ms);
    if (st != -1) return st;
    diag("%s did not exit within %d ms of SIGTERM: killed", c->name, timeout_ms);
    kill(c->pid, SIGKILL);
    ha_wait(c, 5000);
    return -1;
}

HA_FN void ha_kill(ha_child *c)
{
    if (c->pid <= 0) return;
    kill(c->pid, SIGKILL);
    ha_wait(c, 5000);
}

/* Whether PING on 127.0.0.1:port is answered +PONG within timeout_ms (retrying). */
HA_FN int ha_wait_pong(int port, int timeout_ms)
{
    long long until = hp_now_ms() + timeout_ms;
    while (hp_now_ms() < until) {
        int fd = hp_connect(port, 500);
        if (fd >= 0) {
            hp_buf b = {0};
            int good = hp_send_all(fd, "PING\r\n", 6, 1000) == HP_IO_OK &&
                       hp_read_until(fd, &b, 0, "\r\n", 1000) == HP_IO_OK && HP_HAS(&b, "+PONG");
            hp_buf_free(&b);
            close(fd);
            if (good) return 1;
        }
        hp_sleep_ms(20);
    }
    return 0;
}

/* A hiredis connection to 127.0.0.1:port with a 5 s timeout, or NULL. */
HA_FN redisContext *ha_connect_port(int port)
{
    struct timeval tv = { 5, 0 };
    redisContext *c = redisConnectWithTimeout("127.0.0.1", port, tv);
    if (c == NULL || c->err) {
        redisFree(c);
        return NULL;
    }
    redisSetTimeout(c, tv);
    return c;
}

/* One command on a fresh connection to 127.0.0.1:port; the reply or NULL. */
HA_FN redisReply *ha_cmd_port(int port, const char *fmt, ...)
{
    redisContext *c = ha_connect_port(port);
    if (c == NULL) return NULL;
    va_list ap;
    va_start(ap, fmt);
    redisReply *r = redisvCommand(c, fmt, ap);
    va_end(ap);
    redisFree(c);
    return r;
}

/* Whether the file's text contains needle (read afresh). */
HA_FN int ha_file_has(const char *path, const char *needle)
{
    hp_buf b = {0};
    lk_read_file(path, &b);
    int has = b.data != NULL && strstr(b.data, needle) != NULL;
    hp_buf_free(&b);
    return has;
}

/* Polls the file until it contains needle. */
HA_FN int ha_file_wait(const char *path, const char *needle, int timeout_ms)
{
    long long until = hp_now_ms() + timeout_ms;
    do {
        if (ha_file_has(path, needle)) return 1;
        hp_sleep_ms(20);
    } while (hp_now_ms() < until);
    return 0;
}

/* Prints the last lines of a log with diag(). */
HA_FN void ha_log_tail(const char *path, int lines)
{
    hp_buf b = {0};
    lk_read_file(path, &b);
    if (b.data == NULL) return;
    int seen = 0;
    size_t i = b.len;
    while (i > 0 && seen <= lines) if (b.data[--i] == '\n') seen++;
    char *p = b.data + i, *nl;
    while ((nl = strchr(p, '\n')) != NULL) {
        *nl = '\0';
        if (*p) diag("  %s", p);
        p = nl + 1;
    }
    hp_buf_free(&b);
}

#endif
