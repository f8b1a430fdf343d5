/* Audit log events (SPEC section 7): one JSON object per line, and a rate limiter so that a
 * hot loop cannot flood the disk. Formatting only; the writer is proxy/auditlog.c. */
#ifndef LP_AUDIT_H
#define LP_AUDIT_H

#include <stddef.h>
#include <stdint.h>

typedef struct audit_event {
    const char *event;          /* setnx_no_ttl, del_unchecked, late_release, ... */
    const char *mode;           /* enforce or audit */
    const char *action;         /* rewritten, refused, forwarded */
    const char *rule;           /* the rule's prefix */
    size_t rule_len;
    const char *key;
    size_t key_len;
    const char *client;         /* ip:port */
    const char *client_name;    /* NULL when not set */
    size_t client_name_len;
    const char *detail;         /* free text, may be NULL */
    long long held_ms;          /* < 0: absent */
    const char *token;          /* the lock token: logged only as a hash; NULL: absent */
    size_t token_len;
} audit_event;

/* Writes one JSON line (ending in '\n') for e into buf. wall_ms is the time (ms since the
 * epoch); suppressed, when not 0, is the number of identical events left out before this one.
 * Binary keys and names are escaped so the line is valid JSON and UTF-8; long ones are cut.
 * Returns the length, or 0 when cap is too small. */
size_t audit_format(const audit_event *e, int64_t wall_ms, uint64_t suppressed, char *buf, size_t cap);

/* The short hash lock tokens are logged as: 16 hex digits of 64-bit FNV-1a. */
void audit_token_hash(const void *token, size_t len, char out[17]);

typedef struct audit_limiter audit_limiter;

/* Identical events (same event, rule, key and client IP) are logged once per window_ms;
 * at most max_tracked identities are remembered at a time. */
audit_limiter *audit_limiter_new(int64_t window_ms, size_t max_tracked);
void audit_limiter_free(audit_limiter *l);
/* Returns 1 when e should be logged now (with *suppressed the count left out since the last
 * one of its kind), 0 when it is suppressed and counted. */
int audit_limiter_check(audit_limiter *l, const audit_event *e, int64_t now_ms, uint64_t *suppressed);

#endif
