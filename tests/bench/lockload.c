/*
 * lockload: the lock workload of `make bench` (SPEC section 9).
 *
 * N clients on one libuv loop (hiredis async) run acquire / expire / release cycles on
 * K lock keys for a fixed time and report the cycles completed per second.
 *
 *   legacy  the unsafe pattern an old application sends (through lockproxy in enforce mode
 *           it is rewritten):  SETNX lock:<k> <token>; EXPIRE lock:<k> 10; DEL lock:<k>
 *   safe    the same work written safely by hand, straight to Redis:
 *           SET lock:<k> <token> NX PX 10000; EVALSHA <compare-and-delete> 1 lock:<k> <token>
 *
 * A cycle counts when the lock was taken and the release deleted it. An acquire that finds
 * the key held (another client has it) is counted as contended and the client moves on to
 * another random key. When the time is up every client finishes the cycle it is in, so no
 * lock is left behind, and then disconnects.
 *
 * Usage: lockload HOST PORT legacy|safe [CLIENTS] [KEYS] [SECONDS]
 * Output: one line of key=value pairs on stdout, e.g.
 *   mode=safe clients=50 keys=1000 seconds=3.000 cycles=123456 cycles_per_s=41152.0 ...
 * Exit status 0, or 1 when it could not connect or a reply was an error.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <hiredis/adapters/libuv.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include <uv.h>

static const char release_lua[] =
    "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) "
    "else return 0 end";

enum mode { MODE_LEGACY, MODE_SAFE };

struct client {
    redisAsyncContext *ac;
    int id;
    uint64_t rng;
    unsigned long seq;
    char key[32];
    char token[48];
    int connected;
    int done;
};

static struct {
    uv_loop_t *loop;
    enum mode mode;
    int nclients, nkeys;
    double seconds;
    char sha[41];
    struct client *clients;
    int connected, finished;
    int running, stopping;
    uint64_t t_start, t_stop;
    unsigned long cycles, contended, lost, errors, commands;
    uv_timer_t timer;
} g;

static void start_cycle(struct client *c);

/* xorshift64*: a cheap per-client random key choice. */
static uint32_t next_rand(struct client *c)
{
    c->rng ^= c->rng >> 12;
    c->rng ^= c->rng << 25;
    c->rng ^= c->rng >> 27;
    return (uint32_t)((c->rng * 2685821657736338717ULL) >> 32);
}

static void client_finish(struct client *c)
{
    if (c->done) return;
    c->done = 1;
    g.finished++;
    redisAsyncDisconnect(c->ac);
}

/* Counts an error reply (or a lost connection) and tells whether the client may go on. */
static int reply_ok(struct client *c, redisReply *r, const char *what)
{
    if (r == NULL) {
        g.errors++;
        if (g.errors <= 5) fprintf(stderr, "lockload: %s: no reply (connection lost)\n", what);
        c->done = 1;
        g.finished++;
        return 0;
    }
    if (r->type == REDIS_REPLY_ERROR) {
        g.errors++;
        if (g.errors <= 5) fprintf(stderr, "lockload: %s: %s\n", what, r->str);
        return 0;
    }
    return 1;
}

static void on_release(redisAsyncContext *ac, void *reply, void *priv)
{
    struct client *c = priv;
    redisReply *r = reply;
    g.commands++;
    if (!reply_ok(c, r, "release")) {
        if (!c->done) start_cycle(c);
        return;
    }
    if (r->type == REDIS_REPLY_INTEGER && r->integer == 1) {
        if (!g.stopping) g.cycles++;
    } else {
        g.lost++;
    }
    start_cycle(c);
}

static void on_expire(redisAsyncContext *ac, void *reply, void *priv)
{
    struct client *c = priv;
    g.commands++;
    if (!reply_ok(c, reply, "expire") && c->done) return;
    redisAsyncCommand(c->ac, on_release, c, "DEL %s", c->key);
}

static void on_acquire(redisAsyncContext *ac, void *reply, void *priv)
{
    struct client *c = priv;
    redisReply *r = reply;
    int got;
    g.commands++;
    if (!reply_ok(c, r, "acquire")) {
        if (!c->done) start_cycle(c);
        return;
    }
    if (g.mode == MODE_LEGACY)
        got = r->type == REDIS_REPLY_INTEGER && r->integer == 1;
    else
        got = r->type == REDIS_REPLY_STATUS;   /* +OK; nil when the key is held */
    if (!got) {
        g.contended++;
        start_cycle(c);
        return;
    }
    if (g.mode == MODE_LEGACY)
        redisAsyncCommand(c->ac, on_expire, c, "EXPIRE %s 10", c->key);
    else
        redisAsyncCommand(c->ac, on_release, c, "EVALSHA %s 1 %s %s", g.sha, c->key, c->token);
}

static void start_cycle(struct client *c)
{
    if (g.stopping) {
        client_finish(c);
        return;
    }
    snprintf(c->key, sizeof c->key, "lock:%u", next_rand(c) % (uint32_t)g.nkeys);
    snprintf(c->token, sizeof c->token, "c%d-%lu", c->id, ++c->seq);
    if (g.mode == MODE_LEGACY)
        redisAsyncCommand(c->ac, on_acquire, c, "SETNX %s %s", c->key, c->token);
    else
        redisAsyncCommand(c->ac, on_acquire, c, "SET %s %s NX PX 10000", c->key, c->token);
}

static void on_timer(uv_timer_t *t)
{
    g.stopping = 1;
    g.t_stop = uv_hrtime();
    uv_close((uv_handle_t *)t, NULL);
}

static void start_all(void)
{
    g.running = 1;
    g.t_start = uv_hrtime();
    uv_timer_init(g.loop, &g.timer);
    uv_timer_start(&g.timer, on_timer, (uint64_t)(g.seconds * 1000.0), 0);
    for (int i = 0; i < g.nclients; i++) start_cycle(&g.clients[i]);
}

static void on_connect(const redisAsyncContext *ac, int status)
{
    struct client *c = ac->data;
    if (status != REDIS_OK) {
        fprintf(stderr, "lockload: connect: %s\n", ac->errstr);
        exit(1);
    }
    c->connected = 1;
    if (++g.connected == g.nclients) start_all();
}

static void on_disconnect(const redisAsyncContext *ac, int status)
{
    (void)ac;
    (void)status;
}

/* Loads the release script once, over a plain blocking connection. */
static int load_script(const char *host, int port)
{
    redisContext *rc = redisConnect(host, port);
    redisReply *r;
    if (rc == NULL || rc->err) {
        fprintf(stderr, "lockload: connect %s:%d: %s\n", host, port, rc ? rc->errstr : "oom");
        return -1;
    }
    r = redisCommand(rc, "SCRIPT LOAD %s", release_lua);
    if (r == NULL || r->type != REDIS_REPLY_STRING || r->len != 40) {
        fprintf(stderr, "lockload: SCRIPT LOAD failed: %s\n",
                r && r->type == REDIS_REPLY_ERROR ? r->str : "unexpected reply");
        if (r) freeReplyObject(r);
        redisFree(rc);
        return -1;
    }
    memcpy(g.sha, r->str, 40);
    g.sha[40] = '\0';
    freeReplyObject(r);
    redisFree(rc);
    return 0;
}

int main(int argc, char **argv)
{
    const char *host;
    int port;
    double elapsed;

    if (argc < 4) {
        fprintf(stderr, "usage: lockload HOST PORT legacy|safe [CLIENTS] [KEYS] [SECONDS]\n");
        return 2;
    }
    host = argv[1];
    port = atoi(argv[2]);
    if (strcmp(argv[3], "legacy") == 0) g.mode = MODE_LEGACY;
    else if (strcmp(argv[3], "safe") == 0) g.mode = MODE_SAFE;
    else {
        fprintf(stderr, "lockload: mode must be legacy or safe\n");
        return 2;
    }
    g.nclients = argc > 4 ? atoi(argv[4]) : 50;
    g.nkeys = argc > 5 ? atoi(argv[5]) : 1000;
    g.seconds = argc > 6 ? atof(argv[6]) : 3.0;
    if (g.nclients < 1 || g.nkeys < 1 || g.seconds <= 0) {
        fprintf(stderr, "lockload: bad CLIENTS, KEYS or SECONDS\n");
        return 2;
    }
    if (g.mode == MODE_SAFE && load_script(host, port) != 0) return 1;

    g.loop = uv_default_loop();
    g.clients = calloc((size_t)g.nclients, sizeof *g.clients);
    if (g.clients == NULL) return 1;
    for (int i = 0; i < g.nclients; i++) {
        struct client *c = &g.clients[i];
        c->id = i;
        c->rng = 0x9E3779B97F4A7C15ULL * (uint64_t)(i + 1) ^ (uint64_t)uv_hrtime();
        if (c->rng == 0) c->rng = 1;
        c->ac = redisAsyncConnect(host, port);
        if (c->ac == NULL || c->ac->err) {
            fprintf(stderr, "lockload: connect %s:%d: %s\n", host, port,
                    c->ac ? c->ac->errstr : "oom");
            return 1;
        }
        c->ac->data = c;
        redisLibuvAttach(c->ac, g.loop);
        redisAsyncSetConnectCallback(c->ac, on_connect);
        redisAsyncSetDisconnectCallback(c->ac, on_disconnect);
    }
    uv_run(g.loop, UV_RUN_DEFAULT);

    elapsed = (double)(g.t_stop - g.t_start) / 1e9;
    if (elapsed <= 0) elapsed = g.seconds;
    printf("mode=%s clients=%d keys=%d seconds=%.3f cycles=%lu cycles_per_s=%.1f "
           "contended=%lu lost=%lu errors=%lu commands=%lu\n",
           g.mode == MODE_LEGACY ? "legacy" : "safe", g.nclients, g.nkeys, elapsed, g.cycles,
           (double)g.cycles / elapsed, g.contended, g.lost, g.errors, g.commands);
    free(g.clients);
    return g.errors ? 1 : 0;
}
