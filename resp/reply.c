/* Reply framer: a byte-driven state machine over the upstream's reply stream.
 *
 * Every RESP value starts with a type byte, which selects one of three shapes:
 *
 *   line       '+' '-' ',' '(' '#' '_'         text up to CRLF
 *   number     ':'                             signed digits up to CRLF
 *   header     '$' '!' '='  (blobs)            length, CRLF, payload, CRLF
 *              '*' '~' '>' '%' '|'  (aggregates) count, CRLF, then count values
 *
 * The scanner keeps no bytes: lines are skipped with memchr, blob payloads by arithmetic, and
 * an aggregate is one level on a stack holding the number of values still to come (2n for a
 * map or attribute of n pairs). When a value completes, the enclosing level is decremented;
 * a level reaching zero completes in turn, and so on up. An attribute is not a value of its
 * parent: when it completes, the value it annotates is still to come, so nothing above it is
 * decremented. The frame is complete when a value completes with no level open.
 *
 * Only the few bytes the proxy asks about (the head of a top-level aggregate, a top-level
 * status or error line, integers) are copied into the summary fields as they pass. */
#include "resp/reply.h"

#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum {
    ST_TYPE,        /* expecting a type byte */
    ST_LINE,        /* inside a line, looking for CR */
    ST_LINE_LF,     /* after the CR that ends a line or a blob: expecting LF */
    ST_NUM,         /* inside a number or length */
    ST_NUM_LF,      /* after the CR that ends a number: expecting LF */
    ST_BLOB,        /* inside a blob payload */
    ST_BLOB_CR,     /* after a blob payload: expecting CR */
    ST_ERROR        /* sticky */
};

enum { CAP_NONE, CAP_HEAD, CAP_LINE };

#define STACK_MIN 16

void resp_reply_init(resp_reply *r)
{
    memset(r, 0, sizeof(*r));
    r->state = ST_TYPE;
    r->count = -1;
    r->head_len = (size_t)-1;
}

void resp_reply_free(resp_reply *r)
{
    if (r == NULL)
        return;
    free(r->stack);
    resp_reply_init(r);
}

/* Records why the stream is not RESP and makes the scanner's state sticky. */
static void set_error(resp_reply *r, const char *msg)
{
    r->errstr = msg;
    r->state = ST_ERROR;
}

static void set_error_byte(resp_reply *r, const char *what, unsigned char c)
{
    if (c >= 0x20 && c < 0x7f)
        snprintf(r->errbuf, sizeof(r->errbuf), "Protocol error: %s '%c'", what, c);
    else
        snprintf(r->errbuf, sizeof(r->errbuf), "Protocol error: %s 0x%02x", what, c);
    set_error(r, r->errbuf);
}

/* Starts a new frame: the summary of the previous one is forgotten. */
static void frame_reset(resp_reply *r)
{
    r->type = 0;
    r->frame_len = 0;
    r->count = -1;
    r->head_len = (size_t)-1;
    r->last_int = 0;
    r->line_len = 0;
    r->in_frame = 1;
    r->first_seen = 0;
}

/* True when a value starting now sits directly in the top-level aggregate (not inside a
 * nested one, nor inside an attribute). */
static inline int at_top_element(const resp_reply *r)
{
    return r->depth == 1 && !r->stack[0].attr;
}

/* Copies the next n bytes of the string being captured, as far as the summary has room. */
static inline void capture_line(resp_reply *r, const char *p, size_t n)
{
    size_t have = r->capture_len;
    if (have < RESP_REPLY_HEAD_MAX) {
        size_t room = RESP_REPLY_HEAD_MAX - have;
        memcpy((r->capture == CAP_HEAD ? r->head : r->line) + have, p, n < room ? n : room);
    }
}

/* Called when a value has ended. Pops every aggregate it completes. Returns 1 when the
 * top-level frame is complete, 0 when more values are to come. */
static int value_done(resp_reply *r)
{
    r->state = ST_TYPE;
    if (r->capture != CAP_NONE) {
        if (r->capture == CAP_HEAD)
            r->head_len = r->capture_len;
        else
            r->line_len = r->capture_len;
        r->capture = CAP_NONE;
    }
    while (r->depth > 0) {
        struct resp_reply_level *l = &r->stack[r->depth - 1];
        if (--l->left > 0)
            return 0;
        r->depth--;
        if (l->attr)
            return 0;   /* the annotated value is still to come */
    }
    return 1;
}

/* Opens an aggregate of n > 0 values. Returns -1 when out of memory. */
static int push_level(resp_reply *r, unsigned long long n, int attr)
{
    if (r->depth == r->cap) {
        size_t cap = r->cap ? r->cap * 2 : STACK_MIN;
        struct resp_reply_level *s;
        if (cap > SIZE_MAX / sizeof(*s))
            return -1;
        s = realloc(r->stack, cap * sizeof(*s));
        if (s == NULL)
            return -1;
        r->stack = s;
        r->cap = cap;
    }
    r->stack[r->depth].left = n;
    r->stack[r->depth].attr = attr;
    r->depth++;
    return 0;
}

/* Acts on a type byte: chooses the state that reads the rest of the value and notes what
 * the summary wants from it. Returns 0, or -1 with the error set. */
static int begin_value(resp_reply *r, unsigned char c)
{
    switch (c) {
    case '+': case '-': case ',': case '(': case '#': case '_':
        r->state = ST_LINE;
        break;
    case ':': case '$': case '!': case '=':
    case '*': case '~': case '>': case '%': case '|':
        r->state = ST_NUM;
        r->num = 0;
        r->num_neg = 0;
        r->num_digits = 0;
        break;
    case ';': case '.':
        set_error_byte(r, "streamed reply is not supported:", c);
        return -1;
    default:
        set_error_byte(r, "invalid reply type byte", c);
        return -1;
    }
    r->cur = (char)c;
    if (c == '|')
        return 0;   /* an attribute is neither the frame's type nor an element */
    if (r->depth == 0) {
        r->type = (char)c;
        if (c == '+' || c == '-') {
            r->capture = CAP_LINE;
            r->capture_len = 0;
        }
    } else if (at_top_element(r) && !r->first_seen) {
        r->first_seen = 1;
        if (c == '+' || c == '$' || c == '=') {
            r->capture = CAP_HEAD;
            r->capture_len = 0;
        }
    }
    return 0;
}

/* Acts on a complete number or length (in r->num, r->num_neg) for the type r->cur.
 * Returns 1 when it completes the frame, 0 when more is to come, -1 on error. */
static int number_done(resp_reply *r)
{
    unsigned long long n = r->num;
    char c = r->cur;

    if (r->num_digits == 0) {
        set_error_byte(r, "no digits after", (unsigned char)c);
        return -1;
    }
    if (c == ':') {
        if (r->depth == 0 || at_top_element(r)) {
            if (!r->num_neg)
                r->last_int = (long long)n;
            else if (n == 0)
                r->last_int = 0;
            else
                r->last_int = -(long long)(n - 1) - 1;
        }
        return value_done(r);
    }
    if (r->num_neg) {
        /* The RESP2 nulls '$-1' and '*-1': no payload, no elements. */
        if (n == 1 && (c == '$' || c == '*')) {
            r->capture = CAP_NONE;   /* a null first element is not a string */
            return value_done(r);
        }
        set_error_byte(r, "negative length after", (unsigned char)c);
        return -1;
    }
    switch (c) {
    case '$': case '!': case '=':
        r->bulk_left = n;
        r->capture_len = n;
        r->state = n > 0 ? ST_BLOB : ST_BLOB_CR;
        return 0;
    case '%': case '|':
        if (n > LLONG_MAX / 2) {
            set_error_byte(r, "length out of range after", (unsigned char)c);
            return -1;
        }
        n *= 2;
        break;
    default:
        break;
    }
    if (r->depth == 0 && c != '|')
        r->count = (long long)n;
    if (n == 0) {
        if (c == '|') {
            r->state = ST_TYPE;
            return 0;
        }
        return value_done(r);
    }
    if (push_level(r, n, c == '|') < 0) {
        set_error(r, "out of memory");
        return -1;
    }
    r->state = ST_TYPE;
    return 0;
}

resp_status resp_reply_scan(resp_reply *r, const char *buf, size_t len, size_t *used)
{
    const char *p = buf, *end = buf + len;
    const char *start = buf;   /* where this call's part of the current frame begins */
    int rc;

    if (r->state == ST_ERROR) {
        *used = 0;
        return RESP_ERROR;
    }
    while (p < end) {
        switch (r->state) {
        case ST_TYPE:
            if (!r->in_frame) {
                frame_reset(r);
                start = p;
            }
            if (begin_value(r, (unsigned char)*p++) < 0)
                goto error;
            break;

        case ST_LINE: {
            const char *cr = memchr(p, '\r', (size_t)(end - p));
            size_t n = (size_t)((cr ? cr : end) - p);
            if (r->capture != CAP_NONE) {
                capture_line(r, p, n);
                r->capture_len += n;
            }
            p += n;
            if (cr != NULL) {
                p++;
                r->state = ST_LINE_LF;
            }
            break;
        }

        case ST_LINE_LF:
            if (*p != '\n') {
                set_error_byte(r, "expected LF after CR, got", (unsigned char)*p);
                p++;
                goto error;
            }
            p++;
            if (value_done(r))
                goto done;
            break;

        case ST_NUM: {
            unsigned long long num = r->num;
            int neg = r->num_neg;
            int digits = r->num_digits;
            while (p < end) {
                unsigned char c = (unsigned char)*p;
                if ((unsigned)(c - '0') < 10u) {
                    unsigned d = c - '0';
                    /* |LLONG_MIN| = 922337203685477580 * 10 + 8 */
                    if (num >= 922337203685477580ULL &&
                        (num > 922337203685477580ULL || d > 7u + (unsigned)neg)) {
                        set_error_byte(r, "number out of range after", (unsigned char)r->cur);
                        p++;
                        goto error;
                    }
                    num = num * 10 + d;
                    digits = 1;
                    p++;
                } else if (c == '\r') {
                    p++;
                    r->state = ST_NUM_LF;
                    break;
                } else if (c == '-' && !digits && !neg) {
                    neg = 1;
                    p++;
                } else if (c == '?' && !digits && !neg && r->cur != ':') {
                    snprintf(r->errbuf, sizeof(r->errbuf),
                             "Protocol error: streamed reply '%c?' is not supported", r->cur);
                    set_error(r, r->errbuf);
                    p++;
                    goto error;
                } else {
                    set_error_byte(r, "invalid byte in number", c);
                    p++;
                    goto error;
                }
            }
            r->num = num;
            r->num_neg = (unsigned char)neg;
            r->num_digits = (unsigned char)digits;
            break;
        }

        case ST_NUM_LF:
            if (*p != '\n') {
                set_error_byte(r, "expected LF after CR, got", (unsigned char)*p);
                p++;
                goto error;
            }
            p++;
            rc = number_done(r);
            if (rc < 0)
                goto error;
            if (rc > 0)
                goto done;
            break;

        case ST_BLOB: {
            size_t avail = (size_t)(end - p);
            size_t n = r->bulk_left < avail ? (size_t)r->bulk_left : avail;
            if (r->capture != CAP_NONE) {
                /* capture_len holds the full length: the offset is what has passed. */
                size_t off = r->capture_len - r->bulk_left;
                if (off < RESP_REPLY_HEAD_MAX) {
                    size_t room = RESP_REPLY_HEAD_MAX - off;
                    memcpy((r->capture == CAP_HEAD ? r->head : r->line) + off, p,
                           n < room ? n : room);
                }
            }
            p += n;
            r->bulk_left -= n;
            if (r->bulk_left == 0)
                r->state = ST_BLOB_CR;
            break;
        }

        case ST_BLOB_CR:
            if (*p != '\r') {
                set_error_byte(r, "expected CR after blob payload, got", (unsigned char)*p);
                p++;
                goto error;
            }
            p++;
            r->state = ST_LINE_LF;
            break;

        default:
            set_error(r, "Protocol error: scanner in an unknown state");
            goto error;
        }
    }
    r->frame_len += (size_t)(p - start);
    *used = len;
    return RESP_AGAIN;

done:
    r->frame_len += (size_t)(p - start);
    r->in_frame = 0;
    *used = (size_t)(p - buf);
    return RESP_OK;

error:
    /* *used counts the offending byte; number_done's errors are found after the LF. */
    r->state = ST_ERROR;
    *used = (size_t)(p - buf);
    return RESP_ERROR;
}
