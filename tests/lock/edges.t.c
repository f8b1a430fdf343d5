/* Edge cases of the enforce-mode rewrites and of the lease table (who holds which lock
 * through this proxy), against Redis for reference:
 *   - reply shapes in RESP2 and RESP3: a missed SET NX is $-1 / _, SETNX is :0 in both;
 *   - PERSIST on a lock is refused (:0, TTL kept);
 *   - a foreign EXPIRE never moves a live lock's TTL but repairs a stuck lock;
 *   - the holder's EXPIRE is capped at max-ttl (ttl_capped);
 *   - DEL/UNLINK mixing lock and ordinary keys, and a stuck lock deleted (unknown_lease);
 *   - a lock key holding another type: commands answer as Redis answers them (WRONGTYPE where
 *     Redis gives it);
 *   - SCRIPT FLUSH between acquire and release (NOSCRIPT, then EVAL);
 *   - a SETNX under CLIENT REPLY OFF still gets the TTL rewrite;
 *   - leases are per database: a lease in db 0 does not release the same key in db 1. */
#include "lock/lock_util.h"

static hp_proc *redis, *proxy;
static char logpath[4096];

static const char policy_text[] = "rule lock: enforce ttl=5s max-ttl=10s owner=connection\n";

static const char *side(const hp_proc *t) { return t == proxy ? "proxy" : "direct"; }

/* HP_CALL: another connection of this side holds lock:shape. */
static void hold_shape(const hp_proc *s, const hp_proc *r, void *arg)
{
    (void)r; (void)arg;
    redisContext *c = lk_connect(s);
    is_string(lk_str(c, "SET lock:shape holder NX PX 8000"), "+OK", "shapes: %s: another connection holds lock:shape", side(s));
    redisFree(c);
}

static void test_shapes(void)
{
    static const char cmds[] =
        "SET lock:shape v NX\r\nSETNX lock:shape v\r\nSET lock:shape v NX PX 1000\r\n"
        "SET lock:shape2 v NX\r\nSETNX lock:shape3 v\r\nSETNX lock:shape4 v\r\nEXPIRE lock:shape4 5\r\n";
    static const char want2[] = "$-1\r\n:0\r\n$-1\r\n+OK\r\n:1\r\n:1\r\n:1\r\n";
    static const char want3[] = "_\r\n:0\r\n_\r\n+OK\r\n:1\r\n:1\r\n:1\r\n";

    hp_step resp2[] = { HP_CALL(hold_shape, NULL), HP_SEND(cmds), HP_WAIT_BYTES(sizeof want2 - 1), HP_END };
    hp_side d, p;
    hp_diff_ex(redis, proxy, "RESP2 lock replies", resp2, NULL, &d, &p);
    is_bytes(p.out.data, p.out.len, want2, sizeof want2 - 1, "RESP2: proxy: SET NX missed is $-1, SETNX :0");
    hp_side_free(&d);
    hp_side_free(&p);

    hp_step resp3[] = { HP_CALL(hold_shape, NULL), HP_SEND("HELLO 3\r\n"), HP_WAIT_MATCH("proto"),
                        HP_WAIT_QUIET(100), HP_SEND(cmds), HP_WAIT_MATCH(want3), HP_END };
    hp_diff_opts norm = { .normalise = hp_norm_hello };
    hp_diff_ex(redis, proxy, "RESP3 lock replies", resp3, &norm, &d, &p);
    ok(p.out.len >= sizeof want3 - 1 &&
       memcmp(p.out.data + p.out.len - (sizeof want3 - 1), want3, sizeof want3 - 1) == 0,
       "RESP3: proxy: SET NX missed is _, SETNX :0 (got ...%s)",
       hp_esc(p.out.data + (p.out.len > 60 ? p.out.len - 60 : 0), p.out.len > 60 ? 60 : p.out.len, 200));
    hp_side_free(&d);
    hp_side_free(&p);

    /* The merged SETNX+EXPIRE on a held lock, in RESP3. */
    int fd = lk_raw_open(proxy);
    hp_buf out = {0};
    hp_send_all(fd, "HELLO 3\r\n", 9, 5000);
    hp_read_until(fd, &out, 0, "proto", 5000);
    hp_read_idle(fd, &out, 50, 2000);
    lk_raw_expect(fd, "SETNX lock:shape v\r\nEXPIRE lock:shape 5\r\nSET lock:shape v NX EX 5\r\n",
                  ":0\r\n:0\r\n_\r\n", "RESP3: proxy: SETNX+EXPIRE on a held lock :0 :0, SET NX EX _");
    hp_buf_free(&out);
    close(fd);
}

static void test_persist(const hp_proc *t)
{
    const char *S = side(t);
    lk_flushall(redis);
    redisContext *c = lk_connect(t);
    is_string(lk_str(c, "SETNX lock:persist v"), ":1", "PERSIST: %s: acquire", S);
    is_string(lk_str(c, "EXPIRE lock:persist 8"), ":1", "PERSIST: %s: EXPIRE 8", S);
    const char *rep = lk_str(c, "PERSIST lock:persist");
    long long pttl = hp_cmd_int(redis, "PTTL lock:persist");
    if (t != proxy) {
        is_string(rep, ":1", "PERSIST: direct: :1");
        is_int(pttl, -1, "PERSIST: direct: the lock has no TTL any more");
    } else {
        is_string(rep, ":0", "PERSIST: proxy: :0");
        ok(pttl > 0 && pttl <= 8000, "PERSIST: proxy: the TTL stays (PTTL %lld)", pttl);
        ok(lk_log_wait(logpath, "persist_lock", "lock:persist", 5000), "PERSIST: proxy: persist_lock logged");
        int fd = lk_raw_open(proxy);
        lk_raw_expect(fd, "MULTI\r\nPERSIST lock:persist\r\nEXISTS lock:persist\r\nEXEC\r\n",
                      "+OK\r\n+QUEUED\r\n+QUEUED\r\n*2\r\n:0\r\n:1\r\n", "PERSIST inside MULTI: proxy: the element is :0");
        close(fd);
        ok(hp_cmd_int(redis, "PTTL lock:persist") > 0, "PERSIST inside MULTI: proxy: the TTL stays");
    }
    redisFree(c);
}

static void test_foreign_expire(const hp_proc *t)
{
    const char *S = side(t);
    lk_flushall(redis);
    redisContext *c1 = lk_connect(t), *c2 = lk_connect(t);
    is_string(lk_str(c1, "SET lock:fe v NX PX 8000"), "+OK", "foreign EXPIRE: %s: a holder with PX 8000", S);
    const char *ext = lk_str(c2, "EXPIRE lock:fe 20");
    long long pttl = hp_cmd_int(redis, "PTTL lock:fe");
    if (t != proxy) {
        is_string(ext, ":1", "foreign EXPIRE: direct: another connection extends the lock");
        ok(pttl > 8000, "foreign EXPIRE: direct: TTL extended (PTTL %lld)", pttl);
    } else {
        is_string(ext, ":0", "foreign EXPIRE: proxy: another connection's EXPIRE answers :0");
        ok(pttl > 0 && pttl <= 8000, "foreign EXPIRE: proxy: the TTL is not extended (PTTL %lld)", pttl);
        is_string(lk_str(c2, "PEXPIRE lock:fe 100"), ":0", "foreign PEXPIRE (shorter): proxy: :0");
        is_string(lk_str(c2, "EXPIRE lock:fe 20 GT"), ":0", "foreign EXPIRE GT: proxy: :0");
        is_string(lk_str(c2, "EXPIRE lock:fe 20 NX"), ":0", "foreign EXPIRE NX: proxy: :0");
        pttl = hp_cmd_int(redis, "PTTL lock:fe");
        ok(pttl > 100 && pttl <= 8000, "foreign EXPIREs: proxy: the TTL is the holder's (PTTL %lld)", pttl);
        ok(lk_log_wait(logpath, "foreign_expire", "lock:fe", 5000), "foreign EXPIRE: proxy: foreign_expire logged");
        is_string(lk_str(c1, "EXPIRE lock:fe 10"), ":1", "holder EXPIRE: proxy: the holder extends it");
        ok(hp_cmd_int(redis, "PTTL lock:fe") > 8000, "holder EXPIRE: proxy: extended");
    }

    /* A stuck lock: no TTL, no lease. */
    if (!hp_cmd_ok(redis, "SET lock:stuck old")) hp_abort("SET lock:stuck failed");
    is_string(lk_str(c2, "EXPIRE lock:stuck 5"), ":1", "EXPIRE on a stuck lock: %s: :1", S);
    pttl = hp_cmd_int(redis, "PTTL lock:stuck");
    ok(pttl > 0 && pttl <= 5000, "EXPIRE on a stuck lock: %s: it has a TTL now (PTTL %lld)", S, pttl);
    redisFree(c1);
    redisFree(c2);
}

static void test_max_ttl(const hp_proc *t)
{
    const char *S = side(t);
    lk_flushall(redis);
    redisContext *c = lk_connect(t);
    is_string(lk_str(c, "SETNX lock:cap v"), ":1", "max-ttl: %s: acquire", S);
    is_string(lk_str(c, "EXPIRE lock:cap 100"), ":1", "max-ttl: %s: the holder's EXPIRE 100", S);
    long long pttl = hp_cmd_int(redis, "PTTL lock:cap");
    is_string(lk_str(c, "SET lock:cap2 v NX PX 60000"), "+OK", "max-ttl: %s: SET NX PX 60000", S);
    long long pttl2 = hp_cmd_int(redis, "PTTL lock:cap2");
    int fd = lk_raw_open(t);
    lk_raw_expect(fd, "SETNX lock:cap3 v\r\nEXPIRE lock:cap3 100\r\n", ":1\r\n:1\r\n", "max-ttl: %s: pipelined SETNX+EXPIRE 100", S);
    close(fd);
    long long pttl3 = hp_cmd_int(redis, "PTTL lock:cap3");
    if (t != proxy) {
        ok(pttl > 10000 && pttl2 > 10000 && pttl3 > 10000, "max-ttl: direct: TTLs as asked (%lld %lld %lld)", pttl, pttl2, pttl3);
    } else {
        ok(pttl > 5000 && pttl <= 10000, "max-ttl: proxy: the holder's EXPIRE is capped at 10 s (PTTL %lld)", pttl);
        ok(pttl2 > 5000 && pttl2 <= 10000, "max-ttl: proxy: SET NX PX is capped (PTTL %lld)", pttl2);
        ok(pttl3 > 5000 && pttl3 <= 10000, "max-ttl: proxy: the merged SETNX+EXPIRE is capped (PTTL %lld)", pttl3);
        ok(lk_log_wait_text(logpath, "ttl_capped", "lock:cap", "capped to max-ttl=10000", 5000),
           "max-ttl: proxy: ttl_capped logged for the EXPIRE");
        ok(lk_log_wait(logpath, "ttl_capped", "lock:cap2", 5000), "max-ttl: proxy: ttl_capped logged for SET NX PX");
        ok(lk_log_wait(logpath, "ttl_capped", "lock:cap3", 5000), "max-ttl: proxy: ttl_capped logged for SETNX+EXPIRE");
    }
    redisFree(c);
}

static void test_del(const hp_proc *t)
{
    const char *S = side(t);
    lk_flushall(redis);
    redisContext *c1 = lk_connect(t), *c2 = lk_connect(t);
    is_string(lk_str(c1, "SETNX lock:d1 mine"), ":1", "DEL mix: %s: c1 holds lock:d1", S);
    is_string(lk_str(c1, "SET lock:d3 mine NX PX 8000"), "+OK", "DEL mix: %s: c1 holds lock:d3", S);
    is_string(lk_str(c2, "SET lock:d2 theirs NX PX 8000"), "+OK", "DEL mix: %s: c2 holds lock:d2", S);
    if (!hp_cmd_ok(redis, "MSET o1 1 o2 2 o3 3")) hp_abort("MSET failed");
    const char *n = lk_str(c1, "DEL o1 lock:d1 o2 lock:d2 nokey");
    const char *e = lk_pstr(redis, "EXISTS o1 o2 lock:d1");
    is_string(e, ":0", "DEL mix: %s: the ordinary keys and c1's own lock are deleted", S);
    if (t != proxy) {
        is_string(n, ":4", "DEL mix: direct: 4 deleted, c2's lock among them");
        is_string(lk_pstr(redis, "EXISTS lock:d2"), ":0", "DEL mix: direct: c2's lock is gone");
    } else {
        is_string(n, ":3", "DEL mix: proxy: 3 deleted (o1, lock:d1, o2)");
        is_string(lk_pstr(redis, "GET lock:d2"), "theirs", "DEL mix: proxy: c2's lock is kept");
        ok(lk_log_wait(logpath, "foreign_release", "lock:d2", 5000), "DEL mix: proxy: foreign_release logged for lock:d2");
        ok(lk_log_wait(logpath, "del_unchecked", "lock:d1", 5000), "DEL mix: proxy: del_unchecked logged for lock:d1");
    }
    is_string(lk_str(c1, "UNLINK o3 lock:d3 nokey"), ":2", "UNLINK mix: %s: the ordinary key and c1's own lock", S);
    is_string(lk_pstr(redis, "EXISTS o3 lock:d3"), ":0", "UNLINK mix: %s: both gone", S);

    /* A stuck lock, no TTL and no lease: DEL clears it. */
    if (!hp_cmd_ok(redis, "SET lock:old left-over")) hp_abort("SET lock:old failed");
    is_string(lk_str(c2, "DEL lock:old"), ":1", "stuck lock: %s: DEL deletes it", S);
    is_string(lk_pstr(redis, "EXISTS lock:old"), ":0", "stuck lock: %s: gone", S);
    if (t == proxy) ok(lk_log_wait(logpath, "unknown_lease", "lock:old", 5000), "stuck lock: proxy: unknown_lease logged");

    /* DEL of the own lock inside MULTI (EVAL, no EVALSHA there). */
    is_string(lk_str(c1, "SET lock:dm mine NX PX 8000"), "+OK", "DEL inside MULTI: %s: acquire", S);
    int fd = lk_raw_open(t);
    lk_raw_expect(fd, "MULTI\r\nDEL lock:dm o9\r\nEXEC\r\n",
                  t != proxy ? "+OK\r\n+QUEUED\r\n*1\r\n:1\r\n" : "+OK\r\n+QUEUED\r\n*1\r\n:0\r\n",
                  "DEL inside MULTI: %s: another connection's DEL of a held lock", S);
    close(fd);
    redisAppendCommand(c1, "MULTI");
    redisAppendCommand(c1, "DEL lock:dm");
    redisAppendCommand(c1, "EXEC");
    void *r[3] = {0};
    for (int i = 0; i < 3; i++) redisGetReply(c1, &r[i]);
    if (t != proxy) is_string(lk_show(r[2]), "[:0]", "DEL inside MULTI: direct: the other connection had deleted it");
    else is_string(lk_show(r[2]), "[:1]", "DEL inside MULTI: proxy: the holder's DEL counts 1");
    for (int i = 0; i < 3; i++) freeReplyObject(r[i]);
    redisFree(c1);
    redisFree(c2);
}

static void test_wrongtype(void)
{
    lk_flushall(redis);
    redisContext *c = lk_connect(proxy);
    is_string(lk_str(c, "SET lock:list v NX PX 8000"), "+OK", "WRONGTYPE: proxy: acquire lock:list");
    redisContext *r = lk_connect(redis);
    lk_str(r, "DEL lock:list");
    lk_str(r, "RPUSH lock:list a");
    lk_str(r, "PEXPIRE lock:list 8000");
    redisFree(r);
    /* The lock's value is no string any more: the lease record no longer matches it, so the
     * holder's commands run as the client sent them and answer what Redis answers. */
    is_string(lk_str(c, "EXPIRE lock:list 5"), ":1", "WRONGTYPE: proxy: EXPIRE of the list answers as Redis (:1)");
    const char *gs = lk_str(c, "GETSET lock:list x");
    ok(strncmp(gs, "(error) WRONGTYPE", 17) == 0, "WRONGTYPE: proxy: GETSET on it is forwarded (%s)", gs);
    const char *sg = lk_str(c, "SET lock:list v NX GET");
    ok(strncmp(sg, "(error) WRONGTYPE", 17) == 0, "WRONGTYPE: proxy: SET NX GET relays Redis's error (%s)", sg);
    is_string(lk_pstr(redis, "LLEN lock:list"), ":1", "WRONGTYPE: proxy: the list is untouched");
    is_string(lk_str(c, "SETNX lock:list v"), ":0", "WRONGTYPE: proxy: SETNX on the list key :0");
    is_string(lk_str(c, "DEL lock:list"), ":1", "WRONGTYPE: proxy: DEL deletes the list as Redis does");
    redisFree(c);
}

static void test_script_flush(void)
{
    lk_flushall(redis);
    redisContext *c = lk_connect(proxy);
    is_string(lk_str(c, "SETNX lock:sf v"), ":1", "SCRIPT FLUSH: acquire");
    is_string(lk_str(c, "EXPIRE lock:sf 2"), ":1", "SCRIPT FLUSH: the holder's EXPIRE 2 (script loaded)");
    if (!hp_cmd_ok(redis, "SCRIPT FLUSH")) hp_abort("SCRIPT FLUSH failed");
    is_string(lk_str(c, "EXPIRE lock:sf 9"), ":1", "SCRIPT FLUSH: the holder's EXPIRE after a flush");
    long long pttl = hp_cmd_int(redis, "PTTL lock:sf");
    ok(pttl > 2000 && pttl <= 9000, "SCRIPT FLUSH: the EXPIRE 9 ran (PTTL %lld)", pttl);
    if (!hp_cmd_ok(redis, "SCRIPT FLUSH")) hp_abort("SCRIPT FLUSH failed");
    is_string(lk_str(c, "DEL lock:sf"), ":1", "SCRIPT FLUSH: the holder's DEL after a flush releases it");
    is_string(lk_pstr(redis, "EXISTS lock:sf"), ":0", "SCRIPT FLUSH: released");

    /* The flush on the client's own connection, and the request behind the DEL waits for
     * the EVAL retry. */
    is_string(lk_str(c, "SETNX lock:sf2 v"), ":1", "SCRIPT FLUSH on the connection: acquire");
    is_string(lk_str(c, "SCRIPT FLUSH"), "+OK", "SCRIPT FLUSH on the connection: flushed through the proxy");
    redisAppendCommand(c, "DEL lock:sf2");
    redisAppendCommand(c, "EXISTS lock:sf2");
    redisAppendCommand(c, "PING");
    void *r[3] = {0};
    for (int i = 0; i < 3; i++) redisGetReply(c, &r[i]);
    is_string(lk_show(r[0]), ":1", "SCRIPT FLUSH on the connection: DEL releases it");
    is_string(lk_show(r[1]), ":0", "SCRIPT FLUSH on the connection: the EXISTS behind it sees it gone");
    is_string(lk_show(r[2]), "+PONG", "SCRIPT FLUSH on the connection: replies in order");
    for (int i = 0; i < 3; i++) freeReplyObject(r[i]);

    /* In MULTI each script is loaded once ahead of its first EVALSHA: DEL's release.lua
     * and PERSIST's persist.lua are different scripts, each loaded, after a flush. */
    is_string(lk_str(c, "SET lock:sf3 v"), "+OK", "SCRIPT FLUSH, MULTI: a lock taken outside the proxy's rules");
    if (!hp_cmd_ok(redis, "SCRIPT FLUSH")) hp_abort("SCRIPT FLUSH failed");
    int fd = lk_raw_open(proxy);
    lk_raw_expect(fd, "MULTI\r\nDEL lock:none\r\nPERSIST lock:sf3\r\nPERSIST lock:sf3\r\nEXEC\r\n",
                  "+OK\r\n+QUEUED\r\n+QUEUED\r\n+QUEUED\r\n*3\r\n:0\r\n:0\r\n:0\r\n",
                  "SCRIPT FLUSH, MULTI: DEL then PERSIST of lock keys, both scripts loaded in the transaction");
    close(fd);
    redisFree(c);
}

/* Lock commands under CLIENT REPLY OFF get the policy's TTL rewrite like any other: a SETNX
 * on a lock key sent while replies are off leaves a lock with a TTL. Proxy only. */
static void test_reply_off(void)
{
    lk_flushall(redis);
    int fd = lk_raw_open(proxy);
    lk_raw_expect(fd, "CLIENT REPLY OFF\r\nSETNX lock:off v\r\nCLIENT REPLY ON\r\nPING\r\n", "+OK\r\n+PONG\r\n",
                  "CLIENT REPLY OFF: SETNX then PING");
    close(fd);
    long long pttl = hp_cmd_int(redis, "PTTL lock:off");
    ok(pttl > 0, "CLIENT REPLY OFF: the lock taken with SETNX has a TTL (PTTL %lld)", pttl);
}

/* Leases are kept per database: a connection that took lock:sel in db 0 and then SELECTs
 * db 1 has no lease on the lock:sel another client holds there, so its DEL (with the constant
 * value 1 a compare-delete would match) does not release it. Proxy only. */
static void test_select_db(void)
{
    lk_flushall(redis);
    redisContext *a = lk_connect(proxy), *b = lk_connect(proxy);
    lk_str(a, "SETNX lock:sel 1");
    lk_str(b, "SELECT 1");
    lk_str(b, "SET lock:sel 1 NX PX 8000");
    lk_str(a, "SELECT 1");
    lk_str(a, "DEL lock:sel");
    redisFree(a);
    redisFree(b);
    redisContext *r = lk_connect(redis);
    lk_str(r, "SELECT 1");
    is_string(lk_str(r, "EXISTS lock:sel"), ":1", "SELECT: a lease taken in db 0 does not release the lock held in db 1");
    redisFree(r);
}

int main(void)
{
    lk_require_real_proxy();
    plan_lazy();
    redis = hp_redis_start(NULL);
    proxy = lk_proxy_start(redis, "edges", policy_text, logpath, sizeof logpath);
    const hp_proc *targets[2] = { redis, proxy };

    test_shapes();
    for (int i = 0; i < 2; i++) test_persist(targets[i]);
    for (int i = 0; i < 2; i++) test_foreign_expire(targets[i]);
    for (int i = 0; i < 2; i++) test_max_ttl(targets[i]);
    for (int i = 0; i < 2; i++) test_del(targets[i]);
    test_wrongtype();
    test_script_flush();
    test_reply_off();
    test_select_db();

    is_int(hp_stop(proxy, 10000), 0, "the proxy exits 0 on SIGTERM");
    return 0;
}
