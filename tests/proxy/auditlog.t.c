/* The audit log writer on a real libuv loop: many lines to a file (exact content, append
 * mode, file mode, the loop not kept alive), a pipe nobody reads for a while (the loop keeps
 * running; the content arrives whole and in order once it is read), the queue bound with its
 * log_dropped line, a non-blocking descriptor (EAGAIN back-off), write errors (/dev/full),
 * reopening after rotation, and closing with lines queued or a write stuck in flight. */
#define _GNU_SOURCE            /* F_GETPIPE_SZ */
#include "tap.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <uv.h>

#include "proxy/auditlog.h"

static char dir[] = "/tmp/lp-auditlog-XXXXXX";
static char err[512];

/* A line of exactly len bytes (len >= 32) numbered seq, ending in '\n'. */
static size_t make_line(char *buf, int seq, size_t len)
{
    int n = snprintf(buf, len, "{\"seq\":%09d,\"pad\":\"", seq);
    memset(buf + n, 'x', len - (size_t)n - 3);
    memcpy(buf + len - 3, "\"}\n", 3);
    return len;
}

static char *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    char *buf = NULL;
    *len = 0;
    if (f == NULL) return NULL;
    size_t cap = 0;
    for (;;) {
        if (*len == cap) {
            cap = cap ? cap * 2 : 65536;
            buf = realloc(buf, cap);
        }
        size_t n = fread(buf + *len, 1, cap - *len, f);
        if (n == 0) break;
        *len += n;
    }
    fclose(f);
    return buf;
}

/* Checks that buf holds lines numbered first, first+1, ... of length linelen, then returns
 * how many; stops at the first line that is not one (*rest points there). */
static int count_seq_lines(const char *buf, size_t len, int first, size_t linelen, const char **rest)
{
    char want[256];
    int n = 0;
    size_t off = 0;
    while (off + linelen <= len) {
        make_line(want, first + n, linelen);
        if (memcmp(buf + off, want, linelen) != 0) break;
        off += linelen;
        n++;
    }
    if (rest) *rest = buf + off;
    return n;
}

/* ---- a file ---- */

typedef struct feeder {
    lp_auditlog *log;
    uv_timer_t timer;
    int next, total, per_tick;
    size_t linelen;
} feeder;

static void feed_cb(uv_timer_t *t)
{
    feeder *f = t->data;
    char buf[256];
    for (int i = 0; i < f->per_tick && f->next < f->total; i++, f->next++)
        lp_auditlog_write(f->log, buf, make_line(buf, f->next, f->linelen));
    if (f->next >= f->total) uv_close((uv_handle_t *)&f->timer, NULL);
}

static void test_file(void)
{
    uv_loop_t loop;
    char path[256], buf[256];
    uv_loop_init(&loop);
    snprintf(path, sizeof(path), "%s/audit.log", dir);
    FILE *pre = fopen(path, "w");
    fputs("existing line\n", pre);
    fclose(pre);

    mode_t old = umask(022);
    lp_auditlog *l = lp_auditlog_open(&loop, path, err, sizeof(err));
    umask(old);
    if (!ok(l != NULL, "open a file")) {
        diag("%s", err);
        return;
    }
    ok(!uv_loop_alive(&loop), "an open, idle log keeps no handle or request active");

    /* 5000 lines written before the loop runs, 20000 from a timer while it runs. */
    for (int i = 0; i < 5000; i++) lp_auditlog_write(l, buf, make_line(buf, i, 100));
    feeder f = {.log = l, .next = 5000, .total = 25000, .per_tick = 500, .linelen = 100};
    uv_timer_init(&loop, &f.timer);
    f.timer.data = &f;
    uv_timer_start(&f.timer, feed_cb, 1, 1);
    uv_run(&loop, UV_RUN_DEFAULT);
    ok(1, "uv_run returned once everything was written: the log does not keep the loop alive");
    ok(!uv_loop_alive(&loop), "  nothing active");

    lp_auditlog_write(l, "no newline", 10);
    uv_run(&loop, UV_RUN_DEFAULT);
    lp_auditlog_write(l, "queued at close\n", 16);
    lp_auditlog_write(l, "and another\n", 12);
    is_int((long long)lp_auditlog_dropped(l), 0, "nothing dropped");
    lp_auditlog_close(l);                      /* one in flight, one queued */
    is_int(uv_loop_close(&loop), 0, "the loop closes cleanly after lp_auditlog_close");

    size_t len;
    char *got = read_file(path, &len);
    const char *rest = got;
    ok(got && len > 14 && memcmp(got, "existing line\n", 14) == 0, "appended after what was there");
    int n = got ? count_seq_lines(got + 14, len - 14, 0, 100, &rest) : 0;
    is_int(n, 25000, "25000 lines, whole and in order");
    is_bytes(rest, got ? len - (size_t)(rest - got) : 0, "no newline\nqueued at close\nand another\n", 39,
             "a '\\n' is added when missing; lines queued at close are written");
    free(got);
    struct stat st;
    ok(stat(path, &st) == 0 && (st.st_mode & 0777) == 0644, "created with mode 0644");
    unlink(path);

    /* Nothing queued: close writes nothing and needs no loop run. */
    uv_loop_init(&loop);
    l = lp_auditlog_open(&loop, path, err, sizeof(err));
    lp_auditlog_close(l);
    got = read_file(path, &len);
    is_int((long long)len, 0, "open then close: an empty file");
    free(got);
    is_int(uv_loop_close(&loop), 0, "  the loop closes cleanly");
    unlink(path);

    lp_auditlog_close(NULL);
    lp_auditlog_write(NULL, "x\n", 2);
    ok(lp_auditlog_open(&loop, "/nonexistent-dir/x/audit.log", err, sizeof(err)) == NULL,
       "a path that cannot be opened: NULL");
    is_string(err, "log /nonexistent-dir/x/audit.log: No such file or directory", "  with the reason");
}

/* ---- a pipe read late ---- */

typedef struct reader {
    int rfd;
    uv_poll_t poll;
    uv_timer_t tick;
    int polling, ticks, delay_ticks, closing;
    int queued_at_read;         /* bytes in the pipe when reading started */
    char *buf;
    size_t len, cap;
    const char *until;          /* stop once buf ends with this */
    size_t want_len;            /* or once this many bytes arrived */
    int stopped;
} reader;

static void reader_close(reader *r)
{
    if (r->closing) return;
    r->closing = 1;
    uv_close((uv_handle_t *)&r->tick, NULL);
    if (r->polling) uv_close((uv_handle_t *)&r->poll, NULL);
}

static int reader_done(const reader *r)
{
    if (r->want_len) return r->len >= r->want_len;
    size_t u = strlen(r->until);
    return r->len >= u && memcmp(r->buf + r->len - u, r->until, u) == 0;
}

static void poll_cb(uv_poll_t *p, int status, int events)
{
    reader *r = p->data;
    for (;;) {
        if (r->cap - r->len < 65536) {
            r->cap = r->cap ? r->cap * 2 : 1 << 20;
            r->buf = realloc(r->buf, r->cap);
        }
        ssize_t n = read(r->rfd, r->buf + r->len, r->cap - r->len);
        if (n <= 0) break;
        r->len += (size_t)n;
    }
    if (reader_done(r)) reader_close(r);
}

/* Ticks every 5 ms; starts reading the pipe after delay_ticks ticks, noting how full it is. */
static void tick_cb(uv_timer_t *t)
{
    reader *r = t->data;
    r->ticks++;
    if (!r->polling && r->ticks >= r->delay_ticks) {
        if (ioctl(r->rfd, FIONREAD, &r->queued_at_read) != 0) r->queued_at_read = -1;
        r->polling = 1;
        uv_poll_init(t->loop, &r->poll, r->rfd);
        r->poll.data = r;
        uv_poll_start(&r->poll, UV_READABLE, poll_cb);
    }
}

static void reader_start(reader *r, uv_loop_t *loop, int rfd, int delay_ticks)
{
    memset(r, 0, sizeof(*r));
    r->rfd = rfd;
    r->delay_ticks = delay_ticks;
    fcntl(rfd, F_SETFL, fcntl(rfd, F_GETFL) | O_NONBLOCK);
    uv_timer_init(loop, &r->tick);
    r->tick.data = r;
    uv_timer_start(&r->tick, tick_cb, 5, 5);
}

static void test_pipe(void)
{
    uv_loop_t loop;
    int fds[2];
    char path[64], buf[256];
    uv_loop_init(&loop);
    if (pipe(fds) != 0) bail_out("pipe: %s", strerror(errno));
    snprintf(path, sizeof(path), "/proc/self/fd/%d", fds[1]);
    lp_auditlog *l = lp_auditlog_open(&loop, path, err, sizeof(err));
    if (!ok(l != NULL, "open a pipe by its /proc/self/fd path")) {
        diag("%s", err);
        return;
    }
    close(fds[1]);                              /* the log holds its own descriptor */

    /* 400 KB: several times what a pipe holds, so a write blocks in the thread pool. */
    for (int i = 0; i < 4000; i++) lp_auditlog_write(l, buf, make_line(buf, i, 100));
    reader r;
    int pipe_cap = fcntl(fds[0], F_GETPIPE_SZ);
    reader_start(&r, &loop, fds[0], 40);
    r.want_len = 4000 * 100;
    uv_run(&loop, UV_RUN_DEFAULT);
    /* A pipe counts as full once its page slots are taken, a little short of its size. */
    ok(r.queued_at_read > pipe_cap - 4096,
       "the loop ran 40 timer ticks while the pipe was full (%d of %d bytes) and a write blocked",
       r.queued_at_read, pipe_cap);
    is_int(count_seq_lines(r.buf, r.len, 0, 100, NULL), 4000, "all 4000 lines arrive, in order, once read");
    is_int((long long)r.len, 400000, "  and nothing else");
    free(r.buf);

    /* The bound: 10 MiB while nobody reads. */
    const size_t linelen = 128;
    const int total = (10 << 20) / 128;
    for (int i = 0; i < total; i++) lp_auditlog_write(l, buf, make_line(buf, i, linelen));
    uint64_t dropped = lp_auditlog_dropped(l);
    int kept = total - (int)dropped;
    ok(dropped > 0 && (size_t)kept * linelen <= LP_AUDITLOG_MAX_QUEUE &&
       (size_t)(kept + 1) * linelen > LP_AUDITLOG_MAX_QUEUE,
       "past %d bytes lines are dropped (%llu of %d)", LP_AUDITLOG_MAX_QUEUE, (unsigned long long)dropped, total);
    reader_start(&r, &loop, fds[0], 20);
    r.until = " lines dropped\"}\n";
    uv_run(&loop, UV_RUN_DEFAULT);
    const char *rest = r.buf;
    is_int(count_seq_lines(r.buf, r.len, 0, linelen, &rest), kept, "the kept lines arrive whole and in order");
    char want[128];
    snprintf(want, sizeof(want), "\",\"event\":\"log_dropped\",\"detail\":\"%llu lines dropped\"}\n",
             (unsigned long long)dropped);
    size_t restlen = r.len - (size_t)(rest - r.buf);
    if (!ok(restlen == 31 + strlen(want) && memcmp(rest, "{\"ts\":\"", 7) == 0 &&
            memcmp(rest + 31, want, strlen(want)) == 0,
            "then one log_dropped line with the count"))
        diag("after the kept lines: %.*s", (int)(restlen < 200 ? restlen : 200), rest);
    free(r.buf);
    is_int((long long)lp_auditlog_dropped(l), (long long)dropped, "lp_auditlog_dropped() keeps the total");
    ok(!uv_loop_alive(&loop), "idle again: nothing active");

    /* Close while a write is stuck on a pipe nobody reads: close gives up (after
     * LP_AUDITLOG_CLOSE_MS); the abandoned write frees the writer when it completes. */
    for (int i = 0; i < 2000; i++) lp_auditlog_write(l, buf, make_line(buf, i, 100));
    uint64_t t0 = uv_hrtime();
    int queued = 0;
    while (queued <= pipe_cap - 4096 && uv_hrtime() - t0 < 10000 * 1000000ULL) {
        uv_run(&loop, UV_RUN_NOWAIT);               /* the second batch starts and blocks */
        usleep(1000);
        if (ioctl(fds[0], FIONREAD, &queued) != 0) break;
    }
    t0 = uv_hrtime();
    lp_auditlog_close(l);
    uint64_t waited = (uv_hrtime() - t0) / 1000000;
    ok(waited + 100 >= LP_AUDITLOG_CLOSE_MS && waited < LP_AUDITLOG_CLOSE_MS + 3000,
       "close gives up on a write stuck on a full pipe after about %d ms (%llu)", LP_AUDITLOG_CLOSE_MS,
       (unsigned long long)waited);
    ok(uv_loop_alive(&loop), "  the abandoned write is still in flight");
    char sink[65536];
    size_t drained = 0;
    for (;;) {
        ssize_t n = read(fds[0], sink, sizeof(sink));
        if (n > 0) {
            drained += (size_t)n;
            continue;
        }
        if (uv_run(&loop, UV_RUN_NOWAIT) == 0) break;
        usleep(1000);
    }
    is_int((long long)drained, 2000 * 100, "  once read, it completes (nothing else is written)");
    is_int(uv_loop_close(&loop), 0, "  and the writer is freed (the loop closes cleanly)");
    close(fds[0]);
}

/* ---- non-blocking stderr: EAGAIN ---- */

static void test_nonblocking_stderr(void)
{
    uv_loop_t loop;
    int fds[2], saved = dup(STDERR_FILENO);
    char buf[256];
    uv_loop_init(&loop);
    if (pipe(fds) != 0 || saved < 0) bail_out("pipe: %s", strerror(errno));
    fcntl(fds[1], F_SETFL, fcntl(fds[1], F_GETFL) | O_NONBLOCK);
    fflush(stderr);
    dup2(fds[1], STDERR_FILENO);                /* no diag() until stderr is back */
    close(fds[1]);

    lp_auditlog *l = lp_auditlog_open(&loop, "-", err, sizeof(err));
    for (int i = 0; i < 3000; i++) lp_auditlog_write(l, buf, make_line(buf, i, 100));
    reader r;
    int pipe_cap = fcntl(fds[0], F_GETPIPE_SZ);
    reader_start(&r, &loop, fds[0], 40);
    r.want_len = 300000;
    uv_run(&loop, UV_RUN_DEFAULT);
    uint64_t dropped = lp_auditlog_dropped(l);
    lp_auditlog_close(l);
    int closed = uv_loop_close(&loop);

    dup2(saved, STDERR_FILENO);
    close(saved);
    close(fds[0]);
    is_int(closed, 0, "(stderr test) loop closed");
    ok(l != NULL, "open \"-\": stderr");
    ok(r.queued_at_read > pipe_cap - 4096,
       "a non-blocking stderr that is full (%d of %d bytes): the loop ran 40 ticks", r.queued_at_read, pipe_cap);
    is_int((long long)dropped, 0, "  EAGAIN drops nothing");
    is_int(count_seq_lines(r.buf, r.len, 0, 100, NULL), 3000, "  all 3000 lines arrive in order");
    is_int((long long)r.len, 300000, "  and nothing else");
    free(r.buf);
}

/* ---- errors, reopening, closing with a queue ---- */

static void test_errors_and_reopen(void)
{
    uv_loop_t loop;
    char buf[256], path[256], rotated[300];
    uv_loop_init(&loop);

    lp_auditlog *l = lp_auditlog_open(&loop, "/dev/full", err, sizeof(err));
    if (ok(l != NULL, "open /dev/full")) {
        for (int i = 0; i < 100; i++) lp_auditlog_write(l, buf, make_line(buf, i, 64));
        uv_run(&loop, UV_RUN_DEFAULT);
        ok(1, "write errors do not keep the loop running");
        is_int((long long)lp_auditlog_dropped(l), 100, "the failed lines count as dropped");
        lp_auditlog_close(l);
    }

    snprintf(path, sizeof(path), "%s/rot.log", dir);
    snprintf(rotated, sizeof(rotated), "%s/rot.log.1", dir);
    l = lp_auditlog_open(&loop, path, err, sizeof(err));
    for (int i = 0; i < 1000; i++) lp_auditlog_write(l, buf, make_line(buf, i, 80));
    uv_run(&loop, UV_RUN_DEFAULT);
    rename(path, rotated);
    for (int i = 1000; i < 1500; i++) lp_auditlog_write(l, buf, make_line(buf, i, 80));
    /* Line 1000 is in flight on the old file, 1001.. are queued: reopen now. */
    is_int(lp_auditlog_reopen(l, err, sizeof(err)), 0, "reopen while a write is in flight");
    for (int i = 1500; i < 2000; i++) lp_auditlog_write(l, buf, make_line(buf, i, 80));
    uv_run(&loop, UV_RUN_DEFAULT);
    is_int(lp_auditlog_reopen(l, err, sizeof(err)), 0, "reopen when idle");
    for (int i = 2000; i < 2100; i++) lp_auditlog_write(l, buf, make_line(buf, i, 80));
    lp_auditlog_close(l);

    size_t len1, len2;
    char *old = read_file(rotated, &len1), *cur = read_file(path, &len2);
    is_int(count_seq_lines(old, len1, 0, 80, NULL), 1001, "the rotated file has what was written before, and the write in flight");
    is_int((long long)len1, 1001 * 80, "  only that");
    is_int(count_seq_lines(cur, len2, 1001, 80, NULL), 1099, "the new file has the rest, in order");
    is_int((long long)len2, 1099 * 80, "  only that");
    free(old);
    free(cur);
    unlink(path);
    unlink(rotated);

    l = lp_auditlog_open(&loop, "-", err, sizeof(err));
    is_int(lp_auditlog_reopen(l, err, sizeof(err)), 0, "reopen of stderr: nothing to do");
    lp_auditlog_close(l);

    /* The bound is exact, and close writes the queue and the log_dropped line without the
     * loop having run since. */
    snprintf(path, sizeof(path), "%s/close.log", dir);
    l = lp_auditlog_open(&loop, path, err, sizeof(err));
    static char huge[LP_AUDITLOG_MAX_QUEUE];
    memset(huge, 'h', sizeof(huge));
    huge[sizeof(huge) - 7] = '\n';
    lp_auditlog_write(l, "first\n", 6);                /* in flight */
    lp_auditlog_write(l, huge, sizeof(huge) - 6);     /* fits exactly */
    is_int((long long)lp_auditlog_dropped(l), 0, "a line that makes the queue exactly the bound fits");
    lp_auditlog_write(l, "x\n", 2);
    is_int((long long)lp_auditlog_dropped(l), 1, "  one byte more does not");
    lp_auditlog_close(l);
    is_int(uv_loop_close(&loop), 0, "loop closes cleanly");
    char *got = read_file(path, &len1);
    ok(got && len1 > sizeof(huge) && memcmp(got, "first\n", 6) == 0 && memcmp(got + 6, huge, sizeof(huge) - 6) == 0,
       "close writes the queue");
    const char *tail = got && len1 > sizeof(huge) ? got + sizeof(huge) : "";
    ok(strncmp(tail, "{\"ts\":\"", 7) == 0 &&
       strstr(tail, "\",\"event\":\"log_dropped\",\"detail\":\"1 lines dropped\"}\n") == tail + 31,
       "  then the log_dropped line");
    free(got);
    unlink(path);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    if (mkdtemp(dir) == NULL) bail_out("mkdtemp: %s", strerror(errno));
    plan_lazy();
    test_file();
    test_pipe();
    test_nonblocking_stderr();
    test_errors_and_reopen();
    rmdir(dir);
    return 0;
}
