/*
 * poolload: the pooled lock workload of `make bench`.
 *
 * What an application with a connection pool does (redis-py's ConnectionPool, Jedis pools):
 * THREADS worker threads share a pool of THREADS hiredis connections, each guarded by its own
 * mutex, and every command takes a free connection from the pool for that one command and
 * gives it back. So a lock is acquired on one connection and released on another: through
 * lockproxy with owner=auto (README.md, "Owners") the release must still be accepted, as the
 * same application instance's. tests/lock/deploy_pool.t.c checks the same as a test (with a
 * 1 ms hold and a back-off); this measures the throughput, with neither.
 *
 * Each worker loops until SECONDS are up:
 *     take a random free connection:  SET lock:pool:<k> <uuid> NX EX 10; give it back
 *     got it: take another random free connection (never the one of the SET: with every other
 *             thread retrying its SET, the one just given back is nearly always the only free
 *             one, and the release would hardly ever test another connection):
 *             DEL lock:pool:<k>; give it back; a cycle counts when DEL answers :1
 *             (dels_not_1 counts the other answers)
 *     missed (another thread holds it): counted as contended, retried at once (no sleep)
 * <k> is random below KEYS (default 1: all threads contend for one lock). A worker that holds
 * a lock always releases it, also when the time is up, so no lock is left behind; the time
 * reported runs until every worker has stopped, and every cycle finished in it counts.
 * Error replies are counted; a broken connection (no reply within 5 s, closed) stops the run.
 *
 * Usage: poolload HOST PORT [THREADS=8] [SECONDS=3] [KEYS=1]
 * Output: one line of key=value pairs on stdout, e.g.
 *   mode=pooled threads=8 seconds=3.000 cycles=12345 cycles_per_s=4115.0 contended=67890
 *   dels_not_1=0 errors=0 keys=1 other_conn_dels=12345
 * (other_conn_dels: the cycles whose DEL went on another connection than their SET: all of
 * them unless THREADS is 1.)
 * Exit status 0, or 1 when it could not connect or there were errors.
 *
 * Build: cc -O2 -pthread -o poolload poolload.c -lhiredis -lpthread
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

#include <hiredis/hiredis.h>

struct worker {
    pthread_t th;
    int id;
    uint64_t rng;
    unsigned long cycles, contended, dels_not_1, errors, other_conn;
};

static struct {
    int nthreads, nkeys;
    double seconds, deadline;
    redisContext **conn;
    pthread_mutex_t *mu;
    pthread_barrier_t start;
    atomic_int stop;                 /* a connection broke: every worker stops */
    pthread_mutex_t err_mu;
    unsigned long err_shown;
} g;

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* xorshift64*: per-thread random numbers (connection choice, key, uuid). */
static uint64_t next_rand(struct worker *w)
{
    w->rng ^= w->rng >> 12;
    w->rng ^= w->rng << 25;
    w->rng ^= w->rng >> 27;
    return w->rng * 2685821657736338717ULL;
}

/* A random (version 4) UUID, 36 characters and the NUL. */
static void make_uuid(struct worker *w, char out[37])
{
    uint64_t hi = next_rand(w), lo = next_rand(w);
    hi = (hi & ~0xF000ULL) | 0x4000ULL;                 /* version 4 */
    lo = (lo & ~(3ULL << 62)) | (2ULL << 62);           /* variant 10 */
    snprintf(out, 37, "%08x-%04x-%04x-%04x-%012llx", (unsigned)(hi >> 32),
             (unsigned)((hi >> 16) & 0xFFFF), (unsigned)(hi & 0xFFFF), (unsigned)(lo >> 48),
             (unsigned long long)(lo & 0xFFFFFFFFFFFFULL));
}

/* Takes a random free connection other than EXCLUDE (-1: any): from a random start, the first
 * whose mutex is free; when all were busy at the moment they were tried, waits for the random
 * one. */
static int pool_take(struct worker *w, int exclude)
{
    int n = g.nthreads, start;
    if (n == 1) exclude = -1;
    if (exclude < 0) {
        start = (int)((next_rand(w) >> 33) % (uint64_t)n);
    } else {
        start = (int)((next_rand(w) >> 33) % (uint64_t)(n - 1));
        if (start >= exclude) start++;
    }
    for (int j = 0; j < n; j++) {
        int i = (start + j) % n;
        if (i != exclude && pthread_mutex_trylock(&g.mu[i]) == 0) return i;
    }
    pthread_mutex_lock(&g.mu[start]);
    return start;
}

static void pool_give(int i) { pthread_mutex_unlock(&g.mu[i]); }

static void report_error(struct worker *w, const char *what, const redisReply *r, const redisContext *c)
{
    w->errors++;
    pthread_mutex_lock(&g.err_mu);
    if (++g.err_shown <= 5)
        fprintf(stderr, "poolload: thread %d: %s: %s\n", w->id, what,
                r == NULL ? (c->errstr[0] ? c->errstr : "no reply")
                          : r->type == REDIS_REPLY_ERROR ? r->str : "unexpected reply type");
    pthread_mutex_unlock(&g.err_mu);
}

/* One command on a connection taken from the pool (not EXCLUDE), given back at once; *used
 * says which one. NULL when the connection broke (the run is then stopped). */
static redisReply *pool_cmd(struct worker *w, int exclude, int *used, const char *what,
                            const char *fmt, const char *key, const char *val)
{
    int i = pool_take(w, exclude);
    redisReply *r = val ? redisCommand(g.conn[i], fmt, key, val) : redisCommand(g.conn[i], fmt, key);
    if (r == NULL) {
        report_error(w, what, NULL, g.conn[i]);
        atomic_store(&g.stop, 1);
    } else if (r->type == REDIS_REPLY_ERROR) {
        report_error(w, what, r, g.conn[i]);
    }
    pool_give(i);
    *used = i;
    return r;
}

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    char key[48], uuid[37];

    pthread_barrier_wait(&g.start);
    while (!atomic_load(&g.stop) && now() < g.deadline) {
        int got, set_conn, del_conn;
        redisReply *r;

        snprintf(key, sizeof key, "lock:pool:%u",
                 g.nkeys == 1 ? 0u : (unsigned)((next_rand(w) >> 33) % (uint64_t)g.nkeys));
        make_uuid(w, uuid);
        r = pool_cmd(w, -1, &set_conn, "SET NX EX", "SET %s %s NX EX 10", key, uuid);
        if (r == NULL) break;
        got = r->type == REDIS_REPLY_STATUS;    /* +OK; nil when another thread holds it */
        if (!got && r->type != REDIS_REPLY_ERROR) w->contended++;
        freeReplyObject(r);
        if (!got) continue;

        r = pool_cmd(w, set_conn, &del_conn, "DEL", "DEL %s", key, NULL);
        if (r == NULL) break;
        if (r->type == REDIS_REPLY_INTEGER && r->integer == 1) {
            w->cycles++;
            if (del_conn != set_conn) w->other_conn++;
        } else if (r->type != REDIS_REPLY_ERROR) {
            w->dels_not_1++;
        }
        freeReplyObject(r);
    }
    return NULL;
}

int main(int argc, char **argv)
{
    const char *host;
    int port;
    double t_start, t_stop;
    struct timeval tmo = {5, 0};
    struct worker *ws;
    unsigned long cycles = 0, contended = 0, dels_not_1 = 0, errors = 0, other_conn = 0;

    if (argc < 3 || argc > 6) {
        fprintf(stderr, "usage: poolload HOST PORT [THREADS=8] [SECONDS=3] [KEYS=1]\n");
        return 2;
    }
    host = argv[1];
    port = atoi(argv[2]);
    g.nthreads = argc > 3 ? atoi(argv[3]) : 8;
    g.seconds = argc > 4 ? atof(argv[4]) : 3.0;
    g.nkeys = argc > 5 ? atoi(argv[5]) : 1;
    if (port < 1 || port > 65535 || g.nthreads < 1 || g.nthreads > 4096 || g.seconds <= 0 ||
        g.nkeys < 1) {
        fprintf(stderr, "poolload: bad PORT, THREADS, SECONDS or KEYS\n");
        return 2;
    }

    g.conn = calloc((size_t)g.nthreads, sizeof *g.conn);
    g.mu = calloc((size_t)g.nthreads, sizeof *g.mu);
    ws = calloc((size_t)g.nthreads, sizeof *ws);
    if (g.conn == NULL || g.mu == NULL || ws == NULL) {
        fprintf(stderr, "poolload: out of memory\n");
        return 1;
    }
    pthread_mutex_init(&g.err_mu, NULL);
    for (int i = 0; i < g.nthreads; i++) {
        g.conn[i] = redisConnectWithTimeout(host, port, tmo);
        if (g.conn[i] == NULL || g.conn[i]->err) {
            fprintf(stderr, "poolload: connect %s:%d: %s\n", host, port,
                    g.conn[i] ? g.conn[i]->errstr : "out of memory");
            return 1;
        }
        redisSetTimeout(g.conn[i], tmo);
        pthread_mutex_init(&g.mu[i], NULL);
    }

    pthread_barrier_init(&g.start, NULL, (unsigned)g.nthreads + 1);
    for (int i = 0; i < g.nthreads; i++) {
        ws[i].id = i;
        ws[i].rng = (0x9E3779B97F4A7C15ULL * (uint64_t)(i + 1)) ^ (uint64_t)(now() * 1e9);
        if (ws[i].rng == 0) ws[i].rng = 1;
        int rc = pthread_create(&ws[i].th, NULL, worker_main, &ws[i]);
        if (rc != 0) {
            fprintf(stderr, "poolload: pthread_create: %s\n", strerror(rc));
            return 1;
        }
    }
    t_start = now();
    g.deadline = t_start + g.seconds;
    pthread_barrier_wait(&g.start);   /* the workers read the deadline after this */
    for (int i = 0; i < g.nthreads; i++) pthread_join(ws[i].th, NULL);
    t_stop = now();

    for (int i = 0; i < g.nthreads; i++) {
        cycles += ws[i].cycles;
        contended += ws[i].contended;
        dels_not_1 += ws[i].dels_not_1;
        errors += ws[i].errors;
        other_conn += ws[i].other_conn;
    }
    printf("mode=pooled threads=%d seconds=%.3f cycles=%lu cycles_per_s=%.1f contended=%lu "
           "dels_not_1=%lu errors=%lu keys=%d other_conn_dels=%lu\n",
           g.nthreads, t_stop - t_start, cycles, (double)cycles / (t_stop - t_start), contended,
           dels_not_1, errors, g.nkeys, other_conn);

    for (int i = 0; i < g.nthreads; i++) {
        redisFree(g.conn[i]);
        pthread_mutex_destroy(&g.mu[i]);
    }
    pthread_barrier_destroy(&g.start);
    pthread_mutex_destroy(&g.err_mu);
    free(g.conn);
    free(g.mu);
    free(ws);
    return errors ? 1 : 0;
}
