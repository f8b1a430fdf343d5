/* The lease table: a chained hash table on (key, owner). See lease.h. */
#include <stdlib.h>
#include <string.h>
#include "policy/lease.h"

typedef struct entry {
    lease l;
    uint64_t hash;
    struct entry *next;
} entry;

struct lease_table {
    entry **buckets;
    size_t nbuckets;         /* a power of two */
    size_t count, max;
    size_t nconn;            /* connection-scoped entries */
};

/* FNV-1a over key, a separator, and owner. */
static uint64_t hash_of(const void *key, size_t keylen, const void *owner, size_t ownerlen) {
    uint64_t h = 1469598103934665603ULL;
    const unsigned char *p = key;
    for (size_t i = 0; i < keylen; i++) h = (h ^ p[i]) * 1099511628211ULL;
    h = (h ^ 0xff) * 1099511628211ULL;
    p = owner;
    for (size_t i = 0; i < ownerlen; i++) h = (h ^ p[i]) * 1099511628211ULL;
    return h;
}

lease_table *lease_table_new(size_t max_entries) {
    lease_table *t = calloc(1, sizeof(*t));
    if (t == NULL) return NULL;
    t->nbuckets = 64;
    t->buckets = calloc(t->nbuckets, sizeof(*t->buckets));
    if (t->buckets == NULL) { free(t); return NULL; }
    t->max = max_entries ? max_entries : 1;
    return t;
}

static void entry_free(entry *e) {
    free(e->l.key);
    free(e->l.owner);
    free(e->l.value);
    free(e);
}

void lease_table_free(lease_table *t) {
    if (t == NULL) return;
    for (size_t i = 0; i < t->nbuckets; i++) {
        entry *e = t->buckets[i];
        while (e) { entry *n = e->next; entry_free(e); e = n; }
    }
    free(t->buckets);
    free(t);
}

static entry **find(lease_table *t, const void *key, size_t keylen, const void *owner, size_t ownerlen, uint64_t h) {
    entry **pe = &t->buckets[h & (t->nbuckets - 1)];
    for (; *pe; pe = &(*pe)->next) {
        entry *e = *pe;
        if (e->hash == h && e->l.keylen == keylen && e->l.ownerlen == ownerlen &&
            memcmp(e->l.key, key, keylen) == 0 && memcmp(e->l.owner, owner, ownerlen) == 0)
            return pe;
    }
    return pe;
}

static void unlink_entry(lease_table *t, entry **pe) {
    entry *e = *pe;
    *pe = e->next;
    t->count--;
    if (e->l.conn_scoped) t->nconn--;
    entry_free(e);
}

static void grow(lease_table *t) {
    size_t n = t->nbuckets * 2;
    entry **nb = calloc(n, sizeof(*nb));
    if (nb == NULL) return;              /* keep the longer chains */
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

/* Makes room for one entry: expired ones first, else the one nearest its deadline. */
static int make_room(lease_table *t, int64_t now_ms) {
    if (lease_sweep(t, now_ms, 0) > 0) return 0;
    entry **victim = NULL;
    for (size_t i = 0; i < t->nbuckets; i++)
        for (entry **pe = &t->buckets[i]; *pe; pe = &(*pe)->next)
            if (victim == NULL || (*pe)->l.deadline_ms < (*victim)->l.deadline_ms) victim = pe;
    if (victim) unlink_entry(t, victim);
    return 1;
}

static char *dup(const void *p, size_t len) {
    char *d = malloc(len + 1);
    if (d == NULL) abort();
    memcpy(d, p, len);
    d[len] = '\0';
    return d;
}

int lease_put(lease_table *t, const void *key, size_t keylen, const void *owner, size_t ownerlen,
              const void *value, size_t valuelen, uint64_t conn_id, int64_t now_ms,
              int64_t deadline_ms, int conn_scoped) {
    uint64_t h = hash_of(key, keylen, owner, ownerlen);
    entry **pe = find(t, key, keylen, owner, ownerlen, h);
    int evicted = 0;
    if (*pe == NULL) {
        if (t->count >= t->max) {
            evicted = make_room(t, now_ms);
            pe = find(t, key, keylen, owner, ownerlen, h);
        }
        if (t->count >= t->nbuckets) {
            grow(t);
            pe = find(t, key, keylen, owner, ownerlen, h);
        }
        entry *e = calloc(1, sizeof(*e));
        if (e == NULL) abort();
        e->hash = h;
        e->l.key = dup(key, keylen);
        e->l.keylen = keylen;
        e->l.owner = dup(owner, ownerlen);
        e->l.ownerlen = ownerlen;
        *pe = e;
        t->count++;
    } else {
        free((*pe)->l.value);
        if ((*pe)->l.conn_scoped) t->nconn--;
    }
    entry *e = *pe;
    e->l.value = dup(value, valuelen);
    e->l.valuelen = valuelen;
    e->l.conn_id = conn_id;
    e->l.conn_scoped = conn_scoped;
    if (conn_scoped) t->nconn++;
    e->l.acquired_ms = now_ms;
    e->l.deadline_ms = deadline_ms;
    return evicted;
}

const lease *lease_get(lease_table *t, const void *key, size_t keylen, const void *owner, size_t ownerlen) {
    entry **pe = find(t, key, keylen, owner, ownerlen, hash_of(key, keylen, owner, ownerlen));
    return *pe ? &(*pe)->l : NULL;
}

int lease_set_deadline(lease_table *t, const void *key, size_t keylen, const void *owner,
                       size_t ownerlen, int64_t deadline_ms) {
    entry **pe = find(t, key, keylen, owner, ownerlen, hash_of(key, keylen, owner, ownerlen));
    if (*pe == NULL) return -1;
    (*pe)->l.deadline_ms = deadline_ms;
    return 0;
}

void lease_del(lease_table *t, const void *key, size_t keylen, const void *owner, size_t ownerlen) {
    entry **pe = find(t, key, keylen, owner, ownerlen, hash_of(key, keylen, owner, ownerlen));
    if (*pe) unlink_entry(t, pe);
}

/* A scan of the table, skipped when no connection-scoped lease exists. */
size_t lease_drop_conn(lease_table *t, uint64_t conn_id) {
    size_t n = 0;
    if (t == NULL || t->nconn == 0) return 0;
    for (size_t i = 0; i < t->nbuckets; i++) {
        entry **pe = &t->buckets[i];
        while (*pe) {
            if ((*pe)->l.conn_scoped && (*pe)->l.conn_id == conn_id) { unlink_entry(t, pe); n++; }
            else pe = &(*pe)->next;
        }
    }
    return n;
}

size_t lease_sweep(lease_table *t, int64_t now_ms, int64_t grace_ms) {
    size_t n = 0;
    for (size_t i = 0; i < t->nbuckets; i++) {
        entry **pe = &t->buckets[i];
        while (*pe) {
            if ((*pe)->l.deadline_ms + grace_ms < now_ms) { unlink_entry(t, pe); n++; }
            else pe = &(*pe)->next;
        }
    }
    return n;
}

size_t lease_count(const lease_table *t) { return t ? t->count : 0; }
