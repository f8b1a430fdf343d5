/* policy/cmdargs.c: SET options and EXPIRE-family arguments read as redis-server 7.0 reads
 * them. Each row says whether Redis accepts the command; the rows marked "Redis:" were
 * checked against redis-server 7.0.15 (the error it answers is quoted). The integration test
 * tests/lock/hostile.t.c sends the same commands to a real Redis and through the proxy. */
#include "tap.h"

#include <limits.h>
#include <stdio.h>
#include <string.h>

#include "policy/cmdargs.h"

#define NOW 1700000000000LL   /* a wall clock in ms */

/* Splits a space-separated command into args (no quoting; "\\0" stands for a NUL byte). */
static int split(const char *cmd, char store[][64], resp_arg *argv)
{
    int argc = 0;
    const char *p = cmd;
    while (*p) {
        while (*p == ' ') p++;
        if (!*p) break;
        size_t n = 0;
        while (*p && *p != ' ') {
            if (p[0] == '\\' && p[1] == '0') { store[argc][n++] = '\0'; p += 2; continue; }
            if (p[0] == '\'' && p[1] == '\'') { p += 2; continue; }   /* '' is an empty arg */
            store[argc][n++] = *p++;
        }
        argv[argc].ptr = store[argc];
        argv[argc].len = n;
        argc++;
    }
    return argc;
}

static void set_row(const char *cmd, int want_rc, long long want_ttl, int want_nx)
{
    char store[16][64];
    resp_arg argv[16];
    int argc = split(cmd, store, argv);
    set_args sa;
    int rc = lp_set_args(argc, argv, NOW, &sa);
    if (want_rc < 0) {
        is_int(rc, -1, "%s: refused as Redis refuses it", cmd);
        return;
    }
    if (!is_int(rc, 0, "%s: accepted", cmd)) return;
    is_int(sa.expire_idx > 0 ? sa.ttl_ms : -1, want_ttl, "  %s: ttl", cmd);
    is_int(sa.nx, want_nx, "  %s: nx", cmd);
}

static void expire_row(const char *cmd, int ms, int at, int want_rc, long long want_ttl)
{
    char store[16][64];
    resp_arg argv[16];
    int argc = split(cmd, store, argv);
    expire_args ea;
    int rc = lp_expire_args(argc, argv, ms, at, NOW, &ea);
    if (want_rc < 0) {
        is_int(rc, -1, "%s: refused as Redis refuses it", cmd);
        return;
    }
    if (!is_int(rc, 0, "%s: accepted", cmd)) return;
    is_int(ea.ttl_ms, want_ttl, "  %s: ttl", cmd);
}

int main(void)
{
    plan_lazy();

    /* Options. */
    set_row("SET k v", 0, -1, 0);
    set_row("SET k v NX", 0, -1, 1);
    set_row("SET k v nx px 100", 0, 100, 1);
    set_row("SET k v NX EX 10", 0, 10000, 1);
    set_row("SET k v EX 10 NX", 0, 10000, 1);
    set_row("SET k v NX GET", 0, -1, 1);                  /* allowed since 7.0 */
    set_row("SET k v NX KEEPTTL", 0, -1, 1);
    set_row("SET k v NX NX", 0, -1, 1);                   /* repeating is fine */
    set_row("SET k v EX 10 EX 20", 0, 20000, 0);          /* the last one counts */
    set_row("SET k v NX XX", -1, 0, 0);                   /* Redis: -ERR syntax error */
    set_row("SET k v XX NX", -1, 0, 0);
    set_row("SET k v EX 10 PX 10", -1, 0, 0);
    set_row("SET k v KEEPTTL EX 10", -1, 0, 0);
    set_row("SET k v EX 10 KEEPTTL", -1, 0, 0);
    set_row("SET k v PX", -1, 0, 0);                      /* no value: syntax error */
    set_row("SET k v NXX", -1, 0, 0);
    set_row("SET k v PERSIST", -1, 0, 0);                 /* GETEX only */
    set_row("SET k v NX\\0junk PX 5", 0, 5, 1);           /* options are C strings */
    /* Numbers: string2ll, then Redis's range checks. */
    set_row("SET k v NX PX 010", -1, 0, 0);               /* Redis: not an integer */
    set_row("SET k v NX PX -0", -1, 0, 0);
    set_row("SET k v NX PX +5", -1, 0, 0);
    set_row("SET k v NX PX 5\\0", -1, 0, 0);              /* numbers are not C strings */
    set_row("SET k v NX PX ''", -1, 0, 0);
    set_row("SET k v NX PX 0", -1, 0, 0);                 /* Redis: invalid expire time */
    set_row("SET k v NX EX -1", -1, 0, 0);
    set_row("SET k v NX EX 9223372036854775", -1, 0, 0);  /* * 1000 + now overflows */
    set_row("SET k v NX EX 9223372036854776", -1, 0, 0);  /* * 1000 overflows */
    set_row("SET k v NX PX 9223372036854775807", -1, 0, 0); /* + now overflows */
    set_row("SET k v NX PXAT 9223372036854775807", 0, 9223372036854775807LL - NOW, 1);
    set_row("SET k v NX PXAT -9223372036854775808", -1, 0, 0);
    set_row("SET k v NX PXAT 1", 0, 0, 1);                /* in the past: 0 */
    set_row("SET k v NX EXAT 1700000001", 0, 1000, 1);
    set_row("SET k v NX PX 9223372036854775808", -1, 0, 0);

    /* EXPIRE family. */
    expire_row("EXPIRE k 10", 0, 0, 0, 10000);
    expire_row("PEXPIRE k 10", 1, 0, 0, 10);
    expire_row("EXPIRE k 0", 0, 0, 0, 0);
    expire_row("EXPIRE k -5", 0, 0, 0, -5000);
    expire_row("EXPIRE k 010", 0, 0, -1, 0);              /* Redis: not an integer */
    expire_row("EXPIRE k -0", 0, 0, -1, 0);
    expire_row("EXPIRE k \t10", 0, 0, -1, 0);
    expire_row("EXPIRE k 10\\0", 0, 0, -1, 0);
    expire_row("EXPIRE k +10", 0, 0, -1, 0);
    expire_row("EXPIRE k ''", 0, 0, -1, 0);
    expire_row("EXPIRE k 1e3", 0, 0, -1, 0);
    expire_row("EXPIRE k 9223372036854776", 0, 0, -1, 0);  /* Redis: invalid expire time */
    expire_row("EXPIRE k -9223372036854776", 0, 0, -1, 0);
    expire_row("EXPIRE k 9223372036854775", 0, 0, -1, 0);  /* * 1000 + now overflows */
    expire_row("EXPIRE k -9223372036854775", 0, 0, 0, -9223372036854775000LL);
    expire_row("PEXPIRE k 9223372036854775807", 1, 0, -1, 0);
    expire_row("PEXPIRE k -9223372036854775808", 1, 0, 0, LLONG_MIN);
    expire_row("PEXPIREAT k -9223372036854775808", 1, 1, 0, 0);  /* past: deleted */
    expire_row("PEXPIREAT k 9223372036854775807", 1, 1, 0, 9223372036854775807LL - NOW);
    expire_row("EXPIREAT k -9223372036854775", 0, 1, 0, 0);
    expire_row("EXPIREAT k 9223372036854775", 0, 1, 0, 9223372036854775000LL - NOW);
    expire_row("EXPIREAT k 1700000010", 0, 1, 0, 10000);
    expire_row("PEXPIREAT k 1", 1, 1, 0, 0);
    expire_row("EXPIRE k 10 NX", 0, 0, 0, 10000);
    expire_row("EXPIRE k 10 xx gt", 0, 0, 0, 10000);
    expire_row("EXPIRE k 10 NX XX", 0, 0, -1, 0);         /* Redis: not compatible */
    expire_row("EXPIRE k 10 NX GT", 0, 0, -1, 0);
    expire_row("EXPIRE k 10 GT LT", 0, 0, -1, 0);
    expire_row("EXPIRE k 10 FOO", 0, 0, -1, 0);           /* Unsupported option */
    expire_row("EXPIRE k 010 FOO", 0, 0, -1, 0);          /* the option is read first */
    expire_row("EXPIRE k 10 nx\\0", 0, 0, 0, 10000);      /* options are C strings */

    /* lp_opt_is */
    resp_arg a = {"KeepTTL", 7};
    ok(lp_opt_is(&a, "keepttl"), "lp_opt_is: case-insensitive");
    resp_arg b = {"px\0x", 4};
    ok(lp_opt_is(&b, "px"), "lp_opt_is: stops at NUL");
    resp_arg c = {"pxx", 3};
    ok(!lp_opt_is(&c, "px"), "lp_opt_is: whole word");
    return 0;
}
