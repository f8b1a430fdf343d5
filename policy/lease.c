/* The lease table. See lease.h.
 *
 * Three indexes over one set of entries:
 *   - a chained hash table on (key, owner), grown by doubling at load factor 1;
 *   - a binary min-heap on deadline_ms, for eviction and sweeping (the earliest deadline is
 *     always at heap[0]; each entry knows its heap slot);
 *   - for connection-scoped leases, a small hash map conn_id -> doubly-linked list of that
 *     connection's entries, so that a closing session drops its leases in O(its leases).
 * Each entry is one allocation holding the key and owner bytes; the value is a second one
 * because a replacing lease_put changes it. */
#include "policy/lease.h"

#include <stdlib.h>
#include <string.h>

#define LEASE_MIN_BUCKETS 64
#define CONN_MIN_BUCKETS 16

typedef struct conn_list conn_list;

typedef struct entry {
    lease l;                    /* l.key and l.owner point into data[] */
    uint64_t hash;
    struct entry *next;         /* hash chain */
    size_t heap_idx;
    conn_list *conn;            /* NULL unless l.conn_scoped */
    struct entry *cprev, *cnext;
    char data[];                /* key, NUL, owner, NUL */
} entry;

struct conn_list {
    uint64_t conn_id;
    size_t n;
    int lost;                   /* an entry of it was evicted: kept until lease_drop_conn */
    entry *head;
    conn_list *next;            /* conn map chain */
};

struct lease_table {
    entry **buckets;
    size_t nbuckets;            /* a power of two */
    size_t count, max;
    entry **heap;               /* count entries, ordered by deadline_ms */
    size_t heap_cap;
    conn_list **cbuckets;
    size_t ncbuckets;           /* a power of two */
    size_t nconns;
    uint64_t seed;
    size_t bytes;               /* entries and conn lists; the arrays are added by lease_bytes */
    size_t max_bytes;           /* 0: no byte budget */
    uint64_t evicted_live, evicted_expired;
};

/* What the allocator is taken to add to each allocation, so that many small leases are
 * not undercounted. */
#define ALLOC_OVERHEAD 16

static size_t entry_bytes(size_t keylen, size_t ownerlen, size_t valuelen)
{
    return sizeof(entry) + keylen + 1 + ownerlen + 1 + ALLOC_OVERHEAD + valuelen + 1 + ALLOC_OVERHEAD;
}

#define CONN_BYTES (sizeof(conn_list) + ALLOC_OVERHEAD)

/* ---- hashing ---- */

/* A 64-bit finalizer (xor-shift and multiply rounds): spreads every input bit over the result. */
static uint64_t mix64(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ULL;
    x ^= x >> 33;
    return x;
}

static uint64_t fnv_bytes(uint64_t h, const void *p, size_t n)
{
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++) h = (h ^ b[i]) * 0x100000001b3ULL;
    return h;
}

/* Hash of (key, owner), seeded per table. The key's length is mixed in between the two so
 * that ("ab", "c") and ("a", "bc") differ. Not a cryptographic defence against chosen keys:
 * the seed only makes collisions harder to precompute. */
static uint64_t pair_hash(const lease_table *t, const void *key, size_t keylen, const void *owner,
                          size_t ownerlen)
{
    uint64_t h = fnv_bytes(0xcbf29ce484222325ULL ^ t->seed, key, keylen);
    h = mix64(h ^ (uint64_t)keylen);
    h = fnv_bytes(h, owner, ownerlen);
    return mix64(h ^ (uint64_t)ownerlen);
}

static size_t conn_slot(const lease_table *t, uint64_t conn_id)
{
    return (size_t)(mix64(conn_id ^ t->seed) & (t->ncbuckets - 1));
}

/* ---- the deadline heap ---- */

static void heap_set(lease_table *t, size_t i, entry *e)
{
    t->heap[i] = e;
    e->heap_idx = i;
}

/* Moves the entry at slot i towards the root while it is earlier than its parent. */
static void heap_up(lease_table *t, size_t i)
{
    entry *e = t->heap[i];
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (t->heap[parent]->l.deadline_ms <= e->l.deadline_ms) break;
        heap_set(t, i, t->heap[parent]);
        i = parent;
    }
    heap_set(t, i, e);
}

/* Moves the entry at slot i towards the leaves while a child is earlier. */
static void heap_down(lease_table *t, size_t i)
{
    entry *e = t->heap[i];
    size_t n = t->count;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= n) break;
        if (c + 1 < n && t->heap[c + 1]->l.deadline_ms < t->heap[c]->l.deadline_ms) c++;
        if (e->l.deadline_ms <= t->heap[c]->l.deadline_ms) break;
        heap_set(t, i, t->heap[c]);
        i = c;
    }
    heap_set(t, i, e);
}

/* Restores the heap order around slot i after its deadline changed either way. */
static void heap_fix(lease_table *t, size_t i)
{
    if (i > 0 && t->heap[(i - 1) / 2]->l.deadline_ms > t->heap[i]->l.deadline_ms) heap_up(t, i);
    else heap_down(t, i);
}

/* Makes room for n heap slots. Returns 0, or -1 when out of memory. */
static int heap_reserve(lease_table *t, size_t n)
{
    if (n <= t->heap_cap) return 0;
    size_t cap = t->heap_cap ? t->heap_cap : 64;
    while (cap < n) cap *= 2;
    if (cap > t->max) cap = t->max;
    entry **h = realloc(t->heap, cap * sizeof(*h));
    if (h == NULL) return -1;
    t->heap = h;
    t->heap_cap = cap;
    return 0;
}

/* ---- the per-connection lists ---- */

static conn_list *conn_find(const lease_table *t, uint64_t conn_id)
{
    conn_list *c = t->cbuckets[conn_slot(t, conn_id)];
    while (c != NULL && c->conn_id != conn_id) c = c->next;
    return c;
}

/* Doubles the conn map; on allocation failure the chains just stay longer. */
static void conn_grow(lease_table *t)
{
    size_t n = t->ncbuckets * 2;
    conn_list **nb = calloc(n, sizeof(*nb));
    if (nb == NULL) return;
    conn_list **old = t->cbuckets;
    size_t oldn = t->ncbuckets;
    t->cbuckets = nb;
    t->ncbuckets = n;
    for (size_t i = 0; i < oldn; i++) {
        conn_list *c = old[i];
        while (c != NULL) {
            conn_list *next = c->next;
            size_t s = conn_slot(t, c->conn_id);
            c->next = nb[s];
            nb[s] = c;
            c = next;
        }
    }
    free(old);
}

/* Adds e to the list of its connection, creating the list. Returns 0, or -1 when out of
 * memory (e is then in no list). */
static int conn_link(lease_table *t, entry *e)
{
    conn_list *c = conn_find(t, e->l.conn_id);
    if (c == NULL) {
        c = calloc(1, sizeof(*c));
        if (c == NULL) return -1;
        c->conn_id = e->l.conn_id;
        t->bytes += CONN_BYTES;
        size_t s = conn_slot(t, c->conn_id);
        c->next = t->cbuckets[s];
        t->cbuckets[s] = c;
        if (++t->nconns > t->ncbuckets) conn_grow(t);
    }
    e->cprev = NULL;
    e->cnext = c->head;
    if (c->head) c->head->cprev = e;
    c->head = e;
    c->n++;
    e->conn = c;
    return 0;
}

/* Unlinks the list c from the conn map and frees it. */
static void conn_free(lease_table *t, conn_list *c)
{
    conn_list **pc = &t->cbuckets[conn_slot(t, c->conn_id)];
    while (*pc != c) pc = &(*pc)->next;
    *pc = c->next;
    free(c);
    t->nconns--;
    t->bytes -= CONN_BYTES;
}

/* Takes e out of its connection's list; frees the list when it becomes empty, unless it
 * remembers an eviction. */
static void conn_unlink(lease_table *t, entry *e)
{
    conn_list *c = e->conn;
    if (c == NULL) return;
    if (e->cprev) e->cprev->cnext = e->cnext;
    else c->head = e->cnext;
    if (e->cnext) e->cnext->cprev = e->cprev;
    e->conn = NULL;
    e->cprev = e->cnext = NULL;
    if (--c->n > 0 || c->lost) return;
    conn_free(t, c);
}

/* ---- the table ---- */

lease_table *lease_table_new(size_t max_entries)
{
    static uint64_t counter;
    lease_table *t = calloc(1, sizeof(*t));
    if (t == NULL) return NULL;
    t->max = max_entries ? max_entries : 1;
    t->nbuckets = LEASE_MIN_BUCKETS;
    t->buckets = calloc(t->nbuckets, sizeof(*t->buckets));
    t->ncbuckets = CONN_MIN_BUCKETS;
    t->cbuckets = calloc(t->ncbuckets, sizeof(*t->cbuckets));
    if (t->buckets == NULL || t->cbuckets == NULL) goto oom;
    t->seed = mix64((uint64_t)(uintptr_t)t ^ (++counter * 0x9e3779b97f4a7c15ULL));
    return t;
oom:
    lease_table_free(t);
    return NULL;
}

void lease_table_free(lease_table *t)
{
    if (t == NULL) return;
    if (t->buckets) {
        for (size_t i = 0; i < t->nbuckets; i++) {
            entry *e = t->buckets[i];
            while (e) {
                entry *next = e->next;
                free(e->l.value);
                free(e);
                e = next;
            }
        }
    }
    if (t->cbuckets) {
        for (size_t i = 0; i < t->ncbuckets; i++) {
            conn_list *c = t->cbuckets[i];
            while (c) {
                conn_list *next = c->next;
                free(c);
                c = next;
            }
        }
    }
    free(t->buckets);
    free(t->cbuckets);
    free(t->heap);
    free(t);
}

/* Returns the entry of (key, owner) with hash h, or NULL. */
static entry *find(const lease_table *t, const void *key, size_t keylen, const void *owner,
                   size_t ownerlen, uint64_t h)
{
    for (entry *e = t->buckets[h & (t->nbuckets - 1)]; e; e = e->next) {
        if (e->hash == h && e->l.keylen == keylen && e->l.ownerlen == ownerlen &&
            memcmp(e->l.key, key, keylen) == 0 && memcmp(e->l.owner, owner, ownerlen) == 0)
            return e;
    }
    return NULL;
}

/* Doubles the bucket array; on allocation failure the chains just stay longer. */
static void grow(lease_table *t)
{
    size_t n = t->nbuckets * 2;
    entry **nb = calloc(n, sizeof(*nb));
    if (nb == NULL) return;
    for (size_t i = 0; i < t->nbuckets; i++) {
        entry *e = t->buckets[i];
        while (e) {
            entry *next = e->next;
            e->next = nb[e->hash & (n - 1)];
            nb[e->hash & (n - 1)] = e;
            e = next;
        }
    }
    free(t->buckets);
    t->buckets = nb;
    t->nbuckets = n;
}

/* Removes e from all three indexes and frees it. */
static void remove_entry(lease_table *t, entry *e)
{
    entry **pe = &t->buckets[e->hash & (t->nbuckets - 1)];
    while (*pe != e) pe = &(*pe)->next;
    *pe = e->next;

    size_t i = e->heap_idx;
    t->count--;
    if (i != t->count) {
        heap_set(t, i, t->heap[t->count]);
        heap_fix(t, i);
    }

    conn_unlink(t, e);
    t->bytes -= entry_bytes(e->l.keylen, e->l.ownerlen, e->l.valuelen);
    free(e->l.value);
    free(e);
}

/* Evicts the entry with the earliest deadline (an expired one when there is any); its
 * connection remembers that it lost an entry. */
static void evict_one(lease_table *t, int64_t now_ms)
{
    entry *victim = t->heap[0];
    if (victim->l.deadline_ms >= now_ms) t->evicted_live++;
    else t->evicted_expired++;
    if (victim->conn) victim->conn->lost = 1;
    remove_entry(t, victim);
}

/* The bytes of the arrays, which grow with the number of entries. */
static size_t array_bytes(const lease_table *t)
{
    return (t->nbuckets + t->heap_cap + t->ncbuckets) * sizeof(void *) + 3 * ALLOC_OVERHEAD;
}

/* Evicts until `need` more bytes fit in the budget (keep: an entry that must stay). */
static void make_room(lease_table *t, size_t need, int64_t now_ms, const entry *keep)
{
    if (t->max_bytes == 0) return;
    while (t->count > 0 && t->bytes + array_bytes(t) + need > t->max_bytes) {
        if (t->heap[0] == keep) {
            if (t->count == 1) return;
            /* The kept entry is the earliest: take the earlier of its two children. */
            size_t c = t->count > 2 && t->heap[2]->l.deadline_ms < t->heap[1]->l.deadline_ms ? 2 : 1;
            entry *v = t->heap[c];
            if (v->l.deadline_ms >= now_ms) t->evicted_live++;
            else t->evicted_expired++;
            if (v->conn) v->conn->lost = 1;
            remove_entry(t, v);
            continue;
        }
        evict_one(t, now_ms);
    }
}

static char *dup_bytes(const void *p, size_t n)
{
    char *d = malloc(n + 1);
    if (d == NULL) return NULL;
    if (n) memcpy(d, p, n);
    d[n] = '\0';
    return d;
}

/* Gives a fresh entry its hash-table, heap and connection places. Returns 0, or -1 when out
 * of memory (e is then freed). The heap has room: the caller reserved it. */
static int insert_entry(lease_table *t, entry *e)
{
    if (e->l.conn_scoped && conn_link(t, e) < 0) {
        t->bytes -= entry_bytes(e->l.keylen, e->l.ownerlen, e->l.valuelen);
        free(e->l.value);
        free(e);
        return -1;
    }
    size_t b = e->hash & (t->nbuckets - 1);
    e->next = t->buckets[b];
    t->buckets[b] = e;
    t->heap[t->count] = e;
    e->heap_idx = t->count;
    t->count++;
    heap_up(t, e->heap_idx);
    if (t->count > t->nbuckets) grow(t);
    return 0;
}

int lease_put(lease_table *t, const void *key, size_t keylen, const void *owner, size_t ownerlen,
              const void *value, size_t valuelen, uint64_t conn_id, int64_t now_ms,
              int64_t deadline_ms, int conn_scoped)
{
    uint64_t h = pair_hash(t, key, keylen, owner, ownerlen);
    entry *e = find(t, key, keylen, owner, ownerlen, h);
    char *v = dup_bytes(value, valuelen);
    if (v == NULL) {
        if (e) remove_entry(t, e);
        return -1;
    }
    conn_scoped = conn_scoped != 0;

    if (e != NULL) {
        /* Replace in place; re-file it under its (possibly new) connection. */
        t->bytes -= e->l.valuelen;
        t->bytes += valuelen;
        free(e->l.value);
        e->l.value = v;
        e->l.valuelen = valuelen;
        if (e->conn && (!conn_scoped || e->l.conn_id != conn_id)) conn_unlink(t, e);
        e->l.conn_id = conn_id;
        e->l.conn_scoped = conn_scoped;
        e->l.acquired_ms = now_ms;
        e->l.deadline_ms = deadline_ms;
        heap_fix(t, e->heap_idx);
        if (conn_scoped && e->conn == NULL && conn_link(t, e) < 0) {
            remove_entry(t, e);
            return -1;
        }
        make_room(t, 0, now_ms, e);
        return 0;
    }

    uint64_t live_before = t->evicted_live;
    if (t->count >= t->max) evict_one(t, now_ms);
    /* The earliest deadlines go until the new entry fits: expired leases first, then the
     * live leases closest to their end. */
    size_t need = entry_bytes(keylen, ownerlen, valuelen) + (conn_scoped ? CONN_BYTES : 0);
    make_room(t, need, now_ms, NULL);
    int evicted_live = t->evicted_live != live_before;
    if (heap_reserve(t, t->count + 1) < 0) goto oom;
    e = malloc(sizeof(*e) + keylen + 1 + ownerlen + 1);
    if (e == NULL) goto oom;
    memset(e, 0, sizeof(*e));
    e->hash = h;
    e->l.key = e->data;
    e->l.keylen = keylen;
    if (keylen) memcpy(e->l.key, key, keylen);
    e->l.key[keylen] = '\0';
    e->l.owner = e->data + keylen + 1;
    e->l.ownerlen = ownerlen;
    if (ownerlen) memcpy(e->l.owner, owner, ownerlen);
    e->l.owner[ownerlen] = '\0';
    e->l.value = v;
    e->l.valuelen = valuelen;
    e->l.conn_id = conn_id;
    e->l.conn_scoped = conn_scoped;
    e->l.acquired_ms = now_ms;
    e->l.deadline_ms = deadline_ms;
    t->bytes += entry_bytes(keylen, ownerlen, valuelen);
    if (insert_entry(t, e) < 0) return -1;
    return evicted_live;
oom:
    free(v);
    return -1;
}

const lease *lease_get(lease_table *t, const void *key, size_t keylen, const void *owner,
                       size_t ownerlen)
{
    entry *e = find(t, key, keylen, owner, ownerlen, pair_hash(t, key, keylen, owner, ownerlen));
    return e ? &e->l : NULL;
}

int lease_set_deadline(lease_table *t, const void *key, size_t keylen, const void *owner,
                       size_t ownerlen, int64_t deadline_ms)
{
    entry *e = find(t, key, keylen, owner, ownerlen, pair_hash(t, key, keylen, owner, ownerlen));
    if (e == NULL) return -1;
    e->l.deadline_ms = deadline_ms;
    heap_fix(t, e->heap_idx);
    return 0;
}

void lease_del(lease_table *t, const void *key, size_t keylen, const void *owner, size_t ownerlen)
{
    entry *e = find(t, key, keylen, owner, ownerlen, pair_hash(t, key, keylen, owner, ownerlen));
    if (e) remove_entry(t, e);
}

size_t lease_drop_conn(lease_table *t, uint64_t conn_id)
{
    if (t == NULL) return 0;
    conn_list *c = conn_find(t, conn_id);
    if (c == NULL) return 0;
    /* The list goes with the connection, whether or not it lost entries. */
    c->lost = 1;
    size_t n = c->n;
    for (size_t i = 0; i < n; i++) remove_entry(t, c->head);
    conn_free(t, c);
    return n;
}

/* True when deadline lies more than grace ms before now, without overflowing for extreme
 * values (the difference is taken in unsigned arithmetic, where it is exact). */
static int past_grace(int64_t deadline, int64_t now, int64_t grace)
{
    if (deadline >= now) return 0;
    uint64_t behind = (uint64_t)now - (uint64_t)deadline;
    return behind > (uint64_t)(grace > 0 ? grace : 0);
}

size_t lease_sweep(lease_table *t, int64_t now_ms, int64_t grace_ms)
{
    size_t n = 0;
    if (t == NULL) return 0;
    while (t->count > 0 && past_grace(t->heap[0]->l.deadline_ms, now_ms, grace_ms)) {
        remove_entry(t, t->heap[0]);
        n++;
    }
    return n;
}

void lease_each(const lease_table *t, void (*fn)(const lease *l, void *ud), void *ud)
{
    if (t == NULL) return;
    for (size_t i = 0; i < t->count; i++) fn(&t->heap[i]->l, ud);
}

size_t lease_count(const lease_table *t)
{
    return t ? t->count : 0;
}

/* Counts the heap's entries below slot i whose deadline is before now_ms. A slot at or past
 * now_ms has no ended entry under it (the heap order), so only ended entries and their
 * direct children are visited. */
static size_t count_ended(const lease_table *t, size_t i, int64_t now_ms)
{
    if (i >= t->count || t->heap[i]->l.deadline_ms >= now_ms) return 0;
    return 1 + count_ended(t, 2 * i + 1, now_ms) + count_ended(t, 2 * i + 2, now_ms);
}

size_t lease_count_live(const lease_table *t, int64_t now_ms)
{
    if (t == NULL) return 0;
    return t->count - count_ended(t, 0, now_ms);
}

void lease_table_set_max_bytes(lease_table *t, size_t max_bytes)
{
    if (t != NULL) t->max_bytes = max_bytes;
}

size_t lease_bytes(const lease_table *t)
{
    return t ? t->bytes + array_bytes(t) : 0;
}

uint64_t lease_evicted(const lease_table *t, int live)
{
    return t == NULL ? 0 : live ? t->evicted_live : t->evicted_expired;
}

int lease_conn_lost(const lease_table *t, uint64_t conn_id)
{
    if (t == NULL) return 0;
    const conn_list *c = conn_find(t, conn_id);
    return c != NULL && c->lost;
}
