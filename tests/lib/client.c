/* Integration test harness: raw client sockets with deadlines, and control commands over
 * hiredis (see harness.h). */
#define _GNU_SOURCE     /* memmem, pipe2, program_invocation_short_name, nftw */
#include "lib/hp_internal.h"

#include <errno.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

int hp_wait_fd(int fd, short events, long long until)
{
    for (;;) {
        long long left = until - hp_now_ms();
        if (left < 0) left = 0;
        struct pollfd pfd = { fd, events, 0 };
        int r = poll(&pfd, 1, (int)left);
        if (r > 0) return pfd.revents;
        if (r == 0) return 0;
        if (errno != EINTR) return -1;
    }
}

static int hp_connect_addr(const struct sockaddr *sa, socklen_t salen, int timeout_ms)
{
    hp_init();
    int fd = socket(sa->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) return -1;
    if (connect(fd, sa, salen) != 0) {
        if (errno != EINPROGRESS && errno != EAGAIN) {
            int e = errno;
            close(fd);
            errno = e;
            return -1;
        }
        int ev = hp_wait_fd(fd, POLLOUT, hp_now_ms() + timeout_ms);
        int err = 0;
        socklen_t len = sizeof err;
        if (ev <= 0) {
            close(fd);
            errno = ev == 0 ? ETIMEDOUT : errno;
            return -1;
        }
        if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0 || err != 0) {
            close(fd);
            errno = err ? err : EIO;
            return -1;
        }
    }
    if (sa->sa_family == AF_INET) {
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    }
    return fd;
}

int hp_connect(int port, int timeout_ms)
{
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)port);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    return hp_connect_addr((struct sockaddr *)&sa, sizeof sa, timeout_ms);
}

int hp_connect_unix(const char *path, int timeout_ms)
{
    struct sockaddr_un sa;
    memset(&sa, 0, sizeof sa);
    sa.sun_family = AF_UNIX;
    if (strlen(path) >= sizeof sa.sun_path) {
        errno = ENAMETOOLONG;
        return -1;
    }
    strcpy(sa.sun_path, path);
    return hp_connect_addr((struct sockaddr *)&sa, sizeof sa, timeout_ms);
}

int hp_connect_proc(const hp_proc *p, int timeout_ms)
{
    if (p->port == 0 && p->unix_path[0] != '\0') return hp_connect_unix(p->unix_path, timeout_ms);
    return hp_connect(p->port, timeout_ms);
}

/* Reads everything available now (at most 16 MiB per call). Returns bytes read. */
static size_t hp_pump_read(hp_pump *p)
{
    size_t total = 0;
    while (!p->closed && total < (16u << 20)) {
        hp_buf_reserve(p->out, 256 * 1024);
        ssize_t n = recv(p->fd, p->out->data + p->out->len, p->out->cap - p->out->len - 1, 0);
        if (n > 0) {
            p->out->len += (size_t)n;
            p->out->data[p->out->len] = '\0';
            total += (size_t)n;
            continue;
        }
        if (n == 0) {
            p->closed = 1;
        } else if (errno == EINTR) {
            continue;
        } else if (errno == EAGAIN || errno == EWOULDBLOCK) {
            break;
        } else {
            if (errno != ECONNRESET) p->error = errno;
            p->closed = 1;
        }
    }
    if (total > 0) p->last = hp_now_ms();
    return total;
}

void hp_pump_once(hp_pump *p, const char *data, size_t len, size_t *pos, long long until,
                  int wait_ms)
{
    int want_write = data != NULL && *pos < len && !p->send_error && !p->closed;
    long long now = hp_now_ms();
    long long stop = now + wait_ms < until ? now + wait_ms : until;
    short events = POLLIN;
    if (want_write) events |= POLLOUT;
    int ev = p->closed ? 0 : hp_wait_fd(p->fd, events, stop);
    if (p->closed) {
        if (stop > now) hp_sleep_ms((int)(stop - now));
        return;
    }
    if (ev < 0) {
        p->error = errno;
        p->closed = 1;
        return;
    }
    if (ev & (POLLIN | POLLHUP | POLLERR)) hp_pump_read(p);
    if (want_write && !p->closed && (ev & (POLLOUT | POLLERR))) {
        while (*pos < len) {
            size_t chunk = len - *pos > (1u << 20) ? (1u << 20) : len - *pos;
            ssize_t n = send(p->fd, data + *pos, chunk, MSG_NOSIGNAL);
            if (n > 0) {
                *pos += (size_t)n;
                continue;
            }
            if (n < 0 && errno == EINTR) continue;
            if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
            p->send_error = n < 0 ? errno : EIO;
            break;
        }
        if (*pos == len) p->last = hp_now_ms();
    }
}

hp_io hp_pump_send(hp_pump *p, const void *data, size_t len, long long until)
{
    size_t pos = 0;
    while (pos < len) {
        if (p->send_error || p->closed) return HP_IO_EOF;
        if (hp_now_ms() >= until) return HP_IO_TIMEOUT;
        hp_pump_once(p, data, len, &pos, until, 100);
    }
    p->last = hp_now_ms();
    return HP_IO_OK;
}

hp_io hp_pump_quiet(hp_pump *p, int idle_ms, size_t want, int patience_ms, long long until)
{
    for (;;) {
        if (p->closed) return HP_IO_EOF;
        long long now = hp_now_ms();
        long long quiet = now - p->last;
        if (quiet >= idle_ms && (p->out->len >= want || quiet >= patience_ms)) return HP_IO_OK;
        if (now >= until) return HP_IO_TIMEOUT;
        long long need = (p->out->len >= want ? idle_ms : patience_ms) - quiet;
        if (need < 1) need = 1;
        hp_pump_once(p, NULL, 0, NULL, until, (int)(need > 100 ? 100 : need));
    }
}

hp_io hp_send_all(int fd, const void *data, size_t n, int timeout_ms)
{
    const char *p = data;
    size_t pos = 0;
    long long until = hp_now_ms() + timeout_ms;
    while (pos < n) {
        ssize_t w = send(fd, p + pos, n - pos, MSG_NOSIGNAL);
        if (w > 0) {
            pos += (size_t)w;
            continue;
        }
        if (w < 0 && errno == EINTR) continue;
        if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            int ev = hp_wait_fd(fd, POLLOUT, until);
            if (ev == 0) return HP_IO_TIMEOUT;
            if (ev < 0) return HP_IO_ERROR;
            continue;
        }
        if (w < 0 && (errno == EPIPE || errno == ECONNRESET)) return HP_IO_EOF;
        return HP_IO_ERROR;
    }
    return HP_IO_OK;
}

/* Reads until cond(b) holds, the peer closes or the deadline passes. */
static hp_io hp_read_cond(int fd, hp_buf *b, long long until,
                          int (*cond)(const hp_buf *b, const void *arg), const void *arg)
{
    hp_pump p = { .fd = fd, .out = b, .last = hp_now_ms() };
    for (;;) {
        if (cond(b, arg)) return HP_IO_OK;
        if (p.closed) return p.error ? (errno = p.error, HP_IO_ERROR) : HP_IO_EOF;
        if (hp_now_ms() >= until) return HP_IO_TIMEOUT;
        hp_pump_once(&p, NULL, 0, NULL, until, 100);
    }
}

static int hp_cond_len(const hp_buf *b, const void *arg)
{
    return b->len >= *(const size_t *)arg;
}

hp_io hp_read_n(int fd, hp_buf *b, size_t n, int timeout_ms)
{
    return hp_read_cond(fd, b, hp_now_ms() + timeout_ms, hp_cond_len, &n);
}

struct hp_needle {
    size_t from;
    const char *text;
};

static int hp_cond_needle(const hp_buf *b, const void *arg)
{
    const struct hp_needle *nd = arg;
    return hp_buf_find(b, nd->from, nd->text, strlen(nd->text)) != (size_t)-1;
}

hp_io hp_read_until(int fd, hp_buf *b, size_t from, const char *needle, int timeout_ms)
{
    struct hp_needle nd = { from, needle };
    return hp_read_cond(fd, b, hp_now_ms() + timeout_ms, hp_cond_needle, &nd);
}

static int hp_cond_never(const hp_buf *b, const void *arg)
{
    (void)b; (void)arg;
    return 0;
}

hp_io hp_read_eof(int fd, hp_buf *b, int deadline_ms)
{
    hp_io r = hp_read_cond(fd, b, hp_now_ms() + deadline_ms, hp_cond_never, NULL);
    return r == HP_IO_ERROR && errno == ECONNRESET ? HP_IO_EOF : r;
}

hp_io hp_read_idle(int fd, hp_buf *b, int idle_ms, int deadline_ms)
{
    hp_pump p = { .fd = fd, .out = b, .last = hp_now_ms() };
    return hp_pump_quiet(&p, idle_ms, 0, idle_ms, hp_now_ms() + deadline_ms);
}

hp_io hp_exchange(int fd, const void *req, size_t len, hp_buf *out, int idle_ms, int deadline_ms,
                  int *closed)
{
    long long until = hp_now_ms() + deadline_ms;
    hp_pump p = { .fd = fd, .out = out, .last = hp_now_ms() };
    hp_io r = hp_pump_send(&p, req, len, until);
    if (r != HP_IO_TIMEOUT) r = hp_pump_quiet(&p, idle_ms, 0, idle_ms, until);
    if (closed) *closed = p.closed;
    return r;
}

/* ---- control commands ------------------------------------------------------------------ */

redisContext *hp_redis_connect(const hp_proc *p)
{
    hp_init();
    struct timeval tv = { HP_CMD_TIMEOUT_S, 0 };
    redisContext *c;
    if (p->port == 0 && p->unix_path[0] != '\0') c = redisConnectUnixWithTimeout(p->unix_path, tv);
    else c = redisConnectWithTimeout("127.0.0.1", p->port, tv);
    if (c == NULL || c->err) {
        diag("%s: cannot connect: %s", p->name, c ? c->errstr : "out of memory");
        redisFree(c);
        return NULL;
    }
    redisSetTimeout(c, tv);
    if (p->password[0] != '\0') {
        redisReply *r = redisCommand(c, "AUTH %s", p->password);
        int good = r != NULL && r->type != REDIS_REPLY_ERROR;
        if (!good) diag("%s: AUTH failed: %s", p->name, r ? r->str : c->errstr);
        freeReplyObject(r);
        if (!good) {
            redisFree(c);
            return NULL;
        }
    }
    return c;
}

static redisReply *hp_vcmd(const hp_proc *p, const char *fmt, va_list ap)
{
    redisContext *c = hp_redis_connect(p);
    if (c == NULL) return NULL;
    redisReply *r = redisvCommand(c, fmt, ap);
    if (r == NULL) diag("%s: \"%s\" failed: %s", p->name, fmt, c->errstr);
    redisFree(c);
    return r;
}

redisReply *hp_cmd(const hp_proc *p, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    redisReply *r = hp_vcmd(p, fmt, ap);
    va_end(ap);
    return r;
}

int hp_cmd_ok(const hp_proc *p, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    redisReply *r = hp_vcmd(p, fmt, ap);
    va_end(ap);
    int good = r != NULL && r->type != REDIS_REPLY_ERROR;
    if (r != NULL && r->type == REDIS_REPLY_ERROR) diag("%s: \"%s\": %s", p->name, fmt, r->str);
    freeReplyObject(r);
    return good;
}

long long hp_cmd_int(const hp_proc *p, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    redisReply *r = hp_vcmd(p, fmt, ap);
    va_end(ap);
    long long v = r != NULL && r->type == REDIS_REPLY_INTEGER ? r->integer : LLONG_MIN;
    freeReplyObject(r);
    return v;
}

long long hp_info_int(const hp_proc *redis, const char *field)
{
    redisReply *r = hp_cmd(redis, "INFO");
    long long v = LLONG_MIN;
    if (r != NULL && r->type == REDIS_REPLY_STRING) {
        size_t flen = strlen(field);
        for (const char *line = r->str; line != NULL && *line; ) {
            if (strncmp(line, field, flen) == 0 && line[flen] == ':') {
                v = strtoll(line + flen + 1, NULL, 10);
                break;
            }
            line = strchr(line, '\n');
            if (line) line++;
        }
    }
    freeReplyObject(r);
    return v;
}

int hp_wait_info(const hp_proc *redis, const char *field, long long want, int timeout_ms)
{
    long long until = hp_now_ms() + timeout_ms;
    long long v;
    do {
        v = hp_info_int(redis, field);
        if (v == want) return 1;
        hp_sleep_ms(10);
    } while (hp_now_ms() < until);
    diag("%s: INFO %s is %lld, not %lld, after %d ms", redis->name, field, v, want, timeout_ms);
    return 0;
}
