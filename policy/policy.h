/* Lock policy: the rules of the policy file (one "rule PREFIX MODE [ttl=DUR] [max-ttl=DUR]
 * [owner=SCOPE]" per line) and the longest-prefix match that decides whether a key is a
 * lock key and which rule governs it. No sockets here. */
#ifndef LP_POLICY_H
#define LP_POLICY_H

#include <stddef.h>
#include <stdio.h>

typedef enum { POLICY_OFF, POLICY_AUDIT, POLICY_ENFORCE } policy_mode;
typedef enum { POLICY_OWNER_AUTO, POLICY_OWNER_CONNECTION, POLICY_OWNER_CLIENT_ADDR, POLICY_OWNER_CLIENT_NAME } policy_owner;
typedef enum { POLICY_RENEW_AUTO, POLICY_RENEW_ALWAYS, POLICY_RENEW_OFF } policy_renew;

/* Where lockproxy keeps its lease records; no rule prefix may match it. */
#define POLICY_RECORD_PREFIX "__lockproxy:"

typedef struct policy_rule {
    char *prefix;
    size_t prefix_len;
    policy_mode mode;
    long long ttl_ms;          /* lease for locks acquired without a TTL; default 30000 */
    long long max_ttl_ms;      /* cap on any TTL set on a lock key; 0: none */
    policy_owner owner;        /* default connection */
    policy_renew renew;
    long long max_hold_ms;
    int line;                  /* line in the policy file */
} policy_rule;

typedef struct policy policy;

/* Parses policy text. name is used in messages ("FILE:LINE: message"). Returns NULL with the
 * message in err when the text has an error; an empty text gives an empty policy. */
policy *policy_parse(const char *text, size_t len, const char *name, char *err, size_t errlen);
/* Reads and parses a file. */
policy *policy_load(const char *path, char *err, size_t errlen);
void policy_free(policy *p);

size_t policy_count(const policy *p);
const policy_rule *policy_rule_at(const policy *p, size_t i);
/* The rule whose prefix is the longest prefix of key, or NULL: an ordinary key. */
const policy_rule *policy_match(const policy *p, const char *key, size_t keylen);
/* Prints the rules as understood, one per line, in the file's syntax (for --check). */
void policy_print(const policy *p, FILE *out);

const char *policy_mode_name(policy_mode m);
const char *policy_owner_name(policy_owner o);

#endif
