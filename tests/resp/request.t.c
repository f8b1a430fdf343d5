/* Request framer (resp/request.c): framing, limits and error texts as redis-server 7.0.
 *
 * Every case is a byte string, possibly several pipelined frames, and the transcript it
 * must produce: one "OK <framelen> <M|I> 'arg'..." entry per frame, then "AGAIN <pending
 * bytes>" or "ERROR <message>" where the error line is "-ERR Protocol error: <message>\r\n"
 * exactly (anything else is shown raw as "ERROR-RAW"). Bytes outside printable ASCII, '\\'
 * and '\'' inside arguments are shown as \xHH.
 *
 * Each case is fed whole, split in two at every offset (the prefix, then everything), and
 * growing one byte at a time; all must give the same transcript. Each call is given a
 * fresh heap copy of exactly the pending bytes, so that the parser is shown to keep
 * offsets rather than pointers (the buffer moves every call) and to never read past len
 * (AddressSanitizer). Big cases (the 64 KiB limits) use a subset of split offsets and grow
 * without copying.
 *
 * How the expected results were checked against redis-server 7.0.15 (Debian 12 package):
 * `redis-server --port 17791 --save '' --appendonly no --daemonize yes`, then a python3
 * socket script sent each input below in one write (and the 64 KiB cases also as 65536
 * bytes, a pause, then the rest), read until the server closed the connection or 0.8 s of
 * silence, and printed the reply and whether the connection closed. For every ERROR case
 * the server sent exactly the asserted "-ERR Protocol error: ...\r\n" and closed; for the
 * AGAIN cases it sent nothing and kept the connection open; for inline cases the argument
 * split was checked with ECHO (e.g. `ECHO a"b c"` answers "ab c", `ECHO "\x41\x4a\x4"`
 * answers "AJx4", `ECHO a\vb` answers the three bytes "a\vb"). Observations worth noting:
 * - "expected '$', got '%c'" shows the byte raw (0xff arrives as the byte 0xff, a tab as
 *   a tab) except '\r' and '\n', which the server turns into a space.
 * - A NUL byte before the line end hides it: "ECHO a\0b\r\nPING\r\n", "*1\0\r\n" and
 *   "*1\r\n$4\0\r\n..." get no answer at all; past 64 KiB they get the "too big" error.
 * - "*1\rX$4\r\nPING\r\n" and "*1\r\n$4\r\nPINGxyPING\r\n" both run PING: the byte after
 *   a '\r' and the two bytes after a payload are not checked.
 * - "ECHO " + 70000 bytes + "\n" in one write is answered (the limit only applies while no
 *   '\n' has arrived), but 65537 bytes without '\n' are an error.
 * - Quotes open anywhere in an inline argument: `ECHO a"b"` answers "ab".
 */
#include "tap.h"
#include "resp/request.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A growing byte string. */
typedef struct {
    char *p;
    size_t len, cap;
} sbuf;

static void sb_put(sbuf *b, const void *p, size_t n)
{
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n + 1)
            cap *= 2;
        b->p = realloc(b->p, cap);
        if (b->p == NULL)
            bail_out("out of memory");
        b->cap = cap;
    }
    memcpy(b->p + b->len, p, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void sb_str(sbuf *b, const char *s)
{
    sb_put(b, s, strlen(s));
}

static void sb_fmt(sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_fmt(sbuf *b, const char *fmt, ...)
{
    char tmp[128];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
    va_end(ap);
    sb_put(b, tmp, (size_t)n < sizeof(tmp) ? (size_t)n : sizeof(tmp) - 1);
}

static void sb_escaped(sbuf *b, const char *p, size_t n, int esc_quote)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)p[i];
        if (c < 0x20 || c >= 0x7f || c == '\\' || (esc_quote && c == '\''))
            sb_fmt(b, "\\x%02x", c);
        else
            sb_put(b, &p[i], 1);
    }
}

static void sb_free(sbuf *b)
{
    free(b->p);
    memset(b, 0, sizeof(*b));
}

/* Feeds in[0, len) to a fresh parser; the bytes "arrive" in pieces ending at cuts[0],
 * cuts[1], ... (increasing, the last one len). After each arrival the pending bytes are
 * presented until the parser wants more. Appends the transcript to out. copy: present a
 * fresh heap copy of exactly the pending bytes on every call. */
static void drive(const char *in, size_t len, const size_t *cuts, size_t ncuts, int copy,
                  long long max_bulk, sbuf *out)
{
    resp_request req;
    resp_request_init(&req);
    if (max_bulk > 0)
        req.max_bulk_len = max_bulk;

    size_t done = 0;   /* bytes consumed by complete frames */
    size_t have = 0;   /* bytes arrived */
    resp_status st = RESP_AGAIN;
    for (size_t c = 0; c < ncuts && st != RESP_ERROR; c++) {
        have = cuts[c];
        for (;;) {
            size_t pending = have - done, framelen = 0;
            char *dup = NULL;
            const char *p = in + done;
            if (copy) {
                dup = malloc(pending ? pending : 1);
                if (dup == NULL)
                    bail_out("out of memory");
                memcpy(dup, p, pending);
                p = dup;
            }
            st = resp_request_parse(&req, p, pending, &framelen);
            if (st == RESP_OK) {
                sb_fmt(out, "OK %zu %c", framelen, req.inline_req ? 'I' : 'M');
                if (framelen == 0 || framelen > pending)
                    sb_fmt(out, " BAD-FRAMELEN");
                for (int i = 0; i < req.argc; i++) {
                    const resp_arg *a = &req.argv[i];
                    if (a->len > 0 && (a->ptr < p || a->ptr + a->len > p + pending) &&
                        !req.inline_req)
                        sb_str(out, " ARG-OUTSIDE-BUFFER");
                    sb_str(out, " '");
                    sb_escaped(out, a->ptr, a->len, 1);
                    sb_str(out, "'");
                }
                sb_str(out, "; ");
                done += framelen;
            }
            free(dup);
            if (st != RESP_OK)
                break;
        }
    }

    if (st == RESP_ERROR) {
        static const char pre[] = "-ERR Protocol error: ";
        size_t pl = sizeof(pre) - 1;
        if (req.errstr == NULL) {
            sb_str(out, "ERROR-NULL");
        } else if (req.errlen == strlen(req.errstr) && req.errlen >= pl + 2 &&
                   memcmp(req.errstr, pre, pl) == 0 &&
                   memcmp(req.errstr + req.errlen - 2, "\r\n", 2) == 0 &&
                   memchr(req.errstr + pl, '\r', req.errlen - pl - 2) == NULL &&
                   memchr(req.errstr + pl, '\n', req.errlen - pl - 2) == NULL) {
            sb_str(out, "ERROR ");
            sb_escaped(out, req.errstr + pl, req.errlen - pl - 2, 0);
        } else {
            sb_str(out, "ERROR-RAW ");
            sb_escaped(out, req.errstr, req.errlen, 0);
        }
        /* The error is sticky. */
        const char *e = req.errstr;
        size_t fl = 0;
        if (resp_request_parse(&req, in + done, len - done, &fl) != RESP_ERROR ||
            req.errstr != e)
            sb_str(out, " NOT-STICKY");
    } else {
        sb_fmt(out, "AGAIN %zu", have - done);
    }
    resp_request_free(&req);
}

typedef struct {
    const char *name;
    const char *in;
    size_t len;
    const char *want;
    long long max_bulk;   /* 0: the default */
} tcase;

/* Runs one case: whole, every two-way split, byte by byte (or a subset for big inputs). */
static void check_case(const tcase *t)
{
    int big = t->len > 4096;
    sbuf whole = {0}, other = {0};
    size_t cuts[2];

    cuts[0] = t->len;
    drive(t->in, t->len, cuts, 1, 1, t->max_bulk, &whole);
    is_bytes(whole.p, whole.len, t->want, strlen(t->want), "%s: whole", t->name);

    /* Split in two: the prefix of length k arrives first, then the rest. */
    int same = 1;
    for (size_t k = 0; k <= t->len && same; k++) {
        if (big && k > 64 && k + 64 < t->len && k % 4093 != 0 &&
            (k < 65536 - 8 || k > 65536 + 8))
            continue;
        cuts[0] = k;
        cuts[1] = t->len;
        other.len = 0;
        drive(t->in, t->len, cuts, 2, !big, t->max_bulk, &other);
        if (other.len != whole.len || memcmp(other.p, whole.p, whole.len) != 0) {
            same = 0;
            diag("split at %zu differs", k);
            is_bytes(other.p, other.len, whole.p, whole.len, "%s: split at %zu", t->name, k);
        }
    }
    if (same)
        ok(1, "%s: split at every offset", t->name);

    /* Growing one byte at a time. */
    size_t *all = malloc((t->len + 1) * sizeof(*all));
    if (all == NULL)
        bail_out("out of memory");
    for (size_t k = 0; k <= t->len; k++)
        all[k] = k;
    other.len = 0;
    drive(t->in, t->len, all, t->len + 1, !big, t->max_bulk, &other);
    is_bytes(other.p, other.len, whole.p, whole.len, "%s: byte by byte", t->name);
    free(all);
    sb_free(&whole);
    sb_free(&other);
}

#define C(name, in, want) { name, in, sizeof(in) - 1, want, 0 }
#define CMAX(name, in, want, max) { name, in, sizeof(in) - 1, want, max }

static const tcase cases[] = {
    /* Multibulk basics and pipelining. */
    C("ping", "*1\r\n$4\r\nPING\r\n", "OK 14 M 'PING'; AGAIN 0"),
    C("set", "*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$5\r\nvalue\r\n",
      "OK 31 M 'SET' 'k' 'value'; AGAIN 0"),
    C("incomplete tail", "*2\r\n$3\r\nGET\r\n$1\r\nk\r",
      "AGAIN 19"),
    C("empty bulk", "*2\r\n$4\r\nECHO\r\n$0\r\n\r\n", "OK 20 M 'ECHO' ''; AGAIN 0"),
    C("pipelined mixed", "PING\r\n*1\r\n$4\r\nPING\r\nECHO x\n*2\r\n$4\r\nECHO\r\n$0\r\n\r\n*0\r\n",
      "OK 6 I 'PING'; OK 14 M 'PING'; OK 7 I 'ECHO' 'x'; OK 20 M 'ECHO' ''; OK 4 M; AGAIN 0"),
    C("pipelined then partial", "*1\r\n$4\r\nPING\r\n*1\r\n$4\r\nPI",
      "OK 14 M 'PING'; AGAIN 10"),
    C("pipelined then error", "*1\r\n$4\r\nPING\r\n*1\r\n$x\r\n*1\r\n$4\r\nPING\r\n",
      "OK 14 M 'PING'; ERROR invalid bulk length"),
    C("binary payload", "*3\r\n$3\r\nSET\r\n$3\r\nk\0\r\r\n$6\r\n\r\n\0\xff\r\n\r\n",
      "OK 34 M 'SET' 'k\\x00\\x0d' '\\x0d\\x0a\\x00\\xff\\x0d\\x0a'; AGAIN 0"),

    /* Counts: empty and negative frames, limits, string2ll's strictness. */
    C("*0", "*0\r\n*1\r\n$4\r\nPING\r\n", "OK 4 M; OK 14 M 'PING'; AGAIN 0"),
    C("*-10", "*-10\r\nPING\r\n", "OK 6 M; OK 6 I 'PING'; AGAIN 0"),
    C("*-1", "*-1\r\n", "OK 5 M; AGAIN 0"),
    C("*-2 (hiredis: array < -1)", "*-2\r\n+asdf\r\n", "OK 5 M; OK 7 I '+asdf'; AGAIN 0"),
    C("*LLONG_MIN", "*-9223372036854775808\r\nPING\r\n", "OK 23 M; OK 6 I 'PING'; AGAIN 0"),
    C("*below LLONG_MIN", "*-9223372036854775809\r\n", "ERROR invalid multibulk length"),
    C("*LLONG_MAX", "*9223372036854775807\r\n", "ERROR invalid multibulk length"),
    C("*above LLONG_MAX", "*9223372036854775808\r\n", "ERROR invalid multibulk length"),
    C("*3000000000", "*3000000000\r\n", "ERROR invalid multibulk length"),
    C("*INT_MAX+1", "*2147483648\r\n", "ERROR invalid multibulk length"),
    C("*INT_MAX", "*2147483647\r\n$1\r\na\r\n", "AGAIN 20"),
    C("*+1", "*+1\r\n", "ERROR invalid multibulk length"),
    C("*01", "*01\r\n", "ERROR invalid multibulk length"),
    C("*-0", "*-0\r\n", "ERROR invalid multibulk length"),
    C("*- ", "*-\r\n", "ERROR invalid multibulk length"),
    C("* empty", "*\r\n", "ERROR invalid multibulk length"),
    C("* space before", "* 1\r\n", "ERROR invalid multibulk length"),
    C("* space after", "*1 \r\n", "ERROR invalid multibulk length"),
    C("* letters", "*1x\r\n", "ERROR invalid multibulk length"),
    C("* blabla", "*blabla\r\n", "ERROR invalid multibulk length"),

    /* Bulk headers (Redis tests/unit/protocol.tcl and more). */
    C("wrong payload header", "*3\r\n$3\r\nSET\r\n$1\r\nx\r\nfooz\r\n",
      "ERROR expected '$', got 'f'"),
    C("negative bulk length", "*3\r\n$3\r\nSET\r\n$1\r\nx\r\n$-10\r\n",
      "ERROR invalid bulk length"),
    C("out of range bulk length", "*3\r\n$3\r\nSET\r\n$1\r\nx\r\n$2000000000\r\n",
      "ERROR invalid bulk length"),
    C("non-number bulk length", "*3\r\n$3\r\nSET\r\n$1\r\nx\r\n$blabla\r\n",
      "ERROR invalid bulk length"),
    C("not followed by bulk", "*1\r\nfoo\r\n", "ERROR expected '$', got 'f'"),
    C("$03", "*1\r\n$03\r\nfoo\r\n", "ERROR invalid bulk length"),
    C("$+5", "*1\r\n$+5\r\nhello\r\n", "ERROR invalid bulk length"),
    C("$-1", "*1\r\n$-1\r\n", "ERROR invalid bulk length"),
    C("$-2 (hiredis: bulk < -1)", "*1\r\n$-2\r\nasdf\r\n", "ERROR invalid bulk length"),
    C("$-0", "*1\r\n$-0\r\n", "ERROR invalid bulk length"),
    C("$ empty", "*1\r\n$\r\n", "ERROR invalid bulk length"),
    C("$ space", "*1\r\n$ 1\r\na\r\n", "ERROR invalid bulk length"),
    C("$LLONG_MAX", "*1\r\n$9223372036854775807\r\n", "ERROR invalid bulk length"),
    C("$above LLONG_MAX", "*1\r\n$9223372036854775808\r\n", "ERROR invalid bulk length"),
    C("$ max default", "*1\r\n$536870912\r\n", "AGAIN 16"),
    C("$ max default + 1", "*1\r\n$536870913\r\n", "ERROR invalid bulk length"),
    CMAX("$ max 10", "*1\r\n$10\r\n0123456789\r\n", "OK 21 M '0123456789'; AGAIN 0", 10),
    CMAX("$ max 10 + 1", "*1\r\n$11\r\n0123456789x\r\n", "ERROR invalid bulk length", 10),
    C("missing $: CR", "*1\r\n\r\n", "ERROR expected '$', got ' '"),
    C("missing $: LF", "*1\r\n\n\r\n", "ERROR expected '$', got ' '"),
    C("missing $: tab", "*1\r\n\t3\r\n", "ERROR expected '$', got '\\x09'"),
    C("missing $: 0xff", "*1\r\n\xff\r\n", "ERROR expected '$', got '\\xff'"),
    C("missing $: type byte", "*1\r\n:1\r\n", "ERROR expected '$', got ':'"),
    C("missing $ waits for the line", "*1\r\nfoo\r", "AGAIN 8"),
    C("missing $ without CR", "*1\r\nfoo", "AGAIN 7"),

    /* Line ends: a '\r' needs one more byte, which is not checked; payload CRLF neither. */
    C("count CR alone", "*1\r", "AGAIN 3"),
    C("count CR + any byte", "*1\rX$4\r\nPING\r\n", "OK 14 M 'PING'; AGAIN 0"),
    C("bulk CR + any byte", "*1\r\n$4\rXPING\r\n", "OK 14 M 'PING'; AGAIN 0"),
    C("payload trailer unchecked", "*1\r\n$4\r\nPINGxyPING\r\n",
      "OK 14 M 'PING'; OK 6 I 'PING'; AGAIN 0"),
    C("payload waits for trailer", "*1\r\n$4\r\nPING\r", "AGAIN 13"),
    C("inline CR without LF", "PING\r", "AGAIN 5"),
    C("inline CR inside", "ECHO a\rb\r\n", "OK 10 I 'ECHO' 'a' 'b'; AGAIN 0"),
    C("inline LF only", "ECHO a\n", "OK 7 I 'ECHO' 'a'; AGAIN 0"),
    C("inline CR CR LF", "ECHO a\r\r\n", "OK 9 I 'ECHO' 'a'; AGAIN 0"),

    /* NUL bytes hide the line end from Redis's strchr(). */
    C("NUL in count", "*1\0\r\n$4\r\nPING\r\n", "AGAIN 15"),
    C("NUL in bulk length", "*1\r\n$4\0\r\nPING\r\n", "AGAIN 15"),
    C("NUL in inline", "ECHO a\0b\r\nPING\r\n", "AGAIN 16"),
    C("NUL in payload", "*1\r\n$4\r\nPI\0G\r\n", "OK 14 M 'PI\\x00G'; AGAIN 0"),
    C("NUL after the line end", "PING\r\n\0", "OK 6 I 'PING'; AGAIN 1"),

    /* Inline requests: empty lines, spaces, sdssplitargs quoting. */
    C("empty line", "\r\nPING\r\n", "OK 2 I; OK 6 I 'PING'; AGAIN 0"),
    C("LF alone", "\n", "OK 1 I; AGAIN 0"),
    C("spaces only", "   \t \r\n", "OK 7 I; AGAIN 0"),
    C("CR CR LF", "\r\r\n", "OK 3 I; AGAIN 0"),
    C("tabs", "SET\tk\t\tv\r\n", "OK 10 I 'SET' 'k' 'v'; AGAIN 0"),
    C("extra spaces", "  ECHO   a   \r\n", "OK 15 I 'ECHO' 'a'; AGAIN 0"),
    C("VT/FF between args", "ECHO \v\fa\r\n", "OK 10 I 'ECHO' 'a'; AGAIN 0"),
    C("VT/FF do not end an argument", "ECHO\v\fa\r\n", "OK 9 I 'ECHO\\x0b\\x0ca'; AGAIN 0"),
    C("VT inside an arg", "ECHO a\vb\r\n", "OK 10 I 'ECHO' 'a\\x0bb'; AGAIN 0"),
    C("high bytes", "ECHO \xff\xfe\r\n", "OK 9 I 'ECHO' '\\xff\\xfe'; AGAIN 0"),
    C("quoted empty string", "ECHO \"\"\r\n", "OK 9 I 'ECHO' ''; AGAIN 0"),
    C("quoted empty after tab", "ECHO\t\"\"\r\n", "OK 9 I 'ECHO' ''; AGAIN 0"),
    C("single-quoted empty", "ECHO ''\r\n", "OK 9 I 'ECHO' ''; AGAIN 0"),
    C("two empty strings", "ECHO \"\" \"\"\r\n", "OK 12 I 'ECHO' '' ''; AGAIN 0"),
    C("quoted command", "\"ECHO\" x\r\n", "OK 10 I 'ECHO' 'x'; AGAIN 0"),
    C("quoted spaces", "SET \"a b\" 'c d'\r\n", "OK 17 I 'SET' 'a b' 'c d'; AGAIN 0"),
    C("hex escapes", "ECHO \"\\x41\\x4a\\x4\"\r\n", "OK 20 I 'ECHO' 'AJx4'; AGAIN 0"),
    C("hex escape mixed case", "ECHO \"\\xaF\\x00\"\r\n", "OK 17 I 'ECHO' '\\xaf\\x00'; AGAIN 0"),
    C("hex escape not hex", "ECHO \"\\xzz\"\r\n", "OK 13 I 'ECHO' 'xzz'; AGAIN 0"),
    C("hex escape upper X", "ECHO \"\\X41\"\r\n", "OK 13 I 'ECHO' 'X41'; AGAIN 0"),
    C("hex escape cut short", "ECHO \"\\x\"\r\n", "OK 11 I 'ECHO' 'x'; AGAIN 0"),
    C("letter escapes", "ECHO \"\\n\\r\\t\\b\\a\\q\\\\\\\"\"\r\n",
      "OK 25 I 'ECHO' '\\x0a\\x0d\\x09\\x08\\x07q\\x5c\"'; AGAIN 0"),
    C("single quotes: escaped quote", "ECHO 'a\\'b'\r\n", "OK 13 I 'ECHO' 'a\\x27b'; AGAIN 0"),
    C("single quotes: no other escapes", "ECHO 'a\\nb'\r\n",
      "OK 13 I 'ECHO' 'a\\x5cnb'; AGAIN 0"),
    C("quote kinds inside each other", "ECHO '\"' \"'\"\r\n",
      "OK 14 I 'ECHO' '\"' '\\x27'; AGAIN 0"),
    C("quote opens mid-argument", "ECHO a\"b\"\r\n", "OK 11 I 'ECHO' 'ab'; AGAIN 0"),
    C("quote mid-argument with space", "ECHO a\"b c\"\r\n", "OK 13 I 'ECHO' 'ab c'; AGAIN 0"),
    C("single quote mid-argument", "ECHO a'b c'\r\n", "OK 13 I 'ECHO' 'ab c'; AGAIN 0"),
    C("closing quote then VT", "ECHO \"a\"\v\r\n", "OK 11 I 'ECHO' 'a'; AGAIN 0"),
    C("closing quote then FF", "ECHO \"a\"\f x\r\n", "OK 13 I 'ECHO' 'a' 'x'; AGAIN 0"),
    C("closing quote then CR", "ECHO \"a\"\rx\r\n", "OK 12 I 'ECHO' 'a' 'x'; AGAIN 0"),
    C("escaped backslash at end", "ECHO \"a\\\\\"\r\n", "OK 12 I 'ECHO' 'a\\x5c'; AGAIN 0"),
    C("quoted then pipelined", "ECHO \"a b\"\nPING\n", "OK 11 I 'ECHO' 'a b'; OK 5 I 'PING'; AGAIN 0"),
    C("unbalanced (protocol.tcl)", "set \"\"\"test-key\"\"\" test-value\r\nping\r\n",
      "ERROR unbalanced quotes in request"),
    C("unterminated double", "ECHO \"ab\r\n", "ERROR unbalanced quotes in request"),
    C("unterminated single", "ECHO 'ab\r\n", "ERROR unbalanced quotes in request"),
    C("double closed then text", "ECHO \"a\"b\r\n", "ERROR unbalanced quotes in request"),
    C("single closed then text", "ECHO 'a'b\r\n", "ERROR unbalanced quotes in request"),
    C("mid-argument quote then text", "ECHO a\"b\"c\r\n", "ERROR unbalanced quotes in request"),
    C("single then double glued", "ECHO a'b'\"c\"\r\n", "ERROR unbalanced quotes in request"),
    C("four double quotes", "ECHO \"\"\"\"\r\n", "ERROR unbalanced quotes in request"),
    C("lone quote at end", "ECHO a\"\r\n", "ERROR unbalanced quotes in request"),
    C("escaped closing double", "ECHO \"a\\\"\r\n", "ERROR unbalanced quotes in request"),
    C("escaped closing single", "ECHO 'a\\'\r\n", "ERROR unbalanced quotes in request"),
    C("backslashes in single", "ECHO 'a\\\\'\r\n", "ERROR unbalanced quotes in request"),
    C("backslash ends line", "ECHO \"a\\\r\n", "ERROR unbalanced quotes in request"),
    C("good line before unbalanced", "PING\r\nECHO \"a\r\n",
      "OK 6 I 'PING'; ERROR unbalanced quotes in request"),
    C("inline not starting with *", "$3\r\n", "OK 4 I '$3'; AGAIN 0"),
    C("@ is inline (hiredis: bad type byte)", "@foo\r\n", "OK 6 I '@foo'; AGAIN 0"),
};

/* Builds n copies of the byte c. */
static char *repeat(char c, size_t n)
{
    char *p = malloc(n + 1);
    if (p == NULL)
        bail_out("out of memory");
    memset(p, c, n);
    p[n] = '\0';
    return p;
}

/* A big case assembled from pieces: head, n times fill, tail. */
static void big_case(const char *name, const char *head, size_t headlen, char fill, size_t n,
                     const char *tail, size_t taillen, const char *want)
{
    size_t len = headlen + n + taillen;
    char *in = malloc(len);
    if (in == NULL)
        bail_out("out of memory");
    memcpy(in, head, headlen);
    memset(in + headlen, fill, n);
    memcpy(in + headlen + n, tail, taillen);
    tcase t = { name, in, len, want, 0 };
    check_case(&t);
    free(in);
}

#define BIG(name, head, fill, n, tail, want) \
    big_case(name, head, sizeof(head) - 1, fill, n, tail, sizeof(tail) - 1, want)

static void limits(void)
{
    const size_t max = RESP_INLINE_MAX_SIZE;
    char want[256];

    /* Inline: more than 64 KiB pending without a '\n'. */
    snprintf(want, sizeof(want), "AGAIN %zu", max);
    BIG("inline 64 KiB without LF", "", 'a', max, "", want);
    BIG("inline 64 KiB + 1 without LF", "", 'a', max + 1, "", "ERROR too big inline request");

    /* A 64 KiB line plus its LF is fine however it arrives (never more than 64 KiB
     * pending without the LF). */
    {
        sbuf w = {0};
        char *a = repeat('a', max);
        sb_fmt(&w, "OK %zu I '", max + 1);
        sb_str(&w, a);
        sb_str(&w, "'; AGAIN 0");
        BIG("inline line of 64 KiB", "", 'a', max, "\n", w.p);
        free(a);
        sb_free(&w);
    }

    /* Multibulk count and bulk length lines. */
    snprintf(want, sizeof(want), "AGAIN %zu", max);
    BIG("count line 64 KiB", "*", '1', max - 1, "", want);
    BIG("count line 64 KiB + 1", "*", '1', max, "", "ERROR too big mbulk count string");
    snprintf(want, sizeof(want), "AGAIN %zu", max + 4);
    BIG("bulk length line 64 KiB", "*1\r\n$", '1', max - 1, "", want);
    BIG("bulk length line 64 KiB + 1", "*1\r\n$", '1', max, "", "ERROR too big bulk count string");
    BIG("bulk length line 64 KiB, then CRLF", "*1\r\n$", '1', max - 1, "\r\n",
        "ERROR invalid bulk length");
    /* The bulk length limit counts from the "$", not from the frame start. */
    {
        static const char head[] = "*2\r\n$70000\r\n";
        size_t plen = 70000;
        char *in = malloc(sizeof(head) - 1 + plen + 2 + 1 + max);
        size_t n = 0;
        memcpy(in, head, sizeof(head) - 1);
        n += sizeof(head) - 1;
        memset(in + n, 'p', plen);
        n += plen;
        memcpy(in + n, "\r\n$", 3);
        n += 3;
        memset(in + n, '1', max - 1);
        n += max - 1;
        snprintf(want, sizeof(want), "AGAIN %zu", n);
        tcase t = { "bulk length limit counts from its $", in, n, want, 0 };
        check_case(&t);
        in[n++] = '1';
        tcase t2 = { "bulk length limit counts from its $ (over)", in, n,
                     "ERROR too big bulk count string", 0 };
        check_case(&t2);
        free(in);
    }

    /* Protocol desync regression tests of protocol.tcl: a NUL early on, then "payload"
     * forever; the line end is never found and the limit ends it. */
    {
        static const char *seqs[] = { "\0", "*\0", "$\0" };
        static const size_t seqlen[] = { 1, 2, 2 };
        static const char *errs[] = { "ERROR too big inline request",
                                      "ERROR too big mbulk count string",
                                      "ERROR too big inline request" };
        for (int s = 0; s < 3; s++) {
            size_t reps = max / 7 + 1, n = 0;
            char *in = malloc(seqlen[s] + reps * 7 + 2);
            memcpy(in, seqs[s], seqlen[s]);
            n += seqlen[s];
            for (size_t r = 0; r < reps; r++, n += 7)
                memcpy(in + n, "payload", 7);
            memcpy(in + n, "\r\n", 2);
            n += 2;
            char name[64];
            snprintf(name, sizeof(name), "protocol desync #%d", s + 1);
            tcase t = { name, in, n, errs[s], 0 };
            check_case(&t);
            free(in);
        }
    }
    snprintf(want, sizeof(want), "AGAIN %zu", max);
    BIG("NUL then LF within 64 KiB", "\0", 'a', max - 2, "\n", want);

    /* Not split-invariant, like Redis itself: a line longer than 64 KiB is accepted when
     * its '\n' is already there, refused when more than 64 KiB arrived without it. */
    {
        size_t n = 5 + 70000 + 1, fl = 0;
        char *in = malloc(n);
        memcpy(in, "ECHO ", 5);
        memset(in + 5, 'a', 70000);
        in[n - 1] = '\n';
        resp_request req;
        resp_request_init(&req);
        is_int(resp_request_parse(&req, in, n, &fl), RESP_OK, "long inline line arriving whole");
        is_int((long long)fl, (long long)n, "long inline line: framelen");
        is_int(req.argc, 2, "long inline line: argc");
        ok(req.argc == 2 && req.argv[1].len == 70000 && req.argv[1].ptr == in + 5,
           "long inline line: the argument points into the buffer");
        resp_request_reset(&req);
        is_int(resp_request_parse(&req, in, max, &fl), RESP_AGAIN, "long inline line: 64 KiB");
        is_int(resp_request_parse(&req, in, max + 1, &fl), RESP_ERROR,
               "long inline line: 64 KiB + 1 without LF");
        is_int(resp_request_parse(&req, in, n, &fl), RESP_ERROR,
               "long inline line: stays an error when the LF comes");
        resp_request_free(&req);
        free(in);
    }

    /* Also not split-invariant: once the '\r' of a bulk length line is there the limit no
     * longer applies and the line waits for one more byte, however long it is. */
    {
        size_t n = 4 + 1 + max + 2, fl = 0;
        char *in = malloc(n);
        memcpy(in, "*1\r\n$", 5);
        memset(in + 5, '1', max);
        memcpy(in + 5 + max, "\r\n", 2);
        resp_request req;
        resp_request_init(&req);
        is_int(resp_request_parse(&req, in, n - 1, &fl), RESP_AGAIN,
               "bulk length line over 64 KiB with its CR: waits");
        is_int(resp_request_parse(&req, in, n, &fl), RESP_ERROR,
               "bulk length line over 64 KiB with its CR, then LF: error");
        is_bytes(req.errstr, req.errlen, "-ERR Protocol error: invalid bulk length\r\n", 42,
                 "bulk length line over 64 KiB: invalid bulk length (not a valid number)");
        resp_request_reset(&req);
        is_int(resp_request_parse(&req, in, n - 2, &fl), RESP_ERROR,
               "bulk length line over 64 KiB without its CR: error");
        is_bytes(req.errstr, req.errlen, "-ERR Protocol error: too big bulk count string\r\n",
                 48, "bulk length line over 64 KiB without its CR: too big bulk count string");
        resp_request_free(&req);
        free(in);
    }

    /* A 4 MiB argument, byte by byte, not rescanned (each call is O(new bytes); a
     * rescanning parser would take minutes here). */
    {
        size_t plen = 4u << 20;
        char head[64];
        int hl = snprintf(head, sizeof(head), "*2\r\n$3\r\nSET\r\n$%zu\r\n", plen);
        size_t n = (size_t)hl + plen + 2, fl = 0, k;
        char *in = malloc(n);
        memcpy(in, head, (size_t)hl);
        for (size_t i = 0; i < plen; i++)
            in[hl + i] = (char)(i * 7);
        memcpy(in + hl + plen, "\r\n", 2);
        resp_request req;
        resp_request_init(&req);
        resp_status st = RESP_AGAIN;
        for (k = 0; k <= n && st == RESP_AGAIN; k++)
            st = resp_request_parse(&req, in, k, &fl);
        is_int(st, RESP_OK, "4 MiB argument byte by byte");
        is_int((long long)k, (long long)n + 1, "4 MiB argument: complete only at the end");
        ok(req.argc == 2 && req.argv[1].ptr == in + hl && req.argv[1].len == plen,
           "4 MiB argument points into the buffer");
        resp_request_free(&req);
        free(in);
    }
}

/* Bytes already presented are not searched again: a line end planted in them afterwards
 * (which the contract forbids) goes unnoticed, while one in the new bytes is found. */
static void stale(const char *name, const char *first, size_t n1, const char *second,
                  size_t n2, const char *third, size_t n3, resp_status want3)
{
    resp_request req;
    size_t fl;

    resp_request_init(&req);
    int a = resp_request_parse(&req, first, n1, &fl) == RESP_AGAIN;
    int b = resp_request_parse(&req, second, n2, &fl) == RESP_AGAIN;
    ok(a && b, "%s: old bytes are not searched again", name);
    is_int(resp_request_parse(&req, third, n3, &fl), want3, "%s: then %s", name,
           want3 == RESP_OK ? "OK" : want3 == RESP_ERROR ? "ERROR" : "AGAIN");
    resp_request_free(&req);
}

#define L(s) s, sizeof(s) - 1

static void incremental(void)
{
    stale("inline", L("xxxxxxxx"), L("x\nxxxxxxyyyy"), L("x\nxxxxxxyyyy\n"), RESP_OK);
    stale("count line", L("*11111"), L("*\r\n111zz"), L("*\r\n111zz\r\n"), RESP_ERROR);
    stale("bulk length line", L("*1\r\n$12345"), L("*1\r\n$\r\n345zz"),
          L("*1\r\n$\r\n345zz\r\n"), RESP_ERROR);
    /* A NUL once seen hides the line end for good, as it does in Redis's buffer. */
    stale("NUL seen", L("*1\r\n$1\0"), L("*1\r\n$1\r\nx\r\n"), L("*1\r\n$1\r\nx\r\n"),
          RESP_AGAIN);
}

static void api(void)
{
    resp_request req;
    size_t fl = 0;
    static const char quoted[] = "SET \"k\\x41\" v\r\n";

    resp_request_init(&req);
    is_int(req.max_bulk_len, RESP_DEFAULT_MAX_BULK_LEN, "default proto-max-bulk-len");
    is_int(resp_request_parse(&req, "", 0, &fl), RESP_AGAIN, "no bytes: AGAIN");

    is_int(resp_request_parse(&req, quoted, sizeof(quoted) - 1, &fl), RESP_OK, "quoted inline");
    ok(req.argc == 3 && req.inline_req == 1, "quoted inline: argc 3, inline");
    ok(req.argv[0].ptr == quoted, "unquoted argument points into the buffer");
    is_bytes(req.argv[1].ptr, req.argv[1].len, "kA", 2, "quoted argument unquoted");
    ok(req.argv[2].ptr == quoted + 12, "argument after a quoted one points into the buffer");
    ok(resp_arg_is(&req.argv[0], "set"), "resp_arg_is: SET is set");
    ok(!resp_arg_is(&req.argv[0], "se"), "resp_arg_is: SET is not se");
    ok(!resp_arg_is(&req.argv[0], "sets"), "resp_arg_is: SET is not sets");
    ok(!resp_arg_is(&req.argv[1], "ka "), "resp_arg_is: kA is not 'ka '");
    ok(resp_arg_is(&req.argv[1], "ka"), "resp_arg_is: kA is ka");
    resp_arg empty = { "", 0 };
    ok(resp_arg_is(&empty, ""), "resp_arg_is: empty");

    static const char bad[] = "*1\r\n$x\r\n";
    static const char good[] = "*1\r\n$4\r\nPING\r\n";
    is_int(resp_request_parse(&req, bad, sizeof(bad) - 1, &fl), RESP_ERROR, "error");
    is_int(resp_request_parse(&req, good, sizeof(good) - 1, &fl), RESP_ERROR,
           "error is sticky");
    is_bytes(req.errstr, req.errlen, "-ERR Protocol error: invalid bulk length\r\n", 42,
             "errstr after a sticky error");
    resp_request_reset(&req);
    ok(req.errstr == NULL && req.errlen == 0, "reset clears the error");
    is_int(resp_request_parse(&req, good, sizeof(good) - 1, &fl), RESP_OK, "parses after reset");
    is_int((long long)fl, 14, "framelen after reset");

    /* reset in the middle of a frame */
    is_int(resp_request_parse(&req, good, 9, &fl), RESP_AGAIN, "half a frame");
    resp_request_reset(&req);
    is_int(resp_request_parse(&req, "PING\n", 5, &fl), RESP_OK, "reset forgets the half frame");
    ok(req.argc == 1 && req.inline_req == 1, "inline after reset");

    /* Many arguments, then a small frame: arrays shrink back, argv still right. */
    {
        sbuf b = {0};
        int n = 5000;
        sb_fmt(&b, "*%d\r\n", n);
        for (int i = 0; i < n; i++)
            sb_str(&b, "$1\r\nx\r\n");
        is_int(resp_request_parse(&req, b.p, b.len, &fl), RESP_OK, "5000 arguments");
        is_int(req.argc, n, "5000 arguments: argc");
        is_int(resp_request_parse(&req, good, sizeof(good) - 1, &fl), RESP_OK,
               "small frame after a big one");
        ok(req.argc == 1 && resp_arg_is(&req.argv[0], "ping"), "small frame: argv");
        sb_free(&b);
    }

    resp_request_free(&req);
    resp_request_free(&req);   /* twice is harmless */
    resp_request_free(NULL);
    resp_request_init(&req);
    resp_request_free(&req);   /* never used */
    ok(1, "free accepts NULL, unused and freed parsers");
}

int main(void)
{
    plan_lazy();
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        check_case(&cases[i]);
    limits();
    incremental();
    api();
    return 0;
}
