#define _GNU_SOURCE   /* memmem */
/* policy/lock.c, lockreply.c and locktxn.c without Redis: lock_decide's verdict for each
 * pattern of the lock table, row by row, and the reply mapping of each script reply the
 * scripts can give (the scripts themselves run against a real Redis in tests/lock/). */
#include "tap.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "policy/lock.h"
#include "policy/lua_scripts.h"

static char events[8192];

static void log_cb(void *ud, const audit_event *e)
{
    (void)ud;
    size_t n = strlen(events);
    snprintf(events + n, sizeof events - n, "%s%s", n ? " " : "", e->event);
}

static lock_ctx ctx;
static policy *pol;

static void setup(void)
{
    static const char text[] =
        "rule lock: enforce ttl=30s max-ttl=60s\n"
        "rule audit: audit\n"
        "rule off: off\n"
        "rule conn: enforce owner=connection\n"
        "exempt user ops\n";
    char err[256];
    pol = policy_parse(text, sizeof text - 1, "t.conf", err, sizeof err);
    if (pol == NULL) bail_out("policy: %s", err);
    memset(&ctx, 0, sizeof ctx);
    lock_ctx_init(&ctx);
    ctx.pol = pol;
    ctx.leases = lease_table_new(1000);
    ctx.log = log_cb;
    ctx.instance = "host-a";
    ctx.script_once = audit_once_new(100, 3600 * 1000);
}

static lock_client client(uint64_t conn)
{
    lock_client c = {.conn_id = conn, .addr = "10.0.0.5:4000", .ip_len = 8, .proto = 2,
                     .now_ms = 1000, .wall_ms = 1700000000000LL};
    return c;
}

/* Splits a space-separated command into argv (static storage). */
static int split(const char *cmd, resp_arg *argv, char store[][64])
{
    int argc = 0;
    for (const char *p = cmd; *p;) {
        while (*p == ' ') p++;
        if (!*p) break;
        size_t n = 0;
        while (*p && *p != ' ') store[argc][n++] = *p++;
        argv[argc].ptr = store[argc];
        argv[argc].len = n;
        argc++;
    }
    return argc;
}

static lock_action decide(const lock_client *c, const char *cmd, lock_op **op)
{
    resp_arg argv[16];
    static char store[16][64];
    int argc = split(cmd, argv, store);
    events[0] = '\0';
    return lock_decide(&ctx, c, argc, argv, cmd, strlen(cmd), op);
}

static int has(const lp_str *s, const char *needle)
{
    return s->len > 0 && memmem(s->p, s->len, needle, strlen(needle)) != NULL;
}

/* One decision row: the action, what the send holds, the events logged. */
static void row(const lock_client *c, const char *cmd, lock_action want, const char *send_has,
                const char *want_events)
{
    lock_op *op = NULL;
    lock_action got = decide(c, cmd, &op);
    static const char *names[] = {"FORWARD", "SEND", "LOCAL"};
    is_string(names[got], names[want], "%s: %s", cmd, names[want]);
    if (send_has != NULL) ok(op && has(lock_op_send(op), send_has), "  %s: sends %s", cmd, send_has);
    if (want_events != NULL) is_string(events, want_events, "  %s: events", cmd);
    lock_op_free(op);
}

/* Decides cmd, then maps reply; returns the client's reply (static) and the events. */
static const char *reply(const lock_client *c, const char *cmd, const char *rep, int proto)
{
    static char out[512];
    lock_op *op = NULL;
    if (decide(c, cmd, &op) != LOCK_SEND || op == NULL) {
        lock_op_free(op);
        return "(no op)";
    }
    events[0] = '\0';
    lock_op_set_proto(op, proto);
    lp_str o = {0};
    int rc = lock_op_reply(&ctx, op, rep, strlen(rep), 0, &o);
    snprintf(out, sizeof out, "%s%.*s", rc == LOCK_REPLY_RETRY ? "RETRY " : "", (int)o.len, o.p ? o.p : "");
    lp_str_free(&o);
    lock_op_free(op);
    return out;
}

static void test_decisions(void)
{
    lock_client c = client(1);
    row(&c, "SETNX lock:a v", LOCK_SEND, lp_lua_acquire_sha, "setnx_no_ttl");
    row(&c, "SETNX k v", LOCK_FORWARD, NULL, "");
    row(&c, "SETNX lock:a", LOCK_FORWARD, NULL, "");                 /* Redis's arity error */
    row(&c, "SETNX off:a v", LOCK_FORWARD, NULL, "");
    row(&c, "SET lock:a v NX", LOCK_SEND, lp_lua_acquire_sha, "set_nx_no_ttl");
    row(&c, "SET lock:a v NX GET", LOCK_SEND, "get", "set_nx_no_ttl");
    row(&c, "SET lock:a v NX KEEPTTL", LOCK_SEND, lp_lua_acquire_sha, "set_nx_no_ttl");
    row(&c, "SET lock:a v NX PX 100", LOCK_SEND, "px", "");
    row(&c, "SET lock:a v NX EX 120", LOCK_SEND, lp_lua_acquire_sha, "ttl_capped");
    row(&c, "SET lock:a v", LOCK_FORWARD, NULL, "unconditional_set");
    row(&c, "SET lock:a v GET", LOCK_FORWARD, NULL, "getset_lock");
    row(&c, "SET lock:a v NX XX", LOCK_FORWARD, NULL, "");           /* Redis's syntax error */
    row(&c, "SET lock:a v NX PX 010", LOCK_FORWARD, NULL, "");
    row(&c, "EXPIRE lock:a 10", LOCK_SEND, lp_lua_expire_sha, "");
    row(&c, "PEXPIREAT lock:a -9223372036854775808", LOCK_SEND, "pexpireat", "");
    row(&c, "EXPIRE lock:a 010", LOCK_FORWARD, NULL, "");
    row(&c, "EXPIRE lock:a 9223372036854776", LOCK_FORWARD, NULL, "");
    row(&c, "EXPIRE lock:a 10 NX XX", LOCK_FORWARD, NULL, "");
    row(&c, "PERSIST lock:a", LOCK_SEND, lp_lua_persist_sha, "persist_lock");
    row(&c, "PERSIST audit:a", LOCK_FORWARD, NULL, "persist_lock");
    row(&c, "DEL k1 k2", LOCK_FORWARD, NULL, "");
    row(&c, "DEL lock:a k1", LOCK_SEND, lp_lua_release_sha, "del_unchecked");
    row(&c, "UNLINK lock:a", LOCK_SEND, "unlink", "del_unchecked");
    row(&c, "GETSET lock:a v", LOCK_FORWARD, NULL, "getset_lock");
    row(&c, "EVAL return 1 lock:a", LOCK_FORWARD, NULL, "script_lock");   /* script "return" */
    row(&c, "EVALSHA abc 1 lock:a", LOCK_FORWARD, NULL, "script_lock");
    row(&c, "EVALSHA abc 1 lock:a", LOCK_FORWARD, NULL, "");         /* once an hour */
    row(&c, "EVAL return 1 lock:a", LOCK_FORWARD, NULL, "");
    row(&c, "EVALSHA def 1 lock:a", LOCK_FORWARD, NULL, "script_lock");
    row(&c, "SETNX audit:a v", LOCK_SEND, "none", "setnx_no_ttl");   /* the client's effect, no TTL */
    row(&c, "EXPIRE audit:a 10", LOCK_SEND, lp_lua_expire_sha, "");
    /* The pipelined SETNX+EXPIRE merge is gone: each is judged on its own. */
    row(&c, "SETNX lock:b v", LOCK_SEND, "px", "setnx_no_ttl");
    lock_client ns = client(2);
    ns.no_scripts = 1;
    row(&ns, "SETNX lock:a v", LOCK_FORWARD, NULL, "");
    row(&ns, "DEL lock:a", LOCK_FORWARD, NULL, "");
    lock_client ops = client(3);
    ops.user = "ops";
    ops.user_len = 3;
    row(&ops, "SETNX lock:a v", LOCK_FORWARD, NULL, "");
    row(&ops, "DEL lock:a", LOCK_SEND, lp_lua_release_sha, "");      /* checked only to log */
    lock_client m = client(4);
    m.in_multi = 1;
    lock_op *op = NULL;
    is_int(decide(&m, "PERSIST lock:a", &op), LOCK_SEND, "PERSIST in MULTI: something is queued");
    ok(op && has(lock_op_send(op), "EVALSHA") && has(lock_op_send(op), lp_lua_persist_sha),
       "  persist.lua as EVALSHA, whose element becomes :0");
    unsigned persist_bit = lock_op_preload(op, NULL);
    ok(persist_bit != 0, "  with a preload of its own");
    lp_str pre = {0};
    lock_op_preload(op, &pre);
    ok(has(&pre, "return 0"), "  the preload carries persist.lua");
    lp_str_free(&pre);
    lock_op_free(op);
    is_int(decide(&m, "SETNX lock:a v", &op), LOCK_SEND, "SETNX in MULTI");
    ok(op && has(lock_op_send(op), "EVAL") && !lock_op_uses_sha(op), "  as EVAL (a NOSCRIPT could not be retried)");
    is_string(events, "", "  its event waits for the merge");
    lock_txn t = {0};
    ok(lock_txn_hold(&t, op), "  held by the transaction");
    resp_arg ex[3] = {{"EXPIRE", 6}, {"lock:a", 6}, {"7", 1}};
    int merged;
    lock_op *rel = lock_txn_release(&t, &ctx, 1700000000000LL, 3, ex, &merged);
    ok(rel == op && merged, "  an EXPIRE of its key merges into it");
    is_int(lock_op_extra_elements(op), 1, "  and answers for two EXEC elements");
    ok(strstr(events, "setnx_no_ttl") != NULL, "  setnx_no_ttl logged now (%s)", events);
    lp_str out = {0};
    lock_op_reply(&ctx, op, "*2\r\n:1\r\n:7000\r\n", 16, 1, &out);
    is_bytes(out.p, out.len, ":1\r\n:1\r\n", 8, "  EXEC element: :1 :1");
    lp_str_free(&out);
    lock_op_free(op);
    lock_txn_free(&t);
}

static void test_replies(void)
{
    lock_client c = client(10);
    is_string(reply(&c, "SETNX lock:r v", "*2\r\n:1\r\n:30000\r\n", 2), ":1\r\n", "SETNX acquired: :1");
    is_string(reply(&c, "SETNX lock:r v", "*1\r\n:0\r\n", 2), ":0\r\n", "SETNX held: :0");
    is_string(reply(&c, "SET lock:r v NX", "*2\r\n:1\r\n:30000\r\n", 2), "+OK\r\n", "SET NX acquired: +OK");
    is_string(reply(&c, "SET lock:r v NX", "*1\r\n:0\r\n", 2), "$-1\r\n", "SET NX held: $-1 in RESP2");
    is_string(reply(&c, "SET lock:r v NX", "*1\r\n:0\r\n", 3), "_\r\n", "SET NX held: _ in RESP3");
    is_string(reply(&c, "SET lock:r v NX GET", "*2\r\n:0\r\n$3\r\nold\r\n", 2), "$3\r\nold\r\n",
              "SET NX GET held: the old value");
    is_string(reply(&c, "SET lock:r v NX GET", "*2\r\n:1\r\n:30000\r\n", 3), "_\r\n", "SET NX GET acquired: null");
    is_string(reply(&c, "SETNX lock:r v", "-WRONGTYPE Operation against a key\r\n", 2),
              "-WRONGTYPE Operation against a key\r\n", "Redis's error reaches the client");
    is_string(reply(&c, "SETNX lock:r v", "-NOSCRIPT No matching script.\r\n", 2), "RETRY ", "NOSCRIPT: retry (EVAL)");
    is_string(reply(&c, "EXPIRE lock:r 10", "*2\r\n:0\r\n:1\r\n", 2), ":1\r\n", "EXPIRE by the holder: :1");
    is_string(reply(&c, "EXPIRE lock:r 10", "*2\r\n:1\r\n:0\r\n", 2), ":0\r\n", "EXPIRE by another owner: :0");
    is_string(events, "foreign_expire", "  foreign_expire");
    is_string(reply(&c, "EXPIRE lock:r 10", "*2\r\n:2\r\n:0\r\n", 2), ":0\r\n", "EXPIRE by a late holder: :0");
    is_string(events, "late_release", "  late_release");
    is_string(reply(&c, "DEL lock:r k lock:s", "*3\r\n:1\r\n:1\r\n:31\r\n", 2), ":3\r\n",
              "DEL own lock, ordinary key, lock without record: 3");
    is_string(events, "unknown_lease", "  unknown_lease for the one without a record");
    is_string(reply(&c, "DEL lock:r lock:s", "*2\r\n:10\r\n:20\r\n", 2), ":0\r\n", "DEL foreign and late: 0");
    is_string(events, "foreign_release late_release", "  foreign_release, late_release");
    is_string(reply(&c, "DEL lock:r", "*1\r\n:40\r\n", 2), ":0\r\n", "DEL of an absent lock: 0, no event");
    is_string(events, "", "  (no event)");
    is_string(reply(&c, "DEL lock:r", "*2\r\n:1\r\n:1\r\n", 2), "*2\r\n:1\r\n:1\r\n", "not the script's shape: passed on");
    is_string(reply(&c, "PERSIST lock:r", ":0\r\n", 2), ":0\r\n", "PERSIST refused: persist.lua's 0 is the reply");
    is_string(reply(&c, "PERSIST lock:r", "-READONLY You can't write against a read only replica.\r\n", 2),
              "-READONLY You can't write against a read only replica.\r\n", "PERSIST on a read-only replica: Redis's error");
    is_string(reply(&c, "PERSIST lock:r", "-NOPERM no\r\n", 2), ":0\r\n", "PERSIST and NOPERM: still refused, :0");
    is_string(reply(&c, "PERSIST lock:r", "-NOSCRIPT No matching script.\r\n", 2), "RETRY ", "PERSIST NOSCRIPT: retry (EVAL)");

    /* NOPERM: the client's own command goes instead, its reply passes unchanged. */
    lock_op *op = NULL;
    is_int(decide(&c, "SETNX lock:n v", &op), LOCK_SEND, "NOPERM: decide");
    lp_str out = {0};
    is_int(lock_op_reply(&ctx, op, "-NOPERM no\r\n", 12, 0, &out), LOCK_REPLY_RETRY, "NOPERM: retry");
    ok(lock_op_noperm(op), "  noperm set");
    is_bytes(lock_op_retry(op)->p, lock_op_retry(op)->len, "SETNX lock:n v", 14, "  the retry is the client's own command");
    is_int(lock_op_reply(&ctx, op, ":1\r\n", 4, 0, &out), LOCK_REPLY_DONE, "  its reply");
    is_bytes(out.p, out.len, ":1\r\n", 4, "  passes unchanged");
    lp_str_free(&out);
    lock_op_free(op);
}

#define TOK_A_SHA1 "b83a790ed1f56498f1f4f1bf76d2d08f8d35a12b"   /* printf tok-a | sha1sum */

static void test_cache(void)
{
    /* A connection that acquired passes its acquire id and token to the release; another
     * connection passes none. */
    lock_client a = client(20), b = client(21);
    lock_op *op = NULL;
    decide(&a, "SET lock:c tok-a NX PX 5000", &op);
    lp_str out = {0};
    lock_op_reply(&ctx, op, "*2\r\n:1\r\n:5000\r\n", 16, 0, &out);
    lp_str_free(&out);
    lock_op_free(op);
    decide(&a, "DEL lock:c", &op);
    /* The cache keeps the token's SHA-1 (sha1("tok-a")), never the token. */
    ok(has(lock_op_send(op), TOK_A_SHA1) && has(lock_op_send(op), ctx.proxy_id), "the holder's DEL carries its id and its token's SHA-1");
    ok(!has(lock_op_send(op), "tok-a"), "  and not the token");
    lock_op_free(op);
    decide(&b, "DEL lock:c", &op);
    ok(!has(lock_op_send(op), TOK_A_SHA1), "another connection's DEL carries none");
    lock_op_free(op);
    /* Owners: auto is the IP (or instance and address on loopback); connection is this
     * proxy and connection. */
    decide(&a, "SETNX lock:o v", &op);
    ok(has(lock_op_send(op), "ip:10.0.0.5"), "owner=auto: the client's IP");
    lock_op_free(op);
    lock_client lo = client(22);
    lo.addr = "127.0.0.1:5000";
    lo.ip_len = 9;
    decide(&lo, "SETNX lock:o v", &op);
    ok(has(lock_op_send(op), "host:host-a/127.0.0.1"), "owner=auto, loopback: instance name and address");
    lock_op_free(op);
    decide(&a, "SETNX conn:o v", &op);
    char conn[64];
    snprintf(conn, sizeof conn, "conn:%s:20", ctx.proxy_id);
    ok(has(lock_op_send(op), conn), "owner=connection: %s", conn);
    lock_op_free(op);
    lp_str rec = {0};
    lock_record_key(&rec, "lock:{x}y", 9);
    is_bytes(rec.p, rec.len, "__lockproxy:{x}:r:lock:{x}y", 27, "record key keeps the hash tag");
    rec.len = 0;
    lock_history_key(&rec, "lock:z", 6);
    is_bytes(rec.p, rec.len, "__lockproxy:{lock:z}:h:lock:z", 29, "history key of a key without a tag");
    lp_str_free(&rec);
}

static void test_exec(void)
{
    lock_client m = client(30);
    m.in_multi = 1;
    lock_op *op = NULL;
    decide(&m, "DEL lock:e", &op);
    multi_op mops[1] = {{1, op}};
    lp_str out = {0};
    static const char exec[] = "*3\r\n+OK\r\n*1\r\n:1\r\n$1\r\nx\r\n";
    lock_exec_reply(&ctx, mops, 1, 2, exec, sizeof exec - 1, &out);
    is_bytes(out.p, out.len, "*3\r\n+OK\r\n:1\r\n$1\r\nx\r\n", 20, "EXEC: the DEL's element mapped, the others copied");
    out.len = 0;
    lock_exec_reply(&ctx, mops, 1, 2, "*-1\r\n", 5, &out);
    is_bytes(out.p, out.len, "*-1\r\n", 5, "EXEC after a WATCH conflict passes unchanged");
    out.len = 0;
    lock_exec_reply(&ctx, mops, 1, 2, "-EXECABORT x\r\n", 14, &out);
    is_bytes(out.p, out.len, "-EXECABORT x\r\n", 14, "EXECABORT passes unchanged");
    lp_str_free(&out);
    lock_op_free(op);
}

/* Inside one MULTI, lock commands queued after an acquire are judged with that acquire's
 * lease (EXEC runs them after it), not with an older lease of the connection's cache; in the
 * database the acquire was queued in; the latest acquire of a key counts. */
#define NEW_TOK_SHA1 "09cd5acf9ab2e1a894fb978c6ddab3b998e50d19"   /* printf new-tok | sha1sum */
#define OLD_TOK_SHA1 "5766ba9984eafe7a0f66b61dcde0f581c6d5efc1"   /* printf old-tok | sha1sum */
static void test_txn_lease(void)
{
    lock_client a = client(40);
    lock_op *op = NULL;
    decide(&a, "SET lock:t old-tok NX PX 5000", &op);
    lp_str out = {0};
    lock_op_reply(&ctx, op, "*2\r\n:1\r\n:5000\r\n", 16, 0, &out);
    lp_str_free(&out);
    lock_op_free(op);
    lock_txn t = {0};
    lock_txn_begin(&t);
    lock_client m = client(40);
    m.in_multi = 1;
    m.txn = &t;
    decide(&m, "SETNX lock:t new-tok", &op);
    lock_txn_queued(&t, op);
    char id[48];
    const char *tid, *tok;
    size_t toklen;
    ok(lock_txn_lease(&t, "lock:t", 6, 0, &tid, &tok, &toklen) && toklen == 40 && memcmp(tok, NEW_TOK_SHA1, 40) == 0,
       "an acquire queued in MULTI gives its lease (the token's SHA-1) to the transaction");
    snprintf(id, sizeof id, "%s", tid);
    lock_op_free(op);
    decide(&m, "EXPIRE lock:t 60", &op);
    ok(op && has(lock_op_send(op), NEW_TOK_SHA1) && has(lock_op_send(op), id) && !has(lock_op_send(op), OLD_TOK_SHA1),
       "  an EXPIRE queued after it carries that lease, not the connection's older one");
    lock_op_free(op);
    decide(&m, "DEL lock:t", &op);
    ok(op && has(lock_op_send(op), NEW_TOK_SHA1), "  so does a DEL");
    lock_op_free(op);
    ok(!lock_txn_lease(&t, "lock:t", 6, 1, &tid, &tok, &toklen), "  not in another database");
    lock_client m1 = m;
    m1.db = 1;
    decide(&m1, "EXPIRE lock:t 60", &op);
    ok(op && !has(lock_op_send(op), NEW_TOK_SHA1), "  an EXPIRE of the key in database 1 does not carry it");
    lock_op_free(op);
    lock_client outside = client(40);
    decide(&outside, "EXPIRE lock:t 60", &op);
    ok(op && has(lock_op_send(op), OLD_TOK_SHA1), "  outside MULTI the connection's own lease counts");
    lock_op_free(op);
    lock_txn_begin(&t);
    ok(!lock_txn_lease(&t, "lock:t", 6, 0, &tid, &tok, &toklen), "  a new MULTI starts with none");
    lock_txn_free(&t);
}

int main(void)
{
    plan_lazy();
    setup();
    test_decisions();
    test_replies();
    test_cache();
    test_exec();
    test_txn_lease();
    lease_table_free(ctx.leases);
    audit_once_free(ctx.script_once);
    lock_ctx_free(&ctx);
    policy_free(pol);
    return 0;
}
