/* Helpers shared by the deployment tests (tests/lock/deploy_*.t.c): the lock patterns as
 * applications deploy them (connection pools, one connection shared by many workers, several
 * proxies in front of one Redis, renewal threads, ACL users, MULTI, redis-py), written
 * against the lease design of design9.md (leases as records in Redis, owner=auto = the
 * application instance, per-connection late detection, renewal by the proxy, NOPERM
 * fallback).
 *
 * Everything is static (LK_FN) on top of lock_util.h: each program includes this header once. */
#ifndef LP_TEST_DEPLOY_UTIL_H
#define LP_TEST_DEPLOY_UTIL_H

#include "lock/lock_util.h"

/* The prefix of the lease records the proxy keeps beside the locks (design9.md). */
#define DP_RECORD_PREFIX "__lockproxy:"

/* A hiredis connection to p's TCP port from the local address src_ip (127.0.0.2: another
 * client host as far as the proxy can tell), blocking with a 5 s timeout. NULL when that
 * address cannot be used here. */
LK_FN redisContext *dp_connect_from(const hp_proc *p, const char *src_ip)
{
    int fd = lk_raw_open_from(p, src_ip);
    if (fd < 0) return NULL;
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
    redisContext *c = redisConnectFd(fd);
    if (c == NULL || c->err) {
        diag("redisConnectFd from %s: %s", src_ip, c ? c->errstr : "out of memory");
        redisFree(c);
        return NULL;
    }
    struct timeval tv = { 5, 0 };
    redisSetTimeout(c, tv);
    return c;
}

/* Whether 127.0.0.2 can reach p (Linux routes all of 127/8 over loopback). */
LK_FN int dp_have_other_host(const hp_proc *p)
{
    redisContext *c = dp_connect_from(p, "127.0.0.2");
    if (c == NULL) return 0;
    redisReply *r = redisCommand(c, "PING");
    int good = r != NULL && r->type == REDIS_REPLY_STATUS;
    freeReplyObject(r);
    redisFree(c);
    return good;
}

/* Number of keys in Redis whose name starts with prefix (KEYS; the test databases are small). */
LK_FN long long dp_count_keys(const hp_proc *redis, const char *prefix)
{
    redisReply *r = hp_cmd(redis, "KEYS %s*", prefix);
    long long n = r != NULL && r->type == REDIS_REPLY_ARRAY ? (long long)r->elements : -1;
    freeReplyObject(r);
    return n;
}

/* The names of those keys, comma-separated, for diagnostics. Lives until the next call. */
LK_FN const char *dp_list_keys(const hp_proc *redis, const char *prefix)
{
    static char out[2048];
    out[0] = '\0';
    redisReply *r = hp_cmd(redis, "KEYS %s*", prefix);
    size_t n = 0;
    for (size_t i = 0; r != NULL && r->type == REDIS_REPLY_ARRAY && i < r->elements && n < sizeof out - 100; i++)
        n += (size_t)snprintf(out + n, sizeof out - n, "%s%s", i ? "," : "", r->element[i]->str);
    freeReplyObject(r);
    return out;
}

/* Number of lease records in Redis: keys under DP_RECORD_PREFIX that are hashes with the
 * record's "owner" and "id" fields (design9.md). Other bookkeeping keys the proxy may keep
 * there (a history of past leases for late detection, say) are not counted. */
LK_FN long long dp_count_records(const hp_proc *redis)
{
    redisContext *c = lk_connect(redis);
    redisReply *r = redisCommand(c, "KEYS %s*", DP_RECORD_PREFIX);
    long long n = 0;
    if (r == NULL || r->type != REDIS_REPLY_ARRAY) n = -1;
    for (size_t i = 0; n >= 0 && i < r->elements; i++) {
        redisReply *h = redisCommand(c, "HMGET %s owner id", r->element[i]->str);
        if (h != NULL && h->type == REDIS_REPLY_ARRAY && h->elements == 2 && h->element[0]->type == REDIS_REPLY_STRING &&
            h->element[1]->type == REDIS_REPLY_STRING)
            n++;
        freeReplyObject(h);
    }
    freeReplyObject(r);
    redisFree(c);
    return n;
}

/* Number of keys under prefix that have no TTL (they would stay forever). */
LK_FN long long dp_count_untimed(const hp_proc *redis, const char *prefix)
{
    redisContext *c = lk_connect(redis);
    redisReply *r = redisCommand(c, "KEYS %s*", prefix);
    long long n = 0;
    if (r == NULL || r->type != REDIS_REPLY_ARRAY) n = -1;
    for (size_t i = 0; n >= 0 && i < r->elements; i++)
        if (lk_int(c, "PTTL %s", r->element[i]->str) == -1) n++;
    freeReplyObject(r);
    redisFree(c);
    return n;
}

/* A token for threads (lk_uuid is not thread-safe): "t<thread>-<n>-<random>". */
LK_FN void dp_token(char *out, size_t cap, int thread, long n, unsigned *seed)
{
    snprintf(out, cap, "t%d-%ld-%08x%08x", thread, n, (unsigned)rand_r(seed), (unsigned)rand_r(seed));
}

/* Milliseconds since start, for diagnostics. */
LK_FN double dp_secs(long long start_ms) { return (double)(hp_now_ms() - start_ms) / 1000.0; }

#endif
