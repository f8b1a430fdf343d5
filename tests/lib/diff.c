/* Integration test harness: differential runs (the same steps straight to Redis and through
 * the proxy) and the normalisers (see harness.h). */
#define _GNU_SOURCE     /* memmem, pipe2, program_invocation_short_name, nftw */
#include "lib/hp_internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

void hp_side_free(hp_side *s)
{
    hp_buf_free(&s->out);
    hp_buf_free(&s->cmp);
}

struct hp_range {
    size_t from, to;
};

void hp_run_steps(const hp_proc *target, const hp_proc *upstream, const hp_step *steps,
                  const hp_diff_opts *opts, size_t want_len, hp_side *side)
{
    static const hp_diff_opts none;
    if (opts == NULL) opts = &none;
    int idle = opts->idle_ms > 0 ? opts->idle_ms : hp_idle_ms();
    int patience = opts->patience_ms > 0 ? opts->patience_ms : 3000;
    if (patience < idle) patience = idle;
    long long until = hp_now_ms() + (opts->deadline_ms > 0 ? opts->deadline_ms : 30000);
    int step_ms = opts->step_ms > 0 ? opts->step_ms : 5000;
    memset(side, 0, sizeof *side);
    hp_buf_append(&side->out, "", 0);

    struct hp_range skips[64];
    int nskips = 0;
    int fd = hp_connect_proc(target, HP_CONNECT_MS);
    if (fd < 0) {
        side->connect_error = errno;
        side->closed = 1;
        diag("%s: cannot connect: %s", target->name, strerror(errno));
    } else {
        hp_pump p = { .fd = fd, .out = &side->out, .last = hp_now_ms() };
        size_t match_from = 0;
        int derailed = 0;          /* a wait step gave up: skip the later ones */
        for (int i = 0; steps[i].kind != HP_STEP_END; i++) {
            const hp_step *s = &steps[i];
            hp_io r = HP_IO_OK;
            long long step_until = hp_now_ms() + step_ms;
            if (step_until > until) step_until = until;
            switch (s->kind) {
            case HP_STEP_SEND:
                r = hp_pump_send(&p, s->data, s->len, until);
                break;
            case HP_STEP_SEND_SKIP: {
                size_t from = side->out.len;
                r = hp_pump_send(&p, s->data, s->len, until);
                if (r == HP_IO_OK) r = hp_pump_quiet(&p, idle, 1, patience, until);
                if (nskips < 64) skips[nskips++] = (struct hp_range){ from, side->out.len };
                break;
            }
            case HP_STEP_PAUSE: {
                long long stop = hp_now_ms() + s->ms;
                while (hp_now_ms() < stop && hp_now_ms() < until)
                    hp_pump_once(&p, NULL, 0, NULL, stop < until ? stop : until, 100);
                break;
            }
            case HP_STEP_WAIT_BYTES:
                while (!derailed && side->out.len < s->len && !p.closed && hp_now_ms() < step_until)
                    hp_pump_once(&p, NULL, 0, NULL, step_until, 100);
                if (side->out.len < s->len) {
                    if (!derailed)
                        diag("%s: step %d: waited for %zu bytes, got %zu", target->name, i,
                             s->len, side->out.len);
                    r = p.closed ? HP_IO_EOF : HP_IO_TIMEOUT;
                }
                break;
            case HP_STEP_WAIT_MATCH: {
                const char *text = s->data;
                size_t tlen = strlen(text), at, scan = match_from;
                /* Each pass searches only the bytes that arrived since the last one (with an
                 * overlap of tlen - 1), so that waiting behind 64 MiB stays linear. */
                while ((at = hp_buf_find(&side->out, scan, text, tlen)) == (size_t)-1 &&
                       !derailed && !p.closed && hp_now_ms() < step_until) {
                    if (side->out.len >= tlen && side->out.len - tlen + 1 > scan)
                        scan = side->out.len - tlen + 1;
                    hp_pump_once(&p, NULL, 0, NULL, step_until, 100);
                }
                if (at == (size_t)-1) at = hp_buf_find(&side->out, scan, text, tlen);
                if (at == (size_t)-1) {
                    if (!derailed)
                        diag("%s: step %d: \"%s\" did not arrive", target->name, i,
                             hp_esc(text, tlen, 80));
                    r = p.closed ? HP_IO_EOF : HP_IO_TIMEOUT;
                } else {
                    match_from = at + tlen;
                }
                break;
            }
            case HP_STEP_WAIT_QUIET:
                r = hp_pump_quiet(&p, s->ms, 0, s->ms, until);
                break;
            case HP_STEP_CALL:
                s->fn(target, upstream, s->arg);
                break;
            case HP_STEP_END:
                break;
            }
            if (r == HP_IO_TIMEOUT) {
                side->timed_out = 1;
                if (!derailed) diag("%s: step %d did not complete in time", target->name, i);
                if (s->kind == HP_STEP_WAIT_BYTES || s->kind == HP_STEP_WAIT_MATCH) derailed = 1;
            }
        }
        if (hp_pump_quiet(&p, idle, want_len, patience, until) == HP_IO_TIMEOUT) {
            side->timed_out = 1;
            diag("%s: the reply stream did not end before the deadline (%zu bytes)",
                 target->name, side->out.len);
        }
        side->closed = p.closed;
        side->send_error = p.send_error;
        close(fd);
    }

    /* What is compared: the output without the skipped ranges, normalised. */
    hp_buf_append(&side->cmp, "", 0);
    size_t at = 0;
    for (int i = 0; i < nskips; i++) {
        if (skips[i].from > at) hp_buf_append(&side->cmp, side->out.data + at, skips[i].from - at);
        if (skips[i].to > at) at = skips[i].to;
    }
    if (side->out.len > at) hp_buf_append(&side->cmp, side->out.data + at, side->out.len - at);
    if (opts->normalise) opts->normalise(&side->cmp, opts->norm_arg);
}

int hp_diff_ex(const hp_proc *redis, const hp_proc *proxy, const char *name,
               const hp_step *steps, const hp_diff_opts *opts, hp_side *direct, hp_side *proxied)
{
    static const hp_diff_opts none;
    if (opts == NULL) opts = &none;
    hp_side d, p;
    if (!opts->no_flush && !hp_cmd_ok(redis, "FLUSHALL")) diag("%s: FLUSHALL failed", name);
    hp_run_steps(redis, redis, steps, opts, opts->min_bytes, &d);
    if (d.timed_out) diag("%s: the direct side did not complete: the test itself may be wrong", name);
    if (!opts->no_flush && !hp_cmd_ok(redis, "FLUSHALL")) diag("%s: FLUSHALL failed", name);
    size_t want = d.out.len > opts->min_bytes ? d.out.len : opts->min_bytes;
    hp_run_steps(proxy, redis, steps, opts, want, &p);

    /* The proxy's stream going on where Redis's stopped, or Redis not closing where the proxy
     * did, is what a starved Redis looks like on a loaded machine: a pause taken for the end
     * of the stream. Ask Redis once more, patiently, before calling it a difference. */
    int longer = p.cmp.len > d.cmp.len && memcmp(p.cmp.data, d.cmp.data, d.cmp.len) == 0;
    int later_close = p.cmp.len == d.cmp.len && p.closed && !d.closed &&
                      memcmp(p.cmp.data, d.cmp.data, d.cmp.len) == 0;
    if ((longer || later_close) && !opts->no_retry) {
        diag("%s: Redis's stream ended first (%zu bytes, proxy %zu): asking Redis again, "
             "more patiently", name, d.out.len, p.out.len);
        hp_diff_opts again = *opts;
        again.idle_ms = 5 * (opts->idle_ms > 0 ? opts->idle_ms : hp_idle_ms());
        if (!opts->no_flush && !hp_cmd_ok(redis, "FLUSHALL")) diag("%s: FLUSHALL failed", name);
        hp_side_free(&d);
        hp_run_steps(redis, redis, steps, &again, p.out.len, &d);
    }

    int same = is_bytes(p.cmp.data, p.cmp.len, d.cmp.data, d.cmp.len, "%s: same bytes", name);
    if (!same)
        diag("%s: proxy sent %zu bytes%s, Redis %zu%s", name, p.out.len,
             p.closed ? " and closed" : "", d.out.len, d.closed ? " and closed" : "");
    same &= is_int(p.closed, d.closed, "%s: same close (1 = closed)", name);
    if (hp_verbose())
        diag("%s: Redis sent%s: \"%s\"", name, d.closed ? " and closed" : "",
             hp_esc(d.out.data, d.out.len, 3000));
    if (direct) *direct = d;
    else hp_side_free(&d);
    if (proxied) *proxied = p;
    else hp_side_free(&p);
    return same;
}

int hp_diff(const hp_proc *redis, const hp_proc *proxy, const char *name,
            const hp_step *steps, const hp_diff_opts *opts)
{
    return hp_diff_ex(redis, proxy, name, steps, opts, NULL, NULL);
}

int hp_diff_bytes(const hp_proc *redis, const hp_proc *proxy, const char *name,
                  const void *req, size_t len, const hp_diff_opts *opts)
{
    const hp_step steps[] = { HP_SENDN(req, len), HP_END };
    return hp_diff(redis, proxy, name, steps, opts);
}

void hp_mask_after(hp_buf *b, const char *marker, const char *charset)
{
    size_t mlen = strlen(marker);
    if (b->data == NULL || mlen == 0) return;
    hp_buf out = {0};
    size_t at = 0, pos;
    while ((pos = hp_buf_find(b, at, marker, mlen)) != (size_t)-1) {
        size_t start = pos + mlen, end = start;
        while (end < b->len && b->data[end] != '\0' && strchr(charset, b->data[end]) != NULL) end++;
        hp_buf_append(&out, b->data + at, start - at);
        if (end > start) hp_buf_append(&out, "#", 1);
        at = end;
    }
    hp_buf_append(&out, b->data + at, b->len - at);
    hp_buf_free(b);
    *b = out;
}

void hp_norm_hello(hp_buf *b, void *arg)
{
    (void)arg;
    hp_mask_after(b, "\r\n$2\r\nid\r\n:", "0123456789");
}

void hp_norm_monitor(hp_buf *b, void *arg)
{
    (void)arg;
    hp_mask_after(b, "\r\n+", "0123456789.");
    hp_mask_after(b, " 127.0.0.1:", "0123456789");
}

void hp_norm_digits(hp_buf *b, void *arg)
{
    (void)arg;
    hp_buf out = {0};
    hp_buf_append(&out, "", 0);
    for (size_t i = 0; i < b->len; ) {
        if (b->data[i] >= '0' && b->data[i] <= '9') {
            while (i < b->len && b->data[i] >= '0' && b->data[i] <= '9') i++;
            hp_buf_append(&out, "#", 1);
        } else {
            hp_buf_append(&out, b->data + i, 1);
            i++;
        }
    }
    hp_buf_free(b);
    *b = out;
}
