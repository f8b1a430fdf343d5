/* Lock policy: the policy file and the decisions that need no socket: whether a key is a
 * lock key and which rule governs it (longest-prefix match), and whether a client is exempt.
 *
 * Syntax, one directive per line, '#' starts a comment, a token may be double-quoted with
 * \" \\ and \xHH escapes:
 *
 *   rule PREFIX MODE [ttl=DUR] [max-ttl=DUR|none] [owner=auto|connection|client-addr|client-name]
 *                    [renew=auto|always|off] [max-hold=DUR|none]
 *   exempt user NAME      ACL user whose lock commands pass unchecked (exact, case-sensitive)
 *   exempt addr CIDR      client addresses whose lock commands pass unchecked: a.b.c.d/n,
 *                         x::y/n, or a bare address (/32, /128)
 *
 * MODE is enforce, audit or off. DUR needs a unit: 250ms, 30s, 5m, 1h (a bare number is an
 * error). Keywords and units are case-insensitive; prefixes and user names are not. A prefix
 * that could match the lease records (POLICY_RECORD_PREFIX) is an error; one holding '*', '?'
 * or '[' is matched literally and draws a warning (policy_warnings). */
#ifndef LP_POLICY_H
#define LP_POLICY_H

#include <stddef.h>
#include <stdio.h>

/* The namespace of the lease records kept in Redis beside the locks (see policy/lock.h). */
#define POLICY_RECORD_PREFIX "__lockproxy:"

typedef enum { POLICY_OFF, POLICY_AUDIT, POLICY_ENFORCE } policy_mode;
typedef enum {
    POLICY_OWNER_AUTO,          /* the application instance (default) */
    POLICY_OWNER_CONNECTION,
    POLICY_OWNER_CLIENT_ADDR,
    POLICY_OWNER_CLIENT_NAME
} policy_owner;
typedef enum {
    POLICY_RENEW_AUTO,          /* renew locks taken without a TTL (default) */
    POLICY_RENEW_ALWAYS,        /* also those taken with the client's own TTL */
    POLICY_RENEW_OFF
} policy_renew;

typedef struct policy_rule {
    char *prefix;              /* NUL-terminated; may hold NUL bytes before prefix_len */
    size_t prefix_len;
    policy_mode mode;
    long long ttl_ms;          /* lease for locks acquired without a TTL; default 30000 */
    long long max_ttl_ms;      /* cap on any TTL set on a lock key; 0: none */
    policy_owner owner;        /* default auto */
    policy_renew renew;        /* default auto */
    long long max_hold_ms;     /* stop renewing after this long; 0 (default): none */
    int line;                  /* line in the policy file */
} policy_rule;

typedef struct policy policy;

/* Parses policy text. name is used in messages ("FILE:LINE: message") and kept for
 * policy_warnings(). Returns NULL with the message in err when the text has an error; an
 * empty text gives an empty policy. */
policy *policy_parse(const char *text, size_t len, const char *name, char *err, size_t errlen);
/* Reads and parses a file. */
policy *policy_load(const char *path, char *err, size_t errlen);
void policy_free(policy *p);

size_t policy_count(const policy *p);
const policy_rule *policy_rule_at(const policy *p, size_t i);
/* The rule whose prefix is the longest prefix of key, or NULL: an ordinary key. */
const policy_rule *policy_match(const policy *p, const char *key, size_t keylen);

/* 1 when user[0..len) is named by an "exempt user" line (bytes compared exactly), else 0. */
int policy_exempt_user(const policy *p, const char *user, size_t len);
/* 1 when the client IP ip[0..len) falls in an "exempt addr" network, else 0. ip is textual,
 * as the proxy formats it: "127.0.0.1", "::1" or "[::1]" (a "%zone" suffix is ignored); an
 * IPv4-mapped IPv6 address (::ffff:a.b.c.d) is also tested against the IPv4 networks.
 * Anything else ("unix", "?") is never exempt. */
int policy_exempt_ip(const policy *p, const char *ip, size_t len);

/* Prints the rules as understood, one per line, in the file's syntax, then the exempt lines
 * (for --check). Its output parses back to the same policy. */
void policy_print(const policy *p, FILE *out);
/* Writes the policy's warnings into buf, one "NAME:LINE: warning: message\n" per line (as
 * snprintf: truncated to cap, NUL-terminated when cap > 0). Returns the length of the whole
 * text, 0 when there is nothing to warn about; buf may be NULL when cap is 0. Warned: a
 * prefix holding '*', '?' or '[' (matched literally), max-hold with renew=off. */
size_t policy_warnings(const policy *p, char *buf, size_t cap);

const char *policy_mode_name(policy_mode m);
const char *policy_owner_name(policy_owner o);
const char *policy_renew_name(policy_renew r);

#endif
