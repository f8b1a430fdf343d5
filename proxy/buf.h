/* Reference-counted byte blocks and coalesced writes.
 *
 * A block holds bytes read from one socket. Bytes are only ever appended to a block, so a
 * write may point into it while the next read fills its free tail: forwarding is zero-copy.
 * Each pending write holds a reference to every block it points into and drops them in its
 * callback; a block is freed (or returned to a small pool) when its last reference goes.
 *
 * lp_out collects the spans one event produces for one destination: adjacent spans of the
 * same block merge, so a pipeline read in one go leaves in one buffer, and everything an
 * event produced goes out in a single uv_write (writev). */
#ifndef LP_BUF_H
#define LP_BUF_H

#include <stddef.h>
#include <uv.h>

#define LP_BLOCK_SIZE (16 * 1024)

typedef struct lp_block {
    int refs;
    size_t cap;          /* bytes of data[] */
    size_t len;          /* bytes filled */
    char data[];
} lp_block;

/* A block with at least min bytes of room (pooled when min <= LP_BLOCK_SIZE); refs = 1. */
lp_block *lp_block_new(size_t min);
/* A block holding a copy of len bytes. */
lp_block *lp_block_copy(const void *p, size_t len);
static inline lp_block *lp_block_ref(lp_block *b) { b->refs++; return b; }
void lp_block_unref(lp_block *b);
/* Frees the pool (at exit, so leak checkers stay quiet). */
void lp_block_pool_drain(void);

#define LP_OUT_MAX 16

typedef struct lp_wreq {
    uv_write_t req;      /* req.data points back at the owner of the stream */
    int n;
    size_t bytes;
    uv_buf_t bufs[LP_OUT_MAX];
    lp_block *blk[LP_OUT_MAX];
} lp_wreq;

typedef struct lp_out {
    lp_wreq *w;          /* NULL until the first span */
} lp_out;

/* Appends len bytes at off in b. Returns 1 when the request is full and must be flushed
 * before the next span (the span itself was added). */
int lp_out_add(lp_out *o, lp_block *b, size_t off, size_t len);
/* Takes the collected request, or NULL when there is nothing to write. */
lp_wreq *lp_out_take(lp_out *o);
void lp_wreq_free(lp_wreq *w);

#endif
