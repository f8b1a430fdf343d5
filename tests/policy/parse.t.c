/* Policy file: syntax, options, errors with line numbers, exemptions, warnings,
 * longest-prefix match, printing. */
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

/* The fields of a rule besides its prefix, for the tables. */
typedef struct fields {
    policy_mode mode;
    long long ttl, max_ttl;
    policy_owner owner;
    policy_renew renew;
    long long max_hold;
    int line;
} fields;

/* The defaults: ttl 30s, no cap, owner auto, renew auto, no max-hold. */
#define DEF(mode, line) {mode, 30000, 0, POLICY_OWNER_AUTO, POLICY_RENEW_AUTO, 0, line}

/* Checks one rule's fields; prefix is compared as bytes. */
static void rule_is(const policy_rule *r, const char *prefix, size_t plen, fields f)
{
    if (!ok(r != NULL, "rule for '%s' exists", prefix)) return;
    is_bytes(r->prefix, r->prefix_len, prefix, plen, "  prefix");
    is_int(r->prefix[r->prefix_len], 0, "  prefix is NUL-terminated");
    is_string(policy_mode_name(r->mode), policy_mode_name(f.mode), "  mode");
    is_int(r->ttl_ms, f.ttl, "  ttl");
    is_int(r->max_ttl_ms, f.max_ttl, "  max-ttl");
    is_string(policy_owner_name(r->owner), policy_owner_name(f.owner), "  owner");
    is_string(policy_renew_name(r->renew), policy_renew_name(f.renew), "  renew");
    is_int(r->max_hold_ms, f.max_hold, "  max-hold");
    is_int(r->line, f.line, "  line");
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
    rule_is(policy_rule_at(p, 0), "lock:", 5, (fields)DEF(POLICY_ENFORCE, 1));
    policy_free(p);

    p = parse(
        "# locks\n"
        "rule lock: enforce ttl=10s max-ttl=5m owner=connection\n"
        "\n"
        "rule \"mutex:\" audit   # legacy app\n"
        "  rule\tjob:\toff\towner=client-name\r\n"
        "RULE Sem: ENFORCE TTL=250MS Max-TTL=1H OWNER=Client-Addr RENEW=Always MAX-HOLD=2M\n"
        "rule a enforce ttl=1500ms max-ttl=none max-hold=none\n"
        "rule b enforce max-ttl=10s\n"
        "rule c enforce owner=client-addr max-ttl=2s ttl=2s renew=off\n"
        "rule \"lock: \" enforce\n"
        "rule \"say \\\"hi\\\" \\\\ #x\" audit\n"
        "rule \"\\x00\\xff\\x41z\" audit\n"
        "exempt user alice\n"
        "rule k#1 audit #a comment\n"
        "rule last off");
    is_int(policy_count(p), 12, "mixed file: 12 rules");
    rule_is(policy_rule_at(p, 0), "lock:", 5,
            (fields){POLICY_ENFORCE, 10000, 300000, POLICY_OWNER_CONNECTION, POLICY_RENEW_AUTO, 0, 2});
    rule_is(policy_rule_at(p, 1), "mutex:", 6, (fields)DEF(POLICY_AUDIT, 4));
    rule_is(policy_rule_at(p, 2), "job:", 4,
            (fields){POLICY_OFF, 30000, 0, POLICY_OWNER_CLIENT_NAME, POLICY_RENEW_AUTO, 0, 5});
    rule_is(policy_rule_at(p, 3), "Sem:", 4,
            (fields){POLICY_ENFORCE, 250, 3600000, POLICY_OWNER_CLIENT_ADDR, POLICY_RENEW_ALWAYS, 120000, 6});
    rule_is(policy_rule_at(p, 4), "a", 1, (fields){POLICY_ENFORCE, 1500, 0, POLICY_OWNER_AUTO, POLICY_RENEW_AUTO, 0, 7});
    /* A cap below the default lease lowers the lease with it. */
    rule_is(policy_rule_at(p, 5), "b", 1, (fields){POLICY_ENFORCE, 10000, 10000, POLICY_OWNER_AUTO, POLICY_RENEW_AUTO, 0, 8});
    rule_is(policy_rule_at(p, 6), "c", 1,
            (fields){POLICY_ENFORCE, 2000, 2000, POLICY_OWNER_CLIENT_ADDR, POLICY_RENEW_OFF, 0, 9});
    rule_is(policy_rule_at(p, 7), "lock: ", 6, (fields)DEF(POLICY_ENFORCE, 10));
    rule_is(policy_rule_at(p, 8), "say \"hi\" \\ #x", 13, (fields)DEF(POLICY_AUDIT, 11));
    rule_is(policy_rule_at(p, 9), "\0\xff" "Az", 4, (fields)DEF(POLICY_AUDIT, 12));
    rule_is(policy_rule_at(p, 10), "k#1", 3, (fields)DEF(POLICY_AUDIT, 14));
    rule_is(policy_rule_at(p, 11), "last", 4, (fields)DEF(POLICY_OFF, 15));
    ok(policy_exempt_user(p, "alice", 5), "  exempt lines mix with rules");
    policy_free(p);

    static const char binary[] = "rule \"x\x01y\" audit\n";
    p = policy_parse(binary, sizeof binary - 1, "p.conf", err, sizeof err);
    rule_is(policy_rule_at(p, 0), "x\x01y", 3, (fields)DEF(POLICY_AUDIT, 1));
    policy_free(p);

    const struct { const char *name, *want; } names[] = {
        {policy_mode_name(POLICY_ENFORCE), "enforce"},
        {policy_mode_name(POLICY_AUDIT), "audit"},
        {policy_mode_name(POLICY_OFF), "off"},
        {policy_owner_name(POLICY_OWNER_AUTO), "auto"},
        {policy_owner_name(POLICY_OWNER_CONNECTION), "connection"},
        {policy_owner_name(POLICY_OWNER_CLIENT_ADDR), "client-addr"},
        {policy_owner_name(POLICY_OWNER_CLIENT_NAME), "client-name"},
        {policy_renew_name(POLICY_RENEW_AUTO), "auto"},
        {policy_renew_name(POLICY_RENEW_ALWAYS), "always"},
        {policy_renew_name(POLICY_RENEW_OFF), "off"},
    };
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        is_string(names[i].name, names[i].want, "name %s", names[i].want);
    is_int(POLICY_OWNER_AUTO, 0, "owner auto is the zero value");
    is_int(POLICY_RENEW_AUTO, 0, "renew auto is the zero value");
    is_string(POLICY_RECORD_PREFIX, "__lockproxy:", "POLICY_RECORD_PREFIX");
}

/* One rule per line: its options as parsed. */
static void test_options(void)
{
    static const struct { const char *text; fields f; } cases[] = {
        {"rule k enforce", DEF(POLICY_ENFORCE, 1)},
        {"rule k enforce owner=auto", DEF(POLICY_ENFORCE, 1)},
        {"rule k enforce OWNER=AUTO", DEF(POLICY_ENFORCE, 1)},
        {"rule k enforce owner=connection", {POLICY_ENFORCE, 30000, 0, POLICY_OWNER_CONNECTION, POLICY_RENEW_AUTO, 0, 1}},
        {"rule k enforce owner=client-addr", {POLICY_ENFORCE, 30000, 0, POLICY_OWNER_CLIENT_ADDR, POLICY_RENEW_AUTO, 0, 1}},
        {"rule k enforce owner=Client-Name", {POLICY_ENFORCE, 30000, 0, POLICY_OWNER_CLIENT_NAME, POLICY_RENEW_AUTO, 0, 1}},
        {"rule k enforce renew=auto", DEF(POLICY_ENFORCE, 1)},
        {"rule k enforce renew=always", {POLICY_ENFORCE, 30000, 0, POLICY_OWNER_AUTO, POLICY_RENEW_ALWAYS, 0, 1}},
        {"rule k enforce renew=OFF", {POLICY_ENFORCE, 30000, 0, POLICY_OWNER_AUTO, POLICY_RENEW_OFF, 0, 1}},
        {"rule k enforce max-hold=none", DEF(POLICY_ENFORCE, 1)},
        {"rule k enforce max-hold=NONE", DEF(POLICY_ENFORCE, 1)},
        {"rule k enforce max-hold=10m", {POLICY_ENFORCE, 30000, 0, POLICY_OWNER_AUTO, POLICY_RENEW_AUTO, 600000, 1}},
        {"rule k enforce max-hold=1500ms", {POLICY_ENFORCE, 30000, 0, POLICY_OWNER_AUTO, POLICY_RENEW_AUTO, 1500, 1}},
        /* max-hold may be shorter than the lease: the lock is then never renewed. */
        {"rule k enforce ttl=30s max-hold=10s", {POLICY_ENFORCE, 30000, 0, POLICY_OWNER_AUTO, POLICY_RENEW_AUTO, 10000, 1}},
        {"rule k audit Max-Hold=2H renew=always owner=auto ttl=1s max-ttl=5s",
         {POLICY_AUDIT, 1000, 5000, POLICY_OWNER_AUTO, POLICY_RENEW_ALWAYS, 7200000, 1}},
        {"rule k off renew=off max-hold=1h", {POLICY_OFF, 30000, 0, POLICY_OWNER_AUTO, POLICY_RENEW_OFF, 3600000, 1}},
        {"rule k enforce ttl=250ms", {POLICY_ENFORCE, 250, 0, POLICY_OWNER_AUTO, POLICY_RENEW_AUTO, 0, 1}},
        {"rule k enforce ttl=1MS", {POLICY_ENFORCE, 1, 0, POLICY_OWNER_AUTO, POLICY_RENEW_AUTO, 0, 1}},
        {"rule k enforce ttl=30S", {POLICY_ENFORCE, 30000, 0, POLICY_OWNER_AUTO, POLICY_RENEW_AUTO, 0, 1}},
        {"rule k enforce ttl=5m", {POLICY_ENFORCE, 300000, 0, POLICY_OWNER_AUTO, POLICY_RENEW_AUTO, 0, 1}},
        {"rule k enforce ttl=1h", {POLICY_ENFORCE, 3600000, 0, POLICY_OWNER_AUTO, POLICY_RENEW_AUTO, 0, 1}},
        {"rule k enforce ttl=007s", {POLICY_ENFORCE, 7000, 0, POLICY_OWNER_AUTO, POLICY_RENEW_AUTO, 0, 1}},
        {"rule k enforce max-ttl=20s", {POLICY_ENFORCE, 20000, 20000, POLICY_OWNER_AUTO, POLICY_RENEW_AUTO, 0, 1}},
        {"\n\nrule k enforce max-ttl=none", DEF(POLICY_ENFORCE, 3)},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        policy *p = parse(cases[i].text);
        ok(p != NULL, "options: %s", cases[i].text + strspn(cases[i].text, "\n"));
        rule_is(policy_rule_at(p, 0), "k", 1, cases[i].f);
        policy_free(p);
    }

    /* Prefixes near the lease records' namespace that cannot match a record. */
    static const char *const near[] = {
        "rule __lockproxz enforce", "rule __LOCKPROXY: audit", "rule _lockproxy: audit",
        "rule lock:__lockproxy: enforce", "rule \" __lockproxy:\" audit", "rule __lockproxy; audit",
    };
    for (size_t i = 0; i < sizeof near / sizeof near[0]; i++) {
        policy *p = parse(near[i]);
        ok(p != NULL && policy_count(p) == 1, "accepted: %s", near[i]);
        policy_free(p);
    }
}

static void test_errors(void)
{
    static const char units[] = "(a unit is needed: e.g. 250ms, 30s, 5m, 1h)";
    static const char units_none[] = "(a unit is needed: e.g. 250ms, 30s, 5m, 1h, or none)";
    static const char bad[] = "(expected e.g. 250ms, 30s, 5m, 1h)";
    static const char bad_none[] = "(expected e.g. 250ms, 30s, 5m, 1h, or none)";
    static const char forms[] = "(expected an address or a network, e.g. 10.0.0.0/8, 192.168.1.7, fd00::/8 or ::1)";
    static const char records[] = "would match lockproxy's lease records (__lockproxy:...)";
    static const char options[] = "(expected ttl=, max-ttl=, owner=, renew= or max-hold=)";
    static const struct { const char *text; int line; const char *msg, *why; } cases[] = {
        /* directives */
        {"rules lock: enforce\n", 1, "unknown directive 'rules' (expected 'rule' or 'exempt')", NULL},
        {"# c\n\nrule a: audit\nprefix b: audit\n", 4, "unknown directive 'prefix' (expected 'rule' or 'exempt')", NULL},
        {"exempts user a\n", 1, "unknown directive 'exempts' (expected 'rule' or 'exempt')", NULL},
        {"rule\n", 1, "missing prefix after 'rule'", NULL},
        {"rule # comment\n", 1, "missing prefix after 'rule'", NULL},
        {"rule a: audit\r\nrule lock:\r\n", 2, "missing mode after prefix 'lock:' (expected enforce, audit or off)", NULL},
        {"rule lock: strict\n", 1, "bad mode 'strict' (expected enforce, audit or off)", NULL},
        {"rule lock: ttl=5s\n", 1, "bad mode 'ttl=5s' (expected enforce, audit or off)", NULL},
        /* durations need a unit */
        {"rule lock: enforce ttl=30\n", 1, "bad duration in 'ttl=30' ", units},
        {"rule lock: enforce ttl=0\n", 1, "bad duration in 'ttl=0' ", units},
        {"rule lock: enforce ttl=1500\n", 1, "bad duration in 'ttl=1500' ", units},
        {"rule lock: enforce ttl=99999999999999999999\n", 1, "bad duration in 'ttl=99999999999999999999' ", units},
        {"rule lock: enforce max-ttl=300\n", 1, "bad duration in 'max-ttl=300' ", units_none},
        {"rule lock: enforce max-hold=600000\n", 1, "bad duration in 'max-hold=600000' ", units_none},
        {"rule lock: enforce MAX-HOLD=0\n", 1, "bad duration in 'MAX-HOLD=0' ", units_none},
        {"rule lock: enforce ttl=5x\n", 1, "bad duration in 'ttl=5x' ", bad},
        {"rule lock: enforce ttl=\n", 1, "bad duration in 'ttl=' ", bad},
        {"rule lock: enforce ttl=s\n", 1, "bad duration in 'ttl=s' ", bad},
        {"rule lock: enforce ttl=1.5s\n", 1, "bad duration in 'ttl=1.5s' ", bad},
        {"rule lock: enforce ttl=-1s\n", 1, "bad duration in 'ttl=-1s' ", bad},
        {"rule lock: enforce ttl=none\n", 1, "bad duration in 'ttl=none' ", bad},
        {"rule lock: enforce ttl=1s5\n", 1, "bad duration in 'ttl=1s5' ", bad},
        {"rule lock: enforce max-ttl=1d\n", 1, "bad duration in 'max-ttl=1d' ", bad_none},
        {"rule lock: enforce max-hold=forever\n", 1, "bad duration in 'max-hold=forever' ", bad_none},
        {"rule lock: enforce max-hold=\n", 1, "bad duration in 'max-hold=' ", bad_none},
        {"rule lock: enforce ttl=9223372036854775807h\n", 1, "bad duration in 'ttl=9223372036854775807h' (too large)", NULL},
        {"rule lock: enforce max-hold=9223372036854775808ms\n", 1,
         "bad duration in 'max-hold=9223372036854775808ms' (too large)", NULL},
        {"rule lock: enforce ttl=0ms\n", 1, "'ttl=0ms': the duration must be greater than zero", NULL},
        {"rule lock: enforce max-ttl=0ms\n", 1, "'max-ttl=0ms': the duration must be greater than zero", NULL},
        {"rule lock: enforce max-hold=0s\n", 1, "'max-hold=0s': the duration must be greater than zero", NULL},
        {"rule lock: enforce ttl=10m max-ttl=5m\n", 1, "'ttl=10m' is longer than 'max-ttl=5m'", NULL},
        {"rule lock: enforce max-ttl=1s ttl=1001ms\n", 1, "'ttl=1001ms' is longer than 'max-ttl=1s'", NULL},
        /* options */
        {"rule lock: enforce color=red\n", 1, "unknown option 'color=red' ", options},
        {"rule lock: enforce release-on-disconnect\n", 1, "unknown option 'release-on-disconnect' ", options},
        {"rule lock: enforce max_hold=1s\n", 1, "unknown option 'max_hold=1s' ", options},
        {"rule lock: enforce renewal=off\n", 1, "unknown option 'renewal=off' ", options},
        {"rule lock: enforce ttl\n", 1, "option 'ttl' needs a value, as in ttl=...", NULL},
        {"rule lock: enforce renew\n", 1, "option 'renew' needs a value, as in renew=...", NULL},
        {"rule lock: enforce max-hold\n", 1, "option 'max-hold' needs a value, as in max-hold=...", NULL},
        {"rule lock: enforce ttl=1s owner=connection TTL=2s\n", 1, "repeated option 'TTL=2s'", NULL},
        {"rule lock: enforce max-ttl=none max-ttl=1s\n", 1, "repeated option 'max-ttl=1s'", NULL},
        {"rule lock: enforce owner=connection owner=client-addr\n", 1, "repeated option 'owner=client-addr'", NULL},
        {"rule lock: enforce renew=off renew=always\n", 1, "repeated option 'renew=always'", NULL},
        {"rule lock: enforce max-hold=none max-hold=1m\n", 1, "repeated option 'max-hold=1m'", NULL},
        {"rule lock: enforce owner=me\n", 1,
         "bad owner in 'owner=me' (expected auto, connection, client-addr or client-name)", NULL},
        {"rule lock: enforce owner=\n", 1,
         "bad owner in 'owner=' (expected auto, connection, client-addr or client-name)", NULL},
        {"rule lock: enforce renew=never\n", 1, "bad renew in 'renew=never' (expected auto, always or off)", NULL},
        {"rule lock: enforce renew=\n", 1, "bad renew in 'renew=' (expected auto, always or off)", NULL},
        {"rule lock: enforce renew=1s\n", 1, "bad renew in 'renew=1s' (expected auto, always or off)", NULL},
        /* prefixes */
        {"rule lock: enforce\nrule mutex: audit\n\nrule lock: off\n", 4, "duplicate prefix 'lock:' (first at line 1)", NULL},
        {"rule \"lock:\" enforce\nrule lock: audit\n", 2, "duplicate prefix 'lock:' (first at line 1)", NULL},
        {"rule \"\" enforce\n", 1, "empty prefix", NULL},
        {"rule __lockproxy: enforce\n", 1, "rule prefix '__lockproxy:' ", records},
        {"rule __lockproxy:{lock:a}:lock:a audit\n", 1, "rule prefix '__lockproxy:{lock:a}:lock:a' ", records},
        {"rule __lock audit\n", 1, "rule prefix '__lock' ", records},
        {"rule _ off\n", 1, "rule prefix '_' ", records},
        {"# x\nrule \"__lockproxy\" off ttl=1s\n", 2, "rule prefix '__lockproxy' ", records},
        {"rule \"\\x5f_lockproxy:x\" enforce\n", 1, "rule prefix '__lockproxy:x' ", records},
        /* tokens */
        {"rule \"lock: enforce\n", 1, "unterminated quote in \"lock: enforce", NULL},
        {"rule \"lock:\"x enforce\n", 1, "closing quote must be followed by a space in \"lock:\"x", NULL},
        {"rule \"lo\\ck\" enforce\n", 1, "bad escape in \"lo\\ck\" (expected \\\", \\\\ or \\xHH)", NULL},
        {"rule \"lo\\x4g\" enforce\n", 1, "bad escape in \"lo\\x4g\" (expected \\\", \\\\ or \\xHH)", NULL},
        {"rule \"lock\\\" enforce\n", 1, "unterminated quote in \"lock\\\" enforce", NULL},
        {"rule lock: \"enforce\\x00\"\n", 1, "NUL byte in a token", NULL},
        {"rule lock: enforce \"ttl=1s\\x00\"\n", 1, "NUL byte in a token", NULL},
        /* exempt lines */
        {"exempt\n", 1, "missing kind after 'exempt' (expected user or addr)", NULL},
        {"exempt # users below\n", 1, "missing kind after 'exempt' (expected user or addr)", NULL},
        {"exempt group ops\n", 1, "unknown exempt kind 'group' (expected user or addr)", NULL},
        {"exempt users ops\n", 1, "unknown exempt kind 'users' (expected user or addr)", NULL},
        {"exempt ip 10.0.0.1\n", 1, "unknown exempt kind 'ip' (expected user or addr)", NULL},
        {"exempt user\n", 1, "missing user name after 'exempt user'", NULL},
        {"exempt user   # nobody\n", 1, "missing user name after 'exempt user'", NULL},
        {"exempt addr\n", 1, "missing address after 'exempt addr' ", forms},
        {"exempt user a b\n", 1, "extra argument 'b' after 'exempt user a' (one user name per line)", NULL},
        {"exempt addr 10.0.0.0/8 10.1.0.0/16\n", 1,
         "extra argument '10.1.0.0/16' after 'exempt addr 10.0.0.0/8' (one address per line)", NULL},
        {"exempt user \"\"\n", 1, "empty user name", NULL},
        {"exempt user \"a\\x00\"\n", 1, "NUL byte in a token", NULL},
        {"exempt user \"ops\n", 1, "unterminated quote in \"ops", NULL},
        {"exempt addr 10.0.0.256\n", 1, "bad CIDR '10.0.0.256' ", forms},
        {"exempt addr 10.0.0\n", 1, "bad CIDR '10.0.0' ", forms},
        {"exempt addr localhost\n", 1, "bad CIDR 'localhost' ", forms},
        {"exempt addr 010.0.0.1\n", 1, "bad CIDR '010.0.0.1' ", forms},
        {"exempt addr /8\n", 1, "bad CIDR '/8' ", forms},
        {"exempt addr [::1]\n", 1, "bad CIDR '[::1]' ", forms},
        {"exempt addr fe80::1%eth0\n", 1, "bad CIDR 'fe80::1%eth0' ", forms},
        {"exempt addr 1::2::3\n", 1, "bad CIDR '1::2::3' ", forms},
        {"exempt addr 1111:2222:3333:4444:5555:6666:7777:8888:9999\n", 1,
         "bad CIDR '1111:2222:3333:4444:5555:6666:7777:8888:9999' ", forms},
        {"exempt addr 10.0.0.0/33\n", 1, "bad CIDR '10.0.0.0/33' (the prefix length must be 0 to 32 for IPv4)", NULL},
        {"exempt addr 10.0.0.0/\n", 1, "bad CIDR '10.0.0.0/' (the prefix length must be 0 to 32 for IPv4)", NULL},
        {"exempt addr 10.0.0.0/8x\n", 1, "bad CIDR '10.0.0.0/8x' (the prefix length must be 0 to 32 for IPv4)", NULL},
        {"exempt addr 10.0.0.0/-8\n", 1, "bad CIDR '10.0.0.0/-8' (the prefix length must be 0 to 32 for IPv4)", NULL},
        {"exempt addr 10.0.0.0/8/8\n", 1, "bad CIDR '10.0.0.0/8/8' (the prefix length must be 0 to 32 for IPv4)", NULL},
        {"exempt addr ::1/129\n", 1, "bad CIDR '::1/129' (the prefix length must be 0 to 128 for IPv6)", NULL},
        {"exempt addr fd00::/99999999999999999999\n", 1,
         "bad CIDR 'fd00::/99999999999999999999' (the prefix length must be 0 to 128 for IPv6)", NULL},
        {"exempt addr 10.1.2.3/8\n", 1, "bad CIDR '10.1.2.3/8' (bits set past the prefix length; the network is 10.0.0.0/8)", NULL},
        {"exempt addr 192.168.1.7/31\n", 1,
         "bad CIDR '192.168.1.7/31' (bits set past the prefix length; the network is 192.168.1.6/31)", NULL},
        {"exempt addr 1.2.3.4/0\n", 1, "bad CIDR '1.2.3.4/0' (bits set past the prefix length; the network is 0.0.0.0/0)", NULL},
        {"exempt addr fd00::1/8\n", 1, "bad CIDR 'fd00::1/8' (bits set past the prefix length; the network is fd00::/8)", NULL},
        {"exempt addr 2001:db8::1/127\n", 1,
         "bad CIDR '2001:db8::1/127' (bits set past the prefix length; the network is 2001:db8::/127)", NULL},
        {"exempt user alice\nexempt user alice\n", 2, "duplicate exempt user 'alice' (first at line 1)", NULL},
        {"exempt user alice\n\nexempt user \"alice\"\n", 3, "duplicate exempt user 'alice' (first at line 1)", NULL},
        {"exempt addr 10.0.0.0/8\n\nexempt addr 10.0.0.0/08\n", 3, "duplicate exempt addr '10.0.0.0/08' (first at line 1)", NULL},
        {"exempt addr 127.0.0.1\nexempt addr 127.0.0.1/32\n", 2, "duplicate exempt addr '127.0.0.1/32' (first at line 1)", NULL},
        {"exempt addr ::1\nexempt addr 0:0::1/128\n", 2, "duplicate exempt addr '0:0::1/128' (first at line 1)", NULL},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char msg[512];
        snprintf(msg, sizeof msg, "%s%s", cases[i].msg, cases[i].why ? cases[i].why : "");
        parse_error(cases[i].text, cases[i].line, msg);
    }

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

/* Exempt lines: who passes unchecked. */
static void test_exempt(void)
{
    policy *p = parse("exempt user alice\n"
                      "EXEMPT USER Bob\n"
                      "exempt user \"ops team\"\n"
                      "exempt user Alice\n"
                      "exempt addr 10.0.0.0/8\n"
                      "exempt addr 192.168.1.7\n"
                      "exempt addr 172.16.0.0/12\n"
                      "exempt addr 100.64.0.0/10\n"
                      "Exempt Addr fd00::/8\n"
                      "exempt addr ::1\n"
                      "exempt addr 2001:DB8::/127\n"
                      "exempt addr 203.0.113.0/24   # a comment\n"
                      "rule lock: enforce\n");
    is_int(policy_count(p), 1, "exempt lines are not rules");
    static const struct { const char *user; size_t len; int want; } users[] = {
        {"alice", 5, 1}, {"Bob", 3, 1}, {"ops team", 8, 1}, {"Alice", 5, 1},
        {"bob", 3, 0}, {"ALICE", 5, 0}, {"alic", 4, 0}, {"alicex", 6, 0}, {"alice", 4, 0},
        {"alice\0", 6, 0}, {"ops", 3, 0}, {"", 0, 0}, {"default", 7, 0},
    };
    for (size_t i = 0; i < sizeof users / sizeof users[0]; i++)
        is_int(policy_exempt_user(p, users[i].user, users[i].len), users[i].want, "user '%.*s' (%zu bytes)",
               (int)users[i].len, users[i].user, users[i].len);

    static const struct { const char *ip; int want; } ips[] = {
        {"10.0.0.0", 1}, {"10.0.0.1", 1}, {"10.255.255.255", 1}, {"11.0.0.0", 0}, {"9.255.255.255", 0},
        {"192.168.1.7", 1}, {"192.168.1.6", 0}, {"192.168.1.8", 0},
        {"172.16.0.1", 1}, {"172.31.255.255", 1}, {"172.32.0.0", 0}, {"172.15.255.255", 0},
        {"100.64.0.1", 1}, {"100.127.255.255", 1}, {"100.128.0.0", 0}, {"100.63.255.255", 0},
        {"203.0.113.200", 1}, {"203.0.114.1", 0},
        {"fd00::1", 1}, {"fdff:ffff::1", 1}, {"fc00::1", 0}, {"fe80::1", 0},
        {"::1", 1}, {"[::1]", 1}, {"0:0:0:0:0:0:0:1", 1}, {"::2", 0}, {"::", 0},
        {"2001:db8::", 1}, {"2001:db8::1", 1}, {"2001:db8::2", 0}, {"[2001:DB8::1]", 1},
        {"fd00::1%eth0", 1}, {"[fd00::1%eth0]", 1},
        {"::ffff:10.1.2.3", 1}, {"[::ffff:10.1.2.3]", 1}, {"::ffff:11.1.2.3", 0}, {"::ffff:a01:203", 1},
        {"127.0.0.1", 0}, {"unix", 0}, {"?", 0}, {"", 0}, {"[]", 0}, {"[", 0},
        {"10.0.0.1:6379", 0}, {"[::1]:6379", 0}, {"10.0.0.1 ", 0}, {" 10.0.0.1", 0}, {"10.1", 0},
    };
    for (size_t i = 0; i < sizeof ips / sizeof ips[0]; i++)
        is_int(policy_exempt_ip(p, ips[i].ip, strlen(ips[i].ip)), ips[i].want, "ip '%s'", ips[i].ip);
    is_int(policy_exempt_ip(p, "10.0.0.1xyz", 8), 1, "ip: only len bytes count");
    is_int(policy_exempt_ip(p, "10.0.0.1\0x", 10), 0, "ip: a NUL byte inside is no address");
    is_int(policy_exempt_ip(p, "ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255-and-more-text-here-to-be-long", 73), 0,
           "ip: an over-long text is no address");
    policy_free(p);

    p = parse("exempt addr 0.0.0.0/0\n");
    is_int(policy_exempt_ip(p, "1.2.3.4", 7), 1, "0.0.0.0/0: every IPv4 address");
    is_int(policy_exempt_ip(p, "::ffff:1.2.3.4", 14), 1, "  and every IPv4-mapped one");
    is_int(policy_exempt_ip(p, "::1", 3), 0, "  but not ::1");
    is_int(policy_exempt_ip(p, "unix", 4), 0, "  nor a unix client");
    is_int(policy_exempt_user(p, "default", 7), 0, "  no exempt user");
    policy_free(p);
    p = parse("exempt addr ::/0\nexempt addr 128.0.0.0/1\n");
    is_int(policy_exempt_ip(p, "2001:db8::7", 11), 1, "::/0: every IPv6 address");
    is_int(policy_exempt_ip(p, "200.1.1.1", 9), 1, "128.0.0.0/1 holds 200.1.1.1");
    is_int(policy_exempt_ip(p, "127.255.255.255", 15), 0, "  not 127.255.255.255");
    policy_free(p);

    p = parse("rule lock: enforce\n");
    is_int(policy_exempt_user(p, "alice", 5), 0, "no exempt lines: no user is exempt");
    is_int(policy_exempt_ip(p, "10.0.0.1", 8), 0, "no exempt lines: no address is exempt");
    policy_free(p);
    is_int(policy_exempt_user(NULL, "alice", 5), 0, "NULL policy: no user is exempt");
    is_int(policy_exempt_ip(NULL, "10.0.0.1", 8), 0, "NULL policy: no address is exempt");
}

/* policy_warnings(): what --check prints on stderr. */
static void test_warnings(void)
{
    static const struct { const char *text, *want; } cases[] = {
        {"rule lock: enforce\nexempt addr 10.0.0.0/8\n", ""},
        {"rule lock:* enforce\n",
         "p.conf:1: warning: prefix 'lock:*' holds '*', which is matched literally (prefixes are not globs)\n"},
        {"\nrule a? audit\n",
         "p.conf:2: warning: prefix 'a?' holds '?', which is matched literally (prefixes are not globs)\n"},
        {"rule \"a[b]\" off\n",
         "p.conf:1: warning: prefix 'a[b]' holds '[', which is matched literally (prefixes are not globs)\n"},
        {"rule x]*?[ audit\n",
         "p.conf:1: warning: prefix 'x]*?[' holds '*', which is matched literally (prefixes are not globs)\n"},
        {"rule a] audit\nrule {a}: audit\nrule a^$. audit\n", ""},
        {"rule a: enforce renew=off max-hold=5m\n",
         "p.conf:1: warning: prefix 'a:': max-hold has no effect with renew=off\n"},
        {"rule a: enforce renew=off max-hold=none\nrule b: enforce renew=always max-hold=1m\n", ""},
        {"exempt addr 0.0.0.0/0\nexempt addr ::/0\nexempt addr 0.0.0.0/1\n",
         "p.conf:1: warning: exempt addr 0.0.0.0/0 exempts every IPv4 client\n"
         "p.conf:2: warning: exempt addr ::/0 exempts every IPv6 client\n"},
        {"rule a* audit\nexempt addr ::/0\nrule b? audit renew=off max-hold=1s\nexempt user x\nexempt addr 0.0.0.0/0\n",
         "p.conf:1: warning: prefix 'a*' holds '*', which is matched literally (prefixes are not globs)\n"
         "p.conf:2: warning: exempt addr ::/0 exempts every IPv6 client\n"
         "p.conf:3: warning: prefix 'b?' holds '?', which is matched literally (prefixes are not globs)\n"
         "p.conf:3: warning: prefix 'b?': max-hold has no effect with renew=off\n"
         "p.conf:5: warning: exempt addr 0.0.0.0/0 exempts every IPv4 client\n"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char buf[1024];
        policy *p = parse(cases[i].text);
        size_t n = policy_warnings(p, buf, sizeof buf);
        is_string(buf, cases[i].want, "warnings %zu", i);
        is_int(n, strlen(cases[i].want), "  length");
        is_int(policy_warnings(p, NULL, 0), n, "  length without a buffer");
        policy_free(p);
    }

    /* snprintf semantics: truncated, NUL-terminated, full length returned. */
    policy *p = parse("rule a* audit\nrule b* audit\n");
    char small[20];
    memset(small, 'x', sizeof small);
    size_t n = policy_warnings(p, small, sizeof small);
    is_int(n, 2 * strlen("p.conf:1: warning: prefix 'a*' holds '*', which is matched literally (prefixes are not globs)\n"),
           "truncated: the whole length is returned");
    is_string(small, "p.conf:1: warning: ", "  the buffer holds what fits, NUL-terminated");
    policy_free(p);
    is_int(policy_warnings(NULL, small, sizeof small), 0, "NULL policy: no warnings");
    is_string(small, "", "  empty text");

    /* The name given to the parser is the one warnings name. */
    char path[] = "/tmp/lp-policy-XXXXXX", want[256], buf[512];
    int fd = mkstemp(path);
    if (fd < 0 || write(fd, "# x\nrule job:* audit\n", 21) != 21) bail_out("mkstemp/write failed");
    close(fd);
    p = policy_load(path, err, sizeof err);
    policy_warnings(p, buf, sizeof buf);
    snprintf(want, sizeof want,
             "%s:2: warning: prefix 'job:*' holds '*', which is matched literally (prefixes are not globs)\n", path);
    is_string(buf, want, "a loaded file's warnings name its path");
    policy_free(p);
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
            x->owner != y->owner || x->renew != y->renew || x->max_hold_ms != y->max_hold_ms)
            return 0;
    }
    return 1;
}

/* p prints as want; that text parses back to the same rules and prints the same. */
static void prints_as(const policy *p, const char *want, const char *name)
{
    size_t len, len2;
    char *out = print(p, &len);
    is_string(out, want, "%s", name);
    policy *q = policy_parse(out, len, "printed", err, sizeof err);
    if (!ok(q != NULL && same_rules(p, q), "  parse(print(p)) equals p")) diag("%s", err);
    char *out2 = print(q, &len2);
    is_bytes(out2, len2, out, len, "  print is stable");
    free(out2);
    free(out);
    policy_free(q);
}

static void test_print(void)
{
    size_t len;
    policy *p = parse("rule lock: enforce\n"
                      "rule mutex: audit ttl=250ms max-ttl=90s owner=client-addr\n"
                      "rule job: off ttl=2h max-ttl=600m owner=client-name renew=off max-hold=90m\n"
                      "rule \"a b\" enforce ttl=61s owner=connection renew=always max-hold=1500ms\n"
                      "rule \"q\\\"\\\\#\" enforce owner=auto renew=auto max-hold=none\n"
                      "rule \"\\x00\\x1f\\x7f\\xc3\\xa9\" audit\n"
                      "rule caf\xc3\xa9: audit\n");
    prints_as(p,
              "rule lock: enforce ttl=30s max-ttl=none owner=auto renew=auto max-hold=none\n"
              "rule mutex: audit ttl=250ms max-ttl=90s owner=client-addr renew=auto max-hold=none\n"
              "rule job: off ttl=2h max-ttl=10h owner=client-name renew=off max-hold=90m\n"
              "rule \"a b\" enforce ttl=61s max-ttl=none owner=connection renew=always max-hold=1500ms\n"
              "rule \"q\\\"\\\\#\" enforce ttl=30s max-ttl=none owner=auto renew=auto max-hold=none\n"
              "rule \"\\x00\\x1f\\x7f\xc3\xa9\" audit ttl=30s max-ttl=none owner=auto renew=auto max-hold=none\n"
              "rule caf\xc3\xa9: audit ttl=30s max-ttl=none owner=auto renew=auto max-hold=none\n",
              "print spells out every option, quoting prefixes that need it");
    policy_free(p);

    /* Exempt lines print after the rules, users then addresses, each in file order; a
     * network in its canonical form, a single host as a bare address. */
    p = parse("exempt addr 10.0.0.0/08\n"
              "exempt user alice\n"
              "rule lock: enforce\n"
              "exempt addr 192.168.1.7/32\n"
              "exempt user \"ops team\"\n"
              "exempt addr 2001:0DB8:0:0::/32\n"
              "exempt addr 0:0::1\n"
              "exempt user \"#x\\\"\\\\\\x01\"\n"
              "exempt addr ::ffff:10.0.0.0/104\n"
              "exempt addr 0.0.0.0/0\n"
              "exempt addr ::/0\n"
              "exempt user caf\xc3\xa9\n");
    prints_as(p,
              "rule lock: enforce ttl=30s max-ttl=none owner=auto renew=auto max-hold=none\n"
              "exempt user alice\n"
              "exempt user \"ops team\"\n"
              "exempt user \"#x\\\"\\\\\\x01\"\n"
              "exempt user caf\xc3\xa9\n"
              "exempt addr 10.0.0.0/8\n"
              "exempt addr 192.168.1.7\n"
              "exempt addr 2001:db8::/32\n"
              "exempt addr ::1\n"
              "exempt addr ::ffff:10.0.0.0/104\n"
              "exempt addr 0.0.0.0/0\n"
              "exempt addr ::/0\n",
              "exempt lines print back");
    policy_free(p);

    /* Every single-byte prefix and user name survives the round trip. */
    int all = 1;
    for (int b = 0; b < 256; b++) {
        char text[128];
        int n = snprintf(text, sizeof text, "rule \"\\x%02xk\" audit max-ttl=%dms max-hold=%ds\n"
                                            "exempt user \"\\x%02x\"\n", b, b + 1, b + 1, b ? b : 'u');
        p = policy_parse(text, (size_t)n, "byte", err, sizeof err);
        char *out = print(p, &len);
        policy *q = policy_parse(out, len, "printed", err, sizeof err);
        size_t len2 = 0;
        char *out2 = q ? print(q, &len2) : NULL;
        if (p == NULL || q == NULL || !same_rules(p, q) || len2 != len || memcmp(out, out2, len) != 0) {
            diag("byte 0x%02x: %s", b, out);
            all = 0;
        }
        free(out);
        free(out2);
        policy_free(p);
        policy_free(q);
    }
    ok(all, "every byte value round-trips through print");

    char *out = print(NULL, &len);
    is_int(len, 0, "empty policy prints nothing");
    free(out);
}

static void test_shipped(void)
{
    policy *p = policy_load(LOCKPROXY_SRC "/conf/policy.conf", err, sizeof err);
    if (!ok(p != NULL, "shipped conf/policy.conf parses")) diag("%s", err);
    ok(policy_count(p) > 0, "  it has rules");
    const policy_rule *r = policy_match(p, "lock:order:42", 13);
    ok(r != NULL && r->mode == POLICY_AUDIT, "  lock:order:42 is a lock key, audited for a first run");
    for (size_t i = 0; i < policy_count(p); i++)
        ok(policy_rule_at(p, i)->mode != POLICY_ENFORCE, "  rule %zu does not enforce", i);
    ok(policy_match(p, "user:1", 6) == NULL, "  user:1 is an ordinary key");
    is_int(policy_warnings(p, NULL, 0), 0, "  no warnings");
    size_t len;
    char *out = print(p, &len);
    policy *q = policy_parse(out, len, "printed", err, sizeof err);
    ok(q != NULL && same_rules(p, q), "  round-trips through print");
    free(out);
    policy_free(q);
    policy_free(p);

    /* The commented examples at the end parse once uncommented. */
    FILE *f = fopen(LOCKPROXY_SRC "/conf/policy.conf", "r");
    char line[512], *text = NULL;
    size_t tlen = 0;
    FILE *t = open_memstream(&text, &tlen);
    int examples = 0, n = 0;
    while (f != NULL && fgets(line, sizeof line, f) != NULL) {
        if (strncmp(line, "# Examples:", 11) == 0) examples = 1;
        int example = examples && (strncmp(line, "# rule ", 7) == 0 || strncmp(line, "# exempt ", 9) == 0);
        n += example;
        fputs(example ? line + 2 : line, t);
    }
    if (f != NULL) fclose(f);
    fclose(t);
    ok(n >= 4, "  it shows %d commented examples", n);
    p = policy_parse(text, tlen, "examples", err, sizeof err);
    if (!ok(p != NULL, "  they parse uncommented")) diag("%s", err);
    ok(p != NULL && policy_count(p) > 2, "  they add rules");
    is_int(policy_warnings(p, NULL, 0), 0, "  without warnings");
    policy_free(p);
    free(text);
}

int main(void)
{
    plan_lazy();
    test_syntax();
    test_options();
    test_errors();
    test_exempt();
    test_warnings();
    test_match();
    test_print();
    test_shipped();
    return 0;
}
