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

typedef struct resp_reply {
    /* Summary of the last complete frame. */
    char type;                     /* first type byte after any attribute: '+', '*', '>', ... */
    size_t frame_len;              /* bytes of the whole frame */
    long long count;               /* elements of a top-level aggregate, or -1 */
    /* The first element of a top-level aggregate when it is a string (simple, bulk or
     * verbatim): its first RESP_REPLY_HEAD_MAX bytes and its full length. Enough to tell a
     * pub/sub "message" from a "subscribe" confirmation. */
    char head[RESP_REPLY_HEAD_MAX];
    size_t head_len;               /* full length, or (size_t)-1 when not a string */
    long long last_int;            /* the last integer element directly in the top level */
    /* The first bytes of a top-level simple string or error (without the type byte). */
    char line[RESP_REPLY_HEAD_MAX];
    size_t line_len;               /* full length */

    const char *errstr;

    /* Private scanner state. */
    int state;
    int depth;                     /* open aggregates */
    int cap;
    long long *left;               /* elements still to come per open aggregate */
    unsigned char *attr;           /* 1 where the open aggregate is an attribute */
    long long num;                 /* number being parsed */
    int num_neg, num_digits;
    char cur;                      /* type byte of the value being parsed */
    long long bulk_left;           /* payload bytes (plus CRLF) still to skip */
    int elem_index;                /* index of the next element at depth 1 */
    int capture;                   /* copying the current string into head/line */
    size_t capture_len;
} resp_reply;

void resp_reply_init(resp_reply *r);
void resp_reply_free(resp_reply *r);
resp_status resp_reply_scan(resp_reply *r, const char *buf, size_t len, size_t *used);

#endif
