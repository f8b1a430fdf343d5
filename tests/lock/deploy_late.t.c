/* Late releases (design9.md, late detection per connection): a holder whose lease ran out
 * while it worked, and whose lock was taken by someone else meanwhile, must not delete the
 * new holder's lock with its DEL, whichever host the new holder is on.
 *
 *   other host   X (127.0.0.1) SET lock:l x NX PX 300; 500 ms later Y (127.0.0.2) SET lock:l
 *                y NX PX 10000; X's DEL lock:l -> :0, the key is still y, late_release logged.
 *   same host    the same with X and Y two connections of one address (one application
 *                instance, owner=auto): X's DEL is refused as late too, because lateness is
 *                tracked per connection.
 * Straight to Redis X's DEL deletes Y's lock (:1): the unsafe outcome, shown for reference.
 * After each case Y still releases its own lock (:1). Keys differ per case: the audit log
 * rate-limits identical events within a second. */
#include "lock/deploy_util.h"

static hp_proc *redis, *proxy;
static char logpath[4096];

static void late_case(const hp_proc *t, const char *key, int other_host)
{
    const char *S = t == proxy ? "proxy" : "direct";
    const char *H = other_host ? "other host" : "same host";
    lk_flushall(redis);
    redisContext *x = lk_connect(t);
    redisContext *y = other_host ? dp_connect_from(t, "127.0.0.2") : lk_connect(t);
    if (y == NULL) hp_abort("cannot connect from 127.0.0.2");
    is_string(lk_str(x, "SET %s x NX PX 300", key), "+OK", "%s, %s: X acquires with PX 300", H, S);
    hp_sleep_ms(500);
    is_string(lk_pstr(redis, "EXISTS %s", key), ":0", "%s, %s: X's lease ended (500 ms later)", H, S);
    is_string(lk_str(y, "SET %s y NX PX 10000", key), "+OK", "%s, %s: Y acquires with PX 10000", H, S);
    const char *del = lk_str(x, "DEL %s", key);
    if (t != proxy) {
        is_string(del, ":1", "%s, direct: X's late DEL deletes Y's lock (the unsafe outcome)", H);
    } else {
        is_string(del, ":0", "%s, proxy: X's late DEL deletes nothing (:0)", H);
        is_string(lk_pstr(redis, "GET %s", key), "y", "%s, proxy: the key is still Y's", H);
        long long pttl = hp_cmd_int(redis, "PTTL %s", key);
        ok(pttl > 5000 && pttl <= 10000, "%s, proxy: with Y's TTL (PTTL %lld)", H, pttl);
        ok(lk_log_wait(logpath, "late_release", key, 5000), "%s, proxy: late_release logged", H);
        /* X tries again: still late, still refused. */
        is_string(lk_str(x, "DEL %s", key), ":0", "%s, proxy: X's second DEL is refused too", H);
        is_string(lk_str(x, "PEXPIRE %s 60000", key), ":0",
                  "%s, proxy: X cannot stretch Y's lock either (PEXPIRE :0)", H);
        long long after = hp_cmd_int(redis, "PTTL %s", key);
        ok(after > 0 && after <= 10000, "%s, proxy: Y's TTL unchanged by X (PTTL %lld)", H, after);
        is_string(lk_str(y, "DEL %s", key), ":1", "%s, proxy: Y releases its own lock", H);
        is_string(lk_pstr(redis, "EXISTS %s", key), ":0", "%s, proxy: the lock is gone", H);
        is_string(lk_str(x, "SET %s x2 NX PX 5000", key), "+OK", "%s, proxy: X can acquire again afterwards", H);
        is_string(lk_str(x, "DEL %s", key), ":1", "%s, proxy: and release its new lock (:1)", H);
    }
    redisFree(x);
    redisFree(y);
}

int main(void)
{
    lk_require_real_proxy();
    plan_lazy();
    redis = hp_redis_start(NULL);
    proxy = lk_proxy_start(redis, "deploy_late", "rule lock: enforce", logpath, sizeof logpath);

    if (!dp_have_other_host(proxy)) {
        skip(1, "127.0.0.2 cannot be used as a client address here: other-host case skipped");
    } else {
        hp_cmd_ok(redis, "CONFIG SET protected-mode no");   /* 127.0.0.2 straight to Redis */
        late_case(redis, "lock:l", 1);
        late_case(proxy, "lock:l", 1);
    }
    late_case(redis, "lock:l:same", 0);
    late_case(proxy, "lock:l:same", 0);

    is_int(hp_stop(proxy, 10000), 0, "the proxy exits 0 on SIGTERM");
    return 0;
}
