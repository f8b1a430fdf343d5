/* lockproxy in front of a Sentinel-managed master (upstream sentinel://.../mymaster), through
 * two failovers (SENTINEL FAILOVER: A -> B, then B -> A), with real redis-server and
 * redis-sentinel processes on loopback:
 *
 *   sentinels given: a stale one (a small fake in this program naming the replica), a dead
 *   port, the real sentinel. The proxy skips the first two (logged) and uses the master the
 *   real one names once ROLE confirms it.
 *   each round: 5 locks held through the proxy (SET NX PX 60000, WAIT 1), then writes and
 *   lock cycles in a loop while SENTINEL FAILOVER runs:
 *     every request is answered: +OK, or an error that says why (the proxy's "master
 *     switched", READONLY from a demoted master), or the connection closes; none hangs;
 *     a write lands on the new master (CONFIG GET port on the same connection) within 30 s;
 *     the held locks' connections are closed by the proxy; the locks are released cleanly
 *     afterwards through new connections (DEL :1) and nothing of them is left.
 *   a lock taken once the replica is promoted (ROLE master) but before the proxy switched
 *   goes to the old master and is lost: the proxy looks the locks of the connections it
 *   closes up on the new master and logs each missing one as failover_lost; its DEL after
 *   the failover answers :0 (or :1 when the proxy had switched already), never an error.
 *   after the first round: a lock without TTL (rule ttl=2s, renewed by the proxy) outlives
 *   its TTL on the new master: renewal follows the master.
 *   last, the master is killed (SIGKILL): Sentinel fails over by itself and the proxy follows;
 *   requests meanwhile fail with the proxy's "upstream unavailable" error, none hangs.
 * The failover gap (SENTINEL FAILOVER answered -> first write through the proxy that lands on
 * the new master) and the counts are printed as diagnostics, not asserted. */
#include <poll.h>
#include <pthread.h>

#include "ha/ha_util.h"

#define NLOCK 5
#define MASTER "mymaster"

static hp_proc *ra, *rb, *pxy;
static ha_child sent;
static int sport;
static char audit[4096];
static int lost_rounds;

/* ---- a stale sentinel: answers every command with the address of the replica ---- */

static int fake_fd = -1, fake_port, fake_names;
static volatile int fake_stop;

static void *fake_sentinel(void *arg)
{
    (void)arg;
    char port[16], reply[128];
    snprintf(port, sizeof port, "%d", fake_names);
    int n = snprintf(reply, sizeof reply, "*2\r\n$9\r\n127.0.0.1\r\n$%zu\r\n%s\r\n", strlen(port), port);
    while (!fake_stop) {
        struct pollfd p = { fake_fd, POLLIN, 0 };
        if (poll(&p, 1, 100) <= 0) continue;
        int c = accept(fake_fd, NULL, NULL);
        if (c < 0) continue;
        struct pollfd q = { c, POLLIN, 0 };
        char buf[4096];
        while (poll(&q, 1, 1000) > 0) {
            ssize_t got = read(c, buf, sizeof buf);
            if (got <= 0) break;
            if (write(c, reply, (size_t)n) < 0) break;
        }
        close(c);
    }
    return NULL;
}

static void fake_start(int names_port)
{
    fake_names = names_port;
    fake_fd = socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    setsockopt(fake_fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = 0 };
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    if (bind(fake_fd, (struct sockaddr *)&a, sizeof a) < 0 || listen(fake_fd, 16) < 0 ||
        getsockname(fake_fd, (struct sockaddr *)&a, &len) < 0)
        hp_abort("fake sentinel: %s", strerror(errno));
    fake_port = ntohs(a.sin_port);
    pthread_t t;
    if (pthread_create(&t, NULL, fake_sentinel, NULL) != 0) hp_abort("pthread_create");
    pthread_detach(t);
}

/* ---- Redis and Sentinel state ---- */

static int replica_linked(const hp_proc *p)
{
    redisReply *r = hp_cmd(p, "INFO replication");
    int up = r != NULL && r->type == REDIS_REPLY_STRING && strstr(r->str, "master_link_status:up") != NULL;
    freeReplyObject(r);
    return up;
}

static int is_master(const hp_proc *p)
{
    redisReply *r = hp_cmd(p, "ROLE");
    int m = r != NULL && r->type == REDIS_REPLY_ARRAY && r->elements > 0 && strcmp(r->element[0]->str, "master") == 0;
    freeReplyObject(r);
    return m;
}

/* Whether the sentinel sees exactly one replica, the one on port, and it is healthy. */
static int sentinel_sees_replica(int port)
{
    redisReply *r = ha_cmd_port(sport, "SENTINEL REPLICAS " MASTER);
    int good = 0;
    if (r != NULL && r->type == REDIS_REPLY_ARRAY && r->elements == 1) {
        const redisReply *e = r->element[0];
        int p = 0;
        const char *flags = "";
        for (size_t i = 0; i + 1 < e->elements; i += 2) {
            if (strcmp(e->element[i]->str, "port") == 0) p = atoi(e->element[i + 1]->str);
            if (strcmp(e->element[i]->str, "flags") == 0) flags = e->element[i + 1]->str;
        }
        good = p == port && strcmp(flags, "slave") == 0;
    }
    freeReplyObject(r);
    return good;
}

static int wait_for(int (*cond)(const hp_proc *), const hp_proc *p, int timeout_ms)
{
    long long until = hp_now_ms() + timeout_ms;
    do {
        if (cond(p)) return 1;
        hp_sleep_ms(100);
    } while (hp_now_ms() < until);
    return 0;
}

static int wait_sentinel_replica(int port, int timeout_ms)
{
    long long until = hp_now_ms() + timeout_ms;
    do {
        if (sentinel_sees_replica(port)) return 1;
        hp_sleep_ms(100);
    } while (hp_now_ms() < until);
    return 0;
}

/* ---- one failover ---- */

typedef struct stats {
    int ok, on_new, switched, readonly, unavailable, closed, hung, other;
    int cyc_ok, cyc_failed, cyc_other;
    char first_other[256];
} stats;

/* Classifies a reply that is not the expected success. 1 when the failure is a clear one. */
static int failure_kind(stats *st, redisContext *c, const redisReply *r, long long took)
{
    if (r == NULL) {
        if (took >= 4500) st->hung++;
        else st->closed++;
        (void)c;
        return took < 4500;
    }
    if (r->type == REDIS_REPLY_ERROR && strstr(r->str, "master switched") != NULL) { st->switched++; return 1; }
    if (r->type == REDIS_REPLY_ERROR && strncmp(r->str, "READONLY", 8) == 0) { st->readonly++; return 1; }
    if (r->type == REDIS_REPLY_ERROR && strstr(r->str, "lockproxy: upstream unavailable") != NULL) { st->unavailable++; return 1; }
    st->other++;
    if (st->first_other[0] == '\0') snprintf(st->first_other, sizeof st->first_other, "%s", lk_show(r));
    return 0;
}

static void failover_round(int round, const hp_proc *from, const hp_proc *to)
{
    ok(wait_for(replica_linked, to, 60000), "round %d: %s replicates from %s", round, to->name, from->name);
    ok(wait_sentinel_replica(to->port, 30000), "round %d: the sentinel sees %s as a healthy replica", round, to->name);

    /* Locks held across the failover, replicated before it. */
    redisContext *holder[NLOCK];
    int acquired = 0;
    for (int i = 0; i < NLOCK; i++) {
        holder[i] = lk_connect(pxy);
        if (strcmp(lk_str(holder[i], "SET lock:ha:%d:%d tok%d NX PX 60000", round, i, i), "+OK") == 0) acquired++;
    }
    is_int(acquired, NLOCK, "round %d: %d locks acquired through the proxy", round, NLOCK);
    is_string(lk_str(holder[0], "WAIT 1 5000"), ":1", "round %d: WAIT 1: the locks reached the replica", round);

    /* SENTINEL FAILOVER; it may be refused while the sentinel is still settling. */
    long long t0 = 0;
    const char *last = "";
    for (long long until = hp_now_ms() + 30000; hp_now_ms() < until; hp_sleep_ms(200)) {
        redisReply *r = ha_cmd_port(sport, "SENTINEL FAILOVER " MASTER);
        last = lk_show(r);
        int good = r != NULL && r->type == REDIS_REPLY_STATUS;
        freeReplyObject(r);
        if (good) { t0 = hp_now_ms(); break; }
    }
    if (!ok(t0 > 0, "round %d: SENTINEL FAILOVER accepted", round)) {
        diag("last answer: %s", last);
        return;
    }

    /* A lock taken once the replica has been promoted: until Sentinel announces the switch the
     * proxy still sends it to the old master, which no longer replicates to the new one. */
    for (long long until = hp_now_ms() + 10000; !is_master(to) && hp_now_ms() < until;) hp_sleep_ms(5);
    redisContext *late = lk_connect(pxy);
    char late_acq[64];
    snprintf(late_acq, sizeof late_acq, "%s", lk_str(late, "SET lock:ha:%d:late tokl NX PX 60000", round));
    diag("round %d: lock:ha:%d:late taken once %s was promoted: %s", round, round, to->name, late_acq);

    stats st;
    memset(&st, 0, sizeof st);
    long long gap = -1;
    int *acked = calloc(100000, sizeof *acked), nacked = 0;
    redisContext *w = NULL, *l = NULL;
    for (int seq = 0; hp_now_ms() < t0 + 30000 && seq < 100000; seq++) {
        if (w == NULL && (w = ha_connect_port(pxy->port)) == NULL) { st.closed++; hp_sleep_ms(10); continue; }
        long long s0 = hp_now_ms();
        redisAppendCommand(w, "SET ha:%d:w:%d %d", round, seq, seq);
        redisAppendCommand(w, "CONFIG GET port");
        redisReply *r1 = NULL, *r2 = NULL;
        if (redisGetReply(w, (void **)&r1) == REDIS_OK) redisGetReply(w, (void **)&r2);
        long long took = hp_now_ms() - s0;
        if (r1 != NULL && r1->type == REDIS_REPLY_STATUS && strcmp(r1->str, "OK") == 0) {
            st.ok++;
            acked[nacked++] = seq;
            if (r2 != NULL && r2->type == REDIS_REPLY_ARRAY && r2->elements == 2 && atoi(r2->element[1]->str) == to->port) {
                st.on_new++;
                if (gap < 0) gap = hp_now_ms() - t0;
            }
        } else {
            failure_kind(&st, w, r1, took);
        }
        if (r1 == NULL || r2 == NULL || w->err) { redisFree(w); w = NULL; }
        freeReplyObject(r1);
        freeReplyObject(r2);

        /* One lock cycle on a connection of its own. */
        if (l == NULL && (l = ha_connect_port(pxy->port)) == NULL) { st.cyc_failed++; continue; }
        s0 = hp_now_ms();
        redisReply *a = redisCommand(l, "SET lock:ha:%d:cyc:%d t%d NX PX 5000", round, seq, seq);
        redisReply *d = a != NULL && a->type == REDIS_REPLY_STATUS ? redisCommand(l, "DEL lock:ha:%d:cyc:%d", round, seq) : NULL;
        took = hp_now_ms() - s0;
        if (d != NULL && d->type == REDIS_REPLY_INTEGER && d->integer == 1) {
            st.cyc_ok++;
        } else {
            const redisReply *bad = a == NULL || a->type != REDIS_REPLY_STATUS ? a : d;
            stats tmp;
            memset(&tmp, 0, sizeof tmp);
            if (failure_kind(&tmp, l, bad, took)) st.cyc_failed++;
            else {
                st.cyc_other++;
                if (st.first_other[0] == '\0') snprintf(st.first_other, sizeof st.first_other, "lock cycle: %s", lk_show(bad));
            }
            st.hung += tmp.hung;
        }
        if (a == NULL || (a->type == REDIS_REPLY_STATUS && d == NULL) || l->err) { redisFree(l); l = NULL; }
        freeReplyObject(a);
        freeReplyObject(d);
        if (st.on_new >= 50) break;
        hp_sleep_ms(2);
    }
    redisFree(w);
    redisFree(l);

    ok(gap >= 0, "round %d: writes through the proxy reach the new master %s within 30 s", round, to->name);
    diag("round %d: failover gap (SENTINEL FAILOVER answered -> first write through the proxy on the new master): %lld ms",
         round, gap);
    diag("round %d: writes: %d OK (%d on the new master), failed: %d 'master switched', %d READONLY, %d connection "
         "closed; lock cycles: %d clean, %d failed clearly", round, st.ok, st.on_new, st.switched, st.readonly,
         st.closed, st.cyc_ok, st.cyc_failed);
    is_int(st.hung, 0, "round %d: no request hung (each answered or failed within 5 s)", round);
    is_int(st.other + st.cyc_other, 0, "round %d: every failure said why ('master switched', READONLY, or the connection "
           "closed)%s%s", round, st.first_other[0] ? "; first other: " : "", st.first_other);
    ok(st.cyc_ok > 0, "round %d: lock cycles went on through the failover (%d clean)", round, st.cyc_ok);
    char moved[160];
    snprintf(moved, sizeof moved, "moved from 127.0.0.1:%d to 127.0.0.1:%d", from->port, to->port);
    ok(ha_file_has(pxy->log, moved), "round %d: the proxy logged the switch (%s)", round, moved);

    /* Writes the old master acknowledged after the replica was promoted are not on the new
     * one: asynchronous replication, as with any Sentinel client. Shown, not asserted. */
    int missing = 0;
    redisContext *n = lk_connect(to);
    for (int i = 0; i < nacked; i++) {
        redisReply *r = redisCommand(n, "EXISTS ha:%d:w:%d", round, acked[i]);
        if (r != NULL && r->type == REDIS_REPLY_INTEGER && r->integer == 0) missing++;
        freeReplyObject(r);
    }
    diag("round %d: %d of %d acknowledged writes are not on the new master (written to the old one during the "
         "promotion)", round, missing, nacked);
    free(acked);

    /* The held locks: their connections were closed with the old master's; they are released
     * cleanly through new connections. */
    int closed = 0;
    for (int i = 0; i < NLOCK; i++) {
        redisReply *r = redisCommand(holder[i], "PING");
        if (r == NULL || (r->type == REDIS_REPLY_ERROR && strstr(r->str, "master switched"))) closed++;
        freeReplyObject(r);
        redisFree(holder[i]);
    }
    is_int(closed, NLOCK, "round %d: the holders' connections (to the old master) were closed by the proxy", round);
    int released = 0;
    redisContext *c = lk_connect(pxy);
    for (int i = 0; i < NLOCK; i++) {
        const char *d = lk_str(c, "DEL lock:ha:%d:%d", round, i);
        if (strcmp(d, ":1") == 0) released++;
        else diag("round %d: lock:ha:%d:%d: DEL answered %s (lost in the failover)", round, round, i, d);
    }
    redisFree(c);
    is_int(released, NLOCK, "round %d: the locks acquired before the failover are released after it (DEL :1)", round);
    {
        redisContext *c2 = lk_connect(pxy);
        char key[64];
        snprintf(key, sizeof key, "lock:ha:%d:late", round);
        char d[64];
        snprintf(d, sizeof d, "%s", lk_str(c2, "DEL %s", key));
        redisFree(c2);
        redisFree(late);
        diag("round %d: the lock taken during the failover: DEL answered %s%s", round, d,
             strcmp(d, ":1") == 0 ? " (it survived)" : strcmp(d, ":0") == 0 ? " (lost with the old master's last writes)" : "");
        ok(strcmp(late_acq, "+OK") != 0 || strcmp(d, ":1") == 0 || strcmp(d, ":0") == 0,
           "round %d: the lock taken during the failover: its DEL after it answers :1 (survived) or :0 (lost), "
           "never an error", round);
        int lost_logged = lk_log_wait(audit, "failover_lost", key, strcmp(d, ":0") == 0 ? 5000 : 0);
        ok(strcmp(d, ":0") != 0 || lost_logged, "round %d: a lost lock is in the audit log as failover_lost", round);
        ok(strcmp(d, ":1") != 0 || !lost_logged, "round %d: a surviving one is not", round);
        if (strcmp(d, ":0") == 0) lost_rounds++;
        hp_buf log = {0};
        lk_read_file(audit, &log);
        int held_lost = 0;
        for (int i = 0; i < NLOCK; i++) {
            char k[64];
            snprintf(k, sizeof k, "lock:ha:%d:%d", round, i);
            held_lost += lk_log_count(&log, "failover_lost", k);
        }
        hp_buf_free(&log);
        is_int(held_lost, 0, "round %d: no failover_lost for the locks replicated with WAIT", round);
        ok(ha_file_has(pxy->log, "failover: "), "round %d: the proxy summed up the locks it checked on the new master", round);
    }
    long long left = 0;
    for (int i = 0; i < NLOCK; i++) left += hp_cmd_int(to, "EXISTS lock:ha:%d:%d", round, i);
    is_int(left, 0, "round %d: none of them is left on the new master", round);
    redisFree(n);
}

/* The master is killed: Sentinel fails over by itself (down-after-milliseconds 1000) and the
 * proxy follows; meanwhile requests fail clearly (connections refused by the dead master are
 * answered "-ERR lockproxy: upstream unavailable (...)"), none hangs. */
static void kill_round(hp_proc *from, const hp_proc *to)
{
    ok(wait_for(replica_linked, to, 60000), "kill: %s replicates from %s", to->name, from->name);
    ok(wait_sentinel_replica(to->port, 30000), "kill: the sentinel sees %s as a healthy replica", to->name);
    hp_kill(from);
    long long t0 = hp_now_ms(), gap = -1;
    stats st;
    memset(&st, 0, sizeof st);
    redisContext *w = NULL;
    for (int seq = 0; hp_now_ms() < t0 + 60000 && st.on_new < 20; seq++) {
        if (w == NULL && (w = ha_connect_port(pxy->port)) == NULL) { st.closed++; hp_sleep_ms(10); continue; }
        long long s0 = hp_now_ms();
        redisAppendCommand(w, "SET ha:k:w:%d %d", seq, seq);
        redisAppendCommand(w, "CONFIG GET port");
        redisReply *r1 = NULL, *r2 = NULL;
        if (redisGetReply(w, (void **)&r1) == REDIS_OK) redisGetReply(w, (void **)&r2);
        long long took = hp_now_ms() - s0;
        if (r1 != NULL && r1->type == REDIS_REPLY_STATUS) {
            st.ok++;
            if (r2 != NULL && r2->type == REDIS_REPLY_ARRAY && r2->elements == 2 && atoi(r2->element[1]->str) == to->port) {
                st.on_new++;
                if (gap < 0) gap = hp_now_ms() - t0;
            }
        } else {
            failure_kind(&st, w, r1, took);
        }
        if (r1 == NULL || r2 == NULL || w->err || r1->type == REDIS_REPLY_ERROR) { redisFree(w); w = NULL; }
        freeReplyObject(r1);
        freeReplyObject(r2);
        hp_sleep_ms(20);
    }
    redisFree(w);
    ok(gap >= 0, "kill: writes through the proxy reach %s, promoted by Sentinel, within 60 s", to->name);
    diag("kill: master killed -> first write through the proxy on the new master: %lld ms (down-after-milliseconds "
         "1000); %d failed with 'upstream unavailable', %d with the connection closed, %d 'master switched'",
         gap, st.unavailable, st.closed, st.switched);
    is_int(st.hung, 0, "kill: no request hung");
    is_int(st.other, 0, "kill: every failure said why%s%s", st.first_other[0] ? "; first other: " : "", st.first_other);
}

/* A lock taken without a TTL after the failover is renewed on the new master. */
static void renewal_follows(const hp_proc *master)
{
    redisContext *h = lk_connect(pxy);
    is_string(lk_str(h, "SET lock:ha:renew tok NX"), "+OK", "renewal: a lock without TTL acquired (rule ttl=2s)");
    hp_sleep_ms(3500);
    long long pttl = hp_cmd_int(master, "PTTL lock:ha:renew");
    ok(pttl > 0, "renewal: after 3.5 s (> ttl) the lock is still on the new master (PTTL %lld): renewed there", pttl);
    is_string(lk_str(h, "DEL lock:ha:renew"), ":1", "renewal: released by its holder");
    redisFree(h);
}

int main(void)
{
    lk_require_real_proxy();
    if (!lk_have_program("redis-sentinel")) skip_all("redis-sentinel is not installed (sh scripts/deps.sh)");
    plan_lazy();

    ra = hp_redis_start(NULL);
    char aport[16];
    snprintf(aport, sizeof aport, "%d", ra->port);
    const char *rx[] = { "--replicaof", "127.0.0.1", aport, NULL };
    rb = hp_redis_start(rx);

    sport = hp_free_port();
    char conf[1024];
    snprintf(conf, sizeof conf,
             "port %d\nbind 127.0.0.1\ndaemonize no\ndir %s\n"
             "sentinel monitor " MASTER " 127.0.0.1 %d 1\n"
             "sentinel down-after-milliseconds " MASTER " 1000\n"
             "sentinel failover-timeout " MASTER " 10000\n",
             sport, hp_tmpdir(), ra->port);
    const char *sconf = lk_write_file("sentinel.conf", conf);
    const char *sargv[] = { "redis-sentinel", sconf, NULL };
    ha_start(&sent, "sentinel", sargv, -1);
    if (!ha_wait_pong(sport, 15000)) { ha_log_tail(sent.log, 20); hp_abort("redis-sentinel did not start"); }
    ok(wait_sentinel_replica(rb->port, 30000), "the sentinel monitors %s with %s as its replica", ra->name, rb->name);

    fake_start(rb->port);
    int dead = hp_free_port();
    char up[256];
    snprintf(up, sizeof up, "sentinel://127.0.0.1:%d,127.0.0.1:%d,127.0.0.1:%d/" MASTER, fake_port, dead, sport);
    const char *pol = lk_write_file("ha.policy", "rule lock:ha: enforce ttl=2s\n");
    snprintf(audit, sizeof audit, "%s/ha.audit.log", hp_tmpdir());
    const char *px[] = { "--upstream", up, "--policy", pol, "--log", audit, NULL };
    pxy = hp_proxy_start(ra, px);

    char want[256];
    snprintf(want, sizeof want, "named 127.0.0.1:%d for '" MASTER "', which says its role is slave: skipped", rb->port);
    ok(ha_file_has(pxy->log, want), "a sentinel naming a replica is logged and skipped");
    snprintf(want, sizeof want, "sentinel 127.0.0.1:%d: no answer (down or unreachable): skipped", dead);
    ok(ha_file_has(pxy->log, want), "a sentinel that is down is logged and skipped");
    snprintf(want, sizeof want, "master '" MASTER "' is 127.0.0.1:%d (ROLE: master)", ra->port);
    ok(ha_file_has(pxy->log, want), "the master the real sentinel names is used");
    ok(ha_file_wait(pxy->log, "subscribed to +switch-master", 5000), "the proxy subscribes to +switch-master");
    {
        redisContext *c = lk_connect(pxy);
        is_string(lk_str(c, "SET ha:first 1"), "+OK", "a write through the proxy");
        redisFree(c);
        is_string(lk_pstr(ra, "GET ha:first"), "1", "it is on the master %s", ra->name);
    }

    failover_round(1, ra, rb);
    ok(is_master(rb), "after round 1, %s is the master", rb->name);
    renewal_follows(rb);
    failover_round(2, rb, ra);
    ok(is_master(ra), "after round 2, %s is the master again", ra->name);
    kill_round(ra, rb);

    diag("the lock taken after the promotion was lost (and logged) in %d of 2 rounds", lost_rounds);
    lk_check_json_log(audit, "the audit log");
    is_int(hp_stop(pxy, 10000), 0, "the proxy exits 0 on SIGTERM");
    fake_stop = 1;
    ha_stop(&sent, 5000);
    if (tap_failures() > 0) ha_log_tail(sent.log, 30);
    return 0;
}
