/* Property checks for the fuzz targets and the replay test: see checks.h.
 *
 * The reference models here are written from redis-server 7.0's documented and observed
 * behaviour (src/networking.c processInlineBuffer/processMultibulkBuffer, sds.c
 * sdssplitargs, util.c string2ll) and from the RESP3 specification, independently of
 * resp/request.c and resp/reply.c: they parse the whole input at once, recursively, with no
 * incremental state, so a disagreement points at the streaming code (or at the model). */
#define _GNU_SOURCE
#include "checks.h"

#include "policy/policy.h"
#include "proxy/addr.h"
#include "proxy/config.h"
#include "resp/reply.h"
#include "resp/request.h"

#include <hiredis/hiredis.h>

#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

char lpf_msg[1024];

static int __attribute__((format(printf, 1, 2))) fail(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(lpf_msg, sizeof(lpf_msg), fmt, ap);
    va_end(ap);
    return -1;
}

static void *xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (p == NULL)
        abort();
    return p;
}

/* ---- transcripts: what a run saw, as bytes, so that runs compare with memcmp ---- */

typedef struct tbuf {
    unsigned char *p;
    size_t len, cap;
} tbuf;

static void tb_put(tbuf *t, const void *p, size_t n)
{
    if (t->len + n > t->cap) {
        size_t cap = t->cap ? t->cap : 256;
        while (cap < t->len + n)
            cap *= 2;
        unsigned char *q = realloc(t->p, cap);
        if (q == NULL)
            abort();
        t->p = q;
        t->cap = cap;
    }
    if (n > 0)
        memcpy(t->p + t->len, p, n);
    t->len += n;
}

static void tb_u64(tbuf *t, unsigned long long v)
{
    tb_put(t, &v, sizeof(v));
}

static void tb_free(tbuf *t)
{
    free(t->p);
    memset(t, 0, sizeof(*t));
}

/* Compares two transcripts; on a difference names the first differing offset. */
static int tb_same(const tbuf *a, const tbuf *b, const char *what)
{
    size_t n = a->len < b->len ? a->len : b->len;
    size_t i = 0;
    while (i < n && a->p[i] == b->p[i])
        i++;
    if (i == n && a->len == b->len)
        return 0;
    return fail("%s: transcripts differ at byte %zu (lengths %zu and %zu)", what, i, a->len, b->len);
}

/* A chunk size chosen by a control byte. */
static size_t pick_chunk(unsigned char ctl)
{
    static const size_t sizes[16] = {1, 2, 3, 4, 5, 6, 7, 8, 11, 16, 17, 64, 100, 512, 4096, 65536};
    return sizes[ctl & 15];
}

/* Keeps the copying of a chunked run (the pending bytes move every few calls) near O(n) for
 * large replayed inputs. */
static size_t bound_chunk(size_t chunk, size_t n)
{
    while (chunk < n && (n / chunk) * n > ((size_t)1 << 26))
        chunk *= 2;
    return chunk;
}

/* ====================================================================================== */
/* Requests                                                                               */
/* ====================================================================================== */

/* Transcript records:
 *   'F' start framelen inline argc { len bytes }...   a frame
 *   'E' start errlen errbytes                          a protocol error (parsing stops)
 *   'A' start pending                                  end of input inside a frame (or none) */

static void rec_frame(tbuf *t, size_t start, size_t len, int inl, int argc, const resp_arg *argv)
{
    tb_put(t, "F", 1);
    tb_u64(t, start);
    tb_u64(t, len);
    tb_u64(t, (unsigned long long)inl);
    tb_u64(t, (unsigned long long)argc);
    for (int i = 0; i < argc; i++) {
        tb_u64(t, argv[i].len);
        tb_put(t, argv[i].ptr, argv[i].len);
    }
}

static void rec_error(tbuf *t, size_t start, const char *err, size_t len)
{
    tb_put(t, "E", 1);
    tb_u64(t, start);
    tb_u64(t, len);
    tb_put(t, err, len);
}

static void rec_again(tbuf *t, size_t start, size_t pending)
{
    tb_put(t, "A", 1);
    tb_u64(t, start);
    tb_u64(t, pending);
}

/* Re-encodes the arguments of a frame as a canonical multibulk request and parses it with a
 * fresh framer (default limits): it must be one frame of exactly that length with the same
 * arguments. A multibulk frame must moreover be its own canonical encoding, except for the
 * separator bytes Redis skips without looking at them. */
static int check_reencode(const resp_request *req, const char *frame, size_t framelen)
{
    tbuf enc = {0};
    char hdr[32];
    int n = snprintf(hdr, sizeof(hdr), "*%d\r\n", req->argc);
    tb_put(&enc, hdr, (size_t)n);
    for (int i = 0; i < req->argc; i++) {
        n = snprintf(hdr, sizeof(hdr), "$%zu\r\n", req->argv[i].len);
        tb_put(&enc, hdr, (size_t)n);
        tb_put(&enc, req->argv[i].ptr, req->argv[i].len);
        tb_put(&enc, "\r\n", 2);
    }
    int rc = 0;
    resp_request r2;
    resp_request_init(&r2);
    char *copy = xmalloc(enc.len);
    memcpy(copy, enc.p, enc.len);
    size_t fl = 0;
    resp_status st = resp_request_parse(&r2, copy, enc.len, &fl);
    if (st != RESP_OK || fl != enc.len || r2.argc != req->argc || r2.inline_req) {
        rc = fail("re-encoded frame: status %d, framelen %zu of %zu, argc %d of %d", (int)st, fl,
                  enc.len, r2.argc, req->argc);
    } else {
        for (int i = 0; i < r2.argc && rc == 0; i++)
            if (r2.argv[i].len != req->argv[i].len ||
                memcmp(r2.argv[i].ptr, req->argv[i].ptr, r2.argv[i].len) != 0)
                rc = fail("re-encoded frame: argument %d differs", i);
    }
    if (rc == 0 && !req->inline_req) {
        if (framelen != enc.len) {
            rc = fail("multibulk frame of %zu bytes is not its canonical encoding (%zu bytes)",
                      framelen, enc.len);
        } else {
            for (size_t i = 0; i < framelen && rc == 0; i++)
                if (frame[i] != (char)enc.p[i] && enc.p[i] != '\r' && enc.p[i] != '\n')
                    rc = fail("multibulk frame differs from its canonical encoding at byte %zu", i);
        }
    }
    free(copy);
    resp_request_free(&r2);
    tb_free(&enc);
    return rc;
}

/* Checks the arguments of a frame just returned: multibulk arguments lie in the frame. */
static int check_frame_args(const resp_request *req, const char *view, size_t fl)
{
    if (req->argc < 0 || (req->argc > 0 && req->argv == NULL))
        return fail("frame with argc %d and argv %p", req->argc, (void *)req->argv);
    for (int i = 0; i < req->argc; i++) {
        const resp_arg *a = &req->argv[i];
        if (req->inline_req) {
            if (a->len == 0 && a->ptr == NULL)
                return fail("inline argument %d has no pointer", i);
            continue;
        }
        if (a->ptr < view || a->ptr > view + fl || a->len > (size_t)(view + fl - a->ptr))
            return fail("multibulk argument %d lies outside its frame", i);
    }
    return 0;
}

/* Under AddressSanitizer the bytes past the pending ones are poisoned, so that a read beyond
 * the length the framer was given is reported even inside the buffer. */
#if defined(__SANITIZE_ADDRESS__)
#define LPF_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define LPF_ASAN 1
#endif
#endif
#ifdef LPF_ASAN
#include <sanitizer/asan_interface.h>
#define POISON(p, n) ASAN_POISON_MEMORY_REGION((p), (n))
#define UNPOISON(p, n) ASAN_UNPOISON_MEMORY_REGION((p), (n))
#else
#define POISON(p, n) ((void)(p), (void)(n))
#define UNPOISON(p, n) ((void)(p), (void)(n))
#endif

/* A buffer of the bytes not yet consumed, as the proxy keeps them. */
typedef struct pending {
    unsigned char *p;
    size_t len, cap;
} pending;

/* Moves the pending bytes to a fresh allocation (the proxy moves a frame in progress to a
 * larger block): pointers the framer kept into the old one become use-after-free. */
static void pending_move(pending *b)
{
    unsigned char *q = xmalloc(b->cap);
    memcpy(q, b->p, b->len);
    POISON(q + b->len, b->cap - b->len);
    UNPOISON(b->p, b->cap);
    free(b->p);
    b->p = q;
}

/* Feeds d[0..n) to a fresh framer in chunks of the given size, moving the pending bytes to
 * a new buffer every few calls, as the proxy may. */
static int run_request(const uint8_t *d, size_t n, size_t chunk, int unauth, long long maxbulk,
                       int reencode, tbuf *t)
{
    resp_request req;
    resp_request_init(&req);
    req.unauthenticated = unauth;
    req.max_bulk_len = maxbulk;

    pending b = {xmalloc(n), 0, n ? n : 1};
    size_t consumed = 0, fed = 0;
    unsigned calls = 0;
    int rc = 0, done = 0;
    POISON(b.p, b.cap);

    while (!done && rc == 0) {
        if (fed < n) {
            size_t k = n - fed < chunk ? n - fed : chunk;
            UNPOISON(b.p + b.len, k);
            memcpy(b.p + b.len, d + fed, k);
            b.len += k;
            fed += k;
        }
        for (;;) {
            if (++calls % 8 == 0)
                pending_move(&b);
            const char *view = (const char *)b.p;
            size_t fl = (size_t)-1;
            resp_status st = resp_request_parse(&req, view, b.len, &fl);
            if (st == RESP_OK) {
                if (fl == 0 || fl > b.len) {
                    rc = fail("RESP_OK with framelen %zu of %zu bytes", fl, b.len);
                } else if ((rc = check_frame_args(&req, view, fl)) == 0) {
                    rec_frame(t, consumed, fl, req.inline_req, req.argc, req.argv);
                    if (reencode && req.argc > 0)
                        rc = check_reencode(&req, view, fl);
                }
                if (rc != 0)
                    break;
                memmove(b.p, b.p + fl, b.len - fl);
                b.len -= fl;
                POISON(b.p + b.len, b.cap - b.len);
                consumed += fl;
                continue;
            }
            if (st == RESP_ERROR) {
                if (req.errstr == NULL || req.errlen < 7 || memcmp(req.errstr, "-ERR ", 5) != 0 ||
                    memcmp(req.errstr + req.errlen - 2, "\r\n", 2) != 0 ||
                    memchr(req.errstr, '\n', req.errlen - 1) != NULL) {
                    rc = fail("malformed error line");
                    break;
                }
                rec_error(t, consumed, req.errstr, req.errlen);
                /* Sticky until reset; after a reset the framer works again. */
                size_t fl2;
                if (resp_request_parse(&req, "PING\r\n", 6, &fl2) != RESP_ERROR) {
                    rc = fail("error is not sticky");
                    break;
                }
                resp_request_reset(&req);
                if (resp_request_parse(&req, "PING\r\n", 6, &fl2) != RESP_OK || fl2 != 6 ||
                    req.argc != 1) {
                    rc = fail("framer does not work after resp_request_reset()");
                    break;
                }
                done = 1;
            } else if (st != RESP_AGAIN) {
                rc = fail("unknown status %d", (int)st);
            }
            break;
        }
        if (!done && rc == 0 && fed == n) {
            rec_again(t, consumed, b.len);
            done = 1;
        }
    }
    UNPOISON(b.p, b.cap);
    free(b.p);
    resp_request_free(&req);
    return rc;
}

/* ---- the reference model of redis-server's request framing ---- */

/* string2ll(): optional '-', then "0" alone or [1-9][0-9]*, within long long. */
static int ref_ll(const uint8_t *s, size_t n, long long *out)
{
    if (n == 0 || n > 20)
        return 0;
    if (n == 1 && s[0] == '0') {
        *out = 0;
        return 1;
    }
    size_t i = 0;
    int neg = 0;
    if (s[0] == '-') {
        neg = 1;
        i = 1;
        if (n == 1)
            return 0;
    }
    if (s[i] < '1' || s[i] > '9')
        return 0;
    unsigned long long v = 0;
    for (; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return 0;
        if (v > ULLONG_MAX / 10 || v * 10 > ULLONG_MAX - (unsigned)(s[i] - '0'))
            return 0;
        v = v * 10 + (unsigned)(s[i] - '0');
    }
    if (neg) {
        if (v > (unsigned long long)LLONG_MAX + 1)
            return 0;
        *out = v == (unsigned long long)LLONG_MAX + 1 ? LLONG_MIN : -(long long)v;
    } else {
        if (v > (unsigned long long)LLONG_MAX)
            return 0;
        *out = (long long)v;
    }
    return 1;
}

/* strchr(p, c) on a NUL-terminated buffer: the offset of c at or after from, or (size_t)-1
 * when a NUL byte or the end comes first. */
static size_t ref_strchr(const uint8_t *d, size_t n, size_t from, uint8_t c)
{
    for (size_t i = from; i < n; i++) {
        if (d[i] == c)
            return i;
        if (d[i] == 0)
            return (size_t)-1;
    }
    return (size_t)-1;
}

static int ref_isspace(int c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\v' || c == '\f' || c == '\r';
}

static int ref_ishex(int c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

static int ref_hexval(int c)
{
    return c <= '9' ? c - '0' : (c | 0x20) - 'a' + 10;
}

/* sdssplitargs() over line[0..n) (which holds no NUL byte), the way Redis walks its
 * NUL-terminated copy. Appends the arguments (len, bytes) to out and their number to *argc.
 * Returns 0 on unbalanced quotes. */
static int ref_splitargs(const uint8_t *line, size_t n, tbuf *out, int *argc)
{
#define AT(i) ((i) < n ? line[(i)] : 0)
    size_t p = 0;
    *argc = 0;
    for (;;) {
        while (AT(p) && ref_isspace(AT(p)))
            p++;
        if (!AT(p))
            return 1;
        int inq = 0, insq = 0, done = 0;
        tbuf cur = {0};
        while (!done) {
            int c = AT(p);
            if (inq) {
                if (c == '\\' && AT(p + 1) == 'x' && ref_ishex(AT(p + 2)) && ref_ishex(AT(p + 3))) {
                    unsigned char b = (unsigned char)(ref_hexval(AT(p + 2)) * 16 + ref_hexval(AT(p + 3)));
                    tb_put(&cur, &b, 1);
                    p += 3;
                } else if (c == '\\' && AT(p + 1)) {
                    p++;
                    unsigned char b;
                    switch (AT(p)) {
                    case 'n': b = '\n'; break;
                    case 'r': b = '\r'; break;
                    case 't': b = '\t'; break;
                    case 'b': b = '\b'; break;
                    case 'a': b = '\a'; break;
                    default: b = (unsigned char)AT(p); break;
                    }
                    tb_put(&cur, &b, 1);
                } else if (c == '"') {
                    if (AT(p + 1) && !ref_isspace(AT(p + 1))) {
                        tb_free(&cur);
                        return 0;
                    }
                    done = 1;
                } else if (!c) {
                    tb_free(&cur);
                    return 0;
                } else {
                    unsigned char b = (unsigned char)c;
                    tb_put(&cur, &b, 1);
                }
            } else if (insq) {
                if (c == '\\' && AT(p + 1) == '\'') {
                    p++;
                    tb_put(&cur, "'", 1);
                } else if (c == '\'') {
                    if (AT(p + 1) && !ref_isspace(AT(p + 1))) {
                        tb_free(&cur);
                        return 0;
                    }
                    done = 1;
                } else if (!c) {
                    tb_free(&cur);
                    return 0;
                } else {
                    unsigned char b = (unsigned char)c;
                    tb_put(&cur, &b, 1);
                }
            } else {
                switch (c) {
                case ' ': case '\n': case '\r': case '\t': case '\0':
                    done = 1;
                    break;
                case '"':
                    inq = 1;
                    break;
                case '\'':
                    insq = 1;
                    break;
                default: {
                    unsigned char b = (unsigned char)c;
                    tb_put(&cur, &b, 1);
                    break;
                }
                }
            }
            if (AT(p))
                p++;
        }
        tb_u64(out, cur.len);
        tb_put(out, cur.p, cur.len);
        tb_free(&cur);
        (*argc)++;
    }
#undef AT
}

#define REF_ERR(msg) "-ERR Protocol error: " msg "\r\n"

/* Frames all of d[0..n) as redis-server would when it arrives at once (and is shorter than
 * its 64 KiB limits), writing the same transcript as run_request(). */
static void ref_request(const uint8_t *d, size_t n, int unauth, long long maxbulk, tbuf *t)
{
    size_t p = 0;
    while (p < n) {
        if (d[p] != '*') {
            size_t nl = ref_strchr(d, n, p, '\n');
            if (nl == (size_t)-1)
                break;
            size_t end = nl;
            if (end > p && d[end - 1] == '\r')
                end--;
            tbuf args = {0};
            int argc = 0;
            if (!ref_splitargs(d + p, end - p, &args, &argc)) {
                tb_free(&args);
                static const char e[] = REF_ERR("unbalanced quotes in request");
                rec_error(t, p, e, sizeof(e) - 1);
                return;
            }
            tb_put(t, "F", 1);
            tb_u64(t, p);
            tb_u64(t, nl + 1 - p);
            tb_u64(t, 1);
            tb_u64(t, (unsigned long long)argc);
            tb_put(t, args.p, args.len);
            tb_free(&args);
            p = nl + 1;
            continue;
        }

        size_t cr = ref_strchr(d, n, p, '\r');
        if (cr == (size_t)-1 || cr + 1 >= n)
            break;
        long long count;
        if (!ref_ll(d + p + 1, cr - p - 1, &count) || count > INT_MAX) {
            static const char e[] = REF_ERR("invalid multibulk length");
            rec_error(t, p, e, sizeof(e) - 1);
            return;
        }
        if (count > 10 && unauth) {
            static const char e[] = REF_ERR("unauthenticated multibulk length");
            rec_error(t, p, e, sizeof(e) - 1);
            return;
        }
        size_t q = cr + 2;
        tbuf args = {0};
        long long i;
        int incomplete = 0;
        for (i = 0; i < count; i++) {
            size_t hcr = ref_strchr(d, n, q, '\r');
            if (hcr == (size_t)-1 || hcr + 1 >= n) {
                incomplete = 1;
                break;
            }
            if (d[q] != '$') {
                char e[64];
                int c = d[q] == '\r' || d[q] == '\n' ? ' ' : d[q];
                int w = snprintf(e, sizeof(e), "-ERR Protocol error: expected '$', got '%c'\r\n", c);
                rec_error(t, p, e, (size_t)w);
                tb_free(&args);
                return;
            }
            long long len;
            if (!ref_ll(d + q + 1, hcr - q - 1, &len) || len < 0 || len > maxbulk) {
                static const char e[] = REF_ERR("invalid bulk length");
                rec_error(t, p, e, sizeof(e) - 1);
                tb_free(&args);
                return;
            }
            if (len > 16384 && unauth) {
                static const char e[] = REF_ERR("unauthenticated bulk length");
                rec_error(t, p, e, sizeof(e) - 1);
                tb_free(&args);
                return;
            }
            q = hcr + 2;
            if (n - q < (unsigned long long)len + 2) {
                incomplete = 1;
                break;
            }
            tb_u64(&args, (unsigned long long)len);
            tb_put(&args, d + q, (size_t)len);
            q += (size_t)len + 2;
        }
        if (incomplete) {
            tb_free(&args);
            break;
        }
        tb_put(t, "F", 1);
        tb_u64(t, p);
        tb_u64(t, q - p);
        tb_u64(t, 0);
        tb_u64(t, (unsigned long long)(count > 0 ? count : 0));
        tb_put(t, args.p, args.len);
        tb_free(&args);
        p = q;
    }
    rec_again(t, p, n - p);
}

int lpf_check_request(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    unsigned char ctl = data[0];
    const uint8_t *d = data + 1;
    size_t n = size - 1;
    /* Past 64 KiB pending, Redis's limits depend on how the bytes arrived: stay below. */
    if (n > RESP_INLINE_MAX_SIZE)
        n = RESP_INLINE_MAX_SIZE;
    size_t chunk = bound_chunk(pick_chunk(ctl), n);
    int unauth = (ctl >> 4) & 1;
    long long maxbulk = (ctl & 0x20) ? 16 : RESP_DEFAULT_MAX_BULK_LEN;

    tbuf whole = {0}, chunked = {0}, model = {0};
    int rc = run_request(d, n, n ? n : 1, unauth, maxbulk, 1, &whole);
    if (rc == 0)
        rc = run_request(d, n, chunk, unauth, maxbulk, 0, &chunked);
    if (rc == 0 && tb_same(&whole, &chunked, "request: whole vs chunked") < 0)
        rc = -1;
    if (rc == 0) {
        ref_request(d, n, unauth, maxbulk, &model);
        if (tb_same(&whole, &model, "request: framer vs reference model") < 0)
            rc = -1;
    }
    tb_free(&whole);
    tb_free(&chunked);
    tb_free(&model);
    return rc;
}

/* ====================================================================================== */
/* Replies                                                                                */
/* ====================================================================================== */

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

/* ====================================================================================== */
/* Policy                                                                                 */
/* ====================================================================================== */

/* Checks that msg is "NAME:LINE: something" with 1 <= LINE <= maxline. */
static int check_where(const char *what, const char *msg, const char *name, int maxline)
{
    size_t nl = strlen(name);
    if (strncmp(msg, name, nl) != 0 || msg[nl] != ':')
        return fail("%s: error does not start with '%s:': %s", what, name, msg);
    const char *p = msg + nl + 1;
    char *end;
    long line = strtol(p, &end, 10);
    if (end == p || end[0] != ':' || end[1] != ' ' || end[2] == '\0')
        return fail("%s: error does not name a line: %s", what, msg);
    if (line < 1 || line > maxline)
        return fail("%s: error names line %ld of %d: %s", what, line, maxline, msg);
    return 0;
}

static int count_lines(const uint8_t *d, size_t n)
{
    int lines = 0;
    for (size_t i = 0; i < n; i++)
        if (d[i] == '\n')
            lines++;
    if (n > 0 && d[n - 1] != '\n')
        lines++;
    return lines > 0 ? lines : 1;
}

/* policy_print() into a malloc'd string. */
static char *print_policy(const policy *p, size_t *len)
{
    char *text = NULL;
    FILE *f = open_memstream(&text, len);
    if (f == NULL)
        abort();
    policy_print(p, f);
    if (fclose(f) != 0)
        abort();
    return text;
}

static int check_rules(const policy *p)
{
    int prev_line = 0;
    for (size_t i = 0; i < policy_count(p); i++) {
        const policy_rule *r = policy_rule_at(p, i);
        if (r == NULL || r->prefix == NULL || r->prefix_len == 0 || r->prefix[r->prefix_len] != '\0')
            return fail("policy: rule %zu has no proper prefix", i);
        if (r->mode != POLICY_OFF && r->mode != POLICY_AUDIT && r->mode != POLICY_ENFORCE)
            return fail("policy: rule %zu has mode %d", i, (int)r->mode);
        if (r->owner != POLICY_OWNER_CONNECTION && r->owner != POLICY_OWNER_CLIENT_ADDR &&
            r->owner != POLICY_OWNER_CLIENT_NAME)
            return fail("policy: rule %zu has owner %d", i, (int)r->owner);
        if (r->ttl_ms <= 0 || r->max_ttl_ms < 0 || (r->max_ttl_ms > 0 && r->ttl_ms > r->max_ttl_ms))
            return fail("policy: rule %zu has ttl %lld, max-ttl %lld", i, r->ttl_ms, r->max_ttl_ms);
        if (r->line <= prev_line)
            return fail("policy: rule %zu at line %d after line %d", i, r->line, prev_line);
        prev_line = r->line;
        for (size_t j = 0; j < i; j++) {
            const policy_rule *o = policy_rule_at(p, j);
            if (o->prefix_len == r->prefix_len && memcmp(o->prefix, r->prefix, r->prefix_len) == 0)
                return fail("policy: rules %zu and %zu have the same prefix", j, i);
        }
    }
    return 0;
}

/* policy_match() against a brute-force longest prefix. */
static int check_match(const policy *p, const char *key, size_t keylen)
{
    const policy_rule *best = NULL;
    for (size_t i = 0; i < policy_count(p); i++) {
        const policy_rule *r = policy_rule_at(p, i);
        if (r->prefix_len <= keylen && memcmp(key, r->prefix, r->prefix_len) == 0 &&
            (best == NULL || r->prefix_len > best->prefix_len))
            best = r;
    }
    if (policy_match(p, key, keylen) != best)
        return fail("policy: policy_match() is not the longest prefix for a %zu-byte key", keylen);
    return 0;
}

int lpf_check_policy(const uint8_t *data, size_t size)
{
    static const char name[] = "fuzz.policy";
    char err[512] = "";
    int rc = 0;

    /* The parser takes a length: give it a copy with nothing after it. */
    char *text = xmalloc(size);
    memcpy(text, data, size);
    policy *p = policy_parse(text, size, name, err, sizeof(err));
    if (p == NULL) {
        rc = check_where("policy", err, name, count_lines(data, size));
        free(text);
        return rc;
    }
    rc = check_rules(p);

    size_t len1 = 0, len2 = 0;
    char *out1 = NULL, *out2 = NULL;
    policy *p2 = NULL;
    if (rc == 0) {
        out1 = print_policy(p, &len1);
        p2 = policy_parse(out1, len1, "printed", err, sizeof(err));
        if (p2 == NULL)
            rc = fail("policy: the printed policy does not parse: %s", err);
    }
    if (rc == 0 && policy_count(p2) != policy_count(p))
        rc = fail("policy: %zu rules printed, %zu parsed back", policy_count(p), policy_count(p2));
    for (size_t i = 0; rc == 0 && i < policy_count(p); i++) {
        const policy_rule *a = policy_rule_at(p, i), *b = policy_rule_at(p2, i);
        if (a->prefix_len != b->prefix_len || memcmp(a->prefix, b->prefix, a->prefix_len) != 0 ||
            a->mode != b->mode || a->ttl_ms != b->ttl_ms || a->max_ttl_ms != b->max_ttl_ms ||
            a->owner != b->owner)
            rc = fail("policy: rule %zu changed when printed and parsed back", i);
    }
    if (rc == 0) {
        out2 = print_policy(p2, &len2);
        if (len1 != len2 || memcmp(out1, out2, len1) != 0)
            rc = fail("policy: printing the parsed-back policy gives other text");
    }
    for (size_t i = 0; rc == 0 && i < policy_count(p); i++) {
        const policy_rule *r = policy_rule_at(p, i);
        if (policy_match(p, r->prefix, r->prefix_len) != r)
            rc = fail("policy: rule %zu does not match its own prefix", i);
        else if ((rc = check_match(p, r->prefix, r->prefix_len - 1)) == 0) {
            char key[300];
            size_t k = r->prefix_len < 200 ? r->prefix_len : 200;
            memcpy(key, r->prefix, k);
            memcpy(key + k, "x:y", 3);
            rc = check_match(p, key, k + 3);
        }
    }
    if (rc == 0)
        rc = check_match(p, (const char *)data, size < 64 ? size : 64);
    free(out1);
    free(out2);
    policy_free(p2);
    policy_free(p);
    free(text);
    return rc;
}

/* ====================================================================================== */
/* Config                                                                                 */
/* ====================================================================================== */

static int addr_roundtrip(const char *what, const lp_addr *a)
{
    char text[512], err[512];
    lp_addr b;
    lp_addr_format(a, text, sizeof(text));
    if (lp_addr_parse(text, &b, err, sizeof(err)) < 0)
        return fail("config: %s formats as '%s', which does not parse: %s", what, text, err);
    if (a->is_unix != b.is_unix || strcmp(a->host, b.host) != 0 || a->port != b.port ||
        strcmp(a->path, b.path) != 0)
        return fail("config: %s formats as '%s', which parses to another address", what, text);
    return 0;
}

int lpf_check_config(const uint8_t *data, size_t size)
{
    static int fd = -1;
    char path[64], err[1024] = "";
    int rc = 0;

    if (fd < 0) {
        fd = memfd_create("lpf-config", MFD_CLOEXEC);
        if (fd < 0)
            abort();
    }
    if (ftruncate(fd, 0) != 0 || (size > 0 && pwrite(fd, data, size, 0) != (ssize_t)size))
        abort();
    snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);

    lp_config c;
    lp_config_defaults(&c);
    if (lp_config_load_file(&c, path, err, sizeof(err)) < 0) {
        rc = check_where("config", err, path, count_lines(data, size));
    } else {
        if (c.maxclients < 1 || c.proto_max_bulk_len < (1LL << 20) ||
            c.client_query_buffer_limit < (1LL << 20) || c.low_water < 1 ||
            c.low_water >= c.high_water || c.hard_limit <= c.high_water ||
            c.connect_timeout_ms < 1 || c.shutdown_timeout_ms < 1 || c.upstream_timeout_ms < 0)
            rc = fail("config: loaded values out of their bounds");
        if (c.policy_file != NULL && c.policy_file[0] == '\0')
            rc = fail("config: empty policy file name");
        if (rc == 0)
            rc = addr_roundtrip("listen", &c.listen);
        if (rc == 0)
            rc = addr_roundtrip("upstream", &c.upstream);
    }
    lp_config_free(&c);
    lp_config_free(&c);   /* documented as safe twice */

    /* The unit parsers on the input's first line, as a string. */
    char word[80];
    size_t k = 0;
    while (k < size && k < sizeof(word) - 1 && data[k] != '\n' && data[k] != '\0') {
        word[k] = (char)data[k];
        k++;
    }
    word[k] = '\0';
    long long m = lp_parse_memory(word), t = lp_parse_duration_ms(word);
    if (rc == 0 && (m < -1 || t < -1))
        rc = fail("config: unit parser returned %lld / %lld", m, t);
    lp_addr a;
    if (rc == 0 && lp_addr_parse(word, &a, err, sizeof(err)) == 0)
        rc = addr_roundtrip("an address", &a);
    return rc;
}

lpf_check_fn lpf_check_by_name(const char *name)
{
    if (strcmp(name, "request") == 0)
        return lpf_check_request;
    if (strcmp(name, "reply") == 0)
        return lpf_check_reply;
    if (strcmp(name, "policy") == 0)
        return lpf_check_policy;
    if (strcmp(name, "config") == 0)
        return lpf_check_config;
    return NULL;
}
