/* The audit log writer. See auditlog.h.
 *
 * Two buffers: q collects new lines, out is the batch being written (out_off of out_len
 * done). When a batch completes and q is not empty they swap, so the loop only ever appends
 * to q while the thread pool reads out. The emptied buffer is kept for reuse unless it grew
 * past LP_AUDITLOG_KEEP, so an idle writer holds little memory after a burst. */
#include "proxy/auditlog.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "policy/audit.h"

#define LP_AUDITLOG_KEEP (64 * 1024)      /* largest idle buffer kept for reuse */
#define RETRY_MIN_MS 10
#define RETRY_MAX_MS 250

struct lp_auditlog {
    uv_loop_t *loop;
    char *path;                 /* NULL: stderr */
    int fd;
    int own_fd;                 /* fd is ours to close */
    int next_fd;                /* from lp_auditlog_reopen, taken over between writes; -1: none */
    uv_fs_t req;
    int busy;                   /* req is in flight: out belongs to it */
    int closing;                /* lp_auditlog_close() runs: start no new write */
    int orphaned;               /* close gave up on the write in flight: write_cb frees */
    uv_timer_t timer;           /* EAGAIN back-off; close's wake-up */
    int timer_init, timer_closed;
    unsigned retry_ms;
    int last_err;               /* last write error reported on stderr; 0: none */
    char *out;
    size_t out_len, out_off, out_cap;
    char *q;
    size_t q_len, q_cap;
    uint64_t dropped;           /* not reported yet */
    uint64_t dropped_total;
    struct reopen_req *reopening;   /* the open in flight on the thread pool, or NULL */
};

/* A reopen in flight. Its writer may be closed before it completes: l is then NULL and the
 * callback closes what was opened. */
typedef struct reopen_req {
    uv_fs_t req;
    lp_auditlog *l;
} reopen_req;

static void start_write(lp_auditlog *l);

/* Bytes queued or in flight, which the bound applies to. */
static size_t pending(const lp_auditlog *l)
{
    return l->q_len + (l->out_len - l->out_off);
}

static size_t count_lines(const char *p, size_t n)
{
    size_t lines = 0;
    const char *end = p + n;
    while (p < end && (p = memchr(p, '\n', (size_t)(end - p))) != NULL) {
        lines++;
        p++;
    }
    return lines;
}

/* Makes room in q for n more bytes. Returns 0, or -1 when out of memory. */
static int q_reserve(lp_auditlog *l, size_t n)
{
    if (n <= l->q_cap - l->q_len) return 0;
    size_t cap = l->q_cap ? l->q_cap : 4096;
    while (cap - l->q_len < n) cap *= 2;
    char *nq = realloc(l->q, cap);
    if (nq == NULL) return -1;
    l->q = nq;
    l->q_cap = cap;
    return 0;
}

/* Appends n bytes to q. Returns 0, or -1 when out of memory. */
static int q_add(lp_auditlog *l, const char *p, size_t n)
{
    if (q_reserve(l, n) < 0) return -1;
    memcpy(l->q + l->q_len, p, n);
    l->q_len += n;
    return 0;
}

/* Queues the log_dropped line when lines were dropped, the last write did not fail, and it
 * fits under the bound; with force (at close) whenever lines were dropped. After a write
 * error the note waits for a write that succeeds: else, on a file that keeps failing, each
 * failed note would be a dropped line calling for another note. */
static void note_dropped(lp_auditlog *l, int force)
{
    char line[160], ts[25];
    struct timespec now;
    if (l->dropped == 0 || (!force && l->last_err != 0)) return;
    clock_gettime(CLOCK_REALTIME, &now);
    audit_format_time((int64_t)now.tv_sec * 1000 + now.tv_nsec / 1000000, ts);
    int n = snprintf(line, sizeof(line),
                     "{\"ts\":\"%s\",\"event\":\"log_dropped\",\"detail\":\"%llu lines dropped\"}\n",
                     ts, (unsigned long long)l->dropped);
    if (n <= 0 || (size_t)n >= sizeof(line)) return;
    if (!force && pending(l) + (size_t)n > LP_AUDITLOG_MAX_QUEUE) return;
    if (q_add(l, line, (size_t)n) == 0) l->dropped = 0;
}

/* Says once per distinct error, on stderr, that the log cannot be written (not when the log
 * is stderr: that is what failed). */
static void report_error(lp_auditlog *l, int err)
{
    if (err == l->last_err) return;
    l->last_err = err;
    if (l->path) fprintf(stderr, "lockproxy: audit log %s: %s; dropping lines\n", l->path, uv_strerror(err));
}

/* Gives up the unwritten rest of the batch after error err: its lines count as dropped. */
static void drop_batch(lp_auditlog *l, int err)
{
    size_t lost = count_lines(l->out + l->out_off, l->out_len - l->out_off);
    l->dropped += lost;
    l->dropped_total += lost;
    l->out_off = l->out_len;
    report_error(l, err);
}

/* The batch in flight is done (written or given up): keep its buffer for reuse when small. */
static void out_done(lp_auditlog *l)
{
    l->out_len = l->out_off = 0;
    if (l->out_cap > LP_AUDITLOG_KEEP) {
        free(l->out);
        l->out = NULL;
        l->out_cap = 0;
    }
}

/* Closes the descriptors that are ours and frees everything; the timer must be closed (or
 * never initialised) and no write in flight. */
static void free_all(lp_auditlog *l)
{
    if (l->reopening) l->reopening->l = NULL;
    if (l->own_fd && l->fd >= 0) close(l->fd);
    if (l->next_fd >= 0) close(l->next_fd);
    free(l->out);
    free(l->q);
    free(l->path);
    free(l);
}

/* Switches to the file lp_auditlog_reopen() opened, if any, closing the old one when it is
 * ours. Only between writes: the write in flight (if any) uses l->fd. */
static void take_next_fd(lp_auditlog *l)
{
    if (l->next_fd < 0) return;
    if (l->own_fd) close(l->fd);
    l->fd = l->next_fd;
    l->next_fd = -1;
    l->own_fd = 1;
}

static void timer_cb(uv_timer_t *t)
{
    lp_auditlog *l = t->data;
    if (!l->closing) start_write(l);        /* the EAGAIN back-off is over */
}

static void ensure_timer(lp_auditlog *l)
{
    if (l->timer_init) return;
    uv_timer_init(l->loop, &l->timer);
    l->timer.data = l;
    l->timer_init = 1;
}

/* A write finished (in the loop thread). Advances the batch; on EAGAIN arms the back-off
 * timer; on an error drops the rest of the batch and counts its lines. Unless closing, then
 * queues a pending log_dropped line and starts the next write. When close abandoned this
 * write, frees the writer instead. */
static void write_cb(uv_fs_t *req)
{
    lp_auditlog *l = req->data;
    ssize_t r = req->result;
    uv_fs_req_cleanup(req);
    l->busy = 0;
    if (l->orphaned) {
        free_all(l);
        return;
    }
    if (r > 0) {
        l->out_off += (size_t)r;
        l->retry_ms = RETRY_MIN_MS;
        l->last_err = 0;
    } else if (r == 0 || r == UV_EAGAIN || r == UV_EINTR) {
        /* A non-blocking descriptor that is full: try again a little later. */
        if (l->closing) return;
        ensure_timer(l);
        uv_timer_start(&l->timer, timer_cb, l->retry_ms, 0);
        if (l->retry_ms < RETRY_MAX_MS) l->retry_ms *= 2;
        return;
    } else {
        /* A log must not take the proxy down: drop the rest of the batch, count its lines. */
        drop_batch(l, (int)r);
    }
    if (l->out_off >= l->out_len) out_done(l);
    if (l->closing) return;
    note_dropped(l, 0);
    start_write(l);
}

/* Issues the next write when none is in flight: the rest of the current batch, else the
 * queue as a new batch. Switches to a reopened file between batches' writes. */
static void start_write(lp_auditlog *l)
{
    /* While a reopen is in flight the queue waits for the new file (reopen_cb starts it). */
    if (l->busy || l->reopening || (l->timer_init && uv_is_active((uv_handle_t *)&l->timer))) return;
    if (l->out_off >= l->out_len) {
        if (l->q_len == 0) return;
        char *spare = l->out;
        size_t spare_cap = l->out_cap;
        l->out = l->q;
        l->out_cap = l->q_cap;
        l->out_len = l->q_len;
        l->out_off = 0;
        l->q = spare;
        l->q_cap = spare_cap;
        l->q_len = 0;
    }
    take_next_fd(l);
    uv_buf_t b = uv_buf_init(l->out + l->out_off, (unsigned int)(l->out_len - l->out_off));
    l->req.data = l;
    int rc = uv_fs_write(l->loop, &l->req, l->fd, &b, 1, -1, write_cb);
    if (rc == 0) {
        l->busy = 1;
        return;
    }
    drop_batch(l, rc);
    out_done(l);
}

/* Opens path for appending. Returns the descriptor, or -1 with "log PATH: reason" in err. */
static int open_log(const char *path, char *err, size_t errlen)
{
    int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) snprintf(err, errlen, "log %s: %s", path, strerror(errno));
    return fd;
}

lp_auditlog *lp_auditlog_open(uv_loop_t *loop, const char *path, char *err, size_t errlen)
{
    lp_auditlog *l = calloc(1, sizeof(*l));
    if (l == NULL) goto oom;
    l->loop = loop;
    l->fd = -1;
    l->next_fd = -1;
    l->retry_ms = RETRY_MIN_MS;
    if (path == NULL || strcmp(path, "-") == 0) {
        l->fd = STDERR_FILENO;
        return l;
    }
    l->path = strdup(path);
    if (l->path == NULL) goto oom;
    l->fd = open_log(path, err, errlen);
    if (l->fd < 0) {
        free_all(l);
        return NULL;
    }
    l->own_fd = 1;
    return l;
oom:
    snprintf(err, errlen, "log %s: out of memory", path ? path : "-");
    if (l) free_all(l);
    return NULL;
}

void lp_auditlog_write(lp_auditlog *l, const char *line, size_t len)
{
    if (l == NULL || len == 0 || l->closing) return;
    size_t need = len + (line[len - 1] != '\n');
    note_dropped(l, 0);
    if (pending(l) + need > LP_AUDITLOG_MAX_QUEUE || q_reserve(l, need) < 0) {
        l->dropped++;
        l->dropped_total++;
        return;
    }
    memcpy(l->q + l->q_len, line, len);
    if (need > len) l->q[l->q_len + len] = '\n';
    l->q_len += need;
    start_write(l);
}

/* The reopen's open() finished on the thread pool. */
static void reopen_cb(uv_fs_t *req)
{
    reopen_req *r = (reopen_req *)req;
    lp_auditlog *l = r->l;
    int fd = (int)req->result;
    uv_fs_req_cleanup(req);
    free(r);
    if (l == NULL) {                  /* the writer was closed meanwhile */
        if (fd >= 0) close(fd);
        return;
    }
    l->reopening = NULL;
    if (fd < 0) {
        fprintf(stderr, "lockproxy: audit log %s not reopened, keeping the old file: %s\n", l->path, uv_strerror(fd));
        if (!l->closing) start_write(l);
        return;
    }
    if (l->next_fd >= 0) close(l->next_fd);
    l->next_fd = fd;
    if (!l->busy) take_next_fd(l);
    if (!l->closing) start_write(l);
}

int lp_auditlog_reopen(lp_auditlog *l, char *err, size_t errlen)
{
    if (l == NULL || l->path == NULL || l->closing) return 0;
    if (l->reopening) return 0;       /* one in flight already: it opens the file as it is now */
    reopen_req *r = calloc(1, sizeof(*r));
    if (r == NULL) {
        snprintf(err, errlen, "log %s: out of memory", l->path);
        return -1;
    }
    r->l = l;
    /* O_NONBLOCK: a FIFO without a reader fails at once (ENXIO) instead of waiting for one;
     * on the thread pool: a slow file system never holds up the loop either. */
    int rc = uv_fs_open(l->loop, &r->req, l->path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NONBLOCK, 0644,
                        reopen_cb);
    if (rc < 0) {
        free(r);
        snprintf(err, errlen, "log %s: %s", l->path, uv_strerror(rc));
        return -1;
    }
    l->reopening = r;
    return 0;
}

uint64_t lp_auditlog_dropped(const lp_auditlog *l)
{
    return l ? l->dropped_total : 0;
}

/* Writes p[0..n) to fd from the loop thread, waiting with poll() for room, until the
 * deadline (uv_hrtime() nanoseconds). Pipes are written PIPE_BUF at a time after poll said
 * there is room, so no write blocks for long. Returns the bytes written. */
static size_t write_sync(int fd, const char *p, size_t n, uint64_t deadline)
{
    struct stat st;
    if (n == 0) return 0;
    int regular = fstat(fd, &st) == 0 && S_ISREG(st.st_mode);
    size_t done = 0;
    while (done < n) {
        uint64_t now = uv_hrtime();
        if (now >= deadline) break;
        if (!regular) {
            struct pollfd pfd = {.fd = fd, .events = POLLOUT};
            int pr = poll(&pfd, 1, (int)((deadline - now) / 1000000 + 1));
            if (pr < 0 && errno == EINTR) continue;
            if (pr <= 0 || (pfd.revents & (POLLERR | POLLNVAL))) break;
        }
        size_t chunk = n - done;
        if (!regular && chunk > PIPE_BUF) chunk = PIPE_BUF;
        ssize_t w = write(fd, p + done, chunk);
        if (w < 0 && (errno == EINTR || errno == EAGAIN)) continue;
        if (w <= 0) break;
        done += (size_t)w;
    }
    return done;
}

static void timer_close_cb(uv_handle_t *h)
{
    lp_auditlog *l = h->data;
    l->timer_closed = 1;
}

static void wake_cb(uv_timer_t *t)
{
    (void)t;                    /* only makes uv_run(UV_RUN_ONCE) return */
}

void lp_auditlog_close(lp_auditlog *l)
{
    if (l == NULL) return;
    uint64_t deadline = uv_hrtime() + (uint64_t)LP_AUDITLOG_CLOSE_MS * 1000000;
    l->closing = 1;
    if (l->timer_init) uv_timer_stop(&l->timer);

    if (l->busy || l->reopening) {
        /* Let the write and the reopen in flight finish; a timer bounds the wait. */
        ensure_timer(l);
        uv_timer_start(&l->timer, wake_cb, 20, 20);
        while ((l->busy || l->reopening) && uv_hrtime() < deadline) uv_run(l->loop, UV_RUN_ONCE);
        uv_timer_stop(&l->timer);
    }
    if (!l->busy) {
        take_next_fd(l);
        note_dropped(l, 1);
        size_t left = l->out_len - l->out_off;
        const char *rest = left ? l->out + l->out_off : NULL;
        int complete = write_sync(l->fd, rest, left, deadline) == left &&
                       write_sync(l->fd, l->q, l->q_len, deadline) == l->q_len;
        if (!complete && l->path) fprintf(stderr, "lockproxy: audit log %s: lines lost at exit\n", l->path);
    } else {
        l->orphaned = 1;
        if (l->path) fprintf(stderr, "lockproxy: audit log %s: write did not finish at exit\n", l->path);
    }

    if (l->timer_init) {
        uv_close((uv_handle_t *)&l->timer, timer_close_cb);
        while (!l->timer_closed) uv_run(l->loop, UV_RUN_NOWAIT);
    }
    if (!l->orphaned) free_all(l);
}
