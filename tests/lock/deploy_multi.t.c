/* Lock commands inside MULTI/EXEC, as frameworks that wrap "acquire; set TTL" or
 * "acquire; work; release" in a transaction send them: every reply byte for byte Redis's,
 * and the keys end as Redis leaves them. Each case runs straight to Redis and through the
 * proxy (rule "lock: enforce"), once with the whole transaction in one write and once one
 * command per write (waiting for each reply):
 *
 *   MULTI; SETNX lock:m 1; DEL lock:m; EXEC               *2 :1 :1, key gone, no record
 *   MULTI; SETNX lock:m 1; EXPIRE lock:m 10; EXEC         *2 :1 :1, PTTL ~ 10 s; DEL :1 after
 *   MULTI; SETNX lock:m 1; EXPIRE lock:m 10; DEL; EXEC    *3 :1 :1 :1, key gone
 *   MULTI; SET lock:m t NX PX 5000; PEXPIRE lock:m 10000; EXEC   *2 +OK :1, PTTL ~ 10 s */
#include "lock/deploy_util.h"

static hp_proc *redis, *proxy;
static char logpath[4096];

typedef struct exch {
    const char *req;
    const char *rep;
} exch;

#define MULTI_ { "*1\r\n$5\r\nMULTI\r\n", "+OK\r\n" }
#define EXEC_(rep) { "*1\r\n$4\r\nEXEC\r\n", rep }
#define SETNX_M { "*3\r\n$5\r\nSETNX\r\n$6\r\nlock:m\r\n$1\r\n1\r\n", "+QUEUED\r\n" }
#define DEL_M { "*2\r\n$3\r\nDEL\r\n$6\r\nlock:m\r\n", "+QUEUED\r\n" }
#define EXPIRE_M { "*3\r\n$6\r\nEXPIRE\r\n$6\r\nlock:m\r\n$2\r\n10\r\n", "+QUEUED\r\n" }
#define SETNXPX_M { "*6\r\n$3\r\nSET\r\n$6\r\nlock:m\r\n$1\r\nt\r\n$2\r\nNX\r\n$2\r\nPX\r\n$4\r\n5000\r\n", "+QUEUED\r\n" }
#define PEXPIRE_M { "*3\r\n$7\r\nPEXPIRE\r\n$6\r\nlock:m\r\n$5\r\n10000\r\n", "+QUEUED\r\n" }
#define END_ { NULL, NULL }

static const exch case_del[] = { MULTI_, SETNX_M, DEL_M, EXEC_("*2\r\n:1\r\n:1\r\n"), END_ };
static const exch case_expire[] = { MULTI_, SETNX_M, EXPIRE_M, EXEC_("*2\r\n:1\r\n:1\r\n"), END_ };
static const exch case_all[] = { MULTI_, SETNX_M, EXPIRE_M, DEL_M, EXEC_("*3\r\n:1\r\n:1\r\n:1\r\n"), END_ };
static const exch case_px[] = { MULTI_, SETNXPX_M, PEXPIRE_M, EXEC_("*2\r\n+OK\r\n:1\r\n"), END_ };

/* Runs the exchanges on a fresh connection; one_write: all requests in one write. Returns
 * 1 when every byte matched. */
static int run_case(const hp_proc *t, const char *name, const exch *x, int one_write)
{
    const char *S = t == proxy ? "proxy" : "direct";
    const char *W = one_write ? "one write" : "one command per write";
    lk_flushall(redis);
    int fd = lk_raw_open(t);
    int good;
    if (one_write) {
        hp_buf req = {0}, want = {0};
        for (int i = 0; x[i].req; i++) {
            hp_buf_puts(&req, x[i].req);
            hp_buf_puts(&want, x[i].rep);
        }
        good = lk_raw_expect(fd, req.data, want.data, "%s, %s, %s: Redis's bytes", name, W, S);
        hp_buf_free(&req);
        hp_buf_free(&want);
    } else {
        hp_buf got = {0}, want = {0};
        for (int i = 0; x[i].req; i++) {
            hp_buf_puts(&want, x[i].rep);
            if (hp_send_all(fd, x[i].req, strlen(x[i].req), 5000) != HP_IO_OK) diag("%s: send failed", name);
            hp_read_n(fd, &got, want.len, 5000);
        }
        hp_read_idle(fd, &got, 20, 1000);
        good = is_bytes(got.data, got.len, want.data, want.len, "%s, %s, %s: Redis's bytes", name, W, S);
        hp_buf_free(&got);
        hp_buf_free(&want);
    }
    close(fd);
    return good;
}

static void check_gone(const hp_proc *t, const char *name, int one_write)
{
    const char *S = t == proxy ? "proxy" : "direct";
    const char *W = one_write ? "one write" : "one command per write";
    is_string(lk_pstr(redis, "EXISTS lock:m"), ":0", "%s, %s, %s: the lock is gone", name, W, S);
    is_int(dp_count_records(redis), 0, "%s, %s, %s: no lease record left (%s)", name, W, S,
           dp_list_keys(redis, DP_RECORD_PREFIX));
}

static void check_held(const hp_proc *t, const char *name, int one_write, const char *value)
{
    const char *S = t == proxy ? "proxy" : "direct";
    const char *W = one_write ? "one write" : "one command per write";
    long long pttl = hp_cmd_int(redis, "PTTL lock:m");
    ok(pttl > 9000 && pttl <= 10000, "%s, %s, %s: PTTL ~ 10 s (%lld)", name, W, S, pttl);
    is_string(lk_pstr(redis, "GET lock:m"), value, "%s, %s, %s: the lock holds its value", name, W, S);
    /* Released later outside the transaction, on a new connection of the same client host. */
    redisContext *c = lk_connect(t);
    is_string(lk_str(c, "DEL lock:m"), ":1", "%s, %s, %s: a later DEL releases it (:1)", name, W, S);
    redisFree(c);
    check_gone(t, name, one_write);
}

int main(void)
{
    lk_require_real_proxy();
    plan_lazy();
    redis = hp_redis_start(NULL);
    proxy = lk_proxy_start(redis, "deploy_multi", "rule lock: enforce", logpath, sizeof logpath);

    const hp_proc *sides[] = { redis, proxy };
    for (int s = 0; s < 2; s++) {
        for (int one = 1; one >= 0; one--) {
            const hp_proc *t = sides[s];
            run_case(t, "SETNX DEL", case_del, one);
            check_gone(t, "SETNX DEL", one);
            run_case(t, "SETNX EXPIRE 10", case_expire, one);
            check_held(t, "SETNX EXPIRE 10", one, "1");
            run_case(t, "SETNX EXPIRE DEL", case_all, one);
            check_gone(t, "SETNX EXPIRE DEL", one);
            run_case(t, "SET NX PX, PEXPIRE 10000", case_px, one);
            check_held(t, "SET NX PX, PEXPIRE 10000", one, "t");
        }
    }

    is_int(hp_stop(proxy, 10000), 0, "the proxy exits 0 on SIGTERM");
    return 0;
}
