/* The audit log writer. See auditlog.h. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include "proxy/auditlog.h"

struct lp_auditlog {
    uv_loop_t *loop;
    int fd;
    int own_fd;
    uv_fs_t req;
    int busy;                /* a write is in flight: req and out belong to it */
    int closing;             /* lp_auditlog_close() was called while busy */
    char *out;               /* the bytes being written */
    size_t out_len, out_off;
    char *q;                 /* the bytes waiting */
    size_t q_len, q_cap;
    unsigned long long dropped;
};

static void start_write(lp_auditlog *l);

static void write_cb(uv_fs_t *req) {
    lp_auditlog *l = req->data;
    ssize_t n = req->result;
    uv_fs_req_cleanup(req);
    l->busy = 0;
    if (n > 0) l->out_off += (size_t)n;
    if (n < 0 || l->out_off >= l->out_len) {
        /* Done, or the file refuses: a log must not take the proxy down; drop the batch. */
        free(l->out);
        l->out = NULL;
        l->out_len = l->out_off = 0;
    }
    if (l->closing) return;
    start_write(l);
}

static void start_write(lp_auditlog *l) {
    if (l->busy) return;
    if (l->out == NULL) {
        if (l->q_len == 0) return;
        l->out = l->q;
        l->out_len = l->q_len;
        l->out_off = 0;
        l->q = NULL;
        l->q_len = l->q_cap = 0;
    }
    uv_buf_t b = uv_buf_init(l->out + l->out_off, (unsigned int)(l->out_len - l->out_off));
    l->req.data = l;
    if (uv_fs_write(l->loop, &l->req, l->fd, &b, 1, -1, write_cb) == 0) l->busy = 1;
}

lp_auditlog *lp_auditlog_open(uv_loop_t *loop, const char *path, char *err, size_t errlen) {
    lp_auditlog *l = calloc(1, sizeof(*l));
    if (l == NULL) { snprintf(err, errlen, "out of memory"); return NULL; }
    l->loop = loop;
    if (path == NULL || strcmp(path, "-") == 0) {
        l->fd = STDERR_FILENO;
    } else {
        l->fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
        if (l->fd < 0) {
            snprintf(err, errlen, "log %s: %s", path, strerror(errno));
            free(l);
            return NULL;
        }
        l->own_fd = 1;
    }
    return l;
}

static void queue(lp_auditlog *l, const char *line, size_t len) {
    if (l->q_len + len > l->q_cap) {
        size_t cap = l->q_cap ? l->q_cap : 4096;
        while (cap < l->q_len + len) cap *= 2;
        char *nq = realloc(l->q, cap);
        if (nq == NULL) { l->dropped++; return; }
        l->q = nq;
        l->q_cap = cap;
    }
    memcpy(l->q + l->q_len, line, len);
    l->q_len += len;
}

void lp_auditlog_write(lp_auditlog *l, const char *line, size_t len) {
    if (l->q_len + l->out_len + len > LP_AUDITLOG_MAX_QUEUE) {
        l->dropped++;
        return;
    }
    if (l->dropped > 0) {
        char note[200], ts[32];
        struct timespec now;
        struct tm tm;
        clock_gettime(CLOCK_REALTIME, &now);
        gmtime_r(&now.tv_sec, &tm);
        strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%S", &tm);
        int n = snprintf(note, sizeof(note),
                         "{\"ts\":\"%s.%03ldZ\",\"event\":\"log_dropped\",\"detail\":\"%llu lines dropped\"}\n",
                         ts, now.tv_nsec / 1000000, l->dropped);
        l->dropped = 0;
        queue(l, note, (size_t)n);
    }
    queue(l, line, len);
    start_write(l);
}

void lp_auditlog_close(lp_auditlog *l) {
    if (l == NULL) return;
    if (l->busy) {
        /* Let the write in flight finish; the loop must not be closed under it. */
        l->closing = 1;
        while (l->busy) uv_run(l->loop, UV_RUN_ONCE);
    }
    const char *parts[2] = {l->out ? l->out + l->out_off : NULL, l->q};
    size_t lens[2] = {l->out ? l->out_len - l->out_off : 0, l->q_len};
    for (int i = 0; i < 2; i++) {
        size_t off = 0;
        while (parts[i] && off < lens[i]) {
            ssize_t n = write(l->fd, parts[i] + off, lens[i] - off);
            if (n <= 0) break;
            off += (size_t)n;
        }
    }
    free(l->out);
    free(l->q);
    if (l->own_fd) close(l->fd);
    free(l);
}
