/* Tests of the reply framer (resp/reply.c).
 *
 * Every case is scanned whole, split at every offset (small cases), one byte at a time and
 * in random chunks, and every way must find the same frames with the same summaries. RESP2
 * cases are also fed to hiredis's redisReader, the reference decoder: it must complete a reply
 * exactly where the scanner ends a frame, and agree on its type, size, head and integers.
 * Randomly generated streams (RESP2 for hiredis, RESP3 with attributes, deeper nesting) check
 * the boundaries against the generator's own. Bytes captured from redis-server 7.0.15 are
 * embedded; when redis-server is on PATH, the test also starts one and scans its live replies,
 * COMMAND DOCS (nested deeper than hiredis 0.14 can read) and pub/sub messages included. */
#include "tap.h"
#include "resp/reply.h"

#include <hiredis/hiredis.h>

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define B(s) s, (sizeof(s) - 1)
#define NOHEAD ((size_t)-1)
#define HMAX RESP_REPLY_HEAD_MAX

/* ---- growable byte buffer ---- */

struct bytes {
    char *p;
    size_t len, cap;
};

static void bput(struct bytes *b, const void *p, size_t n)
{
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n)
            cap *= 2;
        char *q = realloc(b->p, cap);
        if (q == NULL)
            bail_out("out of memory");
        b->p = q;
        b->cap = cap;
    }
    if (n > 0)
        memcpy(b->p + b->len, p, n);
    b->len += n;
}

static void bputs(struct bytes *b, const char *s)
{
    bput(b, s, strlen(s));
}

static void bprintf(struct bytes *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void bprintf(struct bytes *b, const char *fmt, ...)
{
    char tmp[128];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof(tmp))
        bail_out("bprintf overflow");
    bput(b, tmp, (size_t)n);
}

static void bfree(struct bytes *b)
{
    free(b->p);
    memset(b, 0, sizeof(*b));
}

/* ---- frame summaries ---- */

/* What the scanner said about one frame, plus where the frame ended in the stream. */
struct sum {
    size_t end;
    char type;
    size_t frame_len;
    long long count;
    size_t head_len;
    char head[HMAX];
    long long last_int;
    size_t line_len;
    char line[HMAX];
};

static size_t min_sz(size_t a, size_t b)
{
    return a < b ? a : b;
}

static void take_sum(struct sum *s, const resp_reply *r, size_t end)
{
    memset(s, 0, sizeof(*s));
    s->end = end;
    s->type = r->type;
    s->frame_len = r->frame_len;
    s->count = r->count;
    s->head_len = r->head_len;
    if (r->head_len != NOHEAD)
        memcpy(s->head, r->head, min_sz(r->head_len, HMAX));
    s->last_int = r->last_int;
    s->line_len = r->line_len;
    memcpy(s->line, r->line, min_sz(r->line_len, HMAX));
}

static void sum_init(struct sum *s)
{
    memset(s, 0, sizeof(*s));
    s->count = -1;
    s->head_len = NOHEAD;
}

static void sum_set_head(struct sum *s, const char *p, size_t len)
{
    s->head_len = len;
    memset(s->head, 0, HMAX);
    memcpy(s->head, p, min_sz(len, HMAX));
}

static void sum_set_line(struct sum *s, const char *p, size_t len)
{
    s->line_len = len;
    memset(s->line, 0, HMAX);
    memcpy(s->line, p, min_sz(len, HMAX));
}

static void sum_print(const char *label, const struct sum *s)
{
    diag("%s: end=%zu type='%c' frame_len=%zu count=%lld head_len=%zd head='%.*s' "
         "last_int=%lld line_len=%zu line='%.*s'", label, s->end, s->type ? s->type : '0',
         s->frame_len, s->count, (ssize_t)s->head_len,
         s->head_len == NOHEAD ? 0 : (int)min_sz(s->head_len, HMAX), s->head, s->last_int,
         s->line_len, (int)min_sz(s->line_len, HMAX), s->line);
}

static int sum_equal(const struct sum *a, const struct sum *b)
{
    return a->end == b->end && a->type == b->type && a->frame_len == b->frame_len &&
           a->count == b->count && a->head_len == b->head_len &&
           memcmp(a->head, b->head, HMAX) == 0 && a->last_int == b->last_int &&
           a->line_len == b->line_len && memcmp(a->line, b->line, HMAX) == 0;
}

/* ---- feeding a scanner ---- */

enum feed_mode { WHOLE, SPLIT, STEP, RANDOM };

/* The frames one fresh scanner found in a stream fed in chunks. */
struct run {
    struct sum *f;
    size_t n, cap;
    resp_status last;      /* status of the last call */
    size_t stop;           /* stream offset where scanning stopped */
    const char *errstr;    /* errmsg, or NULL */
    char errmsg[128];      /* the scanner's errstr, which lives in the scanner */
    int contract;          /* calls that broke the status/used contract */
};

static void run_push(struct run *run, const struct sum *s)
{
    if (run->n == run->cap) {
        size_t cap = run->cap ? run->cap * 2 : 16;
        struct sum *f = realloc(run->f, cap * sizeof(*f));
        if (f == NULL)
            bail_out("out of memory");
        run->f = f;
        run->cap = cap;
    }
    run->f[run->n++] = *s;
}

static void run_free(struct run *run)
{
    free(run->f);
    memset(run, 0, sizeof(*run));
}

static unsigned long long rng_state = 0x9e3779b97f4a7c15ULL;

static unsigned long long rnd(void)
{
    /* xorshift64* */
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 2685821657736338717ULL;
}

static size_t rndn(size_t n)
{
    return n ? (size_t)(rnd() % n) : 0;
}

/* Scans buf[0..len) with a fresh scanner. Chunks: WHOLE one; SPLIT two, cut at arg; STEP of
 * arg bytes; RANDOM of 1..arg bytes. Checks the contract of every call: RESP_AGAIN uses all
 * bytes, RESP_OK at least one, RESP_ERROR is sticky. */
static void scan_stream(struct run *out, const char *buf, size_t len, enum feed_mode mode,
                        size_t arg)
{
    resp_reply r;
    size_t pos = 0;

    memset(out, 0, sizeof(*out));
    out->last = RESP_AGAIN;
    resp_reply_init(&r);
    while (pos < len) {
        size_t cend;
        switch (mode) {
        case SPLIT:  cend = pos < arg ? arg : len; break;
        case STEP:   cend = pos + arg; break;
        case RANDOM: cend = pos + 1 + rndn(arg); break;
        default:     cend = len; break;
        }
        if (cend > len)
            cend = len;
        while (pos < cend) {
            size_t avail = cend - pos, used = (size_t)-7;
            resp_status st = resp_reply_scan(&r, buf + pos, avail, &used);
            out->last = st;
            if (used > avail) {
                out->contract++;
                used = avail;
            }
            if (st == RESP_OK) {
                struct sum s;
                if (used == 0) {
                    out->contract++;
                    goto done;
                }
                pos += used;
                take_sum(&s, &r, pos);
                run_push(out, &s);
            } else if (st == RESP_AGAIN) {
                if (used != avail)
                    out->contract++;
                pos = cend;
            } else {
                size_t u2 = 99;
                pos += used;
                if (r.errstr == NULL) {
                    out->contract++;
                } else {
                    snprintf(out->errmsg, sizeof(out->errmsg), "%s", r.errstr);
                    out->errstr = out->errmsg;
                }
                if (resp_reply_scan(&r, "+OK\r\n", 5, &u2) != RESP_ERROR || u2 != 0)
                    out->contract++;
                goto done;
            }
        }
    }
done:
    out->stop = pos;
    resp_reply_free(&r);
}

/* Compares two runs of the same stream; on a difference says where. */
static int runs_equal(const struct run *a, const struct run *b, const char *label)
{
    if (a->contract || b->contract) {
        diag("%s: %d/%d calls broke the contract", label, a->contract, b->contract);
        return 0;
    }
    if (a->n != b->n || a->last != b->last || a->stop != b->stop) {
        diag("%s: %zu frames, status %d, stop %zu vs %zu frames, status %d, stop %zu", label,
             a->n, (int)a->last, a->stop, b->n, (int)b->last, b->stop);
        return 0;
    }
    for (size_t i = 0; i < a->n; i++) {
        if (!sum_equal(&a->f[i], &b->f[i])) {
            diag("%s: frame %zu differs", label, i);
            sum_print("  one", &a->f[i]);
            sum_print("other", &b->f[i]);
            return 0;
        }
    }
    return 1;
}

/* Compares a run with the frames expected, and expects it to end cleanly after the last. */
static int run_matches(const struct run *run, const struct sum *want, size_t n, size_t len,
                       const char *label)
{
    if (run->contract) {
        diag("%s: %d calls broke the contract", label, run->contract);
        return 0;
    }
    if (run->last == RESP_ERROR) {
        diag("%s: error at %zu: %s", label, run->stop, run->errstr);
        return 0;
    }
    for (size_t i = 0; i < n && i < run->n; i++) {
        if (!sum_equal(&run->f[i], &want[i])) {
            diag("%s: frame %zu differs", label, i);
            sum_print("   got", &run->f[i]);
            sum_print("wanted", &want[i]);
            return 0;
        }
    }
    if (run->n != n || (n > 0 && run->last != RESP_OK) || run->stop != len) {
        diag("%s: %zu frames (wanted %zu), last status %d, stop %zu of %zu", label, run->n, n,
             (int)run->last, run->stop, len);
        return 0;
    }
    return 1;
}

/* ---- hiredis as the reference decoder ---- */

/* Does the reply hiredis decoded say what the scanner's summary says? */
static int reply_matches(const redisReply *rep, const struct sum *s)
{
    struct sum w;
    size_t i;

    sum_init(&w);
    w.end = s->end;
    w.frame_len = s->frame_len;
    switch (rep->type) {
    case REDIS_REPLY_STATUS:
    case REDIS_REPLY_ERROR:
        w.type = rep->type == REDIS_REPLY_STATUS ? '+' : '-';
        sum_set_line(&w, rep->str, (size_t)rep->len);
        break;
    case REDIS_REPLY_INTEGER:
        w.type = ':';
        w.last_int = rep->integer;
        break;
    case REDIS_REPLY_STRING:
        w.type = '$';
        break;
    case REDIS_REPLY_NIL:
        w.type = s->type == '*' ? '*' : '$';   /* hiredis does not say which null */
        break;
    case REDIS_REPLY_ARRAY:
        w.type = '*';
        w.count = (long long)rep->elements;
        if (rep->elements > 0 && (rep->element[0]->type == REDIS_REPLY_STRING ||
                                  rep->element[0]->type == REDIS_REPLY_STATUS))
            sum_set_head(&w, rep->element[0]->str, (size_t)rep->element[0]->len);
        for (i = 0; i < rep->elements; i++)
            if (rep->element[i]->type == REDIS_REPLY_INTEGER)
                w.last_int = rep->element[i]->integer;
        break;
    default:
        return 0;
    }
    if (!sum_equal(&w, s)) {
        sum_print("  scanner", s);
        sum_print("  hiredis", &w);
        return 0;
    }
    return 1;
}

/* Feeds one frame to a fresh redisReader: it must complete a reply on the frame's last byte
 * and not before, leave nothing over, and agree with the scanner's summary. */
static int hiredis_agrees(const char *frame, size_t len, const struct sum *s, int quiet)
{
    redisReader *rd = redisReaderCreate();
    void *rep = NULL;
    int good = 0;

    if (rd == NULL)
        bail_out("redisReaderCreate failed");
    if (len > 1) {
        redisReaderFeed(rd, frame, len - 1);
        if (redisReaderGetReply(rd, &rep) != REDIS_OK) {
            if (!quiet)
                diag("hiredis: %s", rd->errstr);
            goto out;
        }
        if (rep != NULL) {
            if (!quiet)
                diag("hiredis completed a reply before the frame's last byte");
            goto out;
        }
    }
    redisReaderFeed(rd, frame + len - 1, 1);
    if (redisReaderGetReply(rd, &rep) != REDIS_OK || rep == NULL) {
        if (!quiet)
            diag("hiredis did not complete a reply at the frame's end: %s", rd->errstr);
        goto out;
    }
    good = reply_matches(rep, s);
    freeReplyObject(rep);
    rep = NULL;
    if (redisReaderGetReply(rd, &rep) != REDIS_OK || rep != NULL) {
        if (!quiet)
            diag("hiredis found more after the frame");
        good = 0;
    }
out:
    if (rep != NULL)
        freeReplyObject(rep);
    redisReaderFree(rd);
    return good;
}

/* ---- fixed cases ---- */

/* One expected frame. len 0: the rest of the case's bytes. head NULL: not a string. */
struct want {
    size_t len;
    char type;
    long long count;
    const char *head;
    size_t head_len;       /* 0: strlen(head) */
    long long last_int;
    const char *line;      /* NULL: line_len 0 */
    size_t line_len;       /* 0: strlen(line) */
};

static size_t wants_to_sums(const struct want *w, size_t nw, size_t base, size_t len,
                            struct sum *out)
{
    size_t pos = base;
    for (size_t i = 0; i < nw; i++) {
        struct sum *s = &out[i];
        sum_init(s);
        s->type = w[i].type;
        s->frame_len = w[i].len ? w[i].len : base + len - pos;
        pos += s->frame_len;
        s->end = pos;
        s->count = w[i].count;
        if (w[i].head != NULL)
            sum_set_head(s, w[i].head, w[i].head_len ? w[i].head_len : strlen(w[i].head));
        s->last_int = w[i].last_int;
        if (w[i].line != NULL)
            sum_set_line(s, w[i].line, w[i].line_len ? w[i].line_len : strlen(w[i].line));
    }
    return pos;
}

#define MAXW 4

struct tcase {
    const char *name;
    const char *bytes;
    size_t len;
    int resp2;             /* hiredis 0.14 can decode it */
    struct want w[MAXW];
};

#define ONE(...) { { __VA_ARGS__ } }

static const char big_line[] = "-ERR unknown command 'FOOBAR', with args beginning with: \r\n";

static const struct tcase cases[] = {
    /* RESP2 */
    { "simple string", B("+OK\r\n"), 1, { { .type = '+', .count = -1, .line = "OK" } } },
    { "empty simple string", B("+\r\n"), 1, { { .type = '+', .count = -1, .line = "" } } },
    { "error", B("-ERR wrong number of arguments for 'get' command\r\n"), 1,
      { { .type = '-', .count = -1, .line = "ERR wrong number of arguments for 'get' command" } } },
    { "long error", big_line, sizeof(big_line) - 1, 1,
      { { .type = '-', .count = -1, .line = big_line + 1, .line_len = sizeof(big_line) - 4 } } },
    { "integer", B(":12345\r\n"), 1, { { .type = ':', .count = -1, .last_int = 12345 } } },
    { "zero", B(":0\r\n"), 1, { { .type = ':', .count = -1, .last_int = 0 } } },
    { "negative integer", B(":-42\r\n"), 1, { { .type = ':', .count = -1, .last_int = -42 } } },
    { "LLONG_MAX", B(":9223372036854775807\r\n"), 1,
      { { .type = ':', .count = -1, .last_int = LLONG_MAX } } },
    { "LLONG_MIN", B(":-9223372036854775808\r\n"), 1,
      { { .type = ':', .count = -1, .last_int = LLONG_MIN } } },
    { "bulk", B("$11\r\nHello World\r\n"), 1, { { .type = '$', .count = -1 } } },
    { "bulk with CRLF inside", B("$6\r\n\r\n\r\n\r\n\r\n"), 1, { { .type = '$', .count = -1 } } },
    { "empty bulk", B("$0\r\n\r\n"), 1, { { .type = '$', .count = -1 } } },
    { "null bulk", B("$-1\r\n"), 1, { { .type = '$', .count = -1 } } },
    { "null array", B("*-1\r\n"), 1, { { .type = '*', .count = -1 } } },
    { "empty array", B("*0\r\n"), 1, { { .type = '*', .count = 0 } } },
    { "array of integers", B("*3\r\n:0\r\n:1\r\n:2\r\n"), 1,
      { { .type = '*', .count = 3, .last_int = 2 } } },
    { "pub/sub message", B("*3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$5\r\nhello\r\n"), 1,
      { { .type = '*', .count = 3, .head = "message" } } },
    { "pub/sub pmessage", B("*4\r\n$8\r\npmessage\r\n$2\r\nc*\r\n$2\r\nch\r\n$2\r\nhi\r\n"), 1,
      { { .type = '*', .count = 4, .head = "pmessage" } } },
    { "pub/sub smessage", B("*3\r\n$8\r\nsmessage\r\n$2\r\nch\r\n$2\r\nhi\r\n"), 1,
      { { .type = '*', .count = 3, .head = "smessage" } } },
    { "subscribe confirmation", B("*3\r\n$9\r\nsubscribe\r\n$2\r\nch\r\n:1\r\n"), 1,
      { { .type = '*', .count = 3, .head = "subscribe", .last_int = 1 } } },
    { "long head", B("*2\r\n$30\r\nabcdefghijklmnopqrstuvwxyz0123\r\n:-7\r\n"), 1,
      { { .type = '*', .count = 2, .head = "abcdefghijklmnopqrstuvwxyz0123", .last_int = -7 } } },
    { "simple string head", B("*2\r\n+QUEUED\r\n:5\r\n"), 1,
      { { .type = '*', .count = 2, .head = "QUEUED", .last_int = 5 } } },
    { "null head", B("*2\r\n$-1\r\n$3\r\nfoo\r\n"), 1, { { .type = '*', .count = 2 } } },
    { "empty head", B("*1\r\n$0\r\n\r\n"), 1, { { .type = '*', .count = 1, .head = "" } } },
    { "integer head", B("*2\r\n:1\r\n$3\r\nfoo\r\n"), 1,
      { { .type = '*', .count = 2, .last_int = 1 } } },
    { "error head", B("*2\r\n-ERR x\r\n:3\r\n"), 1,
      { { .type = '*', .count = 2, .last_int = 3 } } },
    { "nested integers are not direct", B("*2\r\n*2\r\n:1\r\n:2\r\n:3\r\n"), 1,
      { { .type = '*', .count = 2, .last_int = 3 } } },
    { "only nested integers", B("*2\r\n:9\r\n*2\r\n:1\r\n:2\r\n"), 1,
      { { .type = '*', .count = 2, .last_int = 9 } } },
    { "EXEC reply", B("*3\r\n+OK\r\n:1\r\n-ERR no\r\n"), 1,
      { { .type = '*', .count = 3, .head = "OK", .last_int = 1 } } },
    { "nested empties", B("*3\r\n*0\r\n*-1\r\n*1\r\n*0\r\n"), 1, { { .type = '*', .count = 3 } } },
    { "HELLO 2 (redis 7.0.15)",
      B("*14\r\n$6\r\nserver\r\n$5\r\nredis\r\n$7\r\nversion\r\n$6\r\n7.0.15\r\n$5\r\nproto\r\n"
        ":2\r\n$2\r\nid\r\n:3\r\n$4\r\nmode\r\n$10\r\nstandalone\r\n$4\r\nrole\r\n$6\r\nmaster\r\n"
        "$7\r\nmodules\r\n*0\r\n"), 1,
      { { .type = '*', .count = 14, .head = "server", .last_int = 3 } } },
    { "DEBUG PROTOCOL map, RESP2", B("*6\r\n:0\r\n:0\r\n:1\r\n:1\r\n:2\r\n:0\r\n"), 1,
      { { .type = '*', .count = 6, .last_int = 0 } } },
    { "DEBUG PROTOCOL push, RESP2", B("-ERR RESP2 is not supported by this command\r\n"), 1,
      { { .type = '-', .count = -1, .line = "ERR RESP2 is not supported by this command" } } },
    { "DEBUG PROTOCOL verbatim, RESP2", B("$25\r\nThis is a verbatim\nstring\r\n"), 1,
      { { .type = '$', .count = -1 } } },
    { "DEBUG PROTOCOL attrib, RESP2", B("$39\r\nSome real reply following the attribute\r\n"), 1,
      { { .type = '$', .count = -1 } } },

    /* RESP3 */
    { "null", B("_\r\n"), 0, { { .type = '_', .count = -1 } } },
    { "double", B(",3.141\r\n"), 0, { { .type = ',', .count = -1 } } },
    { "double inf", B(",-inf\r\n"), 0, { { .type = ',', .count = -1 } } },
    { "true", B("#t\r\n"), 0, { { .type = '#', .count = -1 } } },
    { "false", B("#f\r\n"), 0, { { .type = '#', .count = -1 } } },
    { "big number", B("(1234567999999999999999999999999999999\r\n"), 0,
      { { .type = '(', .count = -1 } } },
    { "blob error", B("!21\r\nSYNTAX invalid syntax\r\n"), 0, { { .type = '!', .count = -1 } } },
    { "verbatim", B("=29\r\ntxt:This is a verbatim\nstring\r\n"), 0,
      { { .type = '=', .count = -1 } } },
    { "map", B("%3\r\n:0\r\n#f\r\n:1\r\n#t\r\n:2\r\n#f\r\n"), 0,
      { { .type = '%', .count = 6, .last_int = 2 } } },
    { "map with string keys", B("%2\r\n+first\r\n:1\r\n$6\r\nsecond\r\n:2\r\n"), 0,
      { { .type = '%', .count = 4, .head = "first", .last_int = 2 } } },
    { "empty map", B("%0\r\n"), 0, { { .type = '%', .count = 0 } } },
    { "set", B("~3\r\n:0\r\n:1\r\n:2\r\n"), 0, { { .type = '~', .count = 3, .last_int = 2 } } },
    { "empty set", B("~0\r\n"), 0, { { .type = '~', .count = 0 } } },
    { "map of sets", B("%1\r\n+k\r\n~2\r\n:1\r\n:2\r\n"), 0,
      { { .type = '%', .count = 2, .head = "k" } } },
    { "push message", B(">3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$2\r\nhi\r\n"), 0,
      { { .type = '>', .count = 3, .head = "message" } } },
    { "push invalidate", B(">2\r\n$10\r\ninvalidate\r\n*1\r\n$3\r\nfoo\r\n"), 0,
      { { .type = '>', .count = 2, .head = "invalidate" } } },
    { "empty push", B(">0\r\n"), 0, { { .type = '>', .count = 0 } } },
    { "verbatim head", B("*1\r\n=8\r\ntxt:abcd\r\n"), 0,
      { { .type = '*', .count = 1, .head = "txt:abcd" } } },
    { "top-level attribute (redis 7.0.15 DEBUG PROTOCOL attrib)",
      B("|1\r\n$14\r\nkey-popularity\r\n*2\r\n$7\r\nkey:123\r\n:90\r\n"
        "$39\r\nSome real reply following the attribute\r\n"), 0,
      { { .type = '$', .count = -1 } } },
    { "top-level attribute before an array",
      B("|1\r\n+key-popularity\r\n*2\r\n$1\r\na\r\n:90\r\n*2\r\n:2039123\r\n:9323\r\n"), 0,
      { { .type = '*', .count = 2, .last_int = 9323 } } },
    { "top-level attribute before a status", B("|1\r\n:1\r\n:2\r\n+OK\r\n"), 0,
      { { .type = '+', .count = -1, .line = "OK" } } },
    { "empty attribute", B("|0\r\n:5\r\n"), 0, { { .type = ':', .count = -1, .last_int = 5 } } },
    { "two attributes", B("|1\r\n+a\r\n+b\r\n|1\r\n+c\r\n|1\r\n+x\r\n+y\r\n+d\r\n:5\r\n"), 0,
      { { .type = ':', .count = -1, .last_int = 5 } } },
    { "attribute inside an array", B("*3\r\n:1\r\n|1\r\n+ttl\r\n:3600\r\n:2\r\n:3\r\n"), 0,
      { { .type = '*', .count = 3, .last_int = 3 } } },
    { "attribute before the last element", B("*2\r\n:1\r\n|1\r\n:7\r\n:8\r\n:2\r\n"), 0,
      { { .type = '*', .count = 2, .last_int = 2 } } },
    { "attribute before the head", B("*2\r\n|1\r\n+a\r\n+b\r\n$7\r\nmessage\r\n:5\r\n"), 0,
      { { .type = '*', .count = 2, .head = "message", .last_int = 5 } } },
    { "attribute before a nested array", B("*1\r\n*1\r\n|1\r\n+a\r\n*1\r\n:1\r\n:2\r\n"), 0,
      { { .type = '*', .count = 1 } } },
    { "attribute at the end of a nested array",
      B("*2\r\n*1\r\n|1\r\n+a\r\n+b\r\n:1\r\n|0\r\n:4\r\n"), 0,
      { { .type = '*', .count = 2, .last_int = 4 } } },
    { "HELLO 3 (redis 7.0.15)",
      B("%7\r\n$6\r\nserver\r\n$5\r\nredis\r\n$7\r\nversion\r\n$6\r\n7.0.15\r\n$5\r\nproto\r\n"
        ":3\r\n$2\r\nid\r\n:3\r\n$4\r\nmode\r\n$10\r\nstandalone\r\n$4\r\nrole\r\n$6\r\nmaster\r\n"
        "$7\r\nmodules\r\n*0\r\n"), 0,
      { { .type = '%', .count = 14, .head = "server", .last_int = 3 } } },
    { "push then reply (redis 7.0.15 DEBUG PROTOCOL push)",
      B(">2\r\n$16\r\nserver-cpu-usage\r\n:42\r\n$40\r\nSome real reply following the push reply\r\n"),
      0, { { .len = 32, .type = '>', .count = 2, .head = "server-cpu-usage", .last_int = 42 },
           { .type = '$', .count = -1 } } },
    { "three replies", B("+OK\r\n:1\r\n$3\r\nfoo\r\n"), 1,
      { { .len = 5, .type = '+', .count = -1, .line = "OK" },
        { .len = 4, .type = ':', .count = -1, .last_int = 1 },
        { .type = '$', .count = -1 } } },
};

static size_t case_nwant(const struct tcase *c)
{
    size_t n = 0;
    while (n < MAXW && c->w[n].type != 0)
        n++;
    return n;
}

/* Checks one stream of frames every way it can be fed. Small streams are also split at
 * every offset. Frames of hiredis-readable streams go through redisReader too. */
static void check_stream(const char *name, const char *bytes, size_t len, const struct sum *want,
                         size_t nw, int resp2)
{
    struct run whole, other;
    int same = 1;

    scan_stream(&whole, bytes, len, WHOLE, 0);
    ok(run_matches(&whole, want, nw, len, name), "%s: whole", name);

    if (len <= 4096) {
        for (size_t k = 1; k < len && same; k++) {
            scan_stream(&other, bytes, len, SPLIT, k);
            if (!runs_equal(&whole, &other, name)) {
                diag("split at %zu", k);
                same = 0;
            }
            run_free(&other);
        }
        ok(same, "%s: split at every offset", name);
    } else {
        for (size_t k = 1; k < len && same; k += 1 + len / 64) {
            scan_stream(&other, bytes, len, SPLIT, k);
            if (!runs_equal(&whole, &other, name)) {
                diag("split at %zu", k);
                same = 0;
            }
            run_free(&other);
        }
        ok(same, "%s: split at 64 offsets", name);
    }

    scan_stream(&other, bytes, len, STEP, 1);
    ok(runs_equal(&whole, &other, name), "%s: one byte at a time", name);
    run_free(&other);

    same = 1;
    for (int i = 0; i < 4 && same; i++) {
        scan_stream(&other, bytes, len, RANDOM, i < 2 ? 7 : 300);
        same = runs_equal(&whole, &other, name);
        run_free(&other);
    }
    ok(same, "%s: random chunks", name);

    if (resp2) {
        int agree = whole.n == nw;
        size_t from = 0;
        for (size_t i = 0; i < whole.n && agree; i++) {
            agree = hiredis_agrees(bytes + from, whole.f[i].end - from, &whole.f[i], 0);
            from = whole.f[i].end;
        }
        ok(agree, "%s: redisReader ends the same replies", name);
    }
    run_free(&whole);
}

static void test_cases(void)
{
    struct bytes all = { 0 };
    struct sum *allw = NULL;
    size_t nall = 0;
    struct run run;

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const struct tcase *c = &cases[i];
        size_t nw = case_nwant(c);
        struct sum want[MAXW];

        wants_to_sums(c->w, nw, 0, c->len, want);
        check_stream(c->name, c->bytes, c->len, want, nw, c->resp2);

        /* The same frames, pipelined after all the previous cases. */
        allw = realloc(allw, (nall + nw) * sizeof(*allw));
        if (allw == NULL)
            bail_out("out of memory");
        wants_to_sums(c->w, nw, all.len, c->len, allw + nall);
        nall += nw;
        bput(&all, c->bytes, c->len);
    }

    scan_stream(&run, all.p, all.len, WHOLE, 0);
    ok(run_matches(&run, allw, nall, all.len, "pipelined"),
       "all %zu frames pipelined in one buffer", nall);
    run_free(&run);
    scan_stream(&run, all.p, all.len, STEP, 1);
    ok(run_matches(&run, allw, nall, all.len, "pipelined"),
       "all frames pipelined, one byte at a time");
    run_free(&run);
    scan_stream(&run, all.p, all.len, RANDOM, 40);
    ok(run_matches(&run, allw, nall, all.len, "pipelined"),
       "all frames pipelined, random chunks");
    run_free(&run);
    free(allw);
    bfree(&all);
}

/* ---- incomplete frames and errors ---- */

static void test_incomplete(void)
{
    static const struct { const char *bytes; size_t len; } inc[] = {
        { B("*2\r\n:1\r\n|1\r\n:7\r\n:8\r\n") },
        { B("|1\r\n+a\r\n+b\r\n") },
        { B("|0\r\n") },
        { B("$5\r\nhello\r") },
        { B("$5\r\nhello") },
        { B("$5\r\n") },
        { B("*3\r\n:1\r\n:2\r\n") },
        { B("%1\r\n+a\r\n") },
        { B("+OK") },
        { B("+OK\r") },
        { B(":12") },
        { B("$-1\r") },
        { B("*1\r\n*1\r\n*1\r\n") },
        { B("*") },
        { B("-") },
    };
    resp_reply r;
    size_t used;

    for (size_t i = 0; i < sizeof(inc) / sizeof(inc[0]); i++) {
        struct run run;
        scan_stream(&run, inc[i].bytes, inc[i].len, WHOLE, 0);
        ok(run.contract == 0 && run.n == 0 && run.last == RESP_AGAIN && run.stop == inc[i].len,
           "incomplete frame %zu: RESP_AGAIN, all bytes used", i);
        run_free(&run);
    }

    resp_reply_init(&r);
    used = 5;
    ok(resp_reply_scan(&r, "", 0, &used) == RESP_AGAIN && used == 0, "empty input: RESP_AGAIN");
    ok(resp_reply_scan(&r, "*2\r\n:1", 6, &used) == RESP_AGAIN && used == 6, "half an array");
    used = 5;
    ok(resp_reply_scan(&r, "", 0, &used) == RESP_AGAIN && used == 0,
       "empty input inside a frame: RESP_AGAIN");
    ok(resp_reply_scan(&r, "\r\n:2\r\n+OK\r\n", 11, &used) == RESP_OK && used == 6 &&
       r.frame_len == 12 && r.count == 2 && r.last_int == 2, "the array completes");
    ok(resp_reply_scan(&r, "+OK\r\n", 5, &used) == RESP_OK && used == 5 && r.type == '+' &&
       r.frame_len == 5 && r.count == -1 && r.last_int == 0 && r.line_len == 2,
       "the summary is reset for the next frame");
    resp_reply_free(&r);
    ok(r.stack == NULL && r.depth == 0 && r.errstr == NULL, "free leaves a fresh scanner");
    ok(resp_reply_scan(&r, ":7\r\n", 4, &used) == RESP_OK && r.last_int == 7,
       "a freed scanner can be used again");
    resp_reply_free(&r);
    resp_reply_free(NULL);
    ok(1, "resp_reply_free(NULL)");
}

static void test_errors(void)
{
    static const struct {
        const char *bytes;
        size_t len;
        size_t frames;     /* good frames before the error */
        size_t at;         /* bytes used when the error is reported */
    } err[] = {
        { B("x"), 0, 1 },
        { B("?\r\n"), 0, 1 },
        { B("\r\n"), 0, 1 },
        { B(" +OK\r\n"), 0, 1 },
        { B("\0"), 0, 1 },
        { B("\xff"), 0, 1 },
        { B("1\r\n"), 0, 1 },
        { B("+OK\r\n@"), 1, 6 },
        { B("*2\r\n:1\r\nZ"), 0, 9 },
        { B("$?\r\n"), 0, 2 },
        { B("*?\r\n"), 0, 2 },
        { B("%?\r\n"), 0, 2 },
        { B("~?\r\n"), 0, 2 },
        { B(">?\r\n"), 0, 2 },
        { B("|?\r\n"), 0, 2 },
        { B("=?\r\n"), 0, 2 },
        { B("!?\r\n"), 0, 2 },
        { B(";4\r\nHell\r\n;0\r\n"), 0, 1 },
        { B(".\r\n"), 0, 1 },
        { B("*1\r\n;"), 0, 5 },
        { B("$-2\r\n"), 0, 5 },
        { B("*-2\r\n"), 0, 5 },
        { B("%-1\r\n"), 0, 5 },
        { B("~-1\r\n"), 0, 5 },
        { B(">-1\r\n"), 0, 5 },
        { B("|-1\r\n"), 0, 5 },
        { B("=-1\r\n"), 0, 5 },
        { B("!-1\r\n"), 0, 5 },
        { B("$\r\n"), 0, 3 },
        { B("*\r\n"), 0, 3 },
        { B(":\r\n"), 0, 3 },
        { B(":-\r\n"), 0, 4 },
        { B("$1x\r\n"), 0, 3 },
        { B(":--1\r\n"), 0, 3 },
        { B(":1-\r\n"), 0, 3 },
        { B(": 1\r\n"), 0, 2 },
        { B(":+1\r\n"), 0, 2 },
        { B(":?\r\n"), 0, 2 },
        { B(":9223372036854775808\r\n"), 0, 20 },
        { B(":-9223372036854775809\r\n"), 0, 21 },
        { B("$99999999999999999999\r\n"), 0, 20 },
        { B("%4611686018427387904\r\n"), 0, 22 },
        { B("|4611686018427387904\r\n"), 0, 22 },
        { B("+OK\rX"), 0, 5 },
        { B("+OK\r\r\n"), 0, 5 },
        { B(":1\n"), 0, 3 },
        { B(":1\rX"), 0, 4 },
        { B("$3\r\nabcX\r\n"), 0, 8 },
        { B("$3\r\nab\r\n"), 0, 8 },
        { B("$3\r\nabc\rX"), 0, 9 },
        { B("*1\r\n*1\r\n%1\r\n+k\r\n&\r\n"), 0, 17 },
    };

    for (size_t i = 0; i < sizeof(err) / sizeof(err[0]); i++) {
        struct run whole, one;
        scan_stream(&whole, err[i].bytes, err[i].len, WHOLE, 0);
        scan_stream(&one, err[i].bytes, err[i].len, STEP, 1);
        int good = whole.contract == 0 && whole.last == RESP_ERROR && whole.n == err[i].frames &&
                   whole.stop == err[i].at && whole.errstr != NULL;
        if (!good)
            diag("status %d, %zu frames, stop %zu, contract %d", (int)whole.last, whole.n,
                 whole.stop, whole.contract);
        ok(good, "error %zu: %s", i, whole.errstr ? whole.errstr : "(no errstr)");
        ok(runs_equal(&whole, &one, "error"), "error %zu: same one byte at a time", i);
        run_free(&whole);
        run_free(&one);
    }
}

/* ---- nesting and size ---- */

static void test_nesting(void)
{
    struct bytes b = { 0 };
    struct sum want[2];
    struct run run;

    /* 32 arrays deep. */
    for (int i = 0; i < 32; i++)
        bputs(&b, "*1\r\n");
    bputs(&b, ":42\r\n");
    sum_init(&want[0]);
    want[0].type = '*';
    want[0].count = 1;
    want[0].frame_len = want[0].end = b.len;
    check_stream("32 arrays deep", b.p, b.len, want, 1, 0);
    b.len = 0;

    /* 32 aggregates deep, every kind, with attributes on the way. */
    for (int i = 0; i < 32; i++) {
        switch (i % 5) {
        case 0: bputs(&b, "*1\r\n"); break;
        case 1: bputs(&b, "~1\r\n"); break;
        case 2: bputs(&b, "%1\r\n+k\r\n"); break;
        case 3: bputs(&b, "|1\r\n+a\r\n*1\r\n:1\r\n>1\r\n"); break;
        default: bputs(&b, "*2\r\n|1\r\n+a\r\n+b\r\n$3\r\nabc\r\n"); break;
        }
    }
    bputs(&b, ":42\r\n");
    want[0].frame_len = want[0].end = b.len;
    check_stream("32 deep, mixed", b.p, b.len, want, 1, 0);
    b.len = 0;

    /* Deep enough to grow the stack many times, then one more frame. */
    for (int i = 0; i < 100000; i++)
        bputs(&b, i % 2 ? "~1\r\n" : "*1\r\n");
    bputs(&b, "_\r\n");
    want[0].frame_len = want[0].end = b.len;
    bputs(&b, "+OK\r\n");
    sum_init(&want[1]);
    want[1].type = '+';
    sum_set_line(&want[1], "OK", 2);
    want[1].frame_len = 5;
    want[1].end = b.len;
    scan_stream(&run, b.p, b.len, WHOLE, 0);
    ok(run_matches(&run, want, 2, b.len, "deep"), "100000 deep, then a status: whole");
    run_free(&run);
    scan_stream(&run, b.p, b.len, STEP, 1);
    ok(run_matches(&run, want, 2, b.len, "deep"), "100000 deep: one byte at a time");
    run_free(&run);
    b.len = 0;

    /* Wide: 100000 elements. */
    bputs(&b, "*100000\r\n");
    for (int i = 0; i < 100000; i++)
        bprintf(&b, ":%d\r\n", i);
    sum_init(&want[0]);
    want[0].type = '*';
    want[0].count = 100000;
    want[0].last_int = 99999;
    want[0].frame_len = want[0].end = b.len;
    check_stream("100000 elements", b.p, b.len, want, 1, 1);
    bfree(&b);
}

static void test_big(void)
{
    struct bytes b = { 0 };
    struct sum want;
    size_t n = 1 << 20;
    char *payload = malloc(n);

    if (payload == NULL)
        bail_out("out of memory");
    for (size_t i = 0; i < n; i++)
        payload[i] = (char)rnd();
    memcpy(payload + 100, "\r\n\r\n", 4);

    bprintf(&b, "$%zu\r\n", n);
    bput(&b, payload, n);
    bputs(&b, "\r\n");
    sum_init(&want);
    want.type = '$';
    want.frame_len = want.end = b.len;
    check_stream("1 MiB bulk", b.p, b.len, &want, 1, 1);
    b.len = 0;

    bprintf(&b, "*2\r\n$%zu\r\n", n);
    bput(&b, payload, n);
    bputs(&b, "\r\n:7\r\n");
    sum_init(&want);
    want.type = '*';
    want.count = 2;
    sum_set_head(&want, payload, n);
    want.last_int = 7;
    want.frame_len = want.end = b.len;
    check_stream("1 MiB head", b.p, b.len, &want, 1, 1);
    bfree(&b);

    /* A 5 GB element, fed from one 1 MiB buffer: lengths past 32 bits. */
    {
        resp_reply r;
        unsigned long long big = 5000000000ULL, left = big;
        size_t used, total = 0;
        int good = 1;
        const char *hdr = "*2\r\n$5000000000\r\n";

        memset(payload, 'a', n);
        resp_reply_init(&r);
        good &= resp_reply_scan(&r, hdr, strlen(hdr), &used) == RESP_AGAIN;
        total += strlen(hdr);
        while (left > 0 && good) {
            size_t k = left < n ? (size_t)left : n;
            good &= resp_reply_scan(&r, payload, k, &used) == RESP_AGAIN && used == k;
            left -= k;
            total += k;
        }
        good &= resp_reply_scan(&r, "\r\n:-5\r\n+OK\r\n", 12, &used) == RESP_OK && used == 7;
        total += 7;
        ok(good, "5 GB element: RESP_AGAIN until its end");
        ok(r.frame_len == total && r.type == '*' && r.count == 2 && r.head_len == big &&
           memcmp(r.head, "aaaaaaaaaaaaaaaaaaaaaaaa", HMAX) == 0 && r.last_int == -5,
           "5 GB element: summary (frame_len %zu)", r.frame_len);
        resp_reply_free(&r);
    }
    free(payload);
}

/* Pipelines of many small frames. */
static void test_many(void)
{
    struct bytes b = { 0 };
    struct sum *want = malloc(30000 * sizeof(*want));
    struct run run;
    size_t nw = 0;

    if (want == NULL)
        bail_out("out of memory");
    for (int i = 0; i < 10000; i++) {
        static const struct want w[3] = {
            { .len = 5, .type = '+', .count = -1, .line = "OK" },
            { .len = 4, .type = ':', .count = -1, .last_int = 1 },
            { .len = 9, .type = '$', .count = -1 },
        };
        wants_to_sums(w, 3, b.len, 18, want + nw);
        nw += 3;
        bputs(&b, "+OK\r\n:1\r\n$3\r\nfoo\r\n");
    }
    scan_stream(&run, b.p, b.len, WHOLE, 0);
    ok(run_matches(&run, want, nw, b.len, "many"), "30000 pipelined frames: whole");
    run_free(&run);
    scan_stream(&run, b.p, b.len, RANDOM, 100);
    ok(run_matches(&run, want, nw, b.len, "many"), "30000 pipelined frames: random chunks");
    run_free(&run);
    free(want);
    bfree(&b);
}

/* ---- random streams ---- */

enum { ROLE_TOP, ROLE_ELEM, ROLE_INNER };

struct gen {
    struct bytes out;
    int resp3;
    int maxdepth;
    struct sum cur;        /* the summary of the frame being generated */
    int first_done;
    int at_max;            /* values generated at maxdepth */
    int deep;              /* this frame favours aggregates, down to maxdepth */
};

static void gen_text(struct gen *g, size_t len, int binary)
{
    for (size_t i = 0; i < len; i++) {
        char c = binary ? (char)rnd() : (char)(' ' + rndn(95));
        bput(&g->out, &c, 1);
    }
}

static void gen_value(struct gen *g, int depth, int role)
{
    static const char types2[] = "+-:$$$**nN";
    static const char types3[] = "+-:$$**nN_,#(!=~%>";
    const char *types = g->resp3 ? types3 : types2;
    if (depth == g->maxdepth)
        g->at_max++;
    size_t ntypes = strlen(types);
    /* Below the top, aggregates are few and narrow, so that a frame stays small (the
     * expected number of aggregates inside an aggregate is below one) while some still
     * reach maxdepth. */
    int scalar_only = depth >= g->maxdepth || (depth > 0 && !g->deep && rndn(3) != 0);
    char t;
    size_t start, n;

    if (g->resp3 && !scalar_only && rndn(10) == 0) {
        n = rndn(3);
        bprintf(&g->out, "|%zu\r\n", n);
        for (size_t i = 0; i < 2 * n; i++)
            gen_value(g, depth + 1, ROLE_INNER);
    }
    if (g->deep && !scalar_only && rndn(2) == 0)
        t = g->resp3 ? "*~%>"[rndn(4)] : '*';
    else
        do {
            t = types[rndn(ntypes)];
        } while (scalar_only && strchr("*~%>", t) != NULL);

    if (role == ROLE_TOP)
        g->cur.type = t == 'n' ? '$' : t == 'N' ? '*' : t;
    switch (t) {
    case '+': case '-':
        n = rndn(4) == 0 ? rndn(60) : rndn(10);
        bput(&g->out, &t, 1);
        start = g->out.len;
        gen_text(g, n, 0);
        if (role == ROLE_TOP)
            sum_set_line(&g->cur, g->out.p + start, n);
        if (role == ROLE_ELEM && !g->first_done && t == '+')
            sum_set_head(&g->cur, g->out.p + start, n);
        bputs(&g->out, "\r\n");
        break;
    case ':': {
        static const long long special[] = { 0, -1, 1, LLONG_MAX, LLONG_MIN, 1000000007 };
        long long v = rndn(2) ? special[rndn(6)] : (long long)(rnd() >> rndn(64));
        if (rndn(2) && v != LLONG_MIN)
            v = -v;
        bprintf(&g->out, ":%lld\r\n", v);
        if (role == ROLE_TOP || role == ROLE_ELEM)
            g->cur.last_int = v;
        break;
    }
    case '$': case '!': case '=':
        n = rndn(8) == 0 ? 100 + rndn(3000) : rndn(40);
        if (t == '=' && n < 4)
            n = 4;
        bprintf(&g->out, "%c%zu\r\n", t, n);
        start = g->out.len;
        if (t == '=') {
            bputs(&g->out, "txt:");
            gen_text(g, n - 4, 1);
        } else {
            gen_text(g, n, 1);
        }
        if (role == ROLE_ELEM && !g->first_done && t != '!')
            sum_set_head(&g->cur, g->out.p + start, n);
        bputs(&g->out, "\r\n");
        break;
    case 'n':
        bputs(&g->out, "$-1\r\n");
        break;
    case 'N':
        bputs(&g->out, "*-1\r\n");
        break;
    case '_':
        bputs(&g->out, "_\r\n");
        break;
    case ',':
        bputs(&g->out, rndn(2) ? ",3.14159\r\n" : ",-inf\r\n");
        break;
    case '#':
        bputs(&g->out, rndn(2) ? "#t\r\n" : "#f\r\n");
        break;
    case '(':
        bputs(&g->out, "(-3492890328409238509324850943850943825024385\r\n");
        break;
    default: {  /* aggregates */
        size_t k = rndn(6) == 0 ? 0 : depth == 0 && rndn(4) == 0 ? 1 + rndn(40) : 1 + rndn(2);
        size_t elems = t == '%' ? 2 * k : k;
        int child = role == ROLE_TOP ? ROLE_ELEM : ROLE_INNER;
        bprintf(&g->out, "%c%zu\r\n", t, k);
        if (role == ROLE_TOP)
            g->cur.count = (long long)elems;
        if (role == ROLE_ELEM)
            g->first_done = 1;
        for (size_t i = 0; i < elems; i++)
            gen_value(g, depth + 1, child);
        break;
    }
    }
    if (role == ROLE_ELEM)
        g->first_done = 1;
}

/* Generates n frames; want gets each frame's summary. */
static void gen_stream(struct gen *g, size_t n, struct sum *want)
{
    for (size_t i = 0; i < n; i++) {
        size_t start = g->out.len;
        sum_init(&g->cur);
        g->first_done = 0;
        g->deep = rndn(10) == 0;
        gen_value(g, 0, ROLE_TOP);
        g->cur.frame_len = g->out.len - start;
        g->cur.end = g->out.len;
        want[i] = g->cur;
    }
}

static void test_random(void)
{
    enum { N = 2000 };
    struct sum *want = malloc(N * sizeof(*want));
    struct run run;

    if (want == NULL)
        bail_out("out of memory");
    for (int resp3 = 0; resp3 <= 1; resp3++) {
        struct gen g = { .resp3 = resp3, .maxdepth = resp3 ? 14 : 7 };
        const char *name = resp3 ? "random RESP3" : "random RESP2";

        gen_stream(&g, N, want);
        scan_stream(&run, g.out.p, g.out.len, WHOLE, 0);
        ok(run_matches(&run, want, N, g.out.len, name), "%s: %d frames, %zu bytes, whole",
           name, N, g.out.len);
        ok(g.at_max > 10, "%s: %d values at nesting depth %d", name, g.at_max, g.maxdepth);
        run_free(&run);
        scan_stream(&run, g.out.p, g.out.len, STEP, 1);
        ok(run_matches(&run, want, N, g.out.len, name), "%s: one byte at a time", name);
        run_free(&run);
        scan_stream(&run, g.out.p, g.out.len, RANDOM, 5);
        ok(run_matches(&run, want, N, g.out.len, name), "%s: random small chunks", name);
        run_free(&run);
        scan_stream(&run, g.out.p, g.out.len, RANDOM, 5000);
        ok(run_matches(&run, want, N, g.out.len, name), "%s: random large chunks", name);
        run_free(&run);
        if (!resp3) {
            int agree = 1;
            size_t from = 0;
            for (size_t i = 0; i < N && agree; i++) {
                agree = hiredis_agrees(g.out.p + from, want[i].end - from, &want[i], 0);
                if (!agree)
                    diag("frame %zu", i);
                from = want[i].end;
            }
            ok(agree, "%s: redisReader ends every reply where the scanner does", name);
        }
        bfree(&g.out);
    }
    free(want);
}

/* ---- a live redis-server ---- */

static pid_t redis_pid = -1;
static char redis_sock[108];

static int on_path(const char *prog)
{
    const char *path = getenv("PATH");
    char buf[4096];

    while (path != NULL && *path != '\0') {
        const char *colon = strchr(path, ':');
        size_t n = colon ? (size_t)(colon - path) : strlen(path);
        if (n > 0 && n + strlen(prog) + 2 < sizeof(buf)) {
            memcpy(buf, path, n);
            buf[n] = '/';
            strcpy(buf + n + 1, prog);
            if (access(buf, X_OK) == 0)
                return 1;
        }
        path = colon ? colon + 1 : NULL;
    }
    return 0;
}

static int redis_connect(void)
{
    struct sockaddr_un sa;
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);

    if (fd < 0)
        return -1;
    memset(&sa, 0, sizeof(sa));
    sa.sun_family = AF_UNIX;
    snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", redis_sock);
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
        close(fd);
        return -1;
    }
    return fd;
}

static void redis_stop(void)
{
    if (redis_pid > 0) {
        kill(redis_pid, SIGTERM);
        waitpid(redis_pid, NULL, 0);
        redis_pid = -1;
    }
    unlink(redis_sock);
}

/* Starts a private redis-server on a Unix socket; returns a connection or -1. */
static int redis_start(void)
{
    snprintf(redis_sock, sizeof(redis_sock), "/tmp/lp-reply-t-%ld.sock", (long)getpid());
    unlink(redis_sock);
    fflush(stdout);
    fflush(stderr);
    redis_pid = fork();
    if (redis_pid < 0)
        return -1;
    if (redis_pid == 0) {
        int nul = open("/dev/null", O_WRONLY);
        if (nul >= 0) {
            dup2(nul, STDOUT_FILENO);
            dup2(nul, STDERR_FILENO);
        }
        execlp("redis-server", "redis-server", "--port", "0", "--unixsocket", redis_sock,
               "--save", "", "--appendonly", "no", "--enable-debug-command", "yes",
               "--daemonize", "no", (char *)NULL);
        _exit(127);
    }
    for (int i = 0; i < 200; i++) {
        struct timespec ts = { 0, 25 * 1000 * 1000 };
        int fd = redis_connect();
        if (fd >= 0)
            return fd;
        if (waitpid(redis_pid, NULL, WNOHANG) == redis_pid) {
            redis_pid = -1;
            return -1;
        }
        nanosleep(&ts, NULL);
    }
    redis_stop();
    return -1;
}

/* A connection to the server and everything it sent, scanned as it arrives. */
struct conn {
    int fd;
    resp_reply r;
    struct bytes in;
    size_t scanned;
    struct run run;
};

static void conn_open(struct conn *c, int fd)
{
    memset(c, 0, sizeof(*c));
    c->fd = fd;
    resp_reply_init(&c->r);
}

static void conn_close(struct conn *c)
{
    if (c->fd >= 0)
        close(c->fd);
    resp_reply_free(&c->r);
    bfree(&c->in);
    run_free(&c->run);
}

/* Sends one command, NULL-terminated arguments. */
static void cmd(struct conn *c, ...)
{
    struct bytes b = { 0 };
    const char *argv[16];
    int argc = 0;
    va_list ap;

    va_start(ap, c);
    while (argc < 16 && (argv[argc] = va_arg(ap, const char *)) != NULL)
        argc++;
    va_end(ap);
    bprintf(&b, "*%d\r\n", argc);
    for (int i = 0; i < argc; i++) {
        bprintf(&b, "$%zu\r\n", strlen(argv[i]));
        bputs(&b, argv[i]);
        bputs(&b, "\r\n");
    }
    for (size_t off = 0; off < b.len;) {
        ssize_t n = write(c->fd, b.p + off, b.len - off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            bail_out("write to redis-server: %s", strerror(errno));
        off += (size_t)n;
    }
    bfree(&b);
}

/* Reads until the connection has given `total` frames; 0, or -1 on error or timeout. */
static int read_frames(struct conn *c, size_t total)
{
    while (c->run.n < total) {
        struct pollfd pfd = { .fd = c->fd, .events = POLLIN };
        char buf[16384];
        ssize_t n;

        if (c->scanned < c->in.len) {
            size_t used;
            resp_status st = resp_reply_scan(&c->r, c->in.p + c->scanned,
                                             c->in.len - c->scanned, &used);
            c->scanned += used;
            if (st == RESP_OK) {
                struct sum s;
                take_sum(&s, &c->r, c->scanned);
                run_push(&c->run, &s);
                continue;
            }
            if (st == RESP_ERROR) {
                diag("scanner: %s", c->r.errstr);
                return -1;
            }
        }
        if (poll(&pfd, 1, 10000) <= 0) {
            diag("timeout waiting for redis-server");
            return -1;
        }
        n = read(c->fd, buf, sizeof(buf));
        if (n <= 0) {
            diag("read from redis-server: %s", n < 0 ? strerror(errno) : "EOF");
            return -1;
        }
        bput(&c->in, buf, (size_t)n);
    }
    return 0;
}

/* The bytes of frame i on a connection. */
static const char *frame_at(const struct conn *c, size_t i, size_t *len)
{
    size_t from = i ? c->run.f[i - 1].end : 0;
    *len = c->run.f[i].end - from;
    return c->in.p + from;
}

static const char *proto_types[] = { "string", "integer", "double", "bignum", "null", "array",
                                     "set", "map", "attrib", "push", "verbatim", "true",
                                     "false" };
#define NPROTO (sizeof(proto_types) / sizeof(proto_types[0]))

/* DEBUG PROTOCOL replies of redis 7.0.15, as captured (RESP2, then RESP3). */
static const struct { const char *bytes; size_t len; } captured[2][NPROTO + 1] = {
    {
        { B("$11\r\nHello World\r\n") }, { B(":12345\r\n") }, { B("$5\r\n3.141\r\n") },
        { B("$37\r\n1234567999999999999999999999999999999\r\n") }, { B("$-1\r\n") },
        { B("*3\r\n:0\r\n:1\r\n:2\r\n") }, { B("*3\r\n:0\r\n:1\r\n:2\r\n") },
        { B("*6\r\n:0\r\n:0\r\n:1\r\n:1\r\n:2\r\n:0\r\n") },
        { B("$39\r\nSome real reply following the attribute\r\n") },
        { B("-ERR RESP2 is not supported by this command\r\n") },
        { B("$25\r\nThis is a verbatim\nstring\r\n") }, { B(":1\r\n") }, { B(":0\r\n") },
        { NULL, 0 },
    },
    {
        { B("$11\r\nHello World\r\n") }, { B(":12345\r\n") }, { B(",3.141\r\n") },
        { B("(1234567999999999999999999999999999999\r\n") }, { B("_\r\n") },
        { B("*3\r\n:0\r\n:1\r\n:2\r\n") }, { B("~3\r\n:0\r\n:1\r\n:2\r\n") },
        { B("%3\r\n:0\r\n#f\r\n:1\r\n#t\r\n:2\r\n#f\r\n") },
        { B("|1\r\n$14\r\nkey-popularity\r\n*2\r\n$7\r\nkey:123\r\n:90\r\n"
            "$39\r\nSome real reply following the attribute\r\n") },
        { B(">2\r\n$16\r\nserver-cpu-usage\r\n:42\r\n") },
        { B("$40\r\nSome real reply following the push reply\r\n") },
        { B("=29\r\ntxt:This is a verbatim\nstring\r\n") }, { B("#t\r\n") }, { B("#f\r\n") },
    },
};

#define REDIS_TESTS 26

/* One protocol version: HELLO, every DEBUG PROTOCOL type, COMMAND COUNT, COMMAND DOCS, PING,
 * pipelined; then the frames are checked. */
static void redis_session(struct conn *c, int proto)
{
    const char *types = proto == 2 ? "*$:$$$***$-$:::*+" : "%$:,(_*~%$>$=##:%+";
    size_t nframes = strlen(types), docs = nframes - 2, count = nframes - 3;
    size_t nproto = proto == 2 ? NPROTO : NPROTO + 1;
    char got[32];
    const struct sum *f;
    size_t len;
    const char *p;
    int same;

    cmd(c, "HELLO", proto == 2 ? "2" : "3", NULL);
    for (size_t i = 0; i < NPROTO; i++)
        cmd(c, "DEBUG", "PROTOCOL", proto_types[i], NULL);
    cmd(c, "COMMAND", "COUNT", NULL);
    cmd(c, "COMMAND", "DOCS", NULL);
    cmd(c, "PING", NULL);
    if (read_frames(c, nframes) < 0) {
        skip(10, "RESP%d session failed", proto);
        return;
    }
    for (size_t i = 0; i < nframes; i++)
        got[i] = c->run.f[i].type;
    got[nframes] = '\0';
    is_string(got, types, "RESP%d: frame types", proto);
    ok(c->run.f[nframes - 1].end == c->in.len, "RESP%d: the last frame ends the bytes received",
       proto);
    f = &c->run.f[0];
    ok(f->count == 14 && f->head_len == 6 && memcmp(f->head, "server", 6) == 0 &&
       f->last_int > 0, "RESP%d: HELLO summary", proto);
    f = &c->run.f[nframes - 1];
    ok(f->line_len == 4 && memcmp(f->line, "PONG", 4) == 0, "RESP%d: PING after COMMAND DOCS",
       proto);
    ok(c->run.f[docs].count == 2 * c->run.f[count].last_int && c->run.f[count].last_int > 200,
       "RESP%d: COMMAND DOCS has 2 x %lld elements", proto, c->run.f[count].last_int);

    same = 1;
    for (size_t i = 0; i < nproto; i++) {
        p = frame_at(c, i + 1, &len);
        if (len != captured[proto - 2][i].len || memcmp(p, captured[proto - 2][i].bytes, len)) {
            diag("DEBUG PROTOCOL frame %zu differs from the capture", i);
            same = 0;
        }
    }
    ok(same, "RESP%d: DEBUG PROTOCOL frames are the captured bytes", proto);

    /* COMMAND DOCS again, fed every way. */
    {
        struct run whole, other;
        p = frame_at(c, docs, &len);
        scan_stream(&whole, p, len, WHOLE, 0);
        ok(whole.n == 1 && whole.f[0].frame_len == len && whole.f[0].type == types[docs],
           "RESP%d: COMMAND DOCS, %zu bytes, is one frame", proto, len);
        scan_stream(&other, p, len, STEP, 1);
        ok(runs_equal(&whole, &other, "docs"), "RESP%d: COMMAND DOCS one byte at a time", proto);
        run_free(&other);
        scan_stream(&other, p, len, RANDOM, 2000);
        ok(runs_equal(&whole, &other, "docs"), "RESP%d: COMMAND DOCS random chunks", proto);
        run_free(&other);
        run_free(&whole);
    }

    if (proto == 2) {
        same = 1;
        for (size_t i = 0; i < nframes; i++) {
            if (i == docs)
                continue;
            p = frame_at(c, i, &len);
            if (!hiredis_agrees(p, len, &c->run.f[i], 0)) {
                diag("frame %zu", i);
                same = 0;
            }
        }
        ok(same, "RESP2: redisReader ends every reply but COMMAND DOCS where the scanner does");
        p = frame_at(c, docs, &len);
        if (hiredis_agrees(p, len, &c->run.f[docs], 1))
            diag("redisReader can read this COMMAND DOCS");
        else
            diag("redisReader cannot read COMMAND DOCS (nested deeper than it allows)");
    } else {
        f = &c->run.f[10];
        ok(f->count == 2 && f->head_len == 16 && f->last_int == 42,
           "RESP3: push summary");
    }
}

/* Pub/sub: a RESP2 and a RESP3 subscriber get messages published from another connection. */
static void redis_pubsub(struct conn *pub, struct conn *s2, struct conn *s3)
{
    size_t base = pub->run.n, b3;
    const struct sum *f;

    cmd(s3, "HELLO", "3", NULL);
    if (read_frames(s3, 1) < 0)
        goto fail;
    b3 = s3->run.n;
    cmd(s2, "SUBSCRIBE", "ch", NULL);
    cmd(s2, "PSUBSCRIBE", "c*", NULL);
    cmd(s2, "SSUBSCRIBE", "ch", NULL);
    cmd(s3, "SUBSCRIBE", "ch", NULL);
    cmd(s3, "PSUBSCRIBE", "c*", NULL);
    if (read_frames(s2, 3) < 0 || read_frames(s3, b3 + 2) < 0)
        goto fail;
    f = s2->run.f;
    ok(f[0].type == '*' && f[0].head_len == 9 && !memcmp(f[0].head, "subscribe", 9) &&
       f[0].last_int == 1 && f[1].head_len == 10 && !memcmp(f[1].head, "psubscribe", 10) &&
       f[1].last_int == 2 && f[2].head_len == 10 && !memcmp(f[2].head, "ssubscribe", 10),
       "RESP2 subscribe confirmations");
    f = s3->run.f + b3;
    ok(f[0].type == '>' && f[0].head_len == 9 && !memcmp(f[0].head, "subscribe", 9) &&
       f[0].last_int == 1 && f[1].type == '>' && f[1].last_int == 2,
       "RESP3 subscribe confirmations are push frames");

    cmd(pub, "PUBLISH", "ch", "hello", NULL);
    cmd(pub, "SPUBLISH", "ch", "shard", NULL);
    if (read_frames(pub, base + 2) < 0 || read_frames(s2, 6) < 0 ||
        read_frames(s3, b3 + 4) < 0)
        goto fail;
    f = pub->run.f + base;
    ok(f[0].type == ':' && f[0].last_int == 4 && f[1].type == ':' && f[1].last_int == 1,
       "PUBLISH and SPUBLISH counts");
    f = s2->run.f + 3;
    ok(f[0].type == '*' && f[0].count == 3 && f[0].head_len == 7 &&
       !memcmp(f[0].head, "message", 7) && f[1].count == 4 && f[1].head_len == 8 &&
       !memcmp(f[1].head, "pmessage", 8) && f[2].count == 3 && f[2].head_len == 8 &&
       !memcmp(f[2].head, "smessage", 8), "RESP2 message, pmessage, smessage");
    f = s3->run.f + b3 + 2;
    ok(f[0].type == '>' && f[0].count == 3 && f[0].head_len == 7 &&
       !memcmp(f[0].head, "message", 7) && f[1].type == '>' && f[1].count == 4 &&
       f[1].head_len == 8 && !memcmp(f[1].head, "pmessage", 8), "RESP3 message, pmessage");
    ok(s2->run.f[s2->run.n - 1].end == s2->in.len && s3->run.f[s3->run.n - 1].end == s3->in.len,
       "subscribers: nothing left over");
    return;
fail:
    skip(6, "pub/sub session failed");
}

static void test_redis(void)
{
    struct conn c2, c3, s2, s3;
    int fd;

    if (!on_path("redis-server")) {
        skip(REDIS_TESTS, "redis-server is not on PATH");
        return;
    }
    fd = redis_start();
    if (fd < 0) {
        skip(REDIS_TESTS, "redis-server did not start");
        return;
    }
    conn_open(&c2, fd);
    conn_open(&c3, redis_connect());
    conn_open(&s2, redis_connect());
    conn_open(&s3, redis_connect());
    if (c3.fd < 0 || s2.fd < 0 || s3.fd < 0)
        bail_out("cannot connect to redis-server");
    redis_session(&c2, 2);
    redis_session(&c3, 3);
    redis_pubsub(&c2, &s2, &s3);
    conn_close(&c2);
    conn_close(&c3);
    conn_close(&s2);
    conn_close(&s3);
    redis_stop();
}

int main(void)
{
    plan_lazy();
    signal(SIGPIPE, SIG_IGN);
    test_cases();
    test_incomplete();
    test_errors();
    test_nesting();
    test_big();
    test_many();
    test_random();
    test_redis();
    return 0;
}
