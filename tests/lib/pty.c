/* Integration test harness: other programs, run to completion (hp_run) or on a
 * pseudo-terminal (hp_pty_*) (see harness.h). */
#define _GNU_SOURCE     /* memmem, pipe2, program_invocation_short_name, nftw */
#include "lib/hp_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pty.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void hp_set_nonblock(int fd)
{
    int fl = fcntl(fd, F_GETFL);
    if (fl >= 0) fcntl(fd, F_SETFL, fl | O_NONBLOCK);
}

/* Reads what is available from fd into b (NULL discards). Returns 0 at EOF, 1 otherwise. */
static int hp_drain_fd(int fd, hp_buf *b)
{
    char chunk[65536];
    for (;;) {
        ssize_t n = read(fd, chunk, sizeof chunk);
        if (n > 0) {
            if (b) hp_buf_append(b, chunk, (size_t)n);
            continue;
        }
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return 1;
        return 0;   /* EOF, or EIO on a pty whose other side closed */
    }
}

int hp_run(const char *const *argv, const void *in, size_t inlen, hp_buf *out, hp_buf *err,
           int timeout_ms)
{
    hp_init();
    int pin[2], pout[2], perr[2];
    if (pipe2(pin, O_CLOEXEC) != 0) return -1;
    if (pipe2(pout, O_CLOEXEC) != 0 || pipe2(perr, O_CLOEXEC) != 0) hp_bail("pipe: %s", strerror(errno));
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid < 0) hp_bail("fork: %s", strerror(errno));
    if (pid == 0) {
        hp_child_setup();
        dup2(pin[0], STDIN_FILENO);
        dup2(pout[1], STDOUT_FILENO);
        dup2(perr[1], STDERR_FILENO);
        hp_close_fds_from(3);
        execvp(argv[0], (char *const *)argv);
        dprintf(STDERR_FILENO, "harness: cannot run %s: %s\n", argv[0], strerror(errno));
        _exit(127);
    }
    hp_child_add(pid);
    close(pin[0]);
    close(pout[1]);
    close(perr[1]);
    hp_set_nonblock(pin[1]);
    hp_set_nonblock(pout[0]);
    hp_set_nonblock(perr[0]);
    const char *data = in;
    size_t pos = 0;
    int win = pin[1], rout = pout[0], rerr = perr[0];
    if (inlen == 0) {
        close(win);
        win = -1;
    }
    long long until = hp_now_ms() + timeout_ms;
    int timed_out = 0;
    while (rout >= 0 || rerr >= 0 || win >= 0) {
        long long left = until - hp_now_ms();
        if (left <= 0) {
            timed_out = 1;
            break;
        }
        struct pollfd pf[3] = {
            { rout, POLLIN, 0 }, { rerr, POLLIN, 0 }, { win, POLLOUT, 0 },
        };
        int r = poll(pf, 3, (int)(left > 100 ? 100 : left));
        if (r < 0 && errno != EINTR) break;
        if (r <= 0) continue;
        if (rout >= 0 && pf[0].revents && !hp_drain_fd(rout, out)) {
            close(rout);
            rout = -1;
        }
        if (rerr >= 0 && pf[1].revents && !hp_drain_fd(rerr, err)) {
            close(rerr);
            rerr = -1;
        }
        if (win >= 0 && pf[2].revents) {
            ssize_t n = write(win, data + pos, inlen - pos > 65536 ? 65536 : inlen - pos);
            if (n > 0) pos += (size_t)n;
            if ((n < 0 && errno != EAGAIN && errno != EINTR) || pos == inlen) {
                close(win);
                win = -1;
            }
        }
    }
    if (rout >= 0) close(rout);
    if (rerr >= 0) close(rerr);
    if (win >= 0) close(win);
    hp_proc tmp = { .pid = pid, .exit_code = -2 };
    if (timed_out || hp_reap(&tmp, (int)(until - hp_now_ms() > 0 ? until - hp_now_ms() : 0)) != 0) {
        diag("%s did not finish within %d ms: killing it", argv[0], timeout_ms);
        kill(pid, SIGKILL);
        hp_reap(&tmp, 5000);
        return -1;
    }
    return tmp.exit_code;
}

int hp_pty_spawn(hp_pty *t, const char *const *argv, const char *const *env, int rows, int cols)
{
    hp_init();
    memset(t, 0, sizeof *t);
    hp_buf_append(&t->out, "", 0);
    struct winsize ws = { .ws_row = (unsigned short)rows, .ws_col = (unsigned short)cols };
    fflush(stdout);
    fflush(stderr);
    int master;
    pid_t pid = forkpty(&master, NULL, NULL, &ws);
    if (pid < 0) {
        diag("forkpty: %s", strerror(errno));
        return -1;
    }
    if (pid == 0) {
        hp_child_setup();
        hp_close_fds_from(3);
        for (int i = 0; env != NULL && env[i] != NULL; i++) putenv((char *)env[i]);
        execvp(argv[0], (char *const *)argv);
        dprintf(STDERR_FILENO, "harness: cannot run %s: %s\n", argv[0], strerror(errno));
        _exit(127);
    }
    fcntl(master, F_SETFD, FD_CLOEXEC);
    hp_set_nonblock(master);
    hp_child_add(pid);
    t->pid = pid;
    t->fd = master;
    return 0;
}

int hp_pty_write(hp_pty *t, const char *text)
{
    size_t len = strlen(text), pos = 0;
    long long until = hp_now_ms() + 5000;
    while (pos < len) {
        ssize_t n = write(t->fd, text + pos, len - pos);
        if (n > 0) {
            pos += (size_t)n;
            continue;
        }
        if (n < 0 && errno != EAGAIN && errno != EINTR) return -1;
        if (hp_wait_fd(t->fd, POLLOUT, until) <= 0) return -1;
        hp_drain_fd(t->fd, &t->out);
    }
    return 0;
}

int hp_pty_expect(hp_pty *t, const char *needle, int timeout_ms)
{
    long long until = hp_now_ms() + timeout_ms;
    size_t nlen = strlen(needle);
    for (;;) {
        size_t at = hp_buf_find(&t->out, t->mark, needle, nlen);
        if (at != (size_t)-1) {
            t->mark = at + nlen;
            return 1;
        }
        int ev = hp_wait_fd(t->fd, POLLIN, until);
        if (ev <= 0) return 0;
        if (!hp_drain_fd(t->fd, &t->out)) {
            at = hp_buf_find(&t->out, t->mark, needle, nlen);
            if (at != (size_t)-1) t->mark = at + nlen;
            return at != (size_t)-1;
        }
    }
}

void hp_pty_drain(hp_pty *t, int idle_ms, int deadline_ms)
{
    long long until = hp_now_ms() + deadline_ms;
    for (;;) {
        long long left = until - hp_now_ms();
        if (left <= 0) return;
        int ev = hp_wait_fd(t->fd, POLLIN, hp_now_ms() + (idle_ms < left ? idle_ms : left));
        if (ev <= 0) return;
        if (!hp_drain_fd(t->fd, &t->out)) return;
    }
}

int hp_pty_close(hp_pty *t, int timeout_ms)
{
    long long until = hp_now_ms() + timeout_ms;
    hp_proc tmp = { .pid = t->pid, .exit_code = -2 };
    int code = -1;
    while (t->pid > 0) {
        if (hp_reap(&tmp, 0) == 0) {
            code = tmp.exit_code;
            break;
        }
        if (hp_now_ms() >= until) {
            diag("pty program %d did not exit within %d ms: killing it", (int)t->pid, timeout_ms);
            kill(t->pid, SIGKILL);
            hp_reap(&tmp, 5000);
            code = -1;
            break;
        }
        if (hp_wait_fd(t->fd, POLLIN, hp_now_ms() + 20) > 0) hp_drain_fd(t->fd, &t->out);
    }
    hp_drain_fd(t->fd, &t->out);
    close(t->fd);
    t->fd = -1;
    t->pid = 0;
    return code;
}
