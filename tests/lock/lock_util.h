/* Helpers shared by the lock policy tests (the .t.c programs in tests/lock): a proxy started with a policy
 * file and an audit log in the test's temp dir, hiredis clients that abort the program when
 * they cannot connect, bounded polls of PTTL and of the audit log, and raw RESP exchanges
 * compared byte for byte.
 *
 * Every policy these tests write has a rule "sync: enforce": a SETNX of a fresh sync: key is
 * logged at decision time, after every event of the replies already received (the log is
 * written in order), so lk_log_sync() is the point after which "this event was not logged"
 * can be asserted without waiting for a time.
 *
 * Everything is static (LK_FN: and may go unused): each test program includes this header
 * once. */
#ifndef LP_TEST_LOCK_UTIL_H
#define LP_TEST_LOCK_UTIL_H

#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <fcntl.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/time.h>

#include "lib/harness.h"

#define LK_FN static __attribute__((unused))

/* Lock tests assert what the proxy changes; the harness self-check (the "proxy" is Redis)
 * cannot pass them. */
LK_FN void lk_require_real_proxy(void)
{
    const char *v = getenv("LP_TEST_PROXY_IS_REDIS");
    if (v != NULL && strcmp(v, "1") == 0)
        skip_all("LP_TEST_PROXY_IS_REDIS=1: the lock tests need the real proxy");
}

/* Writes text to <tmpdir>/<name> and returns the path (static storage, one per name slot). */
LK_FN const char *lk_write_file(const char *name, const char *text)
{
    static char paths[8][4096];
    static int next;
    char *path = paths[next++ % 8];
    snprintf(path, 4096, "%s/%s", hp_tmpdir(), name);
    FILE *f = fopen(path, "w");
    if (f == NULL) hp_abort("cannot write %s: %s", path, strerror(errno));
    fputs(text, f);
    fclose(f);
    return path;
}

/* A proxy in front of redis with the policy text (a "sync: enforce" rule is added) and its
 * audit log in <tmpdir>/<name>.audit.log, whose path goes to logpath. */
LK_FN hp_proc *lk_proxy_start(const hp_proc *redis, const char *name, const char *policy_text,
                               char *logpath, size_t logcap)
{
    char file[128], text[4096];
    snprintf(file, sizeof file, "%s.policy", name);
    snprintf(text, sizeof text, "%s\nrule sync: enforce\n", policy_text);
    const char *pol = lk_write_file(file, text);
    snprintf(logpath, logcap, "%s/%s.audit.log", hp_tmpdir(), name);
    const char *extra[] = { "--policy", pol, "--log", logpath, NULL };
    return hp_proxy_start(redis, extra);
}

LK_FN redisContext *lk_connect(const hp_proc *p)
{
    redisContext *c = hp_redis_connect(p);
    if (c == NULL) hp_abort("cannot connect to %s", p->name);
    return c;
}

/* One command; NULL (with diag) when the connection failed. */
LK_FN redisReply *lk_vcmd(redisContext *c, const char *fmt, va_list ap)
{
    redisReply *r = redisvCommand(c, fmt, ap);
    if (r == NULL) diag("\"%s\": %s", fmt, c->errstr);
    return r;
}

LK_FN redisReply *lk_cmd(redisContext *c, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    redisReply *r = lk_vcmd(c, fmt, ap);
    va_end(ap);
    return r;
}

/* The integer reply of a command; LLONG_MIN for anything else (an error is shown). */
LK_FN long long lk_int(redisContext *c, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    redisReply *r = lk_vcmd(c, fmt, ap);
    va_end(ap);
    long long v = LLONG_MIN;
    if (r != NULL && r->type == REDIS_REPLY_INTEGER) v = r->integer;
    else if (r != NULL && r->type == REDIS_REPLY_ERROR) diag("\"%s\": -%s", fmt, r->str);
    else if (r != NULL) diag("\"%s\": reply of type %d", fmt, r->type);
    freeReplyObject(r);
    return v;
}

/* A reply rendered as text, for is_string: "(nil)", "(error) ...", ":N", "+S", "S" for a
 * bulk string, "[a,b]" for arrays. The result lives until eight more calls. */
LK_FN const char *lk_show(const redisReply *r)
{
    static char ring[8][1024];
    static int next;
    char tmp[1024];
    tmp[0] = '\0';
    if (r == NULL) {
        snprintf(tmp, sizeof tmp, "(no reply)");
    } else {
        switch (r->type) {
        case REDIS_REPLY_NIL: snprintf(tmp, sizeof tmp, "(nil)"); break;
        case REDIS_REPLY_ERROR: snprintf(tmp, sizeof tmp, "(error) %s", r->str); break;
        case REDIS_REPLY_INTEGER: snprintf(tmp, sizeof tmp, ":%lld", r->integer); break;
        case REDIS_REPLY_STATUS: snprintf(tmp, sizeof tmp, "+%s", r->str); break;
        case REDIS_REPLY_STRING: snprintf(tmp, sizeof tmp, "%.*s", (int)r->len, r->str); break;
        case REDIS_REPLY_ARRAY: {
            /* Elements use ring slots of their own; this one's text is built in tmp. */
            size_t n = (size_t)snprintf(tmp, sizeof tmp, "[");
            for (size_t i = 0; i < r->elements && n < sizeof tmp - 24; i++)
                n += (size_t)snprintf(tmp + n, sizeof tmp - n, "%s%s", i ? "," : "", lk_show(r->element[i]));
            if (n < sizeof tmp - 2) snprintf(tmp + n, sizeof tmp - n, "]");
            break;
        }
        default: snprintf(tmp, sizeof tmp, "(type %d)", r->type); break;
        }
    }
    char *out = ring[next++ % 8];
    snprintf(out, sizeof ring[0], "%s", tmp);
    return out;
}

/* A command's reply as lk_show() text. */
LK_FN const char *lk_str(redisContext *c, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    redisReply *r = lk_vcmd(c, fmt, ap);
    va_end(ap);
    const char *s = lk_show(r);
    freeReplyObject(r);
    return s;
}

/* The same on a fresh connection to p (Redis itself, to look behind the proxy). */
LK_FN const char *lk_pstr(const hp_proc *p, const char *fmt, ...)
{
    redisContext *c = lk_connect(p);
    va_list ap;
    va_start(ap, fmt);
    redisReply *r = lk_vcmd(c, fmt, ap);
    va_end(ap);
    const char *s = lk_show(r);
    freeReplyObject(r);
    redisFree(c);
    return s;
}

/* Polls PTTL until the key is gone (-2). Returns 1 when it went within timeout_ms. */
LK_FN int lk_wait_gone(const hp_proc *redis, const char *key, int timeout_ms)
{
    redisContext *c = lk_connect(redis);
    long long until = hp_now_ms() + timeout_ms;
    long long v;
    do {
        v = lk_int(c, "PTTL %s", key);
        if (v == -2) break;
        hp_sleep_ms(v > 0 && v < 20 ? (int)v : 20);
    } while (hp_now_ms() < until);
    redisFree(c);
    if (v != -2) diag("%s still has PTTL %lld after %d ms", key, v, timeout_ms);
    return v == -2;
}

LK_FN void lk_flushall(const hp_proc *redis)
{
    if (!hp_cmd_ok(redis, "FLUSHALL")) hp_abort("FLUSHALL failed on %s", redis->name);
}

/* A random token shaped like a UUID (version 4). The result lives until four more calls. */
LK_FN const char *lk_uuid(void)
{
    static char ring[4][40];
    static int next;
    char *out = ring[next++ % 4];
    unsigned char b[16];
    FILE *f = fopen("/dev/urandom", "rb");
    if (f == NULL || fread(b, 1, sizeof b, f) != sizeof b) {
        for (size_t i = 0; i < sizeof b; i++) b[i] = (unsigned char)rand();
    }
    if (f != NULL) fclose(f);
    b[6] = (unsigned char)((b[6] & 0x0f) | 0x40);
    b[8] = (unsigned char)((b[8] & 0x3f) | 0x80);
    snprintf(out, 40, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x",
             b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12],
             b[13], b[14], b[15]);
    return out;
}

/* ---- the audit log ---- */

/* Reads the whole file into out (empty when it does not exist yet). */
LK_FN void lk_read_file(const char *path, hp_buf *out)
{
    hp_buf_reset(out);
    FILE *f = fopen(path, "rb");
    if (f == NULL) { hp_buf_append(out, "", 0); return; }
    char chunk[8192];
    size_t n;
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0) hp_buf_append(out, chunk, n);
    fclose(f);
    hp_buf_append(out, "", 0);
}

/* Number of lines of the log whose text has "event":"<event>" and "key":"<key>" (either may
 * be NULL: any). */
LK_FN int lk_log_count(const hp_buf *log, const char *event, const char *key)
{
    char ev[128], k[600];
    if (event) snprintf(ev, sizeof ev, "\"event\":\"%s\"", event);
    if (key) snprintf(k, sizeof k, "\"key\":\"%s\"", key);
    int count = 0;
    const char *p = log->data, *end = log->data + log->len;
    while (p != NULL && p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        size_t len = nl ? (size_t)(nl - p) : (size_t)(end - p);
        char line[8192];
        size_t n = len < sizeof line - 1 ? len : sizeof line - 1;
        memcpy(line, p, n);
        line[n] = '\0';
        if ((event == NULL || strstr(line, ev)) && (key == NULL || strstr(line, k))) count++;
        p = nl ? nl + 1 : NULL;
    }
    return count;
}

/* Number of lines whose key starts with prefix. */
LK_FN int lk_log_count_prefix(const hp_buf *log, const char *prefix)
{
    char k[600];
    snprintf(k, sizeof k, "\"key\":\"%s", prefix);
    int count = 0;
    for (size_t at = 0; (at = hp_buf_find(log, at, k, strlen(k))) != (size_t)-1; at += strlen(k)) count++;
    return count;
}

/* Polls the log until a line with the event and key appears. Returns 1 when it did within
 * timeout_ms. */
LK_FN int lk_log_wait(const char *path, const char *event, const char *key, int timeout_ms)
{
    hp_buf b = {0};
    long long until = hp_now_ms() + timeout_ms;
    int found;
    for (;;) {
        lk_read_file(path, &b);
        found = lk_log_count(&b, event, key) > 0;
        if (found || hp_now_ms() >= until) break;
        hp_sleep_ms(10);
    }
    hp_buf_free(&b);
    return found;
}

/* Polls the log until a line has the event, the key and the text (any may be NULL). */
LK_FN int lk_log_wait_text(const char *path, const char *event, const char *key, const char *text,
                            int timeout_ms)
{
    hp_buf b = {0};
    long long until = hp_now_ms() + timeout_ms;
    int found = 0;
    char ev[128], k[600];
    if (event) snprintf(ev, sizeof ev, "\"event\":\"%s\"", event);
    if (key) snprintf(k, sizeof k, "\"key\":\"%s\"", key);
    for (;;) {
        lk_read_file(path, &b);
        for (char *line = b.data; line != NULL && *line && !found; ) {
            char *nl = strchr(line, '\n');
            if (nl) *nl = '\0';
            found = (event == NULL || strstr(line, ev)) && (key == NULL || strstr(line, k)) &&
                    (text == NULL || strstr(line, text));
            line = nl ? nl + 1 : NULL;
        }
        if (found || hp_now_ms() >= until) break;
        hp_sleep_ms(10);
    }
    hp_buf_free(&b);
    return found;
}

/* Makes the proxy log a marker event and waits for it: every event of a reply received
 * before this call is in the log afterwards. Returns 1 when the marker arrived. */
LK_FN int lk_log_sync(const hp_proc *proxy, const char *logpath)
{
    static int seq;
    char key[64];
    snprintf(key, sizeof key, "sync:%d:%d", (int)getpid(), ++seq);
    redisContext *c = lk_connect(proxy);
    long long v = lk_int(c, "SETNX %s marker", key);
    redisFree(c);
    if (v != 1) diag("log sync: SETNX %s answered %lld", key, v);
    int got = lk_log_wait(logpath, "setnx_no_ttl", key, 5000);
    if (!got) diag("log sync: the marker %s never reached %s", key, logpath);
    return got;
}

/* Syncs, then counts the lines with the event and key. -1 when the sync failed. */
LK_FN int lk_log_count_synced(const hp_proc *proxy, const char *logpath, const char *event,
                               const char *key)
{
    if (!lk_log_sync(proxy, logpath)) return -1;
    hp_buf b = {0};
    lk_read_file(logpath, &b);
    int n = lk_log_count(&b, event, key);
    hp_buf_free(&b);
    return n;
}

/* The sorted "event key" pairs of the log lines whose key starts with prefix, one per line,
 * into out. The keys of these tests need no JSON unescaping. */
LK_FN void lk_log_events(const char *path, const char *prefix, hp_buf *out)
{
    hp_buf b = {0};
    lk_read_file(path, &b);
    char *items[512];
    int n = 0;
    char kp[300];
    snprintf(kp, sizeof kp, "\"key\":\"%s", prefix);
    for (char *line = b.data; line != NULL && *line && n < 512; ) {
        char *nl = strchr(line, '\n');
        if (nl) *nl = '\0';
        char *ev = strstr(line, "\"event\":\"");
        char *key = strstr(line, kp);
        if (ev != NULL && key != NULL) {
            ev += 9;
            key += 7;
            char *eve = strchr(ev, '"'), *keye = strchr(key, '"');
            if (eve != NULL && keye != NULL) {
                items[n] = malloc((size_t)(eve - ev) + (size_t)(keye - key) + 2);
                if (items[n] == NULL) hp_abort("out of memory");
                sprintf(items[n], "%.*s %.*s", (int)(eve - ev), ev, (int)(keye - key), key);
                n++;
            }
        }
        line = nl ? nl + 1 : NULL;
    }
    for (int i = 1; i < n; i++)
        for (int j = i; j > 0 && strcmp(items[j - 1], items[j]) > 0; j--) {
            char *t = items[j];
            items[j] = items[j - 1];
            items[j - 1] = t;
        }
    hp_buf_reset(out);
    hp_buf_append(out, "", 0);
    for (int i = 0; i < n; i++) {
        hp_buf_printf(out, "%s\n", items[i]);
        free(items[i]);
    }
    hp_buf_free(&b);
}

/* Whether an executable is on PATH. */
LK_FN int lk_have_program(const char *name)
{
    const char *path = getenv("PATH");
    if (path == NULL) path = "/usr/bin:/bin";
    char dir[4096];
    while (*path) {
        size_t n = strcspn(path, ":");
        snprintf(dir, sizeof dir, "%.*s/%s", (int)n, path, name);
        if (access(dir, X_OK) == 0) return 1;
        path += n;
        if (*path == ':') path++;
    }
    return 0;
}

static const char lk_json_check_py[] __attribute__((unused)) =
    "import sys, json, re\n"
    "need = ['ts', 'event', 'mode', 'action', 'rule', 'key', 'client', 'detail']\n"
    "ts = re.compile(r'^\\d{4}-\\d\\d-\\d\\dT\\d\\d:\\d\\d:\\d\\d\\.\\d{3}Z$')\n"
    "n = bad = 0\n"
    "for i, raw in enumerate(sys.stdin.buffer.read().split(b'\\n')):\n"
    "    if not raw:\n"
    "        continue\n"
    "    n += 1\n"
    "    try:\n"
    "        o = json.loads(raw.decode('utf-8'))\n"
    "    except Exception as e:\n"
    "        print('line %d: not JSON: %s' % (i + 1, e)); bad += 1; continue\n"
    "    if not isinstance(o, dict):\n"
    "        print('line %d: not an object' % (i + 1)); bad += 1; continue\n"
    "    miss = [f for f in need if f not in o]\n"
    "    if miss:\n"
    "        print('line %d: missing %s' % (i + 1, ','.join(miss))); bad += 1; continue\n"
    "    if not isinstance(o['ts'], str) or not ts.match(o['ts']):\n"
    "        print('line %d: ts %r is not RFC 3339 UTC with ms' % (i + 1, o['ts'])); bad += 1\n"
    "    for f in need[1:]:\n"
    "        if not isinstance(o[f], str):\n"
    "            print('line %d: %s is not a string' % (i + 1, f)); bad += 1\n"
    "print('%d lines, %d bad' % (n, bad))\n"
    "sys.exit(1 if bad or n == 0 else 0)\n";

/* Asserts that every line of the log is a JSON object with the audit log's fields (ts, an
 * RFC 3339 UTC time with milliseconds, and the strings event, mode, action, rule, key,
 * client, detail): with python3's json module when there is one, else a structural check. */
LK_FN void lk_check_json_log(const char *path, const char *name)
{
    hp_buf log = {0}, out = {0};
    lk_read_file(path, &log);
    if (lk_have_program("python3")) {
        const char *argv[] = { "python3", "-c", lk_json_check_py, NULL };
        int rc = hp_run(argv, log.data, log.len, &out, &out, 20000);
        if (rc != 0 && out.len) diag("%s", out.data);
        is_int(rc, 0, "%s: every log line is a JSON object with ts, event, mode, action, rule, key, client, detail (%s)",
               name, out.len ? hp_esc(out.data, out.len, 100) : "");
    } else {
        int lines = 0, bad = 0;
        static const char *need[] = { "\"ts\":\"", "\"event\":\"", "\"mode\":\"", "\"action\":\"", "\"rule\":\"",
                                      "\"key\":\"", "\"client\":\"", "\"detail\":\"" };
        for (char *line = log.data; line != NULL && *line; ) {
            char *nl = strchr(line, '\n');
            if (nl) *nl = '\0';
            size_t len = strlen(line);
            lines++;
            int good = len >= 2 && line[0] == '{' && line[len - 1] == '}';
            for (size_t i = 0; good && i < sizeof need / sizeof need[0]; i++) good = strstr(line, need[i]) != NULL;
            for (size_t i = 0; good && i < len; i++) good = (unsigned char)line[i] >= 0x20;
            if (!good) {
                bad++;
                diag("%s: bad line %d: %s", name, lines, hp_esc(line, len, 200));
            }
            line = nl ? nl + 1 : NULL;
        }
        ok(lines > 0 && bad == 0, "%s: every log line has the JSON object shape and fields (no python3: %d lines, %d bad)",
           name, lines, bad);
    }
    hp_buf_free(&log);
    hp_buf_free(&out);
}

/* ---- raw RESP ---- */

LK_FN int lk_raw_open(const hp_proc *p)
{
    int fd = hp_connect_proc(p, 5000);
    if (fd < 0) hp_abort("cannot connect to %s: %s", p->name, strerror(errno));
    return fd;
}

/* A non-blocking connection to p's TCP port from the local address src_ip (e.g. 127.0.0.2,
 * which Linux routes over loopback): another client host, as far as the proxy can tell.
 * Returns -1 when that address cannot be used here. */
LK_FN int lk_raw_open_from(const hp_proc *p, const char *src_ip)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return -1;
    struct sockaddr_in src, dst;
    memset(&src, 0, sizeof src);
    src.sin_family = AF_INET;
    if (inet_pton(AF_INET, src_ip, &src.sin_addr) != 1 || bind(fd, (struct sockaddr *)&src, sizeof src) != 0) {
        close(fd);
        return -1;
    }
    memset(&dst, 0, sizeof dst);
    dst.sin_family = AF_INET;
    dst.sin_port = htons((uint16_t)p->port);
    dst.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    struct timeval tv = { 5, 0 };
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    if (connect(fd, (struct sockaddr *)&dst, sizeof dst) != 0) {
        close(fd);
        return -1;
    }
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    return fd;
}

/* Sends req and reads exactly as many bytes as want has (then whatever else arrives within
 * a short quiet period, which would show as a difference), and compares. */
LK_FN int lk_raw_expect(int fd, const char *req, const char *want, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
LK_FN int lk_raw_expect(int fd, const char *req, const char *want, const char *fmt, ...)
{
    char name[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(name, sizeof name, fmt, ap);
    va_end(ap);
    hp_buf out = {0};
    size_t wlen = strlen(want);
    if (hp_send_all(fd, req, strlen(req), 5000) != HP_IO_OK) diag("%s: send failed", name);
    hp_read_n(fd, &out, wlen, 5000);
    if (out.len == wlen) hp_read_idle(fd, &out, 20, 1000);
    int good = is_bytes(out.data, out.len, want, wlen, "%s", name);
    hp_buf_free(&out);
    return good;
}

#endif
