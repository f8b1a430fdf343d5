/* Two proxies in front of one Redis, as a deployment with a proxy per application host (or
 * two behind a load balancer) has them, and a proxy restarted while locks are held. The
 * leases are records in Redis (design9.md), so any proxy knows any lock; the owner is the
 * application instance (owner=auto): for loopback clients "host:<instance-name>/<client ip>",
 * and both proxies here have the default instance name (the host name).
 *
 *   acquire on A, release on B, same client address   DEL :1, key gone
 *   acquire on A, renew on B                            PEXPIRE 20000 :1, PTTL > 15000
 *   acquire on A, another host (127.0.0.2) DELs on B    :0, key kept, foreign_release in B's log
 *   acquire on A, A restarts (SIGKILL + start)          DEL through the new A :1, key gone
 * Straight to Redis, the other host's DEL deletes the lock (:1): the unsafe outcome the
 * proxies are there to prevent. */
#include "lock/deploy_util.h"

static hp_proc *redis, *pa, *pb;
static char log_a[4096], log_b[4096];

static void acquire_on_a(const char *key, const char *tok, int px, const char *what)
{
    redisContext *a = lk_connect(pa);
    is_string(lk_str(a, "SET %s %s NX PX %d", key, tok, px), "+OK", "%s: acquired through proxy A", what);
    redisFree(a);
}

int main(void)
{
    lk_require_real_proxy();
    plan_lazy();
    redis = hp_redis_start(NULL);
    pa = lk_proxy_start(redis, "deploy_two_a", "rule lock: enforce", log_a, sizeof log_a);
    pb = lk_proxy_start(redis, "deploy_two_b", "rule lock: enforce", log_b, sizeof log_b);

    /* Release through the other proxy. */
    lk_flushall(redis);
    {
        redisContext *a = lk_connect(pa), *b = lk_connect(pb);
        is_string(lk_str(a, "SET lock:t tok NX PX 5000"), "+OK", "release on B: acquired through proxy A");
        is_int(dp_count_records(redis), 1, "release on B: the lease is a record in Redis (keys: %s)",
               dp_list_keys(redis, DP_RECORD_PREFIX));
        is_string(lk_str(b, "DEL lock:t"), ":1", "release on B: DEL through proxy B answers :1");
        is_string(lk_pstr(redis, "EXISTS lock:t"), ":0", "release on B: the lock is gone");
        is_int(dp_count_records(redis), 0, "release on B: its lease record is gone too");
        lk_flushall(redis);
        is_string(lk_str(a, "SET lock:t tok2 NX PX 5000"), "+OK", "release on B: A's connection acquires again");
        is_string(lk_str(a, "DEL lock:t"), ":1", "release on B: and releases on its own proxy");
        redisFree(a);
        redisFree(b);
    }

    /* Renew through the other proxy. */
    lk_flushall(redis);
    {
        redisContext *a = lk_connect(pa), *b = lk_connect(pb);
        is_string(lk_str(a, "SET lock:t tok NX PX 5000"), "+OK", "renew on B: acquired through proxy A");
        is_string(lk_str(b, "PEXPIRE lock:t 20000"), ":1", "renew on B: PEXPIRE 20000 through proxy B answers :1");
        long long pttl = hp_cmd_int(redis, "PTTL lock:t");
        ok(pttl > 15000 && pttl <= 20000, "renew on B: the lock's PTTL is > 15000 (%lld)", pttl);
        is_string(lk_pstr(redis, "GET lock:t"), "tok", "renew on B: still the holder's token");
        is_string(lk_str(a, "DEL lock:t"), ":1", "renew on B: the holder releases through A");
        is_string(lk_pstr(redis, "EXISTS lock:t"), ":0", "renew on B: the lock is gone");
        redisFree(a);
        redisFree(b);
    }

    /* Another host releasing through B. */
    if (!dp_have_other_host(pb)) {
        skip(5, "127.0.0.2 cannot be used as a client address here");
    } else {
        lk_flushall(redis);
        /* Redis alone, for reference: anyone's DEL deletes. (Redis refuses non-loopback
         * clients in protected mode; 127.0.0.2 counts as one.) */
        hp_cmd_ok(redis, "CONFIG SET protected-mode no");
        {
            redisContext *a = lk_connect(redis), *o = dp_connect_from(redis, "127.0.0.2");
            lk_str(a, "SET lock:t tok NX PX 5000");
            is_string(lk_str(o, "DEL lock:t"), ":1", "other host, direct: Redis alone lets another host delete the lock");
            redisFree(a);
            redisFree(o);
        }
        lk_flushall(redis);
        redisContext *a = lk_connect(pa), *o = dp_connect_from(pb, "127.0.0.2");
        is_string(lk_str(a, "SET lock:t tok NX PX 5000"), "+OK", "other host: acquired through proxy A");
        is_string(lk_str(o, "DEL lock:t"), ":0", "other host: its DEL through proxy B is refused (:0)");
        is_string(lk_pstr(redis, "GET lock:t"), "tok", "other host: the lock is kept");
        ok(lk_log_wait(log_b, "foreign_release", "lock:t", 5000), "other host: foreign_release in proxy B's log");
        is_string(lk_str(a, "DEL lock:t"), ":1", "other host: the holder still releases it through A");
        redisFree(a);
        redisFree(o);
    }

    /* A restarts while the lock is held. */
    lk_flushall(redis);
    acquire_on_a("lock:t", "tok3", 10000, "restart");
    long long t0 = hp_now_ms();
    is_int(hp_restart(pa), 0, "restart: proxy A was killed and started again");
    diag("restart took %lld ms", hp_now_ms() - t0);
    is_string(lk_pstr(redis, "GET lock:t"), "tok3", "restart: the lock is still held");
    is_int(dp_count_records(redis), 1, "restart: its lease record is still in Redis");
    {
        redisContext *a = lk_connect(pa);
        is_string(lk_str(a, "DEL lock:t"), ":1", "restart: DEL through the restarted proxy A answers :1");
        is_string(lk_pstr(redis, "EXISTS lock:t"), ":0", "restart: the lock is gone");
        is_int(dp_count_records(redis), 0, "restart: no lease record left");
        redisFree(a);
    }
    /* The same release through B after A restarted (B never saw this lock acquired). */
    lk_flushall(redis);
    acquire_on_a("lock:t", "tok4", 10000, "restart, release on B");
    is_int(hp_restart(pa), 0, "restart, release on B: proxy A restarted again");
    {
        redisContext *b = lk_connect(pb);
        is_string(lk_str(b, "DEL lock:t"), ":1", "restart, release on B: DEL through B answers :1");
        is_string(lk_pstr(redis, "EXISTS lock:t"), ":0", "restart, release on B: the lock is gone");
        redisFree(b);
    }

    is_int(hp_stop(pa, 10000), 0, "proxy A exits 0 on SIGTERM");
    is_int(hp_stop(pb, 10000), 0, "proxy B exits 0 on SIGTERM");
    return 0;
}
