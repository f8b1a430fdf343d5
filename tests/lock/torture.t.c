/* Lock torture: 16 worker processes use the legacy lock pattern on a handful of keys,
 *
 *     SETNX k <unique id>;  EXPIRE k 1;  critical section;  DEL k
 *
 * where some sections overrun the 1 s TTL (1.2 s) and two workers are SIGKILLed between
 * SETNX and EXPIRE. The same workload runs once straight to Redis and once through the proxy
 * (rule lock: enforce ttl=500ms), with FLUSHALL in between, and counts:
 *   stuck      lock keys left without a TTL (PTTL -1) after the run;
 *   foreign    DELs that returned 1 but removed another worker's lock;
 *   overlaps   a worker entering its section while another is still in its own, split into
 *              "explained" (the other's lease may have expired: its SETNX was sent at least
 *              500 ms before) and "unexplained".
 * Straight to Redis the killed workers leave stuck locks (and overruns delete other holders'
 * locks); through the proxy there must be no stuck lock and no foreign deletion.
 *
 * Foreign deletions are counted exactly: per key, a process-shared mutex is held around
 * "SETNX, and record the owner when it returned 1" and around "DEL, and compare the recorded
 * owner when it returned 1", so the recorded owner is the one whose value the DEL removed.
 * Workers exit with _exit() (the harness's exit handlers belong to the parent). */
#include <pthread.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>

#include "lock/lock_util.h"

#define WORKERS 16
#define KEYS 4
#define ROUNDS 8
#define ACQUIRE_MS 1200        /* a worker gives up a round after this */
#define RUN_MS 13000           /* no round starts after this */
#define OVERRUN_MS 1200        /* > the EXPIRE's 1 s */
#define RULE_TTL_MS 500
#define VICTIM_ROUND 2         /* victims die at their first acquisition from this round on */

static const int victims[] = { 5, 10 };

typedef struct key_state {
    pthread_mutex_t mu;
    int owner;                 /* the worker whose SETNX succeeded last, -1 none */
    int in_section;            /* the worker in its critical section, -1 none */
    long long floor_ms;        /* its lock cannot expire before this (wall clock) */
} key_state;

typedef struct shared {
    key_state keys[KEYS];
    int acquired, released, foreign, late, gave_up, lost, overruns;
    int overlap_explained, overlap_unexplained, errors;
} shared;

static shared *sh;
static hp_proc *redis, *proxy;
static char logpath[4096];

static long long wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void add(int *counter) { __atomic_fetch_add(counter, 1, __ATOMIC_SEQ_CST); }

static void key_lock(key_state *k)
{
    int rc = pthread_mutex_lock(&k->mu);
    if (rc == EOWNERDEAD) pthread_mutex_consistent(&k->mu);
}

static void key_unlock(key_state *k) { pthread_mutex_unlock(&k->mu); }

static long long reply_int(redisReply *r)
{
    long long v = r != NULL && r->type == REDIS_REPLY_INTEGER ? r->integer : LLONG_MIN;
    freeReplyObject(r);
    return v;
}

static int is_victim(int id)
{
    for (size_t i = 0; i < sizeof victims / sizeof victims[0]; i++)
        if (victims[i] == id) return 1;
    return 0;
}

/* One worker process. */
static void worker(const hp_proc *target, int id, long long start_ms)
{
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    signal(SIGINT, SIG_DFL);
    signal(SIGTERM, SIG_DFL);
    signal(SIGHUP, SIG_DFL);
    signal(SIGQUIT, SIG_DFL);
    signal(SIGALRM, SIG_DFL);
    redisContext *c = hp_redis_connect(target);
    if (c == NULL) { add(&sh->errors); _exit(1); }
    srand((unsigned)(getpid() * 2654435761u));
    for (int round = 0; round < ROUNDS; round++) {
        if (hp_now_ms() - start_ms > RUN_MS) break;
        int ki = (id + round) % KEYS;
        key_state *k = &sh->keys[ki];
        char key[32], value[64];
        snprintf(key, sizeof key, "lock:t:%d", ki);
        snprintf(value, sizeof value, "w%d-r%d-%d", id, round, (int)getpid());

        long long until = hp_now_ms() + ACQUIRE_MS, sent = 0;
        int got = 0;
        while (hp_now_ms() < until) {
            sent = wall_ms();
            key_lock(k);
            long long r = reply_int(redisCommand(c, "SETNX %s %s", key, value));
            if (r == 1) k->owner = id;
            key_unlock(k);
            if (r == LLONG_MIN) { add(&sh->errors); _exit(1); }
            if (r == 1) { got = 1; break; }
            hp_sleep_ms(5 + rand() % 10);
        }
        if (!got) { add(&sh->gave_up); continue; }
        add(&sh->acquired);
        if (is_victim(id) && round >= VICTIM_ROUND) raise(SIGKILL);   /* before its EXPIRE */

        long long e = reply_int(redisCommand(c, "EXPIRE %s 1", key));
        if (e != 1) { add(&sh->lost); continue; }   /* the lock was gone already */

        key_lock(k);
        if (k->in_section >= 0 && k->in_section != id) {
            if (wall_ms() < k->floor_ms) add(&sh->overlap_unexplained);
            else add(&sh->overlap_explained);
        }
        k->in_section = id;
        k->floor_ms = sent + RULE_TTL_MS;
        key_unlock(k);

        int overrun = (id * 7 + round) % 6 == 0;
        if (overrun) add(&sh->overruns);
        hp_sleep_ms(overrun ? OVERRUN_MS : 10 + rand() % 20);

        key_lock(k);
        if (k->in_section == id) k->in_section = -1;
        long long d = reply_int(redisCommand(c, "DEL %s", key));
        if (d == 1) {
            if (k->owner != id) add(&sh->foreign);
            else add(&sh->released);
            k->owner = -1;
        } else if (d == 0) {
            add(&sh->late);
        }
        key_unlock(k);
        if (d == LLONG_MIN) { add(&sh->errors); _exit(1); }
    }
    redisFree(c);
    _exit(0);
}

typedef struct result {
    int stuck, killed;
    shared counts;
} result;

static void reset_shared(void)
{
    for (int i = 0; i < KEYS; i++) {
        pthread_mutex_destroy(&sh->keys[i].mu);
    }
    memset(sh, 0, sizeof *sh);
    for (int i = 0; i < KEYS; i++) {
        pthread_mutexattr_t a;
        pthread_mutexattr_init(&a);
        pthread_mutexattr_setpshared(&a, PTHREAD_PROCESS_SHARED);
        pthread_mutexattr_setrobust(&a, PTHREAD_MUTEX_ROBUST);
        pthread_mutex_init(&sh->keys[i].mu, &a);
        pthread_mutexattr_destroy(&a);
        sh->keys[i].owner = -1;
        sh->keys[i].in_section = -1;
    }
}

static void run(const hp_proc *target, result *res)
{
    lk_flushall(redis);
    reset_shared();
    memset(res, 0, sizeof *res);
    fflush(stdout);
    fflush(stderr);
    long long start = hp_now_ms();
    pid_t pids[WORKERS];
    for (int i = 0; i < WORKERS; i++) {
        pids[i] = fork();
        if (pids[i] < 0) hp_abort("fork: %s", strerror(errno));
        if (pids[i] == 0) worker(target, i, start);
    }
    /* Every worker ends by RUN_MS plus one acquisition, one overrun and a reply. */
    long long deadline = start + RUN_MS + ACQUIRE_MS + OVERRUN_MS + 10000;
    int left = WORKERS;
    while (left > 0) {
        int status;
        pid_t p = waitpid(-1, &status, WNOHANG);
        if (p > 0) {
            for (int i = 0; i < WORKERS; i++) {
                if (pids[i] != p) continue;
                pids[i] = 0;
                left--;
                if (WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL) res->killed++;
                else if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) diag("worker %d ended with status %d", i, status);
            }
            continue;
        }
        if (hp_now_ms() > deadline) {
            diag("workers still running after %lld ms: killing them", deadline - start);
            for (int i = 0; i < WORKERS; i++)
                if (pids[i] > 0) kill(pids[i], SIGKILL);
            while (waitpid(-1, NULL, 0) > 0) {
            }
            add(&sh->errors);
            break;
        }
        hp_sleep_ms(10);
    }
    for (int i = 0; i < KEYS; i++)
        if (hp_cmd_int(redis, "PTTL lock:t:%d", i) == -1) res->stuck++;
    res->counts = *sh;
    const shared *s = &res->counts;
    diag("%s (%.1f s): %d acquisitions, %d releases, %d overruns, %d killed, %d gave up a round, "
         "%d lost the lock before EXPIRE", target == proxy ? "proxy " : "direct",
         (double)(hp_now_ms() - start) / 1000.0, s->acquired, s->released, s->overruns, res->killed, s->gave_up, s->lost);
    diag("%s: stuck locks %d, foreign deletions %d, late DELs that deleted nothing %d, "
         "overlapping sections %d explained by an expired lease, %d unexplained",
         target == proxy ? "proxy " : "direct", res->stuck, s->foreign, s->late, s->overlap_explained,
         s->overlap_unexplained);
}

int main(void)
{
    lk_require_real_proxy();
    plan_lazy();
    sh = mmap(NULL, sizeof *sh, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (sh == MAP_FAILED) bail_out("mmap: %s", strerror(errno));
    memset(sh, 0, sizeof *sh);
    redis = hp_redis_start(NULL);
    proxy = lk_proxy_start(redis, "torture", "rule lock: enforce ttl=500ms", logpath, sizeof logpath);

    result direct, proxied;
    run(redis, &direct);
    run(proxy, &proxied);

    is_int(direct.counts.errors, 0, "direct: the workers saw no errors");
    ok(direct.killed >= 1, "direct: workers were killed between SETNX and EXPIRE (%d)", direct.killed);
    ok(direct.stuck > 0 || direct.counts.foreign > 0,
       "direct: the legacy pattern shows its failures (stuck %d, foreign deletions %d)", direct.stuck, direct.counts.foreign);

    is_int(proxied.counts.errors, 0, "proxy: the workers saw no errors");
    ok(proxied.killed >= 1, "proxy: workers were killed between SETNX and EXPIRE (%d)", proxied.killed);
    ok(proxied.counts.acquired > WORKERS, "proxy: the workers took locks (%d acquisitions)", proxied.counts.acquired);
    is_int(proxied.stuck, 0, "proxy: no stuck lock");
    is_int(proxied.counts.foreign, 0, "proxy: no DEL removed another holder's lock");
    if (proxied.counts.late > 0)
        ok(lk_log_wait(logpath, "late_release", NULL, 5000), "proxy: late DELs were logged as late_release");

    is_int(hp_stop(proxy, 10000), 0, "the proxy exits 0 on SIGTERM");
    munmap(sh, sizeof *sh);
    return 0;
}
