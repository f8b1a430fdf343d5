#include "tap.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
#include <string.h>

static int tap_planned = -1;   /* -1: no plan yet, -2: lazy plan */
static int tap_run;
static int tap_failed;
static int tap_registered;

static void tap_atexit(void)
{
    fflush(stdout);
    if (tap_planned == -2) {
        printf("1..%d\n", tap_run);
    } else if (tap_planned >= 0 && tap_planned != tap_run) {
        fprintf(stderr, "# planned %d tests but ran %d\n", tap_planned, tap_run);
    }
    fflush(stdout);
    if (tap_failed > 0 || (tap_planned >= 0 && tap_planned != tap_run))
        _exit(tap_failed > 0 && tap_failed < 255 ? tap_failed : 255);
}

static void tap_register(void)
{
    if (!tap_registered) {
        tap_registered = 1;
        setvbuf(stdout, NULL, _IOLBF, 0);
        atexit(tap_atexit);
    }
}

void plan(int n)
{
    tap_register();
    tap_planned = n;
    printf("1..%d\n", n);
}

void plan_lazy(void)
{
    tap_register();
    tap_planned = -2;
}

void skip_all(const char *fmt, ...)
{
    va_list ap;
    printf("1..0 # SKIP ");
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    printf("\n");
    fflush(stdout);
    _exit(0);
}

void bail_out(const char *fmt, ...)
{
    va_list ap;
    printf("Bail out! ");
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    printf("\n");
    fflush(stdout);
    _exit(255);
}

void diag(const char *fmt, ...)
{
    va_list ap;
    fflush(stdout);
    fprintf(stderr, "# ");
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\n");
}

static int tap_result(int cond, const char *fmt, va_list ap)
{
    tap_register();
    tap_run++;
    if (!cond) tap_failed++;
    printf("%sok %d - ", cond ? "" : "not ", tap_run);
    vprintf(fmt, ap);
    printf("\n");
    return cond;
}

void skip(int n, const char *fmt, ...)
{
    va_list ap;
    tap_register();
    for (int i = 0; i < n; i++) {
        tap_run++;
        printf("ok %d # skip ", tap_run);
        va_start(ap, fmt);
        vprintf(fmt, ap);
        va_end(ap);
        printf("\n");
    }
}

int ok(int cond, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    tap_result(cond, fmt, ap);
    va_end(ap);
    return cond;
}

int is_int(long long got, long long want, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    tap_result(got == want, fmt, ap);
    va_end(ap);
    if (got != want) diag("     got: %lld\n#   wanted: %lld", got, want);
    return got == want;
}

int is_string(const char *got, const char *want, const char *fmt, ...)
{
    int same = (got == NULL && want == NULL) ||
               (got != NULL && want != NULL && strcmp(got, want) == 0);
    va_list ap;
    va_start(ap, fmt);
    tap_result(same, fmt, ap);
    va_end(ap);
    if (!same) diag("     got: '%s'\n#   wanted: '%s'", got ? got : "(null)", want ? want : "(null)");
    return same;
}

/* Prints up to 48 bytes of p starting at off, escaped, into stderr. */
static void tap_escaped(const char *label, const unsigned char *p, size_t len, size_t off)
{
    size_t end = off + 48 < len ? off + 48 : len;
    fprintf(stderr, "# %s (len %zu) at %zu: \"", label, len, off);
    for (size_t i = off; i < end; i++) {
        unsigned char c = p[i];
        if (c == '\r') fputs("\\r", stderr);
        else if (c == '\n') fputs("\\n", stderr);
        else if (c == '"' || c == '\\') fprintf(stderr, "\\%c", c);
        else if (c >= 32 && c < 127) fputc(c, stderr);
        else fprintf(stderr, "\\x%02x", c);
    }
    fprintf(stderr, "\"%s\n", end < len ? "..." : "");
}

int is_bytes(const void *got, size_t gotlen, const void *want, size_t wantlen, const char *fmt, ...)
{
    const unsigned char *g = got, *w = want;
    size_t n = gotlen < wantlen ? gotlen : wantlen, i = 0;
    while (i < n && g[i] == w[i]) i++;
    int same = gotlen == wantlen && i == n;
    va_list ap;
    va_start(ap, fmt);
    tap_result(same, fmt, ap);
    va_end(ap);
    if (!same) {
        fflush(stdout);
        size_t from = i > 16 ? i - 16 : 0;
        fprintf(stderr, "# first difference at byte %zu\n", i);
        tap_escaped("     got", g, gotlen, from);
        tap_escaped("  wanted", w, wantlen, from);
    }
    return same;
}

int tap_failures(void)
{
    return tap_failed;
}
