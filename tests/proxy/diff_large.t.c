/* Differential tests, volume: a 10,000-command pipeline (at once and in uneven pieces), a
 * 64 MiB value SET then GET, and many large replies pipelined (the client reads slowly while
 * the proxy must apply backpressure without losing or reordering bytes). */
#include <stdlib.h>
#include <string.h>

#include "lib/harness.h"

static hp_proc *redis, *proxy;

/* 10,000 commands: SET, GET and INCR over a few keys, so every reply shape repeats. */
static void build_pipeline(hp_buf *req)
{
    for (int i = 0; i < 10000; i++) {
        switch (i % 3) {
        case 0: hp_buf_cmd(req, "SET key:%d value-%d", i % 100, i); break;
        case 1: hp_buf_cmd(req, "GET key:%d", (i * 7) % 100); break;
        default: hp_buf_cmd(req, "INCR counter:%d", i % 10); break;
        }
    }
}

static void test_pipeline(void)
{
    hp_buf req = {0};
    build_pipeline(&req);
    hp_buf_cmd(&req, "PING");       /* marks the end of the replies */

    hp_side d, p;
    const hp_step once[] = { HP_SENDN(req.data, req.len), HP_WAIT_MATCH("+PONG\r\n"), HP_END };
    hp_diff_ex(redis, proxy, "10,000-command pipeline in one write", once, NULL, &d, &p);
    /* 3334 SETs answer +OK, 3333 INCRs an integer: check Redis answered every command. */
    is_int((long long)hp_buf_count(&d.out, "+OK\r\n"), 3334, "pipeline: Redis answered 3334 SETs");
    is_int((long long)hp_buf_count(&d.out, "\r\n:"), 3333, "pipeline: and 3333 INCRs");
    hp_side_free(&d);
    hp_side_free(&p);

    /* The same bytes in uneven pieces, cut inside frames, with short pauses. */
    hp_step *steps = calloc(2 * 400 + 8, sizeof *steps);
    size_t at = 0;
    int n = 0;
    srand(42);
    while (at < req.len && n < 2 * 399) {
        size_t piece = 1 + (size_t)rand() % 2000;
        if (piece > req.len - at) piece = req.len - at;
        steps[n++] = (hp_step)HP_SENDN(req.data + at, piece);
        if (n % 8 == 0) steps[n++] = (hp_step)HP_PAUSE(1 + rand() % 3);
        at += piece;
    }
    if (at < req.len) steps[n++] = (hp_step)HP_SENDN(req.data + at, req.len - at);
    steps[n++] = (hp_step)HP_WAIT_MATCH("+PONG\r\n");
    steps[n] = (hp_step)HP_END;
    hp_diff(redis, proxy, "10,000-command pipeline in uneven pieces", steps, NULL);
    free(steps);
    hp_buf_free(&req);
}

static void test_64mib(void)
{
    size_t len = 64u << 20;
    char *value = malloc(len);
    if (value == NULL) hp_bail("out of memory");
    for (size_t i = 0; i < len; i++) value[i] = (char)((i * 31 + i / 4099) % 251);
    value[0] = '\r';
    value[1] = '\n';
    value[len - 1] = '\0';
    hp_buf req = {0};
    hp_buf_cmd(&req, "SET big %b", value, len);
    hp_buf_cmd(&req, "STRLEN big");
    hp_buf_cmd(&req, "GET big");
    hp_buf_cmd(&req, "PING");
    hp_diff_opts o = { .min_bytes = len, .deadline_ms = 60000, .patience_ms = 10000, .step_ms = 50000 };
    const hp_step steps[] = { HP_SENDN(req.data, req.len), HP_WAIT_MATCH("+PONG\r\n"), HP_END };
    hp_side d, p;
    hp_diff_ex(redis, proxy, "64 MiB value SET then GET", steps, &o, &d, &p);
    hp_buf want = {0};
    hp_buf_printf(&want, "+OK\r\n:%zu\r\n$%zu\r\n", len, len);
    hp_buf_append(&want, value, len);
    hp_buf_puts(&want, "\r\n+PONG\r\n");
    ok(d.out.len == want.len && memcmp(d.out.data, want.data, want.len) == 0,
       "64 MiB: Redis returned the value intact");
    hp_buf_free(&want);
    hp_side_free(&d);
    hp_side_free(&p);
    hp_buf_free(&req);
    free(value);
}

static void test_big_replies(void)
{
    /* 1 MiB in a key, then 100 pipelined GETs of it and an MGET of it 20 times: 120 MiB of
     * replies for 3 KiB of requests. */
    size_t len = 1u << 20;
    char *value = malloc(len);
    if (value == NULL) hp_bail("out of memory");
    for (size_t i = 0; i < len; i++) value[i] = (char)('a' + i % 26);
    hp_buf req = {0};
    hp_buf_cmd(&req, "SET mb %b", value, len);
    for (int i = 0; i < 100; i++) hp_buf_cmd(&req, "GET mb");
    hp_buf_puts(&req, "MGET mb mb mb mb mb mb mb mb mb mb mb mb mb mb mb mb mb mb mb mb\r\n");
    hp_buf_puts(&req, "PING\r\n");
    hp_diff_opts o = { .min_bytes = 120 * len, .deadline_ms = 60000, .patience_ms = 10000,
                       .step_ms = 50000 };
    const hp_step steps[] = { HP_SENDN(req.data, req.len), HP_WAIT_MATCH("+PONG\r\n"), HP_END };
    hp_side d, p;
    hp_diff_ex(redis, proxy, "100 GETs and an MGET of a 1 MiB value, pipelined", steps, &o, &d, &p);
    ok(d.out.len > 120 * len && d.out.len >= 7 &&
       memcmp(d.out.data + d.out.len - 7, "+PONG\r\n", 7) == 0,
       "big replies: Redis sent them all (%zu bytes)", d.out.len);
    hp_side_free(&d);
    hp_side_free(&p);
    hp_buf_free(&req);
    free(value);
}

int main(void)
{
    plan_lazy();
    redis = hp_redis_start(NULL);
    proxy = hp_proxy_start(redis, NULL);

    test_pipeline();
    test_64mib();
    test_big_replies();

    is_int(hp_stop(proxy, 10000), 0, "the proxy exits 0 on SIGTERM");
    return 0;
}
