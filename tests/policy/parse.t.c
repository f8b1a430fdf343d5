/* Policy file: syntax, errors with line numbers, longest-prefix match, printing. */
#include "tap.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "policy/policy.h"

static char err[1024];

static policy *parse(const char *text)
{
    err[0] = '\0';
    policy *p = policy_parse(text, strlen(text), "p.conf", err, sizeof err);
    if (p == NULL) diag("unexpected error: %s", err);
    return p;
}

/* Checks that text fails with exactly "p.conf:LINE: msg". */
static void parse_error(const char *text, int line, const char *msg)
{
    char want[1024];
    snprintf(want, sizeof want, "p.conf:%d: %s", line, msg);
    err[0] = '\0';
    policy *p = policy_parse(text, strlen(text), "p.conf", err, sizeof err);
    ok(p == NULL, "rejected: %s", msg);
    is_string(err, want, "  message");
    policy_free(p);
}

/* Checks one rule's fields; prefix is compared as bytes. */
static void rule_is(const policy_rule *r, const char *prefix, size_t plen, policy_mode mode,
                    long long ttl, long long max_ttl, policy_owner owner, int line)
{
    if (!ok(r != NULL, "rule for '%s' exists", prefix)) return;
    is_bytes(r->prefix, r->prefix_len, prefix, plen, "  prefix");
    is_int(r->prefix[r->prefix_len], 0, "  prefix is NUL-terminated");
    is_string(policy_mode_name(r->mode), policy_mode_name(mode), "  mode");
    is_int(r->ttl_ms, ttl, "  ttl");
    is_int(r->max_ttl_ms, max_ttl, "  max-ttl");
    is_string(policy_owner_name(r->owner), policy_owner_name(owner), "  owner");
    is_int(r->line, line, "  line");
}

/* Prints p into a malloc'ed string. */
static char *print(const policy *p, size_t *len)
{
    char *s = NULL;
    FILE *f = open_memstream(&s, len);
    policy_print(p, f);
    fclose(f);
    return s;
}

static void test_syntax(void)
{
    policy *p = parse("");
    is_int(policy_count(p), 0, "empty text: no rules");
    ok(policy_rule_at(p, 0) == NULL, "  rule_at out of range is NULL");
    policy_free(p);
    p = parse("# only a comment\n\n   \n\t# indented\r\n");
    is_int(policy_count(p), 0, "comments and blank lines: no rules");
    policy_free(p);

    p = parse("rule lock: enforce\n");
    is_int(policy_count(p), 1, "one rule");
    rule_is(policy_rule_at(p, 0), "lock:", 5, POLICY_ENFORCE, 30000, 0, POLICY_OWNER_CONNECTION, 1);
    policy_free(p);

    p = parse(
        "# locks\n"
        "rule lock: enforce ttl=10s max-ttl=5m owner=connection\n"
        "\n"
        "rule \"mutex:\" audit   # legacy app\n"
        "  rule\tjob:\toff\towner=client-name\r\n"
        "RULE Sem: ENFORCE TTL=250MS Max-TTL=1H OWNER=Client-Addr\n"
        "rule a enforce ttl=1500 max-ttl=none\n"
        "rule b enforce max-ttl=10s\n"
        "rule c enforce owner=client-addr max-ttl=2s ttl=2s\n"
        "rule \"lock: \" enforce\n"
        "rule \"say \\\"hi\\\" \\\\ #x\" audit\n"
        "rule \"\\x00\\xff\\x41z\" audit\n"
        "rule k#1 audit #a comment\n"
        "rule last off");
    is_int(policy_count(p), 12, "mixed file: 12 rules");
    rule_is(policy_rule_at(p, 0), "lock:", 5, POLICY_ENFORCE, 10000, 300000, POLICY_OWNER_CONNECTION, 2);
    rule_is(policy_rule_at(p, 1), "mutex:", 6, POLICY_AUDIT, 30000, 0, POLICY_OWNER_CONNECTION, 4);
    rule_is(policy_rule_at(p, 2), "job:", 4, POLICY_OFF, 30000, 0, POLICY_OWNER_CLIENT_NAME, 5);
    rule_is(policy_rule_at(p, 3), "Sem:", 4, POLICY_ENFORCE, 250, 3600000, POLICY_OWNER_CLIENT_ADDR, 6);
    rule_is(policy_rule_at(p, 4), "a", 1, POLICY_ENFORCE, 1500, 0, POLICY_OWNER_CONNECTION, 7);
    /* A cap below the default lease lowers the lease with it. */
    rule_is(policy_rule_at(p, 5), "b", 1, POLICY_ENFORCE, 10000, 10000, POLICY_OWNER_CONNECTION, 8);
    rule_is(policy_rule_at(p, 6), "c", 1, POLICY_ENFORCE, 2000, 2000, POLICY_OWNER_CLIENT_ADDR, 9);
    rule_is(policy_rule_at(p, 7), "lock: ", 6, POLICY_ENFORCE, 30000, 0, POLICY_OWNER_CONNECTION, 10);
    rule_is(policy_rule_at(p, 8), "say \"hi\" \\ #x", 13, POLICY_AUDIT, 30000, 0, POLICY_OWNER_CONNECTION, 11);
    rule_is(policy_rule_at(p, 9), "\0\xff" "Az", 4, POLICY_AUDIT, 30000, 0, POLICY_OWNER_CONNECTION, 12);
    rule_is(policy_rule_at(p, 10), "k#1", 3, POLICY_AUDIT, 30000, 0, POLICY_OWNER_CONNECTION, 13);
    rule_is(policy_rule_at(p, 11), "last", 4, POLICY_OFF, 30000, 0, POLICY_OWNER_CONNECTION, 14);
    policy_free(p);

    static const char binary[] = "rule \"x\x01y\" audit\n";
    p = policy_parse(binary, sizeof binary - 1, "p.conf", err, sizeof err);
    rule_is(policy_rule_at(p, 0), "x\x01y", 3, POLICY_AUDIT, 30000, 0, POLICY_OWNER_CONNECTION, 1);
    policy_free(p);

    is_string(policy_mode_name(POLICY_ENFORCE), "enforce", "mode name enforce");
    is_string(policy_mode_name(POLICY_AUDIT), "audit", "mode name audit");
    is_string(policy_mode_name(POLICY_OFF), "off", "mode name off");
    is_string(policy_owner_name(POLICY_OWNER_CONNECTION), "connection", "owner name connection");
    is_string(policy_owner_name(POLICY_OWNER_CLIENT_ADDR), "client-addr", "owner name client-addr");
    is_string(policy_owner_name(POLICY_OWNER_CLIENT_NAME), "client-name", "owner name client-name");
}

static void test_errors(void)
{
    const char *dur = "(expected milliseconds, or e.g. 250ms, 30s, 5m, 1h)";
    char msg[256];

    parse_error("rules lock: enforce\n", 1, "unknown directive 'rules' (expected 'rule')");
    parse_error("# c\n\nrule a: audit\nprefix b: audit\n", 4, "unknown directive 'prefix' (expected 'rule')");
    parse_error("rule\n", 1, "missing prefix after 'rule'");
    parse_error("rule # comment\n", 1, "missing prefix after 'rule'");
    parse_error("rule a: audit\r\nrule lock:\r\n", 2, "missing mode after prefix 'lock:' (expected enforce, audit or off)");
    parse_error("rule lock: strict\n", 1, "bad mode 'strict' (expected enforce, audit or off)");
    parse_error("rule lock: ttl=5s\n", 1, "bad mode 'ttl=5s' (expected enforce, audit or off)");
    snprintf(msg, sizeof msg, "bad duration in 'ttl=5x' %s", dur);
    parse_error("rule lock: enforce ttl=5x\n", 1, msg);
    snprintf(msg, sizeof msg, "bad duration in 'ttl=' %s", dur);
    parse_error("rule lock: enforce ttl=\n", 1, msg);
    snprintf(msg, sizeof msg, "bad duration in 'ttl=1.5s' %s", dur);
    parse_error("rule lock: enforce ttl=1.5s\n", 1, msg);
    snprintf(msg, sizeof msg, "bad duration in 'ttl=none' %s", dur);
    parse_error("rule lock: enforce ttl=none\n", 1, msg);
    parse_error("rule lock: enforce max-ttl=1d\n", 1,
                "bad duration in 'max-ttl=1d' (expected milliseconds, or e.g. 250ms, 30s, 5m, 1h, or none)");
    parse_error("rule lock: enforce ttl=0\n", 1, "'ttl=0': the duration must be greater than zero");
    parse_error("rule lock: enforce max-ttl=0ms\n", 1, "'max-ttl=0ms': the duration must be greater than zero");
    parse_error("rule lock: enforce ttl=10m max-ttl=5m\n", 1, "'ttl=10m' is longer than 'max-ttl=5m'");
    parse_error("rule lock: enforce max-ttl=1s ttl=1001\n", 1, "'ttl=1001' is longer than 'max-ttl=1s'");
    parse_error("rule lock: enforce color=red\n", 1, "unknown option 'color=red' (expected ttl=, max-ttl= or owner=)");
    parse_error("rule lock: enforce release-on-disconnect\n", 1,
                "unknown option 'release-on-disconnect' (expected ttl=, max-ttl= or owner=)");
    parse_error("rule lock: enforce ttl\n", 1, "option 'ttl' needs a value, as in ttl=...");
    parse_error("rule lock: enforce ttl=1s owner=connection TTL=2s\n", 1, "repeated option 'TTL=2s'");
    parse_error("rule lock: enforce max-ttl=none max-ttl=1s\n", 1, "repeated option 'max-ttl=1s'");
    parse_error("rule lock: enforce owner=connection owner=client-addr\n", 1, "repeated option 'owner=client-addr'");
    parse_error("rule lock: enforce owner=me\n", 1,
                "bad owner in 'owner=me' (expected connection, client-addr or client-name)");
    parse_error("rule lock: enforce\nrule mutex: audit\n\nrule lock: off\n", 4,
                "duplicate prefix 'lock:' (first at line 1)");
    parse_error("rule \"lock:\" enforce\nrule lock: audit\n", 2, "duplicate prefix 'lock:' (first at line 1)");
    parse_error("rule \"\" enforce\n", 1, "empty prefix");
    parse_error("rule \"lock: enforce\n", 1, "unterminated quote in \"lock: enforce");
    parse_error("rule \"lock:\"x enforce\n", 1, "closing quote must be followed by a space in \"lock:\"x");
    parse_error("rule \"lo\\ck\" enforce\n", 1, "bad escape in \"lo\\ck\" (expected \\\", \\\\ or \\xHH)");
    parse_error("rule \"lo\\x4g\" enforce\n", 1, "bad escape in \"lo\\x4g\" (expected \\\", \\\\ or \\xHH)");
    parse_error("rule \"lock\\\" enforce\n", 1, "unterminated quote in \"lock\\\" enforce");

    parse_error("rule lock: \"enforce\\x00\"\n", 1, "NUL byte in a token");
    parse_error("rule lock: enforce \"ttl=1s\\x00\"\n", 1, "NUL byte in a token");

    policy *p = policy_load("/nonexistent/policy.conf", err, sizeof err);
    ok(p == NULL, "missing file");
    is_string(err, "/nonexistent/policy.conf: No such file or directory", "  message");
    p = policy_load("/tmp", err, sizeof err);
    ok(p == NULL, "a directory");
    is_string(err, "/tmp: Is a directory", "  message");

    char path[] = "/tmp/lp-policy-XXXXXX", want[128];
    int fd = mkstemp(path);
    FILE *f = fd >= 0 ? fdopen(fd, "w") : NULL;
    if (f == NULL) bail_out("mkstemp failed");
    fputs("rule a: enforce\n\nrule b: sometimes\n", f);
    fclose(f);
    p = policy_load(path, err, sizeof err);
    snprintf(want, sizeof want, "%s:3: bad mode 'sometimes' (expected enforce, audit or off)", path);
    ok(p == NULL, "bad file");
    is_string(err, want, "  message names the path and line");
    unlink(path);
}

static void test_match(void)
{
    policy *p = parse("rule lock:cache: off\nrule l audit\nrule lock: enforce\nrule lock:cache:hot: enforce\n"
                      "rule \"bin\\x00\" audit\n");
    static const struct { const char *key; size_t len; const char *want; } cases[] = {
        {"lock:x", 6, "lock:"},
        {"lock:", 5, "lock:"},
        {"lock", 4, "l"},
        {"lock:cache:1", 12, "lock:cache:"},
        {"lock:cache:hot:1", 16, "lock:cache:hot:"},
        {"lock:cache:ho", 13, "lock:cache:"},
        {"l", 1, "l"},
        {"x", 1, NULL},
        {"", 0, NULL},
        {"Lock:x", 6, NULL},
        {"lock:\0\xff", 7, "lock:"},
        {"bin\1rest", 8, NULL},
        {"bin", 3, NULL},
        {"lock:cache:1", 4, "l"},          /* only keylen bytes count */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const policy_rule *r = policy_match(p, cases[i].key, cases[i].len);
        if (cases[i].want == NULL)
            ok(r == NULL, "key %zu: ordinary key", i);
        else
            ok(r != NULL && r->prefix_len == strlen(cases[i].want) &&
               memcmp(r->prefix, cases[i].want, r->prefix_len) == 0, "key %zu: matches '%s'", i, cases[i].want);
    }
    const policy_rule *r = policy_match(p, "bin\0rest", 8);
    ok(r != NULL && r->prefix_len == 4 && memcmp(r->prefix, "bin\0", 4) == 0, "binary prefix bin\\x00 matches");
    ok(policy_match(NULL, "lock:x", 6) == NULL, "NULL policy: ordinary key");
    is_int(policy_count(NULL), 0, "NULL policy: no rules");
    policy_free(p);
    policy_free(NULL);
    ok(1, "policy_free(NULL)");
}

/* Two policies hold the same rules in the same order (line numbers aside). */
static int same_rules(const policy *a, const policy *b)
{
    if (policy_count(a) != policy_count(b)) return 0;
    for (size_t i = 0; i < policy_count(a); i++) {
        const policy_rule *x = policy_rule_at(a, i), *y = policy_rule_at(b, i);
        if (x->prefix_len != y->prefix_len || memcmp(x->prefix, y->prefix, x->prefix_len) != 0 ||
            x->mode != y->mode || x->ttl_ms != y->ttl_ms || x->max_ttl_ms != y->max_ttl_ms ||
            x->owner != y->owner)
            return 0;
    }
    return 1;
}

static void test_print(void)
{
    size_t len;
    policy *p = parse("rule lock: enforce\n"
                      "rule mutex: audit ttl=250 max-ttl=90s owner=client-addr\n"
                      "rule job: off ttl=2h max-ttl=36000000 owner=client-name\n"
                      "rule \"a b\" enforce ttl=61s\n"
                      "rule \"q\\\"\\\\#\" enforce\n"
                      "rule \"\\x00\\x1f\\x7f\\xc3\\xa9\" audit\n"
                      "rule caf\xc3\xa9: audit\n");
    char *out = print(p, &len);
    is_string(out,
              "rule lock: enforce ttl=30s max-ttl=none owner=connection\n"
              "rule mutex: audit ttl=250ms max-ttl=90s owner=client-addr\n"
              "rule job: off ttl=2h max-ttl=10h owner=client-name\n"
              "rule \"a b\" enforce ttl=61s max-ttl=none owner=connection\n"
              "rule \"q\\\"\\\\#\" enforce ttl=30s max-ttl=none owner=connection\n"
              "rule \"\\x00\\x1f\\x7f\xc3\xa9\" audit ttl=30s max-ttl=none owner=connection\n"
              "rule caf\xc3\xa9: audit ttl=30s max-ttl=none owner=connection\n",
              "print spells out every option, quoting prefixes that need it");
    policy *q = policy_parse(out, len, "printed", err, sizeof err);
    ok(q != NULL && same_rules(p, q), "parse(print(p)) equals p");
    size_t len2;
    char *out2 = print(q, &len2);
    is_bytes(out2, len2, out, len, "print is stable");
    free(out2);
    free(out);
    policy_free(q);
    policy_free(p);

    /* Every single-byte prefix survives the round trip. */
    int all = 1;
    for (int b = 0; b < 256; b++) {
        char text[64];
        int n = snprintf(text, sizeof text, "rule \"\\x%02xk\" audit max-ttl=%d\n", b, b + 1);
        p = policy_parse(text, (size_t)n, "byte", err, sizeof err);
        out = print(p, &len);
        q = policy_parse(out, len, "printed", err, sizeof err);
        if (p == NULL || q == NULL || !same_rules(p, q)) {
            diag("byte 0x%02x: %s", b, out);
            all = 0;
        }
        free(out);
        policy_free(p);
        policy_free(q);
    }
    ok(all, "every byte value round-trips through print");

    out = print(NULL, &len);
    is_int(len, 0, "empty policy prints nothing");
    free(out);
}

static void test_shipped(void)
{
    policy *p = policy_load(LOCKPROXY_SRC "/conf/policy.conf", err, sizeof err);
    if (!ok(p != NULL, "shipped conf/policy.conf parses")) diag("%s", err);
    ok(policy_count(p) > 0, "  it has rules");
    const policy_rule *r = policy_match(p, "lock:order:42", 13);
    ok(r != NULL && r->mode == POLICY_ENFORCE, "  lock:order:42 is an enforced lock key");
    ok(policy_match(p, "user:1", 6) == NULL, "  user:1 is an ordinary key");
    size_t len;
    char *out = print(p, &len);
    policy *q = policy_parse(out, len, "printed", err, sizeof err);
    ok(q != NULL && same_rules(p, q), "  round-trips through print");
    free(out);
    policy_free(q);
    policy_free(p);
}

int main(void)
{
    plan_lazy();
    test_syntax();
    test_errors();
    test_match();
    test_print();
    test_shipped();
    return 0;
}
