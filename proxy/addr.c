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

int lp_sentinel_is(const char *s)
{
    return strncmp(s, "sentinel://", 11) == 0;
}

/* Accepts "sentinel://A[,B...]/NAME": each of A, B... a TCP address as lp_addr_parse()
 * reads it, at most LP_SENTINELS_MAX of them; NAME non-empty, without spaces or control
 * bytes. On error *sc is zeroed. */
int lp_sentinel_parse(const char *s, lp_sentinel_cfg *sc, char *err, size_t errlen)
{
    memset(sc, 0, sizeof *sc);
    if (!lp_sentinel_is(s)) return addr_fail(err, errlen, s, "expected sentinel://HOST:PORT[,HOST:PORT...]/MASTER");
    const char *list = s + 11, *slash = strrchr(list, '/');
    if (slash == NULL || slash[1] == '\0')
        return addr_fail(err, errlen, s, "missing master name (expected sentinel://HOST:PORT[,HOST:PORT...]/MASTER)");
    const char *name = slash + 1;
    size_t nlen = strlen(name);
    if (nlen >= sizeof sc->master)
        return addr_fail(err, errlen, s, "master name longer than %zu bytes", sizeof sc->master - 1);
    for (size_t i = 0; i < nlen; i++) {
        unsigned char ch = (unsigned char)name[i];
        if (ch <= ' ' || ch == 0x7f || ch == '/') {
            memset(sc, 0, sizeof *sc);
            return addr_fail(err, errlen, s, "bad character in master name");
        }
    }
    memcpy(sc->master, name, nlen + 1);
    const char *p = list;
    if (p == slash) {
        memset(sc, 0, sizeof *sc);
        return addr_fail(err, errlen, s, "no sentinel address");
    }
    for (;;) {
        const char *comma = memchr(p, ',', (size_t)(slash - p));
        const char *end = comma ? comma : slash;
        char one[300], why[400];
        if ((size_t)(end - p) >= sizeof one) {
            memset(sc, 0, sizeof *sc);
            return addr_fail(err, errlen, s, "sentinel address too long");
        }
        memcpy(one, p, (size_t)(end - p));
        one[end - p] = '\0';
        if (sc->n == LP_SENTINELS_MAX) {
            memset(sc, 0, sizeof *sc);
            return addr_fail(err, errlen, s, "more than %d sentinels", LP_SENTINELS_MAX);
        }
        if (strncmp(one, "unix:", 5) == 0 || lp_addr_parse(one, &sc->addr[sc->n], why, sizeof why) < 0) {
            memset(sc, 0, sizeof *sc);
            return addr_fail(err, errlen, s, "sentinel '%s' is not HOST:PORT", one);
        }
        sc->n++;
        if (comma == NULL) break;
        p = end + 1;
    }
    return 0;
}

void lp_sentinel_format(const lp_sentinel_cfg *sc, char *out, size_t outlen)
{
    size_t n = (size_t)snprintf(out, outlen, "sentinel://");
    for (int i = 0; i < sc->n && n < outlen; i++) {
        if (i > 0 && n + 1 < outlen) out[n++] = ',';
        lp_addr_format(&sc->addr[i], out + n, outlen - n);
        n += strlen(out + n);
    }
    if (n < outlen) snprintf(out + n, outlen - n, "/%s", sc->master);
}
