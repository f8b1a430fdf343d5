/* Reply framer: finds the boundaries of replies in an upstream byte stream, RESP2 and RESP3,
 * every type (simple string, error, integer, bulk, array, null, double, boolean, blob error,
 * verbatim string, big number, map, set, attribute, push), nested to any depth.
 *
 * It is a streaming scanner: it never needs a frame to be complete to make progress, keeps
 * no copy of the bytes, and looks at each byte at most once, so the proxy can forward reply
 * bytes as they arrive while still knowing where each reply ends.
 *
 * resp_reply_scan() looks at buf[0..len), the bytes that follow what it has already seen.
 * It stops after the first byte that completes a top-level frame (returning RESP_OK) or at
 * the end of the bytes (RESP_AGAIN); *used is the number of bytes it looked at. After
 * RESP_OK, the frame's summary is in the public fields below until the next call.
 * RESP_ERROR means the stream is not RESP (the upstream is not a Redis server, or streamed
 * aggregates, which Redis never sends); errstr says why. */
#ifndef LP_RESP_REPLY_H
#define LP_RESP_REPLY_H

#include "resp/resp.h"

#define RESP_REPLY_HEAD_MAX 24

/* One open aggregate on the scanner's stack. */
struct resp_reply_level {
    unsigned long long left;       /* elements still to come */
    int attr;                      /* 1 for an attribute, which is not an element itself */
};

typedef struct resp_reply {
    /* Summary of the last complete frame. */
    char type;                     /* first type byte after any attribute: '+', '*', '>', ... */
    size_t frame_len;              /* bytes of the whole frame, attributes included */
    /* Elements of a top-level aggregate, or -1 (not an aggregate, or '*-1'). A map '%n'
     * counts its keys and values: 2n. */
    long long count;
    /* The first element of a top-level aggregate when it is a string (simple, bulk or
     * verbatim, the latter with its "txt:" prefix): its first RESP_REPLY_HEAD_MAX bytes (not
     * NUL-terminated) and its full length. Enough to tell a pub/sub "message" from a
     * "subscribe" confirmation. An attribute before the first element is skipped. */
    char head[RESP_REPLY_HEAD_MAX];
    size_t head_len;               /* full length, or (size_t)-1 when not a string */
    /* The integer of a ':' reply, or the last integer element directly in a top-level
     * aggregate; 0 when there is none. */
    long long last_int;
    /* The first bytes of a top-level simple string or error (without the type byte and the
     * CRLF; not NUL-terminated). */
    char line[RESP_REPLY_HEAD_MAX];
    size_t line_len;               /* full length; 0 when the frame is not '+' or '-' */

    const char *errstr;            /* why RESP_ERROR was returned; NULL before */

    /* Private scanner state. */
    int state;
    char cur;                      /* type byte of the value being parsed */
    unsigned char in_frame;        /* a frame has begun and not ended */
    unsigned char first_seen;      /* the top-level aggregate's first element has begun */
    unsigned char capture;         /* where the current string is copied: none, head, line */
    unsigned char num_neg;
    unsigned char num_digits;      /* digits seen, saturating */
    unsigned long long num;        /* magnitude of the number being parsed */
    unsigned long long bulk_left;  /* payload bytes still to skip */
    size_t capture_len;            /* full length of the captured string so far */
    size_t depth;                  /* open aggregates */
    size_t cap;                    /* allocated levels */
    struct resp_reply_level *stack;
    char errbuf[80];
} resp_reply;

/* Prepares a scanner at the start of a stream. Allocates nothing; cannot fail. */
void resp_reply_init(resp_reply *r);
/* Releases the scanner's stack. Accepts NULL; afterwards r is as after resp_reply_init. */
void resp_reply_free(resp_reply *r);
/* See the top of this file. RESP_ERROR is sticky: later calls return it at once, *used 0.
 * Out of memory for the stack is reported as RESP_ERROR too. */
resp_status resp_reply_scan(resp_reply *r, const char *buf, size_t len, size_t *used);

#endif
