/* Differential tests, reply tracking: what changes reply accounting (CLIENT REPLY, SUBSCRIBE,
 * HELLO, SELECT, RESET) meeting lock commands a rule rewrites, straight to Redis and through
 * a proxy with "rule lock: enforce ttl=5s". Each byte stream is sent at once, in RESP2 and
 * again after HELLO 3, and must come back byte for byte as Redis sends it (HELLO's connection
 * id masked), except where a lock rule documents another reply (PERSIST of a lock: :0; a
 * SETNX gets the rule's TTL). Then what the tracking decides for the lock policy: a lock
 * taken with replies off or inside MULTI after a SELECT belongs to that database, and an
 * EXPIRE queued after a SETNX in one MULTI is the holder's; and where tracking is lost, lock
 * commands pass as sent and each is logged (lock_unchecked). */
#include "lock/lock_util.h"

static hp_proc *redis, *proxy;
static char logpath[4096];

/* The same bytes in RESP2, and after HELLO 3 in RESP3. */
static void diff2(const char *name, const char *bytes)
{
    hp_diff_opts norm = { .normalise = hp_norm_hello };
    char n2[256], n3[256];
    snprintf(n2, sizeof n2, "%s (RESP2)", name);
    snprintf(n3, sizeof n3, "%s (RESP3)", name);
    hp_diff_bytes(redis, proxy, n2, bytes, strlen(bytes), &norm);
    hp_buf b3 = {0};
    hp_buf_puts(&b3, "HELLO 3\r\n");
    hp_buf_puts(&b3, bytes);
    hp_diff_bytes(redis, proxy, n3, b3.data, b3.len, &norm);
    hp_buf_free(&b3);
}

/* What one side answers to bytes sent at once on a fresh connection, HELLO ids masked. */
static void run_one(const hp_proc *target, const char *bytes, hp_buf *out)
{
    hp_step steps[] = { HP_SENDN(bytes, strlen(bytes)), HP_END };
    hp_side side;
    memset(&side, 0, sizeof side);
    lk_flushall(redis);
    hp_run_steps(target, redis, steps, NULL, 0, &side);
    hp_buf_reset(out);
    hp_buf_append(out, side.out.data ? side.out.data : "", side.out.len);
    hp_norm_hello(out, NULL);
    hp_side_free(&side);
}

static void test_exact(void)
{
    /* The sequences of the issue: an EXEC whose transaction subscribes or turns replies on
     * holds rewritten lock commands; its elements come back as Redis sends them. */
    diff2("MULTI; DEL lock; SETNX lock; SUBSCRIBE; EXEC",
          "MULTI\r\nDEL lock:a\r\nSETNX lock:b 1\r\nSUBSCRIBE ch\r\nEXEC\r\nPING\r\n");
    diff2("MULTI; DEL lock; SETNX lock; CLIENT REPLY ON; EXEC",
          "MULTI\r\nDEL lock:a\r\nSETNX lock:b 1\r\nCLIENT REPLY ON\r\nEXEC\r\nSETNX lock:c 1\r\nDEL lock:c\r\n");
    diff2("CLIENT REPLY OFF inside MULTI silences the rest of EXEC and what follows",
          "MULTI\r\nSETNX lock:a 1\r\nCLIENT REPLY OFF\r\nSETNX lock:b 1\r\nEXEC\r\nSETNX lock:c 1\r\n"
          "CLIENT REPLY ON\r\nDEL lock:c lock:b\r\nPING\r\n");
    diff2("CLIENT REPLY SKIP inside MULTI skips the reply after EXEC",
          "MULTI\r\nCLIENT REPLY SKIP\r\nSETNX lock:b 1\r\nEXEC\r\nSETNX lock:c 1\r\nSETNX lock:d 1\r\nDEL lock:c lock:d\r\n");
    diff2("CLIENT REPLY SKIP then ON inside MULTI (ON does not undo the skip)",
          "MULTI\r\nCLIENT REPLY SKIP\r\nCLIENT REPLY ON\r\nSETNX lock:b 1\r\nEXEC\r\nSETNX lock:c 1\r\nPING\r\n");
    diff2("OFF then ON inside MULTI",
          "MULTI\r\nCLIENT REPLY OFF\r\nSETNX lock:a 1\r\nCLIENT REPLY ON\r\nSETNX lock:b 1\r\nEXEC\r\nDEL lock:a lock:b\r\n");
    diff2("SUBSCRIBE of two channels inside MULTI, then a lock command after UNSUBSCRIBE",
          "MULTI\r\nSUBSCRIBE a b\r\nPING\r\nEXEC\r\nPING\r\nDEL lock:a\r\nUNSUBSCRIBE\r\nSETNX lock:a 1\r\n");
    diff2("lock commands while subscribed (RESP2 refuses them by their own name)",
          "SUBSCRIBE a\r\nSETNX lock:a 1\r\nDEL lock:a\r\nPERSIST lock:a\r\nUNSUBSCRIBE a\r\nSETNX lock:a 1\r\n");
    diff2("MONITOR inside MULTI is refused at EXEC",
          "MULTI\r\nMONITOR\r\nSETNX lock:a 1\r\nEXEC\r\nPING\r\n");
    diff2("HELLO inside MULTI: lock replies after it in the new protocol",
          "MULTI\r\nHELLO 3\r\nSET lock:h v NX\r\nSET lock:h w NX\r\nEXEC\r\nSET lock:i v NX GET\r\nSET lock:i v NX GET\r\n");
    diff2("HELLO 2 inside MULTI",
          "MULTI\r\nHELLO 2\r\nSET lock:h v NX\r\nSET lock:h w NX\r\nEXEC\r\nSET lock:i v NX\r\nSET lock:i v NX\r\n");
    diff2("SELECT inside MULTI, lock commands after it",
          "MULTI\r\nSELECT 1\r\nSETNX lock:s 1\r\nEXEC\r\nDEL lock:s\r\nSELECT 0\r\nEXISTS lock:s\r\n");
    diff2("SELECT out of range inside MULTI",
          "MULTI\r\nSELECT 99\r\nSETNX lock:s 1\r\nEXEC\r\nDEL lock:s\r\n");
    diff2("EXEC that does not run (EXECABORT) with CLIENT REPLY OFF queued",
          "MULTI\r\nCLIENT REPLY OFF\r\nSETNX lock:a\r\nEXEC\r\nSETNX lock:b 1\r\n");
    diff2("CLIENT REPLY ON inside a discarded MULTI",
          "MULTI\r\nCLIENT REPLY ON\r\nDISCARD\r\nSETNX lock:z 1\r\nDEL lock:z\r\n");
    /* CLIENT REPLY / RESET before lock commands the proxy answers itself. */
    diff2("CLIENT REPLY SKIP before PERSIST of a lock",
          "SET lock:a x\r\nCLIENT REPLY SKIP\r\nPERSIST lock:a\r\nSETNX lock:b 1\r\nPING\r\n");
    diff2("CLIENT REPLY SKIP before EXPIRE ... XX",
          "CLIENT REPLY SKIP\r\nEXPIRE lock:a 100 XX\r\nSETNX lock:c 1\r\nDEL lock:c\r\n");
    diff2("CLIENT REPLY OFF around PERSIST of a lock",
          "SETNX lock:a x\r\nCLIENT REPLY OFF\r\nPERSIST lock:a\r\nCLIENT REPLY ON\r\nSETNX lock:b 1\r\nDEL lock:a lock:b\r\n");
    diff2("CLIENT REPLY OFF; RESET; SETNX", "CLIENT REPLY OFF\r\nRESET\r\nSETNX lock:r t\r\nPING\r\n");
    diff2("CLIENT REPLY SKIP; RESET (skipped); SETNX", "CLIENT REPLY SKIP\r\nRESET\r\nSETNX lock:r t\r\nPING\r\n");
    diff2("SELECT with replies off, then lock commands",
          "CLIENT REPLY OFF\r\nSELECT 1\r\nSETNX lock:o 1\r\nCLIENT REPLY ON\r\nDEL lock:o\r\nSELECT 0\r\n");
    diff2("MULTI; SETNX; INCR; EXPIRE; EXEC",
          "MULTI\r\nSETNX lock:k w\r\nINCR x\r\nEXPIRE lock:k 60\r\nEXEC\r\nDEL lock:k\r\n");
    diff2("QUIT with replies off after a lock command", "SETNX lock:q 1\r\nCLIENT REPLY OFF\r\nQUIT\r\nPING\r\n");
}

/* Where a lock rule documents a reply of its own. */
static void test_documented(void)
{
    hp_buf d = {0}, p = {0};
    /* HELLO 2 queued last: Redis answers *5 [:1 :1 :1 :1 HELLO]; the proxy refuses PERSIST of a
     * lock (:0), the rest is Redis's. */
    const char *tx = "HELLO 3\r\nMULTI\r\nSETNX lock:q 1\r\nEXPIRE lock:q 100\r\nPERSIST lock:q\r\nDEL lock:q\r\nHELLO 2\r\nEXEC\r\n";
    run_one(redis, tx, &d);
    run_one(proxy, tx, &p);
    ok(HP_HAS(&d, "*5\r\n:1\r\n:1\r\n:1\r\n:1\r\n*14\r\n"), "MULTI; SETNX; EXPIRE; PERSIST; DEL; HELLO 2; EXEC: Redis *5 [:1 :1 :1 :1 HELLO]");
    size_t at = hp_buf_find(&d, 0, "*5\r\n:1\r\n:1\r\n:1\r\n", 16);
    if (at != (size_t)-1) d.data[at + 13] = '0';
    is_bytes(p.data, p.len, d.data, d.len, "  through the proxy: the same, with PERSIST of the lock refused (:0)");

    const char *tx2 = "MULTI\r\nSETNX lock:q 1\r\nEXPIRE lock:q 100\r\nPERSIST lock:q\r\nHELLO 3\r\nDEL lock:q\r\nEXEC\r\n";
    run_one(redis, tx2, &d);
    run_one(proxy, tx2, &p);
    ok(HP_HAS(&d, "*5\r\n:1\r\n:1\r\n:1\r\n%7\r\n"), "the same with HELLO 3 before DEL: Redis *5 [:1 :1 :1 map :1]");
    at = hp_buf_find(&d, 0, "*5\r\n:1\r\n:1\r\n:1\r\n", 16);
    if (at != (size_t)-1) d.data[at + 13] = '0';
    is_bytes(p.data, p.len, d.data, d.len, "  through the proxy: the same, PERSIST :0");

    /* MULTI; CLIENT REPLY ON; DISCARD turns nothing off: the next SETNX gets the rule's TTL. */
    run_one(proxy, "MULTI\r\nCLIENT REPLY ON\r\nDISCARD\r\nSETNX lock:z 1\r\nPTTL lock:z\r\n", &p);
    long long pttl = -9;
    size_t k = hp_buf_find(&p, 0, ":1\r\n:", 5);
    if (k != (size_t)-1) pttl = atoll(p.data + k + 5);
    ok(HP_HAS(&p, "+OK\r\n+QUEUED\r\n+OK\r\n:1\r\n:") && pttl > 0 && pttl <= 5000,
       "MULTI; CLIENT REPLY ON; DISCARD: the SETNX after it is still enforced (PTTL %lld, Redis -1)", pttl);
    hp_buf_free(&d);
    hp_buf_free(&p);
}

/* Waits until key is gone in db. */
static int wait_gone_db(int db, const char *key)
{
    redisContext *c = lk_connect(redis);
    freeReplyObject(lk_cmd(c, "SELECT %d", db));
    long long until = hp_now_ms() + 10000, v;
    do {
        v = lk_int(c, "PTTL %s", key);
        if (v == -2) break;
        hp_sleep_ms(20);
    } while (hp_now_ms() < until);
    redisFree(c);
    return v == -2;
}

/* A lease is recorded in the database its SELECT gave, however the SELECT came (replies off,
 * queued in MULTI, pipelined): once that lease ended by its TTL and another client took the
 * lock, the first client's DEL is late and refused. (Recorded under database 0, the DEL would
 * find no lease of its own and, as the same owner, delete the other client's lock.) */
static void late_after(const char *name, const char *take, const char *take_reply, const char *key)
{
    int a = lk_raw_open(proxy);
    lk_raw_expect(a, take, take_reply, "%s: the first client takes %s in db 1 with PX 200", name, key);
    ok(wait_gone_db(1, key), "%s: its lease ends by its TTL", name);
    redisContext *b = lk_connect(proxy);
    freeReplyObject(lk_cmd(b, "SELECT 1"));
    is_string(lk_str(b, "SET %s b NX PX 60000", key), "+OK", "%s: another client takes it", name);
    lk_raw_expect(a, "SELECT 1\r\n", "+OK\r\n", "%s: the first client selects db 1 (again, with its reply)", name);
    char req[64];
    snprintf(req, sizeof req, "DEL %s\r\n", key);
    lk_raw_expect(a, req, ":0\r\n", "%s: the first client's DEL is refused (late)", name);
    is_string(lk_str(b, "GET %s", key), "b", "%s: the other client's lock stays", name);
    redisFree(b);
    close(a);
}

static void test_db(void)
{
    lk_flushall(redis);
    late_after("SELECT with replies off", "CLIENT REPLY OFF\r\nSELECT 1\r\nSET lock:d a NX PX 200\r\nCLIENT REPLY ON\r\n",
               "+OK\r\n", "lock:d");
    late_after("SELECT inside MULTI", "MULTI\r\nSELECT 1\r\nSET lock:e a NX PX 200\r\nEXEC\r\n",
               "+OK\r\n+QUEUED\r\n+QUEUED\r\n*2\r\n+OK\r\n+OK\r\n", "lock:e");
    late_after("SELECT pipelined before the lock command", "SELECT 1\r\nSET lock:f a NX PX 200\r\n", "+OK\r\n+OK\r\n",
               "lock:f");
}

/* MULTI; SETNX k; INCR; EXPIRE k 60; EXEC on a connection whose earlier lease of k ended: the
 * EXPIRE is judged as the holder's of the SETNX queued before it, not by the ended lease. */
static void test_txn_merge(void)
{
    lk_flushall(redis);
    int a = lk_raw_open(proxy);
    lk_raw_expect(a, "SET lock:k w NX PX 200\r\n", "+OK\r\n", "an earlier lease of lock:k on this connection");
    ok(lk_wait_gone(redis, "lock:k", 10000), "  it ends by its TTL");
    lk_raw_expect(a, "MULTI\r\nSETNX lock:k w\r\nINCR x\r\nEXPIRE lock:k 60\r\nEXEC\r\n",
                  "+OK\r\n+QUEUED\r\n+QUEUED\r\n+QUEUED\r\n*3\r\n:1\r\n:1\r\n:1\r\n",
                  "MULTI; SETNX; INCR; EXPIRE 60; EXEC: the EXPIRE is the holder's (:1)");
    long long pttl = hp_cmd_int(redis, "PTTL lock:k");
    ok(pttl > 5000 && pttl <= 60000, "  the lock has the EXPIRE's 60 s, not the rule's 5 s (PTTL %lld)", pttl);
    lk_raw_expect(a, "MULTI\r\nSETNX lock:m w\r\nDEL lock:m\r\nSETNX lock:m v\r\nEXPIRE lock:m 30\r\nEXEC\r\n",
                  "+OK\r\n+QUEUED\r\n+QUEUED\r\n+QUEUED\r\n+QUEUED\r\n*4\r\n:1\r\n:1\r\n:1\r\n:1\r\n",
                  "acquire, release, acquire, EXPIRE in one MULTI: each sees the one before");
    pttl = hp_cmd_int(redis, "PTTL lock:m");
    ok(pttl > 5000 && pttl <= 30000, "  the second lease has the EXPIRE's 30 s (PTTL %lld)", pttl);
    close(a);
}

/* Tracking lost (HELLO AUTH with replies off): the replies owed before it are still the
 * client's (the held SETNX's +QUEUED swallowed, the EXEC rebuilt), then bytes pass through;
 * the lock command after it goes as sent and is logged and counted. */
static void test_lost(void)
{
    hp_diff_opts norm = { .normalise = hp_norm_hello };
    const char *req = "MULTI\r\nSETNX lock:x 1\r\nGET a\r\nEXEC\r\nCLIENT REPLY OFF\r\nHELLO 3 AUTH default pw\r\n"
                      "CLIENT REPLY ON\r\nSETNX lock:y 1\r\nPTTL lock:y\r\nDEL lock:y\r\n";
    hp_side d, p;
    hp_diff_ex(redis, proxy, "replies owed at the loss of tracking are delivered once, in order", (const hp_step[]){
        HP_SENDN(req, strlen(req)), HP_END }, &norm, &d, &p);
    ok(HP_HAS(&d.out, "+OK\r\n+QUEUED\r\n+QUEUED\r\n*2\r\n:1\r\n$-1\r\n+OK\r\n:1\r\n:-1\r\n:1\r\n"),
       "  Redis's answer: the EXEC, then ON, SETNX, PTTL -1, DEL");
    hp_side_free(&d);
    hp_side_free(&p);
    ok(lk_log_wait(logpath, "tracking_lost", "", 5000), "  tracking_lost is logged");
    ok(lk_log_wait(logpath, "lock_unchecked", "lock:y", 5000), "  the SETNX after it: lock_unchecked");
    ok(lk_log_wait(logpath, "lock_unchecked", "lock:y", 5000) && lk_log_wait_text(logpath, "lock_unchecked", "lock:y",
       "1 on this connection", 5000), "  counted per connection");
    /* A protocol error after the loss: the replies to the requests before it, then Redis's
     * error line, then the close (the proxy marks their end with DISCARD and PING <marker> of
     * its own, whose replies it drops). */
    diff2("protocol error after tracking was lost",
          "CLIENT REPLY OFF\r\nHELLO 3 AUTH default pw\r\nCLIENT REPLY ON\r\nSETNX lock:p 1\r\nPING\r\n*1\r\n$x\r\n");
    diff2("protocol error after tracking was lost, inside MULTI",
          "CLIENT REPLY OFF\r\nHELLO 3 AUTH default pw\r\nCLIENT REPLY ON\r\nMULTI\r\nSETNX lock:p 1\r\nSET k1 \"abc\r\n");
    diff2("protocol error after tracking was lost, replies off again",
          "CLIENT REPLY OFF\r\nHELLO 3 AUTH default pw\r\nCLIENT REPLY ON\r\nGET a\r\nCLIENT REPLY OFF\r\nSET k1 \"abc\r\n");
    diff2("protocol error after tracking was lost, replies off, inside MULTI",
          "PING\r\nCLIENT REPLY OFF\r\nHELLO 3 AUTH default pw\r\nMULTI\r\nSETNX lock:p 1\r\nSET k1 \"abc\r\n");
    hp_buf out = {0};
    hp_log_read(proxy, &out);
    ok(HP_HAS(&out, "lock_unchecked client="), "  and in the proxy's own log");
    hp_buf_free(&out);
}

int main(void)
{
    lk_require_real_proxy();
    plan_lazy();
    redis = hp_redis_start(NULL);
    proxy = lk_proxy_start(redis, "track", "rule lock: enforce ttl=5s", logpath, sizeof logpath);
    test_exact();
    test_documented();
    test_db();
    test_txn_merge();
    test_lost();
    lk_check_json_log(logpath, "diff_tracking");
    return 0;
}
