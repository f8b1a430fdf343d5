/* Tokens and numbers shared by the policy file and the config file (see tokens.h). */
#include "common/tokens.h"

#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

int lp_tok_fail(const lp_tok_where *w, const char *fmt, ...)
{
    va_list ap;
    int n = snprintf(w->err, w->errlen, "%s:%d: ", w->name, w->line);
    if (n >= 0 && (size_t)n < w->errlen) {
        va_start(ap, fmt);
        vsnprintf(w->err + n, w->errlen - (size_t)n, fmt, ap);
        va_end(ap);
    }
    return -1;
}

int lp_tok_is_blank(char ch)
{
    return ch == ' ' || ch == '\t' || ch == '\r' || ch == '\n' || ch == '\v' || ch == '\f';
}

/* Returns the value of the hex digit ch, or -1 when it is not one. */
static int hexval(char ch)
{
    if (ch >= '0' && ch <= '9') return ch - '0';
    if (ch >= 'a' && ch <= 'f') return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F') return ch - 'A' + 10;
    return -1;
}

/* Returns the first blank at or after s, or end. */
static const char *skip_word(const char *s, const char *end)
{
    while (s < end && !lp_tok_is_blank(*s)) s++;
    return s;
}

int lp_tok_next(const lp_tok_where *w, const char **p, const char *end, char *out, size_t *len)
{
    const char *s = *p, *start;
    const char *why = NULL, *hint = "";
    size_t n = 0;

    while (s < end && lp_tok_is_blank(*s)) s++;
    if (s == end || *s == '#') {
        *p = end;
        return 0;
    }
    start = s;
    if (*s != '"') {
        while (s < end && !lp_tok_is_blank(*s)) out[n++] = *s++;
    } else {
        for (s++; s < end && *s != '"' && why == NULL; s++) {
            if (*s != '\\') out[n++] = *s;
            else if (end - s > 1 && (s[1] == '"' || s[1] == '\\')) out[n++] = *++s;
            else if (end - s > 3 && s[1] == 'x' && hexval(s[2]) >= 0 && hexval(s[3]) >= 0) {
                out[n++] = (char)(hexval(s[2]) << 4 | hexval(s[3]));
                s += 3;
            } else {
                why = "bad escape";
                hint = " (expected \\\", \\\\ or \\xHH)";
            }
        }
        if (why == NULL && s == end) why = "unterminated quote";
        if (why == NULL && ++s < end && !lp_tok_is_blank(*s)) why = "closing quote must be followed by a space";
        if (why != NULL)
            return lp_tok_fail(w, "%s in %.*s%s", why, (int)(skip_word(s, end) - start), start, hint);
    }
    *p = s;
    *len = n;
    return 1;
}

int lp_tok_next_word(const lp_tok_where *w, const char **p, const char *end, char *out, size_t *len)
{
    int rc = lp_tok_next(w, p, end, out, len);
    if (rc > 0 && memchr(out, '\0', *len) != NULL) return lp_tok_fail(w, "NUL byte in a token");
    if (rc > 0) out[*len] = '\0';
    return rc;
}

void lp_tok_write(FILE *out, const char *s, size_t n)
{
    int quote = n == 0;
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

long long lp_tok_parse_digits(const char *s, const char **rest)
{
    long long v = 0;
    const char *p = s;
    *rest = s;
    for (; *p >= '0' && *p <= '9'; p++) {
        if (v > (LLONG_MAX - (*p - '0')) / 10) return -1;
        v = v * 10 + (*p - '0');
    }
    *rest = p;
    return p == s ? -1 : v;
}

long long lp_tok_parse_units(const char *s, const lp_tok_unit *units, size_t nunits)
{
    const char *u;
    long long v = lp_tok_parse_digits(s, &u);
    if (v < 0) return -1;
    for (size_t i = 0; i < nunits; i++)
        if (strcasecmp(u, units[i].name) == 0)
            return v > LLONG_MAX / units[i].mul ? -1 : v * units[i].mul;
    return -1;
}

long long lp_tok_parse_duration_ms(const char *s)
{
    static const lp_tok_unit units[] = {
        {"", 1}, {"ms", 1}, {"s", 1000}, {"m", 60000}, {"h", 3600000},
    };
    return lp_tok_parse_units(s, units, sizeof units / sizeof units[0]);
}

long long lp_tok_parse_duration_unit_ms(const char *s)
{
    static const lp_tok_unit units[] = {
        {"ms", 1}, {"s", 1000}, {"m", 60000}, {"h", 3600000},
    };
    return lp_tok_parse_units(s, units, sizeof units / sizeof units[0]);
}
