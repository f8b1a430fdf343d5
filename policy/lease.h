/* The lease table: who acquired which lock through this proxy, with which
 * token, until when.
 *
 * A lease is keyed by (key, owner), so that the expired lease of one holder is still known,
 * for a grace period, after another holder acquired the same key: that is how a late DEL is
 * told apart from a foreign one. Keys, owners and values are binary-safe byte strings; the
 * owner is whatever the caller builds for the rule's scope ("conn:17", "addr:10.0.0.5",
 * "name:worker-3").
 *
 * Bounded: at most max_entries leases, and, with lease_table_set_max_bytes, at most that many
 * bytes (entries, their strings, the conn lists and the index arrays, each allocation counted
 * with a fixed allocator overhead). When full, the leases with the earliest deadline go (the
 * expired ones first) until the new one fits; a connection that lost a lease this way is
 * marked (lease_conn_lost) until lease_drop_conn, so that its caller can tell "this
 * connection never had it" from "the cache may have forgotten it". No sockets, no clock:
 * callers pass the time in (monotonic milliseconds).
 *
 * Costs: put/get/set_deadline/del are O(1) average plus O(log n) for the deadline heap;
 * lease_drop_conn is O(leases of that connection); lease_sweep is O(removed * log n). */
#ifndef LP_LEASE_H
#define LP_LEASE_H

#include <stddef.h>
#include <stdint.h>

/* One lease. The byte strings are owned by the table and are also NUL-terminated (the NUL is
 * not counted in the lengths). Read-only for callers. */
typedef struct lease {
    char *key;
    size_t keylen;
    char *owner;
    size_t ownerlen;
    char *value;             /* the application's token, as it was SET */
    size_t valuelen;
    uint64_t conn_id;        /* the session that acquired it */
    int conn_scoped;         /* ends with that session (lease_drop_conn) */
    int64_t acquired_ms;     /* when lease_put recorded it */
    int64_t deadline_ms;     /* live while deadline_ms >= now */
} lease;

typedef struct lease_table lease_table;

/* Creates an empty table that holds at most max_entries leases (0 is taken as 1).
 * Returns NULL when out of memory. */
lease_table *lease_table_new(size_t max_entries);

/* Frees the table and every lease in it. Accepts NULL. */
void lease_table_free(lease_table *t);

/* Records the lease of (key, owner), replacing the one already there (its value, conn_id,
 * scope, acquired_ms and deadline all take the new values). When the table is full and the
 * pair is new, the lease with the earliest deadline is evicted first.
 * Returns 0; 1 when the evicted lease was still live (deadline_ms >= now_ms), which the
 * caller may want to log; -1 when out of memory, in which case no lease of (key, owner) is
 * left in the table (a stale token is worse than none). */
int lease_put(lease_table *t, const void *key, size_t keylen, const void *owner, size_t ownerlen,
              const void *value, size_t valuelen, uint64_t conn_id, int64_t now_ms,
              int64_t deadline_ms, int conn_scoped);

/* Returns the lease of (key, owner), or NULL. The pointer stays valid until the next call
 * that changes the table (put, set_deadline, del, drop_conn, sweep, free). */
const lease *lease_get(lease_table *t, const void *key, size_t keylen, const void *owner,
                       size_t ownerlen);

/* Moves the deadline of the lease of (key, owner). Returns 0, or -1 when there is none. */
int lease_set_deadline(lease_table *t, const void *key, size_t keylen, const void *owner,
                       size_t ownerlen, int64_t deadline_ms);

/* Removes the lease of (key, owner) when there is one. */
void lease_del(lease_table *t, const void *key, size_t keylen, const void *owner, size_t ownerlen);

/* Removes the connection-scoped leases acquired by conn_id (a session that closed); leases
 * of other scopes stay. Returns how many were removed. */
size_t lease_drop_conn(lease_table *t, uint64_t conn_id);

/* Removes the leases whose deadline is more than grace_ms before now_ms (a negative grace
 * counts as 0). Returns how many. Cheap when nothing is due: meant for a periodic timer. */
size_t lease_sweep(lease_table *t, int64_t now_ms, int64_t grace_ms);

/* Calls fn for every lease, in no particular order; fn must not change the table. Accepts
 * NULL. */
void lease_each(const lease_table *t, void (*fn)(const lease *l, void *ud), void *ud);

/* Number of leases in the table. Accepts NULL (0). */
size_t lease_count(const lease_table *t);
/* Number of live leases (deadline_ms >= now_ms). O(leases that have ended and are still kept,
 * for their grace period), not O(all). Accepts NULL (0). */
size_t lease_count_live(const lease_table *t, int64_t now_ms);

/* Sets the byte budget (0: none). Takes effect at the next lease_put. */
void lease_table_set_max_bytes(lease_table *t, size_t max_bytes);

/* The bytes the table accounts for (see above); never above the budget after a lease_put
 * unless one entry alone is larger. Accepts NULL (0). */
size_t lease_bytes(const lease_table *t);

/* How many leases were evicted to make room: live ones (live != 0) or expired ones. */
uint64_t lease_evicted(const lease_table *t, int live);

/* 1 when a lease of conn_id was evicted since its first lease (or since lease_drop_conn). */
int lease_conn_lost(const lease_table *t, uint64_t conn_id);

#endif
