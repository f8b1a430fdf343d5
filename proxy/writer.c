/* The writer: spans of received blocks collected per event and written with uv_try_write
 * first, a queued uv_write for the rest; backpressure from the peers' write queues. */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <ctype.h>
#include <arpa/inet.h>
#include "proxy/session.h"

/* ---- pending queue ---- */

/* Adds a span to an output, writing what was collected when the request is full. */
void sess_emit(session *s, lp_out *o, lp_block *b, size_t off, size_t len) {
    if (lp_out_add(o, b, off, len)) sess_flush(s);
}

void sess_emit_copy(session *s, lp_out *o, const char *p, size_t len) {
    if (len == 0) return;
    lp_block *blk = lp_block_copy(p, len);
    if (blk == NULL) abort();
    sess_emit(s, o, blk, 0, len);
    lp_block_unref(blk);
}

/* ---- writing ---- */

static void write_cb(uv_write_t *req, int status) {
    lp_wreq *w = (lp_wreq *)req;
    session *s = req->data;
    int to_client = req->handle == &s->client.stream;
    if (to_client) s->client_writes--;
    else s->up_writes--;
    lp_wreq_free(w);
    if (s->closing) return;
    if (status < 0) {
        if (!to_client) lp_logf("upstream write failed for client=%s: %s", s->peer, uv_strerror(status));
        session_close(s);
        return;
    }
    sess_update_reading(s);
    sess_maybe_finish(s);
}

/* Writes what one event produced. Most of the time the socket takes it all at once
 * (uv_try_write, which answers EAGAIN itself while earlier writes are queued): no write
 * request, and none of the epoll changes libuv makes when a queued write drains. What the
 * socket does not take goes into a uv_write. Returns 0, or the libuv error of a socket that
 * refused the write: the caller decides what becomes of the session. */
static int write_out(session *s, lp_out *o, uv_stream_t *dst, int *count) {
    lp_wreq *w = lp_out_take(o);
    if (w == NULL) return 0;
    if (s->closing) { lp_wreq_free(w); return 0; }
    if (dst == &s->client.stream) s->px->m.client_out += w->bytes;
    else s->px->m.up_out += w->bytes;
    int first = 0;
    int n = uv_try_write(dst, w->bufs, (unsigned)w->n);
    if (n < 0 && n != UV_EAGAIN) {
        lp_wreq_free(w);
        return n;
    }
    if (n > 0 && (size_t)n == w->bytes) {
        lp_wreq_free(w);
        return 0;
    }
    for (size_t left = n > 0 ? (size_t)n : 0; left > 0; first++) {
        if (left < w->bufs[first].len) {
            w->bufs[first].base += left;
            w->bufs[first].len -= left;
            break;
        }
        left -= w->bufs[first].len;
    }
    w->req.data = s;
    int rc = uv_write(&w->req, dst, w->bufs + first, (unsigned)(w->n - first), write_cb);
    if (rc < 0) {
        lp_wreq_free(w);
        return rc;
    }
    (*count)++;
    return 0;
}

/* Writes what the current event produced: one uv_write per direction. */
void sess_flush(session *s) {
    /* A socket that refuses a write is gone: the session ends (write_out only reports). */
    if (write_out(s, &s->to_up, &s->up.stream, &s->up_writes) < 0 ||
        write_out(s, &s->to_client, &s->client.stream, &s->client_writes) < 0) {
        session_close(s);
        return;
    }
    if (s->closing) return;
    size_t cq = uv_stream_get_write_queue_size(&s->client.stream);
    if ((long long)cq > s->px->cfg->hard_limit) {
        lp_logf("closing client=%s: %zu bytes waiting to be written, over hard-limit", s->peer, cq);
        session_close(s);
        return;
    }
    sess_update_reading(s);
}

/* Backpressure: a side is read only while the other side's write queue is below the
 * high-water mark; once stopped it resumes below the low-water mark. */
void sess_update_reading(session *s) {
    if (s->closing) return;
    const lp_config *c = s->px->cfg;
    size_t upq = uv_stream_get_write_queue_size(&s->up.stream);
    size_t cq = uv_stream_get_write_queue_size(&s->client.stream);

    /* While a lock command holds the requests behind it, reading goes on (no epoll change
     * per lock command) but stops once high-water bytes are waiting. */
    int held_full = s->hold && s->in != NULL && (long long)(s->in->len - s->in_start) > c->high_water;
    int want_client = s->client_state < CL_STOPPED && !s->eof_seen && !held_full &&
                      (sess_up_open(s) || s->up_state == UP_FAILED);
    if (want_client) {
        if (s->client_reading) want_client = (long long)upq <= c->high_water;
        else want_client = (long long)upq <= c->low_water;
    }
    if (want_client && !s->client_reading) {
        if (uv_read_start(&s->client.stream, lp_alloc_client, sess_client_read_cb) == 0) s->client_reading = 1;
    } else if (!want_client && s->client_reading) {
        uv_read_stop(&s->client.stream);
        s->client_reading = 0;
    }

    int want_up = sess_up_open(s);
    if (want_up) {
        if (s->up_reading) want_up = (long long)cq <= c->high_water;
        else want_up = (long long)cq <= c->low_water;
    }
    if (want_up && !s->up_reading) {
        if (uv_read_start(&s->up.stream, lp_alloc_up, sess_up_read_cb) == 0) s->up_reading = 1;
    } else if (!want_up && s->up_reading) {
        uv_read_stop(&s->up.stream);
        s->up_reading = 0;
    }
}
