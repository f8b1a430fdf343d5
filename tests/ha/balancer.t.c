/* A shared tier: two lockproxy instances behind haproxy in TCP mode (round robin, health
 * checks), one Redis. Applications connect to the balancer and cannot tell which proxy they
 * reach; the leases are records in Redis, so that does not matter:
 *
 *   connection 1 and 2 through the balancer (one on each proxy)
 *   lock taken on 1; checked (GET), renewed (PEXPIRE) and released (DEL :1) on 2
 *   a lock without TTL on each (rule ttl=2s): both renewed past their TTL by their proxies
 *   one proxy is killed (SIGKILL): exactly one of the two connections dies; the lock held
 *   through the dead proxy is no longer renewed and ends within its TTL; the other is still
 *   renewed; new connections through the balancer reach the surviving proxy, and one of
 *   them releases the surviving lock (DEL :1).
 * The time from the kill to the end of the dead proxy's lock is shown, not asserted. */
#include "ha/ha_util.h"

static hp_proc *redis, *pa, *pb;
static ha_child hap;
static int hport;
static char log_a[4096], log_b[4096];

static redisContext *via_balancer(void)
{
    redisContext *c = ha_connect_port(hport);
    if (c == NULL) hp_abort("cannot connect to haproxy on %d", hport);
    return c;
}

/* Whether a new connection through the balancer answers PING. */
static int balancer_pings(void)
{
    redisContext *c = ha_connect_port(hport);
    if (c == NULL) return 0;
    redisReply *r = redisCommand(c, "PING");
    int good = r != NULL && r->type == REDIS_REPLY_STATUS && strcmp(r->str, "PONG") == 0;
    freeReplyObject(r);
    redisFree(c);
    return good;
}

int main(void)
{
    lk_require_real_proxy();
    if (!lk_have_program("haproxy")) skip_all("haproxy is not installed (sh scripts/deps.sh)");
    plan_lazy();
    redis = hp_redis_start(NULL);
    pa = lk_proxy_start(redis, "bal_a", "rule lock: enforce ttl=2s", log_a, sizeof log_a);
    pb = lk_proxy_start(redis, "bal_b", "rule lock: enforce ttl=2s", log_b, sizeof log_b);

    hport = hp_free_port();
    char cfg[2048];
    snprintf(cfg, sizeof cfg,
             "global\n  maxconn 1000\n"
             "defaults\n  mode tcp\n  timeout connect 2s\n  timeout client 60s\n  timeout server 60s\n"
             "  retries 3\n  option redispatch\n"
             "frontend fe\n  bind 127.0.0.1:%d\n  default_backend be\n"
             "backend be\n  balance roundrobin\n"
             "  server a 127.0.0.1:%d check inter 200ms fall 1 rise 1\n"
             "  server b 127.0.0.1:%d check inter 200ms fall 1 rise 1\n",
             hport, pa->port, pb->port);
    const char *cfgpath = lk_write_file("haproxy.cfg", cfg);
    const char *argv[] = { "haproxy", "-f", cfgpath, "-db", NULL };
    ha_start(&hap, "haproxy", argv, -1);
    if (!ha_wait_pong(hport, 15000)) { ha_log_tail(hap.log, 20); hp_abort("haproxy did not start"); }
    hp_sleep_ms(500);   /* the first health checks have passed: both servers are up */

    redisContext *c[2] = { via_balancer(), via_balancer() };

    /* Taken through one proxy, checked, renewed and released through the other. */
    is_string(lk_str(c[0], "SET lock:bal:x tokx NX PX 10000"), "+OK", "cross: acquired on connection 1");
    is_string(lk_str(c[1], "GET lock:bal:x"), "tokx", "cross: connection 2 sees the holder's token");
    is_string(lk_str(c[1], "PEXPIRE lock:bal:x 20000"), ":1", "cross: connection 2 renews it (PEXPIRE :1)");
    long long pttl = hp_cmd_int(redis, "PTTL lock:bal:x");
    ok(pttl > 15000, "cross: the renewal is in Redis (PTTL %lld)", pttl);
    is_string(lk_str(c[1], "DEL lock:bal:x"), ":1", "cross: connection 2 releases it (DEL :1)");
    is_string(lk_pstr(redis, "EXISTS lock:bal:x"), ":0", "cross: the lock is gone");
    is_int(dp_count_records(redis), 0, "cross: its lease record is gone too");

    /* One renewed lock per connection. */
    is_string(lk_str(c[0], "SET lock:bal:r0 t0 NX"), "+OK", "renewal: connection 1 takes a lock without TTL");
    is_string(lk_str(c[1], "SET lock:bal:r1 t1 NX"), "+OK", "renewal: connection 2 takes a lock without TTL");
    hp_sleep_ms(3500);
    ok(hp_cmd_int(redis, "PTTL lock:bal:r0") > 0 && hp_cmd_int(redis, "PTTL lock:bal:r1") > 0,
       "renewal: after 3.5 s (> ttl=2s) both are still held: each proxy renews its own");

    /* Proxy A dies. */
    hp_kill(pa);
    long long killed = hp_now_ms();
    int dead = -1, ndead = 0;
    for (int i = 0; i < 2; i++) {
        redisReply *r = redisCommand(c[i], "PING");
        if (r == NULL || r->type != REDIS_REPLY_STATUS) { dead = i; ndead++; }
        freeReplyObject(r);
    }
    is_int(ndead, 1, "death: exactly one of the two connections went with the proxy (so they were on different ones)");
    if (dead < 0) dead = 0;
    int live = 1 - dead;
    char dkey[32], lkey[32];
    snprintf(dkey, sizeof dkey, "lock:bal:r%d", dead);
    snprintf(lkey, sizeof lkey, "lock:bal:r%d", live);
    long long left = hp_cmd_int(redis, "PTTL %s", dkey);
    ok(left > 0 && left <= 2000, "death: the dead proxy's lock still has its TTL, at most ttl (%lld ms)", left);
    ok(lk_wait_gone(redis, dkey, 10000), "death: it is no longer renewed and ends by its TTL");
    diag("the lock held through the killed proxy ended %lld ms after the kill (ttl=2s)", hp_now_ms() - killed);
    hp_sleep_ms(2500);
    ok(hp_cmd_int(redis, "PTTL %s", lkey) > 0, "death: the lock held through the live proxy is still renewed");
    is_int(dp_count_records(redis), 1, "death: one lease record is left, the live lock's");

    /* The balancer sends new connections to the survivor. */
    int all = 1;
    long long until = hp_now_ms() + 10000;
    while (!balancer_pings() && hp_now_ms() < until) hp_sleep_ms(100);
    for (int i = 0; i < 10; i++) all &= balancer_pings();
    ok(all, "balancer: ten new connections after the death are all answered (by the survivor)");
    redisContext *n = via_balancer();
    is_string(lk_str(n, "DEL %s", lkey), ":1", "balancer: a new connection releases the surviving lock (DEL :1)");
    redisFree(n);
    is_int(dp_count_records(redis), 0, "balancer: no lease record left");

    redisFree(c[0]);
    redisFree(c[1]);
    ha_stop(&hap, 5000);
    is_int(hp_stop(pb, 10000), 0, "the surviving proxy exits 0 on SIGTERM");
    return 0;
}
