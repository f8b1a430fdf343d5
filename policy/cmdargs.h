/* How redis-server 7.0 reads the arguments of the commands the lock policy rewrites: SET's
 * options and the EXPIRE family's time and flags. No sockets, no clock of its own.
 *
 * The rule these functions serve: a command whose arguments Redis would refuse (a syntax
 * error, a number that is not an integer, an expire time that overflows) is never rewritten.
 * It goes to Redis unchanged, and the client gets Redis's own error line. So the checks here
 * follow Redis's order and its arithmetic exactly, and every number is range-checked before
 * any arithmetic is done with it.
 *
 * Two Redis quirks are kept: option words (NX, PX, KEEPTTL, ...) are compared as C strings,
 * so "NX\0junk" reads as NX; numbers are compared with their full length (string2ll), so
 * "10\0" is not a number. */
#ifndef LP_CMDARGS_H
#define LP_CMDARGS_H

#include <stdint.h>
#include "resp/request.h"

/* 1 when the argument, read up to its first NUL byte as Redis reads option words, equals the
 * lower-case word, ignoring case. */
int lp_opt_is(const resp_arg *a, const char *lower);

/* SET key value [NX|XX] [GET] [EX s|PX ms|EXAT ts|PXAT ms-ts|KEEPTTL]. */
typedef struct set_args {
    int nx, xx, get, keepttl;
    int expire_idx;          /* argv index of the EX/PX/EXAT/PXAT value; 0 without one */
    int expire_ms_unit;      /* PX or PXAT */
    int expire_at;           /* EXAT or PXAT: an absolute time */
    long long ttl_ms;        /* with an expire: how long from now_ms the key lives;
                              * <= 0 when that time has already passed */
} set_args;

/* Reads a SET (argc >= 3) as Redis does. Returns 0 when Redis would accept the options and
 * the expire time, -1 when it answers an error (syntax error, "value is not an integer or
 * out of range", "invalid expire time in 'set' command"). now_ms is the wall clock. */
int lp_set_args(int argc, const resp_arg *argv, int64_t now_ms, set_args *out);

/* EXPIRE/PEXPIRE/EXPIREAT/PEXPIREAT key time [NX|XX|GT|LT ...]. */
typedef struct expire_args {
    int nx, xx, gt, lt;
    long long ttl_ms;        /* how long from now_ms the key would live; <= 0: Redis deletes
                              * the key at once (the time has already passed) */
    long long when_ms;       /* the absolute time in ms Redis computes (basetime + time) */
} expire_args;

/* Reads an EXPIRE-family command (argc >= 3) as Redis does; ms_unit for PEXPIRE and
 * PEXPIREAT, at for EXPIREAT and PEXPIREAT. Returns 0, or -1 when Redis answers an error
 * ("Unsupported option", incompatible flags, not an integer, "invalid expire time"). */
int lp_expire_args(int argc, const resp_arg *argv, int ms_unit, int at, int64_t now_ms,
                   expire_args *out);

#endif
