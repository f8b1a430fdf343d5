/* The lease table: put/get/replace, several owners per key, deadlines and sweeping with a
 * grace period, connection-scoped leases, the bound and its eviction order, binary keys, and
 * a randomised comparison against a plain array model. */
#include "tap.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "policy/lease.h"

#define S(lit) lit, sizeof(lit) - 1

static void test_put_get(void)
{
    lease_table *t = lease_table_new(100);
    ok(t != NULL, "table created");
    is_int((long long)lease_count(t), 0, "empty");
    ok(lease_get(t, S("lock:a"), S("conn:1")) == NULL, "get on an empty table: NULL");

    is_int(lease_put(t, S("lock:a"), S("conn:1"), S("tok-1"), 1, 1000, 31000, 1), 0, "put: 0");
    is_int((long long)lease_count(t), 1, "one lease");
    const lease *l = lease_get(t, S("lock:a"), S("conn:1"));
    if (ok(l != NULL, "get finds it")) {
        is_bytes(l->key, l->keylen, S("lock:a"), "  key");
        is_bytes(l->owner, l->ownerlen, S("conn:1"), "  owner");
        is_bytes(l->value, l->valuelen, S("tok-1"), "  value");
        is_int(l->key[l->keylen], 0, "  key is NUL-terminated");
        is_int(l->value[l->valuelen], 0, "  value is NUL-terminated");
        is_int((long long)l->conn_id, 1, "  conn_id");
        is_int(l->conn_scoped, 1, "  conn_scoped");
        is_int(l->acquired_ms, 1000, "  acquired_ms");
        is_int(l->deadline_ms, 31000, "  deadline_ms");
    }
    ok(lease_get(t, S("lock:a"), S("conn:2")) == NULL, "another owner: NULL");
    ok(lease_get(t, S("lock:b"), S("conn:1")) == NULL, "another key: NULL");
    ok(lease_get(t, S("lock:"), S("conn:1")) == NULL, "a prefix of the key: NULL");

    /* Replacing: same (key, owner), everything else new. */
    is_int(lease_put(t, S("lock:a"), S("conn:1"), S("a much longer token"), 9, 2000, 7000, 0), 0,
           "replace: 0");
    is_int((long long)lease_count(t), 1, "still one lease");
    l = lease_get(t, S("lock:a"), S("conn:1"));
    if (ok(l != NULL, "replaced lease found")) {
        is_bytes(l->value, l->valuelen, S("a much longer token"), "  new value");
        is_int((long long)l->conn_id, 9, "  new conn_id");
        is_int(l->conn_scoped, 0, "  new scope");
        is_int(l->acquired_ms, 2000, "  new acquired_ms");
        is_int(l->deadline_ms, 7000, "  new deadline");
    }
    is_int(lease_put(t, S("lock:a"), S("conn:1"), "", 0, 9, 2000, 7000, 0), 0, "empty value");
    l = lease_get(t, S("lock:a"), S("conn:1"));
    ok(l != NULL && l->valuelen == 0 && l->value[0] == '\0', "  empty value stored");

    is_int(lease_set_deadline(t, S("lock:a"), S("conn:1"), 9000), 0, "set_deadline: 0");
    is_int(lease_get(t, S("lock:a"), S("conn:1"))->deadline_ms, 9000, "  moved");
    is_int(lease_set_deadline(t, S("lock:a"), S("conn:2"), 9000), -1, "set_deadline without lease: -1");

    lease_del(t, S("lock:a"), S("conn:2"));
    is_int((long long)lease_count(t), 1, "del of a missing lease: nothing");
    lease_del(t, S("lock:a"), S("conn:1"));
    is_int((long long)lease_count(t), 0, "del");
    ok(lease_get(t, S("lock:a"), S("conn:1")) == NULL, "  gone");
    lease_table_free(t);

    lease_table_free(NULL);
    is_int((long long)lease_count(NULL), 0, "count(NULL) is 0");
    is_int((long long)lease_drop_conn(NULL, 1), 0, "drop_conn(NULL) is 0");
}

static void test_owners(void)
{
    lease_table *t = lease_table_new(100);
    /* A acquired, expired; B acquired after: both are known, each with its own token. */
    lease_put(t, S("lock:k"), S("addr:10.0.0.1"), S("A"), 1, 0, 1000, 0);
    lease_put(t, S("lock:k"), S("addr:10.0.0.2"), S("B"), 2, 1500, 31500, 0);
    lease_put(t, S("lock:k"), S("name:worker-3"), S("C"), 3, 1600, 31600, 0);
    is_int((long long)lease_count(t), 3, "three owners of one key");
    const lease *a = lease_get(t, S("lock:k"), S("addr:10.0.0.1"));
    const lease *b = lease_get(t, S("lock:k"), S("addr:10.0.0.2"));
    ok(a && a->valuelen == 1 && a->value[0] == 'A' && a->deadline_ms == 1000, "A's lease");
    ok(b && b->valuelen == 1 && b->value[0] == 'B' && b->deadline_ms == 31500, "B's lease");
    lease_del(t, S("lock:k"), S("addr:10.0.0.2"));
    ok(lease_get(t, S("lock:k"), S("addr:10.0.0.2")) == NULL, "del B");
    ok(lease_get(t, S("lock:k"), S("addr:10.0.0.1")) != NULL, "  A stays");
    ok(lease_get(t, S("lock:k"), S("name:worker-3")) != NULL, "  C stays");
    lease_table_free(t);
}

static void test_binary(void)
{
    lease_table *t = lease_table_new(100);
    lease_put(t, "lock:\0a", 7, "o\0\xff", 3, "v\0\r\n", 4, 1, 0, 100, 0);
    lease_put(t, "lock:\0b", 7, "o\0\xff", 3, "w", 1, 1, 0, 100, 0);
    lease_put(t, "ab", 2, "c", 1, "1", 1, 1, 0, 100, 0);
    lease_put(t, "a", 1, "bc", 2, "2", 1, 1, 0, 100, 0);
    lease_put(t, "", 0, "", 0, "3", 1, 1, 0, 100, 0);
    is_int((long long)lease_count(t), 5, "keys differing after a NUL, and split points, are distinct");
    const lease *l = lease_get(t, "lock:\0a", 7, "o\0\xff", 3);
    ok(l && l->valuelen == 4 && memcmp(l->value, "v\0\r\n", 4) == 0, "binary key, owner and value");
    ok(lease_get(t, "lock:\0", 6, "o\0\xff", 3) == NULL, "a key cut at its NUL is another key");
    ok(lease_get(t, "lock:\0a", 7, "o", 1) == NULL, "an owner cut at its NUL is another owner");
    l = lease_get(t, "ab", 2, "c", 1);
    ok(l && l->value[0] == '1', "(ab, c)");
    l = lease_get(t, "a", 1, "bc", 2);
    ok(l && l->value[0] == '2', "(a, bc)");
    l = lease_get(t, "", 0, "", 0);
    ok(l && l->value[0] == '3', "empty key and owner");
    lease_table_free(t);
}

static void test_sweep(void)
{
    lease_table *t = lease_table_new(100);
    lease_put(t, S("k1"), S("o"), S("v"), 1, 0, 100, 0);
    lease_put(t, S("k2"), S("o"), S("v"), 1, 0, 200, 0);
    lease_put(t, S("k3"), S("o"), S("v"), 1, 0, 300, 0);
    lease_put(t, S("k4"), S("o"), S("v"), 1, 0, 400, 0);
    is_int((long long)lease_sweep(t, 150, 100), 0, "sweep: nothing more than grace behind");
    is_int((long long)lease_sweep(t, 250, 100), 1, "sweep: the one 150 ms behind goes");
    ok(lease_get(t, S("k1"), S("o")) == NULL, "  k1 gone");
    ok(lease_get(t, S("k2"), S("o")) != NULL, "  k2 (50 ms behind) kept for the grace period");
    is_int((long long)lease_sweep(t, 300, 100), 0, "exactly grace behind: kept");
    is_int((long long)lease_sweep(t, 301, 100), 1, "one ms more: gone");
    /* A holder's EXPIRE moves its deadline, and so its place in the sweep. */
    lease_set_deadline(t, S("k3"), S("o"), 10000);
    lease_set_deadline(t, S("k4"), S("o"), 50);
    is_int((long long)lease_sweep(t, 301, 100), 1, "a deadline moved earlier is swept");
    ok(lease_get(t, S("k3"), S("o")) != NULL, "  a deadline moved later is not");
    is_int((long long)lease_sweep(t, 10000, -5), 0, "negative grace is 0: deadline == now is live");
    is_int((long long)lease_sweep(t, 10001, -5), 1, "  and goes one ms later");
    is_int((long long)lease_count(t), 0, "all swept");

    lease_put(t, S("min"), S("o"), S("v"), 1, 0, INT64_MIN, 0);
    lease_put(t, S("max"), S("o"), S("v"), 1, 0, INT64_MAX, 0);
    is_int((long long)lease_sweep(t, INT64_MAX, INT64_MAX), 1, "extreme deadlines: no overflow");
    ok(lease_get(t, S("max"), S("o")) != NULL, "  INT64_MAX deadline stays");
    is_int((long long)lease_sweep(t, INT64_MIN, 0), 0, "now INT64_MIN: nothing");
    lease_table_free(t);
}

static void test_drop_conn(void)
{
    lease_table *t = lease_table_new(1000);
    lease_put(t, S("a"), S("conn:7"), S("v"), 7, 0, 1000, 1);
    lease_put(t, S("b"), S("conn:7"), S("v"), 7, 0, 1000, 1);
    lease_put(t, S("c"), S("conn:7"), S("v"), 7, 0, 1000, 1);
    lease_put(t, S("d"), S("addr:1.2.3.4"), S("v"), 7, 0, 1000, 0);   /* acquired on 7, not scoped */
    lease_put(t, S("a"), S("conn:8"), S("v"), 8, 0, 1000, 1);
    is_int((long long)lease_drop_conn(t, 99), 0, "drop_conn of a connection without leases");
    is_int((long long)lease_drop_conn(t, 7), 3, "drop_conn(7) removes its three scoped leases");
    ok(lease_get(t, S("d"), S("addr:1.2.3.4")) != NULL, "  a lease of another scope stays");
    ok(lease_get(t, S("a"), S("conn:8")) != NULL, "  another connection's lease stays");
    is_int((long long)lease_count(t), 2, "  two left");
    is_int((long long)lease_drop_conn(t, 7), 0, "drop_conn(7) again: 0");

    /* Re-filing on replace: scope and connection follow the latest put. */
    lease_put(t, S("x"), S("o"), S("v"), 10, 0, 1000, 1);
    lease_put(t, S("x"), S("o"), S("v"), 10, 0, 1000, 0);
    is_int((long long)lease_drop_conn(t, 10), 0, "a lease replaced as unscoped is not dropped");
    lease_put(t, S("y"), S("o"), S("v"), 11, 0, 1000, 1);
    lease_put(t, S("y"), S("o"), S("v"), 12, 0, 1000, 1);
    is_int((long long)lease_drop_conn(t, 11), 0, "a lease re-acquired by another connection: not the old one's");
    is_int((long long)lease_drop_conn(t, 12), 1, "  the new one's");
    lease_put(t, S("z"), S("o"), S("v"), 13, 0, 1000, 1);
    lease_del(t, S("z"), S("o"));
    is_int((long long)lease_drop_conn(t, 13), 0, "a deleted lease is no longer listed");
    lease_put(t, S("w"), S("o"), S("v"), 14, 0, 5, 1);
    lease_sweep(t, 100, 0);
    is_int((long long)lease_drop_conn(t, 14), 0, "a swept lease is no longer listed");

    /* Many connections, many leases each. */
    size_t before = lease_count(t);
    for (int c = 100; c < 400; c++)
        for (int k = 0; k < 3; k++) {
            char key[32];
            int n = snprintf(key, sizeof(key), "lock:%d:%d", c, k);
            lease_put(t, key, (size_t)n, S("conn"), S("v"), (uint64_t)c, 0, 1000 + c, 1);
        }
    is_int((long long)lease_count(t), (long long)before + 900, "900 scoped leases of 300 connections");
    size_t dropped = 0;
    for (int c = 100; c < 400; c++) dropped += lease_drop_conn(t, (uint64_t)c);
    is_int((long long)dropped, 900, "all dropped by their connections");
    is_int((long long)lease_count(t), (long long)before, "  the others stay");
    lease_table_free(t);
}

static void test_bound(void)
{
    lease_table *t = lease_table_new(3);
    lease_put(t, S("a"), S("o"), S("v"), 1, 0, 1000, 1);
    lease_put(t, S("b"), S("o"), S("v"), 1, 0, 500, 1);
    lease_put(t, S("c"), S("o"), S("v"), 1, 0, 2000, 1);
    is_int(lease_put(t, S("d"), S("o"), S("v"), 1, 0, 3000, 1), 1, "full: a live lease evicted (1)");
    is_int((long long)lease_count(t), 3, "  the bound holds");
    ok(lease_get(t, S("b"), S("o")) == NULL, "  the earliest deadline went");
    ok(lease_get(t, S("a"), S("o")) && lease_get(t, S("c"), S("o")) && lease_get(t, S("d"), S("o")),
       "  the others stay");
    is_int(lease_put(t, S("a"), S("o"), S("v2"), 1, 0, 4000, 1), 0, "full: replacing evicts nothing");
    is_int((long long)lease_count(t), 3, "  still 3");
    /* c (2000) is the earliest now; at 2500 it is expired. */
    is_int(lease_put(t, S("e"), S("o"), S("v"), 1, 2500, 5000, 1), 0, "full with an expired lease: 0");
    ok(lease_get(t, S("c"), S("o")) == NULL, "  the expired one went");
    is_int(lease_put(t, S("f"), S("o"), S("v"), 1, 3000, 6000, 1), 1, "deadline == now is live: 1");
    ok(lease_get(t, S("d"), S("o")) == NULL, "  d (3000) went");
    is_int((long long)lease_drop_conn(t, 1), 3, "evicted leases left the connection list");
    lease_table_free(t);

    t = lease_table_new(0);
    lease_put(t, S("a"), S("o"), S("v"), 1, 0, 10, 0);
    lease_put(t, S("b"), S("o"), S("v"), 1, 0, 20, 0);
    is_int((long long)lease_count(t), 1, "max_entries 0 is taken as 1");
    lease_table_free(t);
}

/* The byte budget: never passed after a put, expired leases go first, the connections that
 * lost a lease are marked until lease_drop_conn, and the accounting returns to the empty
 * table's once everything is gone. */
static void test_bytes(void)
{
    lease_table *t = lease_table_new(1000000);
    size_t empty = lease_bytes(t);
    ok(empty > 0 && empty < 4096, "an empty table accounts for its arrays (%zu bytes)", empty);
    lease_table_set_max_bytes(t, 64 * 1024);
    static char v[1024];
    memset(v, 'x', sizeof(v));
    char key[32];
    int over = 0;
    /* conn 1: 50 leases expiring at 100; conn 2: live ones at 10000, many more than fit. */
    for (int i = 0; i < 50; i++) {
        int n = snprintf(key, sizeof(key), "old%d", i);
        lease_put(t, key, (size_t)n, S("c1"), v, sizeof(v), 1, 0, 100, 1);
        if (lease_bytes(t) > 64 * 1024) over++;
    }
    is_int((long long)lease_count(t), 50, "50 leases of 1 KiB fit in 64 KiB");
    is_int(lease_conn_lost(t, 1), 0, "  conn 1 lost none");
    for (int i = 0; i < 500; i++) {
        int n = snprintf(key, sizeof(key), "new%d", i);
        lease_put(t, key, (size_t)n, S("c2"), v, sizeof(v), 2, 200, 10000 + i, 1);
        if (lease_bytes(t) > 64 * 1024) over++;
    }
    is_int(over, 0, "the accounted bytes never passed the budget (now %zu)", lease_bytes(t));
    ok(lease_count(t) > 40 && lease_count(t) < 64, "  %zu leases of 1 KiB kept", lease_count(t));
    is_int((long long)lease_evicted(t, 0), 50, "  the 50 expired leases went first");
    ok(lease_evicted(t, 1) > 0, "  then the live ones closest to their end (%llu)", (unsigned long long)lease_evicted(t, 1));
    ok(lease_get(t, S("new499"), S("c2")) != NULL && lease_get(t, S("new0"), S("c2")) == NULL,
       "  the latest deadlines stay");
    is_int(lease_conn_lost(t, 1), 1, "conn 1 is marked: it lost leases");
    is_int(lease_conn_lost(t, 2), 1, "conn 2 is marked too");
    is_int(lease_conn_lost(t, 3), 0, "an unknown connection is not");
    /* A replaced value that grows evicts others, never itself. */
    static char big[8192];
    memset(big, 'y', sizeof(big));
    lease_put(t, S("new499"), S("c2"), big, sizeof(big), 2, 300, 20000, 1);
    ok(lease_get(t, S("new499"), S("c2")) != NULL && lease_get(t, S("new499"), S("c2"))->valuelen == sizeof(big),
       "a replaced lease that grew stays");
    ok(lease_bytes(t) <= 64 * 1024, "  within the budget (%zu)", lease_bytes(t));
    is_int((long long)lease_drop_conn(t, 1), 0, "conn 1 has no lease left");
    is_int(lease_conn_lost(t, 1), 0, "  and its mark goes with lease_drop_conn");
    lease_drop_conn(t, 2);
    is_int((long long)lease_count(t), 0, "everything dropped");
    ok(lease_bytes(t) >= empty && lease_bytes(t) < empty + 16384,
       "  the accounting is back to the arrays alone (%zu bytes; they do not shrink)", lease_bytes(t));
    /* One entry larger than the whole budget is still kept (alone). */
    lease_table_set_max_bytes(t, 100);
    static char huge[4096];
    lease_put(t, S("h"), S("c3"), huge, sizeof(huge), 3, 0, 1, 1);
    is_int((long long)lease_count(t), 1, "an entry larger than the budget is kept alone");
    lease_put(t, S("i"), S("c3"), S("v"), 3, 0, 2, 1);
    is_int((long long)lease_count(t), 1, "  and goes for the next");
    lease_table_free(t);
    ok(lease_bytes(NULL) == 0 && lease_evicted(NULL, 1) == 0 && lease_conn_lost(NULL, 1) == 0, "NULL accepted");
}

/* ---- a randomised run against a plain model ---- */

typedef struct model_entry {
    int key, owner;
    int live;
    uint64_t conn;
    int scoped;
    int64_t deadline;
    char value[16];
} model_entry;

#define MKEYS 40
#define MOWNERS 5
#define MMAX 120

static model_entry model[MKEYS * MOWNERS];

static uint64_t rng_state = 0x853c49e6748fea9bULL;
static uint32_t rnd(uint32_t n)
{
    rng_state = rng_state * 6364136223846793005ULL + 1442695040888963407ULL;
    return (uint32_t)(rng_state >> 33) % n;
}

static size_t model_count(void)
{
    size_t n = 0;
    for (size_t i = 0; i < MKEYS * MOWNERS; i++) n += (size_t)model[i].live;
    return n;
}

static int model_check(lease_table *t)
{
    for (int k = 0; k < MKEYS; k++)
        for (int o = 0; o < MOWNERS; o++) {
            char key[16], owner[16];
            int kn = snprintf(key, sizeof(key), "k%d", k), on = snprintf(owner, sizeof(owner), "o%d", o);
            const model_entry *m = &model[k * MOWNERS + o];
            const lease *l = lease_get(t, key, (size_t)kn, owner, (size_t)on);
            if ((l != NULL) != m->live) return 0;
            if (l && (l->deadline_ms != m->deadline || l->conn_id != m->conn || l->conn_scoped != m->scoped ||
                      strcmp(l->value, m->value) != 0))
                return 0;
        }
    return lease_count(t) == model_count();
}

static void test_model(void)
{
    lease_table *t = lease_table_new(MMAX);
    int64_t now = 0, next_unique = 0;
    int agree = 1, ops = 0;
    for (int step = 0; step < 20000 && agree; step++, ops++) {
        int k = (int)rnd(MKEYS), o = (int)rnd(MOWNERS);
        char key[16], owner[16];
        int kn = snprintf(key, sizeof(key), "k%d", k), on = snprintf(owner, sizeof(owner), "o%d", o);
        model_entry *m = &model[k * MOWNERS + o];
        /* Unique deadlines keep the eviction order well defined. */
        int64_t deadline = now + (int64_t)rnd(2000) * 100000 - 50000000 + (next_unique++ % 100000);
        uint32_t op = rnd(100);
        now += rnd(3);
        if (op < 50) {
            uint64_t conn = rnd(8);
            int scoped = (int)rnd(2);
            char value[16];
            snprintf(value, sizeof(value), "v%d", step);
            int want = 0;
            if (!m->live && model_count() >= MMAX) {
                model_entry *victim = NULL;
                for (size_t i = 0; i < MKEYS * MOWNERS; i++)
                    if (model[i].live && (victim == NULL || model[i].deadline < victim->deadline)) victim = &model[i];
                want = victim->deadline >= now;
                victim->live = 0;
            }
            int got = lease_put(t, key, (size_t)kn, owner, (size_t)on, value, strlen(value), conn, now, deadline, scoped);
            m->live = 1;
            m->conn = conn;
            m->scoped = scoped;
            m->deadline = deadline;
            strcpy(m->value, value);
            if (got != want) agree = 0;
        } else if (op < 65) {
            int rc = lease_set_deadline(t, key, (size_t)kn, owner, (size_t)on, deadline);
            if (rc != (m->live ? 0 : -1)) agree = 0;
            if (m->live) m->deadline = deadline;
        } else if (op < 80) {
            lease_del(t, key, (size_t)kn, owner, (size_t)on);
            m->live = 0;
        } else if (op < 90) {
            uint64_t conn = rnd(8);
            size_t want = 0;
            for (size_t i = 0; i < MKEYS * MOWNERS; i++)
                if (model[i].live && model[i].scoped && model[i].conn == conn) {
                    model[i].live = 0;
                    want++;
                }
            if (lease_drop_conn(t, conn) != want) agree = 0;
        } else {
            int64_t grace = (int64_t)rnd(1000000);
            size_t want = 0;
            for (size_t i = 0; i < MKEYS * MOWNERS; i++)
                if (model[i].live && model[i].deadline < now - grace) {
                    model[i].live = 0;
                    want++;
                }
            if (lease_sweep(t, now, grace) != want) agree = 0;
        }
        if (step % 97 == 0 && !model_check(t)) agree = 0;
    }
    if (agree && !model_check(t)) agree = 0;
    ok(agree, "20000 random operations agree with the model (stopped after %d)", ops);
    lease_table_free(t);
}

static void test_many(void)
{
    enum { N = 100000 };
    lease_table *t = lease_table_new(N);
    int ok_put = 1;
    for (int i = 0; i < N; i++) {
        char key[32];
        int n = snprintf(key, sizeof(key), "lock:%d", i);
        /* deadlines in a scrambled order, ten per ms */
        int64_t deadline = (int64_t)((i * 7919) % N) / 10;
        if (lease_put(t, key, (size_t)n, S("o"), key, (size_t)n, (uint64_t)(i % 1000), 0, deadline, i % 2) != 0)
            ok_put = 0;
    }
    ok(ok_put, "100000 puts without eviction");
    is_int((long long)lease_count(t), N, "  all there");
    int found = 1;
    for (int i = 0; i < N; i += 7) {
        char key[32];
        int n = snprintf(key, sizeof(key), "lock:%d", i);
        const lease *l = lease_get(t, key, (size_t)n, S("o"));
        if (l == NULL || l->valuelen != (size_t)n || memcmp(l->value, key, (size_t)n) != 0) found = 0;
    }
    ok(found, "  every seventh found with its value");
    is_int((long long)lease_sweep(t, 1000, 0), 10000, "sweep at 1000 removes deadlines 0..999 (10 each)");
    is_int((long long)lease_drop_conn(t, 1), 90, "drop_conn(1): its scoped leases not yet swept");
    is_int(lease_put(t, S("extra"), S("o"), S("v"), 1, 1000, 999999, 0), 0, "room again after the sweep");
    is_int((long long)lease_sweep(t, 20000, 0), (long long)(N - 10000 - 90), "sweep the rest");
    is_int((long long)lease_count(t), 1, "  the long one stays");
    lease_table_free(t);

    /* Filling past the bound evicts one per put and keeps the newest-deadline ones. */
    t = lease_table_new(1000);
    int evicted = 0;
    for (int i = 0; i < 5000; i++) {
        char key[32];
        int n = snprintf(key, sizeof(key), "k%d", i);
        evicted += lease_put(t, key, (size_t)n, S("o"), S("v"), 0, 0, 1000 + i, 0);
    }
    is_int(evicted, 4000, "4000 live evictions reported");
    is_int((long long)lease_count(t), 1000, "  the bound holds");
    ok(lease_get(t, S("k3999"), S("o")) == NULL && lease_get(t, S("k4000"), S("o")) != NULL,
       "  the latest deadlines stay");
    lease_table_free(t);
}

/* lease_count_live: the leases whose deadline has not passed, however the heap holds them. */
static void test_count_live(void)
{
    lease_table *t = lease_table_new(100);
    char key[32];
    for (int i = 0; i < 50; i++) {
        snprintf(key, sizeof key, "lock:%d", i);
        /* deadlines 1000, 3000, 5000, ... put in a scrambled order */
        int d = (i * 37) % 50;
        lease_put(t, key, strlen(key), S("o"), S("v"), 1, 0, 1000 + 2000 * d, 0);
    }
    is_int((long long)lease_count_live(t, 0), 50, "count_live: all live at 0");
    is_int((long long)lease_count_live(t, 1000), 50, "count_live: a deadline equal to now is live");
    is_int((long long)lease_count_live(t, 1001), 49, "count_live: one ended");
    is_int((long long)lease_count_live(t, 50000), 25, "count_live: half ended");
    is_int((long long)lease_count_live(t, 1000000), 0, "count_live: all ended");
    is_int((long long)lease_count(t), 50, "count still counts the ended ones");
    is_int((long long)lease_count_live(NULL, 0), 0, "count_live(NULL) is 0");
    lease_table_free(t);
}

int main(void)
{
    plan_lazy();
    test_count_live();
    test_put_get();
    test_owners();
    test_binary();
    test_sweep();
    test_drop_conn();
    test_bound();
    test_bytes();
    test_model();
    test_many();
    return 0;
}
