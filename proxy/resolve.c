/* The upstream's address. See proxy/resolve.h. */
#include "proxy/resolve.h"
#include "proxy/proxy.h"
#include "proxy/sentinel.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct lp_resolve {
    uv_getaddrinfo_t req;
    proxy *px;
    lp_resolve_cb cb;           /* NULL once cancelled */
    void *ud;
};

static int is_numeric(const char *host)
{
    unsigned char buf[sizeof(struct in6_addr)];
    return inet_pton(AF_INET, host, buf) == 1 || inet_pton(AF_INET6, host, buf) == 1;
}

int lp_upstream_resolve_now(proxy *px, char *err, size_t errlen)
{
    const lp_addr *a = &px->cfg->upstream;
    if (px->cfg->sentinel.n > 0) {
        /* The master's address comes from Redis Sentinel, which keeps upstream_sa. */
        px->sentinel = lp_sentinel_new(px, err, errlen);
        if (px->sentinel == NULL) return -1;
        lp_sentinel_wait_master(px->sentinel);
        return 0;
    }
    if (a->is_unix) return 0;
    struct addrinfo hints, *res = NULL;
    char port[16], shown[300];
    memset(&hints, 0, sizeof(hints));
    hints.ai_socktype = SOCK_STREAM;
    snprintf(port, sizeof(port), "%d", a->port);
    int rc = getaddrinfo(a->host, port, &hints, &res);
    if (rc != 0 || res == NULL) {
        lp_addr_format(a, shown, sizeof(shown));
        snprintf(err, errlen, "upstream: %s: %s", shown, gai_strerror(rc));
        return -1;
    }
    memcpy(&px->upstream_sa, res->ai_addr, res->ai_addrlen);
    freeaddrinfo(res);
    px->upstream_by_name = !is_numeric(a->host);
    return 0;
}

static void resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
    lp_resolve *r = req->data;
    if (r->cb != NULL) {
        if (status == 0 && res != NULL) {
            memcpy(&r->px->upstream_sa, res->ai_addr, res->ai_addrlen);
            r->cb(r->ud, 0, (const struct sockaddr *)&r->px->upstream_sa);
        } else {
            r->cb(r->ud, status < 0 ? status : UV_EAI_NONAME, NULL);
        }
    }
    uv_freeaddrinfo(res);
    free(r);
}

int lp_upstream_resolve(proxy *px, lp_resolve_cb cb, void *ud, lp_resolve **out)
{
    const lp_addr *a = &px->cfg->upstream;
    struct addrinfo hints;
    char port[16];
    lp_resolve *r = calloc(1, sizeof(*r));
    if (r == NULL) return UV_ENOMEM;
    r->px = px;
    r->cb = cb;
    r->ud = ud;
    r->req.data = r;
    memset(&hints, 0, sizeof(hints));
    hints.ai_socktype = SOCK_STREAM;
    snprintf(port, sizeof(port), "%d", a->port);
    int rc = uv_getaddrinfo(px->loop, &r->req, resolved, a->host, port, &hints);
    if (rc < 0) {
        free(r);
        return rc;
    }
    *out = r;
    return 0;
}

void lp_upstream_resolve_cancel(lp_resolve *r)
{
    if (r == NULL) return;
    r->cb = NULL;
    uv_cancel((uv_req_t *)&r->req);     /* resolved() still runs, and frees r */
}
