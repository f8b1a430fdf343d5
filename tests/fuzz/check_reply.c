/* The reply check (lpf_check_reply, see checks.h).
 *
 * The reference model here is written from the RESP3 specification, independently of
 * resp/reply.c: a recursive parser over the whole input, with no incremental state, so a
 * disagreement points at the streaming code (or at the model); hiredis's redisReader is
 * the second reference for what RESP2 it accepts. */
#define _GNU_SOURCE
#include "check_util.h"

#include "resp/reply.h"

#include <hiredis/hiredis.h>

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct rframe {
    size_t start, end;
    char type;
    long long count;
} rframe;

typedef struct rframes {
    rframe *f;
    size_t n, cap;
    int error;         /* the scan stopped on RESP_ERROR */
} rframes;

static void rf_push(rframes *fs, size_t start, size_t end, char type, long long count)
{
    if (fs->n == fs->cap) {
        size_t cap = fs->cap ? fs->cap * 2 : 16;
        rframe *f = realloc(fs->f, cap * sizeof(*f));
        if (f == NULL)
            abort();
        fs->f = f;
        fs->cap = cap;
    }
    fs->f[fs->n++] = (rframe){start, end, type, count};
}

static int is_type_byte(char c)
{
    return c != 0 && strchr("+-:$*,(#_!=~>%", c) != NULL;
}

static int is_aggregate(char c)
{
    return c == '*' || c == '~' || c == '>' || c == '%';
}

/* Records one frame's summary; checks what can be checked of it alone. */
static int rec_reply(tbuf *t, const resp_reply *r, size_t end, size_t prev_end, rframes *fs)
{
    if (!is_type_byte(r->type))
        return fail("frame ending at %zu has type byte 0x%02x", end, (unsigned char)r->type);
    if (r->frame_len != end - prev_end)
        return fail("frame ending at %zu: frame_len %zu, but it began at %zu", end, r->frame_len,
                    prev_end);
    if (r->count < -1 || (!is_aggregate(r->type) && r->count != -1))
        return fail("frame ending at %zu: type '%c' with count %lld", end, r->type, r->count);
    if (r->type != '+' && r->type != '-' && r->line_len != 0)
        return fail("frame ending at %zu: line_len %zu for type '%c'", end, r->line_len, r->type);
    if (r->head_len != (size_t)-1 && !is_aggregate(r->type))
        return fail("frame ending at %zu: head for type '%c'", end, r->type);
    tb_put(t, "F", 1);
    tb_u64(t, end);
    tb_u64(t, r->frame_len);
    tb_put(t, &r->type, 1);
    tb_u64(t, (unsigned long long)r->count);
    tb_u64(t, r->head_len);
    if (r->head_len != (size_t)-1)
        tb_put(t, r->head, r->head_len < RESP_REPLY_HEAD_MAX ? r->head_len : RESP_REPLY_HEAD_MAX);
    tb_u64(t, (unsigned long long)r->last_int);
    tb_u64(t, r->line_len);
    tb_put(t, r->line, r->line_len < RESP_REPLY_HEAD_MAX ? r->line_len : RESP_REPLY_HEAD_MAX);
    if (fs != NULL)
        rf_push(fs, prev_end, end, r->type, r->count);
    return 0;
}

/* Scans d[0..n) with a fresh scanner in chunks; each chunk is a fresh exact-size copy. */
static int run_reply(const uint8_t *d, size_t n, size_t chunk, tbuf *t, rframes *fs)
{
    resp_reply r;
    resp_reply_init(&r);
    size_t off = 0, prev_end = 0;
    int rc = 0, stop = 0;

    while (off < n && !stop && rc == 0) {
        size_t k = n - off < chunk ? n - off : chunk;
        char *view = xmalloc(k);
        memcpy(view, d + off, k);
        size_t pos = 0;
        while (pos < k && rc == 0) {
            size_t used = (size_t)-1;
            resp_status st = resp_reply_scan(&r, view + pos, k - pos, &used);
            if (used > k - pos) {
                rc = fail("used %zu of %zu bytes", used, k - pos);
                break;
            }
            if (st == RESP_OK) {
                if (used == 0) {
                    rc = fail("RESP_OK with nothing used");
                    break;
                }
                pos += used;
                rc = rec_reply(t, &r, off + pos, prev_end, fs);
                prev_end = off + pos;
                continue;
            }
            if (st == RESP_ERROR) {
                if (r.errstr == NULL || used == 0) {
                    rc = fail("RESP_ERROR with errstr %p, used %zu", (const void *)r.errstr, used);
                    break;
                }
                size_t again;
                if (resp_reply_scan(&r, "+OK\r\n", 5, &again) != RESP_ERROR || again != 0) {
                    rc = fail("RESP_ERROR is not sticky");
                    break;
                }
                tb_put(t, "E", 1);
                tb_u64(t, off + pos + used);
                tb_put(t, r.errstr, strlen(r.errstr) + 1);
                if (fs != NULL)
                    fs->error = 1;
                stop = 1;
                break;
            }
            if (st != RESP_AGAIN || used != k - pos) {
                rc = fail("RESP_AGAIN with used %zu of %zu", used, k - pos);
                break;
            }
            pos = k;
        }
        free(view);
        off += k;
    }
    if (rc == 0 && !stop) {
        tb_put(t, "A", 1);
        tb_u64(t, prev_end);
    }
    resp_reply_free(&r);
    return rc;
}

/* ---- the reference model: a recursive RESP3 parser over the whole input ---- */

enum { M_OK, M_AGAIN, M_ERR, M_GIVEUP };
#define M_MAX_DEPTH 200

typedef struct mref {
    const uint8_t *d;
    size_t n, p;
} mref;

/* A number or length: optional '-' before the digits, at least one digit, within
 * [LLONG_MIN, LLONG_MAX], then CRLF. */
static int m_number(mref *m, int *neg, unsigned long long *v)
{
    int digits = 0;
    *neg = 0;
    *v = 0;
    for (;;) {
        if (m->p >= m->n)
            return M_AGAIN;
        uint8_t c = m->d[m->p++];
        if (c >= '0' && c <= '9') {
            unsigned long long limit = (unsigned long long)LLONG_MAX + (unsigned)*neg;
            if (*v > (limit - (c - '0')) / 10)
                return M_ERR;
            *v = *v * 10 + (c - '0');
            digits = 1;
        } else if (c == '\r') {
            break;
        } else if (c == '-' && !digits && !*neg) {
            *neg = 1;
        } else {
            return M_ERR;
        }
    }
    if (m->p >= m->n)
        return M_AGAIN;
    if (m->d[m->p++] != '\n' || !digits)
        return M_ERR;
    return M_OK;
}

static int m_expect_crlf(mref *m)
{
    for (int i = 0; i < 2; i++) {
        if (m->p >= m->n)
            return M_AGAIN;
        if (m->d[m->p++] != (i == 0 ? '\r' : '\n'))
            return M_ERR;
    }
    return M_OK;
}

/* One value, attributes before it included. *type and *count describe it (count: elements
 * of an aggregate, 2n for a map; -1 otherwise). */
static int m_value(mref *m, int depth, char *type, long long *count)
{
    if (depth > M_MAX_DEPTH)
        return M_GIVEUP;
    for (;;) {
        if (m->p >= m->n)
            return M_AGAIN;
        char c = (char)m->d[m->p++];
        int neg, rc;
        unsigned long long v;
        *type = c;
        *count = -1;
        switch (c) {
        case '+': case '-': case ',': case '(': case '#': case '_':
            while (m->p < m->n && m->d[m->p] != '\r')
                m->p++;
            if (m->p >= m->n)
                return M_AGAIN;
            m->p++;
            if (m->p >= m->n)
                return M_AGAIN;
            return m->d[m->p++] == '\n' ? M_OK : M_ERR;
        case ':':
            return m_number(m, &neg, &v);
        case '$': case '!': case '=':
            if ((rc = m_number(m, &neg, &v)) != M_OK)
                return rc;
            if (neg)
                return v == 1 && c == '$' ? M_OK : M_ERR;
            if (m->n - m->p < v)
                return M_AGAIN;
            m->p += (size_t)v;
            return m_expect_crlf(m);
        case '*': case '~': case '>': case '%': case '|': {
            if ((rc = m_number(m, &neg, &v)) != M_OK)
                return rc;
            if (neg)
                return v == 1 && c == '*' ? M_OK : M_ERR;
            if (c == '%' || c == '|') {
                if (v > (unsigned long long)LLONG_MAX / 2)
                    return M_ERR;
                v *= 2;
            }
            for (unsigned long long i = 0; i < v; i++) {
                char t2;
                long long c2;
                if ((rc = m_value(m, depth + 1, &t2, &c2)) != M_OK)
                    return rc;
            }
            if (c == '|')
                continue;   /* the annotated value follows */
            *count = (long long)v;
            return M_OK;
        }
        default:
            return M_ERR;
        }
    }
}

/* Compares the scanner's frames with the model's. */
static int model_reply(const uint8_t *d, size_t n, const rframes *fs)
{
    mref m = {d, n, 0};
    size_t i = 0;
    for (;;) {
        size_t start = m.p;
        if (start >= n) {
            if (fs->error)
                return fail("reply: the scanner failed where the model found the input complete");
            break;
        }
        char type;
        long long count;
        int rc = m_value(&m, 0, &type, &count);
        if (rc == M_GIVEUP)
            return 0;
        if (rc == M_AGAIN) {
            if (fs->error && i == fs->n)
                return fail("reply: the scanner failed in frame %zu, which the model finds incomplete", i);
            break;
        }
        if (rc == M_ERR) {
            if (!fs->error || i != fs->n)
                return fail("reply: the model rejects frame %zu at %zu, the scanner %s", i, start,
                            fs->error ? "fails later" : "does not");
            return 0;
        }
        if (i >= fs->n)
            return fail("reply: the model found frame %zu [%zu, %zu), the scanner did not", i, start, m.p);
        const rframe *f = &fs->f[i];
        if (f->start != start || f->end != m.p || f->type != type || f->count != count)
            return fail("reply: frame %zu: scanner [%zu, %zu) '%c' %lld, model [%zu, %zu) '%c' %lld", i,
                        f->start, f->end, f->type, f->count, start, m.p, type, count);
        i++;
    }
    if (i != fs->n)
        return fail("reply: the scanner found %zu frames, the model %zu", fs->n, i);
    return 0;
}

/* ---- hiredis's redisReader, the project's reference decoder for RESP2 ---- */

static int same_prefix(const char *captured, size_t caplen, const char *s, size_t len)
{
    if (caplen != len)
        return 0;
    size_t k = len < RESP_REPLY_HEAD_MAX ? len : RESP_REPLY_HEAD_MAX;
    return memcmp(captured, s, k) == 0;
}

/* Compares one hiredis reply with the scanner's summary of the same frame. */
static int hiredis_same(const redisReply *h, const resp_reply *r, size_t idx)
{
    switch (h->type) {
    case REDIS_REPLY_STATUS:
    case REDIS_REPLY_ERROR:
        if (r->type != (h->type == REDIS_REPLY_STATUS ? '+' : '-') ||
            !same_prefix(r->line, r->line_len, h->str, h->len))
            return fail("reply: frame %zu: hiredis status/error '%.*s', scanner '%c' line_len %zu", idx,
                        (int)(h->len < 40 ? h->len : 40), h->str, r->type, r->line_len);
        return 0;
    case REDIS_REPLY_INTEGER:
        if (r->type != ':' || r->last_int != h->integer)
            return fail("reply: frame %zu: hiredis integer %lld, scanner '%c' %lld", idx, h->integer,
                        r->type, r->last_int);
        return 0;
    case REDIS_REPLY_STRING:
        if (r->type != '$')
            return fail("reply: frame %zu: hiredis bulk, scanner '%c'", idx, r->type);
        return 0;
    case REDIS_REPLY_NIL:
        if ((r->type != '$' && r->type != '*') || r->count != -1)
            return fail("reply: frame %zu: hiredis nil, scanner '%c' count %lld", idx, r->type, r->count);
        return 0;
    case REDIS_REPLY_ARRAY: {
        if (r->type != '*' || r->count != (long long)h->elements)
            return fail("reply: frame %zu: hiredis array of %zu, scanner '%c' count %lld", idx,
                        h->elements, r->type, r->count);
        size_t head_len = (size_t)-1;
        const char *head = NULL;
        long long last = 0;
        if (h->elements > 0 && (h->element[0]->type == REDIS_REPLY_STRING ||
                                h->element[0]->type == REDIS_REPLY_STATUS)) {
            head = h->element[0]->str;
            head_len = h->element[0]->len;
        }
        for (size_t i = 0; i < h->elements; i++)
            if (h->element[i]->type == REDIS_REPLY_INTEGER)
                last = h->element[i]->integer;
        if (r->head_len != head_len || (head != NULL && !same_prefix(r->head, r->head_len, head, head_len)))
            return fail("reply: frame %zu: head differs from hiredis's first element", idx);
        if (r->last_int != last)
            return fail("reply: frame %zu: last_int %lld, hiredis %lld", idx, r->last_int, last);
        return 0;
    }
    default:
        return fail("reply: frame %zu: hiredis type %d", idx, h->type);
    }
}

/* Feeds each frame the scanner found to hiredis, all but its last byte first: hiredis must
 * not complete a reply before the last byte and must complete one with it, leaving nothing
 * behind. Stops quietly at the first frame hiredis rejects (RESP3, nested deeper than 7). */
static int hiredis_reply(const uint8_t *d, const rframes *fs)
{
    redisReader *rd = redisReaderCreate();
    resp_reply r;
    int rc = 0;
    if (rd == NULL)
        abort();
    resp_reply_init(&r);
    for (size_t i = 0; i < fs->n && rc == 0; i++) {
        const rframe *f = &fs->f[i];
        void *reply = NULL;
        size_t len = f->end - f->start;
        if (len > 1) {
            if (redisReaderFeed(rd, (const char *)d + f->start, len - 1) != REDIS_OK ||
                redisReaderGetReply(rd, &reply) != REDIS_OK)
                break;
            if (reply != NULL) {
                freeReplyObject(reply);
                rc = fail("reply: hiredis completes frame %zu [%zu, %zu) before its last byte", i,
                          f->start, f->end);
                break;
            }
        }
        if (redisReaderFeed(rd, (const char *)d + f->end - 1, 1) != REDIS_OK ||
            redisReaderGetReply(rd, &reply) != REDIS_OK)
            break;
        if (reply == NULL) {
            rc = fail("reply: hiredis wants more than frame %zu [%zu, %zu)", i, f->start, f->end);
            break;
        }
        if (rd->len != rd->pos)
            rc = fail("reply: hiredis left %zu bytes of frame %zu", rd->len - rd->pos, i);
        /* The scanner's summary of this frame alone. */
        size_t used;
        resp_reply_free(&r);
        if (rc == 0 && (resp_reply_scan(&r, (const char *)d + f->start, len, &used) != RESP_OK ||
                        used != len))
            rc = fail("reply: frame %zu alone does not scan as one frame", i);
        if (rc == 0)
            rc = hiredis_same(reply, &r, i);
        freeReplyObject(reply);
    }
    resp_reply_free(&r);
    redisReaderFree(rd);
    return rc;
}

int lpf_check_reply(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    unsigned char ctl = data[0];
    const uint8_t *d = data + 1;
    size_t n = size - 1;
    size_t chunk = pick_chunk(ctl);
    tbuf whole = {0}, chunked = {0};
    rframes fs = {0};

    int rc = run_reply(d, n, n ? n : 1, &whole, &fs);
    if (rc == 0)
        rc = run_reply(d, n, chunk, &chunked, NULL);
    if (rc == 0 && tb_same(&whole, &chunked, "reply: whole vs chunked") < 0)
        rc = -1;
    if (rc == 0)
        rc = model_reply(d, n, &fs);
    if (rc == 0)
        rc = hiredis_reply(d, &fs);
    free(fs.f);
    tb_free(&whole);
    tb_free(&chunked);
    return rc;
}
