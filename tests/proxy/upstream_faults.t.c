/* Upstream faults: Redis killed with SIGKILL under a 100-deep pipeline from
 * 20 clients, a client that goes away in the middle of a large reply, and Redis down when a
 * client connects. Every client must get replies, error lines or EOF — never hang — and the
 * proxy must serve again once Redis is back. */
#include <poll.h>
#include <signal.h>
#include <string.h>
#include <unistd.h>

#include "lib/harness.h"
#include "tap.h"

#define CLIENTS 20
#define DEPTH 100

static const char unavailable[] = "-ERR lockproxy: upstream unavailable (";

/* Counts complete top-level replies in what a client received: every reply here is one line
 * (+OK, :n, -ERR ...) except bulk strings ("$n" then the payload line). */
static size_t count_replies(const hp_buf *b) {
    size_t n = 0, i = 0;
    while (i < b->len) {
        const char *nl = memchr(b->data + i, '\n', b->len - i);
        if (nl == NULL) break;
        size_t end = (size_t)(nl - b->data) + 1;
        if (b->data[i] == '$' && b->data[i + 1] != '-') {
            long len = strtol(b->data + i + 1, NULL, 10);
            if (end + (size_t)len + 2 > b->len) break;
            end += (size_t)len + 2;
        }
        n++;
        i = end;
    }
    return n;
}

static void pipeline_kill(hp_proc *redis, hp_proc *proxy) {
    int fds[CLIENTS];
    hp_buf req = {0};
    for (int i = 0; i < DEPTH; i++) {
        /* DEBUG SLEEP keeps the pipeline in flight long enough for the kill to land inside it. */
        if (i == DEPTH / 2) hp_buf_cmd(&req, "DEBUG SLEEP 0.01");
        else hp_buf_cmd(&req, "INCR counter");
    }
    for (int c = 0; c < CLIENTS; c++) {
        fds[c] = hp_connect_proc(proxy, 2000);
        if (fds[c] < 0) hp_abort("client %d cannot connect to the proxy", c);
    }
    for (int c = 0; c < CLIENTS; c++) hp_send_all(fds[c], req.data, req.len, 5000);
    hp_sleep_ms(5);
    hp_kill(redis);

    int hung = 0, complete = 0, errors = 0, closed = 0;
    for (int c = 0; c < CLIENTS; c++) {
        hp_buf out = {0};
        hp_io r = hp_read_eof(fds[c], &out, 10000);
        if (r != HP_IO_EOF) hung++;
        else closed++;
        size_t n = count_replies(&out);
        if (n == DEPTH) complete++;
        if (hp_buf_has(&out, unavailable, sizeof(unavailable) - 1)) errors++;
        /* Every request is answered once, by Redis or by the error line, in order: after
         * the first error line only error lines follow. */
        size_t first_err = hp_buf_find(&out, 0, unavailable, sizeof(unavailable) - 1);
        int in_order = 1;
        if (first_err != (size_t)-1) {
            size_t errs = hp_buf_count(&out, "-ERR lockproxy");
            size_t tail_lines = 0;
            for (size_t i = first_err; i < out.len; i++) tail_lines += out.data[i] == '\n';
            in_order = tail_lines == errs;
        }
        ok(n == DEPTH && in_order, "client %d: %zu of %d requests answered, errors only at the end", c, n, DEPTH);
        hp_buf_free(&out);
        close(fds[c]);
    }
    is_int(hung, 0, "SIGKILL under %d x %d-deep pipelines: no client hangs", CLIENTS, DEPTH);
    is_int(closed, CLIENTS, "every client is closed after its replies or errors");
    diag("%d clients got an answer to every request, %d of them upstream-unavailable errors", complete, errors);

    if (hp_restart(redis) < 0) hp_abort("redis did not come back");
    int fd = hp_connect_proc(proxy, 2000);
    hp_buf out = {0};
    hp_send_all(fd, "PING\r\n", 6, 2000);
    hp_read_until(fd, &out, 0, "\r\n", 5000);
    is_bytes(out.data, out.len, "+PONG\r\n", 7, "the proxy serves again once Redis is back");
    hp_buf_free(&out);
    close(fd);
    hp_buf_free(&req);
}

/* A client asks for a large value and closes before reading it: the proxy frees the session
 * and goes on serving others. */
static void disconnect_mid_reply(hp_proc *proxy) {
    int fd = hp_connect_proc(proxy, 2000);
    hp_buf req = {0};
    hp_buf_cmd(&req, "SET big %s", "x");
    hp_buf_cmd(&req, "SETRANGE big %d y", 32 * 1024 * 1024);
    hp_buf out = {0};
    hp_send_all(fd, req.data, req.len, 2000);
    hp_read_until(fd, &out, 0, ":33554433\r\n", 5000);
    ok(HP_HAS(&out, ":33554433\r\n"), "a 32 MiB value is stored");
    hp_buf_reset(&req);
    for (int i = 0; i < 4; i++) hp_buf_cmd(&req, "GET big");
    hp_send_all(fd, req.data, req.len, 2000);
    hp_buf_reset(&out);
    hp_read_n(fd, &out, 100000, 5000);
    ok(out.len >= 100000, "the reply started to arrive");
    close(fd);

    int fd2 = hp_connect_proc(proxy, 2000);
    hp_buf_reset(&out);
    hp_send_all(fd2, "PING\r\n", 6, 2000);
    hp_read_until(fd2, &out, 0, "\r\n", 5000);
    is_bytes(out.data, out.len, "+PONG\r\n", 7, "after a client left mid-reply, others are served");
    close(fd2);
    hp_buf_free(&out);
    hp_buf_free(&req);
}

/* Redis is down when a client connects: the client gets the error line for what it sends,
 * then a close; once Redis is up the next client is served. */
static void upstream_down(hp_proc *redis, hp_proc *proxy) {
    hp_kill(redis);
    int fd = hp_connect_proc(proxy, 2000);
    ok(fd >= 0, "the proxy accepts while Redis is down");
    hp_buf out = {0};
    hp_sleep_ms(100);
    hp_send_all(fd, "PING\r\nPING\r\n", 12, 2000);
    hp_io r = hp_read_eof(fd, &out, 5000);
    is_int(r, HP_IO_EOF, "the client is closed, not left waiting");
    is_int((long long)hp_buf_count(&out, "-ERR lockproxy: upstream unavailable"), 2,
           "each request got the upstream-unavailable error line");
    close(fd);
    if (hp_restart(redis) < 0) hp_abort("redis did not come back");
    fd = hp_connect_proc(proxy, 2000);
    hp_buf_reset(&out);
    hp_send_all(fd, "PING\r\n", 6, 2000);
    hp_read_until(fd, &out, 0, "\r\n", 5000);
    is_bytes(out.data, out.len, "+PONG\r\n", 7, "the next client connects fresh and is served");
    close(fd);
    hp_buf_free(&out);
}

int main(void) {
    plan_lazy();
    signal(SIGPIPE, SIG_IGN);
    hp_proc *redis = hp_redis_start(NULL);
    hp_proc *proxy = hp_proxy_start(redis, NULL);
    pipeline_kill(redis, proxy);
    disconnect_mid_reply(proxy);
    upstream_down(redis, proxy);
    is_int(hp_stop(proxy, 10000), 0, "the proxy exits 0 on SIGTERM");
    hp_stop(redis, 10000);
    return 0;
}
