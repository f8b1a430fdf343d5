/* lpf_check_lockreply: policy/lockreply.c on any reply Redis could send to a lock script.
 *
 * Byte 0 picks the decision (an acquire of each reply shape, SETNX inside MULTI merged with
 * its EXPIRE, an EXPIRE, a DEL of lock and ordinary keys, PERSIST) and whether the reply is
 * read as an EXEC element; the rest is the reply. The scanner cuts one complete frame, as the
 * proxy does before calling lock_op_reply(). Properties: no crash or sanitizer report; the
 * client's reply is whole RESP frames (as many as the command promises: two for a merged
 * SETNX+EXPIRE, one otherwise), unless lock_op_reply asked for a retry, in which case it
 * added nothing and the retry bytes are the EVAL or the client's own command. */
#include "checks.h"
#include "check_util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "policy/lock.h"
#include "policy/policy.h"
#include "resp/reply.h"

static const char *const decisions[][6] = {
    {"SETNX", "lock:a", "v1", NULL},
    {"SET", "lock:a", "tok", "NX", NULL},
    {"SET", "lock:a", "tok", "NX", "GET", NULL},
    {"SET", "lock:a", "tok", "NX", "PX", "100"},
    {"EXPIRE", "lock:a", "10", NULL},
    {"DEL", "lock:a", "k1", "lock:b", NULL},
    {"UNLINK", "lock:b", NULL},
    {"PERSIST", "lock:a", NULL},
};
#define NDEC (sizeof(decisions) / sizeof(decisions[0]))

/* Counts whole RESP frames in p[0..n); -1 when the bytes are not whole frames. */
static int count_frames(const char *p, size_t n)
{
    int frames = 0;
    size_t off = 0;
    while (off < n) {
        resp_reply sc;
        resp_reply_init(&sc);
        size_t used;
        resp_status st = resp_reply_scan(&sc, p + off, n - off, &used);
        resp_reply_free(&sc);
        if (st != RESP_OK) return -1;
        off += used;
        frames++;
    }
    return frames;
}

int lpf_check_lockreply(const uint8_t *data, size_t size)
{
    if (size < 2) return 0;
    unsigned pick = data[0];
    const char *reply = (const char *)data + 1;
    size_t rlen = size - 1;
    /* One complete frame, as the proxy's scanner hands it over. */
    resp_reply sc;
    resp_reply_init(&sc);
    size_t used;
    resp_status st = resp_reply_scan(&sc, reply, rlen, &used);
    resp_reply_free(&sc);
    if (st != RESP_OK) return 0;

    char err[256];
    static const char pol_text[] = "rule lock: enforce ttl=30s max-ttl=60s\n";
    policy *pol = policy_parse(pol_text, sizeof(pol_text) - 1, "fuzz", err, sizeof(err));
    if (pol == NULL) return fail("policy: %s", err);
    lock_ctx ctx;
    memset(&ctx, 0, sizeof(ctx));
    lock_ctx_init(&ctx);
    ctx.pol = pol;
    ctx.leases = lease_table_new(16);
    ctx.instance = "fuzz";

    int rc = 0;
    unsigned d = pick % NDEC, in_multi = (pick / NDEC) % 2, merge = (pick / NDEC / 2) % 2;
    resp_arg argv[6];
    int argc = 0;
    while (argc < 6 && decisions[d][argc] != NULL) {
        argv[argc].ptr = decisions[d][argc];
        argv[argc].len = strlen(decisions[d][argc]);
        argc++;
    }
    lock_client c = {.conn_id = 7, .addr = "10.0.0.1:5000", .ip_len = 8, .proto = 2 + (pick & 1),
                     .in_multi = (int)in_multi, .now_ms = 1000, .wall_ms = 1700000000000LL};
    lock_op *op = NULL;
    lock_action act = lock_decide(&ctx, &c, argc, argv, "x", 1, &op);
    if (act == LOCK_FORWARD) goto out;
    if (op == NULL) { rc = fail("decision %u: no op", d); goto out; }
    int merged = 0;
    if (in_multi && merge && lock_op_is_setnx(op)) {
        resp_arg ex[3] = {{"EXPIRE", 6}, {"lock:a", 6}, {"5", 1}};
        merged = lock_op_merge_expire(&ctx, op, 1700000000000LL, 3, ex);
    }
    for (int round = 0; round < 3; round++) {
        lp_str out = {0};
        int r = lock_op_reply(&ctx, op, reply, used, (int)in_multi, &out);
        if (r == LOCK_REPLY_RETRY) {
            if (out.len != 0) rc = fail("decision %u: a retry that also answered", d);
            else if (lock_op_retry(op)->len == 0) rc = fail("decision %u: a retry with nothing to send", d);
            lp_str_free(&out);
            if (rc) break;
            continue;   /* the retry's reply: the same frame again */
        }
        int want = merged ? 2 : 1, got = count_frames(out.p, out.len);
        if (got != want)
            rc = fail("decision %u%s: the client's reply holds %d frames, not %d", d, merged ? " (merged)" : "", got, want);
        lp_str_free(&out);
        break;
    }
out:
    lock_op_free(op);
    lease_table_free(ctx.leases);
    lock_ctx_free(&ctx);
    policy_free(pol);
    return rc;
}
