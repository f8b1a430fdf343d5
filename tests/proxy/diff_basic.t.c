/* Differential tests, ordinary traffic: the same bytes straight to Redis and through the
 * proxy give the same bytes back and the same close behaviour. Inline and multibulk
 * requests, binary values, SELECT, QUIT, RESET, COMMAND DOCS, requests split into pieces. */
#include <stdlib.h>
#include <string.h>

#include "lib/harness.h"

static hp_proc *redis, *proxy;

/* Runs steps both ways; also checks that Redis's own answer contains each of the
 * NUL-terminated texts in want (so that the test really exercises what it says). */
static void diff_want(const char *name, const hp_step *steps, const hp_diff_opts *opts,
                      const char *const *want)
{
    hp_side d, p;
    hp_diff_ex(redis, proxy, name, steps, opts, &d, &p);
    for (int i = 0; want != NULL && want[i] != NULL; i++)
        ok(hp_buf_has(&d.out, want[i], strlen(want[i])),
           "%s: Redis's answer has \"%s\"", name, hp_esc(want[i], strlen(want[i]), 80));
    hp_side_free(&d);
    hp_side_free(&p);
}

static void test_simple(void)
{
    static const hp_step ping[] = { HP_SEND("*1\r\n$4\r\nPING\r\n"), HP_END };
    diff_want("PING", ping, NULL, (const char *[]){ "+PONG\r\n", NULL });

    static const hp_step errors[] = {
        HP_SEND("*1\r\n$7\r\nNOSUCHC\r\n"
                "*2\r\n$3\r\nGET\r\n$1\r\nk\r\n"
                "*1\r\n$3\r\nGET\r\n"
                "*3\r\n$5\r\nLPUSH\r\n$1\r\nl\r\n$1\r\nx\r\n"
                "*2\r\n$3\r\nGET\r\n$1\r\nl\r\n"
                "*3\r\n$6\r\nEXPIRE\r\n$1\r\nl\r\n$3\r\nabc\r\n"),
        HP_END
    };
    diff_want("errors: unknown command, arity, WRONGTYPE, not an integer", errors, NULL,
              (const char *[]){ "-ERR unknown command", "-WRONGTYPE", "$-1\r\n", NULL });

    static const hp_step types[] = {
        HP_SEND("*6\r\n$5\r\nRPUSH\r\n$1\r\nl\r\n$1\r\na\r\n$0\r\n\r\n$1\r\nc\r\n$1\r\nd\r\n"
                "*4\r\n$6\r\nLRANGE\r\n$1\r\nl\r\n$1\r\n0\r\n$2\r\n-1\r\n"
                "*4\r\n$6\r\nLRANGE\r\n$4\r\nnone\r\n$1\r\n0\r\n$2\r\n-1\r\n"
                "*6\r\n$4\r\nHSET\r\n$1\r\nh\r\n$1\r\nf\r\n$1\r\nv\r\n$1\r\ng\r\n$1\r\nw\r\n"
                "*2\r\n$7\r\nHGETALL\r\n$1\r\nh\r\n"
                "*6\r\n$4\r\nZADD\r\n$1\r\nz\r\n$3\r\n1.5\r\n$1\r\na\r\n$4\r\n-inf\r\n$1\r\nb\r\n"
                "*5\r\n$6\r\nZRANGE\r\n$1\r\nz\r\n$1\r\n0\r\n$2\r\n-1\r\n$10\r\nWITHSCORES\r\n"
                "*4\r\n$4\r\nMGET\r\n$1\r\nh\r\n$4\r\nnone\r\n$1\r\nl\r\n"
                "*2\r\n$4\r\nSCAN\r\n$1\r\n0\r\n"
                "*3\r\n$11\r\nINCRBYFLOAT\r\n$1\r\nf\r\n$3\r\n1.1\r\n"
                "*2\r\n$4\r\nTYPE\r\n$1\r\nz\r\n"
                "*2\r\n$6\r\nEXISTS\r\n$4\r\nnone\r\n"),
        HP_END
    };
    diff_want("RESP2 reply shapes (arrays, nil, empty, scores)", types, NULL,
              (const char *[]){ "*0\r\n", "$-1\r\n", "+zset\r\n", NULL });

    static const hp_step names[] = {
        HP_SEND("*3\r\n$6\r\nCLIENT\r\n$7\r\nSETNAME\r\n$4\r\nabcd\r\n"
                "*2\r\n$6\r\nCLIENT\r\n$7\r\nGETNAME\r\n"
                "*3\r\n$6\r\nCLIENT\r\n$7\r\nSETNAME\r\n$3\r\na b\r\n"),
        HP_END
    };
    diff_want("CLIENT SETNAME/GETNAME", names, NULL, (const char *[]){ "$4\r\nabcd\r\n", NULL });
}

static void test_inline(void)
{
    static const hp_step s1[] = { HP_SEND("PING\r\n"), HP_END };
    diff_want("inline PING", s1, NULL, (const char *[]){ "+PONG\r\n", NULL });

    static const hp_step s2[] = { HP_SEND("set a \"b c\"\r\nget a\r\n"), HP_END };
    diff_want("inline set a \"b c\"", s2, NULL, (const char *[]){ "$3\r\nb c\r\n", NULL });

    static const hp_step s3[] = {
        HP_SEND("PING\n"
                "\r\n"
                "   \r\n"
                "\n"
                "ECHO 'single quoted' \r\n"
                "  echo   \"tab\\there\\x41\\x00z\"  \r\n"
                "echo \"esc \\\" quote\"\r\n"
                "set k \"\\r\\n\"\r\n"
                "strlen k\r\n"
                "echo \"\"\r\n"
                "ping hello\r\n"),
        HP_END
    };
    diff_want("inline: LF only, empty lines, quotes and escapes", s3, NULL,
              (const char *[]){ "$13\r\nsingle quoted\r\n", ":2\r\n", "$0\r\n\r\n", NULL });

    static const hp_step s4[] = {
        HP_SEND("SET x 1\r\n*2\r\n$4\r\nINCR\r\n$1\r\nx\r\nGET x\r\n*1\r\n$4\r\nPING\r\nPING\r\n"),
        HP_END
    };
    diff_want("inline and multibulk mixed in one pipeline", s4, NULL,
              (const char *[]){ ":2\r\n$1\r\n2\r\n+PONG\r\n+PONG\r\n", NULL });

    static const hp_step s5[] = {
        HP_SEND("set a "), HP_PAUSE(50), HP_SEND("\"b"), HP_PAUSE(50), HP_SEND(" c\""),
        HP_PAUSE(50), HP_SEND("\r"), HP_PAUSE(50), HP_SEND("\nget a\r\n"), HP_END
    };
    diff_want("inline request in pieces", s5, NULL, (const char *[]){ "+OK\r\n$3\r\nb c\r\n", NULL });
}

static void test_binary(void)
{
    hp_buf req = {0};
    static const char v1[] = "a\0b\r\nc\r\n\0\xff$3\r\n*1\r\n";
    static const char k1[] = "key\0with\r\nbytes";
    hp_buf_cmd(&req, "SET %b %b", k1, sizeof k1 - 1, v1, sizeof v1 - 1);
    hp_buf_cmd(&req, "GET %b", k1, sizeof k1 - 1);
    hp_buf_cmd(&req, "APPEND %b %b", k1, sizeof k1 - 1, "\r\n", (size_t)2);
    hp_buf_cmd(&req, "GETRANGE %b 0 -1", k1, sizeof k1 - 1);
    hp_buf_cmd(&req, "STRLEN %b", k1, sizeof k1 - 1);
    hp_buf_cmd(&req, "ECHO %b", "\0", (size_t)1);
    hp_buf_cmd(&req, "ECHO %b", "", (size_t)0);
    char all[256];
    for (int i = 0; i < 256; i++) all[i] = (char)i;
    hp_buf_cmd(&req, "SET all %b", all, sizeof all);
    hp_buf_cmd(&req, "GET all");
    hp_buf_cmd(&req, "HSET h %b %b", "\r\n", (size_t)2, "\0\0", (size_t)2);
    hp_buf_cmd(&req, "HGETALL h");
    hp_buf_cmd(&req, "KEYS *");
    const hp_step steps[] = { HP_SENDN(req.data, req.len), HP_END };
    hp_side d, p;
    hp_diff_ex(redis, proxy, "binary keys and values (NUL, CRLF, all bytes)", steps, NULL, &d, &p);
    static const char got1[] = "$18\r\na\0b\r\nc\r\n\0\xff$3\r\n*1\r\n\r\n";
    static const char got2[] = "$20\r\na\0b\r\nc\r\n\0\xff$3\r\n*1\r\n\r\n\r\n:20\r\n";
    ok(hp_buf_has(&d.out, got1, sizeof got1 - 1), "binary: Redis's GET returns the value");
    ok(hp_buf_has(&d.out, got2, sizeof got2 - 1), "binary: APPEND, GETRANGE, STRLEN");
    hp_side_free(&d);
    hp_side_free(&p);
    hp_buf_free(&req);
}

static void test_select_quit_reset(void)
{
    static const hp_step sel[] = {
        HP_SEND("*2\r\n$6\r\nSELECT\r\n$1\r\n3\r\n"
                "SET k in3\r\n"
                "SELECT 0\r\n"
                "GET k\r\n"
                "SELECT 3\r\n"
                "GET k\r\n"
                "SELECT 99\r\n"
                "SELECT x\r\n"
                "GET k\r\n"
                "SWAPDB 0 3\r\n"
                "GET k\r\n"
                "DBSIZE\r\n"),
        HP_END
    };
    diff_want("SELECT", sel, NULL,
              (const char *[]){ "$-1\r\n", "$3\r\nin3\r\n", "-ERR DB index is out of range", NULL });

    static const hp_step quit[] = {
        HP_SEND("PING\r\n*1\r\n$4\r\nQUIT\r\nPING\r\nSET after quit\r\n"), HP_END
    };
    hp_side d, p;
    hp_diff_ex(redis, proxy, "QUIT answers +OK and closes", quit, NULL, &d, &p);
    is_bytes(d.out.data, d.out.len, "+PONG\r\n+OK\r\n", 12, "QUIT: Redis answers +PONG +OK");
    ok(d.closed, "QUIT: Redis closed");
    hp_side_free(&d);
    hp_side_free(&p);
    ok(hp_cmd_int(redis, "EXISTS after") == 0, "QUIT: nothing after it ran");

    static const hp_step quit_inline[] = { HP_SEND("quit\r\n"), HP_PAUSE(100), HP_SEND("PING\r\n"), HP_END };
    hp_diff(redis, proxy, "inline quit, then more bytes", quit_inline, NULL);

    static const hp_step reset[] = {
        HP_SEND("SELECT 2\r\nSET r 1\r\nCLIENT SETNAME n\r\nMULTI\r\nGET r\r\n"
                "*1\r\n$5\r\nRESET\r\n"
                "GET r\r\nCLIENT GETNAME\r\nEXEC\r\nSELECT 2\r\nGET r\r\n"),
        HP_END
    };
    diff_want("RESET ends MULTI, SELECT and the name", reset, NULL,
              (const char *[]){ "+RESET\r\n", "-ERR EXEC without MULTI", NULL });
}

static void test_split(void)
{
    /* A pipeline delivered one byte at a time, with pauses inside the frames. */
    static const char req[] = "*3\r\n$3\r\nSET\r\n$2\r\nsk\r\n$5\r\nv\r\nal\r\n"
                              "*2\r\n$3\r\nGET\r\n$2\r\nsk\r\nPING\r\n";
    size_t n = sizeof req - 1;
    hp_step *steps = calloc(2 * n + 1, sizeof *steps);
    for (size_t i = 0; i < n; i++) {
        steps[2 * i] = (hp_step)HP_SENDN(req + i, 1);
        steps[2 * i + 1] = (hp_step)HP_PAUSE(i % 7 == 0 ? 20 : 1);
    }
    steps[2 * n] = (hp_step)HP_END;
    diff_want("a pipeline sent one byte at a time", steps, NULL,
              (const char *[]){ "+OK\r\n$5\r\nv\r\nal\r\n+PONG\r\n", NULL });
    free(steps);

    /* A bulk argument whose CRLF arrives long after its payload. */
    static const hp_step late[] = {
        HP_SEND("*2\r\n$4\r\nECHO\r\n$3\r\nabc"), HP_WAIT_QUIET(300), HP_SEND("\r"),
        HP_PAUSE(100), HP_SEND("\n"), HP_END
    };
    diff_want("bulk payload, then CRLF later", late, NULL, (const char *[]){ "$3\r\nabc\r\n", NULL });

    /* An incomplete request stays pending without an answer, the connection open. */
    static const hp_step pending[] = { HP_SEND("*2\r\n$3\r\nGET\r\n$1\r\n"), HP_END };
    diff_want("incomplete request: no answer, still open", pending, NULL, NULL);
}

static void test_command_docs(void)
{
    hp_diff_opts big = { .min_bytes = 100000 };
    /* A big reply: the PING after it marks its end, so that a pause inside it (a loaded
     * machine) is not taken for the end of the stream. */
    static const hp_step docs[] = {
        HP_SEND("*2\r\n$7\r\nCOMMAND\r\n$4\r\nDOCS\r\nPING\r\n"), HP_WAIT_MATCH("+PONG\r\n"), HP_END
    };
    diff_want("COMMAND DOCS (RESP2, deep nesting)", docs, &big,
              (const char *[]){ "$7\r\nsummary\r\n", NULL });

    static const hp_step cmds[] = {
        HP_SEND("COMMAND COUNT\r\nCOMMAND INFO get set nosuch\r\nCOMMAND DOCS get\r\n"
                "COMMAND GETKEYS SET a b\r\nCOMMAND LIST FILTERBY PATTERN x*\r\n"),
        HP_END
    };
    diff_want("COMMAND COUNT/INFO/DOCS get/GETKEYS/LIST", cmds, NULL, NULL);

    static const hp_step all[] = { HP_SEND("COMMAND\r\nPING\r\n"), HP_WAIT_MATCH("+PONG\r\n"), HP_END };
    diff_want("COMMAND (all), then PING", all, &big, (const char *[]){ "+PONG\r\n", NULL });
}

/* The same through a proxy that listens on a unix socket and reaches Redis over its unix
 * socket. */
static void test_unix(void)
{
    char rsock[200], psock[200], up[210], listen[210];
    snprintf(rsock, sizeof rsock, "%s/redis.sock", hp_tmpdir());
    snprintf(psock, sizeof psock, "%s/proxy.sock", hp_tmpdir());
    snprintf(up, sizeof up, "unix:%s", rsock);
    snprintf(listen, sizeof listen, "unix:%s", psock);
    hp_proc *r = hp_redis_start((const char *[]){ "--unixsocket", rsock, NULL });
    hp_proc *p = hp_proxy_start(r, (const char *[]){ "--upstream", up, "--listen", listen, NULL });
    static const hp_step s[] = {
        HP_SEND("PING\r\nSET u 1\r\nINCR u\r\n*2\r\n$3\r\nGET\r\n$1\r\nu\r\nQUIT\r\n"), HP_END
    };
    hp_side d, q;
    hp_diff_ex(r, p, "unix sockets on both sides of the proxy", s, NULL, &d, &q);
    is_bytes(d.out.data, d.out.len, "+PONG\r\n+OK\r\n:2\r\n$1\r\n2\r\n+OK\r\n", 28,
             "unix sockets: Redis's answer");
    hp_side_free(&d);
    hp_side_free(&q);
    is_int(hp_stop(p, 10000), 0, "the unix-socket proxy exits 0 on SIGTERM");
    is_int(hp_stop(r, 10000), 0, "its Redis exits 0 on SIGTERM");
}

int main(void)
{
    plan_lazy();
    redis = hp_redis_start(NULL);
    proxy = hp_proxy_start(redis, NULL);

    test_simple();
    test_inline();
    test_binary();
    test_select_quit_reset();
    test_split();
    test_command_docs();
    test_unix();

    is_int(hp_stop(proxy, 10000), 0, "the proxy exits 0 on SIGTERM");
    return 0;
}
