/* Shared definitions of the resp/ module: framing of RESP requests and replies.
 * resp/ knows bytes and frames only: no libuv, no policy. */
#ifndef LP_RESP_H
#define LP_RESP_H

#include <stddef.h>

typedef enum {
    RESP_OK,      /* one complete frame was recognised */
    RESP_AGAIN,   /* the bytes end inside a frame: feed more */
    RESP_ERROR    /* the bytes can never form a frame: see the parser's errstr */
} resp_status;

/* Redis's limits (src/server.h): PROTO_INLINE_MAX_SIZE and proto-max-bulk-len's default. */
#define RESP_INLINE_MAX_SIZE (64 * 1024)
#define RESP_DEFAULT_MAX_BULK_LEN (512LL * 1024 * 1024)

#endif
