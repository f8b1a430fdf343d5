/* The client side's life cycle behind a lock command (proxy/session.h, enum client_state and
 * eof_seen): the requests after an enforced SETNX wait for its reply, so an EOF, a QUIT, a
 * protocol error or CLIENT REPLY OFF among them is acted on only once that reply is in.
 * Each case sends one pipeline (optionally half-closing right after it) and must get exactly
 * the bytes below, then the close (or, without a half-close, an open connection), and what
 * the held requests wrote must be in Redis. */
#include "lock/lock_util.h"

#include <poll.h>

typedef struct lc_case {
    const char *name;
    const char *req;
    int half_close;             /* shutdown(SHUT_WR) right after sending */
    const char *want;           /* every byte the client gets */
    int want_close;             /* the proxy closes the connection */
    const char *check_key;      /* NULL, or a key the held requests set to "1" */
} lc_case;

static const lc_case cases[] = {
    {"held GET, then EOF", "SETNX lock:lc:1 v\r\nGET lc:nothing\r\n", 1, ":1\r\n$-1\r\n", 1, NULL},
    {"held SET, then EOF", "SETNX lock:lc:2 v\r\nSET lc:k2 1\r\n", 1, ":1\r\n+OK\r\n", 1, "lc:k2"},
    {"held QUIT", "SETNX lock:lc:3 v\r\nQUIT\r\nSET lc:k3 1\r\n", 0, ":1\r\n+OK\r\n", 1, NULL},
    {"held QUIT, then EOF", "SETNX lock:lc:4 v\r\nQUIT\r\nSET lc:k4 1\r\n", 1, ":1\r\n+OK\r\n", 1, NULL},
    {"held protocol error", "SETNX lock:lc:5 v\r\nPING\r\n*1\r\n$x\r\n", 0,
     ":1\r\n+PONG\r\n-ERR Protocol error: invalid bulk length\r\n", 1, NULL},
    {"held protocol error, then EOF", "SETNX lock:lc:6 v\r\nPING\r\n*1\r\n$x\r\n", 1,
     ":1\r\n+PONG\r\n-ERR Protocol error: invalid bulk length\r\n", 1, NULL},
    /* Replies off: the SET still reaches Redis before the close. */
    {"held CLIENT REPLY OFF and SET, then EOF", "SETNX lock:lc:7 v\r\nCLIENT REPLY OFF\r\nSET lc:k7 1\r\n", 1,
     ":1\r\n", 1, "lc:k7"},
    /* A QUIT with replies off is not answered; Redis closes after it only while a reply of
     * the same read is still unwritten (here the SETNX's, as when the pipeline goes to Redis
     * directly), and nothing after it runs. */
    {"held silent QUIT", "SETNX lock:lc:8 v\r\nCLIENT REPLY OFF\r\nSET lc:k8 1\r\nQUIT\r\nCLIENT REPLY ON\r\nPING\r\n",
     0, ":1\r\n", 1, "lc:k8"},
    {"held silent QUIT, then EOF",
     "SETNX lock:lc:9 v\r\nCLIENT REPLY OFF\r\nSET lc:k9 1\r\nQUIT\r\nCLIENT REPLY ON\r\nPING\r\n", 1, ":1\r\n", 1,
     "lc:k9"},
    /* A protocol error with replies off: the same (a reply of the same read is owed). */
    {"held silent protocol error", "SETNX lock:lc:10 v\r\nCLIENT REPLY OFF\r\nSET lc:k10 1\r\n*1\r\n$x\r\n", 0, ":1\r\n",
     1, "lc:k10"},
    {"held silent protocol error, then EOF", "SETNX lock:lc:11 v\r\nCLIENT REPLY OFF\r\nSET lc:k11 1\r\n*1\r\n$x\r\n", 1,
     ":1\r\n", 1, "lc:k11"},
    /* Nothing owed: the QUIT neither answers nor closes; what follows is dropped. */
    {"silent QUIT, then more", "CLIENT REPLY OFF\r\nQUIT\r\nCLIENT REPLY ON\r\nPING\r\n", 0, "", 0, NULL},
    {"EOF with a reply due", "PING\r\n", 1, "+PONG\r\n", 1, NULL},
};

/* Reads until EOF or until nothing arrives for idle_ms; *closed says which. */
static void read_all(int fd, hp_buf *out, int *closed)
{
    hp_io r = hp_read_idle(fd, out, 300, 5000);
    *closed = r == HP_IO_EOF;
}

int main(void)
{
    lk_require_real_proxy();
    plan_lazy();
    hp_proc *redis = hp_redis_start(NULL);
    char logpath[4096];
    hp_proc *px = lk_proxy_start(redis, "lifecycle", "rule lock: enforce", logpath, sizeof logpath);

    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const lc_case *c = &cases[i];
        lk_flushall(redis);
        int fd = lk_raw_open(px);
        if (hp_send_all(fd, c->req, strlen(c->req), 5000) != HP_IO_OK) diag("%s: send failed", c->name);
        if (c->half_close) shutdown(fd, SHUT_WR);
        hp_buf out = {0};
        int closed = 0;
        read_all(fd, &out, &closed);
        is_bytes(out.data, out.len, c->want, strlen(c->want), "%s: the replies", c->name);
        is_int(closed, c->want_close, "%s: %s", c->name, c->want_close ? "then the close" : "the connection stays open");
        if (c->check_key) is_string(lk_pstr(redis, "GET %s", c->check_key), "1", "%s: %s reached Redis", c->name, c->check_key);
        close(fd);
        hp_buf_free(&out);
    }
    is_int(hp_stop(px, 10000), 0, "the proxy exits 0");
    return 0;
}
