/* Reference-counted blocks and write requests (see buf.h). */
#include <stdlib.h>
#include <string.h>
#include "proxy/buf.h"

/* A few blocks and write requests are kept for reuse so that a busy pipeline does not call
 * malloc per read or per write; the pools are small so idle memory goes back to the system. */
#define POOL_MAX 64

static lp_block *block_pool[POOL_MAX];
static int block_pooled;
static lp_wreq *wreq_pool[POOL_MAX];
static int wreq_pooled;

lp_block *lp_block_new(size_t min) {
    lp_block *b;
    size_t cap = min <= LP_BLOCK_SIZE ? LP_BLOCK_SIZE : min;
    if (cap == LP_BLOCK_SIZE && block_pooled > 0) {
        b = block_pool[--block_pooled];
    } else {
        b = malloc(sizeof(*b) + cap);
        if (b == NULL) return NULL;
        b->cap = cap;
    }
    b->refs = 1;
    b->len = 0;
    return b;
}

lp_block *lp_block_copy(const void *p, size_t len) {
    lp_block *b = malloc(sizeof(*b) + len);
    if (b == NULL) return NULL;
    b->refs = 1;
    b->cap = b->len = len;
    memcpy(b->data, p, len);
    return b;
}

void lp_block_unref(lp_block *b) {
    if (b == NULL || --b->refs > 0) return;
    if (b->cap == LP_BLOCK_SIZE && block_pooled < POOL_MAX) {
        block_pool[block_pooled++] = b;
        return;
    }
    free(b);
}

void lp_block_pool_drain(void) {
    while (block_pooled > 0) free(block_pool[--block_pooled]);
    while (wreq_pooled > 0) free(wreq_pool[--wreq_pooled]);
}

int lp_out_add(lp_out *o, lp_block *b, size_t off, size_t len) {
    lp_wreq *w = o->w;
    if (len == 0) return 0;
    if (w == NULL) {
        w = wreq_pooled > 0 ? wreq_pool[--wreq_pooled] : malloc(sizeof(*w));
        if (w == NULL) abort();   /* out of memory on the data path: as Redis, die loudly */
        w->n = 0;
        w->bytes = 0;
        o->w = w;
    }
    w->bytes += len;
    if (w->n > 0 && w->blk[w->n - 1] == b &&
        w->bufs[w->n - 1].base + w->bufs[w->n - 1].len == b->data + off) {
        w->bufs[w->n - 1].len += len;
        return 0;
    }
    w->bufs[w->n].base = b->data + off;
    w->bufs[w->n].len = len;
    w->blk[w->n] = lp_block_ref(b);
    w->n++;
    return w->n == LP_OUT_MAX;
}

lp_wreq *lp_out_take(lp_out *o) {
    lp_wreq *w = o->w;
    o->w = NULL;
    return w;
}

void lp_wreq_free(lp_wreq *w) {
    if (w == NULL) return;
    for (int i = 0; i < w->n; i++) lp_block_unref(w->blk[i]);
    if (wreq_pooled < POOL_MAX) wreq_pool[wreq_pooled++] = w;
    else free(w);
}
