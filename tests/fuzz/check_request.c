/* The request check (lpf_check_request, see checks.h).
 *
 * The reference model here is written from redis-server 7.0's documented and observed
 * behaviour (src/networking.c processInlineBuffer/processMultibulkBuffer, sds.c
 * sdssplitargs, util.c string2ll), independently of resp/request.c: it parses the whole
 * input at once, with no incremental state, so a disagreement points at the streaming code
 * (or at the model). */
#define _GNU_SOURCE
#include "check_util.h"

#include "resp/request.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
