/* Renewal as applications rely on it (design9.md, rule option renew=, default auto): a lock
 * taken without a TTL gets the rule's ttl and the proxy renews it every ttl/3 while the
 * acquiring connection is open; when that connection goes, renewal stops and the lock ends
 * within ttl. Policy: "lock: enforce ttl=1s"; (d) runs on a second proxy with
 * "norenew: enforce ttl=1s renew=off".
 *
 *   (a) long hold       SETNX lock:r, the connection stays open 3 x ttl: the key always has a
 *                       TTL <= 1 s, still exists at 3 s; then DEL :1, no record left.
 *   (b) crashed holder  SETNX, hold 1.2 s, then the socket closes without DEL (b1), or the
 *                       client process is SIGKILLed (b2): its TTL at the crash is at most
 *                       ttl, renewal stops (PTTL rises at most once, a tick the proxy ran
 *                       before it read the close), the lock ends, and another client takes it.
 *   (c) renewal thread  SET lock:w NX EX 2, then another connection of the same host runs
 *                       EXPIRE lock:w 2 every 500 ms while the holder works 3 s, and a
 *                       competitor tries SET lock:w NX EX 2 every 100 ms: every EXPIRE :1,
 *                       the competitor never gets it, the holder's DEL :1. Straight to Redis
 *                       and through the proxy.
 *   (d) renew=off       SETNX norenew:d with the connection open: the lock ends after ttl.
 *   (e) blocked holder  SETNX, then BLPOP on an empty list for 2.5 x ttl (a worker waiting
 *                       for its next job while holding the lock): still held when BLPOP
 *                       returns, DEL :1.
 *   (f) subscribed      SETNX, then SUBSCRIBE for 2.5 x ttl, UNSUBSCRIBE: still held, DEL :1. */
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <sys/prctl.h>
#include <sys/wait.h>

#include "lock/deploy_util.h"

#define TTL_MS 1000

static hp_proc *redis, *proxy;
static char logpath[4096];

/* (a) */
static void long_hold(void)
{
    lk_flushall(redis);
    redisContext *c = lk_connect(proxy);
    long long start = hp_now_ms();
    is_string(lk_str(c, "SETNX lock:r v"), ":1", "long hold: SETNX acquires");
    int samples = 0, missing = 0, no_ttl = 0, too_long = 0;
    long long min_pttl = LLONG_MAX, max_pttl = 0;
    while (hp_now_ms() - start < 3 * TTL_MS) {
        hp_sleep_ms(100);
        long long v = hp_cmd_int(redis, "PTTL lock:r");
        samples++;
        if (v == -2) missing++;
        else if (v == -1) no_ttl++;
        else if (v > TTL_MS) too_long++;
        if (v >= 0 && v < min_pttl) min_pttl = v;
        if (v > max_pttl) max_pttl = v;
    }
    diag("long hold: %d PTTL samples over %.1f s: %d missing, %d without TTL, %d above ttl; PTTL from %lld to %lld",
         samples, dp_secs(start), missing, no_ttl, too_long, min_pttl == LLONG_MAX ? -1 : min_pttl, max_pttl);
    is_int(missing, 0, "long hold: the lock never vanished while its connection was open");
    is_int(no_ttl, 0, "long hold: the lock always had a TTL (never stuck)");
    is_int(too_long, 0, "long hold: its TTL never exceeded the rule's ttl=1s");
    is_string(lk_pstr(redis, "GET lock:r"), "v", "long hold: the key still exists at 3 x ttl (renewed by the proxy)");
    is_string(lk_str(c, "DEL lock:r"), ":1", "long hold: the holder's DEL answers :1");
    is_string(lk_pstr(redis, "EXISTS lock:r"), ":0", "long hold: the lock is gone");
    is_int(dp_count_records(redis), 0, "long hold: no lease record left (%s)",
           dp_list_keys(redis, DP_RECORD_PREFIX));
    redisFree(c);
}

/* Samples key's PTTL (Redis's clock) every 10 ms until the key is gone, or for at most 10 s
 * of wall time (a hang, not a timing limit: on a loaded machine the test's own polling may
 * be late, so wall time is only reported). A renewal shows as the PTTL going up. Returns
 * the wall ms from since until the key was gone, or -1; *first is the first PTTL seen (-3:
 * the key was already gone), *rises how often PTTL went up. */
static long long watch_ttl(const char *key, long long since, long long *first, int *rises)
{
    long long prev = -3;
    *first = -3;
    *rises = 0;
    while (hp_now_ms() - since <= 10000) {
        long long v = hp_cmd_int(redis, "PTTL %s", key);
        if (v == -2) return hp_now_ms() - since;
        if (*first == -3) *first = v;
        if (prev >= 0 && v > prev) (*rises)++;
        prev = v;
        hp_sleep_ms(10);
    }
    return -1;
}

/* After a crash: the TTL is at most the rule's, and renewal stops. The proxy may renew once
 * more before it reads the connection's end (one period late at most); a second rise of the
 * PTTL means renewal did not stop. */
static void crash_checks(const char *what, const char *key, long long crashed_at)
{
    long long first;
    int rises;
    long long took = watch_ttl(key, crashed_at, &first, &rises);
    diag("%s: first PTTL after the crash %lld ms, %d rise(s), gone %lld ms after it (wall)", what, first, rises, took);
    ok(first == -3 || (first >= 0 && first <= TTL_MS), "%s: at the crash the lock's TTL is at most the rule's ttl (%lld ms)", what, first);
    ok(rises <= 1, "%s: renewal stops with the connection (%d rise(s) of PTTL after the crash)", what, rises);
    ok(took >= 0, "%s: the lock ends by its TTL", what);
    redisContext *o = lk_connect(proxy);
    is_string(lk_str(o, "SETNX %s other", key), ":1", "%s: another client takes the lock then", what);
    is_string(lk_str(o, "DEL %s", key), ":1", "%s: and releases it", what);
    redisFree(o);
}

/* (b1) the socket closes without a DEL. */
static void crash_close(void)
{
    lk_flushall(redis);
    redisContext *c = lk_connect(proxy);
    is_string(lk_str(c, "SETNX lock:c v"), ":1", "crash (close): SETNX acquires");
    hp_sleep_ms(TTL_MS + TTL_MS / 5);
    is_string(lk_pstr(redis, "GET lock:c"), "v", "crash (close): held past ttl while the connection is open");
    redisFree(c);
    crash_checks("crash (close)", "lock:c", hp_now_ms());
}

/* (b2) the client process is killed. */
static void crash_kill(void)
{
    lk_flushall(redis);
    int pipefd[2];
    if (pipe(pipefd) != 0) hp_abort("pipe: %s", strerror(errno));
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid < 0) hp_abort("fork: %s", strerror(errno));
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        signal(SIGINT, SIG_DFL);
        signal(SIGTERM, SIG_DFL);
        signal(SIGHUP, SIG_DFL);
        signal(SIGQUIT, SIG_DFL);
        signal(SIGALRM, SIG_DFL);
        close(pipefd[0]);
        int fd = hp_connect_proc(proxy, 5000);
        static const char req[] = "*3\r\n$5\r\nSETNX\r\n$6\r\nlock:k\r\n$1\r\nv\r\n";
        hp_buf out = {0};
        char verdict = '?';
        if (fd >= 0 && hp_send_all(fd, req, sizeof req - 1, 5000) == HP_IO_OK &&
            hp_read_n(fd, &out, 4, 5000) == HP_IO_OK)
            verdict = memcmp(out.data, ":1\r\n", 4) == 0 ? '1' : '0';
        if (write(pipefd[1], &verdict, 1) != 1) _exit(1);
        for (;;) pause();
    }
    close(pipefd[1]);
    char verdict = 'x';
    if (read(pipefd[0], &verdict, 1) != 1) verdict = 'x';
    close(pipefd[0]);
    is_int(verdict, '1', "crash (kill): the client's SETNX acquires");
    hp_sleep_ms(TTL_MS + TTL_MS / 5);
    is_string(lk_pstr(redis, "GET lock:k"), "v", "crash (kill): held past ttl while the client lives");
    kill(pid, SIGKILL);
    long long at = hp_now_ms();
    waitpid(pid, NULL, 0);
    crash_checks("crash (kill)", "lock:k", at);
}

/* (c) */
typedef struct renew_state {
    const hp_proc *target;
    atomic_int stop;
    int renew_ok, renew_bad, compete_tries, compete_won, errors;
    char first_bad[128];
} renew_state;

static void *renewer(void *arg)
{
    renew_state *s = arg;
    redisContext *c = hp_redis_connect(s->target);
    if (c == NULL) { s->errors++; return NULL; }
    while (!atomic_load(&s->stop)) {
        for (int i = 0; i < 50 && !atomic_load(&s->stop); i++) usleep(10000);
        if (atomic_load(&s->stop)) break;
        redisReply *r = redisCommand(c, "EXPIRE lock:w 2");
        if (r != NULL && r->type == REDIS_REPLY_INTEGER && r->integer == 1) {
            s->renew_ok++;
        } else {
            if (s->renew_bad++ == 0) {
                snprintf(s->first_bad, sizeof s->first_bad, "%s",
                         r == NULL ? c->errstr : r->type == REDIS_REPLY_INTEGER ? (r->integer ? "?" : ":0") :
                         r->type == REDIS_REPLY_ERROR ? r->str : "unexpected type");
            }
        }
        freeReplyObject(r);
        if (r == NULL) break;
    }
    redisFree(c);
    return NULL;
}

static void *competitor(void *arg)
{
    renew_state *s = arg;
    redisContext *c = hp_redis_connect(s->target);
    if (c == NULL) { s->errors++; return NULL; }
    while (!atomic_load(&s->stop)) {
        usleep(100000);
        redisReply *r = redisCommand(c, "SET lock:w competitor NX EX 2");
        s->compete_tries++;
        if (r != NULL && r->type == REDIS_REPLY_STATUS) {
            s->compete_won++;
            freeReplyObject(redisCommand(c, "DEL lock:w"));
        } else if (r == NULL || r->type != REDIS_REPLY_NIL) {
            s->errors++;
        }
        freeReplyObject(r);
        if (r == NULL) break;
    }
    redisFree(c);
    return NULL;
}

static void renewal_thread(const hp_proc *t)
{
    const char *S = t == proxy ? "proxy" : "direct";
    lk_flushall(redis);
    static renew_state s;
    memset(&s, 0, sizeof s);
    s.target = t;
    redisContext *h = lk_connect(t);
    char tok[64];
    snprintf(tok, sizeof tok, "%s", lk_uuid());
    is_string(lk_str(h, "SET lock:w %s NX EX 2", tok), "+OK", "renewal thread: %s: the holder acquires", S);
    pthread_t rt, ct;
    if (pthread_create(&rt, NULL, renewer, &s) != 0 || pthread_create(&ct, NULL, competitor, &s) != 0)
        hp_abort("pthread_create failed");
    hp_sleep_ms(3000);   /* the holder's work */
    atomic_store(&s.stop, 1);
    pthread_join(rt, NULL);
    pthread_join(ct, NULL);
    diag("renewal thread, %s: %d EXPIREs answered :1, %d did not (first: %s); competitor: %d tries, %d won; %d errors",
         S, s.renew_ok, s.renew_bad, s.first_bad[0] ? s.first_bad : "-", s.compete_tries, s.compete_won, s.errors);
    is_int(s.errors, 0, "renewal thread: %s: no errors", S);
    ok(s.renew_ok >= 4, "renewal thread: %s: the renewal thread renewed every 500 ms (%d)", S, s.renew_ok);
    is_int(s.renew_bad, 0, "renewal thread: %s: every EXPIRE answered :1", S);
    ok(s.compete_tries >= 10, "renewal thread: %s: the competitor kept trying (%d)", S, s.compete_tries);
    is_int(s.compete_won, 0, "renewal thread: %s: the competitor never got the lock: no overlap", S);
    is_string(lk_pstr(redis, "GET lock:w"), tok, "renewal thread: %s: still the holder's lock after 3 s", S);
    is_string(lk_str(h, "DEL lock:w"), ":1", "renewal thread: %s: the holder's final DEL answers :1", S);
    is_string(lk_pstr(redis, "EXISTS lock:w"), ":0", "renewal thread: %s: the lock is gone", S);
    redisFree(h);
}

/* (e) and (f): renewal runs on the proxy's own connection, so the holder's connection may be
 * busy in a blocking command or subscribed. */
static void busy_holder(int subscribed)
{
    const char *W = subscribed ? "subscribed holder" : "blocked holder";
    lk_flushall(redis);
    redisContext *c = lk_connect(proxy);
    is_string(lk_str(c, "SETNX lock:b v"), ":1", "%s: SETNX acquires", W);
    long long start = hp_now_ms();
    if (subscribed) {
        is_string(lk_str(c, "SUBSCRIBE jobs"), "[subscribe,jobs,:1]", "%s: SUBSCRIBE", W);
        hp_sleep_ms(5 * TTL_MS / 2);
        is_string(lk_pstr(redis, "GET lock:b"), "v", "%s: still held after 2.5 x ttl subscribed (%.1f s)", W,
                  dp_secs(start));
        is_string(lk_str(c, "UNSUBSCRIBE jobs"), "[unsubscribe,jobs,:0]", "%s: UNSUBSCRIBE", W);
    } else {
        is_string(lk_str(c, "BLPOP jobs 2.5"), "(nil)", "%s: BLPOP times out after 2.5 s", W);
        is_string(lk_pstr(redis, "GET lock:b"), "v", "%s: still held when BLPOP returns (%.1f s)", W, dp_secs(start));
    }
    long long pttl = hp_cmd_int(redis, "PTTL lock:b");
    ok(pttl > 0 && pttl <= TTL_MS, "%s: with a TTL within the rule's ttl (PTTL %lld)", W, pttl);
    is_string(lk_str(c, "DEL lock:b"), ":1", "%s: the holder's DEL answers :1", W);
    is_string(lk_pstr(redis, "EXISTS lock:b"), ":0", "%s: the lock is gone", W);
    redisFree(c);
}

/* (d), on a proxy of its own, so that a policy the proxy refuses fails only this part. */
static hp_proc *start_renew_off_proxy(void)
{
    char logp[4096];
    const char *pol = lk_write_file("deploy_renew_off.policy", "rule norenew: enforce ttl=1s renew=off\n");
    snprintf(logp, sizeof logp, "%s/deploy_renew_off.audit.log", hp_tmpdir());
    const char *extra[] = { "--policy", pol, "--log", logp, NULL };
    hp_proc *p = hp_proxy_spawn(redis, extra);
    long long until = hp_now_ms() + 5000;
    while (hp_now_ms() < until) {
        if (hp_wait_exit(p, 50) != -1) {
            diag("the proxy with renew=off exited:");
            hp_log_tail(p, 5);
            return NULL;
        }
        int fd = hp_connect_proc(p, 200);
        if (fd < 0) continue;
        hp_buf out = {0};
        hp_io io = hp_send_all(fd, "PING\r\n", 6, 1000) == HP_IO_OK ? hp_read_until(fd, &out, 0, "\r\n", 1000)
                                                                       : HP_IO_ERROR;
        close(fd);
        hp_buf_free(&out);
        if (io == HP_IO_OK) return p;
    }
    diag("the proxy with renew=off did not answer PING within 5 s");
    return NULL;
}

static void renew_off(void)
{
    hp_proc *p = start_renew_off_proxy();
    if (!ok(p != NULL, "renew=off: the proxy accepts \"rule norenew: enforce ttl=1s renew=off\"")) return;
    lk_flushall(redis);
    redisContext *c = lk_connect(p);
    long long start = hp_now_ms();
    is_string(lk_str(c, "SETNX norenew:d v"), ":1", "renew=off: SETNX acquires");
    long long pttl = hp_cmd_int(redis, "PTTL norenew:d");
    ok(pttl > 0 && pttl <= TTL_MS, "renew=off: the lock has the rule's ttl (PTTL %lld)", pttl);
    long long first;
    int rises;
    long long took = watch_ttl("norenew:d", start, &first, &rises);
    diag("renew=off: the lock went %lld ms after the SETNX (wall), with its connection open", took);
    is_int(rises, 0, "renew=off: never renewed (PTTL never rose)");
    ok(took >= 0, "renew=off: the lock ends by its TTL although its connection is open");
    is_string(lk_str(c, "PING"), "+PONG", "renew=off: the holder's connection is still open");
    redisFree(c);
    is_int(hp_stop(p, 10000), 0, "renew=off: its proxy exits 0 on SIGTERM");
}

int main(void)
{
    lk_require_real_proxy();
    plan_lazy();
    redis = hp_redis_start(NULL);
    proxy = lk_proxy_start(redis, "deploy_renew",
                           "rule lock: enforce ttl=1s\n",
                           logpath, sizeof logpath);

    /* Redis alone, for reference: SETNX leaves a lock without TTL. */
    lk_flushall(redis);
    redisContext *d = lk_connect(redis);
    lk_str(d, "SETNX lock:r v");
    is_int(hp_cmd_int(redis, "PTTL lock:r"), -1, "direct: SETNX leaves a lock without TTL (stuck if its holder dies)");
    redisFree(d);

    long_hold();
    crash_close();
    crash_kill();
    renewal_thread(redis);
    renewal_thread(proxy);
    busy_holder(0);
    busy_holder(1);
    renew_off();

    is_int(hp_stop(proxy, 10000), 0, "the proxy exits 0 on SIGTERM");
    return 0;
}
