/* Lock policy: parsing the policy file (syntax in policy.h: "rule PREFIX MODE [ttl=DUR]
 * [max-ttl=DUR] [owner=SCOPE] [renew=WHEN] [max-hold=DUR]", "exempt user NAME", "exempt addr
 * CIDR", '#' comments), longest-prefix match, exemptions, printing and warnings. */
#include "policy/policy.h"
#include "common/tokens.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define DEFAULT_TTL_MS 30000
#define DURATION_EXAMPLES "e.g. 250ms, 30s, 5m, 1h"
#define CIDR_FORMS "expected an address or a network, e.g. 10.0.0.0/8, 192.168.1.7, fd00::/8 or ::1"

/* An "exempt user" line. The name has no NUL byte and is NUL-terminated. */
typedef struct exempt_user {
    char *name;
    size_t len;
    int line;
} exempt_user;

/* An "exempt addr" line: the network addr/bits, host bits clear. */
typedef struct exempt_net {
    int family;                 /* AF_INET or AF_INET6 */
    unsigned char addr[16];     /* 4 or 16 bytes used, network byte order */
    int bits;
    int line;
} exempt_net;

struct policy {
    char *name;                 /* as given to policy_parse(), for policy_warnings() */
    policy_rule *rules;         /* in file order */
    size_t n, cap;
    exempt_user *users;         /* in file order */
    size_t nusers, capusers;
    exempt_net *nets;           /* in file order */
    size_t nnets, capnets;
};

const char *policy_mode_name(policy_mode m)
{
    return m == POLICY_ENFORCE ? "enforce" : m == POLICY_AUDIT ? "audit" : "off";
}

const char *policy_owner_name(policy_owner o)
{
    return o == POLICY_OWNER_CONNECTION ? "connection"
         : o == POLICY_OWNER_CLIENT_ADDR ? "client-addr"
         : o == POLICY_OWNER_CLIENT_NAME ? "client-name" : "auto";
}

const char *policy_renew_name(policy_renew r)
{
    return r == POLICY_RENEW_ALWAYS ? "always" : r == POLICY_RENEW_OFF ? "off" : "auto";
}

/* Grows the array *items of *cap elements of size sz so that it holds n + 1. 0 or -1. */
static int grow(void *items, size_t *cap, size_t n, size_t sz)
{
    if (n < *cap) return 0;
    size_t ncap = *cap ? *cap * 2 : 8;
    void *ni = realloc(*(void **)items, ncap * sz);
    if (ni == NULL) return -1;
    *(void **)items = ni;
    *cap = ncap;
    return 0;
}

/* ---- rules ---- */

/* Parses the value of the option token opt ("ttl=30s") as a positive duration with a unit
 * into *ms; with allow_none, "none" gives 0. Returns 0 or -1 with the error in w->err. */
static int option_duration(const lp_tok_where *w, const char *opt, const char *v,
                           int allow_none, long long *ms)
{
    const char *none = allow_none ? ", or none" : "";
    size_t digits = strspn(v, "0123456789");

    if (allow_none && strcasecmp(v, "none") == 0) {
        *ms = 0;
        return 0;
    }
    if ((*ms = lp_tok_parse_duration_unit_ms(v)) < 0) {
        const char *unit = v + digits;
        char one[8];
        if (digits > 0 && *unit == '\0')
            return lp_tok_fail(w, "bad duration in '%s' (a unit is needed: " DURATION_EXAMPLES
                               "%s)", opt, none);
        /* Digits and a good unit, yet no value: it overflows. */
        if (digits > 0 && strlen(unit) < sizeof one - 1 &&
            snprintf(one, sizeof one, "1%s", unit) > 0 && lp_tok_parse_duration_unit_ms(one) > 0)
            return lp_tok_fail(w, "bad duration in '%s' (too large)", opt);
        return lp_tok_fail(w, "bad duration in '%s' (expected " DURATION_EXAMPLES "%s)", opt, none);
    }
    if (*ms == 0) return lp_tok_fail(w, "'%s': the duration must be greater than zero", opt);
    return 0;
}

/* The options of a rule, in the order of the "expected" list of the message. */
enum { OPT_TTL, OPT_MAX_TTL, OPT_OWNER, OPT_RENEW, OPT_MAX_HOLD, NOPTS };
static const char *const option_names[NOPTS] = {"ttl", "max-ttl", "owner", "renew", "max-hold"};

/* Applies the option token tok (NUL-terminated, "name=value") to r; seen[] holds the
 * options already given. Returns 0 or -1 with the error in w->err. */
static int rule_option(const lp_tok_where *w, char *tok, const char *seen[NOPTS], policy_rule *r)
{
    char *eq = strchr(tok, '=');
    size_t klen = eq ? (size_t)(eq - tok) : strlen(tok);
    int o = 0;

    while (o < NOPTS &&
           !(strlen(option_names[o]) == klen && strncasecmp(tok, option_names[o], klen) == 0))
        o++;
    if (o == NOPTS)
        return lp_tok_fail(w, "unknown option '%s' (expected ttl=, max-ttl=, owner=, renew= or "
                              "max-hold=)", tok);
    if (seen[o] != NULL) return lp_tok_fail(w, "repeated option '%s'", tok);
    if (eq == NULL) return lp_tok_fail(w, "option '%s' needs a value, as in %s=...", tok, tok);
    seen[o] = tok;
    const char *v = eq + 1;
    switch (o) {
    case OPT_TTL: return option_duration(w, tok, v, 0, &r->ttl_ms);
    case OPT_MAX_TTL: return option_duration(w, tok, v, 1, &r->max_ttl_ms);
    case OPT_MAX_HOLD: return option_duration(w, tok, v, 1, &r->max_hold_ms);
    case OPT_OWNER:
        for (policy_owner k = POLICY_OWNER_AUTO; k <= POLICY_OWNER_CLIENT_NAME; k++)
            if (strcasecmp(v, policy_owner_name(k)) == 0) {
                r->owner = k;
                return 0;
            }
        return lp_tok_fail(w, "bad owner in '%s' (expected auto, connection, client-addr or "
                              "client-name)", tok);
    default:
        for (policy_renew k = POLICY_RENEW_AUTO; k <= POLICY_RENEW_OFF; k++)
            if (strcasecmp(v, policy_renew_name(k)) == 0) {
                r->renew = k;
                return 0;
            }
        return lp_tok_fail(w, "bad renew in '%s' (expected auto, always or off)", tok);
    }
}

/* 1 when a key starting with prefix[0..len) could be a lease record, or a record key could
 * start with it: either is a prefix of the other. */
static int matches_records(const char *prefix, size_t len)
{
    static const char rec[] = POLICY_RECORD_PREFIX;
    size_t n = len < sizeof rec - 1 ? len : sizeof rec - 1;
    return memcmp(prefix, rec, n) == 0;
}

/* Parses the rest of a "rule" line (after the directive) into *r, its prefix pointing into
 * buf, which has room for the line's tokens and their NULs. Returns 0 or -1. */
static int parse_rule(const lp_tok_where *w, const char *s, const char *end, char *buf,
                      policy_rule *r)
{
    const char *seen[NOPTS] = {NULL};
    size_t len = 0;
    int rc;

    if ((rc = lp_tok_next(w, &s, end, buf, &len)) < 0) return -1;
    if (rc == 0) return lp_tok_fail(w, "missing prefix after 'rule'");
    if (len == 0) return lp_tok_fail(w, "empty prefix");
    buf[len] = '\0';
    if (matches_records(buf, len))
        return lp_tok_fail(w, "rule prefix '%s' would match lockproxy's lease records (%s...)", buf,
                           POLICY_RECORD_PREFIX);
    r->prefix = buf;
    r->prefix_len = len;
    buf += len + 1;

    if ((rc = lp_tok_next_word(w, &s, end, buf, &len)) < 0) return -1;
    if (rc == 0)
        return lp_tok_fail(w, "missing mode after prefix '%s' (expected enforce, audit or off)", r->prefix);
    if (strcasecmp(buf, "enforce") == 0) r->mode = POLICY_ENFORCE;
    else if (strcasecmp(buf, "audit") == 0) r->mode = POLICY_AUDIT;
    else if (strcasecmp(buf, "off") == 0) r->mode = POLICY_OFF;
    else return lp_tok_fail(w, "bad mode '%s' (expected enforce, audit or off)", buf);
    buf += len + 1;

    r->ttl_ms = DEFAULT_TTL_MS;
    r->max_ttl_ms = 0;
    r->owner = POLICY_OWNER_AUTO;
    r->renew = POLICY_RENEW_AUTO;
    r->max_hold_ms = 0;
    while ((rc = lp_tok_next_word(w, &s, end, buf, &len)) > 0) {
        if (rule_option(w, buf, seen, r) < 0) return -1;
        buf += len + 1;
    }
    if (rc < 0) return -1;
    if (r->max_ttl_ms > 0 && r->ttl_ms > r->max_ttl_ms) {
        if (seen[OPT_TTL] != NULL)
            return lp_tok_fail(w, "'%s' is longer than '%s'", seen[OPT_TTL], seen[OPT_MAX_TTL]);
        r->ttl_ms = r->max_ttl_ms;      /* the default lease never exceeds the cap */
    }
    r->line = w->line;
    return 0;
}

/* Appends a copy of r (its prefix in scratch memory) unless its prefix is already taken. */
static int add_rule(policy *p, const lp_tok_where *w, const policy_rule *r)
{
    for (size_t i = 0; i < p->n; i++)
        if (p->rules[i].prefix_len == r->prefix_len &&
            memcmp(p->rules[i].prefix, r->prefix, r->prefix_len) == 0)
            return lp_tok_fail(w, "duplicate prefix '%s' (first at line %d)", r->prefix, p->rules[i].line);
    if (grow(&p->rules, &p->cap, p->n, sizeof *p->rules) < 0)
        return lp_tok_fail(w, "out of memory");
    char *prefix = malloc(r->prefix_len + 1);
    if (prefix == NULL) return lp_tok_fail(w, "out of memory");
    memcpy(prefix, r->prefix, r->prefix_len + 1);
    p->rules[p->n] = *r;
    p->rules[p->n++].prefix = prefix;
    return 0;
}

/* ---- exemptions ---- */

static size_t family_bytes(int family)
{
    return family == AF_INET ? 4 : 16;
}

/* 1 when the first bits bits of a and b are equal. */
static int same_bits(const unsigned char *a, const unsigned char *b, int bits)
{
    size_t whole = (size_t)bits / 8;
    if (memcmp(a, b, whole) != 0) return 0;
    if (bits % 8 == 0) return 1;
    unsigned char mask = (unsigned char)(0xff << (8 - bits % 8));
    return (a[whole] & mask) == (b[whole] & mask);
}

/* Parses an address into *family and addr[16]: IPv4 first, then IPv6. 0 or -1. */
static int parse_ip(const char *s, size_t len, int *family, unsigned char addr[16])
{
    char text[64];
    if (len == 0 || len >= sizeof text || memchr(s, '\0', len) != NULL) return -1;
    memcpy(text, s, len);
    text[len] = '\0';
    if (inet_pton(AF_INET, text, addr) == 1) *family = AF_INET;
    else if (inet_pton(AF_INET6, text, addr) == 1) *family = AF_INET6;
    else return -1;
    return 0;
}

/* Writes net in the syntax of the file: a bare address for a single host, else CIDR. */
static void format_net(const exempt_net *net, char *out, size_t cap)
{
    char ip[INET6_ADDRSTRLEN] = "?";
    inet_ntop(net->family, net->addr, ip, sizeof ip);
    if ((size_t)net->bits == family_bytes(net->family) * 8) snprintf(out, cap, "%s", ip);
    else snprintf(out, cap, "%s/%d", ip, net->bits);
}

/* Parses "ADDR" or "ADDR/BITS" (tok, NUL-terminated) into *net. Returns 0 or -1. */
static int parse_cidr(const lp_tok_where *w, const char *tok, exempt_net *net)
{
    const char *slash = strchr(tok, '/');
    size_t alen = slash ? (size_t)(slash - tok) : strlen(tok);

    memset(net, 0, sizeof *net);
    if (parse_ip(tok, alen, &net->family, net->addr) < 0)
        return lp_tok_fail(w, "bad CIDR '%s' (" CIDR_FORMS ")", tok);
    int max = (int)family_bytes(net->family) * 8;
    net->bits = max;
    if (slash != NULL) {
        const char *rest;
        long long bits = lp_tok_parse_digits(slash + 1, &rest);
        if (bits < 0 || *rest != '\0' || bits > max)
            return lp_tok_fail(w, "bad CIDR '%s' (the prefix length must be 0 to %d for %s)", tok,
                               max, net->family == AF_INET ? "IPv4" : "IPv6");
        net->bits = (int)bits;
    }
    unsigned char masked[16] = {0};
    size_t whole = (size_t)net->bits / 8;
    memcpy(masked, net->addr, whole);
    if (net->bits % 8)
        masked[whole] = net->addr[whole] & (unsigned char)(0xff << (8 - net->bits % 8));
    if (memcmp(masked, net->addr, family_bytes(net->family)) != 0) {
        char fixed[80];
        memcpy(net->addr, masked, sizeof masked);
        format_net(net, fixed, sizeof fixed);
        return lp_tok_fail(w, "bad CIDR '%s' (bits set past the prefix length; the network is %s)",
                           tok, fixed);
    }
    return 0;
}

/* Parses the rest of an "exempt" line (after the directive) and adds it to p. buf has room
 * for the line's tokens. Returns 0 or -1. */
static int parse_exempt(policy *p, const lp_tok_where *w, const char *s, const char *end, char *buf)
{
    char *kind = buf, *arg;
    size_t len = 0;
    int rc, user;

    if ((rc = lp_tok_next_word(w, &s, end, kind, &len)) < 0) return -1;
    if (rc == 0) return lp_tok_fail(w, "missing kind after 'exempt' (expected user or addr)");
    if (strcasecmp(kind, "user") == 0) user = 1;
    else if (strcasecmp(kind, "addr") == 0) user = 0;
    else return lp_tok_fail(w, "unknown exempt kind '%s' (expected user or addr)", kind);
    arg = buf += len + 1;
    if ((rc = lp_tok_next_word(w, &s, end, arg, &len)) < 0) return -1;
    if (rc == 0)
        return user ? lp_tok_fail(w, "missing user name after 'exempt user'")
                    : lp_tok_fail(w, "missing address after 'exempt addr' (" CIDR_FORMS ")");
    size_t arglen = len;
    buf += len + 1;
    if ((rc = lp_tok_next_word(w, &s, end, buf, &len)) < 0) return -1;
    if (rc > 0)
        return lp_tok_fail(w, "extra argument '%s' after 'exempt %s %s' (one %s per line)", buf,
                           user ? "user" : "addr", arg, user ? "user name" : "address");

    if (user) {
        if (arglen == 0) return lp_tok_fail(w, "empty user name");
        for (size_t i = 0; i < p->nusers; i++)
            if (p->users[i].len == arglen && memcmp(p->users[i].name, arg, arglen) == 0)
                return lp_tok_fail(w, "duplicate exempt user '%s' (first at line %d)", arg,
                                   p->users[i].line);
        if (grow(&p->users, &p->capusers, p->nusers, sizeof *p->users) < 0)
            return lp_tok_fail(w, "out of memory");
        char *name = strdup(arg);
        if (name == NULL) return lp_tok_fail(w, "out of memory");
        p->users[p->nusers++] = (exempt_user){name, arglen, w->line};
        return 0;
    }
    exempt_net net;
    if (parse_cidr(w, arg, &net) < 0) return -1;
    net.line = w->line;
    for (size_t i = 0; i < p->nnets; i++) {
        const exempt_net *o = &p->nets[i];
        if (o->family == net.family && o->bits == net.bits &&
            memcmp(o->addr, net.addr, sizeof net.addr) == 0)
            return lp_tok_fail(w, "duplicate exempt addr '%s' (first at line %d)", arg, o->line);
    }
    if (grow(&p->nets, &p->capnets, p->nnets, sizeof *p->nets) < 0)
        return lp_tok_fail(w, "out of memory");
    p->nets[p->nnets++] = net;
    return 0;
}

/* Parses one line into p. buf has room for the line's tokens and their NULs. 0 or -1. */
static int parse_line(policy *p, const lp_tok_where *w, const char *s, const char *end, char *buf)
{
    size_t len = 0;
    int rc;

    if ((rc = lp_tok_next_word(w, &s, end, buf, &len)) <= 0) return rc;
    if (strcasecmp(buf, "exempt") == 0) return parse_exempt(p, w, s, end, buf + len + 1);
    if (strcasecmp(buf, "rule") != 0)
        return lp_tok_fail(w, "unknown directive '%s' (expected 'rule' or 'exempt')", buf);
    policy_rule r;
    if (parse_rule(w, s, end, buf + len + 1, &r) < 0) return -1;
    return add_rule(p, w, &r);
}

/* Parses text line by line ('\n' or "\r\n" ends a line; the last may lack it). The scratch
 * buffer holds one line's decoded tokens: they never take more room than the line. */
policy *policy_parse(const char *text, size_t len, const char *name, char *err, size_t errlen)
{
    lp_tok_where w = {name, 0, err, errlen};
    policy *p = calloc(1, sizeof *p);
    char *scratch = malloc(len + 1);
    const char *s = text, *end = text + len;

    if (p == NULL || scratch == NULL || (p->name = strdup(name)) == NULL) {
        snprintf(err, errlen, "%s: out of memory", name);
        goto fail;
    }
    while (s < end) {
        const char *eol = memchr(s, '\n', (size_t)(end - s));
        if (eol == NULL) eol = end;
        w.line++;
        if (parse_line(p, &w, s, eol > s && eol[-1] == '\r' ? eol - 1 : eol, scratch) < 0)
            goto fail;
        s = eol < end ? eol + 1 : end;
    }
    free(scratch);
    return p;
fail:
    free(scratch);
    policy_free(p);
    return NULL;
}

/* Reads all of path and parses it; messages name the path. */
policy *policy_load(const char *path, char *err, size_t errlen)
{
    FILE *f = fopen(path, "rb");
    char *text = NULL;
    size_t len = 0, cap = 0;
    policy *p = NULL;

    if (f == NULL) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        return NULL;
    }
    for (;;) {
        if (len == cap) {
            char *nt = realloc(text, cap = cap ? cap * 2 : 4096);
            if (nt == NULL) {
                snprintf(err, errlen, "%s: out of memory", path);
                goto done;
            }
            text = nt;
        }
        size_t n = fread(text + len, 1, cap - len, f);
        len += n;
        if (n == 0) break;
    }
    if (ferror(f)) snprintf(err, errlen, "%s: %s", path, strerror(errno));
    else p = policy_parse(text, len, path, err, errlen);
done:
    free(text);
    fclose(f);
    return p;
}

void policy_free(policy *p)
{
    if (p == NULL) return;
    for (size_t i = 0; i < p->n; i++) free(p->rules[i].prefix);
    for (size_t i = 0; i < p->nusers; i++) free(p->users[i].name);
    free(p->rules);
    free(p->users);
    free(p->nets);
    free(p->name);
    free(p);
}

size_t policy_count(const policy *p)
{
    return p ? p->n : 0;
}

const policy_rule *policy_rule_at(const policy *p, size_t i)
{
    return p && i < p->n ? &p->rules[i] : NULL;
}

/* One pass over the rules, no allocation: the longest prefix of key[0..keylen) wins.
 * Prefixes are unique, so there are no ties. */
const policy_rule *policy_match(const policy *p, const char *key, size_t keylen)
{
    const policy_rule *best = NULL;
    for (size_t i = 0; p != NULL && i < p->n; i++) {
        const policy_rule *r = &p->rules[i];
        if (r->prefix_len <= keylen && (best == NULL || r->prefix_len > best->prefix_len) &&
            memcmp(key, r->prefix, r->prefix_len) == 0)
            best = r;
    }
    return best;
}

int policy_exempt_user(const policy *p, const char *user, size_t len)
{
    for (size_t i = 0; p != NULL && i < p->nusers; i++)
        if (p->users[i].len == len && memcmp(p->users[i].name, user, len) == 0) return 1;
    return 0;
}

/* 1 when addr (of family) is in one of p's networks of that family. */
static int in_nets(const policy *p, int family, const unsigned char *addr)
{
    for (size_t i = 0; i < p->nnets; i++)
        if (p->nets[i].family == family && same_bits(p->nets[i].addr, addr, p->nets[i].bits))
            return 1;
    return 0;
}

int policy_exempt_ip(const policy *p, const char *ip, size_t len)
{
    static const unsigned char v4mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    unsigned char addr[16];
    int family;

    if (p == NULL || p->nnets == 0 || ip == NULL) return 0;
    if (len >= 2 && ip[0] == '[' && ip[len - 1] == ']') {
        ip++;
        len -= 2;
    }
    const char *zone = memchr(ip, '%', len);
    if (zone != NULL) len = (size_t)(zone - ip);
    if (parse_ip(ip, len, &family, addr) < 0) return 0;
    if (in_nets(p, family, addr)) return 1;
    return family == AF_INET6 && memcmp(addr, v4mapped, sizeof v4mapped) == 0 &&
           in_nets(p, AF_INET, addr + sizeof v4mapped);
}

/* Writes a duration in the largest unit that keeps it exact ("30s", "5m", "250ms"). */
static void print_duration(FILE *out, long long ms)
{
    if (ms % 3600000 == 0) fprintf(out, "%lldh", ms / 3600000);
    else if (ms % 60000 == 0) fprintf(out, "%lldm", ms / 60000);
    else if (ms % 1000 == 0) fprintf(out, "%llds", ms / 1000);
    else fprintf(out, "%lldms", ms);
}

/* print_duration(), or "none" for 0. */
static void print_duration_or_none(FILE *out, long long ms)
{
    if (ms > 0) print_duration(out, ms);
    else fputs("none", out);
}

void policy_print(const policy *p, FILE *out)
{
    for (size_t i = 0; i < policy_count(p); i++) {
        const policy_rule *r = &p->rules[i];
        fputs("rule ", out);
        lp_tok_write(out, r->prefix, r->prefix_len);
        fprintf(out, " %s ttl=", policy_mode_name(r->mode));
        print_duration(out, r->ttl_ms);
        fputs(" max-ttl=", out);
        print_duration_or_none(out, r->max_ttl_ms);
        fprintf(out, " owner=%s renew=%s max-hold=", policy_owner_name(r->owner),
                policy_renew_name(r->renew));
        print_duration_or_none(out, r->max_hold_ms);
        fputc('\n', out);
    }
    for (size_t i = 0; p != NULL && i < p->nusers; i++) {
        fputs("exempt user ", out);
        lp_tok_write(out, p->users[i].name, p->users[i].len);
        fputc('\n', out);
    }
    for (size_t i = 0; p != NULL && i < p->nnets; i++) {
        char net[80];
        format_net(&p->nets[i], net, sizeof net);
        fprintf(out, "exempt addr %s\n", net);
    }
}

/* ---- warnings ---- */

/* Text appended with snprintf semantics: len counts all of it, buf holds what fits. */
typedef struct text {
    char *buf;
    size_t cap, len;
} text;

static void text_printf(text *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void text_printf(text *t, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int room = t->len < t->cap;
    int n = vsnprintf(room ? t->buf + t->len : NULL, room ? t->cap - t->len : 0, fmt, ap);
    va_end(ap);
    if (n > 0) t->len += (size_t)n;
}

/* Appends the warnings about rule r. */
static void rule_warnings(const policy *p, const policy_rule *r, text *t)
{
    const char *glob = NULL;
    for (size_t i = 0; i < r->prefix_len && glob == NULL; i++)
        if (r->prefix[i] == '*' || r->prefix[i] == '?' || r->prefix[i] == '[') glob = &r->prefix[i];
    if (glob != NULL)
        text_printf(t, "%s:%d: warning: prefix '%s' holds '%c', which is matched literally "
                       "(prefixes are not globs)\n", p->name, r->line, r->prefix, *glob);
    if (r->renew == POLICY_RENEW_OFF && r->max_hold_ms > 0)
        text_printf(t, "%s:%d: warning: prefix '%s': max-hold has no effect with renew=off\n",
                    p->name, r->line, r->prefix);
}

/* Appends the warnings about an exempt network. */
static void net_warnings(const policy *p, const exempt_net *net, text *t)
{
    int v4 = net->family == AF_INET;
    if (net->bits == 0)
        text_printf(t, "%s:%d: warning: exempt addr %s exempts every %s client\n", p->name,
                    net->line, v4 ? "0.0.0.0/0" : "::/0", v4 ? "IPv4" : "IPv6");
}

/* The warnings in line order: the rules and the networks are each in file order. */
size_t policy_warnings(const policy *p, char *buf, size_t cap)
{
    text t = {buf, cap, 0};
    size_t i = 0, j = 0;

    if (cap > 0) buf[0] = '\0';
    while (p != NULL && (i < p->n || j < p->nnets)) {
        if (j == p->nnets || (i < p->n && p->rules[i].line < p->nets[j].line))
            rule_warnings(p, &p->rules[i++], &t);
        else
            net_warnings(p, &p->nets[j++], &t);
    }
    return t.len;
}
