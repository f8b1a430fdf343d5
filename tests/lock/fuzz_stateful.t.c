/* A stateful, differential fuzzer of the lock path. Each round sends one random pipeline
 * (fuzz_gen.h: 1..30 commands on lock:1..4 and k1..k4, with transactions, CLIENT REPLY,
 * HELLO, AUTH, inline commands, half-closes, values up to 8 MiB; half the pipelines with
 * large values are written whole before any read and then read slowly) on three fresh
 * connections at once:
 *
 *     Redis A  (direct, the reference)
 *     audit proxy   -> Redis B   rule lock: audit     replies must be byte-identical
 *     enforce proxy -> Redis C   rule lock: enforce   same number of replies; replies to
 *                                                     commands on ordinary keys identical,
 *                                                     on lock keys of the same type class
 *
 * and FLUSHALLs the three servers between rounds (the proxies keep their lease tables: the
 * state carries over). HELLO's connection id and TTL/PTTL values (positive / -1 / -2) are
 * masked before comparing. After each round both proxies must still run and answer PING;
 * every audit log line must be a JSON object and no log line nor the proxies' output may hold
 * the passwords the pipelines use (AUTH and HELLO AUTH as the ACL users fuzzuser and setname).
 *
 * The plan is fixed (one assertion per check); the first mismatch of a round is printed with
 * the seed, the round, the request and the reply streams, at most LP_FUZZ_SHOW (5) of them.
 *
 * Environment:
 *   LP_SEED=N          the seed (printed at the start; default: time and pid)
 *   LP_FUZZ_ROUNDS=N   rounds (default 60: about 4 s in a Release build on two cores when
 *                      every check passes; each round where the sides disagree on the
 *                      number of replies waits LP_FUZZ_PATIENCE_MS more. Long runs also
 *                      need a larger LP_TEST_WATCHDOG, the harness's limit)
 *   LP_FUZZ_ROUND=N    run round N of the seed only (a replay; the proxies' lease tables
 *                      start empty, so a failure that needs earlier rounds may not recur)
 *   LP_FUZZ_SKIP=a,b   generator categories to leave out (fuzz_gen.h: hostile-numbers,
 *                      tracking-loss, setname-user, auth, multi, client-reply, inline, close,
 *                      hello, eval, reset, select, bad-options, big-values). Default: none,
 *                      every category runs.
 *   LP_FUZZ_IDLE_MS=N  silence that ends a reply stream once all sides agree (default 50)
 *   LP_FUZZ_PATIENCE_MS=N  silence after which sides that disagree are compared (default
 *                      1000; a Redis that stalls longer mid-stream shows as a count mismatch)
 *   LP_FUZZ_SHOW=N     mismatches printed in full (default 5) */
#define _GNU_SOURCE            /* memmem */
#include <poll.h>

#include "lock/lock_util.h"
#include "lock/fuzz_gen.h"

#define FZ_MAX_FRAMES 256
#define FZ_DEADLINE_MS 15000   /* one exchange, all sides */

enum { SIDE_DIRECT, SIDE_AUDIT, SIDE_ENFORCE, NSIDES };
enum { CK_ALIVE, CK_BOUNDED, CK_COUNT_AUDIT, CK_COUNT_ENFORCE, CK_AUDIT, CK_ENFORCE, CK_LOG_AUDIT,
       CK_LOG_ENFORCE, CK_SECRETS, NCHECKS };

static const char *const check_names[NCHECKS] = {
    "alive", "bounded", "audit count", "enforce count", "audit bytes", "enforce replies",
    "audit log JSON", "enforce log JSON", "secrets"
};

typedef struct fz_side {
    const char *name;
    hp_proc *target;
    int fd;
    hp_buf out;
    size_t sent, scanned;
    int closed, shut, timed_out, bad;
    long long last;
    struct { size_t off, len; } frame[FZ_MAX_FRAMES];
    int nframes, pushes;       /* complete top-level values; RESP3 pushes among them */
} fz_side;

static hp_proc *redis_a, *redis_b, *redis_c, *audit, *enforce;
static char log_path[NSIDES][4096];
static size_t log_done[NSIDES];        /* bytes of each log already checked */
static int *port_round[NSIDES];       /* client port -> round + 1, per proxy */
static unsigned long long seed;
static unsigned cats_on;
static long long *round_now;           /* each round's clock, to regenerate its pipeline */
static int idle_ms, patience_ms, show_left;
static int failures[NCHECKS], first_fail[NCHECKS], last_fail[NCHECKS], model_misses, requests, paired_lock;
static unsigned cat_rounds[FZ_NCAT];

/* ---- RESP frames ---- */

/* Length of the RESP2/RESP3 value at p[0..n): > 0 when complete, 0 when more bytes are
 * needed, -1 when the bytes are not RESP. */
static long fz_value_len(const char *p, size_t n, int depth)
{
    if (n == 0) return 0;
    if (depth > 32) return -1;
    const char *nl = memchr(p, '\n', n);
    if (nl == NULL) return 0;
    if (nl == p || nl[-1] != '\r') return -1;
    size_t line = (size_t)(nl - p) + 1;
    char *end;
    long long v = strtoll(p + 1, &end, 10);
    int num_ok = end == nl - 1 && end > p + 1;
    switch (p[0]) {
    case '+': case '-': case ':': case '_': case ',': case '#': case '(':
        return (long)line;
    case '$': case '!': case '=':
        if (!num_ok || v < -1) return -1;
        if (v == -1) return (long)line;
        if (v > (long long)n || n < line + (size_t)v + 2) return 0;
        if (p[line + v] != '\r' || p[line + v + 1] != '\n') return -1;
        return (long)(line + (size_t)v + 2);
    case '*': case '~': case '%': case '>': case '|': {
        if (!num_ok || v < -1) return -1;
        if (v == -1) return (long)line;
        long long items = (p[0] == '%' || p[0] == '|' ? 2 * v : v) + (p[0] == '|');
        size_t pos = line;
        for (long long i = 0; i < items; i++) {       /* an attribute: the value follows */
            long r = fz_value_len(p + pos, n - pos, depth + 1);
            if (r <= 0) return r;
            pos += (size_t)r;
        }
        return (long)pos;
    }
    default:
        return -1;
    }
}

/* Records the complete frames that arrived since the last call. */
static void fz_scan(fz_side *s)
{
    while (!s->bad && s->scanned < s->out.len) {
        long r = fz_value_len(s->out.data + s->scanned, s->out.len - s->scanned, 0);
        if (r < 0) s->bad = 1;
        if (r <= 0) break;
        if (s->nframes < FZ_MAX_FRAMES) {
            s->frame[s->nframes].off = s->scanned;
            s->frame[s->nframes].len = (size_t)r;
        } else {
            s->bad = 1;
        }
        s->pushes += s->out.data[s->scanned] == '>';
        s->nframes++;
        s->scanned += (size_t)r;
    }
}

/* ---- the exchange ---- */

static void fz_read(fz_side *s, long long now, int slow)
{
    char chunk[65536];
    for (int reads = 0; !slow || reads < 1; reads++) {
        ssize_t n = read(s->fd, chunk, sizeof chunk);
        if (n > 0) {
            hp_buf_append(&s->out, chunk, (size_t)n);
            s->last = now;
            continue;
        }
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
        s->closed = 1;                               /* EOF or reset */
        s->last = now;
        break;
    }
    fz_scan(s);
}

/* Whether the proxy sides agree with the direct side on what the streams look like. */
static int fz_agree(const fz_side *s)
{
    for (int i = 1; i < NSIDES; i++)
        if (s[i].nframes != s[0].nframes || s[i].pushes != s[0].pushes || s[i].closed != s[0].closed) return 0;
    return 1;
}

/* Sends the pipeline on a fresh connection per side at once, reading meanwhile, then reads
 * until every side is quiet for idle_ms and the sides agree, or they stay quiet and disagree
 * for patience_ms, or FZ_DEADLINE_MS passes (timed_out on the sides still busy). The
 * proxies' client ports are noted as the round's, for blaming log lines. */
static void fz_exchange(fz_side *s, const fz_pipe *pp, int round)
{
    long long start = hp_now_ms();
    for (int i = 0; i < NSIDES; i++) {
        hp_buf_reset(&s[i].out);
        s[i].sent = s[i].scanned = 0;
        s[i].closed = s[i].shut = s[i].timed_out = s[i].bad = s[i].nframes = s[i].pushes = 0;
        s[i].last = start;
        s[i].fd = hp_connect_proc(s[i].target, 5000);
        if (s[i].fd < 0) s[i].closed = 1, s[i].sent = pp->bytes.len;
        if (pp->slow && s[i].fd >= 0) {
            /* Small socket buffers: the peer's own buffering, not the kernel's, is tested. */
            int small = 65536;
            setsockopt(s[i].fd, SOL_SOCKET, SO_SNDBUF, &small, sizeof small);
            setsockopt(s[i].fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof small);
        }
        if (i > 0 && s[i].fd >= 0) {
            struct sockaddr_in me;
            socklen_t len = sizeof me;
            if (getsockname(s[i].fd, (struct sockaddr *)&me, &len) == 0 && me.sin_family == AF_INET)
                port_round[i][ntohs(me.sin_port)] = round + 1;
        }
    }
    for (;;) {
        struct pollfd pfd[NSIDES];
        for (int i = 0; i < NSIDES; i++) {
            pfd[i].fd = s[i].closed ? -1 : s[i].fd;
            /* A slow round reads nothing before everything is sent. */
            int sending = s[i].sent < pp->bytes.len;
            pfd[i].events = (short)((pp->slow && sending ? 0 : POLLIN) | (sending ? POLLOUT : 0));
            pfd[i].revents = 0;
        }
        poll(pfd, NSIDES, 10);
        long long now = hp_now_ms();
        int all_sent = 1;
        long long last = 0;
        for (int i = 0; i < NSIDES; i++) {
            fz_side *x = &s[i];
            if ((pfd[i].revents & POLLOUT) && x->sent < pp->bytes.len) {
                ssize_t w = send(x->fd, pp->bytes.data + x->sent, pp->bytes.len - x->sent, MSG_NOSIGNAL);
                if (w > 0) x->sent += (size_t)w, x->last = now;
                else if (w < 0 && errno != EAGAIN && errno != EINTR) x->sent = pp->bytes.len;
            }
            if (x->sent == pp->bytes.len && pp->half_close && !x->shut && !x->closed) {
                shutdown(x->fd, SHUT_WR);
                x->shut = 1;
            }
            if ((pfd[i].revents & (POLLIN | POLLHUP | POLLERR)) && !(pp->slow && x->sent < pp->bytes.len))
                fz_read(x, now, pp->slow);
            all_sent &= x->sent == pp->bytes.len;
            if (x->last > last) last = x->last;
        }
        if (pp->slow && all_sent) hp_sleep_ms(2);   /* a slow consumer: 64 KiB per 2 ms at most */
        long long quiet = now - last;
        if (all_sent && quiet >= idle_ms && (fz_agree(s) || quiet >= patience_ms)) break;
        if (now - start >= FZ_DEADLINE_MS) {
            for (int i = 0; i < NSIDES; i++)
                s[i].timed_out = !s[i].closed && (s[i].sent < pp->bytes.len || now - s[i].last < idle_ms);
            break;
        }
    }
    for (int i = 0; i < NSIDES; i++) {
        if (s[i].fd >= 0) close(s[i].fd);
        s[i].fd = -1;
    }
}

/* ---- comparing ---- */

/* A frame as compared: positive integers masked as ":+" when tick (TTLs tick), and the
 * connection id of HELLO replies masked. */
static void fz_norm_bytes(const char *p, size_t n, int tick, hp_buf *out)
{
    hp_buf_reset(out);
    hp_buf_append(out, "", 0);
    for (size_t i = 0; i < n; i++) {
        int line_start = i == 0 || p[i - 1] == '\n';
        if (tick && line_start && p[i] == ':' && i + 1 < n && p[i + 1] >= '1' && p[i + 1] <= '9') {
            hp_buf_append(out, ":+", 2);
            while (i + 1 < n && p[i + 1] >= '0' && p[i + 1] <= '9') i++;
        } else {
            hp_buf_append(out, p + i, 1);
        }
    }
    hp_norm_hello(out, NULL);
}

static void fz_norm(const fz_side *s, int j, int tick, hp_buf *out)
{
    fz_norm_bytes(s->out.data + s->frame[j].off, s->frame[j].len, tick, out);
}

/* The type class of the RESP value at p: E error, N null, S string, A array/set, or the
 * type byte (':' integer, '%' map, '>' push, ...). */
static char fz_class(const char *p)
{
    switch (p[0]) {
    case '-': case '!': return 'E';
    case '_': return 'N';
    case '$': case '*': return p[1] == '-' ? 'N' : p[0] == '$' ? 'S' : 'A';
    case '+': case '=': return 'S';
    case '~': return 'A';
    default: return p[0];
    }
}

/* 1 when the proxy's value q may stand for Redis's p on a lock key: the same class (errors
 * match errors whatever the text; null matches any non-error), aggregates element by
 * element. A proxy error where Redis gave none passes only as a documented proxy message,
 * or (soft) against a null. */
static int fz_loose(const char *p, size_t pn, const char *q, size_t qn, int soft)
{
    char a = fz_class(p), b = fz_class(q);
    if (soft && ((a == 'E' && b == 'N') || (a == 'N' && b == 'E'))) return 1;
    if (b == 'E' && a != 'E') return qn >= 15 && memcmp(q, "-ERR lockproxy:", 15) == 0;
    if (a == 'E' || b == 'E') return a == b;
    if (a == 'N' || b == 'N') return 1;
    if (a != b) return 0;
    if (a != 'A' && a != '%' && a != '>') return 1;
    if (strtoll(p + 1, NULL, 10) != strtoll(q + 1, NULL, 10)) return 0;
    long long items = strtoll(p + 1, NULL, 10) * (a == '%' ? 2 : 1);
    size_t pa = (size_t)((const char *)memchr(p, '\n', pn) - p) + 1;
    size_t qa = (size_t)((const char *)memchr(q, '\n', qn) - q) + 1;
    for (long long i = 0; i < items; i++) {
        long lp = fz_value_len(p + pa, pn - pa, 1), lq = fz_value_len(q + qa, qn - qa, 1);
        if (lp <= 0 || lq <= 0 || !fz_loose(p + pa, (size_t)lp, q + qa, (size_t)lq, soft)) return 0;
        pa += (size_t)lp;
        qa += (size_t)lq;
    }
    return 1;
}

/* Records a failed check of a round (once per check and round); prints the first one of each
 * round and side in full while show_left lasts. */
static void fz_fail(int check, int round, const fz_pipe *pp, const fz_side *d, const fz_side *x,
                    int *printed, const char *fmt, ...) __attribute__((format(printf, 7, 8)));
static void fz_fail(int check, int round, const fz_pipe *pp, const fz_side *d, const fz_side *x,
                    int *printed, const char *fmt, ...)
{
    if (failures[check] == 0 || last_fail[check] != round) {
        if (failures[check]++ == 0) first_fail[check] = round;
        last_fail[check] = round;
    }
    if (*printed || show_left <= 0) return;
    *printed = 1;
    show_left--;
    char why[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof why, fmt, ap);
    va_end(ap);
    diag("MISMATCH seed %llu round %d (replay: LP_SEED=%llu LP_FUZZ_ROUND=%d): %s: %s", seed, round, seed, round,
         check_names[check], why);
    diag("  request: %s%s", hp_esc(pp->bytes.data, pp->bytes.len, 4000), pp->half_close ? " <SHUT_WR>" : "");
    if (d != NULL) diag("  %-8s %s%s", "direct:", hp_esc(d->out.data, d->out.len, 4000), d->closed ? " <EOF>" : "");
    if (x != NULL) diag("  %-8s %s%s", x->name, hp_esc(x->out.data, x->out.len, 4000), x->closed ? " <EOF>" : "");
}

/* Checks one proxy side against the direct side. lock/tick: per direct frame (fz_req).
 * printed: whether this round's first mismatch was printed already. */
static void fz_compare(int round, const fz_pipe *pp, const fz_side *d, const fz_side *x, int enforcing,
                       const int *lock, const int *tick, int *printed)
{
    if (x->timed_out || d->timed_out) {
        fz_fail(CK_BOUNDED, round, pp, d, x, printed, "%s still busy after %d ms",
                x->timed_out ? x->name : "direct", FZ_DEADLINE_MS);
        return;
    }
    if (x->nframes != d->nframes || x->pushes != d->pushes || x->closed != d->closed || x->bad != d->bad) {
        fz_fail(enforcing ? CK_COUNT_ENFORCE : CK_COUNT_AUDIT, round, pp, d, x, printed,
                "%d replies (%d pushes)%s%s, direct %d (%d pushes)%s%s", x->nframes, x->pushes,
                x->closed ? ", closed" : ", open", x->bad ? ", not RESP" : "", d->nframes, d->pushes,
                d->closed ? ", closed" : ", open", d->bad ? ", not RESP" : "");
        return;
    }
    hp_buf a = {0}, b = {0};
    int n = d->nframes < FZ_MAX_FRAMES ? d->nframes : FZ_MAX_FRAMES;
    int j;
    for (j = 0; j < n; j++) {
        fz_norm(d, j, tick[j], &a);
        fz_norm(x, j, tick[j], &b);
        int same = a.len == b.len && memcmp(a.data, b.data, a.len) == 0;
        if (!same && enforcing && lock[j] && (d->out.data[d->frame[j].off] == '>') == (x->out.data[x->frame[j].off] == '>'))
            same = fz_loose(a.data, a.len, b.data, b.len, lock[j] & 2);
        if (!same) {
            fz_fail(enforcing ? CK_ENFORCE : CK_AUDIT, round, pp, d, x, printed, "reply %d%s: direct %s, %s %s",
                    j + 1, lock[j] ? " (lock)" : "", hp_esc(a.data, a.len, 300), x->name, hp_esc(b.data, b.len, 300));
            break;
        }
    }
    /* An unfinished value at the end (Redis's EXEC array short of a CLIENT REPLY OFF). */
    fz_norm_bytes(d->out.data + d->scanned, d->out.len - d->scanned, pp->any_ttl, &a);
    fz_norm_bytes(x->out.data + x->scanned, x->out.len - x->scanned, pp->any_ttl, &b);
    if (j == n && (!enforcing || !pp->any_lock) && (a.len != b.len || memcmp(a.data, b.data, a.len) != 0))
        fz_fail(enforcing ? CK_ENFORCE : CK_AUDIT, round, pp, d, x, printed, "the unfinished tails differ");
    hp_buf_free(&a);
    hp_buf_free(&b);
}

/* ---- the audit logs ---- */

static int js_value(const char **p, const char *e, int depth);

static void js_ws(const char **p, const char *e)
{
    while (*p < e && (**p == ' ' || **p == '\t' || **p == '\r' || **p == '\n')) (*p)++;
}

/* A JSON string at *p (after its opening quote): escapes, no control bytes, valid UTF-8. */
static int js_string(const char **p, const char *e)
{
    while (*p < e) {
        unsigned char c = (unsigned char)*(*p)++;
        if (c == '"') return 1;
        if (c < 0x20) return 0;
        if (c == '\\') {
            if (*p >= e) return 0;
            char x = *(*p)++;
            if (x == 'u') {
                for (int i = 0; i < 4; i++, (*p)++)
                    if (*p >= e || !isxdigit((unsigned char)**p)) return 0;
            } else if (!strchr("\"\\/bfnrt", x) || x == '\0') {
                return 0;
            }
        } else if (c >= 0x80) {
            int more = c >= 0xf0 && c < 0xf5 ? 3 : c >= 0xe0 ? 2 : c >= 0xc2 && c < 0xe0 ? 1 : -1;
            if (more < 0) return 0;
            for (; more > 0; more--, (*p)++)
                if (*p >= e || ((unsigned char)**p & 0xc0) != 0x80) return 0;
        }
    }
    return 0;
}

static int js_number(const char **p, const char *e)
{
    const char *s = *p;
    if (*p < e && **p == '-') (*p)++;
    if (*p < e && **p == '0') (*p)++;
    else if (*p < e && isdigit((unsigned char)**p)) while (*p < e && isdigit((unsigned char)**p)) (*p)++;
    else return 0;
    if (*p < e && **p == '.') {
        if (++*p >= e || !isdigit((unsigned char)**p)) return 0;
        while (*p < e && isdigit((unsigned char)**p)) (*p)++;
    }
    if (*p < e && (**p == 'e' || **p == 'E')) {
        (*p)++;
        if (*p < e && (**p == '+' || **p == '-')) (*p)++;
        if (*p >= e || !isdigit((unsigned char)**p)) return 0;
        while (*p < e && isdigit((unsigned char)**p)) (*p)++;
    }
    return *p > s;
}

/* Objects and arrays: members separated by commas, keys are strings. */
static int js_container(const char **p, const char *e, int depth, char close, int object)
{
    (*p)++;
    js_ws(p, e);
    if (*p < e && **p == close) return (*p)++, 1;
    for (;;) {
        if (object) {
            if (*p >= e || *(*p)++ != '"' || !js_string(p, e)) return 0;
            js_ws(p, e);
            if (*p >= e || *(*p)++ != ':') return 0;
        }
        if (!js_value(p, e, depth + 1)) return 0;
        js_ws(p, e);
        if (*p >= e) return 0;
        char c = *(*p)++;
        if (c == close) return 1;
        if (c != ',') return 0;
        js_ws(p, e);
    }
}

static int js_value(const char **p, const char *e, int depth)
{
    js_ws(p, e);
    if (*p >= e || depth > 64) return 0;
    switch (**p) {
    case '{': return js_container(p, e, depth, '}', 1);
    case '[': return js_container(p, e, depth, ']', 0);
    case '"': (*p)++; return js_string(p, e);
    case 't': return e - *p >= 4 && memcmp(*p, "true", 4) == 0 && (*p += 4, 1);
    case 'f': return e - *p >= 5 && memcmp(*p, "false", 5) == 0 && (*p += 5, 1);
    case 'n': return e - *p >= 4 && memcmp(*p, "null", 4) == 0 && (*p += 4, 1);
    default: return js_number(p, e);
    }
}

/* 1 when line[0..n) is exactly one JSON object. */
static int js_object_line(const char *line, size_t n)
{
    const char *p = line, *e = line + n;
    js_ws(&p, e);
    if (p >= e || *p != '{' || !js_value(&p, e, 0)) return 0;
    js_ws(&p, e);
    return p == e;
}

static void fz_gen_round(int round, fz_pipe *pp);

/* Checks the complete lines the proxy of side i added to its log since the last call: JSON
 * objects without the passwords. A bad line is blamed on the round whose connection had its
 * client port. */
static void fz_check_log(int i)
{
    FILE *f = fopen(log_path[i], "rb");
    if (f == NULL) return;
    if (fseek(f, 0, SEEK_END) == 0 && ftell(f) < (long)log_done[i]) log_done[i] = 0;  /* restarted */
    fseek(f, (long)log_done[i], SEEK_SET);
    hp_buf b = {0};
    char chunk[65536];
    size_t n;
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0) hp_buf_append(&b, chunk, n);
    fclose(f);
    for (size_t at = 0; b.data != NULL && at < b.len; ) {
        const char *nl = memchr(b.data + at, '\n', b.len - at);
        if (nl == NULL) break;                         /* still being written */
        size_t len = (size_t)(nl - (b.data + at));
        const char *line = b.data + at;
        int json = js_object_line(line, len);
        int secret = memmem(line, len, FZ_SECRET1, strlen(FZ_SECRET1)) != NULL ||
                     memmem(line, len, FZ_SECRET2, strlen(FZ_SECRET2)) != NULL;
        if (!json || secret) {
            const char *c = memmem(line, len, "\"client\":\"127.0.0.1:", 20);
            int blamed = c != NULL ? port_round[i][atoi(c + 20) & 0xffff] - 1 : -1;
            static int shown[NSIDES] = { -2, -2, -2 };   /* the first bad line of a round */
            fz_pipe pp = {0};
            int printed = blamed == shown[i];
            shown[i] = blamed;
            if (blamed >= 0) fz_gen_round(blamed, &pp);
            if (!json)
                fz_fail(i == SIDE_AUDIT ? CK_LOG_AUDIT : CK_LOG_ENFORCE, blamed, &pp, NULL, NULL, &printed,
                        "%s log line is not a JSON object: %s", i == SIDE_AUDIT ? "audit" : "enforce",
                        hp_esc(line, len, 600));
            if (secret)
                fz_fail(CK_SECRETS, blamed, &pp, NULL, NULL, &printed, "%s log line holds a password: %s",
                        i == SIDE_AUDIT ? "audit" : "enforce", hp_esc(line, len, 600));
            hp_buf_free(&pp.bytes);
        }
        at += len + 1;
        log_done[i] += len + 1;
    }
    hp_buf_free(&b);
}

/* ---- rounds ---- */

static void fz_gen_round(int round, fz_pipe *pp)
{
    fz_rng r = { seed ^ (0xd1b54a32d192ed03ULL * (uint64_t)(round + 1)) };
    fz_next(&r);
    fz_gen(&r, cats_on, round_now[round], pp);
}

/* 1 when the proxy still runs and answers PING; restarts it otherwise. */
static int fz_alive(hp_proc *p)
{
    int code = hp_wait_exit(p, 0);
    if (code != -1) {
        diag("%s exited with status %d", p->name, code);
        hp_log_tail(p, 20);
        if (hp_restart(p) != 0) hp_abort("%s does not start again", p->name);
        return 0;
    }
    int fd = hp_connect_proc(p, 3000);
    hp_buf out = {0};
    int good = fd >= 0 && hp_send_all(fd, "PING\r\n", 6, 3000) == HP_IO_OK &&
               hp_read_until(fd, &out, 0, "+PONG\r\n", 3000) == HP_IO_OK;
    if (fd >= 0) close(fd);
    if (!good) diag("%s does not answer PING (got %s)", p->name, hp_esc(out.data, out.len, 100));
    hp_buf_free(&out);
    return good;
}

static void fz_round(int round, fz_side *s, fz_pipe *pp)
{
    lk_flushall(redis_a);
    lk_flushall(redis_b);
    lk_flushall(redis_c);
    struct timeval tv;
    gettimeofday(&tv, NULL);
    round_now[round] = (long long)tv.tv_sec * 1000 + tv.tv_usec / 1000;
    fz_gen_round(round, pp);
    for (int c = 0; c < FZ_NCAT; c++) cat_rounds[c] += (pp->used_cats >> c) & 1;
    fz_exchange(s, pp, round);
    requests += pp->n;

    /* Pair each direct reply with its request when the model's count is Redis's. */
    static int lock[FZ_MAX_FRAMES], tick[FZ_MAX_FRAMES];
    int expect = 0;
    for (int k = 0; k < pp->n; k++) expect += pp->req[k].frames;
    int paired = !pp->unsure && !s[0].bad && s[0].pushes == 0 && expect == s[0].nframes;
    if (!pp->unsure && !paired && !s[0].timed_out && model_misses++ == 0) {
        /* Not a failure (everything is compared as if it named a lock key), but a model
         * that misses often compares less: shown once. */
        diag("round %d: the model expected %d replies, Redis sent %d (%d pushes%s): compared unpaired",
             round, expect, s[0].nframes, s[0].pushes, s[0].bad ? ", not RESP" : "");
        diag("  request: %s", hp_esc(pp->bytes.data, pp->bytes.len, 4000));
        diag("  direct:  %s", hp_esc(s[0].out.data, s[0].out.len, 4000));
    }
    for (int j = 0, k = 0; j < FZ_MAX_FRAMES && j < s[0].nframes; j++, k++) {
        while (paired && pp->req[k].frames == 0) k++;
        lock[j] = paired ? pp->req[k].lock : pp->any_lock;
        tick[j] = paired ? pp->req[k].ticking : pp->any_ttl;
        paired_lock += paired && pp->req[k].lock;
    }
    int printed = 0;
    fz_compare(round, pp, &s[0], &s[1], 0, lock, tick, &printed);
    fz_compare(round, pp, &s[0], &s[2], 1, lock, tick, &printed);
    int audit_up = fz_alive(audit), enforce_up = fz_alive(enforce);
    if (!audit_up || !enforce_up)
        fz_fail(CK_ALIVE, round, pp, &s[0], NULL, &printed, "%s died or stopped answering (see above)",
                !audit_up ? "the audit proxy" : "the enforce proxy");
    fz_check_log(SIDE_AUDIT);
    fz_check_log(SIDE_ENFORCE);
}

static long long env_num(const char *name, long long def)
{
    const char *v = getenv(name);
    return v != NULL && *v ? strtoll(v, NULL, 0) : def;
}

int main(void)
{
    lk_require_real_proxy();
    plan(NCHECKS + 3);
    struct timeval tv;
    gettimeofday(&tv, NULL);
    seed = (unsigned long long)tv.tv_sec * 1000003ULL ^ (unsigned long long)tv.tv_usec << 20 ^
           (unsigned long long)getpid();
    if (getenv("LP_SEED") != NULL && *getenv("LP_SEED")) seed = strtoull(getenv("LP_SEED"), NULL, 0);
    int rounds = (int)env_num("LP_FUZZ_ROUNDS", 60), only = (int)env_num("LP_FUZZ_ROUND", -1);
    if (rounds < 1) rounds = 1;
    idle_ms = (int)env_num("LP_FUZZ_IDLE_MS", 50);
    patience_ms = (int)env_num("LP_FUZZ_PATIENCE_MS", 1000);
    show_left = (int)env_num("LP_FUZZ_SHOW", 5);
    const char *skip = getenv("LP_FUZZ_SKIP");
    if (skip == NULL) skip = "";
    cats_on = fz_parse_skip(skip);
    if (only >= 0) rounds = only + 1;
    diag("LP_SEED=%llu LP_FUZZ_ROUNDS=%d LP_FUZZ_SKIP=%s", seed, rounds, skip);
    round_now = calloc((size_t)rounds, sizeof *round_now);
    for (int i = 1; i < NSIDES; i++) port_round[i] = calloc(65536, sizeof *port_round[i]);
    if (round_now == NULL || port_round[1] == NULL || port_round[2] == NULL) hp_abort("out of memory");

    redis_a = hp_redis_start(NULL);
    redis_b = hp_redis_start(NULL);
    redis_c = hp_redis_start(NULL);
    int users = 1;
    hp_proc *servers[] = { redis_a, redis_b, redis_c };
    for (int i = 0; i < 3; i++) {
        users &= hp_cmd_ok(servers[i], "ACL SETUSER fuzzuser on >%s ~* &* +@all", FZ_SECRET1);
        users &= hp_cmd_ok(servers[i], "ACL SETUSER setname on >%s ~* +@all", FZ_SECRET2);
    }
    audit = lk_proxy_start(redis_b, "audit",
                           "rule lock: audit\nrule lock:3 audit owner=client-name\nrule lock:4 audit owner=client-addr\n",
                           log_path[SIDE_AUDIT], sizeof log_path[0]);
    enforce = lk_proxy_start(redis_c, "enforce",
                             "rule lock: enforce ttl=30s max-ttl=60s\nrule lock:3 enforce ttl=20s owner=client-name\n"
                             "rule lock:4 enforce owner=client-addr\n",
                             log_path[SIDE_ENFORCE], sizeof log_path[0]);
    ok(users, "three redis-servers with the users fuzzuser and setname, an audit and an enforce proxy");

    fz_side s[NSIDES] = {
        { .name = "direct:", .target = redis_a, .fd = -1 },
        { .name = "audit:", .target = audit, .fd = -1 },
        { .name = "enforce:", .target = enforce, .fd = -1 },
    };
    fz_pipe pp = {0};
    long long started = hp_now_ms();
    int ran = 0;
    for (int round = only >= 0 ? only : 0; round < rounds; round++, ran++) fz_round(round, s, &pp);
    long long elapsed = hp_now_ms() - started;

    /* Every line of the logs is written: check the rest. */
    int synced = lk_log_sync(audit, log_path[SIDE_AUDIT]) & lk_log_sync(enforce, log_path[SIDE_ENFORCE]);
    fz_check_log(SIDE_AUDIT);
    fz_check_log(SIDE_ENFORCE);
    long long stopping = hp_now_ms();
    int stopped = hp_stop(audit, 10000) == 0;
    stopped &= hp_stop(enforce, 10000) == 0;
    stopping = hp_now_ms() - stopping;
    hp_buf out = {0};
    for (int i = 0; i < 2; i++) {
        hp_log_read(i ? enforce : audit, &out);
        if (hp_buf_has(&out, FZ_SECRET1, strlen(FZ_SECRET1)) || hp_buf_has(&out, FZ_SECRET2, strlen(FZ_SECRET2))) {
            int printed = 0;
            fz_fail(CK_SECRETS, -1, &pp, NULL, NULL, &printed, "a password is in %s's output", i ? "enforce" : "audit");
        }
    }
    hp_buf_free(&out);

    diag("seed %llu: %d rounds in %lld ms, %d requests, %d replies paired with lock requests, %d model misses; "
         "the proxies took %lld ms to stop", seed, ran, elapsed, requests, paired_lock, model_misses, stopping);
    hp_buf cats = {0};
    for (int c = 0; c < FZ_NCAT; c++)
        if (cats_on & (1u << c)) hp_buf_printf(&cats, " %s=%u", fz_cat_names[c], cat_rounds[c]);
    diag("rounds per category:%s", cats.data ? cats.data : " (none)");
    hp_buf_free(&cats);
    for (int c = 0; c < NCHECKS; c++)
        if (failures[c]) diag("%s: %d failures, the first in round %d (LP_SEED=%llu LP_FUZZ_ROUND=%d)",
                              check_names[c], failures[c], first_fail[c], seed, first_fail[c]);

    static const char *const what[NCHECKS] = {
        "the proxies stayed up and answered PING after every round",
        "every exchange ended within its deadline",
        "audit: as many replies and pushes as Redis, closed when Redis closed",
        "enforce: as many replies and pushes as Redis, closed when Redis closed",
        "audit: the replies are Redis's bytes (HELLO ids and TTLs masked)",
        "enforce: replies on ordinary keys are Redis's bytes, on lock keys of the same type",
        "audit log: every line is a JSON object",
        "enforce log: every line is a JSON object",
        "no password in the audit logs or the proxies' output",
    };
    for (int c = 0; c < NCHECKS; c++) ok(failures[c] == 0, "%s (%d rounds, %d failed)", what[c], ran, failures[c]);
    ok(synced, "the logs were synced at the end");
    ok(stopped, "both proxies exit 0 on SIGTERM");
    hp_buf_free(&pp.bytes);
    for (int i = 0; i < NSIDES; i++) hp_buf_free(&s[i].out);
    return 0;
}
