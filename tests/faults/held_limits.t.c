/* Everything the proxy holds for one connection is under the same limits as forwarded bytes:
 * high-water (stop reading the source while that is safe) and hard-limit (close and log).
 * Each case runs on a fresh proxy (lock rule in enforce mode) and asserts bytes: the proxy's
 * peak resident memory (VmHWM in /proc/<pid>/status) over what it was before the case, never
 * a duration.
 *
 *   lock commands behind a blocked command
 *       BLPOP nothing 0, then 600,000 PERSIST lock:a from a client that does not read. The
 *       proxy once answered these itself and queued the replies without bound (~92 bytes per
 *       29-byte command); a refused PERSIST now goes to Redis as a no-op script, so they are
 *       requests held behind the BLPOP: once high-water bytes of them are held the proxy stops
 *       reading the client. Peak growth stays under 16 MiB. After an LPUSH every reply
 *       arrives.
 *   held requests over hard-limit
 *       4 x GET of an 8 MiB value, SETNX lock:h (the requests behind it wait for its reply),
 *       then 64 SETs of 1 MiB, never reading. The proxy cannot get the SETNX's reply while
 *       the client does not read, so it reads the client on, holding its requests; at
 *       hard-limit (32mb) it closes the connection and logs it. Peak growth stays under
 *       hard-limit + 24 MiB.
 *   EXEC carrying a lock command
 *       MULTI; SET lock:x v NX; GET of a 16 MiB value x 4; EXEC to a client that does not read:
 *       the EXEC reply is streamed element by element, so the proxy holds about high-water of
 *       it (Redis holds the rest) instead of the whole reply and two copies (770 MiB for 4 x
 *       64 MiB before). Peak growth stays under 24 MiB; then the client reads, and gets the
 *       same bytes as from Redis directly.
 *   lock commands queued in MULTI
 *       MULTI, 200,000 x DEL lock:m, DISCARD, reading as it goes, with hard-limit 16mb: each
 *       queued lock command keeps its rewrite until EXEC/DISCARD (about 4.7 KiB each today),
 *       which counts against hard-limit: the connection is answered in full or closed and
 *       logged at the limit; peak growth stays under hard-limit + 24 MiB (950 MiB before). */
#include "faults.h"

#define MIB (1024LL * 1024)

static const char *policy_path;

static hp_proc *fresh_proxy(const hp_proc *redis, const char *conf_text)
{
    static int n;
    char name[32];
    snprintf(name, sizeof(name), "limits%d.conf", n++);
    const char *conf = fl_tmp(name);
    if (fl_write_file(conf, conf_text) != 0)
        hp_bail("cannot write %s", conf);
    const char *extra[] = {"-c", conf, "--policy", policy_path, NULL};
    return hp_proxy_start(redis, extra);
}

/* Sends what the peer takes of p[0..n) without reading anything, until everything is sent,
 * the peer took nothing for idle_ms, or it closed. Returns the bytes sent. */
static size_t send_unread(int fd, const char *p, size_t n, int idle_ms, int *closed)
{
    size_t sent = 0;
    *closed = 0;
    while (sent < n) {
        struct pollfd pfd = {.fd = fd, .events = POLLOUT};
        int r = poll(&pfd, 1, idle_ms);
        if (r == 0)
            break;
        if (r < 0 && errno == EINTR)
            continue;
        ssize_t w = send(fd, p + sent, n - sent, MSG_NOSIGNAL);
        if (w > 0)
            sent += (size_t)w;
        else if (w < 0 && errno != EAGAIN && errno != EINTR) {
            *closed = 1;
            break;
        }
    }
    return sent;
}

static long long hwm_mib(const hp_proc *p, long long base_kb)
{
    return (fl_status_kb(p->pid, "VmHWM") - base_kb) / 1024;
}

static void locals_behind_blocked(const hp_proc *redis)
{
    hp_proc *px = fresh_proxy(redis, "high-water 1mb\nlow-water 256kb\nhard-limit 64mb\n");
    long long base = fl_status_kb(px->pid, "VmHWM");
    const int n = 600000;
    static const char persist[] = "*2\r\n$7\r\nPERSIST\r\n$6\r\nlock:a\r\n";
    hp_buf req = {0};
    hp_buf_cmd(&req, "BLPOP nothing 0");
    for (int i = 0; i < n; i++)
        hp_buf_append(&req, persist, sizeof(persist) - 1);

    int fd = hp_connect_proc(px, 5000);
    int closed;
    size_t sent = send_unread(fd, req.data, req.len, 2000, &closed);
    long long grew = hwm_mib(px, base);
    diag("locals: %zu of %zu bytes taken before the proxy stopped reading; peak growth %lld MiB", sent, req.len,
         grew);
    ok(!closed && sent < req.len, "local replies behind BLPOP: the proxy stops reading the client");
    ok(grew < 16, "local replies behind BLPOP: peak growth %lld MiB < 16 MiB (high-water 1mb)", grew);

    ok(hp_cmd_int(redis, "LPUSH nothing x") >= 0, "LPUSH releases the BLPOP");
    fl_conn c = {.fd = fd, .out = req.data, .outlen = req.len, .sent = sent};
    static const char blpop_reply[] = "*2\r\n$7\r\nnothing\r\n$1\r\nx\r\n";
    size_t want = sizeof(blpop_reply) - 1 + (size_t)n * 4;
    c.ud = &want;
    fl_pump(&c, 1, fl_done_len, 10, 180000);   /* 600,000 scripts run in Redis: generous on a loaded machine */
    int good = c.in.len == want && memcmp(c.in.data, blpop_reply, sizeof(blpop_reply) - 1) == 0;
    for (size_t off = sizeof(blpop_reply) - 1; good && off < c.in.len; off += 4)
        good = memcmp(c.in.data + off, ":0\r\n", 4) == 0;
    ok(good, "then every reply arrives: the BLPOP's and %d x :0 (%zu of %zu bytes)", n, c.in.len, want);
    ok(hwm_mib(px, base) < 16, "peak growth still %lld MiB", hwm_mib(px, base));
    fl_conns_close(&c, 1);
    hp_buf_free(&req);
    is_int(hp_stop(px, 5000), 0, "proxy exits 0");
}

static void held_over_hard_limit(const hp_proc *redis)
{
    hp_proc *px = fresh_proxy(redis, "high-water 1mb\nlow-water 256kb\nhard-limit 32mb\n");
    long long base = fl_status_kb(px->pid, "VmHWM");
    char *v = malloc(MIB);
    if (v == NULL)
        hp_bail("out of memory");
    memset(v, 'h', MIB);
    hp_buf req = {0};
    for (int i = 0; i < 4; i++)
        hp_buf_cmd(&req, "GET big8");
    hp_buf_cmd(&req, "SETNX lock:h v");
    for (int i = 0; i < 64; i++)
        hp_buf_cmd(&req, "SET held%d %b", i, v, (size_t)MIB);
    free(v);

    int fd = hp_connect_proc(px, 5000);
    int closed;
    size_t sent = send_unread(fd, req.data, req.len, 3000, &closed);
    hp_buf out = {0};
    hp_io st = hp_read_eof(fd, &out, 10000);
    close(fd);
    long long grew = hwm_mib(px, base);
    diag("held: %zu of %zu bytes taken; peak growth %lld MiB", sent, req.len, grew);
    ok(st == HP_IO_EOF, "held requests over hard-limit: the connection is closed");
    hp_buf log = {0};
    hp_log_read(px, &log);
    ok(HP_HAS(&log, "over hard-limit"), "and the log says why");
    hp_buf_free(&log);
    ok(grew < 32 + 24, "peak growth %lld MiB < hard-limit 32 MiB + 24 MiB", grew);
    hp_buf_free(&out);
    hp_buf_free(&req);
    ok(fl_ping(px, 5000), "the proxy serves other clients");
    is_int(hp_stop(px, 5000), 0, "proxy exits 0");
}

static void exec_streamed(const hp_proc *redis)
{
    hp_proc *px = fresh_proxy(redis, "high-water 1mb\nlow-water 256kb\n");
    long long base = fl_status_kb(px->pid, "VmHWM");
    hp_buf req = {0};
    hp_buf_cmd(&req, "MULTI");
    hp_buf_cmd(&req, "SET lock:x v NX");
    for (int i = 0; i < 4; i++)
        hp_buf_cmd(&req, "GET big16");
    hp_buf_cmd(&req, "EXEC");
    hp_buf_cmd(&req, "DEL lock:x");

    /* Straight to Redis, read: the reference bytes. */
    hp_buf direct = {0}, proxied = {0};
    int fd = hp_connect_proc(redis, 5000);
    hp_send_all(fd, req.data, req.len, 10000);
    hp_read_until(fd, &direct, 64 * MIB, ":1\r\n", 60000);
    close(fd);

    fd = hp_connect_proc(px, 5000);
    ok(hp_send_all(fd, req.data, req.len, 10000) == HP_IO_OK, "EXEC with a lock command and 4 x 16 MiB sent");
    long long until = hp_now_ms() + 8000, rbuf = 0;
    while (hp_now_ms() < until) {
        rbuf = hp_info_int(redis, "client_recent_max_output_buffer");
        if (rbuf > 32 * MIB)
            break;
        hp_sleep_ms(100);
    }
    hp_sleep_ms(500);
    long long grew = hwm_mib(px, base);
    diag("EXEC not read: peak growth %lld MiB; Redis output buffer up to %lld MiB", grew, rbuf / MIB);
    ok(grew < 24, "while the client does not read, peak growth %lld MiB < 24 MiB (the reply is 64 MiB)", grew);
    hp_read_n(fd, &proxied, direct.len, 60000);
    hp_read_idle(fd, &proxied, 300, 2000);
    close(fd);
    is_bytes(proxied.data, proxied.len, direct.data, direct.len, "then the client gets the same bytes as from Redis");
    ok(hwm_mib(px, base) < 24, "peak growth after reading it all: %lld MiB", hwm_mib(px, base));
    hp_buf_free(&direct);
    hp_buf_free(&proxied);
    hp_buf_free(&req);
    is_int(hp_stop(px, 5000), 0, "proxy exits 0");
}

static void multi_ops(const hp_proc *redis)
{
    hp_proc *px = fresh_proxy(redis, "high-water 1mb\nlow-water 256kb\nhard-limit 16mb\n");
    long long base = fl_status_kb(px->pid, "VmHWM");
    static const char del[] = "*2\r\n$3\r\nDEL\r\n$6\r\nlock:m\r\n";
    const int n = 200000;
    hp_buf req = {0};
    hp_buf_cmd(&req, "MULTI");
    for (int i = 0; i < n; i++)
        hp_buf_append(&req, del, sizeof(del) - 1);
    hp_buf_cmd(&req, "DISCARD");
    fl_conn c = {.fd = hp_connect_proc(px, 5000), .out = req.data, .outlen = req.len};
    size_t want = 5 + (size_t)n * 9 + 5;   /* +OK, n x +QUEUED, +OK */
    c.ud = &want;
    fl_pump(&c, 1, fl_done_len, 10, 60000);
    long long grew = hwm_mib(px, base);
    hp_buf log = {0};
    hp_log_read(px, &log);
    int over = HP_HAS(&log, "over hard-limit");
    diag("MULTI + %d DEL lock:m + DISCARD: %zu of %zu reply bytes, %s; peak growth %lld MiB", n, c.in.len, want,
         over ? "closed over hard-limit" : "completed", grew);
    ok((c.in.len == want && !over) || (c.eof && over),
       "%d lock commands queued in MULTI: answered in full, or closed at hard-limit and logged", n);
#if defined(__SANITIZE_ADDRESS__)
    /* AddressSanitizer puts redzones around every allocation, and a queued lock command is
     * several small ones: the sanitized proxy's memory per counted byte is about 3x. */
    const long long factor = 3;
#else
    const long long factor = 1;
#endif
    ok(grew < 16 * factor + 24, "peak growth %lld MiB < hard-limit 16 MiB%s + 24 MiB", grew,
       factor > 1 ? " x 3 (AddressSanitizer)" : "");
    hp_buf_free(&log);
    fl_conns_close(&c, 1);
    hp_buf_free(&req);
    is_int(hp_stop(px, 5000), 0, "proxy exits 0");
}

int main(void)
{
    fl_init(300);
    plan_lazy();
    /* Under AddressSanitizer freed memory waits in a quarantine (256 MiB by default) and
     * counts in RSS: without it the sanitized proxy's peaks measure what it holds. */
    const char *asan = getenv("ASAN_OPTIONS");
    char opts[1024];
    snprintf(opts, sizeof(opts), "%s%squarantine_size_mb=0", asan ? asan : "", asan && *asan ? ":" : "");
    setenv("ASAN_OPTIONS", opts, 1);
    hp_proc *redis = hp_redis_start(NULL);
    static char pol[4200];
    snprintf(pol, sizeof(pol), "%s", fl_tmp("policy.conf"));   /* fl_tmp reuses its buffers */
    policy_path = pol;
    if (fl_write_file(policy_path, "rule lock: enforce ttl=30s max-ttl=5m\n") != 0)
        hp_bail("cannot write the policy");
    char *v = malloc(16 * MIB);
    if (v == NULL)
        hp_bail("out of memory");
    memset(v, 'b', 16 * MIB);
    ok(hp_cmd_ok(redis, "SET big8 %b", v, (size_t)(8 * MIB)) && hp_cmd_ok(redis, "SET big16 %b", v, (size_t)(16 * MIB)),
       "8 MiB and 16 MiB values stored");
    free(v);

    locals_behind_blocked(redis);
    held_over_hard_limit(redis);
    exec_streamed(redis);
    multi_ops(redis);
    return 0;
}
