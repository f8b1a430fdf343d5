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

#endif
