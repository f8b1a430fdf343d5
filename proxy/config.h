/* lockproxy's configuration: defaults, the redis.conf-style file ("directive value" per
 * line), and command-line flags. Flags override the file. */
#ifndef LP_CONFIG_H
#define LP_CONFIG_H

#include <stddef.h>
#include <stdio.h>
#include "proxy/addr.h"

typedef struct lp_config {
    lp_addr listen;                 /* default 127.0.0.1:6380 */
    lp_addr upstream;               /* default 127.0.0.1:6379 */
    int upstream_set;               /* 1 when the file or a flag named an upstream */
    lp_sentinel_cfg sentinel;       /* upstream sentinel://...: n > 0, and upstream is unused */
    lp_addr admin;                  /* the admin listener (HTTP: /metrics, /health) */
    int admin_set;                  /* 0: no admin listener (the default) */
    char *policy_file;              /* NULL: no lock rules, pure pass-through */
    char *log_file;                 /* NULL: "-" (stderr) */
    int maxclients;                 /* default 10000, as Redis */
    long long proto_max_bulk_len;   /* default 512mb, as Redis */
    long long client_query_buffer_limit; /* default 1gb, as Redis */
    long long high_water;           /* stop reading the source past this, default 1mb */
    long long low_water;            /* resume below this, default 256kb */
    long long hard_limit;           /* close a connection whose queue passes this, default 2gb */
    long long lease_cache_bytes;    /* the lease cache's memory budget, default 64mb */
    long long connect_timeout_ms;   /* upstream connect timeout, default 2000 */
    long long upstream_timeout_ms;  /* silence of the upstream while a non-blocking request waits; 0 off; default 60000 */
    long long shutdown_timeout_ms;  /* SIGTERM drain bound, default 5000 */
    char instance_name[256];        /* this proxy in lease records and ids; default the host name */
    char upstream_user[128];        /* upstream-auth's ACL user; "" for PASSWORD alone */
    char upstream_password[512];    /* "" when upstream-auth is not set */
    int log_line, upstream_line;    /* the config file's line that set them; 0: default or flag */

    /* Actions asked for on the command line. */
    int check, help, version;
    const char *config_file;        /* -c FILE, or NULL */
} lp_config;

/* The defaults; instance_name from gethostname() ("lockproxy" when that fails or is empty). */
void lp_config_defaults(lp_config *c);
/* Frees the strings the config owns and wipes the upstream password. */
void lp_config_free(lp_config *c);

/* Reads a config file: one "directive value..." per line, '#' comments, blank lines.
 * Returns 0, or -1 with "FILE:LINE: message" in err. */
int lp_config_load_file(lp_config *c, const char *path, char *err, size_t errlen);

/* Applies argv: loads -c FILE first (when given), then the other flags over it.
 * Returns 0, or -1 with a message in err (for a bad file, "FILE:LINE: message"). */
int lp_config_from_args(lp_config *c, int argc, char **argv, char *err, size_t errlen);

/* Prints the settings --check shows, one "directive value" per line: listen, upstream,
 * instance-name, and upstream-auth with the password masked ("upstream-auth USER ****",
 * "upstream-auth ****", or "upstream-auth: none"). */
void lp_config_print(const lp_config *c, FILE *out);

/* The --help text. */
const char *lp_config_usage(void);

/* Parses a size as Redis does ("512mb", "64k", "1gb", plain bytes). -1 on error. */
long long lp_parse_memory(const char *s);
/* Parses a duration: "250ms", "30s", "5m", "1h" or plain milliseconds. -1 on error. */
long long lp_parse_duration_ms(const char *s);

#endif
