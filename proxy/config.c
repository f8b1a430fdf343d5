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
    c->connect_timeout_ms = 2000;
    c->upstream_timeout_ms = 60000;
    c->shutdown_timeout_ms = 5000;
}

/* Releases the strings the config owns and leaves them NULL, so that freeing twice, or
 * freeing a config that only had lp_config_defaults(), is safe. */
void lp_config_free(lp_config *c)
{
    free(c->policy_file);
    free(c->log_file);
    c->policy_file = c->log_file = NULL;
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

typedef enum { D_ADDR, D_PATH, D_INT, D_MEM, D_DUR } dkind;

typedef struct directive {
    const char *name;
    dkind kind;
    size_t off;                 /* field in lp_config */
    long long min, max;         /* D_INT, D_MEM, D_DUR */
    const char *min_text;       /* min as the user would write it */
} directive;

#define F(field) offsetof(lp_config, field)
static const directive directives[] = {
    {"listen", D_ADDR, F(listen), 0, 0, NULL},
    {"upstream", D_ADDR, F(upstream), 0, 0, NULL},
    {"policy", D_PATH, F(policy_file), 0, 0, NULL},
    {"log", D_PATH, F(log_file), 0, 0, NULL},
    {"maxclients", D_INT, F(maxclients), 1, INT_MAX, "1"},
    /* Redis's own lower bounds for these two. */
    {"proto-max-bulk-len", D_MEM, F(proto_max_bulk_len), 1LL << 20, LLONG_MAX, "1mb"},
    {"client-query-buffer-limit", D_MEM, F(client_query_buffer_limit), 1LL << 20, LLONG_MAX, "1mb"},
    {"high-water", D_MEM, F(high_water), 1, LLONG_MAX, "1"},
    {"low-water", D_MEM, F(low_water), 1, LLONG_MAX, "1"},
    {"hard-limit", D_MEM, F(hard_limit), 1, LLONG_MAX, "1"},
    {"connect-timeout", D_DUR, F(connect_timeout_ms), 1, LLONG_MAX, "1ms"},
    {"upstream-timeout", D_DUR, F(upstream_timeout_ms), 0, LLONG_MAX, "0"},
    {"shutdown-timeout", D_DUR, F(shutdown_timeout_ms), 1, LLONG_MAX, "1ms"},
};
#undef F

static const directive *find_directive(const char *name)
{
    for (size_t i = 0; i < sizeof directives / sizeof directives[0]; i++)
        if (strcasecmp(name, directives[i].name) == 0) return &directives[i];
    return NULL;
}

/* Sets directive d from the text v. Returns 0, or -1 with a reason naming v in msg (the
 * caller adds where it came from). A log of "-" means stderr (NULL). */
static int set_directive(lp_config *c, const directive *d, const char *v, char *msg, size_t msglen)
{
    void *field = (char *)c + d->off;
    long long n = 0;

    switch (d->kind) {
    case D_ADDR: {
        lp_addr a;
        if (lp_addr_parse(v, &a, msg, msglen) < 0) return -1;
        *(lp_addr *)field = a;
        if (d->off == offsetof(lp_config, upstream)) c->upstream_set = 1;
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

/* Applies one line of a config file. buf has room for the line's tokens and their NULs. */
static int config_line(lp_config *c, const lp_tok_where *w, const char *s, const char *end,
                       char *buf, const directive **set)
{
    char *tok[2] = {NULL, NULL}, msg[512];
    size_t ntok = 0, len = 0;
    int r;

    while ((r = lp_tok_next_word(w, &s, end, buf, &len)) > 0) {
        if (ntok < 2) tok[ntok] = buf;
        ntok++;
        buf += len + 1;
    }
    if (r < 0 || ntok == 0) return r;
    const directive *d = find_directive(tok[0]);
    if (d == NULL) return lp_tok_fail(w, "unknown directive '%s'", tok[0]);
    if (ntok != 2)
        return lp_tok_fail(w, "wrong number of arguments for '%s' (expected 1, got %zu)",
                           d->name, ntok - 1);
    if (set_directive(c, d, tok[1], msg, sizeof msg) < 0)
        return lp_tok_fail(w, "%s: %s", d->name, msg);
    *set = d;
    return 0;
}

/* Checks that the flow-control marks are ordered, blaming the later line that set one. */
static int check_marks(const lp_config *c, lp_tok_where *w, int low, int high, int hard)
{
    if ((low || high) && c->low_water >= c->high_water) {
        w->line = low > high ? low : high;
        return lp_tok_fail(w, "low-water (%lld) must be less than high-water (%lld)",
                           c->low_water, c->high_water);
    }
    if ((hard || high) && c->hard_limit <= c->high_water) {
        w->line = hard > high ? hard : high;
        return lp_tok_fail(w, "hard-limit (%lld) must be greater than high-water (%lld)",
                           c->hard_limit, c->high_water);
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
        if (d != NULL && d->off == offsetof(lp_config, low_water)) low = w.line;
        if (d != NULL && d->off == offsetof(lp_config, high_water)) high = w.line;
        if (d != NULL && d->off == offsetof(lp_config, hard_limit)) hard = w.line;
    }
    if (rc == 0 && ferror(f)) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        rc = -1;
    }
    if (rc == 0) rc = check_marks(c, &w, low, high, hard);
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
        } else if (f->kind == A_SET &&
                   set_directive(c, find_directive(f->directive), val, msg, sizeof msg) < 0) {
            snprintf(err, errlen, "%s: %s", f->name, msg);
            return -1;
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

const char *lp_config_usage(void)
{
    return
        "Usage: lockproxy [-c FILE] [--listen ADDR] [--upstream ADDR] [--policy FILE]\n"
        "                 [--log FILE|-] [--check] [--version] [--help]\n"
        "\n"
        "  -c FILE           read the configuration file FILE first (redis.conf style)\n"
        "  --listen ADDR     accept clients on ADDR (default 127.0.0.1:6380)\n"
        "  --upstream ADDR   forward to the redis-server at ADDR (default 127.0.0.1:6379)\n"
        "  --policy FILE     read the lock rules from FILE (default none: pass through)\n"
        "  --log FILE|-      write the audit log (JSON Lines) to FILE; - is stderr (default)\n"
        "  --check           validate the configuration and policy, print the rules, exit\n"
        "  --version, -v     print the version and exit\n"
        "  --help, -h        print this help and exit\n"
        "\n"
        "ADDR is HOST:PORT, [IPv6]:PORT or unix:/path. Flags override the file and may\n"
        "also be written --flag=VALUE.\n";
}
