/* Differential tests, authentication: a Redis with requirepass (NOAUTH, WRONGPASS, AUTH,
 * HELLO AUTH, and Redis's smaller request limits before authentication), and ACL users
 * (ACL SETUSER, AUTH user pass, NOPERM). The client's own AUTH passes through; the proxy never
 * writes the password to its log. */
#include <string.h>

#include "lib/harness.h"

#define PASSWORD "pw-9f8e7d-secret"

static hp_proc *redis, *proxy;       /* requirepass */
static hp_proc *open_redis, *open_proxy;

static void diff_exact(hp_proc *r, hp_proc *p, const char *name, const void *req, size_t len,
                       const char *want, int closes)
{
    const hp_step steps[] = { HP_SENDN(req, len), HP_END };
    hp_diff_opts norm = { .normalise = hp_norm_hello };
    hp_side d, s;
    hp_diff_ex(r, p, name, steps, &norm, &d, &s);
    if (want != NULL &&
        (!is_bytes(d.cmp.data, d.cmp.len, want, strlen(want), "%s: Redis answers \"%s\"", name,
                   hp_esc(want, strlen(want), 100)) ||
         !is_int(d.closed, closes, "%s: Redis %s", name, closes ? "closes" : "stays open")))
        diag("%s: the expectation does not match this Redis: fix the test", name);
    hp_side_free(&d);
    hp_side_free(&s);
}

#define DIFF(name, lit, want, closes) diff_exact(redis, proxy, name, lit, sizeof(lit) - 1, want, closes)
#define DIFF_OPEN(name, lit, want, closes) \
    diff_exact(open_redis, open_proxy, name, lit, sizeof(lit) - 1, want, closes)

static void test_requirepass(void)
{
    DIFF("NOAUTH before AUTH", "PING\r\nGET a\r\n",
         "-NOAUTH Authentication required.\r\n-NOAUTH Authentication required.\r\n", 0);
    DIFF("wrong password, then the right one",
         "AUTH wrong\r\nGET a\r\nAUTH " PASSWORD "\r\nSET a 1\r\nGET a\r\n",
         "-WRONGPASS invalid username-password pair or user is disabled.\r\n"
         "-NOAUTH Authentication required.\r\n+OK\r\n+OK\r\n$1\r\n1\r\n", 0);
    DIFF("AUTH default password", "AUTH default " PASSWORD "\r\nPING\r\n", "+OK\r\n+PONG\r\n", 0);
    DIFF("AUTH with too many arguments", "AUTH a b c\r\nPING\r\n",
         "-ERR syntax error\r\n-NOAUTH Authentication required.\r\n", 0);
    DIFF("HELLO 3 without AUTH", "HELLO 3\r\nPING\r\n", NULL, 0);
    DIFF("HELLO 3 AUTH default password", "HELLO 3 AUTH default " PASSWORD "\r\nPING\r\nHELLO 2\r\n", NULL, 0);
    DIFF("HELLO 3 AUTH with a wrong password", "HELLO 3 AUTH default nope\r\nPING\r\n", NULL, 0);
    DIFF("AUTH inside MULTI", "AUTH " PASSWORD "\r\nMULTI\r\nAUTH " PASSWORD "\r\nEXEC\r\n", NULL, 0);

    /* Before authentication Redis accepts at most 10 arguments and 16 KiB bulks. */
    DIFF("unauthenticated: 11 arguments", "*11\r\n",
         "-ERR Protocol error: unauthenticated multibulk length\r\n", 1);
    DIFF("unauthenticated: 10 arguments are fine",
         "*10\r\n$3\r\nDEL\r\n$1\r\n1\r\n$1\r\n2\r\n$1\r\n3\r\n$1\r\n4\r\n$1\r\n5\r\n$1\r\n6\r\n"
         "$1\r\n7\r\n$1\r\n8\r\n$1\r\n9\r\n",
         "-NOAUTH Authentication required.\r\n", 0);
    DIFF("unauthenticated: a 20000-byte bulk", "*1\r\n$20000\r\n",
         "-ERR Protocol error: unauthenticated bulk length\r\n", 1);
    DIFF("AUTH, then 11 arguments in the same packet",
         "AUTH " PASSWORD "\r\n*11\r\n$4\r\nMSET\r\n$1\r\na\r\n$1\r\n1\r\n$1\r\nb\r\n$1\r\n2\r\n"
         "$1\r\nc\r\n$1\r\n3\r\n$1\r\nd\r\n$1\r\n4\r\n$1\r\ne\r\n$1\r\n5\r\nMGET a e\r\n",
         "+OK\r\n+OK\r\n*2\r\n$1\r\n1\r\n$1\r\n5\r\n", 0);
    DIFF("failed AUTH, then 11 arguments", "AUTH wrong\r\n*11\r\n",
         "-WRONGPASS invalid username-password pair or user is disabled.\r\n"
         "-ERR Protocol error: unauthenticated multibulk length\r\n", 1);
    DIFF("AUTH, then a 20000-byte bulk length",
         "AUTH " PASSWORD "\r\n*2\r\n$4\r\nECHO\r\n$20000\r\n",
         "+OK\r\n", 0);

    /* The proxy reads the bytes of AUTH but must not write the password anywhere. */
    hp_buf log = {0};
    if (!proxy->stand_in) {
        hp_log_read(proxy, &log);
        ok(!HP_HAS(&log, PASSWORD), "the proxy's log does not contain the password");
    }
    hp_buf_free(&log);
}

static void test_acl_user(void)
{
    DIFF_OPEN("ACL SETUSER, AUTH user pass",
              "ACL SETUSER alice on >alicepw ~alice:* +get +set +ping +acl|whoami\r\n"
              "AUTH alice alicepw\r\nACL WHOAMI\r\nSET alice:1 x\r\nGET alice:1\r\nSET bob:1 x\r\n"
              "FLUSHALL\r\nPING\r\n",
              "+OK\r\n+OK\r\n$5\r\nalice\r\n+OK\r\n$1\r\nx\r\n"
              "-NOPERM this user has no permissions to access one of the keys used as arguments\r\n"
              "-NOPERM this user has no permissions to run the 'flushall' command\r\n+PONG\r\n", 0);
    DIFF_OPEN("AUTH user with a wrong password keeps the previous user",
              "ACL SETUSER alice on >alicepw ~alice:* +get +set +ping +acl|whoami\r\n"
              "AUTH alice alicepw\r\nAUTH alice nope\r\nACL WHOAMI\r\nAUTH default x\r\nACL WHOAMI\r\n",
              "+OK\r\n+OK\r\n-WRONGPASS invalid username-password pair or user is disabled.\r\n"
              "$5\r\nalice\r\n+OK\r\n$7\r\ndefault\r\n", 0);
    DIFF_OPEN("disabled user", "ACL SETUSER carol off >carolpw +@all ~*\r\nAUTH carol carolpw\r\nACL WHOAMI\r\n",
              "+OK\r\n-WRONGPASS invalid username-password pair or user is disabled.\r\n$7\r\ndefault\r\n", 0);
    DIFF_OPEN("HELLO 3 AUTH user pass", "ACL SETUSER dave on >davepw +@all ~*\r\n"
              "HELLO 3 AUTH dave davepw\r\nACL WHOAMI\r\n", NULL, 0);
    DIFF_OPEN("a user whose commands all fail with NOPERM in a pipeline",
              "ACL SETUSER erin on >erinpw +ping\r\nAUTH erin erinpw\r\nGET a\r\nSET a b\r\nPING\r\n"
              "MULTI\r\nEXEC\r\n", NULL, 0);
    ok(hp_cmd_ok(open_redis, "ACL DELUSER alice carol dave erin"), "ACL users removed");
}

int main(void)
{
    plan_lazy();
    redis = hp_redis_start((const char *[]){ "--requirepass", PASSWORD, NULL });
    proxy = hp_proxy_start(redis, NULL);
    open_redis = hp_redis_start(NULL);
    open_proxy = hp_proxy_start(open_redis, NULL);

    test_requirepass();
    test_acl_user();

    is_int(hp_stop(proxy, 10000), 0, "the proxy exits 0 on SIGTERM");
    is_int(hp_stop(open_proxy, 10000), 0, "the second proxy exits 0 on SIGTERM");
    return 0;
}
