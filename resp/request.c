/* Request framer: see request.h for the contract.
 *
 * The rules are those of redis-server 7.0 (src/networking.c: processInlineBuffer and
 * processMultibulkBuffer; sds.c: sdssplitargs; util.c: string2ll), re-implemented from
 * their documented and observed behaviour; tests/resp/request.t.c pins each rule down and
 * says how it was checked against a real server. Quirks kept on purpose:
 *
 * - Redis finds the end of a line with strchr() on its NUL-terminated query buffer, so a
 *   NUL byte before the '\r' (multibulk) or the '\n' (inline) hides the line end for good:
 *   the request then waits until the 64 KiB limit turns it into an error.
 * - A multibulk count or bulk length line is complete once one byte follows its '\r'; that
 *   byte is skipped without checking it is '\n'. The two bytes after a bulk's payload are
 *   skipped unchecked too.
 * - The 64 KiB limits count the bytes pending from the start of the line being looked for
 *   (the frame for inline requests and counts, the "$" header for bulk lengths), and only
 *   while its end has not been found: a longer line that arrives whole is accepted.
 *
 * Progress is kept as offsets from the start of the frame (pos, scan), never as pointers,
 * so the caller may move its buffer between calls; scan remembers how far the search for
 * the current line end got, so every byte is looked at a bounded number of times. */
#include "resp/request.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum {
    ST_START,      /* no byte of the next frame looked at yet */
    ST_INLINE,     /* looking for the '\n' of an inline request */
    ST_COUNT,      /* looking for the '\r' of "*<count>" */
    ST_BULK_HDR,   /* looking for the '\r' of the "$<len>" line starting at pos */
    ST_BULK_DATA,  /* waiting for bulk_len + 2 bytes from pos */
    ST_ERROR       /* sticky until resp_request_reset(): errstr is set */
};

#define PROTO_ERR(msg) "-ERR Protocol error: " msg "\r\n"

static const char err_inline[] = PROTO_ERR("too big inline request");
static const char err_quotes[] = PROTO_ERR("unbalanced quotes in request");
static const char err_mbulk_count[] = PROTO_ERR("too big mbulk count string");
static const char err_mbulk_len[] = PROTO_ERR("invalid multibulk length");
static const char err_bulk_count[] = PROTO_ERR("too big bulk count string");
static const char err_bulk_len[] = PROTO_ERR("invalid bulk length");
static const char err_unauth_mbulk[] = PROTO_ERR("unauthenticated multibulk length");
static const char err_unauth_bulk[] = PROTO_ERR("unauthenticated bulk length");
/* Not a Redis text: the proxy could not allocate memory for the frame. */
static const char err_oom[] = "-ERR lockproxy: out of memory\r\n";

/* Buffers larger than these are released when the next frame starts, so one huge request
 * does not pin memory for the rest of the connection. */
#define KEEP_ARGS 1024
#define KEEP_SCRATCH RESP_INLINE_MAX_SIZE

void resp_request_init(resp_request *req)
{
    memset(req, 0, sizeof(*req));
    req->max_bulk_len = RESP_DEFAULT_MAX_BULK_LEN;
    req->bulk_len = -1;
    req->state = ST_START;
}

void resp_request_free(resp_request *req)
{
    if (req == NULL)
        return;
    free(req->offs);
    free(req->argv);
    free(req->scratch);
    req->offs = NULL;
    req->argv = NULL;
    req->scratch = NULL;
    req->cap = 0;
    req->scratch_cap = 0;
    resp_request_reset(req);
}

/* Forgets the frame in progress, keeping allocations and settings. */
static void restart_frame(resp_request *req)
{
    req->state = ST_START;
    req->want_args = 0;
    req->bulk_len = -1;
    req->pos = 0;
    req->scan = 0;
    req->nul_seen = 0;
    req->nargs = 0;
}

void resp_request_reset(resp_request *req)
{
    restart_frame(req);
    req->argc = 0;
    req->inline_req = 0;
    req->errstr = NULL;
    req->errlen = 0;
    req->errbuf[0] = '\0';
}

static resp_status fail(resp_request *req, const char *line)
{
    req->state = ST_ERROR;
    req->errstr = line;
    req->errlen = strlen(line);
    req->argc = 0;
    return RESP_ERROR;
}

/* Makes room for n arguments in both offs and argv. Returns 0 when out of memory. */
static int reserve_args(resp_request *req, size_t n)
{
    if (n <= (size_t)req->cap)
        return 1;
    if (n > INT_MAX)
        return 0;
    size_t cap = req->cap > 0 ? (size_t)req->cap : 8;
    while (cap < n)
        cap *= 2;
    if (cap > INT_MAX)
        cap = INT_MAX;
    size_t *offs = realloc(req->offs, cap * 2 * sizeof(*offs));
    if (offs == NULL)
        return 0;
    req->offs = offs;
    resp_arg *argv = realloc(req->argv, cap * sizeof(*argv));
    if (argv == NULL)
        return 0;
    req->argv = argv;
    req->cap = (int)cap;
    return 1;
}

/* Drops oversized buffers left by an earlier frame; called before a frame starts. */
static void trim_buffers(resp_request *req)
{
    if (req->cap > KEEP_ARGS) {
        free(req->offs);
        free(req->argv);
        req->offs = NULL;
        req->argv = NULL;
        req->cap = 0;
    }
    if (req->scratch_cap > KEEP_SCRATCH) {
        free(req->scratch);
        req->scratch = NULL;
        req->scratch_cap = 0;
    }
}

/* Looks for the byte term in buf[req->scan, len) the way strchr() would from the start of
 * the current line: a NUL byte first means the line end is never found. On success stores
 * the terminator's offset in *at and returns 1; scan stays on the terminator, so asking
 * again is free. Returns 0 when the end is not (or can never be) there, with scan moved to
 * len so the same bytes are not searched twice. */
static int find_line_end(resp_request *req, const char *buf, size_t len, char term, size_t *at)
{
    if (req->nul_seen || req->scan >= len)
        return 0;
    const char *p = buf + req->scan;
    size_t n = len - req->scan;
    const char *t = memchr(p, term, n);
    size_t upto = t != NULL ? (size_t)(t - p) : n;
    const char *z = memchr(p, '\0', upto);
    if (z != NULL) {
        req->nul_seen = 1;
        req->scan += (size_t)(z - p);
        return 0;
    }
    req->scan += upto;
    if (t == NULL)
        return 0;
    *at = req->scan;
    return 1;
}

/* Parses a whole decimal number as Redis's string2ll() accepts it: an optional '-', then
 * either "0" alone or a digit 1-9 followed by digits, within the range of long long. No
 * '+', no spaces, no leading zeros, no "-0". Returns 1 and sets *out on success. */
int resp_parse_ll(const char *s, size_t n, long long *out)
{
    size_t i = 0;
    int neg = 0;

    if (n == 1 && s[0] == '0') {
        *out = 0;
        return 1;
    }
    if (n > 0 && s[0] == '-') {
        neg = 1;
        i = 1;
    }
    if (i >= n || s[i] < '1' || s[i] > '9')
        return 0;
    unsigned long long limit = (unsigned long long)LLONG_MAX + (neg ? 1u : 0u);
    unsigned long long v = 0;
    for (; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return 0;
        unsigned d = (unsigned)(s[i] - '0');
        if (v > (limit - d) / 10)
            return 0;
        v = v * 10 + d;
    }
    if (!neg)
        *out = (long long)v;
    else if (v == (unsigned long long)LLONG_MAX + 1)
        *out = LLONG_MIN;
    else
        *out = -(long long)v;
    return 1;
}

/* The bytes isspace() accepts in the C locale, which Redis uses for LC_CTYPE. */
static int is_space(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\v' || c == '\f' || c == '\r';
}

static int hex_value(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Splits an inline request line (its "\n" or "\r\n" removed; it holds no NUL byte) into
 * req->argv and req->nargs by the rules of Redis's sdssplitargs():
 * - arguments are separated by runs of isspace() bytes; inside an unquoted argument only
 *   ' ', '\t', '\r' and '\n' end it (so "\v" or "\f" there are part of the argument);
 * - a '"' or '\'' anywhere in an argument opens a quoted part; in double quotes "\xHH"
 *   (two hex digits) is a byte, "\n" "\r" "\t" "\b" "\a" are control bytes and "\c" is c;
 *   in single quotes only "\'" is an escape;
 * - a closing quote must be followed by a space byte or the end of the line, and a quote
 *   must be closed; otherwise the line is rejected.
 * Arguments without quotes point into line; the others are unquoted into req->scratch.
 * Returns 1 on success, 0 on unbalanced quotes, -1 when out of memory. */
static int split_inline(resp_request *req, const char *line, size_t n)
{
    const char *p = line, *end = line + n;
    size_t used = 0;   /* bytes of scratch holding finished arguments */

    /* Unquoting never makes an argument longer, so n bytes of scratch always suffice and
     * the scratch pointers handed out below stay valid. */
    if (n > req->scratch_cap) {
        char *s = realloc(req->scratch, n);
        if (s == NULL)
            return -1;
        req->scratch = s;
        req->scratch_cap = n;
    }
    req->nargs = 0;
    for (;;) {
        while (p < end && is_space(*p))
            p++;
        if (p == end)
            return 1;

        const char *start = p;
        char *out = NULL;   /* set once the argument needs unquoting */
        size_t olen = 0;
        char quote = 0;     /* the quote we are inside, or 0 */
        for (;;) {
            if (quote == 0) {
                if (p == end || *p == ' ' || *p == '\t' || *p == '\r' || *p == '\n')
                    break;
                if (*p == '"' || *p == '\'') {
                    if (out == NULL) {
                        out = req->scratch + used;
                        olen = (size_t)(p - start);
                        memcpy(out, start, olen);
                    }
                    quote = *p++;
                } else {
                    if (out != NULL)
                        out[olen++] = *p;
                    p++;
                }
                continue;
            }
            if (p == end)
                return 0;   /* unterminated quotes */
            if (*p == quote) {
                if (p + 1 < end && !is_space(p[1]))
                    return 0;   /* closing quote glued to more text */
                p++;
                break;
            }
            if (*p == '\\' && quote == '\'') {
                if (p + 1 < end && p[1] == '\'') {
                    out[olen++] = '\'';
                    p += 2;
                } else {
                    out[olen++] = *p++;
                }
                continue;
            }
            if (*p == '\\' && p + 1 < end) {
                int hi, lo;
                if (p[1] == 'x' && end - p >= 4 && (hi = hex_value(p[2])) >= 0 &&
                    (lo = hex_value(p[3])) >= 0) {
                    out[olen++] = (char)(hi * 16 + lo);
                    p += 4;
                    continue;
                }
                char c = p[1];
                switch (c) {
                case 'n': c = '\n'; break;
                case 'r': c = '\r'; break;
                case 't': c = '\t'; break;
                case 'b': c = '\b'; break;
                case 'a': c = '\a'; break;
                default: break;
                }
                out[olen++] = c;
                p += 2;
                continue;
            }
            /* Any other byte, including a '\\' that ends the line (the quote is then
             * unterminated and the next turn rejects the line). */
            out[olen++] = *p++;
        }

        if (!reserve_args(req, (size_t)req->nargs + 1))
            return -1;
        resp_arg *a = &req->argv[req->nargs++];
        if (out != NULL) {
            a->ptr = out;
            a->len = olen;
            used += olen;
        } else {
            a->ptr = start;
            a->len = (size_t)(p - start);
        }
    }
}

/* Completes the frame in progress: argc/argv for a multibulk frame, *framelen. */
static resp_status finish_multibulk(resp_request *req, const char *buf, size_t *framelen)
{
    for (int i = 0; i < req->nargs; i++) {
        req->argv[i].ptr = buf + req->offs[2 * i];
        req->argv[i].len = req->offs[2 * i + 1];
    }
    req->argc = req->nargs;
    req->inline_req = 0;
    *framelen = req->pos;
    restart_frame(req);
    return RESP_OK;
}

/* Inline request: one line ended by '\n' (a '\r' before it is dropped), split into
 * arguments. Fails with "too big inline request" when more than 64 KiB are pending
 * without a visible '\n', and with "unbalanced quotes in request". */
static resp_status parse_inline(resp_request *req, const char *buf, size_t len, size_t *framelen)
{
    size_t nl;
    if (!find_line_end(req, buf, len, '\n', &nl)) {
        if (len > RESP_INLINE_MAX_SIZE)
            return fail(req, err_inline);
        return RESP_AGAIN;
    }
    size_t n = nl;
    if (n > 0 && buf[n - 1] == '\r')
        n--;
    int rc = split_inline(req, buf, n);
    if (rc < 0)
        return fail(req, err_oom);
    if (rc == 0)
        return fail(req, err_quotes);
    req->argc = req->nargs;
    req->inline_req = 1;
    *framelen = nl + 1;
    restart_frame(req);
    return RESP_OK;
}

/* Starts looking for the "$<len>" line of the next bulk at req->pos. */
static void begin_bulk_header(resp_request *req)
{
    req->state = ST_BULK_HDR;
    req->scan = req->pos;
    req->nul_seen = 0;
    req->bulk_len = -1;
}

/* Multibulk request: "*<count>\r\n" then count times "$<len>\r\n<len bytes>\r\n". A count
 * <= 0 is an empty frame. Errors: "too big mbulk count string", "invalid multibulk
 * length" (not a number, or above INT_MAX), "too big bulk count string", "expected '$',
 * got 'c'", "invalid bulk length" (not a number, negative, or above max_bulk_len). */
static resp_status parse_multibulk(resp_request *req, const char *buf, size_t len,
                                   size_t *framelen)
{
    for (;;) {
        size_t cr;
        long long n;

        switch (req->state) {
        case ST_COUNT:
            if (!find_line_end(req, buf, len, '\r', &cr)) {
                if (len - req->pos > RESP_INLINE_MAX_SIZE)
                    return fail(req, err_mbulk_count);
                return RESP_AGAIN;
            }
            if (cr + 1 >= len)
                return RESP_AGAIN;   /* one byte must follow the '\r' */
            if (!resp_parse_ll(buf + req->pos + 1, cr - req->pos - 1, &n) || n > INT_MAX)
                return fail(req, err_mbulk_len);
            if (n > 10 && req->unauthenticated)
                return fail(req, err_unauth_mbulk);
            req->pos = cr + 2;
            if (n <= 0)
                return finish_multibulk(req, buf, framelen);
            req->want_args = n;
            begin_bulk_header(req);
            break;

        case ST_BULK_HDR:
            if (!find_line_end(req, buf, len, '\r', &cr)) {
                if (len - req->pos > RESP_INLINE_MAX_SIZE)
                    return fail(req, err_bulk_count);
                return RESP_AGAIN;
            }
            if (cr + 1 >= len)
                return RESP_AGAIN;
            if (buf[req->pos] != '$') {
                /* Redis formats the byte with %c, then turns CR and LF into spaces so
                 * that the error stays on one line. The byte is never NUL: the search
                 * for '\r' would have stopped there. */
                unsigned char c = (unsigned char)buf[req->pos];
                if (c == '\r' || c == '\n')
                    c = ' ';
                int w = snprintf(req->errbuf, sizeof(req->errbuf),
                                 PROTO_ERR("expected '$', got '%c'"), c);
                req->state = ST_ERROR;
                req->errstr = req->errbuf;
                req->errlen = (size_t)w;
                req->argc = 0;
                return RESP_ERROR;
            }
            if (!resp_parse_ll(buf + req->pos + 1, cr - req->pos - 1, &n) || n < 0 ||
                n > req->max_bulk_len)
                return fail(req, err_bulk_len);
            if (n > 16384 && req->unauthenticated)
                return fail(req, err_unauth_bulk);
            req->bulk_len = n;
            req->pos = cr + 2;
            req->state = ST_BULK_DATA;
            break;

        case ST_BULK_DATA:
            if ((unsigned long long)(len - req->pos) < (unsigned long long)req->bulk_len + 2)
                return RESP_AGAIN;
            if (!reserve_args(req, (size_t)req->nargs + 1))
                return fail(req, err_oom);
            req->offs[2 * req->nargs] = req->pos;
            req->offs[2 * req->nargs + 1] = (size_t)req->bulk_len;
            req->nargs++;
            req->pos += (size_t)req->bulk_len + 2;
            if (--req->want_args == 0)
                return finish_multibulk(req, buf, framelen);
            begin_bulk_header(req);
            break;

        default:
            return fail(req, err_oom);   /* not reached */
        }
    }
}

resp_status resp_request_parse(resp_request *req, const char *buf, size_t len, size_t *framelen)
{
    if (req->state == ST_ERROR)
        return RESP_ERROR;
    req->argc = 0;
    /* Fewer bytes than last time breaks the contract; starting the frame over is safe. */
    if (req->state != ST_START && (len < req->pos || len < req->scan))
        restart_frame(req);
    if (req->state == ST_START) {
        if (len == 0)
            return RESP_AGAIN;
        trim_buffers(req);
        restart_frame(req);
        req->state = buf[0] == '*' ? ST_COUNT : ST_INLINE;
    }
    if (req->state == ST_INLINE)
        return parse_inline(req, buf, len, framelen);
    return parse_multibulk(req, buf, len, framelen);
}


