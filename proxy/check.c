/* lockproxy --check. See proxy/check.h. */
#include "proxy/check.h"
#include "policy/policy.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>
#include <hiredis/hiredis.h>

/* "FILE:LINE: " when the config file set the directive on that line, else "". */
static const char *where(const lp_config *c, int line, char *buf, size_t len)
{
    if (line <= 0 || c->config_file == NULL) return "";
    snprintf(buf, len, "%s:%d: ", c->config_file, line);
    return buf;
}

static int check_policy(const lp_config *cfg, FILE *out, FILE *err)
{
    char msg[600];
    if (cfg->policy_file == NULL) {
        fprintf(out, "policy: none (pure pass-through)\n");
        return 0;
    }
    policy *p = policy_load(cfg->policy_file, msg, sizeof msg);
    if (p == NULL) {
        fprintf(err, "%s\n", msg);
        return 1;
    }
    fprintf(out, "policy %s: %zu rule(s)\n", cfg->policy_file, policy_count(p));
    policy_print(p, out);
    /* Warnings go to err and do not fail the check. */
    size_t n = policy_warnings(p, NULL, 0);
    char *w = n > 0 ? malloc(n + 1) : NULL;
    if (w != NULL) {
        policy_warnings(p, w, n + 1);
        fflush(out);
        fputs(w, err);
        free(w);
    }
    policy_free(p);
    return 0;
}

/* The log opens for append as the proxy opens it; a file made only for the check goes. */
static int check_log(const lp_config *cfg, FILE *out, FILE *err)
{
    char at[600];
    if (cfg->policy_file == NULL) return 0;     /* no policy: nothing is logged */
    if (cfg->log_file == NULL) {
        fprintf(out, "log: - (stderr)\n");
        return 0;
    }
    struct stat st;
    int existed = stat(cfg->log_file, &st) == 0;
    int fd = open(cfg->log_file, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) {
        fprintf(err, "%slog: %s: %s\n", where(cfg, cfg->log_line, at, sizeof at), cfg->log_file, strerror(errno));
        return 1;
    }
    close(fd);
    if (!existed) unlink(cfg->log_file);
    fprintf(out, "log %s: opens for append\n", cfg->log_file);
    return 0;
}

/* The upstream's address a (the Redis, or one of its sentinels) resolves (an error), and,
 * when ping, answers PING (a warning). */
static int check_addr(const lp_config *cfg, const lp_addr *a, int ping, FILE *out, FILE *err)
{
    char at[600], addr[300];
    lp_addr_format(a, addr, sizeof addr);
    const char *w = where(cfg, cfg->upstream_line, at, sizeof at);
    if (!a->is_unix) {
        struct addrinfo hints, *res = NULL;
        char port[16];
        memset(&hints, 0, sizeof hints);
        hints.ai_socktype = SOCK_STREAM;
        snprintf(port, sizeof port, "%d", a->port);
        int rc = getaddrinfo(a->host, port, &hints, &res);
        if (rc != 0 || res == NULL) {
            fprintf(err, "%supstream: %s: %s\n", w, addr, rc == EAI_SYSTEM ? strerror(errno) : gai_strerror(rc));
            return 1;
        }
        freeaddrinfo(res);
    }
    if (!ping) return 0;
    struct timeval tv = { cfg->connect_timeout_ms / 1000, (cfg->connect_timeout_ms % 1000) * 1000 };
    redisContext *c = a->is_unix ? redisConnectUnixWithTimeout(a->path, tv)
                                 : redisConnectWithTimeout(a->host, a->port, tv);
    redisReply *r = NULL;
    char why[256] = "";
    if (c == NULL) snprintf(why, sizeof why, "out of memory");
    else if (c->err) snprintf(why, sizeof why, "%s", c->errstr);
    else {
        redisSetTimeout(c, tv);
        r = redisCommand(c, "PING");
        if (r == NULL) snprintf(why, sizeof why, "%s", c->errstr[0] ? c->errstr : "no reply");
        else if (r->type == REDIS_REPLY_ERROR && strncmp(r->str, "NOAUTH", 6) != 0)
            snprintf(why, sizeof why, "%s", r->str);
    }
    if (r) freeReplyObject(r);
    if (c) redisFree(c);
    fflush(out);
    if (why[0]) fprintf(err, "%swarning: upstream: %s does not answer PING (%s): clients get errors until it does\n", w, addr, why);
    else fprintf(out, "upstream %s: answers PING\n", addr);
    return 0;
}

/* The upstream, or with sentinel:// every sentinel named. */
static int check_upstream(const lp_config *cfg, int ping, FILE *out, FILE *err)
{
    if (cfg->sentinel.n == 0) return check_addr(cfg, &cfg->upstream, ping, out, err);
    int rc = 0;
    for (int i = 0; i < cfg->sentinel.n; i++)
        rc |= check_addr(cfg, &cfg->sentinel.addr[i], ping, out, err);
    return rc;
}

int lp_check_run(const lp_config *cfg, FILE *out, FILE *err)
{
    lp_config_print(cfg, out);
    int rc = check_policy(cfg, out, err);
    rc |= check_log(cfg, out, err);
    if (check_upstream(cfg, rc == 0, out, err)) rc = 1;
    fflush(err);
    if (rc == 0) fprintf(out, "configuration OK\n");
    return rc ? 1 : 0;
}
