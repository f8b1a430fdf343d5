/* Audit log events: one JSON object per line (ts, event, mode, action, rule, key, client,
 * detail, and client_name, held_ms, token_hash, suppressed when they apply), and a rate
 * limiter so that a hot loop cannot flood the disk. Formatting only, no I/O; the writer is
 * proxy/auditlog.c. */
#ifndef LP_AUDIT_H
#define LP_AUDIT_H

#include <stddef.h>
#include <stdint.h>

typedef struct audit_event {
    const char *event;          /* setnx_no_ttl, del_unchecked, late_release, ... */
    const char *mode;           /* enforce or audit */
    const char *action;         /* rewritten, refused, forwarded */
    const char *rule;           /* the rule's prefix (binary) */
    size_t rule_len;
    const char *key;            /* binary */
    size_t key_len;
    const char *client;         /* "ip:port" (NUL-terminated) */
    const char *client_name;    /* NULL when not set */
    size_t client_name_len;
    const char *detail;         /* free text, may be NULL */
    long long held_ms;          /* < 0: absent */
    const char *token;          /* the lock token: logged only as a hash; NULL: absent */
    size_t token_len;
} audit_event;

/* How much of each string field is shown, in bytes of escaped JSON text (between the
 * quotes). A longer field is cut at a character boundary and ends with "…" (U+2026). */
#define AUDIT_SHOW_KEY     512      /* key, detail */
#define AUDIT_SHOW_NAME    256      /* rule, client, client_name */
#define AUDIT_SHOW_WORD    64       /* event, mode, action */

/* A buffer of this size always holds a formatted line, whatever the event's contents. */
#define AUDIT_LINE_MAX     4096

/* Writes one JSON object and '\n' for e into buf:
 *   {"ts":"2026-11-23T10:00:00.123Z","event":..,"mode":..,"action":..,"rule":..,"key":..,
 *    "client":..,"client_name":.. (when set),"detail":..,"held_ms":N (when >= 0),
 *    "token_hash":"<16 hex>" (when a token is given),"suppressed":N (when N > 0)}
 * wall_ms is the time in ms since the epoch (UTC; clamped to years 1970..9999). NULL strings
 * are written as "". Bytes are escaped so that the line is always valid JSON and UTF-8: the
 * usual \" \\ \n \r \t \b \f, other controls and 0x7f as \u00XX, and every byte that is not
 * part of a valid UTF-8 sequence as \u00XX of its value. Adds a NUL after the '\n' when there
 * is room (not counted). Returns the line's length, or 0 when cap is too small for it (buf is
 * then left with unspecified contents but never written past cap). */
size_t audit_format(const audit_event *e, int64_t wall_ms, uint64_t suppressed, char *buf, size_t cap);

/* Writes wall_ms as RFC 3339 UTC with milliseconds, "YYYY-MM-DDTHH:MM:SS.mmmZ", and a NUL
 * into out (24 characters). Returns 24. */
size_t audit_format_time(int64_t wall_ms, char out[25]);

/* The short hash lock tokens are logged as: 16 lowercase hex digits of 64-bit FNV-1a, and a
 * NUL. It lets a reader match an acquire to its release; it is not a secret-keeping hash, so
 * a guessable token stays guessable. */
void audit_token_hash(const void *token, size_t len, char out[17]);

/* ---- rate limiting ----
 * Identical events (same event, rule, key, and client IP, i.e. client without ":port") are
 * logged once per window: the first occurrence opens a window of window_ms, the ones after
 * it inside the window are suppressed and counted. The count is reported on the next logged
 * occurrence of that identity, or by audit_limiter_flush() once the window is over.
 * At most max_tracked identities are remembered; when full, the one whose window opened
 * first is forgotten (its pending count moves to a global count that flush reports).
 * Memory: about 100 bytes plus up to AUDIT_SHOW_KEY bytes of key per identity. */
typedef struct audit_limiter audit_limiter;

/* Returns NULL when out of memory. max_tracked 0 is taken as 1. */
audit_limiter *audit_limiter_new(int64_t window_ms, size_t max_tracked);
/* Accepts NULL. */
void audit_limiter_free(audit_limiter *l);

/* Returns 1 when e should be logged now, with *suppressed set to the number of identical
 * events left out since the previous logged one of the same identity (0 when none); returns
 * 0 when e is suppressed (and counted). now_ms is a monotonic clock. A NULL limiter, or no
 * memory to track a new identity, logs everything. O(1) average. */
int audit_limiter_check(audit_limiter *l, const audit_event *e, int64_t now_ms, uint64_t *suppressed);

/* Called by audit_limiter_flush() once per summary line; e and its strings are valid only
 * during the call. */
typedef void (*audit_emit_fn)(void *ud, const audit_event *e, uint64_t suppressed);

/* Forgets every identity whose window is over at now_ms, and for each that has suppressed
 * events calls emit with a summary event: the identity's event, rule and key, its client IP
 * as client, the mode and action of its last logged occurrence, detail "rate-limited", and
 * the count as suppressed. Counts of identities forgotten for lack of room are reported as
 * one event "audit_suppressed" (empty rule and key). emit may be NULL (counts are dropped).
 * Meant for a periodic timer; costs O(identities forgotten). Returns the number of summaries. */
size_t audit_limiter_flush(audit_limiter *l, int64_t now_ms, audit_emit_fn emit, void *ud);

/* The same for every identity, whether its window is over or not: for shutdown, so that
 * every suppressed event is counted in the log before it closes (the logged occurrences of
 * an identity plus the suppressed counts of its lines add up to the events it had). Leaves
 * the limiter empty. Returns the number of summaries. */
size_t audit_limiter_flush_all(audit_limiter *l, audit_emit_fn emit, void *ud);

/* Number of identities tracked now. */
size_t audit_limiter_count(const audit_limiter *l);

/* ---- once per window ----
 * A bounded set of recently seen keys, for an event worth logging once per key and window
 * rather than once per occurrence (script_lock, keyed by script SHA1 + rule + client IP, once
 * an hour). A key's first check opens a window of window_ms and answers 1; checks inside the
 * window answer 0; the first check after it answers 1 and opens a new window. Keys are
 * compared as bytes (any length, NUL bytes included) and copied.
 * At most max_entries keys are remembered: when full, the key whose window opened first is
 * forgotten, so under a flood of distinct keys a key can be reported again before its window
 * is over, never less often. Keys whose window is over are forgotten as later checks pass
 * them. Memory: about 64 bytes plus the key's length per key remembered. */
typedef struct audit_once audit_once;

/* Returns NULL when out of memory. max_entries 0 is taken as 1. */
audit_once *audit_once_new(size_t max_entries, int64_t window_ms);
/* Accepts NULL. */
void audit_once_free(audit_once *o);

/* 1 when key[0..len) has not been seen within the window ending at now_ms (a monotonic
 * clock; one that went back ends the window), 0 when it has. A NULL table, or no memory to
 * remember a new key, answers 1. O(1) average. */
int audit_once_check(audit_once *o, const void *key, size_t len, int64_t now_ms);

/* Number of keys remembered now. */
size_t audit_once_count(const audit_once *o);

#endif
