/* Differential tests, RESP3: HELLO 3, every reply type DEBUG PROTOCOL produces, push frames
 * (client-side caching invalidations), and switching back with HELLO 2. HELLO replies carry
 * the client id, which differs between connections: it is masked (hp_norm_hello). */
#include <string.h>

#include "lib/harness.h"

static hp_proc *redis, *proxy;
static const hp_diff_opts norm = { .normalise = hp_norm_hello };

static const char *const types[] = {
    "string", "integer", "double", "bignum", "null", "array", "set", "map", "attrib", "push",
    "verbatim", "true", "false",
};

static void test_debug_protocol(void)
{
    char req[512], name[128];
    for (size_t i = 0; i < sizeof types / sizeof types[0]; i++) {
        snprintf(req, sizeof req, "*2\r\n$5\r\nHELLO\r\n$1\r\n3\r\nDEBUG PROTOCOL %s\r\nPING\r\n", types[i]);
        snprintf(name, sizeof name, "HELLO 3, DEBUG PROTOCOL %s", types[i]);
        const hp_step steps[] = { HP_SENDN(req, strlen(req)), HP_END };
        hp_side d, p;
        hp_diff_ex(redis, proxy, name, steps, &norm, &d, &p);
        ok(d.out.len >= 7 && memcmp(d.out.data + d.out.len - 7, "+PONG\r\n", 7) == 0 &&
           !HP_HAS(&d.out, "-ERR"), "%s: Redis answered it and the PING after it", name);
        hp_side_free(&d);
        hp_side_free(&p);
    }

    /* All of them in one pipeline, in RESP3 and then in RESP2. */
    hp_buf all = {0};
    hp_buf_puts(&all, "HELLO 3\r\n");
    for (size_t i = 0; i < sizeof types / sizeof types[0]; i++)
        hp_buf_printf(&all, "DEBUG PROTOCOL %s\r\n", types[i]);
    hp_buf_puts(&all, "HELLO 2\r\n");
    for (size_t i = 0; i < sizeof types / sizeof types[0]; i++)
        hp_buf_printf(&all, "DEBUG PROTOCOL %s\r\n", types[i]);
    hp_buf_puts(&all, "PING\r\n");
    const hp_step steps[] = { HP_SENDN(all.data, all.len), HP_END };
    hp_side d, p;
    hp_diff_ex(redis, proxy, "every DEBUG PROTOCOL type pipelined, RESP3 then RESP2", steps, &norm, &d, &p);
    ok(HP_HAS(&d.out, "|1\r\n") && HP_HAS(&d.out, ">2\r\n") &&
       HP_HAS(&d.out, "=29\r\ntxt:") && HP_HAS(&d.out, "(") &&
       HP_HAS(&d.out, "%3\r\n") && HP_HAS(&d.out, "~") &&
       HP_HAS(&d.out, "#t\r\n#f\r\n") && HP_HAS(&d.out, "_\r\n"),
       "RESP3 types: Redis sent attribute, push, verbatim, bignum, map, set, booleans, null");
    hp_side_free(&d);
    hp_side_free(&p);
    hp_buf_free(&all);
}

static void test_hello(void)
{
    static const hp_step s[] = {
        HP_SEND("HELLO\r\nHELLO 3 SETNAME app\r\nCLIENT GETNAME\r\nHELLO 4\r\nHELLO x\r\n"
                "HELLO 2\r\nHGETALL none\r\nHSET h a 1\r\nHGETALL h\r\nHELLO 3\r\nHGETALL h\r\n"
                "GET none\r\nZADD z 1 a\r\nZSCORE z a\r\nEXISTS h\r\nSMEMBERS none\r\n"),
        HP_END
    };
    hp_side d, p;
    hp_diff_ex(redis, proxy, "HELLO variants and RESP2/RESP3 switching", s, &norm, &d, &p);
    ok(HP_HAS(&d.out, "-NOPROTO") && HP_HAS(&d.out, "%1\r\n$1\r\na\r\n$1\r\n1\r\n") &&
       HP_HAS(&d.out, ",1\r\n"), "HELLO: Redis sent NOPROTO, a RESP3 map and a double");
    hp_side_free(&d);
    hp_side_free(&p);

    hp_diff_opts big = { .normalise = hp_norm_hello, .min_bytes = 100000 };
    static const hp_step docs[] = {
        HP_SEND("HELLO 3\r\nCOMMAND DOCS\r\nCOMMAND INFO get\r\nPING\r\n"), HP_WAIT_MATCH("+PONG\r\n"), HP_END
    };
    hp_diff(redis, proxy, "COMMAND DOCS in RESP3", docs, &big);
}

static void modify_tracked(const hp_proc *side, const hp_proc *r, void *arg)
{
    (void)r; (void)arg;
    ok(hp_cmd_ok(side, "SET tk changed"), "tracking: %s: another connection modifies the key", side->name);
}

static void test_tracking(void)
{
    static const hp_step s[] = {
        HP_SEND("HELLO 3\r\nCLIENT TRACKING ON\r\nSET tk v\r\nGET tk\r\n"),
        HP_WAIT_MATCH("$1\r\nv\r\n"),
        HP_CALL(modify_tracked, NULL),
        HP_WAIT_MATCH(">2\r\n"),
        HP_SEND("GET tk\r\nPING\r\n"),
        HP_END
    };
    hp_side d, p;
    hp_diff_ex(redis, proxy, "client-side caching: invalidation push", s, &norm, &d, &p);
    ok(HP_HAS(&d.out, ">2\r\n$10\r\ninvalidate\r\n*1\r\n$2\r\ntk\r\n"),
       "tracking: Redis pushed the invalidation");
    hp_side_free(&d);
    hp_side_free(&p);

    /* The RESP2 form: invalidations go to a redirect connection; here, BCAST on itself in
     * RESP3 with a prefix, and a key modified by this connection (NOLOOP off). */
    static const hp_step b[] = {
        HP_SEND("HELLO 3\r\nCLIENT TRACKING ON BCAST PREFIX bc:\r\nSET bc:1 a\r\nSET other b\r\n"
                "MSET bc:2 x bc:3 y\r\nPING\r\n"),
        HP_END
    };
    hp_diff(redis, proxy, "client-side caching: BCAST pushes interleaved with replies", b, &norm);
}

int main(void)
{
    plan_lazy();
    redis = hp_redis_start(NULL);
    proxy = hp_proxy_start(redis, NULL);

    test_debug_protocol();
    test_hello();
    test_tracking();

    is_int(hp_stop(proxy, 10000), 0, "the proxy exits 0 on SIGTERM");
    return 0;
}
