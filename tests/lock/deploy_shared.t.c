/* Ten workers share ONE connection, as an async client (an event loop multiplexing
 * coroutines over one pipelined connection) runs them: each worker has at most one request
 * in flight, the loop writes the requests of all ready workers in one write and hands the
 * replies back in order. So one worker's commands arrive with other workers' commands in
 * between, all from the same connection and the same application instance.
 *
 *   explicit   worker A "SETNX lock:s a", worker B "SETNX lock:s b", worker A "EXPIRE lock:s
 *              60" in one write (then 7 more workers' commands): A's EXPIRE answers :1 and
 *              A's lock keeps >= 55 s of TTL. (The old proxy merged B's failing SETNX with
 *              A's EXPIRE into one SET NX PX: A's EXPIRE answered 0, A kept the rule's TTL.)
 *              The same with A's SETNX in an earlier write and [B SETNX, A EXPIRE] in one.
 *   event loop 10 workers, 3 lock keys, 6 acquisitions each: SETNX; EXPIRE 60; PTTL; GET
 *              (1-3 times, "work"); DEL, with seeded random order within each write and
 *              random back-off after a failed SETNX.
 * Everything runs straight to Redis and through the proxy (rule "lock: enforce"): the
 * transcripts (each worker's command and reply, PTTL as ">=55s" or not) must be equal, and
 * through the proxy every EXPIRE after a won SETNX answers :1, every PTTL is >= 55 s, every
 * GET sees the worker's own token and every DEL answers :1. */
#include "lock/deploy_util.h"

#define WORKERS 10
#define KEYS 3
#define ACQS 6
#define MAX_TICKS 5000
#define MAX_BATCH 32

static hp_proc *redis, *proxy;
static char logpath[4096];

/* Appends one command given as space-separated words. */
static int append_split(redisContext *c, const char *cmd)
{
    const char *argv[8];
    size_t lens[8];
    int argc = 0;
    const char *p = cmd;
    while (*p && argc < 8) {
        while (*p == ' ') p++;
        if (!*p) break;
        const char *s = p;
        while (*p && *p != ' ') p++;
        argv[argc] = s;
        lens[argc++] = (size_t)(p - s);
    }
    return redisAppendCommandArgv(c, argc, argv, lens);
}

/* Sends the n commands in one write and reads the n replies. 0, or -1 on a connection error. */
static int batch(redisContext *c, int n, char cmds[][128], char replies[][128])
{
    for (int i = 0; i < n; i++)
        if (append_split(c, cmds[i]) != REDIS_OK) return -1;
    for (int i = 0; i < n; i++) {
        void *r = NULL;
        if (redisGetReply(c, &r) != REDIS_OK) {
            diag("shared connection: %s", c->errstr);
            return -1;
        }
        snprintf(replies[i], 128, "%s", lk_show(r));
        freeReplyObject(r);
    }
    return 0;
}

typedef struct side {
    hp_buf transcript;
    /* explicit cases */
    char e1[MAX_BATCH][128];
    int e1n;
    long long e1_pttl;
    char e1_value[128];
    char e2a[128], e2[2][128];
    long long e2_pttl;
    /* event loop */
    int ticks, commands, acquired, setnx_failed, expire_bad, ttl_bad, get_bad, del_bad, interleaved, errors;
} side;

typedef enum { W_ACQ, W_EXP, W_TTL, W_GET, W_REL, W_DONE } wstate;

typedef struct wk {
    int id;
    wstate st;
    int key, n, backoff, work;
    char val[32];
} wk;

static void explicit_cases(redisContext *c, side *sd)
{
    char cmds[MAX_BATCH][128], rep[MAX_BATCH][128];
    int n = 0;
    snprintf(cmds[n++], 128, "SETNX lock:s a");       /* worker A */
    snprintf(cmds[n++], 128, "SETNX lock:s b");       /* worker B, fails */
    snprintf(cmds[n++], 128, "EXPIRE lock:s 60");     /* worker A */
    snprintf(cmds[n++], 128, "GET lock:s");           /* worker C */
    snprintf(cmds[n++], 128, "SETNX lock:s c");       /* worker D, fails */
    for (int i = 5; i < WORKERS; i++) snprintf(cmds[n++], 128, "INCR ctr:%d", i);
    snprintf(cmds[n++], 128, "PTTL lock:s");          /* worker A, checks its lease */
    if (batch(c, n, cmds, rep) != 0) { sd->errors++; return; }
    sd->e1n = n;
    memcpy(sd->e1, rep, sizeof rep);
    for (int i = 0; i < n; i++) hp_buf_printf(&sd->transcript, "explicit1 %s -> %s\n", cmds[i],
                                               i == n - 1 ? (atoll(rep[i] + 1) >= 55000 ? ">=55s" : rep[i]) : rep[i]);
    sd->e1_pttl = hp_cmd_int(redis, "PTTL lock:s");
    snprintf(sd->e1_value, sizeof sd->e1_value, "%s", lk_pstr(redis, "GET lock:s"));

    /* A's SETNX in one write, then B's SETNX and A's EXPIRE together in the next. */
    snprintf(cmds[0], 128, "SETNX lock:s2 a");
    if (batch(c, 1, cmds, rep) != 0) { sd->errors++; return; }
    snprintf(sd->e2a, 128, "%s", rep[0]);
    snprintf(cmds[0], 128, "SETNX lock:s2 b");
    snprintf(cmds[1], 128, "EXPIRE lock:s2 60");
    if (batch(c, 2, cmds, rep) != 0) { sd->errors++; return; }
    snprintf(sd->e2[0], 128, "%s", rep[0]);
    snprintf(sd->e2[1], 128, "%s", rep[1]);
    hp_buf_printf(&sd->transcript, "explicit2 %s | %s %s\n", sd->e2a, sd->e2[0], sd->e2[1]);
    sd->e2_pttl = hp_cmd_int(redis, "PTTL lock:s2");
}

static void event_loop(redisContext *c, side *sd)
{
    unsigned seed = 20260902;
    wk w[WORKERS];
    for (int i = 0; i < WORKERS; i++) {
        w[i] = (wk){ .id = i, .st = W_ACQ, .key = rand_r(&seed) % KEYS };
        snprintf(w[i].val, sizeof w[i].val, "w%d:%d", i, 0);
    }
    int done = 0;
    while (done < WORKERS && sd->ticks < MAX_TICKS) {
        sd->ticks++;
        int order[WORKERS], n = 0;
        for (int i = 0; i < WORKERS; i++) {
            if (w[i].st == W_DONE) continue;
            if (w[i].backoff > 0) { w[i].backoff--; continue; }
            order[n++] = i;
        }
        for (int i = n - 1; i > 0; i--) {
            int j = rand_r(&seed) % (i + 1), t = order[i];
            order[i] = order[j];
            order[j] = t;
        }
        if (n == 0) continue;
        char cmds[MAX_BATCH][128], rep[MAX_BATCH][128];
        for (int i = 0; i < n; i++) {
            wk *x = &w[order[i]];
            switch (x->st) {
            case W_ACQ: snprintf(cmds[i], 128, "SETNX lock:s:%d %s", x->key, x->val); break;
            case W_EXP: snprintf(cmds[i], 128, "EXPIRE lock:s:%d 60", x->key); break;
            case W_TTL: snprintf(cmds[i], 128, "PTTL lock:s:%d", x->key); break;
            case W_GET: snprintf(cmds[i], 128, "GET lock:s:%d", x->key); break;
            case W_REL: snprintf(cmds[i], 128, "DEL lock:s:%d", x->key); break;
            default: break;
            }
        }
        if (batch(c, n, cmds, rep) != 0) { sd->errors++; return; }
        sd->commands += n;
        for (int i = 0; i < n; i++) {
            wk *x = &w[order[i]];
            const char *shown = rep[i];
            switch (x->st) {
            case W_ACQ:
                if (strcmp(rep[i], ":1") == 0) { sd->acquired++; x->st = W_EXP; }
                else if (strcmp(rep[i], ":0") == 0) { sd->setnx_failed++; x->backoff = rand_r(&seed) % 3; }
                else sd->errors++;
                /* A failing SETNX right before another worker's EXPIRE of the same key. */
                if (strcmp(rep[i], ":0") == 0 && i + 1 < n && w[order[i + 1]].st == W_EXP &&
                    w[order[i + 1]].key == x->key && order[i + 1] != order[i])
                    sd->interleaved++;
                break;
            case W_EXP:
                if (strcmp(rep[i], ":1") != 0) sd->expire_bad++;
                x->st = W_TTL;
                break;
            case W_TTL: {
                long long t = rep[i][0] == ':' ? atoll(rep[i] + 1) : -3;
                if (t < 55000 || t > 60000) sd->ttl_bad++;
                else shown = ">=55s";
                x->st = W_GET;
                x->work = 1 + rand_r(&seed) % 3;
                break;
            }
            case W_GET:
                if (strcmp(rep[i], x->val) != 0) sd->get_bad++;
                if (--x->work == 0) x->st = W_REL;
                break;
            case W_REL:
                if (strcmp(rep[i], ":1") != 0) sd->del_bad++;
                if (++x->n == ACQS) { x->st = W_DONE; done++; break; }
                x->key = rand_r(&seed) % KEYS;
                snprintf(x->val, sizeof x->val, "w%d:%d", x->id, x->n);
                x->st = W_ACQ;
                break;
            default: break;
            }
            hp_buf_printf(&sd->transcript, "tick %d w%d %s -> %s\n", sd->ticks, x->id, cmds[i], shown);
        }
    }
    if (done < WORKERS) { diag("the event loop did not finish in %d ticks", MAX_TICKS); sd->errors++; }
}

static void run(const hp_proc *t, side *sd)
{
    lk_flushall(redis);
    memset(sd, 0, sizeof *sd);
    hp_buf_append(&sd->transcript, "", 0);
    redisContext *c = lk_connect(t);
    explicit_cases(c, sd);
    event_loop(c, sd);
    redisFree(c);
    diag("%s: event loop: %d writes, %d commands, %d acquisitions, %d failed SETNX, %d failed SETNX right before "
         "another worker's EXPIRE of that key in the same write; bad: %d EXPIRE, %d PTTL, %d GET, %d DEL; %d errors",
         t == proxy ? "proxy" : "direct", sd->ticks, sd->commands, sd->acquired, sd->setnx_failed, sd->interleaved,
         sd->expire_bad, sd->ttl_bad, sd->get_bad, sd->del_bad, sd->errors);
}

/* The first line where the two transcripts differ. */
static void diag_first_difference(const hp_buf *a, const hp_buf *b)
{
    const char *p = a->data, *q = b->data;
    int line = 1;
    while (*p && *q) {
        const char *pe = strchr(p, '\n'), *qe = strchr(q, '\n');
        size_t pl = pe ? (size_t)(pe - p) : strlen(p), ql = qe ? (size_t)(qe - q) : strlen(q);
        if (pl != ql || memcmp(p, q, pl) != 0) {
            diag("transcripts differ at line %d:\n#   direct: %.*s\n#   proxy:  %.*s", line, (int)pl, p, (int)ql, q);
            return;
        }
        p += pl + (pe ? 1 : 0);
        q += ql + (qe ? 1 : 0);
        line++;
    }
    diag("transcripts differ in length at line %d", line);
}

int main(void)
{
    lk_require_real_proxy();
    plan_lazy();
    redis = hp_redis_start(NULL);
    proxy = lk_proxy_start(redis, "deploy_shared", "rule lock: enforce", logpath, sizeof logpath);

    static side d, p;
    run(redis, &d);
    run(proxy, &p);

    /* Redis alone: the reference. */
    is_int(d.errors, 0, "direct: no errors");
    is_string(d.e1[2], ":1", "direct: A's EXPIRE after B's failing SETNX answers :1");
    ok(d.e1_pttl >= 55000, "direct: A's lock keeps >= 55 s (PTTL %lld)", d.e1_pttl);

    is_int(p.errors, 0, "proxy: no errors");
    is_string(p.e1[0], ":1", "explicit, one write: A's SETNX acquires");
    is_string(p.e1[1], ":0", "explicit, one write: B's SETNX fails");
    is_string(p.e1[2], ":1", "explicit, one write: A's EXPIRE answers :1");
    ok(p.e1_pttl >= 55000 && p.e1_pttl <= 60000, "explicit, one write: A's lock keeps >= 55 s of TTL (PTTL %lld)",
       p.e1_pttl);
    is_string(p.e1_value, "a", "explicit, one write: the lock is A's");
    int same1 = p.e1n == d.e1n;
    for (int i = 0; same1 && i < d.e1n - 1; i++) same1 = strcmp(p.e1[i], d.e1[i]) == 0;
    ok(same1, "explicit, one write: all ten workers get Redis's replies");
    if (!same1)
        for (int i = 0; i < d.e1n; i++) diag("  reply %d: direct %s, proxy %s", i, d.e1[i], p.e1[i]);

    is_string(p.e2a, ":1", "explicit, two writes: A's SETNX acquires");
    is_string(p.e2[0], ":0", "explicit, two writes: B's SETNX fails");
    is_string(p.e2[1], ":1", "explicit, two writes: A's EXPIRE in the same write answers :1");
    ok(p.e2_pttl >= 55000 && p.e2_pttl <= 60000, "explicit, two writes: A's lock keeps >= 55 s of TTL (PTTL %lld)",
       p.e2_pttl);

    ok(d.interleaved > 0, "the event loop put a failing SETNX right before another worker's EXPIRE (%d times)",
       d.interleaved);
    is_int(p.expire_bad, 0, "event loop: proxy: every holder's EXPIRE answered :1");
    is_int(p.ttl_bad, 0, "event loop: proxy: every holder's PTTL after EXPIRE 60 is >= 55 s");
    is_int(p.get_bad, 0, "event loop: proxy: every holder sees its own token while it works");
    is_int(p.del_bad, 0, "event loop: proxy: every holder's DEL answered :1");
    int same = d.transcript.len == p.transcript.len && memcmp(d.transcript.data, p.transcript.data, d.transcript.len) == 0;
    ok(same, "the proxy's transcript equals Redis's (%d commands)", d.commands);
    if (!same) diag_first_difference(&d.transcript, &p.transcript);
    hp_buf_free(&d.transcript);
    hp_buf_free(&p.transcript);

    is_int(hp_stop(proxy, 10000), 0, "the proxy exits 0 on SIGTERM");
    return 0;
}
