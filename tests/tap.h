/* A small TAP producer for lockproxy's tests (Debian ships no C TAP library).
 *
 * Each test program prints a plan, then one "ok N - name" or "not ok N - name" line per
 * assertion, and exits non-zero when any assertion failed or the plan was not met, so that
 * prove(1) reports it. Diagnostics go to stderr prefixed with "# ". */
#ifndef LP_TAP_H
#define LP_TAP_H

#include <stddef.h>

void plan(int n);
void plan_lazy(void);            /* the plan is printed at exit: "1..N" */
void skip_all(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
void bail_out(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
void diag(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void skip(int n, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

int ok(int cond, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int is_int(long long got, long long want, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
int is_string(const char *got, const char *want, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* Compares two byte strings; on mismatch prints the first differing offset and both
 * sides around it, escaped. */
int is_bytes(const void *got, size_t gotlen, const void *want, size_t wantlen,
             const char *fmt, ...) __attribute__((format(printf, 5, 6)));

/* Number of failed assertions so far. */
int tap_failures(void);

#endif
