/* redis-cli through the proxy: one-shot commands print what they print against Redis,
 * `redis-cli --pipe` with 10,000 commands reports no errors, and the interactive prompt
 * (which sends COMMAND DOCS at start for its hints) works on a pseudo-terminal: the whole
 * session's screen output equals the one against Redis, the port number aside. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lib/harness.h"

static hp_proc *redis, *proxy;

/* One redis-cli run: its arguments after "-p PORT", and its stdin. */
struct cli_case {
    const char *args[12];
    const char *in;
};

static const struct cli_case cases[] = {
    { { "PING" }, NULL },
    { { "SET", "k", "v" }, NULL },
    { { "GET", "k" }, NULL },
    { { "GET", "missing" }, NULL },
    { { "INCR", "n" }, NULL },
    { { "INCR", "k" }, NULL },
    { { "RPUSH", "l", "a", "b c", "" }, NULL },
    { { "LRANGE", "l", "0", "-1" }, NULL },
    { { "--no-raw", "LRANGE", "l", "0", "-1" }, NULL },
    { { "--csv", "LRANGE", "l", "0", "-1" }, NULL },
    { { "HSET", "h", "f", "v", "g", "w" }, NULL },
    { { "--no-raw", "HGETALL", "h" }, NULL },
    { { "NOSUCH", "x" }, NULL },
    { { "-e", "NOSUCH", "x" }, NULL },
    { { "-n", "2", "SET", "dbk", "x" }, NULL },
    { { "-n", "2", "GET", "dbk" }, NULL },
    { { "GET", "dbk" }, NULL },
    { { "-x", "SET", "xk" }, "from stdin\n" },
    { { "--no-raw", "GET", "xk" }, NULL },
    { { "--no-raw", "ECHO", "a\nb\x01" }, NULL },
    { { "-3", "--no-raw", "DEBUG", "PROTOCOL", "map" }, NULL },
    { { "-3", "--no-raw", "DEBUG", "PROTOCOL", "attrib" }, NULL },
    { { "-3", "--no-raw", "HGETALL", "h" }, NULL },
    { { "--no-raw", "COMMAND", "DOCS", "get" }, NULL },
    { { "COMMAND", "COUNT" }, NULL },
    { { "--no-raw", "MULTI" }, NULL },
    { { "-r", "3", "INCR", "rep" }, NULL },
    { { "--no-raw" }, "set a 1\nincr a\nget a\nnosuch\n" },
};

#define NCASES (sizeof cases / sizeof cases[0])

/* Runs every case against target; outputs[i] gets "exit N\n" + stdout + "--stderr--\n" + stderr. */
static void run_cases(const hp_proc *target, hp_buf *outputs)
{
    char port[16];
    snprintf(port, sizeof port, "%d", target->port);
    ok(hp_cmd_ok(target->kind == HP_PROXY ? target->upstream : target, "FLUSHALL"),
       "FLUSHALL before the redis-cli runs against %s", target->name);
    for (size_t i = 0; i < NCASES; i++) {
        const char *argv[20] = { "redis-cli", "-p", port };
        int n = 3;
        for (int a = 0; cases[i].args[a] != NULL && a < 12; a++) argv[n++] = cases[i].args[a];
        argv[n] = NULL;
        hp_buf out = {0}, err = {0};
        const char *in = cases[i].in ? cases[i].in : "";
        int code = hp_run(argv, in, strlen(in), &out, &err, 10000);
        hp_buf_reset(&outputs[i]);
        hp_buf_printf(&outputs[i], "exit %d\n", code);
        if (out.len) hp_buf_append(&outputs[i], out.data, out.len);
        hp_buf_puts(&outputs[i], "--stderr--\n");
        if (err.len) hp_buf_append(&outputs[i], err.data, err.len);
        hp_buf_free(&out);
        hp_buf_free(&err);
    }
}

static void describe(const struct cli_case *c, char *buf, size_t len)
{
    size_t at = (size_t)snprintf(buf, len, "redis-cli");
    for (int a = 0; c->args[a] != NULL && at < len; a++)
        at += (size_t)snprintf(buf + at, len - at, " %s", hp_esc(c->args[a], strlen(c->args[a]), 40));
    if (c->in && at < len) snprintf(buf + at, len - at, " < \"%s\"", hp_esc(c->in, strlen(c->in), 40));
}

static void test_one_shot(void)
{
    hp_buf direct[NCASES], proxied[NCASES];
    memset(direct, 0, sizeof direct);
    memset(proxied, 0, sizeof proxied);
    run_cases(redis, direct);
    run_cases(proxy, proxied);
    for (size_t i = 0; i < NCASES; i++) {
        char name[256];
        describe(&cases[i], name, sizeof name);
        is_bytes(proxied[i].data, proxied[i].len, direct[i].data, direct[i].len, "%s: same output", name);
        hp_buf_free(&direct[i]);
        hp_buf_free(&proxied[i]);
    }
}

static void test_pipe(void)
{
    hp_buf in = {0};
    for (int i = 0; i < 10000; i++) {
        switch (i % 3) {
        case 0: hp_buf_cmd(&in, "SET pk:%d v%d", i % 500, i); break;
        case 1: hp_buf_cmd(&in, "GET pk:%d", i % 500); break;
        default: hp_buf_cmd(&in, "INCR pc"); break;
        }
    }
    hp_buf out[2] = { {0}, {0} };
    int code[2];
    const hp_proc *targets[2] = { redis, proxy };
    for (int t = 0; t < 2; t++) {
        char port[16];
        snprintf(port, sizeof port, "%d", targets[t]->port);
        hp_cmd_ok(redis, "FLUSHALL");
        const char *argv[] = { "redis-cli", "-p", port, "--pipe", NULL };
        code[t] = hp_run(argv, in.data, in.len, &out[t], &out[t], 30000);
    }
    is_int(code[0], 0, "redis-cli --pipe to Redis exits 0");
    ok(HP_HAS(&out[0], "errors: 0, replies: 10000"), "redis-cli --pipe to Redis: errors: 0, replies: 10000");
    is_int(code[1], 0, "redis-cli --pipe through the proxy exits 0");
    ok(HP_HAS(&out[1], "errors: 0, replies: 10000"),
       "redis-cli --pipe through the proxy: errors: 0, replies: 10000");
    if (!HP_HAS(&out[1], "errors: 0, replies: 10000"))
        diag("its output: %s", hp_esc(out[1].data, out[1].len, 500));
    is_bytes(out[1].data, out[1].len, out[0].data, out[0].len, "redis-cli --pipe: same output");
    redisReply *r = hp_cmd(redis, "GET pc");
    ok(r != NULL && r->type == REDIS_REPLY_STRING && strcmp(r->str, "3333") == 0,
       "redis-cli --pipe through the proxy: all 3333 INCRs ran");
    freeReplyObject(r);
    hp_buf_free(&out[0]);
    hp_buf_free(&out[1]);
    hp_buf_free(&in);
}

/* Replaces every occurrence of the decimal port with "PORT". */
static void mask_port(hp_buf *b, int port)
{
    char text[16];
    snprintf(text, sizeof text, "%d", port);
    hp_buf out = {0};
    hp_buf_append(&out, "", 0);
    size_t at = 0, pos, tlen = strlen(text);
    while ((pos = hp_buf_find(b, at, text, tlen)) != (size_t)-1) {
        hp_buf_append(&out, b->data + at, pos - at);
        hp_buf_puts(&out, "PORT");
        at = pos + tlen;
    }
    hp_buf_append(&out, b->data + at, b->len - at);
    hp_buf_free(b);
    *b = out;
}

static void type_line(hp_pty *t, const char *line)
{
    hp_pty_drain(t, 100, 2000);
    for (const char *c = line; *c; c++) {
        char one[2] = { *c, 0 };
        hp_pty_write(t, one);
        hp_pty_drain(t, 20, 500);
    }
}

/* An interactive session; returns 1 when every step went as expected; *screen gets the
 * program's output with the port masked. */
static int interactive(const hp_proc *target, hp_buf *screen)
{
    char port[16], prompt[64];
    snprintf(port, sizeof port, "%d", target->port);
    snprintf(prompt, sizeof prompt, "127.0.0.1:%d> ", target->port);
    const char *argv[] = { "redis-cli", "-p", port, NULL };
    const char *env[] = { "TERM=xterm", "REDISCLI_HISTFILE=/dev/null", "REDISCLI_RCFILE=/dev/null",
                          "HOME=/nonexistent", NULL };
    hp_pty t;
    if (hp_pty_spawn(&t, argv, env, 24, 120) != 0) {
        ok(0, "%s: redis-cli started on a pty", target->name);
        return 0;
    }
    int good = 1;
    good &= ok(hp_pty_expect(&t, prompt, 10000), "%s: interactive redis-cli shows its prompt", target->name);
    /* Typed as a person would: after the prompt has settled (linenoise flushes typed-ahead
     * input when it switches the terminal mode), one key at a time, so that its hints are
     * drawn after each key. */
    type_line(&t, "set k v\r");
    good &= ok(hp_pty_expect(&t, "OK", 5000) && hp_pty_expect(&t, prompt, 5000),
               "%s: set k v answers OK", target->name);
    type_line(&t, "get k\r");
    good &= ok(hp_pty_expect(&t, "\"v\"", 5000) && hp_pty_expect(&t, prompt, 5000),
               "%s: get k answers \"v\"", target->name);
    type_line(&t, "hello 3\r");
    good &= ok(hp_pty_expect(&t, "proto", 5000) && hp_pty_expect(&t, prompt, 5000),
               "%s: hello 3 answers", target->name);
    /* (redis-cli 7.0 cannot read attributes: "debug protocol attrib" ends it.) */
    type_line(&t, "debug protocol map\r");
    good &= ok(hp_pty_expect(&t, "=> (false)", 5000) && hp_pty_expect(&t, prompt, 5000),
               "%s: a RESP3 map is shown", target->name);
    type_line(&t, "exit\r");
    int code = hp_pty_close(&t, 5000);
    good &= is_int(code, 0, "%s: exit leaves redis-cli with status 0", target->name);
    *screen = t.out;
    mask_port(screen, target->port);
    /* The HELLO reply carries the connection's id. */
    hp_mask_after(screen, "\"id\" => (integer) ", "0123456789");
    return good;
}

static void test_interactive(void)
{
    hp_buf a = {0}, b = {0};
    hp_cmd_ok(redis, "FLUSHALL");
    interactive(redis, &a);
    hp_cmd_ok(redis, "FLUSHALL");
    interactive(proxy, &b);
    is_bytes(b.data, b.len, a.data, a.len, "interactive redis-cli: the same screen output");
    if (getenv("LP_TEST_VERBOSE")) diag("screen: %s", hp_esc(a.data, a.len, 100000));
    ok(HP_HAS(&a, "key value"), "interactive redis-cli drew the hint for SET (from COMMAND DOCS)");
    hp_buf_free(&a);
    hp_buf_free(&b);
}

int main(void)
{
    plan_lazy();
    redis = hp_redis_start(NULL);
    proxy = hp_proxy_start(redis, NULL);

    test_one_shot();
    test_pipe();
    test_interactive();

    is_int(hp_stop(proxy, 10000), 0, "the proxy exits 0 on SIGTERM");
    return 0;
}
