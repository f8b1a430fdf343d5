/* Request framer: splits a client byte stream into commands exactly as redis-server does
 * (src/networking.c, processInlineBuffer and processMultibulkBuffer): inline and multibulk
 * requests, Redis's limits and its exact protocol error lines.
 *
 * Usage: present the unconsumed bytes, always starting at the first byte of the frame in
 * progress, to resp_request_parse(). Between calls the caller may move the bytes (the parser
 * keeps offsets, never pointers) and may append to them, but must not change the bytes it
 * already presented. On RESP_OK the frame's length is in *framelen and its arguments are in
 * req->argv (pointers into the presented buffer, or into the parser's own scratch space for
 * inline requests with quotes), valid until the next call; the caller consumes framelen
 * bytes and calls again. A frame may have argc == 0 (an empty inline line, "*0", "*-1"):
 * Redis runs nothing for it and sends no reply.
 * On RESP_ERROR the parser is stuck: req->errstr holds the full error line Redis sends
 * (with "\r\n"), after which Redis closes the connection. Work is proportional to the bytes
 * fed: a 512 MiB argument arriving in small reads is not rescanned. */
#ifndef LP_RESP_REQUEST_H
#define LP_RESP_REQUEST_H

#include "resp/resp.h"

typedef struct resp_arg {
    const char *ptr;
    size_t len;
} resp_arg;

typedef struct resp_request {
    /* Settings; resp_request_init() gives Redis's defaults. */
    long long max_bulk_len;        /* proto-max-bulk-len */
    int unauthenticated;           /* Redis's tighter limits before AUTH: 10 args, 16 KiB bulks */

    /* The result of the last RESP_OK. */
    int argc;
    resp_arg *argv;
    int inline_req;                /* 1 when the frame was an inline command */

    /* The result of RESP_ERROR: "-ERR Protocol error: ...\r\n". */
    const char *errstr;
    size_t errlen;

    /* Private state of a frame in progress. */
    int state;
    long long want_args;           /* multibulk count still to read */
    long long bulk_len;            /* length of the bulk being read, or -1 */
    size_t pos;                    /* bytes of the frame already parsed */
    size_t scan;                   /* where the search for the current line's end resumes */
    int nul_seen;                  /* a NUL byte hides the current line's end (as strchr) */
    size_t *offs;                  /* start offset and length of each argument, in pairs */
    int nargs, cap;
    char *scratch;                 /* inline arguments after unquoting */
    size_t scratch_cap;
    char errbuf[64];
} resp_request;

void resp_request_init(resp_request *req);
void resp_request_free(resp_request *req);
/* Forgets a frame in progress and a sticky error. */
void resp_request_reset(resp_request *req);
resp_status resp_request_parse(resp_request *req, const char *buf, size_t len, size_t *framelen);

/* Parses s[0..n) as a decimal long long exactly as Redis's string2ll() does, the parser
 * behind every integer argument Redis reads: an optional '-', no '+', no spaces, no leading
 * zeros ("0" alone is fine, "-0" is not), no overflow. Returns 1 with *out set, or 0. */
int resp_parse_ll(const char *s, size_t n, long long *out);

/* Case-insensitive comparison of an argument with a NUL-terminated lower-case word. Inline:
 * with a literal word the length test folds to a constant, so most calls cost one compare. */
static inline int resp_arg_is(const resp_arg *a, const char *lower)
{
    size_t n = __builtin_strlen(lower);
    if (a->len != n)
        return 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)a->ptr[i];
        if (c >= 'A' && c <= 'Z')
            c = (unsigned char)(c - 'A' + 'a');
        if (c != (unsigned char)lower[i])
            return 0;
    }
    return 1;
}

#endif
