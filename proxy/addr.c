/* Listen and upstream addresses: "HOST:PORT", "[IPv6]:PORT" or "unix:/path". */
#include "proxy/addr.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#define ADDR_FORMS "HOST:PORT, [IPv6]:PORT or unix:/path"

/* Writes "bad address 'S': REASON" into err and returns -1. */
static int __attribute__((format(printf, 4, 5)))
addr_fail(char *err, size_t errlen, const char *s, const char *fmt, ...)
{
    va_list ap;
    int n = snprintf(err, errlen, "bad address '%s': ", s);
    if (n >= 0 && (size_t)n < errlen) {
        va_start(ap, fmt);
        vsnprintf(err + n, errlen - (size_t)n, fmt, ap);
        va_end(ap);
    }
    return -1;
}

/* Parses a decimal port 1..65535 that fills all of s. Returns the port or -1. */
static int parse_port(const char *s)
{
    size_t n = strlen(s);
    int port = 0;
    if (n == 0 || n > 5) return -1;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9') return -1;
        port = port * 10 + (s[i] - '0');
    }
    return port >= 1 && port <= 65535 ? port : -1;
}

/* Accepts "unix:PATH" (PATH non-empty and short enough for sun_path with its NUL),
 * "[HOST]:PORT" and "HOST:PORT" (HOST without ':' unless bracketed, without spaces or
 * control bytes). On error *a is zeroed and err holds "bad address 'S': reason". */
int lp_addr_parse(const char *s, lp_addr *a, char *err, size_t errlen)
{
    const char *host, *port;
    size_t hostlen;

    memset(a, 0, sizeof *a);
    if (s[0] == '\0') return addr_fail(err, errlen, s, "empty (expected " ADDR_FORMS ")");
    if (strncmp(s, "unix:", 5) == 0) {
        size_t n = strlen(s + 5);
        if (n == 0) return addr_fail(err, errlen, s, "empty unix socket path");
        if (n >= sizeof a->path)
            return addr_fail(err, errlen, s, "unix socket path longer than %zu bytes",
                             sizeof a->path - 1);
        a->is_unix = 1;
        memcpy(a->path, s + 5, n + 1);
        return 0;
    }
    if (s[0] == '[') {
        const char *close = strchr(s, ']');
        if (close == NULL) return addr_fail(err, errlen, s, "missing ']' after the IPv6 address");
        if (close[1] != ':') return addr_fail(err, errlen, s, "missing port (expected " ADDR_FORMS ")");
        host = s + 1;
        hostlen = (size_t)(close - host);
        port = close + 2;
    } else {
        const char *colon = strrchr(s, ':');
        if (colon == NULL) return addr_fail(err, errlen, s, "missing port (expected " ADDR_FORMS ")");
        host = s;
        hostlen = (size_t)(colon - s);
        if (memchr(host, ':', hostlen) != NULL)
            return addr_fail(err, errlen, s, "an IPv6 address needs brackets, as in [::1]:6379");
        port = colon + 1;
    }
    if (hostlen == 0) return addr_fail(err, errlen, s, "empty host");
    if (hostlen >= sizeof a->host)
        return addr_fail(err, errlen, s, "host longer than %zu bytes", sizeof a->host - 1);
    for (size_t i = 0; i < hostlen; i++) {
        unsigned char ch = (unsigned char)host[i];
        if (ch <= ' ' || ch == 0x7f || ch == '[' || ch == ']')
            return addr_fail(err, errlen, s, "bad character in host");
    }
    a->port = parse_port(port);
    if (a->port < 0) {
        a->port = 0;
        return addr_fail(err, errlen, s, "bad port '%s' (expected 1 to 65535)", port);
    }
    memcpy(a->host, host, hostlen);
    a->host[hostlen] = '\0';
    return 0;
}

/* Writes "unix:PATH", "[HOST]:PORT" for hosts containing ':', or "HOST:PORT". */
void lp_addr_format(const lp_addr *a, char *out, size_t outlen)
{
    if (a->is_unix)
        snprintf(out, outlen, "unix:%s", a->path);
    else if (strchr(a->host, ':') != NULL)
        snprintf(out, outlen, "[%s]:%d", a->host, a->port);
    else
        snprintf(out, outlen, "%s:%d", a->host, a->port);
}
