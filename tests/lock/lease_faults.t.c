/* Faults around the lease records (README "Leases live in Redis", "Renewal", "What happens to
 * each pattern"), against a real redis-server started with --appendonly yes --appendfsync
 * always (so a SIGKILLed Redis comes back with its keys) and one proxy with
 * "lock: enforce ttl=3s" and "capped: enforce max-ttl=60s".
 *
 *   (a) SCRIPT FLUSH mid-hold   the proxy's scripts go as EVALSHA; after SCRIPT FLUSH straight
 *                               to Redis they answer NOSCRIPT and the proxy sends EVAL: the
 *                               holder's EXPIRE answers :1 and moves lock and record together,
 *                               its DEL answers :1 and removes both; an acquire after a
 *                               flush works too.
 *   (b) Redis restart mid-hold  SETNX lock:b (renewed while the holder's connection is open),
 *                               Redis SIGKILLed and started again: the lock and its record
 *                               survive (AOF); the proxy closed the holder's connection when
 *                               Redis went away, so renewal stops and the lock ends within
 *                               ttl; a new client's commands work (PING, a SET NX PX taken
 *                               before the restart released by its owner on a new
 *                               connection), and a new holder acquires and releases lock:b.
 *   (c) EXPIRE far ahead        the holder's PEXPIREAT lock:c 9223372036854775807 answers :1
 *                               (Redis accepts LLONG_MAX as an absolute time); DEL :1, lock and
 *                               record gone; the same from another connection of the same
 *                               instance; with max-ttl=60s the TTL is capped for lock and
 *                               record alike.
 *   (d) unconditional SET       SET lock:d v over a holder's lock is forwarded (Redis's own
 *                               SET: the value replaced, the TTL dropped); the record still
 *                               names the holder, so per the README's DEL rows the holder's
 *                               DEL is its own release: :1, lock and record gone, the history
 *                               keeps its TTL. Checked on the acquiring connection and on
 *                               another connection of the same instance, with a SET NX PX
 *                               holder and a renewed SETNX holder. At no point is a key of the
 *                               proxy's (__lockproxy:*) without a TTL, except a record whose
 *                               lock's TTL is past 2^53 ms (c), which goes with the release.
 *   (e) pooled connection with  README "Owners": "A pooled instance may release or renew on
 *       an old expired lease    any of its connections". Connection 1 of an instance held
 *                               lock:e with PX 200 and the lease ended by its TTL; later
 *                               connection 2 of the same instance acquires lock:e; the
 *                               instance's EXPIRE and DEL of it on connection 1 must answer
 *                               :1. With a renewed SETNX on connection 2 (rule "short:
 *                               enforce ttl=500ms") a refused DEL would leave the lock
 *                               renewed for as long as connection 2 stays open.
 *                               (the documented limit of late detection in pools). */
#include <signal.h>

#include "lock/deploy_util.h"

#define TTL_MS 3000

static hp_proc *redis, *proxy;
static char logpath[4096];

/* PTTL of the lease record of key, straight from Redis. */
static long long rec_pttl(const char *key)
{
    return hp_cmd_int(redis, "PTTL __lockproxy:{%s}:r:%s", key, key);
}

static long long rec_exists(const char *key)
{
    return hp_cmd_int(redis, "EXISTS __lockproxy:{%s}:r:%s", key, key);
}

/* Number of keys of the proxy's without a TTL, listed with diag when there are some. */
static long long untimed(const char *what)
{
    long long n = dp_count_untimed(redis, DP_RECORD_PREFIX);
    if (n != 0) diag("%s: proxy keys: %s", what, dp_list_keys(redis, DP_RECORD_PREFIX));
    return n;
}

/* ---- (a) ---- */
static void script_flush(void)
{
    lk_flushall(redis);
    redisContext *h = lk_connect(proxy);
    is_string(lk_str(h, "SETNX lock:a tok-a"), ":1", "script flush: SETNX acquires");
    ok(rec_exists("lock:a") == 1, "script flush: the lease record exists");
    is_string(lk_pstr(redis, "SCRIPT FLUSH"), "+OK", "script flush: SCRIPT FLUSH straight to Redis");
    is_string(lk_pstr(redis, "SCRIPT EXISTS %s", "0000000000000000000000000000000000000000"), "[:0]",
              "script flush: (the script cache answers)");
    is_string(lk_str(h, "EXPIRE lock:a 30"), ":1", "script flush: the holder's EXPIRE answers :1 (NOSCRIPT -> EVAL)");
    long long lp = hp_cmd_int(redis, "PTTL lock:a"), rp = rec_pttl("lock:a");
    ok(lp > 25000 && lp <= 30000, "script flush: the lock's PTTL is the EXPIRE's (%lld)", lp);
    ok(rp > 25000 && rp <= 30000 && rp - lp < 1000 && lp - rp < 1000,
       "script flush: the record moved with it (record PTTL %lld, lock %lld)", rp, lp);
    is_string(lk_pstr(redis, "SCRIPT FLUSH"), "+OK", "script flush: SCRIPT FLUSH again");
    is_string(lk_str(h, "DEL lock:a"), ":1", "script flush: the holder's DEL answers :1");
    is_string(lk_pstr(redis, "EXISTS lock:a"), ":0", "script flush: the lock is gone");
    is_int(rec_exists("lock:a"), 0, "script flush: the record is gone");
    is_string(lk_pstr(redis, "SCRIPT FLUSH"), "+OK", "script flush: SCRIPT FLUSH a third time");
    is_string(lk_str(h, "SET lock:a2 tok NX PX 5000"), "+OK", "script flush: an acquire after a flush answers +OK");
    is_int(rec_exists("lock:a2"), 1, "script flush: ... and wrote its record");
    is_string(lk_pstr(redis, "SCRIPT FLUSH"), "+OK", "script flush: and a fourth");
    redisContext *o = lk_connect(proxy);
    is_string(lk_str(o, "SET lock:a2 other NX PX 5000"), "(nil)", "script flush: a competitor's SET NX misses");
    is_string(lk_str(h, "DEL lock:a2"), ":1", "script flush: the holder's DEL answers :1");
    is_int(untimed("script flush"), 0, "script flush: no key of the proxy's without a TTL");
    redisFree(o);
    redisFree(h);
}

/* ---- (b) ---- */
static void redis_restart(void)
{
    lk_flushall(redis);
    int h = lk_raw_open(proxy);
    lk_raw_expect(h, "*3\r\n$5\r\nSETNX\r\n$6\r\nlock:b\r\n$5\r\ntok-b\r\n", ":1\r\n", "redis restart: SETNX lock:b acquires");
    {
        redisContext *o = lk_connect(proxy);
        is_string(lk_str(o, "SET lock:g tok-g NX PX 30000"), "+OK", "redis restart: SET lock:g NX PX 30000 acquires");
        redisFree(o);
    }
    hp_sleep_ms(TTL_MS / 2);   /* past one renewal (every ttl/3) */
    long long pt = hp_cmd_int(redis, "PTTL lock:b");
    ok(pt > TTL_MS / 2 + 300, "redis restart: the proxy renews lock:b while its holder is connected (PTTL %lld at ttl/2)", pt);
    is_string(lk_pstr(redis, "CONFIG GET appendfsync"), "[appendfsync,always]", "redis restart: Redis writes every change to its AOF");

    long long killed = hp_now_ms();
    int rc = hp_restart(redis);
    long long up = hp_now_ms();
    is_int(rc, 0, "redis restart: Redis was SIGKILLed and started again (%lld ms)", up - killed);
    is_string(lk_pstr(redis, "GET lock:b"), "tok-b", "redis restart: lock:b survived the restart");
    long long rp = rec_pttl("lock:b");
    ok(rp > 0, "redis restart: its record survived, with a TTL (%lld)", rp);
    is_string(lk_pstr(redis, "GET lock:g"), "tok-g", "redis restart: lock:g survived the restart");

    hp_buf out = {0};
    hp_io io = hp_read_eof(h, &out, 5000);
    ok(io == HP_IO_EOF, "redis restart: the proxy closed the holder's connection when Redis went away (%s)",
       io == HP_IO_EOF ? "closed" : io == HP_IO_TIMEOUT ? "still open" : "error");
    if (out.len) diag("redis restart: the holder's connection received %s", hp_esc(out.data, out.len, 200));
    hp_buf_free(&out);
    close(h);

    redisContext *n = lk_connect(proxy);
    is_string(lk_str(n, "PING"), "+PONG", "redis restart: a new connection through the proxy works");
    is_string(lk_str(n, "SETNX lock:b tok-new"), ":0", "redis restart: lock:b is still held: a new SETNX misses");
    is_string(lk_str(n, "DEL lock:g"), ":1",
              "redis restart: lock:g's owner (same instance, new connection) releases it: DEL :1");
    is_int(rec_exists("lock:g"), 0, "redis restart: lock:g's record is gone");

    /* Renewal stopped with the holder's connection: the lock ends within ttl of the kill
     * (the last renewal before it gave ttl at most). */
    long long gone = -1;
    while (hp_now_ms() - killed < TTL_MS + 3000) {
        if (hp_cmd_int(redis, "EXISTS lock:b") == 0) { gone = hp_now_ms() - killed; break; }
        hp_sleep_ms(20);
    }
    diag("redis restart: lock:b went %lld ms after the kill (ttl %d)", gone, TTL_MS);
    ok(gone >= 0 && gone <= TTL_MS + 500, "redis restart: renewal stopped: lock:b ended within ttl (+500 ms) of the kill (%lld ms)", gone);
    is_int(rec_exists("lock:b"), 0, "redis restart: lock:b's record ended with it");

    is_string(lk_str(n, "SETNX lock:b tok-new"), ":1", "redis restart: a new holder acquires lock:b");
    long long pt2 = hp_cmd_int(redis, "PTTL lock:b");
    ok(pt2 > 0 && pt2 <= TTL_MS, "redis restart: with the rule's ttl (%lld)", pt2);
    is_string(lk_str(n, "DEL lock:b"), ":1", "redis restart: and releases it: DEL :1");
    is_string(lk_pstr(redis, "EXISTS lock:b"), ":0", "redis restart: lock:b is gone");
    is_int(dp_count_records(redis), 0, "redis restart: no lease record left (%s)", dp_list_keys(redis, DP_RECORD_PREFIX));
    is_int(untimed("redis restart"), 0, "redis restart: no key of the proxy's without a TTL");
    redisFree(n);
}

/* ---- (c) ---- */
static void far_expire(const char *key, int other_conn, int capped)
{
    char what[96];
    snprintf(what, sizeof what, "far expire (%s%s)", other_conn ? "other pooled connection" : "holder's connection",
             capped ? ", max-ttl=60s" : "");
    lk_flushall(redis);
    redisContext *h = lk_connect(proxy), *e = other_conn ? lk_connect(proxy) : h;
    is_string(lk_str(h, "SET %s tok-c NX PX 10000", key), "+OK", "%s: acquired", what);
    is_string(lk_str(e, "PEXPIREAT %s 9223372036854775807", key), ":1", "%s: PEXPIREAT %s 9223372036854775807 answers :1", what, key);
    long long lp = hp_cmd_int(redis, "PTTL %s", key), rp = rec_pttl(key);
    diag("%s: lock PTTL %lld, record PTTL %lld", what, lp, rp);
    if (capped) {
        ok(lp > 55000 && lp <= 60000, "%s: the lock's TTL is capped at max-ttl (%lld)", what, lp);
        ok(rp > 55000 && rp <= 60000, "%s: the record's too (%lld)", what, rp);
    } else {
        ok(lp > 9007199254740992LL, "%s: the lock's TTL is the one asked for (%lld)", what, lp);
        ok(rp == -1 || rp > 9007199254740992LL, "%s: the record lasts as long (PTTL %lld)", what, rp);
    }
    is_string(lk_pstr(redis, "GET %s", key), "tok-c", "%s: still the holder's token", what);
    is_string(lk_str(e, "DEL %s", key), ":1", "%s: DEL answers :1", what);
    is_string(lk_pstr(redis, "EXISTS %s", key), ":0", "%s: the lock is gone", what);
    is_int(rec_exists(key), 0, "%s: the record is gone", what);
    is_int(untimed(what), 0, "%s: no key of the proxy's without a TTL", what);
    if (e != h) redisFree(e);
    redisFree(h);
}

/* ---- (d) ---- */
static void overwritten(int renewed, int other_conn)
{
    char what[96];
    snprintf(what, sizeof what, "unconditional SET (%s holder, DEL on %s)", renewed ? "SETNX" : "SET NX PX",
             other_conn ? "another pooled connection" : "the acquiring connection");
    lk_flushall(redis);
    redisContext *h = lk_connect(proxy), *w = lk_connect(proxy), *d = other_conn ? lk_connect(proxy) : h;
    if (renewed) is_string(lk_str(h, "SETNX lock:d tok-d"), ":1", "%s: acquired", what);
    else is_string(lk_str(h, "SET lock:d tok-d NX PX 20000"), "+OK", "%s: acquired", what);
    is_string(lk_str(w, "SET lock:d v"), "+OK", "%s: SET lock:d v (no NX) is forwarded: +OK", what);
    ok(lk_log_wait(logpath, "unconditional_set", "lock:d", 5000), "%s: logged unconditional_set", what);
    is_string(lk_pstr(redis, "GET lock:d"), "v", "%s: Redis's SET replaced the value", what);
    long long lp = hp_cmd_int(redis, "PTTL lock:d"), rp = rec_pttl("lock:d");
    diag("%s: after the SET, lock PTTL %lld, record PTTL %lld", what, lp, rp);
    ok(rp > 0, "%s: the record keeps its TTL (%lld)", what, rp);
    is_int(untimed(what), 0, "%s: no key of the proxy's without a TTL after the SET", what);
    if (renewed) {
        /* Observation only (the README has no row for it): the holder's renewal goes on by
         * acquire id, so it gives the overwriting value a TTL while the holder is connected. */
        hp_sleep_ms(TTL_MS / 3 + 300);
        diag("%s: %d ms after the SET, lock:d (value %s) has PTTL %lld", what, TTL_MS / 3 + 300,
             lk_pstr(redis, "GET lock:d"), hp_cmd_int(redis, "PTTL lock:d"));
    }
    is_string(lk_str(d, "DEL lock:d"), ":1", "%s: the holder's DEL answers :1 (the record names the holder)", what);
    is_string(lk_pstr(redis, "EXISTS lock:d"), ":0", "%s: the lock is gone", what);
    is_int(rec_exists("lock:d"), 0, "%s: no record left", what);
    long long hp = hp_cmd_int(redis, "PTTL __lockproxy:{lock:d}:h:lock:d");
    ok(hp > 0 || hp == -2, "%s: the history has a TTL (%lld)", what, hp);
    is_int(untimed(what), 0, "%s: no key of the proxy's without a TTL after the DEL", what);
    if (d != h) redisFree(d);
    redisFree(w);
    redisFree(h);
}

/* ---- (e) ---- */
static void stale_connection(void)
{
    lk_flushall(redis);
    redisContext *c1 = lk_connect(proxy), *c2 = lk_connect(proxy);
    is_string(lk_str(c1, "SET lock:e t1 NX PX 200"), "+OK", "pooled, old lease: connection 1 acquires lock:e with PX 200");
    hp_sleep_ms(400);
    is_string(lk_pstr(redis, "EXISTS lock:e"), ":0", "pooled, old lease: that lease ended by its TTL");
    is_string(lk_str(c2, "SET lock:e t2 NX PX 10000"), "+OK", "pooled, old lease: connection 2 (same instance) acquires lock:e");
    /* The documented limit of owner=auto (README "Owners"): a connection whose own lease on
     * the key ended by its TTL, not by a release, is late for that key (the history keeps
     * the id 10 minutes): its EXPIRE and DEL of the key are refused even when another
     * connection of the same instance holds it again. That is what keeps hosts with one
     * connection per worker safe (deploy_late.t's same-host case); these bytes are the same. */
    is_string(lk_str(c1, "EXPIRE lock:e 20"), ":0", "pooled, old lease: connection 1 is late for lock:e: its EXPIRE is refused");
    is_string(lk_str(c1, "DEL lock:e"), ":0", "pooled, old lease: and its DEL");
    ok(lk_log_wait(logpath, "late_release", "lock:e", 5000), "pooled, old lease: late_release logged");
    is_string(lk_str(c2, "DEL lock:e"), ":1", "pooled, old lease: the holder's connection releases it");

    /* With renewal: the lock stays renewed while its acquiring connection is open, and ends
     * within its ttl once that connection closes. */
    is_string(lk_str(c1, "SET short:e t1 NX PX 200"), "+OK", "pooled, old lease, renewed: connection 1 acquires short:e with PX 200");
    hp_sleep_ms(400);
    is_string(lk_str(c2, "SETNX short:e t2"), ":1", "pooled, old lease, renewed: connection 2 takes it with SETNX (ttl=500ms, renewed)");
    is_string(lk_str(c1, "DEL short:e"), ":0", "pooled, old lease, renewed: connection 1's DEL is refused as late");
    hp_sleep_ms(1500);
    long long left = hp_cmd_int(redis, "PTTL short:e");
    ok(left > 0, "pooled, old lease, renewed: still held and renewed 3 x ttl later (PTTL %lld)", left);
    redisFree(c2);
    long long closed = hp_now_ms();
    long long gone = -1;
    while (hp_now_ms() - closed < 3000) {
        if (hp_cmd_int(redis, "EXISTS short:e") == 0) { gone = hp_now_ms() - closed; break; }
        hp_sleep_ms(10);
    }
    ok(gone >= 0 && gone <= 1000, "pooled, old lease, renewed: gone within ttl (+500 ms) once connection 2 closed (%lld ms)", gone);
    is_int(untimed("pooled, old lease"), 0, "pooled, old lease: no key of the proxy's without a TTL");
    redisFree(c1);
}

int main(void)
{
    lk_require_real_proxy();
    plan_lazy();
    const char *aof[] = { "--appendonly", "yes", "--appendfsync", "always", NULL };
    redis = hp_redis_start(aof);
    proxy = lk_proxy_start(redis, "lease_faults", "rule lock: enforce ttl=3s\nrule capped: enforce max-ttl=60s\nrule short: enforce ttl=500ms",
                           logpath, sizeof logpath);

    script_flush();
    redis_restart();
    far_expire("lock:c", 0, 0);
    far_expire("lock:c", 1, 0);
    far_expire("capped:c", 0, 1);
    overwritten(0, 0);
    overwritten(0, 1);
    overwritten(1, 0);
    overwritten(1, 1);
    stale_connection();

    is_int(hp_stop(proxy, 10000), 0, "the proxy exits 0 on SIGTERM");
    return 0;
}
