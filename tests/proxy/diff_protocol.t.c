/* Differential tests, bad input: protocol errors get Redis's exact error line and the
 * connection closes; commands before the bad one run and answer, bytes after it do not run.
 * Also the corners of Redis's framing that a parser of its own easily gets wrong. */
#include <stdlib.h>
#include <string.h>

#include "lib/harness.h"

static hp_proc *redis, *proxy;

/* Sends req both ways; Redis's answer must be exactly want (so the test checks what it
 * claims), and the proxy's the same. */
static void diff_exact(const char *name, const void *req, size_t len, const char *want,
                       size_t wantlen, int closes)
{
    const hp_step steps[] = { HP_SENDN(req, len), HP_END };
    hp_side d, p;
    hp_diff_ex(redis, proxy, name, steps, NULL, &d, &p);
    if (!is_bytes(d.out.data, d.out.len, want, wantlen, "%s: Redis answers \"%s\"", name,
                  hp_esc(want, wantlen, 80)) ||
        !is_int(d.closed, closes, "%s: Redis %s", name, closes ? "closes" : "stays open"))
        diag("%s: the expectation does not match this Redis: fix the test", name);
    hp_side_free(&d);
    hp_side_free(&p);
}

#define DIFF(name, lit, want, closes) \
    diff_exact(name, lit, sizeof(lit) - 1, want, sizeof(want) - 1, closes)

static void test_multibulk_errors(void)
{
    DIFF("bad bulk length $x", "*1\r\n$x\r\n", "-ERR Protocol error: invalid bulk length\r\n", 1);
    DIFF("no $ before a bulk", "*1\r\nx\r\n", "-ERR Protocol error: expected '$', got 'x'\r\n", 1);
    DIFF("multibulk count 3000000000", "*3000000000\r\n",
         "-ERR Protocol error: invalid multibulk length\r\n", 1);
    DIFF("multibulk count with junk", "*1x\r\n", "-ERR Protocol error: invalid multibulk length\r\n", 1);
    DIFF("empty multibulk count", "*\r\n", "-ERR Protocol error: invalid multibulk length\r\n", 1);
    DIFF("multibulk count with a leading zero", "*01\r\n$4\r\nPING\r\n",
         "-ERR Protocol error: invalid multibulk length\r\n", 1);
    DIFF("multibulk count with a plus sign", "*+1\r\n$4\r\nPING\r\n",
         "-ERR Protocol error: invalid multibulk length\r\n", 1);
    DIFF("bulk length -1", "*1\r\n$-1\r\n", "-ERR Protocol error: invalid bulk length\r\n", 1);
    DIFF("bulk length beyond proto-max-bulk-len", "*1\r\n$600000000\r\n",
         "-ERR Protocol error: invalid bulk length\r\n", 1);
    DIFF("bulk length with a leading zero", "*1\r\n$04\r\nPING\r\n",
         "-ERR Protocol error: invalid bulk length\r\n", 1);
    DIFF("second argument without $", "*2\r\n$4\r\nECHO\r\n:1\r\n",
         "-ERR Protocol error: expected '$', got ':'\r\n", 1);
    DIFF("expected $, got a control byte", "*1\r\n\x01\r\n",
         "-ERR Protocol error: expected '$', got '\x01'\r\n", 1);
}

static void test_before_after(void)
{
    DIFF("commands before the bad one answer",
         "PING\r\n*3\r\n$3\r\nSET\r\n$6\r\nbefore\r\n$1\r\n1\r\n*1\r\n$x\r\n",
         "+PONG\r\n+OK\r\n-ERR Protocol error: invalid bulk length\r\n", 1);
    DIFF("bytes after the bad one do not run", "*1\r\n$x\r\nSET after 1\r\nPING\r\n",
         "-ERR Protocol error: invalid bulk length\r\n", 1);
    ok(hp_cmd_int(redis, "EXISTS after") == 0, "nothing after a protocol error ran");

    /* The bad frame arrives later, after earlier replies were sent. */
    static const hp_step later[] = {
        HP_SEND("PING\r\n"), HP_WAIT_MATCH("+PONG\r\n"), HP_SEND("*2\r\n$4\r\nECHO\r\n"),
        HP_PAUSE(100), HP_SEND("$y"), HP_PAUSE(100), HP_SEND("\r\nPING\r\n"), HP_END
    };
    hp_diff(redis, proxy, "protocol error in a later packet", later, NULL);
}

static void test_inline_errors(void)
{
    DIFF("unbalanced quotes: set a \"b c", "set a \"b c\r\n",
         "-ERR Protocol error: unbalanced quotes in request\r\n", 1);
    DIFF("unbalanced quotes: \"foo", "\"foo\r\n",
         "-ERR Protocol error: unbalanced quotes in request\r\n", 1);
    DIFF("unbalanced quotes: 'foo", "'foo\r\n",
         "-ERR Protocol error: unbalanced quotes in request\r\n", 1);
    DIFF("closing quote not followed by a space", "echo \"foo\"bar\r\n",
         "-ERR Protocol error: unbalanced quotes in request\r\n", 1);
    DIFF("closing single quote not followed by a space", "PING\r\necho 'it''s'\r\n",
         "+PONG\r\n-ERR Protocol error: unbalanced quotes in request\r\n", 1);
    DIFF("an unterminated quote without newline waits", "PING\r\n\"foo", "+PONG\r\n", 0);

    /* 70 KiB of inline command without a newline. */
    size_t n = 70 * 1024;
    char *big = malloc(n);
    memset(big, 'a', n);
    memcpy(big, "SET k ", 6);
    diff_exact("70 KiB inline line without newline", big, n,
               "-ERR Protocol error: too big inline request\r\n", 45, 1);
    /* Just under the limit it waits for more. */
    diff_exact("60 KiB inline line without newline waits", big, 60 * 1024, "", 0, 0);

    /* The same sizes for the count lines of a multibulk request. */
    big[0] = '*';
    memset(big + 1, '1', n - 1);
    diff_exact("70 KiB multibulk count line", big, n,
               "-ERR Protocol error: too big mbulk count string\r\n", 49, 1);
    memcpy(big, "*1\r\n$", 5);
    diff_exact("70 KiB bulk count line", big, n,
               "-ERR Protocol error: too big bulk count string\r\n", 48, 1);
    free(big);
}

static void test_framing_corners(void)
{
    DIFF("*-1 and *0 are skipped", "*-1\r\n*0\r\nPING\r\n", "+PONG\r\n", 0);
    DIFF("empty inline lines are skipped", "\r\n\n  \r\nPING\r\n", "+PONG\r\n", 0);
    DIFF("empty command name", "*1\r\n$0\r\n\r\n", "-ERR unknown command '', with args beginning with: \r\n", 0);
    /* Redis skips the two bytes after a bulk payload without looking at them. */
    DIFF("bytes after a bulk payload are not checked", "*1\r\n$4\r\nPINGxx*1\r\n$4\r\nPING\r\n",
         "+PONG\r\n+PONG\r\n", 0);
    /* In an inline line a NUL hides the newline (Redis searches with strchr). */
    DIFF("NUL in an inline line hides its end", "PI\0NG\r\nPING\r\n", "", 0);
    DIFF("NUL inside a bulk is data", "*2\r\n$4\r\nECHO\r\n$3\r\na\0b\r\nPING\r\n",
         "$3\r\na\0b\r\n+PONG\r\n", 0);
    /* Unlike inline lines, multibulk lines end at "\r": a lone LF is part of the number. */
    DIFF("multibulk count line ending in LF only", "*1\n$4\r\nPING\r\n",
         "-ERR Protocol error: invalid multibulk length\r\n", 1);
    DIFF("bulk count line ending in LF only", "*1\r\n$4\nPING\r\n",
         "-ERR Protocol error: invalid bulk length\r\n", 1);
    DIFF("multibulk with lower-case command and extra spaces inline", "  ping   \r\n", "+PONG\r\n", 0);

    /* A request delivered one line at a time with the CRLF split. */
    static const hp_step split[] = {
        HP_SEND("*2\r"), HP_PAUSE(50), HP_SEND("\n$4\r\nEC"), HP_PAUSE(50), HP_SEND("HO\r\n$2"),
        HP_PAUSE(50), HP_SEND("\r\nhi\r"), HP_PAUSE(50), HP_SEND("\n*1\r\n$x"), HP_PAUSE(50),
        HP_SEND("\r\n"), HP_END
    };
    hp_diff(redis, proxy, "split CRLFs, then a bad bulk length", split, NULL);
}

int main(void)
{
    plan_lazy();
    redis = hp_redis_start(NULL);
    proxy = hp_proxy_start(redis, NULL);

    test_multibulk_errors();
    test_before_after();
    test_inline_errors();
    test_framing_corners();

    is_int(hp_stop(proxy, 10000), 0, "the proxy exits 0 on SIGTERM");
    return 0;
}
