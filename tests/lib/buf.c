/* Integration test harness: growable byte buffers and escaping for TAP lines (see
 * harness.h). */
#define _GNU_SOURCE     /* memmem, pipe2, program_invocation_short_name, nftw */
#include "lib/hp_internal.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void hp_buf_reserve(hp_buf *b, size_t extra)
{
    if (b->len + extra + 1 <= b->cap) return;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + extra + 1) cap *= 2;
    char *p = realloc(b->data, cap);
    if (p == NULL) bail_out("out of memory (%zu bytes)", cap);
    b->data = p;
    b->cap = cap;
}

void hp_buf_append(hp_buf *b, const void *p, size_t n)
{
    hp_buf_reserve(b, n);
    if (n > 0) memcpy(b->data + b->len, p, n);
    b->len += n;
    b->data[b->len] = '\0';
}

void hp_buf_puts(hp_buf *b, const char *s)
{
    hp_buf_append(b, s, strlen(s));
}

void hp_buf_printf(hp_buf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0) return;
    hp_buf_reserve(b, (size_t)n);
    va_start(ap, fmt);
    vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

void hp_buf_cmd(hp_buf *b, const char *fmt, ...)
{
    char *cmd = NULL;
    va_list ap;
    va_start(ap, fmt);
    int n = redisvFormatCommand(&cmd, fmt, ap);
    va_end(ap);
    if (n < 0) bail_out("hp_buf_cmd: cannot format \"%s\"", fmt);
    hp_buf_append(b, cmd, (size_t)n);
    free(cmd);
}

void hp_buf_cmdargv(hp_buf *b, int argc, const char **argv, const size_t *argvlen)
{
    char *cmd = NULL;
    int n = redisFormatCommandArgv(&cmd, argc, argv, argvlen);
    if (n < 0) bail_out("hp_buf_cmdargv: cannot format");
    hp_buf_append(b, cmd, (size_t)n);
    free(cmd);
}

void hp_buf_reset(hp_buf *b)
{
    b->len = 0;
    if (b->data) b->data[0] = '\0';
}

void hp_buf_free(hp_buf *b)
{
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}

size_t hp_buf_find(const hp_buf *b, size_t from, const void *needle, size_t nlen)
{
    if (b->data == NULL || from > b->len || nlen > b->len - from) return (size_t)-1;
    if (nlen == 0) return from;
    const char *p = memmem(b->data + from, b->len - from, needle, nlen);
    return p ? (size_t)(p - b->data) : (size_t)-1;
}

size_t hp_buf_count(const hp_buf *b, const char *needle)
{
    size_t n = 0, nlen = strlen(needle), at = 0, pos;
    if (nlen == 0) return 0;
    while ((pos = hp_buf_find(b, at, needle, nlen)) != (size_t)-1) {
        n++;
        at = pos + nlen;
    }
    return n;
}

const char *hp_esc(const void *p, size_t n, size_t max)
{
    static char *ring[8];
    static int next;
    const unsigned char *s = p;
    size_t shown = n < max ? n : max;
    char *out = malloc(shown * 4 + 4);
    if (out == NULL) return "(out of memory)";
    size_t o = 0;
    for (size_t i = 0; i < shown; i++) {
        unsigned char c = s[i];
        if (c == '\r') { out[o++] = '\\'; out[o++] = 'r'; }
        else if (c == '\n') { out[o++] = '\\'; out[o++] = 'n'; }
        else if (c == '\\') { out[o++] = '\\'; out[o++] = '\\'; }
        else if (c >= 32 && c < 127) out[o++] = (char)c;
        else o += (size_t)sprintf(out + o, "\\x%02x", c);
    }
    if (shown < n) { memcpy(out + o, "...", 3); o += 3; }
    out[o] = '\0';
    free(ring[next]);
    ring[next] = out;
    next = (next + 1) % 8;
    return out;
}

int hp_buf_has(const hp_buf *b, const void *p, size_t n)
{
    return hp_buf_find(b, 0, p, n) != (size_t)-1;
}
