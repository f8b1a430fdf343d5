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

/* Bytes waiting in a libuv write queue plus those collected for it during this event. */
static size_t queued(const uv_stream_t *st, const lp_out *o) {
    return uv_stream_get_write_queue_size(st) + (o->w != NULL ? o->w->bytes : 0);
}

/* Bytes the proxy holds for s that only reading the upstream releases: requests held behind
 * a lock command's (or an AUTH's) reply, its own replies queued behind replies still due,
 * and a reply being captured for the policy. (The lock commands of an open transaction are
 * not among them: the client's EXEC or DISCARD releases those, so they count against
 * hard-limit only.) */
static size_t own_bytes(const session *s) {
    size_t n = s->pg.local_bytes + (size_t)s->pg.qlen * sizeof(pend) + s->cap.len;
    if (s->hold && s->in != NULL) n += s->in->len - s->in_start;
    return n;
}

size_t sess_held_bytes(const session *s) {
    size_t n = queued(&s->client.stream, &s->to_client) + queued(&s->up.stream, &s->to_up) + s->cap.cap +
               s->pg.local_bytes + (size_t)s->pg.qlen * sizeof(pend) + (s->pg.nmops > 0 ? s->pg.mops_bytes : 0);
    if (s->in != NULL) n += s->in->cap;
    return n;
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
    size_t held = sess_held_bytes(s);
    if ((long long)held > s->px->cfg->hard_limit) {
        lp_logf("closing client=%s: %zu bytes held for it (%zu waiting to be written to it), over hard-limit",
                s->peer, held, uv_stream_get_write_queue_size(&s->client.stream));
        session_close(s);
        return;
    }
    sess_update_reading(s);
}

/* Backpressure, which never stops both sides for the proxy's own reasons:
 *  - the upstream is read while the client's write queue is below the high-water mark (once
 *    stopped, below the low-water mark): a client that does not read leaves the replies in
 *    Redis's output buffer, as it would without the proxy;
 *  - the client is read while the upstream's write queue is below the marks (Redis is not
 *    reading: a direct client would wait as well) and, while the upstream is read, while the
 *    bytes only upstream replies release (held requests, queued local replies, a capture)
 *    are below them. When the upstream is not read those bytes cannot be released by it, so
 *    the client is read on: a client that writes everything before it reads (redis-py's
 *    Pipeline) finishes writing, then reads, and the upstream resumes.
 * Whatever the proxy holds for the session is bounded by hard-limit (sess_flush). */
void sess_update_reading(session *s) {
    if (s->closing) return;
    const lp_config *c = s->px->cfg;
    long long cq = (long long)queued(&s->client.stream, &s->to_client);
    long long upq = (long long)queued(&s->up.stream, &s->to_up);

    int want_up = sess_up_open(s) && cq <= (s->up_reading ? c->high_water : c->low_water);
    if (want_up && !s->up_reading) {
        if (uv_read_start(&s->up.stream, lp_alloc_up, sess_up_read_cb) == 0) s->up_reading = 1;
        /* upstream-timeout counts only while the upstream is read. */
        sess_arm_upstream_timer(s, 1);
    } else if (!want_up && s->up_reading) {
        uv_read_stop(&s->up.stream);
        s->up_reading = 0;
        sess_arm_upstream_timer(s, 1);
    }

    long long mark = s->client_reading ? c->high_water : c->low_water;
    int want_client = s->client_state < CL_STOPPED && !s->eof_seen &&
                      (sess_up_open(s) || s->up_state == UP_FAILED) && upq <= mark &&
                      (!s->up_reading || (long long)own_bytes(s) <= mark);
    if (want_client && !s->client_reading) {
        if (uv_read_start(&s->client.stream, lp_alloc_client, sess_client_read_cb) == 0) s->client_reading = 1;
    } else if (!want_client && s->client_reading) {
        uv_read_stop(&s->client.stream);
        s->client_reading = 0;
    }
}
