/* Fault: random garbage from 100 connections at once. Each connection's bytes go both to
 * Redis directly and through the proxy (200 connections in one poll loop); both sides must
 * answer with the same bytes (where Redis answers an error line, the proxy answers the same
 * line) and close alike, and the proxy must survive.
 *
 * Garbage comes in four flavours: random bytes; printable text with spaces, quotes and line
 * ends (inline requests); a soup of RESP tokens (counts, lengths, CRLF, NUL, big numbers,
 * command names); and valid pipelines with a few bytes flipped. Only commands that change no
 * state can be formed from the tokens (PING, ECHO, GET, EXISTS, unknown names), so the
 * concurrent connections cannot disturb one another's replies. LP_SEED=N replays a run. */
#include "faults.h"

#include <time.h>

#define NCONN 100

static unsigned long long rng;

static unsigned rnd(unsigned n)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return n ? (unsigned)(rng % n) : 0;
}

static void random_bytes(hp_buf *b, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)rnd(256);
        hp_buf_append(b, &c, 1);
    }
}

static void random_text(hp_buf *b, size_t n)
{
    static const char extra[] = "   \"\"''\\\r\n\n\t";
    for (size_t i = 0; i < n; i++) {
        char c = rnd(3) == 0 ? extra[rnd(sizeof(extra) - 1)] : (char)(0x21 + rnd(0x5e));
        hp_buf_append(b, &c, 1);
    }
}

static void token_soup(hp_buf *b, size_t ntok)
{
    static const char *const tok[] = {
        "*", "$", "0", "1", "2", "3", "9", "-1", "-", "+", "\r\n", "\r", "\n", " ", "\"", "'",
        "\\x4", "\\x41", "\\", "\t", "PING", "ping", "ECHO", "echo", "GET", "EXISTS", "x", "key",
        "NOSUCHCMD", "*1\r\n", "*2\r\n", "*3\r\n", "$4\r\nPING\r\n", "$4\r\nECHO\r\n", "$3\r\nGET\r\n",
        "$1\r\nx\r\n", "$0\r\n\r\n", "2147483648", "9223372036854775808", "99999999999",
        "*-1\r\n", "*0\r\n", "$-1\r\n", "PING\r\n", "ECHO \"a b\"\r\n", "GET 'k'\r\n",
    };
    for (size_t i = 0; i < ntok; i++) {
        if (rnd(40) == 0) {
            hp_buf_append(b, "\0", 1);
            continue;
        }
        hp_buf_puts(b, tok[rnd(sizeof(tok) / sizeof(tok[0]))]);
    }
}

static void mutated_pipeline(hp_buf *b, size_t ncmd)
{
    size_t start = b->len;
    for (size_t i = 0; i < ncmd; i++) {
        switch (rnd(4)) {
        case 0: hp_buf_puts(b, "*1\r\n$4\r\nPING\r\n"); break;
        case 1: hp_buf_printf(b, "*2\r\n$4\r\nECHO\r\n$%u\r\n%0*u\r\n", 5u, 5, rnd(100000)); break;
        case 2: hp_buf_printf(b, "GET key:%u\r\n", rnd(1000)); break;
        default: hp_buf_printf(b, "EXISTS \"k %u\" 'j'\r\n", rnd(1000)); break;
        }
    }
    size_t n = b->len - start, flips = 1 + rnd(3);
    for (size_t k = 0; k < flips && n > 0; k++) {
        static const char bytes[] = "*$\r\n\"' 0-9\0x";
        b->data[start + rnd((unsigned)n)] = bytes[rnd(sizeof(bytes) - 1)];
    }
}

static void make_garbage(hp_buf *b, int i)
{
    switch (i % 4) {
    case 0: random_bytes(b, 1 + rnd(2000)); break;
    case 1: random_text(b, 1 + rnd(2000)); break;
    case 2: token_soup(b, 1 + rnd(200)); break;
    default: mutated_pipeline(b, 1 + rnd(30)); break;
    }
}

int main(void)
{
    fl_init(100);
    plan_lazy();
    const char *s = getenv("LP_SEED");
    unsigned long long seed = s && *s ? strtoull(s, NULL, 10) : (unsigned long long)time(NULL) ^ (unsigned long long)getpid();
    rng = seed ? seed : 1;
    diag("LP_SEED=%llu", seed);

    hp_proc *redis = hp_redis_start(NULL);
    hp_proc *px = hp_proxy_start(redis, NULL);

    static hp_buf garbage[NCONN];
    static fl_conn c[2 * NCONN];
    for (int i = 0; i < NCONN; i++) {
        make_garbage(&garbage[i], i);
        for (int side = 0; side < 2; side++) {
            fl_conn *k = &c[2 * i + side];
            k->fd = hp_connect_proc(side == 0 ? redis : px, 5000);
            k->out = garbage[i].data;
            k->outlen = garbage[i].len;
            if (k->fd < 0)
                hp_abort("connection %d to the %s failed: %s", i, side ? "proxy" : "Redis", strerror(errno));
        }
    }
    size_t done = fl_pump(c, 2 * NCONN, fl_done_quiet, 10, 30000);
    is_int((long long)done, 2 * NCONN, "every connection finished (closed or quiet) within the deadline");

    int same = 0, same_close = 0, answered = 0, closed = 0;
    for (int i = 0; i < NCONN; i++) {
        const fl_conn *d = &c[2 * i], *p = &c[2 * i + 1];
        if (d->in.len == p->in.len && (d->in.len == 0 || memcmp(d->in.data, p->in.data, d->in.len) == 0))
            same++;
        else
            diag("connection %d (flavour %d, %zu bytes: '%s'): Redis '%s', proxy '%s'", i, i % 4,
                 garbage[i].len, hp_esc(garbage[i].data, garbage[i].len, 80),
                 hp_esc(d->in.data, d->in.len, 160), hp_esc(p->in.data, p->in.len, 160));
        if (d->eof == p->eof)
            same_close++;
        else
            diag("connection %d: Redis %s, the proxy %s", i, d->eof ? "closed" : "stayed open",
                 p->eof ? "closed" : "stayed open");
        answered += d->in.len > 0;
        closed += d->eof;
    }
    diag("%d of %d garbage streams got an answer from Redis, %d were closed by it", answered, NCONN, closed);
    is_int(same, NCONN, "the proxy answers every stream with Redis's bytes");
    is_int(same_close, NCONN, "the proxy closes exactly where Redis closes");
    fl_conns_close(c, 2 * NCONN);
    for (int i = 0; i < NCONN; i++)
        hp_buf_free(&garbage[i]);

    ok(fl_alive(px), "the proxy did not crash");
    ok(fl_ping(px, 5000), "the proxy still answers");
    is_int(hp_stop(px, 5000), 0, "the proxy exits 0");
    return 0;
}
