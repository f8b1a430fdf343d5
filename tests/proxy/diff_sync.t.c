/* Replication through the proxy, and the replies Redis gives a replica.
 *
 * SYNC and PSYNC turn a connection into a replication link: Redis answers with bare "\n"
 * keepalives, +FULLRESYNC (PSYNC), an RDB bulk without a trailing CRLF ("$<len>" or, for a
 * replica announcing "capa eof", "$EOF:<40-byte mark>"), then the stream of commands it
 * propagates; the replica sends REPLCONF ACK. The RDB differs per run, so each exchange is
 * compared by structure (keepalives seen or not, FULLRESYNC, the bulk's form, the "REDIS"
 * magic, the payload's length) and the command stream after it byte for byte.
 *
 * Then: redis-cli --rdb writes a file redis-check-rdb accepts, redis-cli --replica logs the
 * master's writes, a real redis-server replicates through the proxy, a replication link
 * survives silence longer than upstream-timeout and a slow reader gets the whole RDB while
 * the proxy holds little of it; refused SYNC/PSYNC answer as Redis does with the requests
 * pipelined behind them; lock commands on a read-only replica answer -READONLY as Redis does;
 * nested MULTI around lock commands (RESP2 and RESP3). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "lib/harness.h"

static hp_proc *redis, *proxy;
static const char policy_text[] = "rule lock: enforce ttl=30s\n";

/* ---- reading a replication link ---------------------------------------------------------- */

typedef struct rlink {
    int fd;
    int keepalives;          /* bare "\n" before the bulk */
    int fullresync;          /* a +FULLRESYNC <replid> <offset> line came first */
    int eof_form;            /* the bulk was "$EOF:<mark>" */
    long long rdb_len;       /* payload bytes (the mark excluded) */
    int magic;               /* the payload starts with "REDIS" */
    hp_buf buf;              /* everything read */
    size_t stream_at;        /* where the command stream starts in buf */
    int good;                /* the whole preamble and payload arrived and parsed */
} rlink;

/* Reads until buf holds at least n bytes. */
static int need(rlink *l, size_t n, int ms)
{
    return l->buf.len >= n || hp_read_n(l->fd, &l->buf, n, ms) == HP_IO_OK;
}

/* Sends req on a fresh connection to port and reads the rlink's preamble and RDB payload;
 * paced: reads at most chunk bytes at a time with pause_ms between (0: as fast as it comes). */
static void attach_pre(rlink *l, const hp_proc *target, const char *pre, const char *req, size_t chunk,
                       int pause_ms)
{
    memset(l, 0, sizeof(*l));
    l->fd = hp_connect_proc(target, 5000);
    if (l->fd < 0) return;
    if (pre != NULL) {
        /* A command answered +OK first (Redis refuses SYNC with output pending). */
        if (hp_send_all(l->fd, pre, strlen(pre), 5000) != HP_IO_OK ||
            hp_read_until(l->fd, &l->buf, 0, "+OK\r\n", 5000) != HP_IO_OK || l->buf.len != 5)
            return;
        hp_buf_reset(&l->buf);
    }
    if (hp_send_all(l->fd, req, strlen(req), 5000) != HP_IO_OK) return;
    size_t pos = 0;
    for (;;) {
        if (!need(l, pos + 1, 20000)) return;
        char c = l->buf.data[pos];
        if (c == '\n') { l->keepalives++; pos++; continue; }
        size_t eol = hp_buf_find(&l->buf, pos, "\r\n", 2);
        while (eol == (size_t)-1) {
            if (hp_read_n(l->fd, &l->buf, l->buf.len + 1, 20000) != HP_IO_OK) return;
            eol = hp_buf_find(&l->buf, pos, "\r\n", 2);
        }
        if (c == '+' && strncmp(l->buf.data + pos, "+FULLRESYNC ", 12) == 0) {
            l->fullresync = 1;
            pos = eol + 2;
            continue;
        }
        if (c != '$') return;
        if (strncmp(l->buf.data + pos, "$EOF:", 5) == 0 && eol - pos == 45) {
            char mark[40];
            memcpy(mark, l->buf.data + pos + 5, 40);
            l->eof_form = 1;
            size_t start = eol + 2, end;
            while ((end = hp_buf_find(&l->buf, start, mark, 40)) == (size_t)-1)
                if (hp_read_n(l->fd, &l->buf, l->buf.len + 1, 20000) != HP_IO_OK) return;
            l->rdb_len = (long long)(end - start);
            l->magic = l->buf.len >= start + 5 && memcmp(l->buf.data + start, "REDIS", 5) == 0;
            l->stream_at = end + 40;
        } else {
            long long n = strtoll(l->buf.data + pos + 1, NULL, 10);
            size_t start = eol + 2;
            while (l->buf.len < start + (size_t)n) {
                size_t want = l->buf.len + (chunk ? chunk : (size_t)n);
                if (want > start + (size_t)n) want = start + (size_t)n;
                if (hp_read_n(l->fd, &l->buf, want, 20000) != HP_IO_OK) return;
                if (pause_ms) hp_sleep_ms(pause_ms);
            }
            l->rdb_len = n;
            l->magic = memcmp(l->buf.data + start, "REDIS", 5) == 0;
            l->stream_at = start + (size_t)n;
        }
        l->good = 1;
        return;
    }
}

static void attach(rlink *l, const hp_proc *target, const char *req, size_t chunk, int pause_ms)
{
    attach_pre(l, target, NULL, req, chunk, pause_ms);
}

/* Reads the command stream until it holds text; returns it (from the stream's start). */
static const char *stream_until(rlink *l, const char *text)
{
    if (hp_buf_find(&l->buf, l->stream_at, text, strlen(text)) == (size_t)-1)
        hp_read_until(l->fd, &l->buf, l->stream_at, text, 10000);
    return l->buf.data ? l->buf.data + l->stream_at : "";
}

static void link_close(rlink *l)
{
    if (l->fd >= 0) close(l->fd);
    hp_buf_free(&l->buf);
}

static void describe(const rlink *l, char *out, size_t cap)
{
    snprintf(out, cap, "%s%s%s bulk, %s", l->keepalives ? "keepalives, " : "", l->fullresync ? "+FULLRESYNC, " : "",
             l->eof_form ? "$EOF:<mark>" : "$<len>", l->magic ? "REDIS magic" : "no magic");
}

/* One exchange both ways: the same structure, the same command stream after a write. */
static void diff_link(const char *name, const char *req, int want_keepalives, int want_eof)
{
    rlink d, p;
    char ds[128], ps[128];
    attach(&d, redis, req, 0, 0);
    ok(d.good, "%s: direct: preamble and RDB payload read", name);
    hp_cmd_ok(redis, "SET %s:k v1", name);
    const char *dstream = stream_until(&d, "v1\r\n");
    char *dcopy = strdup(dstream);
    link_close(&d);

    attach(&p, proxy, req, 0, 0);
    ok(p.good, "%s: proxy: preamble and RDB payload read", name);
    hp_cmd_ok(redis, "SET %s:k v1", name);
    const char *pstream = stream_until(&p, "v1\r\n");

    describe(&d, ds, sizeof ds);
    describe(&p, ps, sizeof ps);
    is_string(ps, ds, "%s: the same structure (%s)", name, ds);
    ok(d.magic && p.magic, "%s: both payloads start with REDIS", name);
    ok(d.eof_form == want_eof, "%s: Redis sent the %s form", name, want_eof ? "$EOF:" : "$<len>");
    if (want_keepalives)
        ok(d.keepalives > 0 && p.keepalives > 0, "%s: keepalives reached the client both ways (%d direct, %d proxy)",
           name, d.keepalives, p.keepalives);
    is_string(pstream, dcopy, "%s: the same command stream after a write", name);
    ok(strstr(dcopy, "SET") != NULL, "%s: Redis's stream carries the SET", name);
    free(dcopy);
    link_close(&p);
}

static void test_links(void)
{
    hp_cmd_ok(redis, "CONFIG SET repl-ping-replica-period 3600");
    hp_cmd_ok(redis, "SET some value");
    hp_cmd_ok(redis, "CONFIG SET repl-diskless-sync no");
    diff_link("SYNC", "SYNC\r\n", 0, 0);
    diff_link("PSYNC ? -1", "PSYNC ? -1\r\n", 0, 0);

    /* Keepalives: a BGSAVE slowed down to ~2 s makes Redis send "\n" each second. */
    hp_cmd_ok(redis, "SET other value");
    hp_cmd_ok(redis, "CONFIG SET rdb-key-save-delay 700000");
    diff_link("SYNC with keepalives", "SYNC\r\n", 1, 0);
    diff_link("PSYNC with keepalives", "PSYNC ? -1\r\n", 1, 0);
    hp_cmd_ok(redis, "CONFIG SET rdb-key-save-delay 0");

    /* Diskless: a replica with capa eof gets "$EOF:<mark>". The capa must be acknowledged
     * before PSYNC (Redis refuses SYNC with output pending). */
    hp_cmd_ok(redis, "CONFIG SET repl-diskless-sync yes");
    hp_cmd_ok(redis, "CONFIG SET repl-diskless-sync-delay 0");
    rlink d, p;
    char ds[128], ps[128];
    attach_pre(&d, redis, "REPLCONF capa eof capa psync2\r\n", "PSYNC ? -1\r\n", 0, 0);
    attach_pre(&p, proxy, "REPLCONF capa eof capa psync2\r\n", "PSYNC ? -1\r\n", 0, 0);
    ok(d.good && p.good, "diskless: REPLCONF capa eof answered +OK, then +FULLRESYNC and the payload up to its "
                         "mark read (direct %d, proxy %d)", d.good, p.good);
    describe(&d, ds, sizeof ds);
    describe(&p, ps, sizeof ps);
    is_string(ps, ds, "diskless PSYNC: the same structure (%s)", ds);
    ok(d.eof_form && d.fullresync, "diskless PSYNC: Redis sent +FULLRESYNC and the $EOF: form");
    hp_cmd_ok(redis, "SET diskless:k v1");
    const char *ss = stream_until(&d, "v1\r\n");
    char *dcopy = strdup(ss);
    is_string(stream_until(&p, "v1\r\n"), dcopy, "diskless PSYNC: the same command stream after a write");
    free(dcopy);

    /* The replica side: REPLCONF ACK, sent in two pieces, reaches Redis unchanged. */
    static const char ack1[] = "*3\r\n$8\r\nREPLCONF\r\n$3\r\nA", ack2[] = "CK\r\n$4\r\n4242\r\n";
    hp_send_all(p.fd, ack1, sizeof ack1 - 1, 5000);
    hp_sleep_ms(50);
    hp_send_all(p.fd, ack2, sizeof ack2 - 1, 5000);
    int acked = 0;
    for (long long until = hp_now_ms() + 10000; !acked && hp_now_ms() < until; hp_sleep_ms(50)) {
        redisReply *r = hp_cmd(redis, "INFO replication");
        acked = r != NULL && r->type == REDIS_REPLY_STRING && strstr(r->str, "offset=4242,") != NULL;
        if (r) freeReplyObject(r);
    }
    ok(acked, "REPLCONF ACK 4242 from the replica side reached Redis (INFO replication shows offset=4242)");
    link_close(&d);
    link_close(&p);
    hp_cmd_ok(redis, "CONFIG SET repl-diskless-sync no");
}

/* ---- refused SYNC/PSYNC, SYNC inside MULTI ----------------------------------------------- */

static void diff_has(const char *name, const hp_step *steps, const char *want)
{
    hp_side d, p;
    hp_diff_ex(redis, proxy, name, steps, NULL, &d, &p);
    ok(hp_buf_has(&d.out, want, strlen(want)), "%s: Redis's answer has \"%s\"", name, hp_esc(want, strlen(want), 100));
    hp_side_free(&d);
    hp_side_free(&p);
}

static void test_refused(void)
{
    static const hp_step arity[] = { HP_SEND("PSYNC\r\nPING\r\nSETNX lock:s 1\r\nDEL lock:s\r\n"), HP_END };
    diff_has("PSYNC wrong arity, then commands (lock commands too)", arity,
             "-ERR wrong number of arguments for 'psync' command\r\n+PONG\r\n:1\r\n:1\r\n");
    static const hp_step pending[] = { HP_SEND("REPLCONF capa eof\r\nPSYNC ? -1\r\nPING\r\n"), HP_END };
    diff_has("PSYNC with output pending is refused; PING behind it answers", pending,
             "+OK\r\n-ERR SYNC and PSYNC are invalid with pending output\r\n+PONG\r\n");
    static const hp_step multi[] = { HP_SEND("MULTI\r\nSYNC\r\nPING\r\nEXEC\r\nPING\r\n"), HP_END };
    diff_has("SYNC inside MULTI", multi, "-ERR Command not allowed inside a transaction\r\n");
    static const hp_step monitor[] = { HP_SEND("MONITOR\r\nSYNC\r\nPING\r\n"), HP_END };
    hp_diff_opts mnorm = { .normalise = hp_norm_monitor };
    hp_diff(redis, proxy, "SYNC from a MONITOR client: Redis ignores it, PING answers", monitor, &mnorm);
    static const hp_step resp3[] = { HP_SEND("HELLO 3\r\nPSYNC\r\nPING\r\n"), HP_END };
    hp_diff_opts norm = { .normalise = hp_norm_hello };
    hp_diff(redis, proxy, "PSYNC wrong arity in RESP3", resp3, &norm);
}

/* ---- redis-cli --rdb, --replica ---------------------------------------------------------- */

static void test_cli(void)
{
    char port[16], file[4096];
    snprintf(port, sizeof port, "%d", proxy->port);
    snprintf(file, sizeof file, "%s/cli.rdb", hp_tmpdir());
    hp_cmd_ok(redis, "SET cli:k v");
    const char *argv[] = {"redis-cli", "-p", port, "--rdb", file, NULL};
    hp_buf out = {0}, err = {0};
    int code = hp_run(argv, NULL, 0, &out, &err, 30000);
    is_int(code, 0, "redis-cli --rdb through the proxy exits 0 (%s)", hp_esc(err.data, err.len, 120));
    FILE *f = fopen(file, "rb");
    char magic[6] = {0};
    if (f != NULL) {
        if (fread(magic, 1, 5, f) != 5) magic[0] = 0;
        fclose(f);
    }
    is_string(magic, "REDIS", "redis-cli --rdb: the file starts with the REDIS magic");
    const char *check[] = {"redis-check-rdb", file, NULL};
    hp_buf cout = {0};
    code = hp_run(check, NULL, 0, &cout, &cout, 30000);
    ok(code == 0 && strstr(cout.data ? cout.data : "", "RDB looks OK") != NULL,
       "redis-check-rdb accepts it (exit %d)", code);
    hp_buf_free(&out);
    hp_buf_free(&err);
    hp_buf_free(&cout);

    hp_pty t;
    const char *rargv[] = {"redis-cli", "-p", port, "--replica", NULL};
    if (hp_pty_spawn(&t, rargv, NULL, 40, 200) < 0) {
        ok(0, "redis-cli --replica started");
        return;
    }
    ok(hp_pty_expect(&t, "SYNC done", 20000), "redis-cli --replica through the proxy: SYNC done");
    hp_cmd_ok(redis, "SET clireplica:k clireplica-value");
    ok(hp_pty_expect(&t, "clireplica-value", 10000), "redis-cli --replica logs the master's SET");
    hp_pty_close(&t, 2000);
    hp_buf_free(&t.out);
}

/* ---- a real replica through the proxy ---------------------------------------------------- */

static void test_replica(void)
{
    char port[16];
    snprintf(port, sizeof port, "%d", proxy->port);
    const char *extra[] = {"--replicaof", "127.0.0.1", port, NULL};
    hp_proc *rep = hp_redis_start(extra);
    hp_cmd_ok(redis, "SET before:k before-value");
    for (int i = 0; i < 100; i++) hp_cmd_ok(redis, "INCR repl:counter");
    long long got = 0;
    for (long long until = hp_now_ms() + 30000; got != 100 && hp_now_ms() < until; hp_sleep_ms(100)) {
        redisReply *r = hp_cmd(rep, "GET repl:counter");
        got = r != NULL && r->type == REDIS_REPLY_STRING ? atoll(r->str) : 0;
        if (r) freeReplyObject(r);
    }
    is_int(got, 100, "a real replica through the proxy received 100 INCRs");
    redisReply *r = hp_cmd(rep, "GET before:k");
    ok(r != NULL && r->type == REDIS_REPLY_STRING && strcmp(r->str, "before-value") == 0,
       "and the SET made before it synced");
    if (r) freeReplyObject(r);
    r = hp_cmd(rep, "INFO replication");
    ok(r != NULL && r->type == REDIS_REPLY_STRING && strstr(r->str, "master_link_status:up") != NULL,
       "the replica's rlink is up");
    if (r) freeReplyObject(r);
    hp_buf log = {0};
    hp_log_read(proxy, &log);
    ok(HP_HAS(&log, "SYNC/PSYNC answered with a replication stream"), "the proxy logged the replication link");
    hp_buf_free(&log);
    hp_stop(rep, 5000);
}

/* ---- silence and a slow reader ----------------------------------------------------------- */

static long long proxy_hwm_kb(const hp_proc *p)
{
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/status", (int)p->pid);
    FILE *f = fopen(path, "r");
    long long kb = -1;
    while (f != NULL && fgets(line, sizeof line, f) != NULL)
        if (strncmp(line, "VmHWM:", 6) == 0) kb = atoll(line + 6);
    if (f) fclose(f);
    return kb;
}

static void test_silence_and_backpressure(void)
{
    char cfg[4096];
    snprintf(cfg, sizeof cfg, "%s/short.conf", hp_tmpdir());
    FILE *f = fopen(cfg, "w");
    if (f) { fputs("upstream-timeout 300ms\nhigh-water 256kb\nlow-water 64kb\n", f); fclose(f); }
    const char *extra[] = {"-c", cfg, NULL};
    hp_proc *px = hp_proxy_start(redis, extra);

    /* The BGSAVE takes ~1.4 s before the first payload byte, longer than upstream-timeout. */
    hp_cmd_ok(redis, "CONFIG SET rdb-key-save-delay 700000");
    rlink l;
    attach(&l, px, "SYNC\r\n", 0, 0);
    hp_cmd_ok(redis, "CONFIG SET rdb-key-save-delay 0");
    ok(l.good, "upstream-timeout 300ms: a SYNC whose BGSAVE takes longer still gets its RDB");
    hp_sleep_ms(1000);   /* silence on the rlink, three times upstream-timeout */
    hp_cmd_ok(redis, "SET quiet:k after-silence");
    ok(strstr(stream_until(&l, "after-silence\r\n"), "after-silence") != NULL,
       "the rlink survives silence longer than upstream-timeout and carries the next write");
    link_close(&l);

    /* 32 MiB of values, no compression: the proxy must not hold the RDB for a slow reader. */
    hp_cmd_ok(redis, "FLUSHALL");
    hp_cmd_ok(redis, "CONFIG SET rdbcompression no");
    char *big = malloc(1 << 20);
    for (int i = 0; i < (1 << 20); i++) big[i] = (char)('a' + (int)(((unsigned)i * 7919u) % 26u));
    for (int i = 0; i < 32; i++) {
        redisReply *r = hp_cmd(redis, "SET big:%d %b", i, big, (size_t)(1 << 20));
        if (r) freeReplyObject(r);
    }
    free(big);
    rlink d, p;
    attach(&d, redis, "SYNC\r\n", 0, 0);
    long long hwm0 = proxy_hwm_kb(px);
    attach(&p, px, "SYNC\r\n", 256 * 1024, 10);
    long long hwm1 = proxy_hwm_kb(px);
    ok(d.good && p.good, "32 MiB RDB: read directly, and through the proxy at 256 KiB per 10 ms");
    is_int(p.rdb_len, d.rdb_len, "the slow reader got a payload of Redis's length (%lld bytes)", d.rdb_len);
    ok(hwm1 >= 0 && hwm1 - hwm0 < 12 * 1024, "the proxy's peak RSS grew by %lld KiB (< 12 MiB) for a 32 MiB RDB",
       hwm1 - hwm0);
    link_close(&d);
    link_close(&p);
    hp_cmd_ok(redis, "FLUSHALL");
    hp_cmd_ok(redis, "CONFIG SET rdbcompression yes");
    hp_stop(px, 5000);
}

/* ---- lock commands on a read-only replica, nested MULTI ---------------------------------- */

static void test_readonly(void)
{
    char port[16];
    snprintf(port, sizeof port, "%d", redis->port);
    const char *extra[] = {"--replicaof", "127.0.0.1", port, NULL};
    hp_proc *rep = hp_redis_start(extra);
    char pol[4096];
    snprintf(pol, sizeof pol, "%s/ro.policy", hp_tmpdir());
    FILE *f = fopen(pol, "w");
    if (f) { fputs(policy_text, f); fclose(f); }
    const char *pextra[] = {"--policy", pol, NULL};
    hp_proc *px = hp_proxy_start(rep, pextra);
    hp_diff_opts o = { .no_flush = 1 };
    static const char ro[] = "-READONLY You can't write against a read only replica.\r\n";
    static const struct { const char *name, *req; } cases[] = {
        {"DEL", "DEL lock:x\r\n"},
        {"DEL lock and ordinary keys", "DEL lock:x other\r\n"},
        {"UNLINK", "UNLINK lock:x\r\n"},
        {"SETNX", "SETNX lock:x 1\r\n"},
        {"SET NX EX", "SET lock:x v NX EX 10\r\n"},
        {"SET NX GET", "SET lock:x v NX GET\r\n"},
        {"EXPIRE", "EXPIRE lock:x 10\r\n"},
        {"PEXPIREAT", "PEXPIREAT lock:x 99999999999999\r\n"},
        {"PERSIST", "PERSIST lock:x\r\n"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char name[96];
        snprintf(name, sizeof name, "read-only replica: %s", cases[i].name);
        hp_side d, p;
        hp_diff_ex(rep, px, name, (const hp_step[]){HP_SENDN(cases[i].req, strlen(cases[i].req)), HP_END}, &o, &d, &p);
        ok(hp_buf_has(&d.out, ro, sizeof ro - 1), "%s: Redis answers -READONLY", name);
        hp_side_free(&d);
        hp_side_free(&p);
    }
    static const hp_step multi[] = {
        HP_SEND("MULTI\r\nSET lock:x v NX EX 10\r\nEXPIRE lock:x 10\r\nDEL lock:x\r\nPERSIST lock:x\r\nEXEC\r\nGET lock:x\r\n"), HP_END
    };
    hp_diff(rep, px, "read-only replica: lock commands inside MULTI (EXECABORT)", multi, &o);
    /* A SETNX inside MULTI is held until the next command shows whether an EXPIRE of its key
     * follows, and answered +QUEUED by the proxy meanwhile: Redis's -READONLY for it comes
     * too late to replace that +QUEUED (documented). The transaction still aborts. */
    hp_side d, p;
    static const hp_step held[] = { HP_SEND("MULTI\r\nSETNX lock:x 1\r\nEXEC\r\n"), HP_END };
    hp_run_steps(rep, rep, held, &o, 0, &d);
    hp_run_steps(px, rep, held, &o, 0, &p);
    is_string(d.out.data ? d.out.data : "", "+OK\r\n-READONLY You can't write against a read only replica.\r\n"
              "-EXECABORT Transaction discarded because of previous errors.\r\n", "read-only replica: Redis refuses a SETNX in MULTI");
    is_string(p.out.data ? p.out.data : "", "+OK\r\n+QUEUED\r\n-EXECABORT Transaction discarded because of previous errors.\r\n",
              "read-only replica: through the proxy the held SETNX's +QUEUED stays, the EXEC aborts the same");
    hp_side_free(&d);
    hp_side_free(&p);
    static const hp_step r3[] = { HP_SEND("HELLO 3\r\nDEL lock:x\r\nSETNX lock:x 1\r\n"), HP_END };
    hp_diff_opts o3 = { .no_flush = 1, .normalise = hp_norm_hello };
    hp_diff(rep, px, "read-only replica: RESP3", r3, &o3);
    hp_stop(px, 5000);
    hp_stop(rep, 5000);
}

static void test_nested_multi(hp_proc *px)
{
    static const hp_step a[] = {
        HP_SEND("MULTI\r\nMULTI\r\nSETNX lock:n 1\r\nEXPIRE lock:n 10\r\nDEL lock:o\r\nEXEC\r\nGET lock:n\r\n"), HP_END
    };
    static const hp_step b[] = {
        HP_SEND("MULTI\r\nSETNX lock:n 1\r\nMULTI\r\nEXPIRE lock:n 10\r\nMULTI\r\nDEL lock:n\r\nEXEC\r\nEXISTS lock:n\r\n"), HP_END
    };
    static const hp_step c[] = {
        HP_SEND("HELLO 3\r\nMULTI\r\nMULTI\r\nSETNX lock:n 1\r\nMULTI\r\nSET lock:m v NX\r\nEXEC\r\nDISCARD\r\n"), HP_END
    };
    static const hp_step d[] = {
        HP_SEND("MULTI\r\nMULTI\r\nDISCARD\r\nMULTI\r\nSETNX lock:n 1\r\nEXEC\r\n"), HP_END
    };
    hp_diff_opts norm = { .normalise = hp_norm_hello };
    hp_proc *r = redis;
    hp_side ds, ps;
    hp_diff_ex(r, px, "nested MULTI around SETNX/EXPIRE/DEL", a, NULL, &ds, &ps);
    ok(HP_HAS(&ds.out, "-ERR MULTI calls can not be nested\r\n"), "nested MULTI: Redis's error is there");
    hp_side_free(&ds);
    hp_side_free(&ps);
    hp_diff(r, px, "nested MULTI after a held SETNX, twice", b, NULL);
    hp_diff(r, px, "nested MULTI with lock commands in RESP3", c, &norm);
    hp_diff(r, px, "nested MULTI, DISCARD, a new transaction", d, NULL);
}

int main(void)
{
    plan_lazy();
    redis = hp_redis_start(NULL);
    char pol[4096];
    snprintf(pol, sizeof pol, "%s/main.policy", hp_tmpdir());
    FILE *f = fopen(pol, "w");
    if (f) { fputs(policy_text, f); fclose(f); }
    const char *extra[] = {"--policy", pol, NULL};
    proxy = hp_proxy_start(redis, extra);

    test_links();
    test_refused();
    test_nested_multi(proxy);
    test_cli();
    test_replica();
    test_silence_and_backpressure();
    test_readonly();

    hp_stop(proxy, 5000);
    hp_stop(redis, 5000);
    return 0;
}
