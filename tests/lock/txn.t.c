/* Optimistic transactions on ordinary keys with four concurrent clients, straight to Redis
 * and through a proxy in enforce mode: the WATCH/MULTI examples work unchanged and end at the
 * same, exact values.
 *   - stock: each client buys 50 times (WATCH stock, GET, MULTI, DECRBY 1, EXEC, retry on a
 *     conflict) from a stock of 150: exactly 150 are sold, the stock ends at 0, never below;
 *   - transfer: client i moves i+1 from acct:i to acct:(i+1)%4, 50 times, with WATCH on both
 *     accounts: every balance ends at its computed value, the sum is unchanged. */
#include <pthread.h>

#include "lock/lock_util.h"

#define CLIENTS 4
#define ROUNDS 50
#define STOCK 150
#define MAX_RETRIES 100000

static hp_proc *redis, *proxy;
static char logpath[4096];

typedef struct worker {
    const hp_proc *target;
    int id;
    pthread_t thread;
    int sold, sold_out, retries, errors;
    long long min_seen;
} worker;

/* 1 committed, 0 conflict (retry), -1 error. */
static int exec_result(redisReply *r, worker *w)
{
    if (r == NULL) { w->errors++; return -1; }
    if (r->type == REDIS_REPLY_NIL) return 0;
    if (r->type == REDIS_REPLY_ARRAY) return 1;
    w->errors++;
    return -1;
}

static void *stock_worker(void *arg)
{
    worker *w = arg;
    redisContext *c = hp_redis_connect(w->target);
    if (c == NULL) { w->errors++; return NULL; }
    w->min_seen = LLONG_MAX;
    for (int i = 0; i < ROUNDS && w->errors == 0; i++) {
        int done = 0;
        while (!done && w->retries < MAX_RETRIES && w->errors == 0) {
            freeReplyObject(redisCommand(c, "WATCH stock"));
            redisReply *g = redisCommand(c, "GET stock");
            long long v = g != NULL && g->type == REDIS_REPLY_STRING ? atoll(g->str) : LLONG_MIN;
            freeReplyObject(g);
            if (v == LLONG_MIN) { w->errors++; break; }
            if (v < w->min_seen) w->min_seen = v;
            if (v <= 0) {
                freeReplyObject(redisCommand(c, "UNWATCH"));
                w->sold_out++;
                done = 1;
                break;
            }
            freeReplyObject(redisCommand(c, "MULTI"));
            freeReplyObject(redisCommand(c, "DECRBY stock 1"));
            redisReply *e = redisCommand(c, "EXEC");
            int rc = exec_result(e, w);
            if (rc == 1 && e->elements == 1 && e->element[0]->type == REDIS_REPLY_INTEGER &&
                e->element[0]->integer < w->min_seen)
                w->min_seen = e->element[0]->integer;
            freeReplyObject(e);
            if (rc == 1) { w->sold++; done = 1; }
            else if (rc == 0) w->retries++;
        }
    }
    redisFree(c);
    return NULL;
}

static void *transfer_worker(void *arg)
{
    worker *w = arg;
    redisContext *c = hp_redis_connect(w->target);
    if (c == NULL) { w->errors++; return NULL; }
    int from = w->id, to = (w->id + 1) % CLIENTS, amount = w->id + 1;
    for (int i = 0; i < ROUNDS && w->errors == 0; i++) {
        int done = 0;
        while (!done && w->retries < MAX_RETRIES && w->errors == 0) {
            freeReplyObject(redisCommand(c, "WATCH acct:%d acct:%d", from, to));
            redisReply *g = redisCommand(c, "MGET acct:%d acct:%d", from, to);
            long long bal = g != NULL && g->type == REDIS_REPLY_ARRAY && g->elements == 2 &&
                            g->element[0]->type == REDIS_REPLY_STRING ? atoll(g->element[0]->str) : LLONG_MIN;
            freeReplyObject(g);
            if (bal == LLONG_MIN || bal < amount) { w->errors++; break; }
            freeReplyObject(redisCommand(c, "MULTI"));
            freeReplyObject(redisCommand(c, "DECRBY acct:%d %d", from, amount));
            freeReplyObject(redisCommand(c, "INCRBY acct:%d %d", to, amount));
            redisReply *e = redisCommand(c, "EXEC");
            int rc = exec_result(e, w);
            if (rc == 1 && e->elements != 2) w->errors++;
            freeReplyObject(e);
            if (rc == 1) { w->sold++; done = 1; }
            else if (rc == 0) w->retries++;
        }
    }
    redisFree(c);
    return NULL;
}

static void run(const hp_proc *t, void *(*fn)(void *), worker *ws)
{
    for (int i = 0; i < CLIENTS; i++) {
        memset(&ws[i], 0, sizeof ws[i]);
        ws[i].target = t;
        ws[i].id = i;
        if (pthread_create(&ws[i].thread, NULL, fn, &ws[i]) != 0) hp_abort("pthread_create failed");
    }
    for (int i = 0; i < CLIENTS; i++) pthread_join(ws[i].thread, NULL);
}

static void test_stock(const hp_proc *t, long long *final)
{
    const char *S = t == proxy ? "proxy" : "direct";
    lk_flushall(redis);
    if (!hp_cmd_ok(redis, "SET stock %d", STOCK)) hp_abort("SET stock failed");
    worker ws[CLIENTS];
    run(t, stock_worker, ws);
    int sold = 0, out = 0, retries = 0, errors = 0;
    long long min_seen = LLONG_MAX;
    for (int i = 0; i < CLIENTS; i++) {
        sold += ws[i].sold;
        out += ws[i].sold_out;
        retries += ws[i].retries;
        errors += ws[i].errors;
        if (ws[i].min_seen < min_seen) min_seen = ws[i].min_seen;
    }
    diag("stock, %s: %d sold, %d sold-out answers, %d retries after a conflict", S, sold, out, retries);
    is_int(errors, 0, "stock: %s: no errors", S);
    is_int(sold, STOCK, "stock: %s: exactly %d sold", S, STOCK);
    is_int(out, CLIENTS * ROUNDS - STOCK, "stock: %s: the other %d buys see it sold out", S, CLIENTS * ROUNDS - STOCK);
    ok(min_seen >= 0, "stock: %s: never below 0 (lowest seen %lld)", S, min_seen);
    *final = hp_cmd_int(redis, "DECRBY stock 0");
    is_int(*final, 0, "stock: %s: ends at 0", S);
}

static void test_transfer(const hp_proc *t, char *final, size_t cap)
{
    const char *S = t == proxy ? "proxy" : "direct";
    lk_flushall(redis);
    if (!hp_cmd_ok(redis, "MSET acct:0 1000 acct:1 1000 acct:2 1000 acct:3 1000")) hp_abort("MSET failed");
    worker ws[CLIENTS];
    run(t, transfer_worker, ws);
    int done = 0, retries = 0, errors = 0;
    for (int i = 0; i < CLIENTS; i++) {
        done += ws[i].sold;
        retries += ws[i].retries;
        errors += ws[i].errors;
    }
    diag("transfer, %s: %d transfers, %d retries after a conflict", S, done, retries);
    is_int(errors, 0, "transfer: %s: no errors", S);
    is_int(done, CLIENTS * ROUNDS, "transfer: %s: every transfer committed once", S);
    snprintf(final, cap, "%s", lk_pstr(redis, "MGET acct:0 acct:1 acct:2 acct:3"));
    /* acct:j loses 50*(j+1) and gains 50*j from client j-1 (acct:0 gains 50*4). */
    is_string(final, "[1150,950,950,950]", "transfer: %s: balances as computed", S);
}

int main(void)
{
    lk_require_real_proxy();
    plan_lazy();
    redis = hp_redis_start(NULL);
    proxy = lk_proxy_start(redis, "txn", "rule lock: enforce ttl=5s\nrule stock:lock enforce", logpath, sizeof logpath);

    long long sd, sp;
    test_stock(redis, &sd);
    test_stock(proxy, &sp);
    is_int(sp, sd, "stock: the proxy ends where Redis does");

    char td[256], tp[256];
    test_transfer(redis, td, sizeof td);
    test_transfer(proxy, tp, sizeof tp);
    is_string(tp, td, "transfer: the proxy ends where Redis does");

    /* Nothing here is a lock key: nothing but sync markers in the log. */
    lk_log_sync(proxy, logpath);
    hp_buf b = {0};
    lk_read_file(logpath, &b);
    is_int(lk_log_count(&b, NULL, NULL) - lk_log_count_prefix(&b, "sync:"), 0, "no lock events for ordinary keys");
    hp_buf_free(&b);

    is_int(hp_stop(proxy, 10000), 0, "the proxy exits 0 on SIGTERM");
    return 0;
}
