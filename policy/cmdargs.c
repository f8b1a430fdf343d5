/* Redis's reading of SET and EXPIRE arguments: see cmdargs.h. The order of the checks is
 * Redis 7.0's (t_string.c parseExtendedStringArgumentsOrReply and
 * getExpireMillisecondsOrReply; expire.c parseExtendedExpireArgumentsOrReply and
 * expireGenericCommand), re-implemented from their behaviour. */
#include "policy/cmdargs.h"

#include <limits.h>
#include <string.h>

int lp_opt_is(const resp_arg *a, const char *lower)
{
    const char *nul = memchr(a->ptr, '\0', a->len);
    resp_arg word = {a->ptr, nul != NULL ? (size_t)(nul - a->ptr) : a->len};
    return resp_arg_is(&word, lower);
}

static int arg_ll(const resp_arg *a, long long *out)
{
    return resp_parse_ll(a->ptr, a->len, out);
}

enum { F_NX = 1, F_XX = 2, F_GET = 4, F_KEEPTTL = 8, F_EX = 16, F_PX = 32, F_EXAT = 64, F_PXAT = 128 };

int lp_set_args(int argc, const resp_arg *argv, int64_t now_ms, set_args *out)
{
    memset(out, 0, sizeof(*out));
    if (argc < 3)
        return -1;
    int f = 0;
    const int any_ttl = F_EX | F_PX | F_EXAT | F_PXAT;
    for (int j = 3; j < argc; j++) {
        const resp_arg *o = &argv[j];
        int has_next = j + 1 < argc;
        if (lp_opt_is(o, "nx") && !(f & F_XX)) {
            f |= F_NX;
        } else if (lp_opt_is(o, "xx") && !(f & F_NX)) {
            f |= F_XX;
        } else if (lp_opt_is(o, "get")) {
            f |= F_GET;
        } else if (lp_opt_is(o, "keepttl") && !(f & any_ttl)) {
            f |= F_KEEPTTL;
        } else if (lp_opt_is(o, "ex") && !(f & (F_KEEPTTL | F_EXAT | F_PX | F_PXAT)) && has_next) {
            f |= F_EX;
            out->expire_idx = ++j;
        } else if (lp_opt_is(o, "px") && !(f & (F_KEEPTTL | F_EX | F_EXAT | F_PXAT)) && has_next) {
            f |= F_PX;
            out->expire_idx = ++j;
        } else if (lp_opt_is(o, "exat") && !(f & (F_KEEPTTL | F_EX | F_PX | F_PXAT)) && has_next) {
            f |= F_EXAT;
            out->expire_idx = ++j;
        } else if (lp_opt_is(o, "pxat") && !(f & (F_KEEPTTL | F_EX | F_EXAT | F_PX)) && has_next) {
            f |= F_PXAT;
            out->expire_idx = ++j;
        } else {
            return -1;   /* -ERR syntax error */
        }
    }
    out->nx = !!(f & F_NX);
    out->xx = !!(f & F_XX);
    out->get = !!(f & F_GET);
    out->keepttl = !!(f & F_KEEPTTL);
    if (out->expire_idx == 0)
        return 0;
    out->expire_ms_unit = !!(f & (F_PX | F_PXAT));
    out->expire_at = !!(f & (F_EXAT | F_PXAT));
    long long v;
    if (!arg_ll(&argv[out->expire_idx], &v))
        return -1;   /* -ERR value is not an integer or out of range */
    if (v <= 0 || (!out->expire_ms_unit && v > LLONG_MAX / 1000))
        return -1;   /* -ERR invalid expire time in 'set' command */
    if (!out->expire_ms_unit)
        v *= 1000;
    if (!out->expire_at) {
        /* Redis adds its clock and calls a result <= 0 an overflow. */
        if (now_ms > 0 && v > LLONG_MAX - now_ms)
            return -1;
        out->ttl_ms = v;
    } else {
        out->ttl_ms = v > now_ms ? v - now_ms : 0;
    }
    return 0;
}

int lp_expire_args(int argc, const resp_arg *argv, int ms_unit, int at, int64_t now_ms,
                   expire_args *out)
{
    memset(out, 0, sizeof(*out));
    if (argc < 3)
        return -1;
    for (int j = 3; j < argc; j++) {
        if (lp_opt_is(&argv[j], "nx")) out->nx = 1;
        else if (lp_opt_is(&argv[j], "xx")) out->xx = 1;
        else if (lp_opt_is(&argv[j], "gt")) out->gt = 1;
        else if (lp_opt_is(&argv[j], "lt")) out->lt = 1;
        else return -1;   /* -ERR Unsupported option */
    }
    if (out->nx && (out->xx || out->gt || out->lt))
        return -1;
    if (out->gt && out->lt)
        return -1;
    long long when;
    if (!arg_ll(&argv[2], &when))
        return -1;   /* -ERR value is not an integer or out of range */
    if (!ms_unit) {
        if (when > LLONG_MAX / 1000 || when < LLONG_MIN / 1000)
            return -1;   /* -ERR invalid expire time in '...' command */
        when *= 1000;
    }
    long long base = at ? 0 : now_ms;
    if (when > LLONG_MAX - base)
        return -1;
    /* base >= 0 and when <= LLONG_MAX - base: the sum cannot overflow either way. */
    when += base;
    out->when_ms = when;
    /* Relative: when - now_ms is the client's own number. Absolute: a time already past
     * is 0, never a difference that could overflow. */
    if (!at)
        out->ttl_ms = when - now_ms;
    else
        out->ttl_ms = when > now_ms ? when - now_ms : 0;
    return 0;
}
