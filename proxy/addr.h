/* Listen and upstream addresses: "HOST:PORT", "[IPv6]:PORT" or "unix:/path". */
#ifndef LP_ADDR_H
#define LP_ADDR_H

#include <stddef.h>

typedef struct lp_addr {
    int is_unix;
    char host[256];      /* TCP: host name or literal address, without brackets */
    int port;            /* TCP: 1..65535 */
    char path[108];      /* unix: socket path (sun_path size) */
} lp_addr;

/* Parses s into *a. Returns 0, or -1 with a one-line reason in err. */
int lp_addr_parse(const char *s, lp_addr *a, char *err, size_t errlen);
/* Writes the address back in the form lp_addr_parse() reads. */
void lp_addr_format(const lp_addr *a, char *out, size_t outlen);

/* A Sentinel-named upstream: "sentinel://HOST:PORT[,HOST:PORT...]/MASTER-NAME". */
#define LP_SENTINELS_MAX 16
typedef struct lp_sentinel_cfg {
    int n;                           /* sentinels given; 0: the upstream is a plain address */
    lp_addr addr[LP_SENTINELS_MAX];  /* TCP only */
    char master[128];                /* the master's name, as in sentinel.conf */
} lp_sentinel_cfg;

/* 1 when s starts with "sentinel://". */
int lp_sentinel_is(const char *s);
/* Parses a sentinel:// address into *sc. Returns 0, or -1 with a one-line reason in err. */
int lp_sentinel_parse(const char *s, lp_sentinel_cfg *sc, char *err, size_t errlen);
/* Writes it back in the form lp_sentinel_parse() reads. */
void lp_sentinel_format(const lp_sentinel_cfg *sc, char *out, size_t outlen);

#endif
