/* What the fuzz checks share (check_*.c): the failure message, transcripts that compare with
 * memcmp, chunk sizes, and the "NAME:LINE: " error check of the two file parsers. Small
 * functions, static inline so that each check file takes what it uses. */
#ifndef LP_FUZZ_CHECK_UTIL_H
#define LP_FUZZ_CHECK_UTIL_H

#include "checks.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Writes the reason into lpf_msg and returns -1, so that a check can `return fail(...)`. */
static inline int __attribute__((format(printf, 1, 2))) fail(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(lpf_msg, sizeof(lpf_msg), fmt, ap);
    va_end(ap);
    return -1;
}

static inline void *xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (p == NULL)
        abort();
    return p;
}

/* ---- transcripts: what a run saw, as bytes, so that runs compare with memcmp ---- */

typedef struct tbuf {
    unsigned char *p;
    size_t len, cap;
} tbuf;

static inline void tb_put(tbuf *t, const void *p, size_t n)
{
    if (t->len + n > t->cap) {
        size_t cap = t->cap ? t->cap : 256;
        while (cap < t->len + n)
            cap *= 2;
        unsigned char *q = realloc(t->p, cap);
        if (q == NULL)
            abort();
        t->p = q;
        t->cap = cap;
    }
    if (n > 0)
        memcpy(t->p + t->len, p, n);
    t->len += n;
}

static inline void tb_u64(tbuf *t, unsigned long long v)
{
    tb_put(t, &v, sizeof(v));
}

static inline void tb_free(tbuf *t)
{
    free(t->p);
    memset(t, 0, sizeof(*t));
}

/* Compares two transcripts; on a difference names the first differing offset. */
static inline int tb_same(const tbuf *a, const tbuf *b, const char *what)
{
    size_t n = a->len < b->len ? a->len : b->len;
    size_t i = 0;
    while (i < n && a->p[i] == b->p[i])
        i++;
    if (i == n && a->len == b->len)
        return 0;
    return fail("%s: transcripts differ at byte %zu (lengths %zu and %zu)", what, i, a->len, b->len);
}

/* A chunk size chosen by a control byte. */
static inline size_t pick_chunk(unsigned char ctl)
{
    static const size_t sizes[16] = {1, 2, 3, 4, 5, 6, 7, 8, 11, 16, 17, 64, 100, 512, 4096, 65536};
    return sizes[ctl & 15];
}

/* Keeps the copying of a chunked run (the pending bytes move every few calls) near O(n) for
 * large replayed inputs. */
static inline size_t bound_chunk(size_t chunk, size_t n)
{
    while (chunk < n && (n / chunk) * n > ((size_t)1 << 26))
        chunk *= 2;
    return chunk;
}

/* Checks that msg is "NAME:LINE: something" with 1 <= LINE <= maxline. */
static inline int check_where(const char *what, const char *msg, const char *name, int maxline)
{
    size_t nl = strlen(name);
    if (strncmp(msg, name, nl) != 0 || msg[nl] != ':')
        return fail("%s: error does not start with '%s:': %s", what, name, msg);
    const char *p = msg + nl + 1;
    char *end;
    long line = strtol(p, &end, 10);
    if (end == p || end[0] != ':' || end[1] != ' ' || end[2] == '\0')
        return fail("%s: error does not name a line: %s", what, msg);
    if (line < 1 || line > maxline)
        return fail("%s: error names line %ld of %d: %s", what, line, maxline, msg);
    return 0;
}

/* Lines of d[0..n) as a parser numbers them (a last line without '\n' counts; at least 1). */
static inline int count_lines(const uint8_t *d, size_t n)
{
    int lines = 0;
    for (size_t i = 0; i < n; i++)
        if (d[i] == '\n')
            lines++;
    if (n > 0 && d[n - 1] != '\n')
        lines++;
    return lines > 0 ? lines : 1;
}

#endif
