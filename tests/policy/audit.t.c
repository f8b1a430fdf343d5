/* Audit events: the JSON line (every field, optional ones, timestamps, escaping of binary
 * keys, truncation, the token hash, buffer bounds) and the rate limiter (windows, suppressed
 * counts, identities, the bound, flushing, flushing everything at shutdown) and the once-per-window
 * table (audit_once). Every line produced is checked with a small
 * strict JSON checker here, and with python3's json module when python3 is installed. */
#include "tap.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "policy/audit.h"

#define S_(lit) lit, sizeof(lit) - 1

static char line[AUDIT_LINE_MAX];
static FILE *all_lines;             /* every line formatted, for python3 */
static int nlines;

/* ---- a strict checker for the lines' shape: {"name":string-or-number,...}\n ---- */

/* Length of the well-formed UTF-8 character at p (n > 0 bytes), or 0. */
static size_t utf8_ok(const unsigned char *p, size_t n)
{
    if (p[0] < 0x80) return 1;
    size_t need = p[0] >= 0xf0 ? 4 : p[0] >= 0xe0 ? 3 : 2;
    if (p[0] < 0xc2 || p[0] > 0xf4 || n < need) return 0;
    unsigned cp = p[0] & (need == 2 ? 0x1f : need == 3 ? 0x0f : 0x07);
    for (size_t i = 1; i < need; i++) {
        if ((p[i] & 0xc0) != 0x80) return 0;
        cp = (cp << 6) | (p[i] & 0x3f);
    }
    if ((need == 3 && cp < 0x800) || (need == 4 && cp < 0x10000) || cp > 0x10ffff) return 0;
    if (cp >= 0xd800 && cp <= 0xdfff) return 0;
    return need;
}

static const char *json_string(const char *p, const char *end)
{
    if (p >= end || *p != '"') return NULL;
    p++;
    while (p < end && *p != '"') {
        unsigned char c = (unsigned char)*p;
        if (c < 0x20) return NULL;
        if (c == '\\') {
            if (p + 1 >= end) return NULL;
            char x = p[1];
            if (x == 'u') {
                if (end - p < 6) return NULL;
                for (int i = 2; i < 6; i++)
                    if (!strchr("0123456789abcdefABCDEF", p[i]) || p[i] == '\0') return NULL;
                p += 6;
            } else if (strchr("\"\\/bfnrt", x) && x != '\0') {
                p += 2;
            } else {
                return NULL;
            }
            continue;
        }
        size_t u = utf8_ok((const unsigned char *)p, (size_t)(end - p));
        if (u == 0) return NULL;
        p += u;
    }
    return p < end ? p + 1 : NULL;
}

/* 1 when buf[0..n) is one flat JSON object of strings and non-negative integers + '\n'. */
static int json_line_ok(const char *buf, size_t n)
{
    const char *p = buf, *end = buf + n;
    if (n < 3 || end[-1] != '\n' || *p != '{') return 0;
    end--;
    p++;
    for (int first = 1;; first = 0) {
        if (p < end && *p == '}') return !first ? p + 1 == end : 0;
        if (!first) {
            if (p >= end || *p != ',') return 0;
            p++;
        }
        if ((p = json_string(p, end)) == NULL || p >= end || *p != ':') return 0;
        p++;
        if (p < end && *p == '"') {
            if ((p = json_string(p, end)) == NULL) return 0;
        } else {
            const char *d = p;
            while (p < end && *p >= '0' && *p <= '9') p++;
            if (p == d || (*d == '0' && p - d > 1)) return 0;
        }
    }
}

/* Formats e, checks the line's shape and keeps it for python3. Returns its length. */
static size_t fmt(const audit_event *e, int64_t wall_ms, uint64_t suppressed)
{
    size_t n = audit_format(e, wall_ms, suppressed, line, sizeof(line));
    if (n > 0) {
        if (!json_line_ok(line, n)) diag("not a valid JSON line: %.*s", (int)n, line);
        if (all_lines) fwrite(line, 1, n, all_lines);
        nlines++;
    }
    return n;
}

/* The checker itself rejects what it must. */
static void test_checker(void)
{
    ok(json_line_ok(S_("{\"a\":\"x\\u00ff\",\"b\":12}\n")), "checker: accepts a good line");
    ok(!json_line_ok(S_("{\"a\":\"x\"}")), "checker: rejects a missing newline");
    ok(!json_line_ok(S_("{\"a\":\"\x80\"}\n")), "checker: rejects invalid UTF-8");
    ok(!json_line_ok(S_("{\"a\":\"\xed\xa0\x80\"}\n")), "checker: rejects a surrogate");
    ok(!json_line_ok(S_("{\"a\":\"\n\"}\n")), "checker: rejects a raw control");
    ok(!json_line_ok(S_("{\"a\":\"\\x\"}\n")), "checker: rejects a bad escape");
    ok(!json_line_ok(S_("{\"a\":\"x\",}\n")), "checker: rejects a trailing comma");
    ok(!json_line_ok(S_("{\"a\":\"x\"\"b\":1}\n")), "checker: rejects a missing comma");
    ok(!json_line_ok(S_("{\"a\":01}\n")), "checker: rejects a leading zero");
}

static audit_event base_event(void)
{
    audit_event e;
    memset(&e, 0, sizeof(e));
    e.event = "setnx_no_ttl";
    e.mode = "enforce";
    e.action = "rewritten";
    e.rule = "lock:";
    e.rule_len = 5;
    e.key = "lock:order:42";
    e.key_len = 13;
    e.client = "10.0.0.5:51234";
    e.detail = "ttl=30000";
    e.held_ms = -1;
    return e;
}

static void test_fields(void)
{
    audit_event e = base_event();
    size_t n = fmt(&e, 1795428000123LL, 0);
    is_string(line,
              "{\"ts\":\"2026-11-23T10:00:00.123Z\",\"event\":\"setnx_no_ttl\",\"mode\":\"enforce\","
              "\"action\":\"rewritten\",\"rule\":\"lock:\",\"key\":\"lock:order:42\","
              "\"client\":\"10.0.0.5:51234\",\"detail\":\"ttl=30000\"}\n",
              "minimal event: optional fields absent");
    is_int((long long)n, (long long)strlen(line), "returns the length");
    ok(json_line_ok(line, n), "  valid JSON line");

    e.client_name = "worker-3";
    e.client_name_len = 8;
    e.held_ms = 1250;
    e.token = "secret-token-9f2c";
    e.token_len = 17;
    n = fmt(&e, 1795428000123LL, 17);
    char h[17];
    audit_token_hash("secret-token-9f2c", 17, h);
    char want[1024];
    snprintf(want, sizeof(want),
             "{\"ts\":\"2026-11-23T10:00:00.123Z\",\"event\":\"setnx_no_ttl\",\"mode\":\"enforce\","
             "\"action\":\"rewritten\",\"rule\":\"lock:\",\"key\":\"lock:order:42\","
             "\"client\":\"10.0.0.5:51234\",\"client_name\":\"worker-3\",\"detail\":\"ttl=30000\","
             "\"held_ms\":1250,\"token_hash\":\"%s\",\"suppressed\":17}\n", h);
    is_string(line, want, "every field");
    ok(strstr(line, "secret-token") == NULL, "  the raw token is absent");

    e.held_ms = 0;
    e.client_name = "";
    e.client_name_len = 0;
    e.token = "";
    e.token_len = 0;
    fmt(&e, 0, 0);
    ok(strstr(line, ",\"held_ms\":0,") != NULL, "held_ms 0 is present");
    ok(strstr(line, ",\"client_name\":\"\",") != NULL, "an empty client_name is present (it was set)");
    ok(strstr(line, "\"token_hash\":\"cbf29ce484222325\"") != NULL, "an empty token hashes (FNV-1a basis)");
    ok(strstr(line, "suppressed") == NULL, "suppressed 0 is absent");

    audit_event z;
    memset(&z, 0, sizeof(z));
    z.held_ms = -1;
    n = fmt(&z, 0, UINT64_MAX);
    is_string(line,
              "{\"ts\":\"1970-01-01T00:00:00.000Z\",\"event\":\"\",\"mode\":\"\",\"action\":\"\","
              "\"rule\":\"\",\"key\":\"\",\"client\":\"\",\"detail\":\"\",\"suppressed\":18446744073709551615}\n",
              "NULL strings are empty; the largest suppressed count");

    audit_token_hash("a", 1, h);
    is_string(h, "af63dc4c8601ec8c", "token hash is 64-bit FNV-1a");
    char h2[17];
    audit_token_hash("b", 1, h2);
    ok(strcmp(h, h2) != 0, "  different tokens, different hashes");
}

static void test_time(void)
{
    char ts[25];
    is_int((long long)audit_format_time(0, ts), 24, "time: 24 characters");
    is_string(ts, "1970-01-01T00:00:00.000Z", "epoch");
    audit_format_time(1795428000123LL, ts);
    is_string(ts, "2026-11-23T10:00:00.123Z", "a time with ms");
    audit_format_time(951782400999LL, ts);
    is_string(ts, "2000-02-29T00:00:00.999Z", "a leap day");
    audit_format_time(1704067199000LL, ts);
    is_string(ts, "2023-12-31T23:59:59.000Z", "end of a year");
    audit_format_time(-5, ts);
    is_string(ts, "1970-01-01T00:00:00.000Z", "negative: clamped to the epoch");
    audit_format_time(INT64_MAX, ts);
    is_string(ts, "9999-12-31T23:59:59.999Z", "huge: clamped to year 9999");
}

/* The key's JSON text in line, between "key":" and the closing quote. */
static const char *key_text(size_t *len)
{
    const char *p = strstr(line, ",\"key\":\"");
    if (p == NULL) return "";
    p += 8;
    const char *q = strstr(p, "\",\"client\":");
    *len = q ? (size_t)(q - p) : 0;
    return p;
}

static void key_is(const char *key, size_t keylen, const char *want, const char *name)
{
    audit_event e = base_event();
    e.key = key;
    e.key_len = keylen;
    size_t n = fmt(&e, 0, 0), klen = 0;
    const char *k = key_text(&klen);
    ok(n > 0 && json_line_ok(line, n), "%s: valid JSON line", name);
    is_bytes(k, klen, want, strlen(want), "  %s: escaped", name);
}

static void test_escaping(void)
{
    key_is("a\"b\\c", 5, "a\\\"b\\\\c", "quote and backslash");
    key_is("\n\r\t\b\f", 5, "\\n\\r\\t\\b\\f", "short escapes");
    key_is("a\0b", 3, "a\\u0000b", "NUL inside");
    key_is("\x01\x1f\x7f", 3, "\\u0001\\u001f\\u007f", "other controls and DEL");
    key_is("caf\xc3\xa9", 5, "caf\xc3\xa9", "valid 2-byte UTF-8 kept");
    key_is("\xe2\x82\xac\xf0\x9f\x94\x92", 7, "\xe2\x82\xac\xf0\x9f\x94\x92", "valid 3- and 4-byte UTF-8 kept");
    key_is("\x80", 1, "\\u0080", "a stray continuation byte");
    key_is("\xff\xfe", 2, "\\u00ff\\u00fe", "bytes that never appear in UTF-8");
    key_is("\xc0\x80", 2, "\\u00c0\\u0080", "overlong NUL");
    key_is("\xe0\x80\xaf", 3, "\\u00e0\\u0080\\u00af", "overlong 3-byte");
    key_is("\xed\xa0\x80", 3, "\\u00ed\\u00a0\\u0080", "UTF-16 surrogate");
    key_is("\xf4\x90\x80\x80", 4, "\\u00f4\\u0090\\u0080\\u0080", "beyond U+10FFFF");
    key_is("x\xe2\x82", 3, "x\\u00e2\\u0082", "a sequence cut at the end");
    key_is("\xc3\x28", 2, "\\u00c3(", "a lead byte without its continuation");
    key_is("lock:\"}\n{\"event\":\"fake", 22, "lock:\\\"}\\n{\\\"event\\\":\\\"fake", "an injection attempt stays a string");

    /* Every field is escaped, not only the key. */
    audit_event e = base_event();
    e.rule = "r\"\0";
    e.rule_len = 3;
    e.client = "1.2.3.4:5\x01";
    e.client_name = "n\xff\n";
    e.client_name_len = 3;
    e.detail = "d\"\\";
    e.event = "ev\t";
    size_t n = fmt(&e, 0, 0);
    ok(n > 0 && json_line_ok(line, n), "every string field is escaped");
    ok(strstr(line, "\"rule\":\"r\\\"\\u0000\"") && strstr(line, "\"client_name\":\"n\\u00ff\\n\"") &&
       strstr(line, "\"client\":\"1.2.3.4:5\\u0001\"") && strstr(line, "\"detail\":\"d\\\"\\\\\"") &&
       strstr(line, "\"event\":\"ev\\t\""),
       "  as expected");

    /* Random binary keys: always valid. */
    uint64_t s = 88172645463325252ULL;
    int all_valid = 1;
    for (int i = 0; i < 3000; i++) {
        unsigned char key[700];
        size_t len = (size_t)(i % 700);
        for (size_t j = 0; j < len; j++) {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            key[j] = (unsigned char)(i % 3 == 0 ? (s & 0xff) : i % 3 == 1 ? 0x80 | (s & 0x7f) : 0xc0 | (s & 0x3f));
        }
        e = base_event();
        e.key = (const char *)key;
        e.key_len = len;
        e.client_name = (const char *)key;
        e.client_name_len = len / 2;
        n = fmt(&e, (int64_t)i * 1000003, (uint64_t)i);
        if (n == 0 || !json_line_ok(line, n)) all_valid = 0;
    }
    ok(all_valid, "3000 random binary keys: every line is valid JSON and UTF-8");
}

static void test_truncation(void)
{
    char big[2000];
    memset(big, 'a', sizeof(big));
    audit_event e = base_event();
    e.key = big;
    e.key_len = sizeof(big);
    size_t n = fmt(&e, 0, 0), klen = 0;
    const char *k = key_text(&klen);
    ok(n > 0 && json_line_ok(line, n), "a 2000-byte key: valid line");
    is_int((long long)klen, AUDIT_SHOW_KEY + 3, "  cut to AUDIT_SHOW_KEY bytes and the marker");
    ok(klen >= 3 && memcmp(k + klen - 3, "\xe2\x80\xa6", 3) == 0, "  ends with \xe2\x80\xa6");

    e.key_len = AUDIT_SHOW_KEY;
    fmt(&e, 0, 0);
    k = key_text(&klen);
    is_int((long long)klen, AUDIT_SHOW_KEY, "exactly AUDIT_SHOW_KEY bytes: not cut");

    memset(big, 1, sizeof(big));
    e.key_len = 600;
    fmt(&e, 0, 0);
    k = key_text(&klen);
    is_int((long long)klen, (AUDIT_SHOW_KEY / 6) * 6 + 3, "escaped bytes: cut on an escape boundary");

    /* A multi-byte character is never split. */
    for (size_t i = 0; i + 2 < sizeof(big); i += 3) memcpy(big + i, "\xe2\x82\xac", 3);
    e.key_len = 1998;
    n = fmt(&e, 0, 0);
    k = key_text(&klen);
    ok(json_line_ok(line, n), "a long UTF-8 key: valid line");
    is_int((long long)klen, (AUDIT_SHOW_KEY / 3) * 3 + 3, "  cut between characters");

    /* The worst case fits AUDIT_LINE_MAX. */
    memset(big, 0x01, sizeof(big));
    audit_event w;
    w.event = w.mode = w.action = w.client = w.detail = big;
    big[sizeof(big) - 1] = '\0';
    w.rule = w.key = w.client_name = big;
    w.rule_len = w.key_len = w.client_name_len = sizeof(big);
    w.held_ms = INT64_MAX;
    w.token = big;
    w.token_len = 10;
    n = fmt(&w, INT64_MAX, UINT64_MAX);
    ok(n > 0 && n < AUDIT_LINE_MAX, "every field at its longest fits AUDIT_LINE_MAX (%zu bytes)", n);
    ok(json_line_ok(line, n), "  and is valid");

    /* Never past cap: every cap from 0 to the full length, in a buffer of exactly cap bytes. */
    e = base_event();
    e.key = "lock:\xff\"x";
    e.key_len = 8;
    e.token = "t";
    e.token_len = 1;
    size_t full = audit_format(&e, 0, 3, line, sizeof(line));
    int bounded = 1;
    for (size_t cap = 0; cap <= full + 1; cap++) {
        char *b = malloc(cap ? cap : 1);
        size_t got = audit_format(&e, 0, 3, b, cap);
        if (cap < full ? got != 0 : got != full) bounded = 0;
        if (got && memcmp(b, line, full) != 0) bounded = 0;
        free(b);
    }
    ok(bounded, "caps 0..%zu: 0 when too small, the full line otherwise, never past cap", full + 1);
}

/* ---- the limiter ---- */

static audit_event ev(const char *event, const char *key, const char *client)
{
    audit_event e = base_event();
    e.event = event;
    e.key = key;
    e.key_len = strlen(key);
    e.client = client;
    return e;
}

typedef struct emitted {
    int n;
    char event[64], key[600], client[64], mode[16], action[16], detail[128];
    size_t keylen;
    uint64_t suppressed[16];
} emitted;

static void on_emit(void *ud, const audit_event *e, uint64_t suppressed)
{
    emitted *em = ud;
    if (em->n < 16) em->suppressed[em->n] = suppressed;
    em->n++;
    snprintf(em->event, sizeof(em->event), "%s", e->event);
    snprintf(em->client, sizeof(em->client), "%s", e->client ? e->client : "");
    snprintf(em->mode, sizeof(em->mode), "%s", e->mode ? e->mode : "");
    snprintf(em->action, sizeof(em->action), "%s", e->action ? e->action : "");
    snprintf(em->detail, sizeof(em->detail), "%s", e->detail ? e->detail : "");
    em->keylen = e->key_len < sizeof(em->key) ? e->key_len : sizeof(em->key);
    if (em->keylen) memcpy(em->key, e->key, em->keylen);
    fmt(e, 0, suppressed);          /* summaries are valid lines too */
}

static void test_limiter(void)
{
    audit_limiter *l = audit_limiter_new(1000, 100);
    uint64_t sup = 99;
    audit_event a = ev("late_release", "lock:a", "10.0.0.1:4000");
    is_int(audit_limiter_check(l, &a, 5000, &sup), 1, "first occurrence logged");
    is_int((long long)sup, 0, "  nothing suppressed before it");
    int all_suppressed = 1;
    for (int i = 0; i < 5; i++) {
        sup = 99;
        if (audit_limiter_check(l, &a, 5000 + i * 100, &sup) != 0 || sup != 0) all_suppressed = 0;
    }
    ok(all_suppressed, "5 more inside the window: suppressed");
    audit_event a2 = ev("late_release", "lock:a", "10.0.0.1:4001");
    is_int(audit_limiter_check(l, &a2, 5600, &sup), 0, "another port of the same IP: the same identity");
    is_int(audit_limiter_check(l, &a, 5999, &sup), 0, "last ms of the window: suppressed");
    is_int(audit_limiter_check(l, &a, 6000, &sup), 1, "window over: logged");
    is_int((long long)sup, 7, "  with the 7 suppressed");
    is_int(audit_limiter_check(l, &a, 6500, &sup), 0, "a new window started there");
    is_int(audit_limiter_check(l, &a, 9000, &sup), 1, "logged after it");
    is_int((long long)sup, 1, "  with 1 suppressed");
    is_int(audit_limiter_check(l, &a, 10000, &sup), 1, "logged again");
    is_int((long long)sup, 0, "  nothing suppressed");

    audit_event b = ev("late_release", "lock:a", "10.0.0.2:4000");
    audit_event c = ev("foreign_release", "lock:a", "10.0.0.1:4000");
    audit_event d = ev("late_release", "lock:b", "10.0.0.1:4000");
    audit_event r = ev("late_release", "lock:a", "10.0.0.1:4000");
    r.rule = "lock";
    r.rule_len = 4;
    audit_event n1 = ev("late_release", "lock:a", "10.0.0.1:4000");
    n1.key = "lock:a\0x";
    n1.key_len = 8;
    audit_event v6a = ev("late_release", "lock:a", "[::1]:5000");
    audit_event v6b = ev("late_release", "lock:a", "[::1]:5001");
    is_int(audit_limiter_check(l, &b, 10001, &sup), 1, "another IP: its own identity");
    is_int(audit_limiter_check(l, &c, 10001, &sup), 1, "another event: its own identity");
    is_int(audit_limiter_check(l, &d, 10001, &sup), 1, "another key: its own identity");
    is_int(audit_limiter_check(l, &r, 10001, &sup), 1, "another rule: its own identity");
    is_int(audit_limiter_check(l, &n1, 10001, &sup), 1, "a key with bytes after a NUL: its own identity");
    is_int(audit_limiter_check(l, &v6a, 10001, &sup), 1, "IPv6 client");
    is_int(audit_limiter_check(l, &v6b, 10001, &sup), 0, "  another port of it: the same identity");
    audit_event mode_changed = a;
    mode_changed.mode = "audit";
    mode_changed.detail = "other detail";
    is_int(audit_limiter_check(l, &mode_changed, 10002, &sup), 0, "mode and detail are not part of the identity");

    /* Long keys: identities that differ only past what is kept, or only in length. */
    char k1[2000], k2[2000];
    memset(k1, 'k', sizeof(k1));
    memcpy(k2, k1, sizeof(k2));
    k2[1500] = 'X';
    audit_event l1 = a, l2 = a, l3 = a;
    l1.key = k1;
    l1.key_len = sizeof(k1);
    l2.key = k2;
    l2.key_len = sizeof(k2);
    l3.key = k1;
    l3.key_len = sizeof(k1) - 1;
    is_int(audit_limiter_check(l, &l1, 20000, &sup), 1, "a 2000-byte key");
    is_int(audit_limiter_check(l, &l1, 20001, &sup), 0, "  the same again: suppressed");
    is_int(audit_limiter_check(l, &l2, 20001, &sup), 1, "one differing at byte 1500: its own identity");
    is_int(audit_limiter_check(l, &l3, 20001, &sup), 1, "one a byte shorter: its own identity");
    audit_limiter_free(l);

    l = audit_limiter_new(0, 10);
    int logged = 1;
    for (int i = 0; i < 10; i++) logged &= audit_limiter_check(l, &a, 1000, &sup);
    ok(logged, "window 0: nothing suppressed");
    audit_limiter_free(l);

    is_int(audit_limiter_check(NULL, &a, 0, &sup), 1, "no limiter: everything logged");
    audit_limiter_free(NULL);
    is_int((long long)audit_limiter_flush(NULL, 0, NULL, NULL), 0, "flush(NULL): 0");
}

static void test_limiter_bound_and_flush(void)
{
    uint64_t sup;
    emitted em;
    audit_limiter *l = audit_limiter_new(1000, 4);
    audit_event e[6];
    char keys[6][24];
    for (int i = 0; i < 6; i++) {
        snprintf(keys[i], sizeof(keys[i]), "lock:%d", i);
        e[i] = ev("foreign_release", keys[i], "192.168.1.9:777");
    }
    for (int i = 0; i < 4; i++) audit_limiter_check(l, &e[i], 100 + i, &sup);
    is_int((long long)audit_limiter_count(l), 4, "4 identities tracked");
    for (int i = 0; i < 3; i++) audit_limiter_check(l, &e[0], 200, &sup);   /* 3 suppressed for 0 */
    audit_limiter_check(l, &e[1], 200, &sup);                              /* 1 for 1 */
    is_int(audit_limiter_check(l, &e[4], 300, &sup), 1, "a 5th identity is logged");
    is_int((long long)audit_limiter_count(l), 4, "  still 4 tracked: the oldest was forgotten");
    is_int(audit_limiter_check(l, &e[0], 301, &sup), 1, "  the forgotten one logs again inside its window");
    is_int((long long)sup, 0, "  its count is not attached to it");
    is_int((long long)audit_limiter_count(l), 4, "  which forgot the next oldest");

    /* At 1150 the windows of 2 and 3 (opened at 102, 103) are over; 4 and 0 (300, 301) not.
     * 1 was forgotten with 1 suppressed, 0 with 3: those 4 go to the global count. */
    memset(&em, 0, sizeof(em));
    audit_limiter_check(l, &e[4], 400, &sup);       /* 1 suppressed for 4 */
    is_int((long long)audit_limiter_flush(l, 1150, on_emit, &em), 1, "flush at 1150: one summary");
    is_int(em.n, 1, "  emitted once");
    is_string(em.event, "audit_suppressed", "  for the counts of forgotten identities");
    is_int((long long)em.suppressed[0], 4, "  with their 4 suppressed");
    is_int((long long)audit_limiter_count(l), 2, "  the identities with ended windows are forgotten");

    memset(&em, 0, sizeof(em));
    is_int((long long)audit_limiter_flush(l, 1300, on_emit, &em), 1, "flush at 1300: 4's window is over");
    is_string(em.event, "foreign_release", "  summary: the identity's event");
    is_bytes(em.key, em.keylen, "lock:4", 6, "  its key");
    is_string(em.client, "192.168.1.9", "  its client IP");
    is_string(em.mode, "enforce", "  the mode of its logged occurrence");
    is_string(em.action, "rewritten", "  and its action");
    is_string(em.detail, "rate-limited", "  detail");
    is_int((long long)em.suppressed[0], 1, "  its suppressed count");
    is_int((long long)audit_limiter_count(l), 1, "  0 still tracked (window until 1301)");
    is_int((long long)audit_limiter_flush(l, 1300, on_emit, &em), 0, "flush again: nothing");
    is_int((long long)audit_limiter_flush(l, 1301, on_emit, &em), 0, "0's window over, nothing suppressed: no summary");
    is_int((long long)audit_limiter_count(l), 0, "  nothing tracked");
    is_int(audit_limiter_check(l, &e[0], 1400, &sup), 1, "a forgotten identity logs again");
    is_int((long long)sup, 0, "  with no count (it was reported by flush)");
    audit_limiter_check(l, &e[0], 1401, &sup);
    is_int((long long)audit_limiter_flush(l, 5000, NULL, NULL), 0, "flush without emit drops counts");
    is_int((long long)audit_limiter_count(l), 0, "  and forgets");
    audit_limiter_free(l);

    /* A long key comes back in the summary with its cut visible. */
    char big[1000];
    memset(big, 'z', sizeof(big));
    l = audit_limiter_new(10, 10);
    audit_event bk = ev("late_release", "x", "1.1.1.1:1");
    bk.key = big;
    bk.key_len = sizeof(big);
    audit_limiter_check(l, &bk, 0, &sup);
    audit_limiter_check(l, &bk, 1, &sup);
    memset(&em, 0, sizeof(em));
    audit_limiter_flush(l, 100, on_emit, &em);
    is_int(em.n, 1, "summary of a 1000-byte key");
    ok(strstr(line, "\xe2\x80\xa6\"") != NULL, "  its line shows the cut");
    audit_limiter_free(l);

    /* Many identities: memory stays bounded. */
    l = audit_limiter_new(1000, 1000);
    int all_logged = 1;
    for (int i = 0; i < 50000; i++) {
        char key[32];
        snprintf(key, sizeof(key), "lock:%d", i);
        audit_event x = ev("del_unchecked", key, "10.1.1.1:1");
        all_logged &= audit_limiter_check(l, &x, i / 100, &sup);
        audit_limiter_check(l, &x, i / 100, &sup);
    }
    ok(all_logged, "50000 distinct identities: each logged once");
    is_int((long long)audit_limiter_count(l), 1000, "  1000 tracked at most");
    memset(&em, 0, sizeof(em));
    size_t flushed = audit_limiter_flush(l, 100000, on_emit, &em);
    is_int((long long)flushed, 1001, "  flush: 1000 summaries and one for the forgotten");
    is_int((long long)em.suppressed[0], 1, "  each of the tracked with its 1");
    is_int((long long)audit_limiter_count(l), 0, "  all forgotten");
    audit_limiter_free(l);
}

/* flush_all: every count now, whatever the windows (shutdown). */
static void test_limiter_flush_all(void)
{
    uint64_t sup;
    emitted em;
    audit_limiter *l = audit_limiter_new(1000, 2);
    audit_event a = ev("setnx_no_ttl", "lock:x", "10.0.0.1:1");
    audit_event b = ev("setnx_no_ttl", "lock:y", "10.0.0.1:1");
    audit_event c = ev("setnx_no_ttl", "lock:z", "10.0.0.1:1");
    int logged = 0;
    uint64_t counted = 0;
    for (int i = 0; i < 200; i++) {
        logged += audit_limiter_check(l, &a, 100 + i, &sup);
        counted += sup;
    }
    is_int(logged, 1, "200 identical events in a window: 1 logged");
    audit_limiter_check(l, &b, 150, &sup);                 /* logged, nothing suppressed */
    audit_limiter_check(l, &c, 160, &sup);                 /* forgets a with its 199 */
    audit_limiter_check(l, &c, 161, &sup);
    audit_limiter_check(l, &c, 162, &sup);

    memset(&em, 0, sizeof(em));
    is_int((long long)audit_limiter_flush_all(l, on_emit, &em), 2, "flush_all inside the windows: two summaries");
    is_int(em.n, 2, "  emitted twice (b had nothing suppressed)");
    is_int((long long)em.suppressed[0], 2, "  c first, with its 2");
    is_int((long long)em.suppressed[1], 199, "  then the forgotten a's 199 as audit_suppressed");
    is_string(em.event, "audit_suppressed", "  (the last summary)");
    is_int((long long)(logged + counted + em.suppressed[1]), 200, "  1 logged + 199 counted = 200");
    is_int((long long)audit_limiter_count(l), 0, "  nothing tracked afterwards");
    memset(&em, 0, sizeof(em));
    is_int((long long)audit_limiter_flush_all(l, on_emit, &em), 0, "flush_all again: nothing");
    is_int(audit_limiter_check(l, &a, 600, &sup), 1, "  an identity after it opens a new window");
    audit_limiter_check(l, &a, 601, &sup);
    audit_limiter_check(l, &a, 602, &sup);
    memset(&em, 0, sizeof(em));
    audit_limiter_flush_all(l, on_emit, &em);
    is_int(em.n, 1, "  flush_all reports it");
    is_string(em.event, "setnx_no_ttl", "  as its own event");
    is_string(em.detail, "rate-limited", "  rate-limited");
    is_int((long long)em.suppressed[0], 2, "  with its 2");
    audit_limiter_free(l);
    is_int((long long)audit_limiter_flush_all(NULL, on_emit, &em), 0, "flush_all(NULL): 0");
}

/* ---- once per window ---- */

static void test_once(void)
{
    audit_once *o = audit_once_new(100, 3600000);
    is_int(audit_once_check(o, "sha+rule+ip", 11, 1000), 1, "once: first sight of a key: 1");
    is_int(audit_once_check(o, "sha+rule+ip", 11, 1001), 0, "  again: 0");
    is_int(audit_once_check(o, "sha+rule+ip", 11, 1000 + 3599999), 0, "  last ms of the hour: 0");
    is_int(audit_once_check(o, "sha+rule+ip", 11, 1000 + 3600000), 1, "  the hour is over: 1");
    is_int(audit_once_check(o, "sha+rule+ip", 11, 1000 + 3600001), 0, "  a new hour began there: 0");
    is_int(audit_once_check(o, "sha+rule+ip", 10, 3602000), 1, "a prefix of a key is another key");
    is_int(audit_once_check(o, "a\0b", 3, 3602000), 1, "a key with a NUL byte");
    is_int(audit_once_check(o, "a\0c", 3, 3602000), 1, "  differing after the NUL: another key");
    is_int(audit_once_check(o, "a\0b", 3, 3602001), 0, "  the first again: 0");
    is_int(audit_once_check(o, "", 0, 3602000), 1, "the empty key");
    is_int(audit_once_check(o, NULL, 0, 3602001), 0, "  NULL with length 0 is the empty key");
    is_int((long long)audit_once_count(o), 5, "5 keys remembered");
    is_int(audit_once_check(o, "k", 1, 3603000), 1, "k seen at 3603000");
    is_int(audit_once_check(o, "k", 1, 3602999), 1, "  checked at 3602999: a clock that went back ends the window");
    audit_once_free(o);

    /* Expired keys are forgotten as later checks pass them. */
    o = audit_once_new(100, 1000);
    for (int i = 0; i < 50; i++) {
        char k[16];
        snprintf(k, sizeof(k), "k%d", i);
        audit_once_check(o, k, strlen(k), i);
    }
    is_int((long long)audit_once_count(o), 50, "50 keys in a 1 s window");
    is_int(audit_once_check(o, "late", 4, 1025), 1, "a check at 1025");
    is_int((long long)audit_once_count(o), 25, "  forgot the 25 whose window is over, kept its own");
    is_int(audit_once_check(o, "k30", 3, 1026), 0, "  k30 (seen at 30) is still in its window");
    is_int(audit_once_check(o, "k20", 3, 1026), 1, "  k20 (seen at 20) is not");
    audit_once_free(o);

    /* Bounded: the oldest goes when full. */
    o = audit_once_new(3, 1000000);
    audit_once_check(o, "a", 1, 1);
    audit_once_check(o, "b", 1, 2);
    audit_once_check(o, "c", 1, 3);
    is_int(audit_once_check(o, "d", 1, 4), 1, "bound 3: a 4th key: 1");
    is_int((long long)audit_once_count(o), 3, "  still 3 remembered");
    is_int(audit_once_check(o, "b", 1, 5), 0, "  b is still remembered");
    is_int(audit_once_check(o, "a", 1, 6), 1, "  a, the oldest, was forgotten: 1 again");
    is_int(audit_once_check(o, "b", 1, 7), 1, "  which forgot b (next oldest)");
    is_int(audit_once_check(o, "d", 1, 8), 0, "  d is remembered");
    audit_once_free(o);

    o = audit_once_new(1000, 60000);
    int firsts = 0, repeats = 0;
    for (int i = 0; i < 100000; i++) {
        char k[64];
        int n = snprintf(k, sizeof(k), "%040d|lock:|10.0.%d.%d", i, i / 256 % 256, i % 256);
        firsts += audit_once_check(o, k, (size_t)n, 1000);
        repeats += audit_once_check(o, k, (size_t)n, 1001);
    }
    is_int(firsts, 100000, "100000 distinct keys: each 1 the first time");
    is_int(repeats, 0, "  and 0 right after");
    is_int((long long)audit_once_count(o), 1000, "  1000 remembered at most");
    audit_once_free(o);

    o = audit_once_new(0, 1000);
    audit_once_check(o, "a", 1, 0);
    is_int(audit_once_check(o, "b", 1, 0), 1, "max_entries 0 is 1: b");
    is_int(audit_once_check(o, "a", 1, 0), 1, "  forgot a");
    is_int((long long)audit_once_count(o), 1, "  one remembered");
    audit_once_free(o);

    o = audit_once_new(10, 0);
    is_int(audit_once_check(o, "a", 1, 0) + audit_once_check(o, "a", 1, 0), 2, "window 0: always 1");
    is_int((long long)audit_once_count(o), 1, "  and remembers at most the last");
    audit_once_free(o);

    is_int(audit_once_check(NULL, "a", 1, 0), 1, "no table: 1");
    is_int((long long)audit_once_count(NULL), 0, "  count 0");
    audit_once_free(NULL);
}

/* Runs python3 over every line produced, when python3 exists. */
static void check_with_python(const char *path)
{
    if (system("python3 -c 'import json' >/dev/null 2>&1") != 0) {
        skip(1, "python3 not available");
        return;
    }
    char cmd[1024];
    snprintf(cmd, sizeof(cmd),
             "python3 -c 'import json,sys\n"
             "n=0\n"
             "for raw in open(sys.argv[1],\"rb\"):\n"
             "    assert raw.endswith(b\"\\n\")\n"
             "    o=json.loads(raw.decode(\"utf-8\"))\n"
             "    assert isinstance(o,dict) and \"ts\" in o and \"event\" in o\n"
             "    n+=1\n"
             "print(n)' %s > %s.count", path, path);
    int rc = system(cmd);
    char countpath[300], buf[32] = "";
    snprintf(countpath, sizeof(countpath), "%s.count", path);
    FILE *f = fopen(countpath, "r");
    if (f) {
        if (fgets(buf, sizeof(buf), f) == NULL) buf[0] = '\0';
        buf[strcspn(buf, "\n")] = '\0';
        fclose(f);
    }
    unlink(countpath);
    ok(rc == 0 && atoi(buf) == nlines, "python3 json.loads accepts all %d lines (read %s)", nlines, buf);
}

int main(void)
{
    char path[] = "/tmp/lp-audit-XXXXXX";
    int fd = mkstemp(path);
    all_lines = fd >= 0 ? fdopen(fd, "w") : NULL;
    plan_lazy();
    test_checker();
    test_fields();
    test_time();
    test_escaping();
    test_truncation();
    test_limiter();
    test_limiter_bound_and_flush();
    test_limiter_flush_all();
    test_once();
    if (all_lines) {
        fclose(all_lines);
        check_with_python(path);
        unlink(path);
    }
    return 0;
}
