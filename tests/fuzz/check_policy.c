/* The policy check (lpf_check_policy, see checks.h). */
#define _GNU_SOURCE
#include "check_util.h"

#include "policy/policy.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* policy_print() into a malloc'd string. */
static char *print_policy(const policy *p, size_t *len)
{
    char *text = NULL;
    FILE *f = open_memstream(&text, len);
    if (f == NULL)
        abort();
    policy_print(p, f);
    if (fclose(f) != 0)
        abort();
    return text;
}

static int check_rules(const policy *p)
{
    int prev_line = 0;
    for (size_t i = 0; i < policy_count(p); i++) {
        const policy_rule *r = policy_rule_at(p, i);
        if (r == NULL || r->prefix == NULL || r->prefix_len == 0 || r->prefix[r->prefix_len] != '\0')
            return fail("policy: rule %zu has no proper prefix", i);
        if (r->mode != POLICY_OFF && r->mode != POLICY_AUDIT && r->mode != POLICY_ENFORCE)
            return fail("policy: rule %zu has mode %d", i, (int)r->mode);
        if (r->owner != POLICY_OWNER_AUTO && r->owner != POLICY_OWNER_CONNECTION &&
            r->owner != POLICY_OWNER_CLIENT_ADDR && r->owner != POLICY_OWNER_CLIENT_NAME)
            return fail("policy: rule %zu has owner %d", i, (int)r->owner);
        if (r->renew != POLICY_RENEW_AUTO && r->renew != POLICY_RENEW_ALWAYS &&
            r->renew != POLICY_RENEW_OFF)
            return fail("policy: rule %zu has renew %d", i, (int)r->renew);
        if (r->max_hold_ms < 0)
            return fail("policy: rule %zu has max-hold %lld", i, r->max_hold_ms);
        size_t rl = strlen(POLICY_RECORD_PREFIX), n = r->prefix_len < rl ? r->prefix_len : rl;
        if (memcmp(r->prefix, POLICY_RECORD_PREFIX, n) == 0)
            return fail("policy: rule %zu's prefix could match the lease records", i);
        if (r->ttl_ms <= 0 || r->max_ttl_ms < 0 || (r->max_ttl_ms > 0 && r->ttl_ms > r->max_ttl_ms))
            return fail("policy: rule %zu has ttl %lld, max-ttl %lld", i, r->ttl_ms, r->max_ttl_ms);
        if (r->line <= prev_line)
            return fail("policy: rule %zu at line %d after line %d", i, r->line, prev_line);
        prev_line = r->line;
        for (size_t j = 0; j < i; j++) {
            const policy_rule *o = policy_rule_at(p, j);
            if (o->prefix_len == r->prefix_len && memcmp(o->prefix, r->prefix, r->prefix_len) == 0)
                return fail("policy: rules %zu and %zu have the same prefix", j, i);
        }
    }
    return 0;
}

/* policy_match() against a brute-force longest prefix. */
static int check_match(const policy *p, const char *key, size_t keylen)
{
    const policy_rule *best = NULL;
    for (size_t i = 0; i < policy_count(p); i++) {
        const policy_rule *r = policy_rule_at(p, i);
        if (r->prefix_len <= keylen && memcmp(key, r->prefix, r->prefix_len) == 0 &&
            (best == NULL || r->prefix_len > best->prefix_len))
            best = r;
    }
    if (policy_match(p, key, keylen) != best)
        return fail("policy: policy_match() is not the longest prefix for a %zu-byte key", keylen);
    return 0;
}

int lpf_check_policy(const uint8_t *data, size_t size)
{
    static const char name[] = "fuzz.policy";
    char err[512] = "";
    int rc = 0;

    /* The parser takes a length: give it a copy with nothing after it. */
    char *text = xmalloc(size);
    memcpy(text, data, size);
    policy *p = policy_parse(text, size, name, err, sizeof(err));
    if (p == NULL) {
        rc = check_where("policy", err, name, count_lines(data, size));
        free(text);
        return rc;
    }
    rc = check_rules(p);

    size_t len1 = 0, len2 = 0;
    char *out1 = NULL, *out2 = NULL;
    policy *p2 = NULL;
    if (rc == 0) {
        out1 = print_policy(p, &len1);
        p2 = policy_parse(out1, len1, "printed", err, sizeof(err));
        if (p2 == NULL)
            rc = fail("policy: the printed policy does not parse: %s", err);
    }
    if (rc == 0 && policy_count(p2) != policy_count(p))
        rc = fail("policy: %zu rules printed, %zu parsed back", policy_count(p), policy_count(p2));
    for (size_t i = 0; rc == 0 && i < policy_count(p); i++) {
        const policy_rule *a = policy_rule_at(p, i), *b = policy_rule_at(p2, i);
        if (a->prefix_len != b->prefix_len || memcmp(a->prefix, b->prefix, a->prefix_len) != 0 ||
            a->mode != b->mode || a->ttl_ms != b->ttl_ms || a->max_ttl_ms != b->max_ttl_ms ||
            a->owner != b->owner || a->renew != b->renew || a->max_hold_ms != b->max_hold_ms)
            rc = fail("policy: rule %zu changed when printed and parsed back", i);
    }
    if (rc == 0) {
        out2 = print_policy(p2, &len2);
        if (len1 != len2 || memcmp(out1, out2, len1) != 0)
            rc = fail("policy: printing the parsed-back policy gives other text");
    }
    for (size_t i = 0; rc == 0 && i < policy_count(p); i++) {
        const policy_rule *r = policy_rule_at(p, i);
        if (policy_match(p, r->prefix, r->prefix_len) != r)
            rc = fail("policy: rule %zu does not match its own prefix", i);
        else if ((rc = check_match(p, r->prefix, r->prefix_len - 1)) == 0) {
            char key[300];
            size_t k = r->prefix_len < 200 ? r->prefix_len : 200;
            memcpy(key, r->prefix, k);
            memcpy(key + k, "x:y", 3);
            rc = check_match(p, key, k + 3);
        }
    }
    if (rc == 0)
        rc = check_match(p, (const char *)data, size < 64 ? size : 64);
    if (rc == 0) {
        /* The warnings: snprintf semantics; the exemption lookups on the raw input. */
        size_t need = policy_warnings(p, NULL, 0);
        char *w = xmalloc(need + 1);
        if (policy_warnings(p, w, need + 1) != need || strlen(w) != need)
            rc = fail("policy: policy_warnings() gives %zu bytes, then %zu", need, strlen(w));
        free(w);
        size_t k = size < 64 ? size : 64;
        (void)policy_exempt_user(p, (const char *)data, k);
        (void)policy_exempt_ip(p, (const char *)data, k);
    }
    free(out1);
    free(out2);
    policy_free(p2);
    policy_free(p);
    free(text);
    return rc;
}
