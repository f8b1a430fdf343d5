/* lockproxy's configuration: defaults, the redis.conf-style file, and command-line flags. */
#include "proxy/config.h"
#include "common/tokens.h"

#include <errno.h>
#include <limits.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

void lp_config_defaults(lp_config *c)
{
    memset(c, 0, sizeof *c);
    strcpy(c->listen.host, "127.0.0.1");
    c->listen.port = 6380;
    strcpy(c->upstream.host, "127.0.0.1");
    c->upstream.port = 6379;
    c->maxclients = 10000;
    c->proto_max_bulk_len = 512LL << 20;
    c->client_query_buffer_limit = 1LL << 30;
    c->high_water = 1LL << 20;
    c->low_water = 256LL << 10;
    c->hard_limit = 2LL << 30;
    c->lease_cache_bytes = 64LL << 20;
    c->connect_timeout_ms = 2000;
    c->upstream_timeout_ms = 60000;
    c->shutdown_timeout_ms = 5000;
    if (gethostname(c->instance_name, sizeof c->instance_name - 1) != 0 ||
        c->instance_name[0] == '\0')
        strcpy(c->instance_name, "lockproxy");
    c->instance_name[sizeof c->instance_name - 1] = '\0';
}

/* Releases the strings the config owns and leaves them NULL, so that freeing twice, or
 * freeing a config that only had lp_config_defaults(), is safe. The password is wiped. */
void lp_config_free(lp_config *c)
{
    free(c->policy_file);
    free(c->log_file);
    c->policy_file = c->log_file = NULL;
    explicit_bzero(c->upstream_password, sizeof c->upstream_password);
}

/* ---- numbers with units ---- */

/* As Redis's memtoull(): k/m/g are powers of 1000, kb/mb/gb powers of 1024. */
long long lp_parse_memory(const char *s)
{
    static const lp_tok_unit units[] = {
        {"", 1}, {"b", 1}, {"k", 1000}, {"kb", 1024}, {"m", 1000000}, {"mb", 1LL << 20},
        {"g", 1000000000}, {"gb", 1LL << 30},
    };
    return lp_tok_parse_units(s, units, sizeof units / sizeof units[0]);
}

long long lp_parse_duration_ms(const char *s)
{
    return lp_tok_parse_duration_ms(s);
}

/* ---- directives ---- */

/* D_NAME: instance-name; D_AUTH: upstream-auth [USER] PASSWORD, a secret never echoed. */
typedef enum { D_ADDR, D_PATH, D_INT, D_MEM, D_DUR, D_NAME, D_AUTH } dkind;

typedef struct directive {
    const char *name;
    dkind kind;
    size_t off;                 /* field in lp_config */
    long long min, max;         /* D_INT, D_MEM, D_DUR */
    const char *min_text;       /* min as the user would write it */
} directive;

/* A directive takes one argument; upstream-auth takes one or two. */
#define MAX_ARGS 2
static size_t max_args(const directive *d)
{
    return d->kind == D_AUTH ? 2 : 1;
}

#define F(field) offsetof(lp_config, field)
static const directive directives[] = {
    {"listen", D_ADDR, F(listen), 0, 0, NULL},
    {"upstream", D_ADDR, F(upstream), 0, 0, NULL},
    {"policy", D_PATH, F(policy_file), 0, 0, NULL},
    {"log", D_PATH, F(log_file), 0, 0, NULL},
    {"admin", D_ADDR, F(admin), 0, 0, NULL},
    {"maxclients", D_INT, F(maxclients), 1, INT_MAX, "1"},
    /* Redis's own lower bounds for these two. */
    {"proto-max-bulk-len", D_MEM, F(proto_max_bulk_len), 1LL << 20, LLONG_MAX, "1mb"},
    {"client-query-buffer-limit", D_MEM, F(client_query_buffer_limit), 1LL << 20, LLONG_MAX, "1mb"},
    {"high-water", D_MEM, F(high_water), 1, LLONG_MAX, "1"},
    {"low-water", D_MEM, F(low_water), 1, LLONG_MAX, "1"},
    {"hard-limit", D_MEM, F(hard_limit), 1, LLONG_MAX, "1"},
    {"lease-cache-bytes", D_MEM, F(lease_cache_bytes), 64LL << 10, LLONG_MAX, "64kb"},
    {"connect-timeout", D_DUR, F(connect_timeout_ms), 1, LLONG_MAX, "1ms"},
    {"upstream-timeout", D_DUR, F(upstream_timeout_ms), 0, LLONG_MAX, "0"},
    {"shutdown-timeout", D_DUR, F(shutdown_timeout_ms), 1, LLONG_MAX, "1ms"},
    {"instance-name", D_NAME, F(instance_name), 0, 0, NULL},
    {"upstream-auth", D_AUTH, F(upstream_password), 0, 0, NULL},
};
#undef F

static const directive *find_directive(const char *name)
{
    for (size_t i = 0; i < sizeof directives / sizeof directives[0]; i++)
        if (strcasecmp(name, directives[i].name) == 0) return &directives[i];
    return NULL;
}

/* Sets upstream-auth from [USER] PASSWORD (nv is 1 or 2). Messages never quote either. */
static int set_auth(lp_config *c, const char *const *v, size_t nv, char *msg, size_t msglen)
{
    const char *user = nv == 2 ? v[0] : "", *password = v[nv - 1];
    if (nv == 2 && user[0] == '\0') {
        snprintf(msg, msglen, "empty user name");
        return -1;
    }
    if (strlen(user) >= sizeof c->upstream_user) {
        snprintf(msg, msglen, "user name longer than %zu bytes", sizeof c->upstream_user - 1);
        return -1;
    }
    if (password[0] == '\0') {
        snprintf(msg, msglen, "empty password");
        return -1;
    }
    if (strlen(password) >= sizeof c->upstream_password) {
        snprintf(msg, msglen, "password longer than %zu bytes", sizeof c->upstream_password - 1);
        return -1;
    }
    strcpy(c->upstream_user, user);
    explicit_bzero(c->upstream_password, sizeof c->upstream_password);
    strcpy(c->upstream_password, password);
    return 0;
}

/* Sets instance-name: 1 to 255 printable bytes (UTF-8 allowed), no blanks. */
static int set_name(lp_config *c, const char *v, char *msg, size_t msglen)
{
    size_t len = strlen(v);
    if (len == 0) {
        snprintf(msg, msglen, "empty name");
        return -1;
    }
    if (len >= sizeof c->instance_name) {
        snprintf(msg, msglen, "name longer than %zu bytes", sizeof c->instance_name - 1);
        return -1;
    }
    for (size_t i = 0; i < len; i++)
        if ((unsigned char)v[i] <= ' ' || v[i] == 0x7f) {
            snprintf(msg, msglen,
                     "bad character in '%s' (expected printable characters, no blanks)", v);
            return -1;
        }
    memcpy(c->instance_name, v, len + 1);
    return 0;
}

/* Sets directive d from its nv arguments v (as many as the directive takes). Returns 0, or
 * -1 with a reason in msg (the caller adds where it came from). A log of "-" means stderr
 * (NULL). */
static int set_directive(lp_config *c, const directive *d, const char *const *args, size_t nv,
                         char *msg, size_t msglen)
{
    void *field = (char *)c + d->off;
    const char *v = args[0];
    long long n = 0;

    switch (d->kind) {
    case D_AUTH:
        return set_auth(c, args, nv, msg, msglen);
    case D_NAME:
        return set_name(c, v, msg, msglen);
    case D_ADDR: {
        lp_addr a;
        int up = d->off == offsetof(lp_config, upstream);
        if (up && lp_sentinel_is(v)) {
            lp_sentinel_cfg sc;
            if (lp_sentinel_parse(v, &sc, msg, msglen) < 0) return -1;
            c->sentinel = sc;
            memset(&c->upstream, 0, sizeof c->upstream);
            c->upstream_set = 1;
            return 0;
        }
        if (lp_addr_parse(v, &a, msg, msglen) < 0) return -1;
        if (d->off == offsetof(lp_config, admin) && a.is_unix) {
            snprintf(msg, msglen, "'%s': a unix socket is not supported here (expected HOST:PORT)", v);
            return -1;
        }
        *(lp_addr *)field = a;
        if (up) {
            c->upstream_set = 1;
            c->sentinel.n = 0;
        }
        if (d->off == offsetof(lp_config, admin)) c->admin_set = 1;
        return 0;
    }
    case D_PATH: {
        char **s = field, *dup = NULL;
        if (v[0] == '\0') {
            snprintf(msg, msglen, "empty file name");
            return -1;
        }
        if (!(d->off == offsetof(lp_config, log_file) && strcmp(v, "-") == 0) &&
            (dup = strdup(v)) == NULL) {
            snprintf(msg, msglen, "out of memory");
            return -1;
        }
        free(*s);
        *s = dup;
        return 0;
    }
    case D_INT: {
        const char *rest;
        if ((n = lp_tok_parse_digits(v, &rest)) < 0 || *rest != '\0') {
            snprintf(msg, msglen, "bad number '%s'", v);
            return -1;
        }
        break;
    }
    case D_MEM:
        if ((n = lp_parse_memory(v)) < 0) {
            snprintf(msg, msglen, "bad size '%s' (expected bytes, or e.g. 64kb, 512mb, 1gb)", v);
            return -1;
        }
        break;
    case D_DUR:
        if ((n = lp_parse_duration_ms(v)) < 0) {
            snprintf(msg, msglen, "bad duration '%s' (expected milliseconds, or e.g. 250ms, 30s, 5m, 1h)", v);
            return -1;
        }
        break;
    }
    if (n < d->min) {
        snprintf(msg, msglen, "'%s' is too small (minimum %s)", v, d->min_text);
        return -1;
    }
    if (n > d->max) {
        snprintf(msg, msglen, "'%s' is too large (maximum %lld)", v, d->max);
        return -1;
    }
    if (d->kind == D_INT) *(int *)field = (int)n;
    else *(long long *)field = n;
    return 0;
}

/* ---- the file ---- */

/* A relative path set from a config file is taken from that file's directory, so that the
 * file works wherever the proxy is started: "policy policy.conf" in /etc/lockproxy/lockproxy.conf
 * is /etc/lockproxy/policy.conf. Absolute paths, "-" (stderr) and files named on the command
 * line (relative to the working directory) are left as they are. */
static int resolve_from(lp_config *c, const directive *d, const char *file)
{
    char **field = (char **)((char *)c + d->off);
    const char *slash = strrchr(file, '/');
    if (*field == NULL || (*field)[0] == '/' || slash == NULL) return 0;
    size_t dirlen = (size_t)(slash - file) + 1, len = strlen(*field);
    char *p = malloc(dirlen + len + 1);
    if (p == NULL) return -1;
    memcpy(p, file, dirlen);
    memcpy(p + dirlen, *field, len + 1);
    free(*field);
    *field = p;
    return 0;
}

/* Applies one line of a config file. buf has room for the line's tokens and their NULs.
 * The arguments of upstream-auth are secret: a malformed one is reported without its text. */
static int config_line(lp_config *c, const lp_tok_where *w, const char *s, const char *end,
                       char *buf, const directive **set)
{
    const char *args[MAX_ARGS];
    char msg[512];
    size_t nargs = 0, len = 0;
    int r;

    if ((r = lp_tok_next_word(w, &s, end, buf, &len)) <= 0) return r;
    const directive *d = find_directive(buf);
    if (d == NULL) return lp_tok_fail(w, "unknown directive '%s'", buf);
    buf += len + 1;
    while ((r = lp_tok_next_word(w, &s, end, buf, &len)) > 0) {
        if (nargs < MAX_ARGS) args[nargs] = buf;
        nargs++;
        buf += len + 1;
    }
    if (r < 0 && d->kind == D_AUTH) {
        explicit_bzero(w->err, w->errlen);
        return lp_tok_fail(w, "%s: malformed argument (not shown: it holds a password)", d->name);
    }
    if (r < 0) return r;
    if (nargs < 1 || nargs > max_args(d)) {
        if (max_args(d) == 1)
            return lp_tok_fail(w, "%s: wrong number of arguments (expected 1, got %zu)",
                               d->name, nargs);
        return lp_tok_fail(w, "%s: wrong number of arguments (expected 1 or %zu, got %zu)",
                           d->name, max_args(d), nargs);
    }
    if (set_directive(c, d, args, nargs, msg, sizeof msg) < 0)
        return lp_tok_fail(w, "%s: %s", d->name, msg);
    if (d->kind == D_PATH && resolve_from(c, d, w->name) < 0)
        return lp_tok_fail(w, "%s: out of memory", d->name);
    *set = d;
    return 0;
}

/* Checks that the flow-control marks are ordered, blaming the later line that set one and
 * naming its directive. */
static int check_marks(const lp_config *c, lp_tok_where *w, int low, int high, int hard)
{
    if ((low || high) && c->low_water >= c->high_water) {
        w->line = low > high ? low : high;
        if (low > high)
            return lp_tok_fail(w, "low-water: %lld must be less than high-water (%lld)",
                               c->low_water, c->high_water);
        return lp_tok_fail(w, "high-water: %lld must be greater than low-water (%lld)",
                           c->high_water, c->low_water);
    }
    if ((hard || high) && c->hard_limit <= c->high_water) {
        w->line = hard > high ? hard : high;
        if (hard > high)
            return lp_tok_fail(w, "hard-limit: %lld must be greater than high-water (%lld)",
                               c->hard_limit, c->high_water);
        return lp_tok_fail(w, "high-water: %lld must be less than hard-limit (%lld)",
                           c->high_water, c->hard_limit);
    }
    return 0;
}

int lp_config_load_file(lp_config *c, const char *path, char *err, size_t errlen)
{
    lp_tok_where w = {path, 0, err, errlen};
    char *line = NULL, *buf = NULL;
    size_t cap = 0, bufcap = 0;
    ssize_t n;
    int rc = 0, low = 0, high = 0, hard = 0;
    FILE *f = fopen(path, "r");

    if (f == NULL) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        return -1;
    }
    while (rc == 0 && (n = getline(&line, &cap, f)) >= 0) {
        const directive *d = NULL;
        w.line++;
        while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r')) n--;
        if ((size_t)n + 1 > bufcap) {
            char *nb = realloc(buf, (size_t)n + 1);
            if (nb == NULL) { rc = lp_tok_fail(&w, "out of memory"); break; }
            buf = nb;
            bufcap = (size_t)n + 1;
        }
        rc = config_line(c, &w, line, line + n, buf, &d);
        if (d != NULL && d->off == offsetof(lp_config, log_file)) c->log_line = w.line;
        if (d != NULL && d->off == offsetof(lp_config, upstream)) c->upstream_line = w.line;
        if (d != NULL && d->off == offsetof(lp_config, low_water)) low = w.line;
        if (d != NULL && d->off == offsetof(lp_config, high_water)) high = w.line;
        if (d != NULL && d->off == offsetof(lp_config, hard_limit)) hard = w.line;
    }
    if (rc == 0 && ferror(f)) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        rc = -1;
    }
    if (rc == 0) rc = check_marks(c, &w, low, high, hard);
    if (line != NULL) explicit_bzero(line, cap);    /* may hold upstream-auth's password */
    if (buf != NULL) explicit_bzero(buf, bufcap);
    free(line);
    free(buf);
    fclose(f);
    return rc;
}

/* ---- the command line ---- */

typedef enum { A_CONFIG, A_SET, A_CHECK, A_VERSION, A_HELP } aflag;

static const struct flag {
    const char *name;
    aflag kind;
    const char *directive;      /* A_SET */
} flags[] = {
    {"-c", A_CONFIG, NULL},
    {"--listen", A_SET, "listen"},
    {"--upstream", A_SET, "upstream"},
    {"--policy", A_SET, "policy"},
    {"--log", A_SET, "log"},
    {"--admin", A_SET, "admin"},
    {"--check", A_CHECK, NULL},
    {"--version", A_VERSION, NULL},
    {"-v", A_VERSION, NULL},
    {"--help", A_HELP, NULL},
    {"-h", A_HELP, NULL},
};

/* Walks argv. With apply == 0 it checks every flag, records -c, --check, --version and
 * --help; with apply == 1 it sets the flags that override the file. */
static int scan_args(lp_config *c, int argc, char **argv, int apply, char *err, size_t errlen)
{
    int nconfig = 0;

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *val = NULL, *eq = NULL;
        const struct flag *f = NULL;
        char msg[512];

        if (strncmp(a, "--", 2) == 0) eq = strchr(a, '=');
        size_t alen = eq ? (size_t)(eq - a) : strlen(a);
        for (size_t k = 0; k < sizeof flags / sizeof flags[0] && f == NULL; k++)
            if (strlen(flags[k].name) == alen && strncmp(a, flags[k].name, alen) == 0) f = &flags[k];
        if (f == NULL) {
            snprintf(err, errlen, "unknown flag '%s' (try --help)", a);
            return -1;
        }
        if (f->kind == A_CONFIG || f->kind == A_SET) {
            if (eq != NULL) val = eq + 1;
            else if (i + 1 < argc) val = argv[++i];
            else {
                snprintf(err, errlen, "%s needs a value", f->name);
                return -1;
            }
        } else if (eq != NULL) {
            snprintf(err, errlen, "%s takes no value", f->name);
            return -1;
        }
        if (!apply) {
            if (f->kind == A_CONFIG && nconfig++ > 0) {
                snprintf(err, errlen, "-c given more than once");
                return -1;
            }
            if (f->kind == A_CONFIG) c->config_file = val;
            if (f->kind == A_CHECK) c->check = 1;
            if (f->kind == A_VERSION) c->version = 1;
            if (f->kind == A_HELP) c->help = 1;
        } else if (f->kind == A_SET) {
            const directive *d = find_directive(f->directive);
            if (set_directive(c, d, &val, 1, msg, sizeof msg) < 0) {
                snprintf(err, errlen, "%s: %s", f->name, msg);
                return -1;
            }
            if (d->off == offsetof(lp_config, log_file)) c->log_line = 0;
            if (d->off == offsetof(lp_config, upstream)) c->upstream_line = 0;
        }
    }
    return 0;
}

/* Checks all of argv first, so a typo is reported before any file is read. With --help or
 * --version nothing else is done; otherwise -c FILE is loaded, then the flags applied. */
int lp_config_from_args(lp_config *c, int argc, char **argv, char *err, size_t errlen)
{
    if (scan_args(c, argc, argv, 0, err, errlen) < 0) return -1;
    if (c->help || c->version) return 0;
    if (c->config_file != NULL && lp_config_load_file(c, c->config_file, err, errlen) < 0)
        return -1;
    return scan_args(c, argc, argv, 1, err, errlen);
}

void lp_config_print(const lp_config *c, FILE *out)
{
    char a[300];
    lp_addr_format(&c->listen, a, sizeof a);
    fprintf(out, "listen %s\n", a);
    if (c->sentinel.n > 0) lp_sentinel_format(&c->sentinel, a, sizeof a);
    else lp_addr_format(&c->upstream, a, sizeof a);
    fprintf(out, "upstream %s\n", a);
    if (c->admin_set) {
        lp_addr_format(&c->admin, a, sizeof a);
        fprintf(out, "admin %s\n", a);
    }
    fputs("instance-name ", out);
    lp_tok_write(out, c->instance_name, strlen(c->instance_name));
    fputc('\n', out);
    if (c->upstream_password[0] == '\0') {
        fputs("upstream-auth: none\n", out);
        return;
    }
    fputs("upstream-auth ", out);
    if (c->upstream_user[0] != '\0') {
        lp_tok_write(out, c->upstream_user, strlen(c->upstream_user));
        fputc(' ', out);
    }
    fputs("****\n", out);
}

const char *lp_config_usage(void)
{
    return
        "Usage: lockproxy [-c FILE] [--listen ADDR] [--upstream ADDR] [--policy FILE]\n"
        "                 [--log FILE|-] [--admin ADDR] [--check] [--version] [--help]\n"
        "       lockproxy report [--since DUR] [--json] LOG...\n"
        "\n"
        "  -c FILE           read the configuration file FILE first (redis.conf style)\n"
        "  --listen ADDR     accept clients on ADDR (default 127.0.0.1:6380)\n"
        "  --upstream ADDR   forward to the redis-server at ADDR (default 127.0.0.1:6379)\n"
        "  --policy FILE     read the lock rules from FILE (default none: pass through)\n"
        "  --log FILE|-      write the audit log (JSON Lines) to FILE; - is stderr (default)\n"
        "  --admin ADDR      serve GET /metrics and /health over HTTP on ADDR (default off)\n"
        "  --check           validate configuration and policy, print the rules, check that\n"
        "                    the log opens and the upstream resolves; exit 0 or 1\n"
        "  --version, -v     print the version and exit\n"
        "  --help, -h        print this help and exit\n"
        "  report            count the events of audit logs (plain or .gz): by rule, key and\n"
        "                    client IP, hold times, refused releases, advice; --json\n"
        "\n"
        "ADDR is HOST:PORT, [IPv6]:PORT or unix:/path; the upstream may also be\n"
        "sentinel://HOST:PORT[,HOST:PORT...]/MASTER (the master Redis Sentinel names).\n"
        "Flags override the file and may also be written --flag=VALUE.\n"
        "\n"
        "Config directives (relative paths are taken from the file's directory):\n"
        "  listen ADDR, upstream ADDR, policy FILE, log FILE|-, maxclients N,\n"
        "  proto-max-bulk-len SIZE, client-query-buffer-limit SIZE, high-water SIZE,\n"
        "  low-water SIZE, hard-limit SIZE, connect-timeout DUR, upstream-timeout DUR,\n"
        "  shutdown-timeout DUR, instance-name NAME, upstream-auth [USER] PASSWORD,\n"
        "  admin HOST:PORT    HTTP admin listener: GET /metrics (Prometheus), GET /health\n"
        "Policy file:\n"
        "  rule PREFIX enforce|audit|off [ttl=DUR] [max-ttl=DUR|none]\n"
        "       [owner=auto|connection|client-addr|client-name] [renew=auto|always|off]\n"
        "       [max-hold=DUR|none]\n"
        "  exempt user NAME | exempt addr CIDR\n"
        "Signals: SIGHUP re-reads the policy and reopens the log; SIGTERM/SIGINT drain, exit 0.\n"
        "Audit events, every directive and option in detail: man 8 lockproxy\n";
}
