/* Lock policy: parsing the policy file (one "rule PREFIX MODE [ttl=DUR] [max-ttl=DUR]
 * [owner=SCOPE]" per line, '#' comments), longest-prefix match, printing. */
#include "policy/policy.h"
#include "common/tokens.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define DEFAULT_TTL_MS 30000

struct policy {
    policy_rule *rules;         /* in file order */
    size_t n, cap;
};

const char *policy_mode_name(policy_mode m)
{
    return m == POLICY_ENFORCE ? "enforce" : m == POLICY_AUDIT ? "audit" : "off";
}

const char *policy_owner_name(policy_owner o)
{
    return o == POLICY_OWNER_CLIENT_ADDR ? "client-addr"
         : o == POLICY_OWNER_CLIENT_NAME ? "client-name" : "connection";
}

/* ---- rules ---- */

/* Parses the value of the option token opt ("ttl=30s") as a positive duration into *ms;
 * with allow_none, "none" gives 0. Returns 0 or -1 with the error in w->err. */
static int option_duration(const lp_tok_where *w, const char *opt, const char *v,
                           int allow_none, long long *ms)
{
    if (allow_none && strcasecmp(v, "none") == 0) {
        *ms = 0;
        return 0;
    }
    if ((*ms = lp_tok_parse_duration_ms(v)) < 0)
        return lp_tok_fail(w, "bad duration in '%s' (expected milliseconds, or e.g. 250ms, 30s, 5m, 1h%s)",
                           opt, allow_none ? ", or none" : "");
    if (*ms == 0) return lp_tok_fail(w, "'%s': the duration must be greater than zero", opt);
    return 0;
}

/* Parses one line into *r (prefix pointing into buf, which has room for the line's tokens
 * and their NULs). Returns 1 for a rule, 0 for a blank or comment line, -1 on error. */
static int parse_rule(const lp_tok_where *w, const char *s, const char *end, char *buf,
                      policy_rule *r)
{
    const char *ttl_tok = NULL, *max_tok = NULL, *owner_tok = NULL;
    char *tok;
    size_t len = 0;
    int rc;

    if ((rc = lp_tok_next_word(w, &s, end, buf, &len)) <= 0) return rc;
    if (strcasecmp(buf, "rule") != 0)
        return lp_tok_fail(w, "unknown directive '%s' (expected 'rule')", buf);
    buf += len + 1;

    if ((rc = lp_tok_next(w, &s, end, buf, &len)) < 0) return -1;
    if (rc == 0) return lp_tok_fail(w, "missing prefix after 'rule'");
    if (len == 0) return lp_tok_fail(w, "empty prefix");
    buf[len] = '\0';
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
    r->owner = POLICY_OWNER_CONNECTION;
    while ((rc = lp_tok_next_word(w, &s, end, buf, &len)) > 0) {
        tok = buf;
        buf += len + 1;
        char *eq = strchr(tok, '=');
        size_t klen = eq ? (size_t)(eq - tok) : len;
        const char **seen = klen == 3 && strncasecmp(tok, "ttl", 3) == 0 ? &ttl_tok
                          : klen == 7 && strncasecmp(tok, "max-ttl", 7) == 0 ? &max_tok
                          : klen == 5 && strncasecmp(tok, "owner", 5) == 0 ? &owner_tok : NULL;
        if (seen == NULL)
            return lp_tok_fail(w, "unknown option '%s' (expected ttl=, max-ttl= or owner=)", tok);
        if (*seen != NULL) return lp_tok_fail(w, "repeated option '%s'", tok);
        if (eq == NULL) return lp_tok_fail(w, "option '%s' needs a value, as in %s=...", tok, tok);
        *seen = tok;
        if (seen == &ttl_tok) {
            if (option_duration(w, tok, eq + 1, 0, &r->ttl_ms) < 0) return -1;
        } else if (seen == &max_tok) {
            if (option_duration(w, tok, eq + 1, 1, &r->max_ttl_ms) < 0) return -1;
        } else if (strcasecmp(eq + 1, "connection") == 0) r->owner = POLICY_OWNER_CONNECTION;
        else if (strcasecmp(eq + 1, "client-addr") == 0) r->owner = POLICY_OWNER_CLIENT_ADDR;
        else if (strcasecmp(eq + 1, "client-name") == 0) r->owner = POLICY_OWNER_CLIENT_NAME;
        else return lp_tok_fail(w, "bad owner in '%s' (expected connection, client-addr or client-name)", tok);
    }
    if (rc < 0) return -1;
    if (r->max_ttl_ms > 0 && r->ttl_ms > r->max_ttl_ms) {
        if (ttl_tok != NULL)
            return lp_tok_fail(w, "'%s' is longer than '%s'", ttl_tok, max_tok);
        r->ttl_ms = r->max_ttl_ms;      /* the default lease never exceeds the cap */
    }
    r->line = w->line;
    return 1;
}

/* Appends a copy of r (its prefix in scratch memory) unless its prefix is already taken. */
static int add_rule(policy *p, const lp_tok_where *w, const policy_rule *r)
{
    for (size_t i = 0; i < p->n; i++)
        if (p->rules[i].prefix_len == r->prefix_len &&
            memcmp(p->rules[i].prefix, r->prefix, r->prefix_len) == 0)
            return lp_tok_fail(w, "duplicate prefix '%s' (first at line %d)", r->prefix, p->rules[i].line);
    if (p->n == p->cap) {
        size_t cap = p->cap ? p->cap * 2 : 8;
        policy_rule *nr = realloc(p->rules, cap * sizeof *nr);
        if (nr == NULL) return lp_tok_fail(w, "out of memory");
        p->rules = nr;
        p->cap = cap;
    }
    char *prefix = malloc(r->prefix_len + 1);
    if (prefix == NULL) return lp_tok_fail(w, "out of memory");
    memcpy(prefix, r->prefix, r->prefix_len + 1);
    p->rules[p->n] = *r;
    p->rules[p->n++].prefix = prefix;
    return 0;
}

/* Parses text line by line ('\n' or "\r\n" ends a line; the last may lack it). The scratch
 * buffer holds one line's decoded tokens: they never take more room than the line. */
policy *policy_parse(const char *text, size_t len, const char *name, char *err, size_t errlen)
{
    lp_tok_where w = {name, 0, err, errlen};
    policy *p = calloc(1, sizeof *p);
    char *scratch = malloc(len + 1);
    const char *s = text, *end = text + len;

    if (p == NULL || scratch == NULL) {
        snprintf(err, errlen, "%s: out of memory", name);
        goto fail;
    }
    while (s < end) {
        const char *eol = memchr(s, '\n', (size_t)(end - s));
        policy_rule r;
        int rc;
        if (eol == NULL) eol = end;
        w.line++;
        rc = parse_rule(&w, s, eol > s && eol[-1] == '\r' ? eol - 1 : eol, scratch, &r);
        if (rc < 0 || (rc > 0 && add_rule(p, &w, &r) < 0)) goto fail;
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
    free(p->rules);
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

/* Writes a duration in the largest unit that keeps it exact ("30s", "5m", "250ms"). */
static void print_duration(FILE *out, long long ms)
{
    if (ms % 3600000 == 0) fprintf(out, "%lldh", ms / 3600000);
    else if (ms % 60000 == 0) fprintf(out, "%lldm", ms / 60000);
    else if (ms % 1000 == 0) fprintf(out, "%llds", ms / 1000);
    else fprintf(out, "%lldms", ms);
}

/* Writes a prefix as a token that parses back to the same bytes: bare when it has only
 * printable non-blank bytes (or UTF-8) and no '"', '\\' or '#'; quoted otherwise, with
 * \" \\ and \xHH for control bytes. */
static void print_prefix(FILE *out, const char *s, size_t n)
{
    int quote = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch <= ' ' || ch == 0x7f || ch == '"' || ch == '\\' || ch == '#') quote = 1;
    }
    if (!quote) {
        fwrite(s, 1, n, out);
        return;
    }
    fputc('"', out);
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch == '"' || ch == '\\') fprintf(out, "\\%c", ch);
        else if (ch < ' ' || ch == 0x7f) fprintf(out, "\\x%02x", ch);
        else fputc(ch, out);
    }
    fputc('"', out);
}

void policy_print(const policy *p, FILE *out)
{
    for (size_t i = 0; i < policy_count(p); i++) {
        const policy_rule *r = &p->rules[i];
        fputs("rule ", out);
        print_prefix(out, r->prefix, r->prefix_len);
        fprintf(out, " %s ttl=", policy_mode_name(r->mode));
        print_duration(out, r->ttl_ms);
        fputs(" max-ttl=", out);
        if (r->max_ttl_ms > 0) print_duration(out, r->max_ttl_ms);
        else fputs("none", out);
        fprintf(out, " owner=%s\n", policy_owner_name(r->owner));
    }
}
