/* The seed lock patterns (the unsafe ways of taking and releasing a lock that the enforce
 * rewrites and the lease table are there to make safe), each run twice with the same client
 * code: straight to Redis, where the unsafe outcome shows, and through the proxy in enforce
 * mode, where it does not.
 *
 *   crash between SETNX and EXPIRE       direct: stuck lock     proxy: TTL <= rule ttl
 *   holder overruns, another acquires    direct: DEL frees it   proxy: kept (late_release)
 *   a loser "force deletes"              direct: DEL frees it   proxy: kept (foreign_release)
 *   MULTI SETNX EXPIRE EXEC on a held    direct: TTL moved      proxy: TTL unchanged
 *   pipelined SETNX+EXPIRE (and MULTI)   both :1 :1 and the EXPIRE's TTL
 *   modern lock (SET NX PX + Lua)        the same bytes both ways
 *   pooled acquire/release               client-addr works, connection refuses
 *
 * Two more checks: the lease counts from the time the command was sent, not from its reply
 * (lease_from_send), and SETNX, EXPIRE queued in MULTI one command per write are merged like
 * a pipelined pair (multi_one_per_write).
 *
 * Keys are distinct per scenario: the audit log rate-limits identical events (same event,
 * rule, key and client IP) within a second. */
#include "lock/lock_util.h"

static hp_proc *redis, *proxy;
static char logpath[4096];

static const char policy_text[] =
    "rule lock: enforce ttl=300ms max-ttl=10s renew=off owner=connection\n"
    "rule late: enforce ttl=5s max-ttl=10s owner=connection\n"
    "rule held: enforce ttl=20s max-ttl=60s owner=connection\n"
    "rule pool: enforce ttl=20s owner=client-addr\n";

static const char *side(const hp_proc *t) { return t == proxy ? "proxy" : "direct"; }

/* SETNX key v; EXPIRE key secs, pipelined in one write. Returns the two replies as "a b". */
static const char *setnx_expire_pipelined(redisContext *c, const char *key, const char *v, int secs)
{
    static char out[128];
    redisAppendCommand(c, "SETNX %s %s", key, v);
    redisAppendCommand(c, "EXPIRE %s %d", key, secs);
    void *r1 = NULL, *r2 = NULL;
    redisGetReply(c, &r1);
    redisGetReply(c, &r2);
    snprintf(out, sizeof out, "%s %s", lk_show(r1), lk_show(r2));
    freeReplyObject(r1);
    freeReplyObject(r2);
    return out;
}

/* A client takes a lock with SETNX and dies before its EXPIRE. */
static void seed_crash(const hp_proc *t)
{
    const char *S = side(t);
    lk_flushall(redis);
    redisContext *c = lk_connect(t);
    is_string(lk_str(c, "SETNX lock:crash %s", lk_uuid()), ":1", "crash: %s: SETNX acquires", S);
    redisFree(c);   /* the process is gone before its EXPIRE */
    long long pttl = hp_cmd_int(redis, "PTTL lock:crash");
    redisContext *c2 = lk_connect(t);
    if (t != proxy) {
        is_int(pttl, -1, "crash: direct: the lock is left without a TTL: stuck");
        is_string(lk_str(c2, "SETNX lock:crash %s", lk_uuid()), ":0",
                  "crash: direct: nobody can take it again");
    } else {
        /* -2: it had a TTL and has expired already (a slow machine). */
        ok((pttl > 0 && pttl <= 300) || pttl == -2,
           "crash: proxy: the lock has a TTL within the rule's ttl=300ms (PTTL %lld)", pttl);
        ok(lk_wait_gone(redis, "lock:crash", 5000), "crash: proxy: the lock expires by itself");
        is_string(lk_str(c2, "SETNX lock:crash %s", lk_uuid()), ":1", "crash: proxy: another client takes it then");
        ok(lk_log_wait_text(logpath, "setnx_no_ttl", "lock:crash", "\"detail\":\"ttl=300\"", 5000),
           "crash: proxy: setnx_no_ttl logged with ttl=300");
    }
    redisFree(c2);
}

/* A holder overruns its lease, a second client acquires, the first one DELs.
 * with_expire: the legacy pattern SETNX + PEXPIRE 300 (rule ttl 5s, so the holder's own
 * PEXPIRE sets the lease); otherwise SETNX alone under the rule's ttl=300ms (proxy only:
 * straight to Redis that is the stuck lock of seed_crash). */
static void seed_late(const hp_proc *t, const char *key, int constant, int with_expire)
{
    const char *S = side(t);
    char v1[64], v2[64], name[200];
    snprintf(v1, sizeof v1, "%s", constant ? "1" : lk_uuid());
    snprintf(v2, sizeof v2, "%s", constant ? "1" : lk_uuid());
    snprintf(name, sizeof name, "late release (%s, %s, %s)", constant ? "value 1" : "UUID values",
             with_expire ? "SETNX+PEXPIRE 300" : "SETNX under ttl=300ms", S);
    lk_flushall(redis);
    redisContext *c1 = lk_connect(t), *c2 = lk_connect(t);
    is_string(lk_str(c1, "SETNX %s %s", key, v1), ":1", "%s: the first holder acquires", name);
    if (with_expire) is_string(lk_str(c1, "PEXPIRE %s 300", key), ":1", "%s: and sets its TTL", name);
    ok(lk_wait_gone(redis, key, 5000), "%s: the first holder's lease runs out (PTTL -2)", name);
    /* A margin after the expiry seen in Redis. The proxy counts the lease from the send,
     * before Redis starts the TTL, so its lease has run out too (see lease_from_send below). */
    hp_sleep_ms(100);
    is_string(setnx_expire_pipelined(c2, key, v2, 5), ":1 :1", "%s: a second client acquires", name);
    if (t != proxy) {
        is_string(lk_str(c1, "DEL %s", key), ":1", "%s: the late DEL deletes the second holder's lock", name);
        is_string(lk_pstr(redis, "GET %s", key), "(nil)", "%s: the lock is gone", name);
    } else {
        is_string(lk_str(c1, "DEL %s", key), ":0", "%s: the late DEL deletes nothing", name);
        is_string(lk_pstr(redis, "GET %s", key), v2, "%s: the second holder's lock survives", name);
        long long pttl = hp_cmd_int(redis, "PTTL %s", key);
        ok(pttl > 0 && pttl <= 5000, "%s: with its TTL (PTTL %lld)", name, pttl);
        ok(lk_log_wait(logpath, "late_release", key, 5000), "%s: late_release logged", name);
        is_string(lk_str(c2, "DEL %s", key), ":1", "%s: the second holder releases it", name);
    }
    redisFree(c1);
    redisFree(c2);
}

/* A client whose SETNX failed deletes the lock anyway. */
static void seed_force_delete(const hp_proc *t)
{
    const char *S = side(t);
    lk_flushall(redis);
    redisContext *c1 = lk_connect(t), *c2 = lk_connect(t);
    char v1[64];
    snprintf(v1, sizeof v1, "%s", lk_uuid());
    is_string(lk_str(c1, "SETNX held:force %s", v1), ":1", "force delete: %s: the holder acquires", S);
    is_string(lk_str(c1, "EXPIRE held:force 20"), ":1", "force delete: %s: EXPIRE 20", S);
    is_string(lk_str(c2, "SETNX held:force %s", lk_uuid()), ":0", "force delete: %s: the other client's SETNX fails", S);
    if (t != proxy) {
        is_string(lk_str(c2, "DEL held:force"), ":1", "force delete: direct: its DEL deletes the holder's lock");
        is_string(lk_pstr(redis, "GET held:force"), "(nil)", "force delete: direct: the lock is gone");
    } else {
        is_string(lk_str(c2, "DEL held:force"), ":0", "force delete: proxy: its DEL deletes nothing");
        is_string(lk_pstr(redis, "GET held:force"), v1, "force delete: proxy: the holder's lock survives");
        ok(lk_log_wait(logpath, "foreign_release", "held:force", 5000), "force delete: proxy: foreign_release logged");
        is_string(lk_str(c1, "DEL held:force"), ":1", "force delete: proxy: the holder still releases it");
        is_string(lk_pstr(redis, "EXISTS held:force"), ":0", "force delete: proxy: released");
    }
    redisFree(c1);
    redisFree(c2);
}

/* MULTI; SETNX; EXPIRE; EXEC from another client while the lock is held: once a command per
 * round trip (hiredis), once all in one write (the SETNX+EXPIRE merge inside MULTI). */
static void seed_multi_on_held(const hp_proc *t)
{
    const char *S = side(t);
    lk_flushall(redis);
    redisContext *c1 = lk_connect(t), *c2 = lk_connect(t);
    char v1[64];
    snprintf(v1, sizeof v1, "%s", lk_uuid());
    is_string(lk_str(c1, "SETNX held:multi %s", v1), ":1", "MULTI on a held lock: %s: the holder acquires", S);
    is_string(lk_str(c1, "EXPIRE held:multi 30"), ":1", "MULTI on a held lock: %s: EXPIRE 30", S);
    is_string(lk_str(c2, "MULTI"), "+OK", "MULTI on a held lock: %s: MULTI", S);
    is_string(lk_str(c2, "SETNX held:multi %s", lk_uuid()), "+QUEUED", "MULTI on a held lock: %s: SETNX queued", S);
    is_string(lk_str(c2, "EXPIRE held:multi 5"), "+QUEUED", "MULTI on a held lock: %s: EXPIRE queued", S);
    const char *exec = lk_str(c2, "EXEC");
    long long pttl = hp_cmd_int(redis, "PTTL held:multi");
    if (t != proxy) {
        is_string(exec, "[:0,:1]", "MULTI on a held lock: direct: EXEC [0, 1]: the loser's EXPIRE ran");
        ok(pttl > 0 && pttl <= 5000, "MULTI on a held lock: direct: the holder's TTL was cut to 5 s (PTTL %lld)", pttl);
    } else {
        is_string(exec, "[:0,:0]", "MULTI on a held lock: proxy: EXEC [0, 0]");
        ok(pttl > 5000 && pttl <= 30000, "MULTI on a held lock: proxy: the holder's TTL is unchanged (PTTL %lld)", pttl);
    }

    /* The same in one write. */
    int fd = lk_raw_open(t);
    lk_raw_expect(fd, "MULTI\r\nSETNX held:multi other\r\nEXPIRE held:multi 3\r\nEXEC\r\n",
                  t != proxy ? "+OK\r\n+QUEUED\r\n+QUEUED\r\n*2\r\n:0\r\n:1\r\n"
                             : "+OK\r\n+QUEUED\r\n+QUEUED\r\n*2\r\n:0\r\n:0\r\n",
                  "MULTI on a held lock, one write: %s: EXEC elements", S);
    close(fd);
    pttl = hp_cmd_int(redis, "PTTL held:multi");
    if (t != proxy) ok(pttl > 0 && pttl <= 3000, "MULTI on a held lock, one write: direct: TTL cut (PTTL %lld)", pttl);
    else ok(pttl > 5000, "MULTI on a held lock, one write: proxy: TTL unchanged (PTTL %lld)", pttl);
    is_string(lk_pstr(redis, "GET held:multi"), v1, "MULTI on a held lock: %s: the value is the holder's", S);
    if (t == proxy)
        ok(lk_log_wait(logpath, "foreign_expire", "held:multi", 5000), "MULTI on a held lock: proxy: foreign_expire logged");
    redisFree(c1);
    redisFree(c2);
}

/* SETNX and EXPIRE in one write: the merge into one SET NX PX. */
static void seed_pipelined(const hp_proc *t)
{
    const char *S = side(t);
    lk_flushall(redis);
    int fd = lk_raw_open(t);
    lk_raw_expect(fd, "SETNX lock:pipe tok-a\r\nEXPIRE lock:pipe 7\r\n", ":1\r\n:1\r\n",
                  "pipelined SETNX+EXPIRE: %s: :1 :1", S);
    long long pttl = hp_cmd_int(redis, "PTTL lock:pipe");
    ok(pttl > 1000 && pttl <= 7000, "pipelined SETNX+EXPIRE: %s: the TTL is the EXPIRE's 7 s, not the rule's 300 ms (PTTL %lld)", S, pttl);

    /* Another client, the same pair on the held lock. */
    int fd2 = lk_raw_open(t);
    lk_raw_expect(fd2, "SETNX lock:pipe tok-b\r\nEXPIRE lock:pipe 2\r\n", t != proxy ? ":0\r\n:1\r\n" : ":0\r\n:0\r\n",
                  "pipelined SETNX+EXPIRE on a held lock: %s", S);
    pttl = hp_cmd_int(redis, "PTTL lock:pipe");
    if (t != proxy) ok(pttl > 0 && pttl <= 2000, "pipelined SETNX+EXPIRE on a held lock: direct: the loser moved the TTL (PTTL %lld)", pttl);
    else ok(pttl > 2000, "pipelined SETNX+EXPIRE on a held lock: proxy: the EXPIRE answers :0, TTL unchanged (PTTL %lld)", pttl);

    lk_raw_expect(fd, "MULTI\r\nSETNX lock:pipe2 tok-c\r\nEXPIRE lock:pipe2 7\r\nEXEC\r\n",
                  "+OK\r\n+QUEUED\r\n+QUEUED\r\n*2\r\n:1\r\n:1\r\n", "SETNX+EXPIRE inside MULTI: %s: *2 :1 :1", S);
    pttl = hp_cmd_int(redis, "PTTL lock:pipe2");
    ok(pttl > 1000 && pttl <= 7000, "SETNX+EXPIRE inside MULTI: %s: the TTL is the EXPIRE's (PTTL %lld)", S, pttl);
    close(fd);
    close(fd2);
    if (t == proxy) {
        /* Pipelined, each command is judged on its own (workers may share a connection): the
         * SETNX gets the rule's ttl, then its holder's EXPIRE moves it. */
        ok(lk_log_wait_text(logpath, "setnx_no_ttl", "lock:pipe", "ttl=300", 5000),
           "pipelined SETNX+EXPIRE: proxy: setnx_no_ttl logged with the rule's ttl (not merged)");
        ok(lk_log_wait_text(logpath, "setnx_no_ttl", "lock:pipe2", "ttl=7000", 5000),
           "SETNX+EXPIRE inside MULTI: proxy: setnx_no_ttl logged with the EXPIRE's ttl");
    }
}

/* A modern client lock: SET NX PX with its own token, Lua release and extend. */
#define RELEASE_LUA "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) else return 0 end"
#define EXTEND_LUA "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('pexpire', KEYS[1], ARGV[2]) else return 0 end"

static void seed_modern(void)
{
    hp_buf req = {0};
    hp_buf_cmd(&req, "SET lock:modern tok-1 NX PX 5000");
    hp_buf_cmd(&req, "EVAL %s 1 lock:modern tok-1 8000", EXTEND_LUA);
    hp_buf_cmd(&req, "EVAL %s 1 lock:modern tok-x", RELEASE_LUA);
    hp_buf_cmd(&req, "SET lock:modern tok-2 NX PX 5000");
    hp_buf_cmd(&req, "GET lock:modern");
    hp_buf_cmd(&req, "EVAL %s 1 lock:modern tok-1", RELEASE_LUA);
    hp_buf_cmd(&req, "EXISTS lock:modern");
    hp_buf_cmd(&req, "SET lock:modern tok-2 NX EX 5");
    hp_buf_cmd(&req, "SCRIPT LOAD %s", RELEASE_LUA);
    const char want[] =
        "+OK\r\n:1\r\n:0\r\n$-1\r\n$5\r\ntok-1\r\n:1\r\n:0\r\n+OK\r\n$40\r\n";
    hp_side d = {0}, p = {0};
    hp_step steps[] = { HP_SENDN(req.data, req.len), HP_WAIT_MATCH(want), HP_END };
    hp_diff_ex(redis, proxy, "modern lock (SET NX PX, Lua extend and release)", steps, NULL, &d, &p);
    ok(hp_buf_has(&p.out, want, sizeof want - 1), "modern lock: proxy: the replies are %s",
       hp_esc(want, sizeof want - 1, 200));

    /* EVALSHA of the loaded script releases the lock. */
    size_t at = hp_buf_find(&p.out, 0, "$40\r\n", 5);
    char sha[41] = "";
    if (at != (size_t)-1 && p.out.len >= at + 5 + 40) memcpy(sha, p.out.data + at + 5, 40);
    hp_buf_reset(&req);
    hp_buf_cmd(&req, "SET lock:modern tok-3 NX PX 5000");
    hp_buf_cmd(&req, "EVALSHA %s 1 lock:modern tok-3", sha);
    hp_buf_cmd(&req, "EXISTS lock:modern");
    hp_buf_cmd(&req, "SCRIPT EXISTS %s", sha);
    hp_step steps2[] = { HP_SENDN(req.data, req.len), HP_END };
    hp_side d2 = {0}, p2 = {0};
    hp_diff_ex(redis, proxy, "modern lock (EVALSHA release)", steps2, NULL, &d2, &p2);
    static const char want2[] = "+OK\r\n:1\r\n:0\r\n*1\r\n:1\r\n";
    is_bytes(p2.out.data, p2.out.len, want2, sizeof want2 - 1, "modern lock: proxy: EVALSHA released it");
    ok(lk_log_count_synced(proxy, logpath, "set_nx_no_ttl", "lock:modern") == 0,
       "modern lock: proxy: no set_nx_no_ttl (the lock has its own TTL)");
    hp_side_free(&d);
    hp_side_free(&p);
    hp_side_free(&d2);
    hp_side_free(&p2);
    hp_buf_free(&req);
}

/* Pooled clients: acquire on one connection, release on another. */
static void seed_pooled(const hp_proc *t)
{
    const char *S = side(t);
    lk_flushall(redis);
    redisContext *c1 = lk_connect(t), *c2 = lk_connect(t);
    is_string(lk_str(c1, "SETNX pool:job %s", lk_uuid()), ":1", "pooled, client-addr: %s: acquire on one connection", S);
    is_string(lk_str(c1, "EXPIRE pool:job 20"), ":1", "pooled, client-addr: %s: EXPIRE", S);
    is_string(lk_str(c2, "DEL pool:job"), ":1", "pooled, client-addr: %s: release on another connection", S);
    is_string(lk_pstr(redis, "EXISTS pool:job"), ":0", "pooled, client-addr: %s: released", S);

    char v[64];
    snprintf(v, sizeof v, "%s", lk_uuid());
    is_string(lk_str(c1, "SETNX held:job %s", v), ":1", "pooled, connection: %s: acquire on one connection", S);
    is_string(lk_str(c1, "EXPIRE held:job 20"), ":1", "pooled, connection: %s: EXPIRE", S);
    if (t != proxy) {
        is_string(lk_str(c2, "DEL held:job"), ":1", "pooled, connection: direct: another connection deletes it");
    } else {
        is_string(lk_str(c2, "DEL held:job"), ":0", "pooled, connection: proxy: release on another connection refused");
        is_string(lk_pstr(redis, "GET held:job"), v, "pooled, connection: proxy: the lock is still there");
        ok(lk_log_wait(logpath, "foreign_release", "held:job", 5000), "pooled, connection: proxy: foreign_release logged");
        ok(lk_log_count_synced(proxy, logpath, "foreign_release", "pool:job") == 0,
           "pooled, client-addr: proxy: no foreign_release for the pooled release");

        /* client-addr: a client on another address is another owner. */
        is_string(lk_str(c1, "SET pool:other %s NX PX 20000", v), "+OK", "pooled, client-addr: proxy: acquire pool:other");
        int fd = lk_raw_open_from(proxy, "127.0.0.2");
        if (fd < 0) {
            skip(2, "cannot connect from 127.0.0.2 here");
        } else {
            lk_raw_expect(fd, "DEL pool:other\r\n", ":0\r\n", "pooled, client-addr: proxy: a client on 127.0.0.2 cannot release it");
            ok(lk_log_wait(logpath, "foreign_release", "pool:other", 5000), "pooled, client-addr: proxy: foreign_release logged");
            close(fd);
        }
    }
    redisFree(c1);
    redisFree(c2);
}

/* The lease starts when the command is sent, not when its reply arrives: a MULTI whose EXEC
 * runs SETNX and then sleeps 500 ms delays the reply past the lock's TTL, and once another
 * client holds the lock the first holder's late DEL (with the constant value 1) is a late
 * release that deletes nothing. Proxy only. */
static void lease_from_send(void)
{
    lk_flushall(redis);
    redisContext *c1 = lk_connect(proxy), *c2 = lk_connect(proxy);
    lk_str(c1, "MULTI");
    lk_str(c1, "SETNX lock:slow 1");
    lk_str(c1, "DEBUG SLEEP 0.5");
    is_string(lk_str(c1, "EXEC"), "[:1,+OK]", "slow EXEC: SETNX acquired inside it (ttl=300ms), then Redis slept 500 ms");
    ok(lk_wait_gone(redis, "lock:slow", 5000), "slow EXEC: the lock has expired in Redis");
    is_string(setnx_expire_pipelined(c2, "lock:slow", "1", 5), ":1 :1", "slow EXEC: a second client acquires");
    is_string(lk_str(c1, "DEL lock:slow"), ":0", "slow EXEC: the first holder's late DEL deletes nothing");
    redisFree(c1);
    redisFree(c2);
}

/* SETNX and EXPIRE queued in MULTI one command per write, as hiredis and redis-cli send
 * them, are merged like a pipelined pair: the client that got the lock sees EXEC [1, 1] and
 * its lock gets the EXPIRE's TTL, not the rule's ttl. */
static void multi_one_per_write(const hp_proc *t)
{
    const char *S = side(t);
    lk_flushall(redis);
    redisContext *c = lk_connect(t);
    lk_str(c, "MULTI");
    lk_str(c, "SETNX lock:mq %s", lk_uuid());
    lk_str(c, "EXPIRE lock:mq 7");
    is_string(lk_str(c, "EXEC"), "[:1,:1]", "SETNX, EXPIRE queued in MULTI one per write: %s: EXEC [1, 1]", S);
    long long pttl = hp_cmd_int(redis, "PTTL lock:mq");
    ok(pttl > 1000 && pttl <= 7000, "SETNX, EXPIRE queued in MULTI one per write: %s: the EXPIRE's TTL (PTTL %lld)", S, pttl);
    redisFree(c);
}

int main(void)
{
    lk_require_real_proxy();
    plan_lazy();
    redis = hp_redis_start(NULL);
    proxy = lk_proxy_start(redis, "seeds", policy_text, logpath, sizeof logpath);
    const hp_proc *targets[2] = { redis, proxy };

    for (int i = 0; i < 2; i++) seed_crash(targets[i]);
    for (int i = 0; i < 2; i++) {
        seed_late(targets[i], "late:uuid", 0, 1);
        seed_late(targets[i], "late:one", 1, 1);
    }
    seed_late(proxy, "lock:late:uuid", 0, 0);
    seed_late(proxy, "lock:late:one", 1, 0);
    lease_from_send();
    for (int i = 0; i < 2; i++) seed_force_delete(targets[i]);
    for (int i = 0; i < 2; i++) seed_multi_on_held(targets[i]);
    for (int i = 0; i < 2; i++) seed_pipelined(targets[i]);
    for (int i = 0; i < 2; i++) multi_one_per_write(targets[i]);
    seed_modern();
    for (int i = 0; i < 2; i++) seed_pooled(targets[i]);

    is_int(hp_stop(proxy, 10000), 0, "the proxy exits 0 on SIGTERM");
    return 0;
}
