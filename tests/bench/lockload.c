/*
 * lockload: the lock workload of `make bench`.
 *
 * N clients on one epoll loop run acquire / expire / release cycles on K lock keys for a
 * fixed time and report the cycles completed per second. Each client has one request in
 * flight; replies are decoded with hiredis's redisReader. The loop is kept lean (one write
 * and one read per command, no per-command poll changes) so that the load generator, which
 * shares the machine's cores with Redis and the proxy, is not what limits the result.
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
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <hiredis/hiredis.h>

static const char release_lua[] =
    "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) "
    "else return 0 end";

enum mode { MODE_LEGACY, MODE_SAFE };
enum step { STEP_ACQUIRE, STEP_EXPIRE, STEP_RELEASE };

struct client {
    int fd;
    int id;
    redisReader *reader;
    enum step step;
    uint64_t rng;
    unsigned long seq;
    char key[32];
    char token[48];
    int done;
};

static struct {
    enum mode mode;
    int nclients, nkeys;
    double seconds;
    char sha[41];
    struct client *clients;
    int finished;
    int stopping;
    unsigned long cycles, contended, lost, errors, commands;
} g;

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

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
    close(c->fd);
}

/* Sends one command (hiredis format string); on failure the client is finished. */
static void send_cmd(struct client *c, enum step step, const char *fmt, ...)
{
    char *cmd = NULL;
    va_list ap;
    int len;
    size_t off = 0;

    va_start(ap, fmt);
    len = redisvFormatCommand(&cmd, fmt, ap);
    va_end(ap);
    if (len < 0) {
        fprintf(stderr, "lockload: out of memory\n");
        exit(1);
    }
    c->step = step;
    while (off < (size_t)len) {
        ssize_t n = write(c->fd, cmd + off, (size_t)len - off);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) {
            g.errors++;
            fprintf(stderr, "lockload: write: %s\n", strerror(errno));
            free(cmd);
            client_finish(c);
            return;
        }
        off += (size_t)n;
    }
    free(cmd);
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
        send_cmd(c, STEP_ACQUIRE, "SETNX %s %s", c->key, c->token);
    else
        send_cmd(c, STEP_ACQUIRE, "SET %s %s NX PX 10000", c->key, c->token);
}

/* Moves one client on by one reply. */
static void on_reply(struct client *c, redisReply *r)
{
    g.commands++;
    if (r->type == REDIS_REPLY_ERROR) {
        g.errors++;
        if (g.errors <= 5) fprintf(stderr, "lockload: step %d: %s\n", (int)c->step, r->str);
        /* After a failed acquire start over; otherwise still try to release. */
        if (c->step == STEP_ACQUIRE || c->step == STEP_RELEASE) {
            start_cycle(c);
            return;
        }
    }
    switch (c->step) {
    case STEP_ACQUIRE: {
        int got = g.mode == MODE_LEGACY ? (r->type == REDIS_REPLY_INTEGER && r->integer == 1)
                                        : r->type == REDIS_REPLY_STATUS; /* +OK, nil if held */
        if (!got) {
            g.contended++;
            start_cycle(c);
        } else if (g.mode == MODE_LEGACY) {
            send_cmd(c, STEP_EXPIRE, "EXPIRE %s 10", c->key);
        } else {
            send_cmd(c, STEP_RELEASE, "EVALSHA %s 1 %s %s", g.sha, c->key, c->token);
        }
        break;
    }
    case STEP_EXPIRE:
        send_cmd(c, STEP_RELEASE, "DEL %s", c->key);
        break;
    case STEP_RELEASE:
        if (r->type == REDIS_REPLY_INTEGER && r->integer == 1) {
            if (!g.stopping) g.cycles++;
        } else if (r->type != REDIS_REPLY_ERROR) {
            g.lost++;
        }
        start_cycle(c);
        break;
    }
}

static void on_readable(struct client *c)
{
    char buf[16384];
    ssize_t n = read(c->fd, buf, sizeof buf);
    void *reply;

    if (n < 0 && errno == EINTR) return;
    if (n <= 0) {
        g.errors++;
        fprintf(stderr, "lockload: client %d: connection %s\n", c->id,
                n == 0 ? "closed by the server" : strerror(errno));
        client_finish(c);
        return;
    }
    if (redisReaderFeed(c->reader, buf, (size_t)n) != REDIS_OK) goto bad;
    for (;;) {
        if (redisReaderGetReply(c->reader, &reply) != REDIS_OK) goto bad;
        if (reply == NULL) break;
        on_reply(c, reply);
        freeReplyObject(reply);
        if (c->done) break;
    }
    return;
bad:
    g.errors++;
    fprintf(stderr, "lockload: client %d: bad reply: %s\n", c->id, c->reader->errstr);
    client_finish(c);
}

static int connect_to(const char *host, int port)
{
    struct sockaddr_in sa;
    int one = 1;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_port = htons((unsigned short)port);
    if (fd < 0 || inet_pton(AF_INET, host, &sa.sin_addr) != 1 ||
        connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
        fprintf(stderr, "lockload: connect %s:%d: %s\n", host, port, strerror(errno));
        exit(1);
    }
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return fd;
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
    int port, ep;
    double t_start, t_stop = 0, deadline;
    struct epoll_event evs[64];

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

    ep = epoll_create1(EPOLL_CLOEXEC);
    g.clients = calloc((size_t)g.nclients, sizeof *g.clients);
    if (ep < 0 || g.clients == NULL) return 1;
    for (int i = 0; i < g.nclients; i++) {
        struct client *c = &g.clients[i];
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
        c->id = i;
        c->rng = (0x9E3779B97F4A7C15ULL * (uint64_t)(i + 1)) ^ (uint64_t)(now() * 1e9);
        if (c->rng == 0) c->rng = 1;
        c->fd = connect_to(host, port);
        c->reader = redisReaderCreate();
        if (c->reader == NULL || epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev) != 0) return 1;
    }

    t_start = now();
    deadline = t_start + g.seconds;
    for (int i = 0; i < g.nclients; i++) start_cycle(&g.clients[i]);
    while (g.finished < g.nclients) {
        int timeout = -1, n;
        if (!g.stopping) {
            double left = deadline - now();
            if (left <= 0) {
                g.stopping = 1;
                t_stop = now();
                /* Idle clients (none in flight) cannot exist: each always has one request. */
                continue;
            }
            timeout = (int)(left * 1000.0) + 1;
        }
        n = epoll_wait(ep, evs, 64, timeout);
        if (n < 0 && errno != EINTR) {
            perror("lockload: epoll_wait");
            return 1;
        }
        for (int i = 0; i < n; i++) {
            struct client *c = evs[i].data.ptr;
            if (!c->done) on_readable(c);
        }
    }
    if (t_stop == 0) t_stop = now();

    printf("mode=%s clients=%d keys=%d seconds=%.3f cycles=%lu cycles_per_s=%.1f "
           "contended=%lu lost=%lu errors=%lu commands=%lu\n",
           g.mode == MODE_LEGACY ? "legacy" : "safe", g.nclients, g.nkeys, t_stop - t_start,
           g.cycles, (double)g.cycles / (t_stop - t_start), g.contended, g.lost, g.errors,
           g.commands);
    for (int i = 0; i < g.nclients; i++) redisReaderFree(g.clients[i].reader);
    free(g.clients);
    close(ep);
    return g.errors ? 1 : 0;
}
