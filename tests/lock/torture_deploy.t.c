/* Lock torture as deployments run it (README "Owners", "Renewal", "Deployments"): application
 * instances with connection pools, spread over TWO proxies in front of one Redis (both with
 * rule "lock: enforce ttl=1s"), one proxy restarted in the middle of the run, instances
 * killed.
 *
 *   instances   6 processes, each its own client host: its connections come from its own
 *               loopback address 127.0.0.(11+i), so under owner=auto each is one owner.
 *   pool        each instance has 4 connections, 2 to proxy A and 2 to proxy B; every command
 *               goes on a random one (held for that one command), so a lock is acquired,
 *               given its TTL and released on any connection, through either proxy.
 *   workers     2 threads per instance share the pool. Each round a worker picks one of its
 *               keys, a fresh UUID token and a pattern:
 *                 SETNX k tok                      (renewed by the proxy)
 *                 SET k tok NX PX 300..1000        (the client's TTL)
 *                 SETNX k tok; EXPIRE k 1          (the client's TTL from the EXPIRE)
 *               holds 5..25 ms, or overruns 1.3 s (past the TTL) one round in six, and
 *               releases with DEL. The two threads of an instance use disjoint keys (thread t
 *               uses lock:td:<2t> and lock:td:<2t+1>): the README says what owner=auto cannot
 *               tell apart, a late thread of an instance releasing on another pooled
 *               connection after another thread of the same instance took the lock again, so
 *               every key is contended by the 6 instances, never within one.
 *   faults      proxy B is restarted (SIGKILL, start) at 45% of the run: its connections drop,
 *               the workers reconnect the pool slots, the locks acquired through B are no
 *               longer renewed. Instance 1 kills itself (SIGKILL) right after its first SETNX
 *               acquisition past 25% of the run (before its EXPIRE); instance 4 is SIGKILLed
 *               by the test at 65%.
 *
 * Accounting, exact, on a control connection per worker straight to Redis, under a
 * process-shared mutex per key that every acquire and every release holds (so between the
 * check and the command only an expiry can change the key):
 *   foreign        a DEL answered :1 while GET right before showed another worker's token
 *                  (or nothing): the DEL removed someone else's lock;
 *   refused legit  GET right before showed the worker's own token with PTTL > 0, the DEL
 *                  answered :0, and GET right after still shows the worker's own token (the
 *                  lock was live and kept: a legitimate release refused);
 *   untimed        a sampler reads PTTL of every lock key and every __lockproxy:* key every
 *                  50 ms during the run: no sighting of a key without a TTL;
 *   end            every worker ends with a SETNX of a key of its own (lock:tdf:<i>:<t>) that
 *                  it never releases, and its instance exits holding it (as in a crash);
 *                  after the last instance exited: no lock key without a TTL, and every lock
 *                  and record at most ttl left by Redis's clock at that moment, then gone; histories keep a TTL.
 *   refused EXPIRE a holder's EXPIRE answered :0 while GET right after shows its own token.
 * A release or EXPIRE on a pooled connection that once held a lease of the same key which
 * ended by its TTL is refused as late by design (README "Owners": the limit of owner=auto
 * that keeps one-connection-per-worker hosts safe; lease_faults.t (e) shows it alone): such
 * refusals are counted apart, every other refusal of a live holder is a failure.
 * The same workload runs first straight to Redis (shorter, no proxy to restart) and shows the
 * failures the proxy is there to prevent (stuck locks, foreign deletions). Workers exit with
 * _exit() (the harness's exit handlers belong to the test). */
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/random.h>
#include <sys/wait.h>

#include "lock/deploy_util.h"

#define INST 6
#define THREADS 2
#define POOL 4
#define KEYS 4
#define TTL_MS 1000
#define ACQUIRE_MS 1500
#define OVERRUN_MS 1300
#define RUN_PROXY_MS 12000
#define RUN_DIRECT_MS 5000
#define SELF_KILL_INST 1
#define KILLED_INST 4

enum { PAT_SETNX, PAT_SETPX, PAT_SETNX_EXPIRE, NPAT };
static const char *pat_name[] = { "SETNX", "SET NX PX", "SETNX+EXPIRE" };

typedef struct key_state {
    pthread_mutex_t mu;
} key_state;

typedef struct shared {
    key_state keys[KEYS];
    atomic_int acquired[NPAT], released, overruns, gave_up, expire_not_1, expire_refused, final_holds;
    atomic_int foreign, refused_legit, expired_before_del, late_refused, nothing_to_del, refused_late_by_design;
    atomic_int interrupted, reconnects, errors, self_killed, del_lost;
    atomic_int detail_claimed_foreign, detail_claimed_refused, detail_claimed_error, detail_claimed_expire;
    char foreign_detail[512], refused_detail[512], error_detail[512], expire_detail[512];
} shared;

static shared *sh;
static hp_proc *redis, *pa, *pb;
static char log_a[4096], log_b[4096];

/* ---- one instance ---- */

typedef struct instance {
    int id;
    char ip[16];
    const hp_proc *target[POOL];
    redisContext *conn[POOL];
    pthread_mutex_t mu[POOL];
    long long start_ms, run_ms;
    int self_kill;
    int final_hold;
} instance;

typedef struct worker {
    instance *in;
    int thread;
    redisContext *ctl;           /* straight to Redis */
    unsigned seed;
    int stale[4];                /* a lease of that key of this thread ended by its TTL */
} worker;

static void note(atomic_int *claimed, char *buf, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void note(atomic_int *claimed, char *buf, const char *fmt, ...)
{
    if (atomic_fetch_add(claimed, 1) != 0) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, 512, fmt, ap);
    va_end(ap);
}

static void uuid(char out[37])
{
    unsigned char b[16];
    if (getrandom(b, sizeof b, 0) != (ssize_t)sizeof b)
        for (size_t i = 0; i < sizeof b; i++) b[i] = (unsigned char)random();
    b[6] = (unsigned char)((b[6] & 0x0f) | 0x40);
    b[8] = (unsigned char)((b[8] & 0x3f) | 0x80);
    snprintf(out, 37, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", b[0], b[1], b[2], b[3],
             b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]);
}

static void key_lock(key_state *k)
{
    if (pthread_mutex_lock(&k->mu) == EOWNERDEAD) pthread_mutex_consistent(&k->mu);
}

static void key_unlock(key_state *k) { pthread_mutex_unlock(&k->mu); }

/* (Re)connects pool slot i from the instance's address; gives up after 10 s. */
static int slot_connect(instance *in, int i)
{
    long long until = hp_now_ms() + 10000;
    while (hp_now_ms() < until) {
        redisContext *c = dp_connect_from(in->target[i], in->ip);
        if (c != NULL) {
            in->conn[i] = c;
            return 0;
        }
        hp_sleep_ms(20);
    }
    return -1;
}

/* One command on a random pooled connection. Returns the reply, or NULL when the connection
 * was lost (it is reconnected for the next command); *slot says which one was used. */
static redisReply *pool_cmd(worker *w, int *slot, const char *fmt, ...)
{
    instance *in = w->in;
    int i = rand_r(&w->seed) % POOL;
    *slot = i;
    pthread_mutex_lock(&in->mu[i]);
    redisReply *r = NULL;
    if (in->conn[i] != NULL) {
        va_list ap;
        va_start(ap, fmt);
        r = redisvCommand(in->conn[i], fmt, ap);
        va_end(ap);
    }
    if (r == NULL) {
        atomic_fetch_add(&sh->interrupted, 1);
        redisFree(in->conn[i]);
        in->conn[i] = NULL;
        if (slot_connect(in, i) == 0) atomic_fetch_add(&sh->reconnects, 1);
    } else if (r->type == REDIS_REPLY_ERROR) {
        atomic_fetch_add(&sh->errors, 1);
        note(&sh->detail_claimed_error, sh->error_detail, "instance %d slot %d: \"%s\": -%s", in->id, i, fmt, r->str);
    }
    pthread_mutex_unlock(&in->mu[i]);
    return r;
}

/* GET and PTTL of key on the control connection. val gets the value ("" when none). */
static void peek(worker *w, const char *key, char val[64], long long *pttl)
{
    redisAppendCommand(w->ctl, "GET %s", key);
    redisAppendCommand(w->ctl, "PTTL %s", key);
    redisReply *g = NULL, *p = NULL;
    if (redisGetReply(w->ctl, (void **)&g) != REDIS_OK || redisGetReply(w->ctl, (void **)&p) != REDIS_OK) {
        atomic_fetch_add(&sh->errors, 1);
        note(&sh->detail_claimed_error, sh->error_detail, "control connection: %s", w->ctl->errstr);
        _exit(1);
    }
    val[0] = '\0';
    if (g != NULL && g->type == REDIS_REPLY_STRING) snprintf(val, 64, "%s", g->str);
    *pttl = p != NULL && p->type == REDIS_REPLY_INTEGER ? p->integer : LLONG_MIN;
    freeReplyObject(g);
    freeReplyObject(p);
}

static const char *slot_proxy(const instance *in, int slot)
{
    return in->target[slot] == pa ? "A" : in->target[slot] == pb ? "B" : "redis";
}

static void *worker_main(void *arg)
{
    worker *w = arg;
    instance *in = w->in;
    w->ctl = hp_redis_connect(redis);
    if (w->ctl == NULL) { atomic_fetch_add(&sh->errors, 1); _exit(1); }
    for (long round = 0; hp_now_ms() - in->start_ms < in->run_ms; round++) {
        int ki = w->thread * 2 + rand_r(&w->seed) % 2;
        key_state *k = &sh->keys[ki];
        char key[32], tok[37], val[64];
        snprintf(key, sizeof key, "lock:td:%d", ki);
        uuid(tok);
        int pat = rand_r(&w->seed) % NPAT;
        int px = 300 + rand_r(&w->seed) % 701;

        /* Acquire. */
        long long until = hp_now_ms() + ACQUIRE_MS;
        int got = 0, aslot = -1;
        while (!got && hp_now_ms() < until) {
            key_lock(k);
            redisReply *r = pat == PAT_SETPX ? pool_cmd(w, &aslot, "SET %s %s NX PX %d", key, tok, px)
                                             : pool_cmd(w, &aslot, "SETNX %s %s", key, tok);
            if (r == NULL) {
                /* Interrupted: whether it was taken, Redis tells (give a command the dead
                 * proxy had already passed on time to run). */
                hp_sleep_ms(50);
                long long pt;
                peek(w, key, val, &pt);
                got = strcmp(val, tok) == 0;
            } else {
                got = pat == PAT_SETPX ? r->type == REDIS_REPLY_STATUS
                                       : r->type == REDIS_REPLY_INTEGER && r->integer == 1;
            }
            key_unlock(k);
            freeReplyObject(r);
            if (!got) hp_sleep_ms(5 + rand_r(&w->seed) % 10);
        }
        if (!got) { atomic_fetch_add(&sh->gave_up, 1); continue; }
        atomic_fetch_add(&sh->acquired[pat], 1);
        if (in->self_kill && pat != PAT_SETPX && hp_now_ms() - in->start_ms > in->run_ms / 4) {
            atomic_fetch_add(&sh->self_killed, 1);
            raise(SIGKILL);   /* the whole instance, holding the lock, before its EXPIRE */
        }
        if (pat == PAT_SETNX_EXPIRE) {
            int es;
            redisReply *r = pool_cmd(w, &es, "EXPIRE %s 1", key);
            if (r != NULL && r->type == REDIS_REPLY_INTEGER && r->integer == 0) {
                long long pt;
                peek(w, key, val, &pt);
                if (strcmp(val, tok) == 0 && w->stale[ki]) {
                    atomic_fetch_add(&sh->refused_late_by_design, 1);
                } else if (strcmp(val, tok) == 0) {
                    /* The holder's own EXPIRE refused while its lock is live. */
                    atomic_fetch_add(&sh->expire_refused, 1);
                    note(&sh->detail_claimed_expire, sh->expire_detail,
                         "instance %d (%s) thread %d %s: SETNX acquired on slot %d (proxy %s), EXPIRE %s 1 on slot %d "
                         "(proxy %s) answered :0 while the lock held its token (PTTL %lld after it)", in->id, in->ip,
                         w->thread, key, aslot, slot_proxy(in, aslot), key, es, slot_proxy(in, es), pt);
                }
            }
            if (r == NULL || r->type != REDIS_REPLY_INTEGER || r->integer != 1) atomic_fetch_add(&sh->expire_not_1, 1);
            freeReplyObject(r);
        }

        /* Hold. */
        int overrun = rand_r(&w->seed) % 6 == 0;
        if (overrun) atomic_fetch_add(&sh->overruns, 1);
        hp_sleep_ms(overrun ? OVERRUN_MS : 5 + rand_r(&w->seed) % 21);

        /* Release. */
        key_lock(k);
        long long pre_pttl, post_pttl;
        char pre[64];
        peek(w, key, pre, &pre_pttl);
        int dslot;
        redisReply *r = pool_cmd(w, &dslot, "DEL %s", key);
        long long d = r != NULL && r->type == REDIS_REPLY_INTEGER ? r->integer : -1;
        int lost = r == NULL;
        freeReplyObject(r);
        if (lost) hp_sleep_ms(50);
        int mine = strcmp(pre, tok) == 0;
        if (!mine && !lost) w->stale[ki] = 1;   /* this lease ended by its TTL, unreleased */
        char post[64];
        peek(w, key, post, &post_pttl);
        if (lost) {
            /* An interrupted DEL: it deleted when the key went while it had time left. */
            if (pre[0] != '\0' && post[0] == '\0' && pre_pttl > 300) d = 1;
            else d = 0;
        }
        if (lost && d == 0) {
            atomic_fetch_add(&sh->del_lost, 1);   /* never reached Redis: not a refusal */
        } else if (d == 1 && !mine) {
            atomic_fetch_add(&sh->foreign, 1);
            note(&sh->detail_claimed_foreign, sh->foreign_detail,
                 "instance %d thread %d %s: %s acquired on slot %d (%s), DEL on slot %d (%s) answered :1 but the lock "
                 "held %s (PTTL %lld), not its token %s", in->id, w->thread, key, pat_name[pat], aslot,
                 slot_proxy(in, aslot), dslot, slot_proxy(in, dslot), pre[0] ? pre : "nothing", pre_pttl, tok);
        } else if (d == 1) {
            atomic_fetch_add(&sh->released, 1);
        } else if (mine && (pre_pttl > 0 || pre_pttl == -1)) {
            if (strcmp(post, tok) == 0 && w->stale[ki]) {
                /* A pooled connection that once held a lease of this key that ended by its
                 * TTL is late for the key: the documented limit of owner=auto. */
                atomic_fetch_add(&sh->refused_late_by_design, 1);
            } else if (strcmp(post, tok) == 0) {
                atomic_fetch_add(&sh->refused_legit, 1);
                redisReply *rec = redisCommand(w->ctl, "HMGET __lockproxy:{%s}:r:%s owner id via", key, key);
                redisReply *hist = redisCommand(w->ctl, "HMGET __lockproxy:{%s}:h:%s a r e", key, key);
                note(&sh->detail_claimed_refused, sh->refused_detail,
                     "instance %d (%s) thread %d %s: %s acquired on slot %d (proxy %s), DEL on slot %d (proxy %s) "
                     "answered :%lld while the lock held its token with PTTL %lld; after it: still its token, PTTL "
                     "%lld; record [owner,id,via] %s, history [a,r,e] %s", in->id, in->ip, w->thread, key,
                     pat_name[pat], aslot, slot_proxy(in, aslot), dslot, slot_proxy(in, dslot), d, pre_pttl,
                     post_pttl, lk_show(rec), lk_show(hist));
                freeReplyObject(rec);
                freeReplyObject(hist);
            } else {
                atomic_fetch_add(&sh->expired_before_del, 1);
            }
        } else if (pre[0] != '\0') {
            atomic_fetch_add(&sh->late_refused, 1);
        } else {
            atomic_fetch_add(&sh->nothing_to_del, 1);
        }
        key_unlock(k);
    }
    /* The end: one more SETNX (renewed) of a key of its own, never released: the instance
     * exits holding it, as a crash would leave it. */
    if (in->final_hold) {
        char key[48], tok[37];
        int s;
        snprintf(key, sizeof key, "lock:tdf:%d:%d", in->id, w->thread);
        uuid(tok);
        redisReply *r = pool_cmd(w, &s, "SETNX %s %s", key, tok);
        if (r != NULL && r->type == REDIS_REPLY_INTEGER && r->integer == 1) atomic_fetch_add(&sh->final_holds, 1);
        freeReplyObject(r);
    }
    redisFree(w->ctl);
    return NULL;
}

static void instance_main(int id, int proxied, long long start, long long run_ms)
{
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    signal(SIGINT, SIG_DFL);
    signal(SIGTERM, SIG_DFL);
    signal(SIGHUP, SIG_DFL);
    signal(SIGQUIT, SIG_DFL);
    signal(SIGALRM, SIG_DFL);
    static instance in;
    memset(&in, 0, sizeof in);
    in.id = id;
    snprintf(in.ip, sizeof in.ip, "127.0.0.%d", 11 + id);
    in.start_ms = start;
    in.run_ms = run_ms;
    in.self_kill = id == SELF_KILL_INST;
    in.final_hold = 1;
    for (int i = 0; i < POOL; i++) {
        in.target[i] = !proxied ? redis : i < POOL / 2 ? pa : pb;
        pthread_mutex_init(&in.mu[i], NULL);
        if (slot_connect(&in, i) != 0) { atomic_fetch_add(&sh->errors, 1); _exit(1); }
    }
    pthread_t th[THREADS];
    static worker w[THREADS];
    for (int t = 0; t < THREADS; t++) {
        w[t] = (worker){ .in = &in, .thread = t, .seed = (unsigned)(getpid() * 2654435761u) ^ (unsigned)(t * 40503u) };
        if (pthread_create(&th[t], NULL, worker_main, &w[t]) != 0) _exit(1);
    }
    for (int t = 0; t < THREADS; t++) pthread_join(th[t], NULL);
    _exit(0);   /* the pool's connections close with the process, as in a crash */
}

/* ---- the run ---- */

typedef struct result {
    int killed, final_holds, stuck_at_end, untimed_locks_seen, untimed_proxy_seen, samples, restarted;
    long long last_exit_ms, gone_after_ms, max_pttl_at_end;
    int records_left, untimed_left;
    shared s;
} result;

static void reset_shared(void)
{
    for (int i = 0; i < KEYS; i++) pthread_mutex_destroy(&sh->keys[i].mu);
    memset(sh, 0, sizeof *sh);
    for (int i = 0; i < KEYS; i++) {
        pthread_mutexattr_t a;
        pthread_mutexattr_init(&a);
        pthread_mutexattr_setpshared(&a, PTHREAD_PROCESS_SHARED);
        pthread_mutexattr_setrobust(&a, PTHREAD_MUTEX_ROBUST);
        pthread_mutex_init(&sh->keys[i].mu, &a);
        pthread_mutexattr_destroy(&a);
    }
}

/* Counts the keys matching pattern without a TTL (PTTL -1). */
static int untimed_keys(redisContext *c, const char *pattern)
{
    redisReply *r = redisCommand(c, "KEYS %s", pattern);
    int n = 0;
    for (size_t i = 0; r != NULL && r->type == REDIS_REPLY_ARRAY && i < r->elements; i++)
        if (lk_int(c, "PTTL %s", r->element[i]->str) == -1) n++;
    freeReplyObject(r);
    return n;
}

/* The largest PTTL among the keys matching pattern (-2: none). */
static long long max_pttl(redisContext *c, const char *pattern)
{
    redisReply *r = redisCommand(c, "KEYS %s", pattern);
    long long m = -2;
    for (size_t i = 0; r != NULL && r->type == REDIS_REPLY_ARRAY && i < r->elements; i++) {
        long long v = lk_int(c, "PTTL %s", r->element[i]->str);
        if (v > m) m = v;
    }
    freeReplyObject(r);
    return m;
}

static void run(int proxied, result *res)
{
    const char *S = proxied ? "proxies" : "direct";
    lk_flushall(redis);
    reset_shared();
    memset(res, 0, sizeof *res);
    fflush(stdout);
    fflush(stderr);
    long long run_ms = proxied ? RUN_PROXY_MS : RUN_DIRECT_MS;
    long long start = hp_now_ms();
    pid_t pids[INST];
    for (int i = 0; i < INST; i++) {
        pids[i] = fork();
        if (pids[i] < 0) hp_abort("fork: %s", strerror(errno));
        if (pids[i] == 0) instance_main(i, proxied, start, run_ms);
    }
    redisContext *c = lk_connect(redis);
    long long deadline = start + run_ms + ACQUIRE_MS + OVERRUN_MS + 15000;
    long long next_sample = start;
    int left = INST, killed_other = 0;
    while (left > 0) {
        int status;
        pid_t p = waitpid(-1, &status, WNOHANG);
        if (p > 0) {
            for (int i = 0; i < INST; i++) {
                if (pids[i] != p) continue;
                pids[i] = 0;
                left--;
                res->last_exit_ms = hp_now_ms();
                if (WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL) res->killed++;
                else if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
                    diag("%s: instance %d ended with status %d", S, i, status);
                    atomic_fetch_add(&sh->errors, 1);
                }
            }
            continue;
        }
        long long now = hp_now_ms();
        if (proxied && !res->restarted && now - start >= run_ms * 45 / 100) {
            long long t = hp_now_ms();
            res->restarted = hp_restart(pb) == 0 ? 1 : -1;
            diag("%s: proxy B restarted at %.1f s in %lld ms", S, (double)(t - start) / 1000.0, hp_now_ms() - t);
        }
        if (!killed_other && now - start >= run_ms * 65 / 100 && pids[KILLED_INST] > 0) {
            kill(pids[KILLED_INST], SIGKILL);
            killed_other = 1;
        }
        if (now >= next_sample) {
            next_sample = now + 50;
            res->samples++;
            res->untimed_locks_seen += untimed_keys(c, "lock:td*");
            if (res->samples % 5 == 0) res->untimed_proxy_seen += untimed_keys(c, DP_RECORD_PREFIX "*");
        }
        if (now > deadline) {
            diag("%s: instances still running after %lld ms: killing them", S, now - start);
            for (int i = 0; i < INST; i++)
                if (pids[i] > 0) kill(pids[i], SIGKILL);
            while (waitpid(-1, NULL, 0) > 0) {
            }
            atomic_fetch_add(&sh->errors, 1);
            break;
        }
        hp_sleep_ms(5);
    }
    /* The end: no lock without a TTL now, none with more than ttl left by Redis's clock
     * (renewal stopped with the instances), and every lock gone (the wall-time bound is
     * only against a hang: the test's polling may be late on a loaded machine). */
    res->stuck_at_end = untimed_keys(c, "lock:td*");
    res->max_pttl_at_end = max_pttl(c, "lock:td*");
    res->gone_after_ms = -1;
    while (proxied && hp_now_ms() - res->last_exit_ms < TTL_MS + 10000) {
        redisReply *r = redisCommand(c, "KEYS lock:td*");
        int present = r != NULL && r->type == REDIS_REPLY_ARRAY ? (int)r->elements : -1;
        freeReplyObject(r);
        if (present == 0) {
            res->gone_after_ms = hp_now_ms() - res->last_exit_ms;
            break;
        }
        hp_sleep_ms(10);
    }
    res->records_left = (int)dp_count_records(redis);
    res->untimed_left = untimed_keys(c, DP_RECORD_PREFIX "*");
    redisFree(c);
    memcpy(&res->s, sh, sizeof *sh);
    res->final_holds = atomic_load(&sh->final_holds);
    const shared *s = &res->s;
    diag("%s (%.1f s): acquisitions %d SETNX, %d SET NX PX, %d SETNX+EXPIRE; %d releases; %d overruns; %d rounds "
         "given up; %d EXPIREs not :1 (%d refused while the holder's lock was live); %d final holds left to the TTL; "
         "%d instances killed (%d by themselves)", S, dp_secs(start),
         atomic_load(&s->acquired[0]), atomic_load(&s->acquired[1]), atomic_load(&s->acquired[2]),
         atomic_load(&s->released), atomic_load(&s->overruns), atomic_load(&s->gave_up), atomic_load(&s->expire_not_1),
         atomic_load(&s->expire_refused), atomic_load(&s->final_holds), res->killed, atomic_load(&s->self_killed));
    diag("%s: foreign deletions %d, refused legitimate releases %d, leases that expired between check and DEL %d, "
         "late DELs refused %d, DELs with nothing to delete %d, DELs lost with their connection %d", S,
         atomic_load(&s->foreign), atomic_load(&s->refused_legit), atomic_load(&s->expired_before_del),
         atomic_load(&s->late_refused), atomic_load(&s->nothing_to_del), atomic_load(&s->del_lost));
    diag("%s: commands interrupted %d, pool reconnects %d, error replies %d; %d samples: lock keys without TTL seen "
         "%d times, proxy keys without TTL %d times", S, atomic_load(&s->interrupted), atomic_load(&s->reconnects),
         atomic_load(&s->errors), res->samples, res->untimed_locks_seen, res->untimed_proxy_seen);
    diag("%s: at the end: %d lock keys without TTL; all locks gone %lld ms after the last instance stopped; "
         "records left %d, proxy keys without TTL %d", S, res->stuck_at_end, res->gone_after_ms, res->records_left,
         res->untimed_left);
    if (s->foreign_detail[0]) diag("%s: first foreign deletion: %s", S, s->foreign_detail);
    if (s->refused_detail[0]) diag("%s: first refused legitimate release: %s", S, s->refused_detail);
    if (s->expire_detail[0]) diag("%s: first refused EXPIRE of a holder: %s", S, s->expire_detail);
    if (s->error_detail[0]) diag("%s: first error: %s", S, s->error_detail);
}

int main(void)
{
    lk_require_real_proxy();
    plan_lazy();
    sh = mmap(NULL, sizeof *sh, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (sh == MAP_FAILED) bail_out("mmap: %s", strerror(errno));
    memset(sh, 0, sizeof *sh);
    redis = hp_redis_start(NULL);
    /* Redis refuses non-loopback... and 127.0.0.x too in protected mode, for the direct run. */
    hp_cmd_ok(redis, "CONFIG SET protected-mode no");
    pa = lk_proxy_start(redis, "torture_deploy_a", "rule lock: enforce ttl=1s", log_a, sizeof log_a);
    pb = lk_proxy_start(redis, "torture_deploy_b", "rule lock: enforce ttl=1s", log_b, sizeof log_b);
    if (!dp_have_other_host(pa)) skip_all("127.0.0.x cannot be used as client addresses here");

    result d, p;
    run(0, &d);
    run(1, &p);

    is_int(atomic_load(&d.s.errors), 0, "direct: no error replies");
    ok(d.killed == 2, "direct: two instances were killed (%d)", d.killed);
    ok(d.stuck_at_end > 0 || atomic_load(&d.s.foreign) > 0,
       "direct: the patterns show their failures (stuck locks %d, foreign deletions %d)", d.stuck_at_end,
       atomic_load(&d.s.foreign));

    const shared *s = &p.s;
    int acquisitions = atomic_load(&s->acquired[0]) + atomic_load(&s->acquired[1]) + atomic_load(&s->acquired[2]);
    is_int(atomic_load(&s->errors), 0, "proxies: no error replies%s%s", s->error_detail[0] ? ": " : "", s->error_detail);
    is_int(p.restarted, 1, "proxies: proxy B was restarted mid-run");
    ok(atomic_load(&s->reconnects) > 0, "proxies: the restart dropped pooled connections, which reconnected (%d)",
       atomic_load(&s->reconnects));
    ok(p.killed == 2, "proxies: two instances were killed (%d)", p.killed);
    ok(acquisitions > 50, "proxies: the workers took locks (%d acquisitions)", acquisitions);
    ok(atomic_load(&s->overruns) > 5 && atomic_load(&s->late_refused) + atomic_load(&s->expired_before_del) > 0,
       "proxies: overruns happened (%d) and late releases met them (%d refused, %d expired)",
       atomic_load(&s->overruns), atomic_load(&s->late_refused), atomic_load(&s->expired_before_del));
    is_int(atomic_load(&s->foreign), 0, "proxies: no DEL removed another worker's lock");
    /* A release on a pooled connection that once held a lease of the key which ended by
     * its TTL is refused as late by design (README "Owners"; counted apart above). Every
     * other release of a holder whose lock is live must go through. */
    diag("proxies: releases and EXPIREs refused as late by design (a pooled connection whose own earlier lease "
         "ended by its TTL): %d", atomic_load(&s->refused_late_by_design));
    is_int(atomic_load(&s->refused_legit), 0, "proxies: no legitimate release refused (holder's token, PTTL > 0, DEL :0, lock kept)");
    is_int(atomic_load(&s->expire_refused), 0, "proxies: no holder's EXPIRE refused while its lock was live");
    is_int(p.untimed_locks_seen, 0, "proxies: no lock key was ever seen without a TTL (%d samples)", p.samples);
    is_int(p.untimed_proxy_seen, 0, "proxies: no key of the proxy's was ever seen without a TTL");
    ok(p.final_holds > 0, "proxies: instances exited holding locks (%d)", p.final_holds);
    is_int(p.stuck_at_end, 0, "proxies: no lock key without a TTL when the last instance stopped");
    ok(p.max_pttl_at_end <= TTL_MS,
       "proxies: when the last instance stopped no lock had more than ttl left (largest PTTL %lld ms)",
       p.max_pttl_at_end);
    ok(p.gone_after_ms >= 0, "proxies: every lock ended by its TTL after the last instance stopped (%lld ms, wall)",
       p.gone_after_ms);
    is_int(p.records_left, 0, "proxies: no lease record left");
    is_int(p.untimed_left, 0, "proxies: every key of the proxy's left (histories) has a TTL");

    int late_a = lk_log_count_synced(pa, log_a, "late_release", NULL), late_b = lk_log_count_synced(pb, log_b, "late_release", NULL);
    int for_a = lk_log_count_synced(pa, log_a, "foreign_release", NULL), for_b = lk_log_count_synced(pb, log_b, "foreign_release", NULL);
    diag("proxies' logs: late_release %d (A) + %d (B, since its restart), foreign_release %d + %d", late_a, late_b,
         for_a, for_b);
    is_int(hp_stop(pa, 10000), 0, "proxy A exits 0 on SIGTERM");
    is_int(hp_stop(pb, 10000), 0, "proxy B exits 0 on SIGTERM");
    munmap(sh, sizeof *sh);
    return 0;
}
