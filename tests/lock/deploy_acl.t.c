/* An application whose Redis user may not run scripts (a common ACL hardening):
 *     ACL SETUSER app on >pw ~* &* +@all -@scripting
 * The proxy's checks are scripts (EVALSHA/EVAL); for this user Redis answers -NOPERM. The
 * design's fallback (design9.md): the client's own command goes unchanged, check_unavailable
 * is logged once for the connection, and the client never sees an error for a command it did
 * not send. So through the proxy, as that user, every lock command answers what Redis
 * answers directly:
 *     SETNX, EXPIRE, SETNX (held), DEL; SET NX PX, PEXPIRE, SET NX (held), UNLINK;
 *     SETNX+EXPIRE pipelined; MULTI SETNX EXPIRE DEL EXEC
 * run twice on one connection (1.1 s apart, past the audit log's 1 s rate limit) with
 * check_unavailable logged once; and a fresh connection whose first lock command is queued
 * inside MULTI gets Redis's EXEC reply too, also on a freshly started proxy that has not seen
 * this user before (the application's first request after a proxy restart). */
#include "lock/deploy_util.h"

static hp_proc *redis, *proxy;
static char logpath[4096];

#define NSTEPS 16

typedef struct seq {
    char rep[NSTEPS][256];
    int n;
    long long pttl_a;        /* PTTL of lock:a after EXPIRE 10 */
    int noperm;
} seq;

static const char *steps[] = {
    "SETNX lock:a v", "EXPIRE lock:a 10", "SETNX lock:a w", "DEL lock:a",
    "SET lock:a2 v NX PX 10000", "PEXPIRE lock:a2 20000", "SET lock:a2 w NX", "UNLINK lock:a2",
};
static const char *want[] = { ":1", ":1", ":0", ":1", "+OK", ":1", "(nil)", ":1" };
#define NPLAIN (int)(sizeof steps / sizeof steps[0])

static redisContext *connect_as_app(const hp_proc *t)
{
    redisContext *c = lk_connect(t);
    const char *r = lk_str(c, "AUTH app pw");
    if (strcmp(r, "+OK") != 0) hp_abort("AUTH app pw through %s: %s", t->name, r);
    return c;
}

static void add(seq *s, const char *r)
{
    if (s->n < NSTEPS) snprintf(s->rep[s->n++], 256, "%s", r);
    if (strstr(r, "NOPERM") != NULL) s->noperm++;
}

static void run_seq(redisContext *c, seq *s)
{
    memset(s, 0, sizeof *s);
    lk_flushall(redis);
    for (int i = 0; i < NPLAIN; i++) {
        redisReply *r = redisCommand(c, steps[i]);
        add(s, lk_show(r));
        freeReplyObject(r);
        if (i == 1) s->pttl_a = hp_cmd_int(redis, "PTTL lock:a");
    }
    /* SETNX + EXPIRE pipelined in one write. */
    redisAppendCommand(c, "SETNX lock:a3 v");
    redisAppendCommand(c, "EXPIRE lock:a3 10");
    for (int i = 0; i < 2; i++) {
        void *r = NULL;
        redisGetReply(c, &r);
        add(s, lk_show(r));
        freeReplyObject(r);
    }
    add(s, lk_str(c, "DEL lock:a3"));
    /* MULTI */
    redisAppendCommand(c, "MULTI");
    redisAppendCommand(c, "SETNX lock:a4 v");
    redisAppendCommand(c, "EXPIRE lock:a4 10");
    redisAppendCommand(c, "DEL lock:a4");
    redisAppendCommand(c, "EXEC");
    char all[512] = "";
    for (int i = 0; i < 5; i++) {
        void *r = NULL;
        redisGetReply(c, &r);
        size_t n = strlen(all);
        snprintf(all + n, sizeof all - n, "%s%s", i ? " " : "", lk_show(r));
        freeReplyObject(r);
    }
    add(s, all);
}

static int same_seq(const seq *a, const seq *b, const char *what)
{
    int same = a->n == b->n;
    for (int i = 0; same && i < a->n; i++) same = strcmp(a->rep[i], b->rep[i]) == 0;
    ok(same, "%s: every reply is Redis's", what);
    if (!same)
        for (int i = 0; i < a->n || i < b->n; i++)
            diag("  step %d: direct %s | proxy %s", i, i < a->n ? a->rep[i] : "-", i < b->n ? b->rep[i] : "-");
    return same;
}

int main(void)
{
    lk_require_real_proxy();
    plan_lazy();
    redis = hp_redis_start(NULL);
    if (!hp_cmd_ok(redis, "ACL SETUSER app on >pw ~* &* +@all -@scripting")) hp_abort("ACL SETUSER failed");
    proxy = lk_proxy_start(redis, "deploy_acl", "rule lock: enforce", logpath, sizeof logpath);

    /* The user really cannot script. */
    {
        redisContext *c = connect_as_app(redis);
        const char *r = lk_str(c, "EVAL %s 0", "return 1");
        ok(strstr(r, "NOPERM") != NULL, "direct: the app user may not run scripts (%s)", hp_esc(r, strlen(r), 60));
        redisFree(c);
    }

    static seq d, p1, p2;
    redisContext *c = connect_as_app(redis);
    run_seq(c, &d);
    redisFree(c);
    for (int i = 0; i < NPLAIN; i++) is_string(d.rep[i], want[i], "direct: %s", steps[i]);
    is_string(d.rep[NPLAIN], ":1", "direct: pipelined SETNX");
    is_string(d.rep[NPLAIN + 1], ":1", "direct: pipelined EXPIRE");
    is_string(d.rep[NPLAIN + 3], "+OK +QUEUED +QUEUED +QUEUED [:1,:1,:1]", "direct: MULTI SETNX EXPIRE DEL EXEC");

    c = connect_as_app(proxy);
    run_seq(c, &p1);
    same_seq(&d, &p1, "proxy, first round");
    is_int(p1.noperm, 0, "proxy, first round: no NOPERM error for a command the client did not send");
    ok(p1.pttl_a > 9000 && p1.pttl_a <= 10000, "proxy, first round: EXPIRE lock:a 10 applied (PTTL %lld)", p1.pttl_a);
    hp_sleep_ms(1100);
    run_seq(c, &p2);
    same_seq(&d, &p2, "proxy, second round on the same connection");
    is_int(p2.noperm, 0, "proxy, second round: no NOPERM error");
    redisFree(c);

    int n = lk_log_count_synced(proxy, logpath, "check_unavailable", NULL);
    is_int(n, 1, "check_unavailable logged once for the connection (two rounds, 1.1 s apart)");

    /* A fresh connection whose first lock command is queued in MULTI. */
    lk_flushall(redis);
    const char *mw[] = { "MULTI", "SETNX lock:b v", "EXPIRE lock:b 10", "EXEC", "DEL lock:b" };
    char got[2][512];
    for (int side = 0; side < 2; side++) {
        lk_flushall(redis);
        c = connect_as_app(side ? proxy : redis);
        got[side][0] = '\0';
        for (int i = 0; i < 5; i++) {
            size_t len = strlen(got[side]);
            redisReply *r = redisCommand(c, mw[i]);
            snprintf(got[side] + len, sizeof got[side] - len, "%s%s", i ? " " : "", lk_show(r));
            freeReplyObject(r);
        }
        redisFree(c);
    }
    is_string(got[0], "+OK +QUEUED +QUEUED [:1,:1] :1", "MULTI first: direct");
    is_string(got[1], got[0], "MULTI first: the proxy answers as Redis (no error for a command the client did not send)");

    /* The same on a proxy that has never seen the app user. */
    {
        char log2[4096];
        hp_proc *fresh = lk_proxy_start(redis, "deploy_acl_fresh", "rule lock: enforce", log2, sizeof log2);
        lk_flushall(redis);
        c = connect_as_app(fresh);
        char g[512] = "";
        for (int i = 0; i < 5; i++) {
            size_t len = strlen(g);
            redisReply *r = redisCommand(c, mw[i]);
            snprintf(g + len, sizeof g - len, "%s%s", i ? " " : "", lk_show(r));
            freeReplyObject(r);
        }
        redisFree(c);
        is_string(g, got[0], "MULTI first on a fresh proxy: answered as Redis");
        is_int(hp_stop(fresh, 10000), 0, "the fresh proxy exits 0 on SIGTERM");
    }
    diag("check_unavailable events in all: %d", lk_log_count_synced(proxy, logpath, "check_unavailable", NULL));

    is_int(hp_stop(proxy, 10000), 0, "the proxy exits 0 on SIGTERM");
    return 0;
}
