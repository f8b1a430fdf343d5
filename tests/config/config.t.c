/* Configuration: addresses, sizes, durations, the config file and its errors, flags. */
#include "tap.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "policy/policy.h"
#include "proxy/addr.h"
#include "proxy/config.h"

static char path[64];           /* the temp file of the current test */
static char err[1024];

/* Writes text to a fresh temp file named in path. */
static void write_tmp(const char *text)
{
    strcpy(path, "/tmp/lp-config-XXXXXX");
    int fd = mkstemp(path);
    if (fd < 0 || write(fd, text, strlen(text)) != (ssize_t)strlen(text)) bail_out("mkstemp/write failed");
    close(fd);
}

/* Loads text as a config file over the defaults. The caller frees c. */
static int load(lp_config *c, const char *text)
{
    lp_config_defaults(c);
    write_tmp(text);
    err[0] = '\0';
    int rc = lp_config_load_file(c, path, err, sizeof err);
    unlink(path);
    return rc;
}

/* Checks that text fails with exactly "TMPFILE:LINE: msg". */
static void file_error(const char *text, int line, const char *msg)
{
    lp_config c;
    char want[1024];
    int rc = load(&c, text);
    snprintf(want, sizeof want, "%s:%d: %s", path, line, msg);
    ok(rc == -1, "rejected: %s", msg);
    is_string(err, want, "  message");
    lp_config_free(&c);
}

static void addr_ok(const char *s, int is_unix, const char *host_or_path, int port, const char *formatted)
{
    lp_addr a;
    char out[300];
    err[0] = '\0';
    if (!ok(lp_addr_parse(s, &a, err, sizeof err) == 0, "address '%s' parses", s)) diag("%s", err);
    is_int(a.is_unix, is_unix, "  is_unix");
    is_string(is_unix ? a.path : a.host, host_or_path, "  %s", is_unix ? "path" : "host");
    if (!is_unix) is_int(a.port, port, "  port");
    lp_addr_format(&a, out, sizeof out);
    is_string(out, formatted, "  formats back");
}

static void addr_bad(const char *s, const char *msg)
{
    lp_addr a;
    char want[600];
    snprintf(want, sizeof want, "bad address '%s': %s", s, msg);
    ok(lp_addr_parse(s, &a, err, sizeof err) == -1, "address '%.40s' rejected", s);
    is_string(err, want, "  message");
}

static void test_addresses(void)
{
    const char *forms = "missing port (expected HOST:PORT, [IPv6]:PORT or unix:/path)";
    char longpath[200], longhost[300];

    addr_ok("127.0.0.1:6380", 0, "127.0.0.1", 6380, "127.0.0.1:6380");
    addr_ok("localhost:1", 0, "localhost", 1, "localhost:1");
    addr_ok("redis.example.com:65535", 0, "redis.example.com", 65535, "redis.example.com:65535");
    addr_ok("[::1]:6379", 0, "::1", 6379, "[::1]:6379");
    addr_ok("[fe80::1%eth0]:7000", 0, "fe80::1%eth0", 7000, "[fe80::1%eth0]:7000");
    addr_ok("unix:/tmp/redis.sock", 1, "/tmp/redis.sock", 0, "unix:/tmp/redis.sock");
    addr_ok("unix:relative.sock", 1, "relative.sock", 0, "unix:relative.sock");

    addr_bad("", "empty (expected HOST:PORT, [IPv6]:PORT or unix:/path)");
    addr_bad("localhost", forms);
    addr_bad("[::1]", forms);
    addr_bad("[::1]6379", forms);
    addr_bad("[::1:6379", "missing ']' after the IPv6 address");
    addr_bad("::1:6379", "an IPv6 address needs brackets, as in [::1]:6379");
    addr_bad(":6379", "empty host");
    addr_bad("[]:6379", "empty host");
    addr_bad("a b:6379", "bad character in host");
    addr_bad("host:0", "bad port '0' (expected 1 to 65535)");
    addr_bad("host:65536", "bad port '65536' (expected 1 to 65535)");
    addr_bad("host:", "bad port '' (expected 1 to 65535)");
    addr_bad("host:63a", "bad port '63a' (expected 1 to 65535)");
    addr_bad("host:-1", "bad port '-1' (expected 1 to 65535)");
    addr_bad("host:000006379", "bad port '000006379' (expected 1 to 65535)");
    addr_bad("unix:", "empty unix socket path");

    /* sun_path holds 107 bytes and the NUL. */
    strcpy(longpath, "unix:/");
    memset(longpath + 6, 'p', 106);
    longpath[112] = '\0';
    lp_addr a;
    ok(lp_addr_parse(longpath, &a, err, sizeof err) == 0 && strlen(a.path) == 107, "107-byte socket path fits");
    strcat(longpath, "p");
    addr_bad(longpath, "unix socket path longer than 107 bytes");
    memset(longhost, 'h', 255);
    strcpy(longhost + 255, ":1");
    ok(lp_addr_parse(longhost, &a, err, sizeof err) == 0, "255-byte host fits");
    memset(longhost, 'h', 256);
    strcpy(longhost + 256, ":1");
    addr_bad(longhost, "host longer than 255 bytes");
}

static void test_sizes_and_durations(void)
{
    static const struct { const char *s; long long v; } mem[] = {
        {"0", 0}, {"100", 100}, {"1b", 1}, {"64k", 64000}, {"100kb", 102400}, {"64KB", 65536},
        {"3m", 3000000}, {"512mb", 512LL << 20}, {"2Mb", 2LL << 20}, {"5g", 5000000000LL},
        {"1gb", 1LL << 30}, {"1GB", 1LL << 30}, {"9223372036854775807", 9223372036854775807LL},
        {"", -1}, {"kb", -1}, {"-1", -1}, {"+1", -1}, {"1.5mb", -1}, {"1tb", -1}, {" 1", -1},
        {"1 mb", -1}, {"1mbx", -1}, {"9223372036854775808", -1}, {"8589934592gb", -1},
    };
    static const struct { const char *s; long long v; } dur[] = {
        {"250ms", 250}, {"30s", 30000}, {"5m", 300000}, {"1h", 3600000}, {"1500", 1500},
        {"0", 0}, {"30S", 30000}, {"2MS", 2}, {"", -1}, {"ms", -1}, {"1d", -1}, {"1.5s", -1},
        {"-5", -1}, {"5 s", -1}, {"9223372036854775807h", -1},
    };
    for (size_t i = 0; i < sizeof mem / sizeof mem[0]; i++)
        is_int(lp_parse_memory(mem[i].s), mem[i].v, "memory '%s'", mem[i].s);
    for (size_t i = 0; i < sizeof dur / sizeof dur[0]; i++)
        is_int(lp_parse_duration_ms(dur[i].s), dur[i].v, "duration '%s'", dur[i].s);
}

static void test_defaults(void)
{
    lp_config c;
    char a[300];
    lp_config_defaults(&c);
    lp_addr_format(&c.listen, a, sizeof a);
    is_string(a, "127.0.0.1:6380", "default listen");
    lp_addr_format(&c.upstream, a, sizeof a);
    is_string(a, "127.0.0.1:6379", "default upstream");
    ok(!c.upstream_set && !c.policy_file && !c.log_file && !c.config_file, "nothing else set");
    ok(!c.check && !c.help && !c.version, "no actions");
    is_int(c.maxclients, 10000, "maxclients");
    is_int(c.proto_max_bulk_len, 512LL << 20, "proto-max-bulk-len");
    is_int(c.client_query_buffer_limit, 1LL << 30, "client-query-buffer-limit");
    is_int(c.high_water, 1 << 20, "high-water");
    is_int(c.low_water, 256 << 10, "low-water");
    is_int(c.hard_limit, 2LL << 30, "hard-limit");
    is_int(c.lease_cache_bytes, 64LL << 20, "lease-cache-bytes");
    is_int(c.connect_timeout_ms, 2000, "connect-timeout");
    is_int(c.shutdown_timeout_ms, 5000, "shutdown-timeout");
    char host[256] = "";
    if (gethostname(host, sizeof host - 1) != 0 || host[0] == '\0') strcpy(host, "lockproxy");
    is_string(c.instance_name, host, "instance-name: the host name");
    is_string(c.upstream_user, "", "upstream-auth: no user");
    is_string(c.upstream_password, "", "upstream-auth: no password");
    lp_config_free(&c);
    lp_config_free(&c);
    ok(1, "free twice is safe");

    lp_config_defaults(&c);
    strcpy(c.upstream_password, "s3cret");
    lp_config_free(&c);
    ok(memcmp(c.upstream_password, "\0\0\0\0\0\0", 6) == 0, "free wipes the password");
}

static void test_file(void)
{
    lp_config c;
    char a[300];
    int rc = load(&c,
        "# a comment\n"
        "\n"
        "   # an indented comment\n"
        "LISTEN [::1]:7000\n"
        "upstream unix:/run/redis.sock   # trailing comment\n"
        "policy \"my dir/policy #1.conf\"\n"
        "log /var/log/lockproxy.log\n"
        "maxclients 12\n"
        "proto-max-bulk-len 2mb\n"
        "lease-cache-bytes 1MB\n"
        "client-query-buffer-limit 64MB\n"
        "high-water 100kb\n"
        "low-water 10kb\n"
        "hard-limit 1gb\n"
        "connect-timeout 250ms\n"
        "\tshutdown-timeout\t1m\r\n"
        "policy \"again\\\\\\\"x\\x41\"\n"
        "log \"-\"");
    if (!is_int(rc, 0, "full file loads")) diag("%s", err);
    lp_addr_format(&c.listen, a, sizeof a);
    is_string(a, "[::1]:7000", "listen");
    lp_addr_format(&c.upstream, a, sizeof a);
    is_string(a, "unix:/run/redis.sock", "upstream");
    is_int(c.upstream_set, 1, "upstream_set");
    is_string(c.policy_file, "/tmp/again\\\"xA", "policy: last one wins, escapes decoded (from the file's directory)");
    ok(c.log_file == NULL, "log \"-\" is stderr");
    is_int(c.maxclients, 12, "maxclients");
    is_int(c.proto_max_bulk_len, 2 << 20, "proto-max-bulk-len");
    is_int(c.lease_cache_bytes, 1 << 20, "lease-cache-bytes 1MB");
    is_int(c.client_query_buffer_limit, 64 << 20, "client-query-buffer-limit");
    is_int(c.high_water, 102400, "high-water");
    is_int(c.low_water, 10240, "low-water");
    is_int(c.hard_limit, 1 << 30, "hard-limit");
    is_int(c.connect_timeout_ms, 250, "connect-timeout");
    is_int(c.shutdown_timeout_ms, 60000, "shutdown-timeout (tabs, CRLF)");
    lp_config_free(&c);

    rc = load(&c, "policy \"my dir/policy #1.conf\"\nlog audit.log\nlisten 0.0.0.0:6390");
    is_int(rc, 0, "file without a final newline");
    is_string(c.policy_file, "/tmp/my dir/policy #1.conf", "quoted value keeps spaces and #");
    is_string(c.log_file, "/tmp/audit.log", "log file");
    is_int(c.upstream_set, 0, "upstream_set stays 0 when the file names none");
    lp_config_free(&c);

    is_int(load(&c, ""), 0, "empty file");
    lp_config_free(&c);
    is_int(load(&c, "high-water 4mb\nlow-water 1mb\n"), 0, "marks may be raised together");
    lp_config_free(&c);
}

/* instance-name and upstream-auth: the lines, and what each leaves in the config. */
static void test_identity(void)
{
    static const struct { const char *text, *name, *user, *password; } cases[] = {
        {"instance-name web-1\n", "web-1", "", ""},
        {"INSTANCE-NAME \"caf\xc3\xa9:7/a\"\n", "caf\xc3\xa9:7/a", "", ""},
        {"instance-name a\ninstance-name b\n", "b", "", ""},
        {"upstream-auth s3cret\n", NULL, "", "s3cret"},
        {"upstream-auth proxy s3cret\n", NULL, "proxy", "s3cret"},
        {"upstream-auth \"lock proxy\" \"p w#\\\"x\\x01\"  # comment\n", NULL, "lock proxy", "p w#\"x\x01"},
        {"upstream-auth proxy one\nupstream-auth two\n", NULL, "", "two"},
        {"upstream-auth one\nupstream-auth proxy two\n", NULL, "proxy", "two"},
        {"instance-name i\nupstream-auth u p\n", "i", "u", "p"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        lp_config c, d;
        lp_config_defaults(&d);
        if (!is_int(load(&c, cases[i].text), 0, "loads: %s", cases[i].text)) diag("%s", err);
        is_string(c.instance_name, cases[i].name ? cases[i].name : d.instance_name, "  instance-name");
        is_string(c.upstream_user, cases[i].user, "  upstream user");
        is_string(c.upstream_password, cases[i].password, "  upstream password");
        lp_config_free(&c);
    }

    /* The longest values that fit. */
    char text[1200], user[200], pass[600], name[300];
    memset(name, 'n', 255);
    name[255] = '\0';
    memset(user, 'u', 127);
    user[127] = '\0';
    memset(pass, 'p', 511);
    pass[511] = '\0';
    snprintf(text, sizeof text, "instance-name %s\nupstream-auth %s %s\n", name, user, pass);
    lp_config c;
    is_int(load(&c, text), 0, "255-byte name, 127-byte user, 511-byte password fit");
    ok(strcmp(c.instance_name, name) == 0 && strcmp(c.upstream_user, user) == 0 &&
       strcmp(c.upstream_password, pass) == 0, "  all kept");
    lp_config_free(&c);

    /* What --check shows: the password never. */
    static const struct { const char *text, *want; } shown[] = {
        {"instance-name web-1\n",
         "listen 127.0.0.1:6380\nupstream 127.0.0.1:6379\ninstance-name web-1\nupstream-auth: none\n"},
        {"instance-name web-1\nupstream-auth s3cret\nlisten [::1]:7000\n",
         "listen [::1]:7000\nupstream 127.0.0.1:6379\ninstance-name web-1\nupstream-auth ****\n"},
        {"instance-name x\nupstream-auth proxy s3cret\nupstream unix:/r.sock\n",
         "listen 127.0.0.1:6380\nupstream unix:/r.sock\ninstance-name x\nupstream-auth proxy ****\n"},
        {"instance-name x\nupstream-auth \"a b#\" s3cret\n",
         "listen 127.0.0.1:6380\nupstream 127.0.0.1:6379\ninstance-name x\nupstream-auth \"a b#\" ****\n"},
    };
    for (size_t i = 0; i < sizeof shown / sizeof shown[0]; i++) {
        char *out = NULL;
        size_t len = 0;
        if (!is_int(load(&c, shown[i].text), 0, "print %zu loads", i)) diag("%s", err);
        FILE *f = open_memstream(&out, &len);
        lp_config_print(&c, f);
        fclose(f);
        is_string(out, shown[i].want, "  lp_config_print");
        ok(strstr(out, "s3cret") == NULL, "  no password in it");
        free(out);
        lp_config_free(&c);
    }
}

static void test_file_errors(void)
{
    const char *addr_forms = "missing port (expected HOST:PORT, [IPv6]:PORT or unix:/path)";
    char msg[256];

    file_error("bogus 1\n", 1, "unknown directive 'bogus'");
    file_error("# c\n\nmaxclients 5\nrequirepass x\n", 4, "unknown directive 'requirepass'");
    file_error("listen\n", 1, "listen: wrong number of arguments (expected 1, got 0)");
    file_error("\nmaxclients 1 2\n", 2, "maxclients: wrong number of arguments (expected 1, got 2)");
    snprintf(msg, sizeof msg, "listen: bad address 'nope': %s", addr_forms);
    file_error("listen nope\n", 1, msg);
    file_error("upstream host:99999\n", 1, "upstream: bad address 'host:99999': bad port '99999' (expected 1 to 65535)");
    file_error("maxclients many\n", 1, "maxclients: bad number 'many'");
    file_error("maxclients 10k\n", 1, "maxclients: bad number '10k'");
    file_error("maxclients 0\n", 1, "maxclients: '0' is too small (minimum 1)");
    file_error("maxclients 3000000000\n", 1, "maxclients: '3000000000' is too large (maximum 2147483647)");
    file_error("proto-max-bulk-len lots\n", 1,
               "proto-max-bulk-len: bad size 'lots' (expected bytes, or e.g. 64kb, 512mb, 1gb)");
    file_error("proto-max-bulk-len 1kb\n", 1, "proto-max-bulk-len: '1kb' is too small (minimum 1mb)");
    file_error("lease-cache-bytes 1kb\n", 1, "lease-cache-bytes: '1kb' is too small (minimum 64kb)");
    file_error("lease-cache-bytes -5\n", 1, "lease-cache-bytes: bad size '-5' (expected bytes, or e.g. 64kb, 512mb, 1gb)");
    file_error("client-query-buffer-limit 1000000\n", 1,
               "client-query-buffer-limit: '1000000' is too small (minimum 1mb)");
    file_error("high-water 0\n", 1, "high-water: '0' is too small (minimum 1)");
    file_error("hard-limit -1\n", 1, "hard-limit: bad size '-1' (expected bytes, or e.g. 64kb, 512mb, 1gb)");
    file_error("connect-timeout 5x\n", 1,
               "connect-timeout: bad duration '5x' (expected milliseconds, or e.g. 250ms, 30s, 5m, 1h)");
    file_error("shutdown-timeout 0s\n", 1, "shutdown-timeout: '0s' is too small (minimum 1ms)");
    file_error("policy \"\"\n", 1, "policy: empty file name");
    file_error("log \"\"\n", 1, "log: empty file name");
    file_error("log \"a\\x00b\"\n", 1, "NUL byte in a token");
    file_error("log \"audit.log\n", 1, "unterminated quote in \"audit.log");
    file_error("log \"audit.log\"x more\n", 1, "closing quote must be followed by a space in \"audit.log\"x");
    file_error("log \"a\\qb\" x\n", 1, "bad escape in \"a\\qb\" (expected \\\", \\\\ or \\xHH)");
    file_error("log \"a\\x4\"\n", 1, "bad escape in \"a\\x4\" (expected \\\", \\\\ or \\xHH)");
    file_error("maxclients 5\nlow-water 2mb\n", 2, "low-water: 2097152 must be less than high-water (1048576)");
    file_error("low-water 1mb\n\nhigh-water 1mb\n", 3, "high-water: 1048576 must be greater than low-water (1048576)");
    file_error("high-water 100kb\n", 1, "high-water: 102400 must be greater than low-water (262144)");
    file_error("hard-limit 1kb\n", 1, "hard-limit: 1024 must be greater than high-water (1048576)");
    file_error("high-water 3gb\nlow-water 1gb\n", 1, "high-water: 3221225472 must be less than hard-limit (2147483648)");

    /* instance-name and upstream-auth; no message shows a password. */
    char name[300], user[200], pass[600], text[1200];
    memset(name, 'n', 256);
    name[256] = '\0';
    memset(user, 'u', 128);
    user[128] = '\0';
    memset(pass, 'p', 512);
    pass[512] = '\0';
    static const struct { const char *text; int line; const char *msg; } cases[] = {
        {"instance-name\n", 1, "instance-name: wrong number of arguments (expected 1, got 0)"},
        {"instance-name a b\n", 1, "instance-name: wrong number of arguments (expected 1, got 2)"},
        {"instance-name \"\"\n", 1, "instance-name: empty name"},
        {"instance-name \"web 1\"\n", 1, "instance-name: bad character in 'web 1' (expected printable characters, no blanks)"},
        {"instance-name \"web\\x01\"\n", 1, "instance-name: bad character in 'web\x01' (expected printable characters, no blanks)"},
        {"instance-name \"web\\x7f\"\n", 1, "instance-name: bad character in 'web\x7f' (expected printable characters, no blanks)"},
        {"instance-name \"a\\x00\"\n", 1, "NUL byte in a token"},
        {"maxclients 5\nupstream-auth\n", 2, "upstream-auth: wrong number of arguments (expected 1 or 2, got 0)"},
        {"upstream-auth   # none\n", 1, "upstream-auth: wrong number of arguments (expected 1 or 2, got 0)"},
        {"upstream-auth u s3cret extra\n", 1, "upstream-auth: wrong number of arguments (expected 1 or 2, got 3)"},
        {"upstream-auth \"\"\n", 1, "upstream-auth: empty password"},
        {"upstream-auth u \"\"\n", 1, "upstream-auth: empty password"},
        {"upstream-auth \"\" s3cret\n", 1, "upstream-auth: empty user name"},
        {"upstream-auth \"s3cret\n", 1, "upstream-auth: malformed argument (not shown: it holds a password)"},
        {"upstream-auth u \"s3cret\"x\n", 1, "upstream-auth: malformed argument (not shown: it holds a password)"},
        {"upstream-auth u \"s3\\qcret\"\n", 1, "upstream-auth: malformed argument (not shown: it holds a password)"},
        {"upstream-auth u \"s3\\x00cret\"\n", 1, "upstream-auth: malformed argument (not shown: it holds a password)"},
        {"upstream-auht u s3cret\n", 1, "unknown directive 'upstream-auht'"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        file_error(cases[i].text, cases[i].line, cases[i].msg);
        ok(strstr(err + strlen(path), "s3") == NULL, "  the password is not in it");
    }
    snprintf(text, sizeof text, "instance-name %s\n", name);
    file_error(text, 1, "instance-name: name longer than 255 bytes");
    snprintf(text, sizeof text, "upstream-auth %s s3cret\n", user);
    file_error(text, 1, "upstream-auth: user name longer than 127 bytes");
    snprintf(text, sizeof text, "upstream-auth %s\n", pass);
    file_error(text, 1, "upstream-auth: password longer than 511 bytes");
    snprintf(text, sizeof text, "upstream-auth u %s\n", pass);
    file_error(text, 1, "upstream-auth: password longer than 511 bytes");

    lp_config c;
    lp_config_defaults(&c);
    ok(lp_config_load_file(&c, "/nonexistent/lockproxy.conf", err, sizeof err) == -1, "missing file");
    is_string(err, "/nonexistent/lockproxy.conf: No such file or directory", "  message");
    ok(lp_config_load_file(&c, "/tmp", err, sizeof err) == -1, "a directory");
    is_string(err, "/tmp: Is a directory", "  message");
    lp_config_free(&c);
}

/* Runs lp_config_from_args on a NULL-terminated argument list after "lockproxy". */
#define ARGS(c, ...) from_args(c, (const char *[]){"lockproxy", __VA_ARGS__, NULL})
static int from_args(lp_config *c, const char **argv)
{
    int argc = 0;
    while (argv[argc]) argc++;
    lp_config_defaults(c);
    err[0] = '\0';
    return lp_config_from_args(c, argc, (char **)argv, err, sizeof err);
}

static void test_flags(void)
{
    lp_config c;
    char a[300], file[64], want[256];

    write_tmp("listen 127.0.0.1:7001\nupstream 10.0.0.1:6379\npolicy file.policy\nlog file.log\n");
    strcpy(file, path);

    is_int(ARGS(&c, "--listen", "127.0.0.1:7002", "--log", "-", "-c", file), 0, "flags before -c");
    lp_addr_format(&c.listen, a, sizeof a);
    is_string(a, "127.0.0.1:7002", "  --listen overrides the file even when -c comes last");
    lp_addr_format(&c.upstream, a, sizeof a);
    is_string(a, "10.0.0.1:6379", "  upstream from the file");
    is_int(c.upstream_set, 1, "  upstream_set from the file");
    is_string(c.policy_file, "/tmp/file.policy", "  policy from the file (from its directory)");
    ok(c.log_file == NULL, "  --log - overrides the file's log");
    is_string(c.config_file, file, "  config_file recorded");
    lp_config_free(&c);

    is_int(ARGS(&c, "--policy=flag.policy", "-c", file, "--upstream=[::1]:6400", "--check"), 0,
           "-c in the middle, --flag=value form");
    is_string(c.policy_file, "flag.policy", "  --policy= overrides");
    lp_addr_format(&c.upstream, a, sizeof a);
    is_string(a, "[::1]:6400", "  --upstream= overrides");
    is_int(c.check, 1, "  --check");
    lp_config_free(&c);

    is_int(ARGS(&c, "--upstream", "unix:/tmp/r.sock", "--log=audit.log"), 0, "no config file");
    is_int(c.upstream_set, 1, "  --upstream sets upstream_set");
    is_string(c.log_file, "audit.log", "  --log=");
    ok(c.config_file == NULL, "  no config_file");
    lp_config_free(&c);

    is_int(ARGS(&c, "--version"), 0, "--version");
    ok(c.version && !c.help, "  version set");
    is_int(ARGS(&c, "-v"), 0, "-v");
    ok(c.version, "  version set");
    is_int(ARGS(&c, "-c", "/nonexistent.conf", "--help"), 0, "--help does not read -c");
    ok(c.help, "  help set");
    is_int(ARGS(&c, "-h"), 0, "-h");
    ok(c.help, "  help set");

    ok(ARGS(&c, "--bogus") == -1, "unknown flag");
    is_string(err, "unknown flag '--bogus' (try --help)", "  message");
    ok(ARGS(&c, "--listen", "127.0.0.1:1", "stray") == -1, "stray argument");
    is_string(err, "unknown flag 'stray' (try --help)", "  message");
    ok(ARGS(&c, "-c", file, "--listen") == -1, "missing value");
    is_string(err, "--listen needs a value", "  message");
    ok(ARGS(&c, "-c") == -1, "-c without a file");
    is_string(err, "-c needs a value", "  message");
    ok(ARGS(&c, "--check=yes") == -1, "value for a switch");
    is_string(err, "--check takes no value", "  message");
    ok(ARGS(&c, "-c", file, "-c", file) == -1, "-c twice");
    is_string(err, "-c given more than once", "  message");
    ok(ARGS(&c, "--listen", "6380") == -1, "bad --listen");
    is_string(err, "--listen: bad address '6380': missing port (expected HOST:PORT, [IPv6]:PORT or unix:/path)",
              "  message");
    ok(ARGS(&c, "--policy=") == -1, "empty --policy");
    is_string(err, "--policy: empty file name", "  message");
    ok(ARGS(&c, "-c", "/nonexistent.conf") == -1, "missing -c file");
    is_string(err, "/nonexistent.conf: No such file or directory", "  message");
    ok(ARGS(&c, "--bogus", "-c", "/nonexistent.conf") == -1, "a flag typo is reported before the file");
    is_string(err, "unknown flag '--bogus' (try --help)", "  message");
    lp_config_free(&c);
    unlink(file);

    write_tmp("maxclients 5\nmaxclients five\n");
    strcpy(file, path);
    ok(ARGS(&c, "--listen", "127.0.0.1:1", "-c", file) == -1, "bad -c file");
    snprintf(want, sizeof want, "%s:2: maxclients: bad number 'five'", file);
    is_string(err, want, "  FILE:LINE message");
    lp_config_free(&c);
    unlink(file);

    const char *usage = lp_config_usage();
    const char *names[] = {"-c FILE", "--listen ADDR", "--upstream ADDR", "--policy FILE",
                           "--log FILE|-", "--check", "--version", "--help"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        ok(strstr(usage, names[i]) != NULL, "usage lists %s", names[i]);
}

/* Runs the lockproxy binary with args in directory dir (NULL: here); returns its exit
 * status, with stdout and stderr. */
static int run_binary_in(const char *dir, const char *args, char *out, size_t outcap, char *errout, size_t errcap)
{
    char cmd[2048], opath[] = "/tmp/lp-config-out-XXXXXX", epath[] = "/tmp/lp-config-err-XXXXXX";
    int ofd = mkstemp(opath), efd = mkstemp(epath);
    if (ofd < 0 || efd < 0) bail_out("mkstemp failed");
    snprintf(cmd, sizeof cmd, "cd '%s' && '%s' %s >'%s' 2>'%s'", dir ? dir : ".", LOCKPROXY_BIN, args, opath, epath);
    int st = system(cmd);
    ssize_t n = read(ofd, out, outcap - 1);
    out[n > 0 ? n : 0] = '\0';
    n = read(efd, errout, errcap - 1);
    errout[n > 0 ? n : 0] = '\0';
    close(ofd);
    close(efd);
    unlink(opath);
    unlink(epath);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static int run_binary(const char *args, char *out, size_t outcap, char *errout, size_t errcap)
{
    return run_binary_in(NULL, args, out, outcap, errout, errcap);
}

/* lockproxy --check: the settings (password masked), the policy, its warnings on stderr. */
static void test_check(void)
{
    char pol[64], conf[64], args[256], out[4096], errout[4096], want[2048];

    write_tmp("rule lock:* audit ttl=5s\nexempt user ops\nrule job: enforce renew=off max-hold=1m\n");
    strcpy(pol, path);
    snprintf(want, sizeof want, "instance-name web-1\nupstream-auth proxy s3cret\npolicy %s\n", pol);
    write_tmp(want);
    strcpy(conf, path);

    /* Port 1: nothing answers there, which is a warning, not an error. */
    snprintf(args, sizeof args, "-c '%s' --upstream 127.0.0.1:1 --check", conf);
    is_int(run_binary(args, out, sizeof out, errout, sizeof errout), 0, "--check with warnings exits 0");
    snprintf(want, sizeof want,
             "listen 127.0.0.1:6380\n"
             "upstream 127.0.0.1:1\n"
             "instance-name web-1\n"
             "upstream-auth proxy ****\n"
             "policy %s: 2 rule(s)\n"
             "rule lock:* audit ttl=5s max-ttl=none owner=auto renew=auto max-hold=none\n"
             "rule job: enforce ttl=30s max-ttl=none owner=auto renew=off max-hold=1m\n"
             "exempt user ops\n"
             "log: - (stderr)\n"
             "configuration OK\n", pol);
    is_string(out, want, "  stdout: settings, the policy as understood");
    snprintf(want, sizeof want,
             "%s:1: warning: prefix 'lock:*' holds '*', which is matched literally (prefixes are not globs)\n"
             "%s:3: warning: prefix 'job:': max-hold has no effect with renew=off\n"
             "warning: upstream: 127.0.0.1:1 does not answer PING (Connection refused): clients get errors "
             "until it does\n", pol, pol);
    is_string(errout, want, "  stderr: the warnings");
    ok(strstr(out, "s3cret") == NULL && strstr(errout, "s3cret") == NULL, "  the password is shown nowhere");
    unlink(pol);

    write_tmp("rule lock: enforce ttl=30\n");
    strcpy(pol, path);
    snprintf(args, sizeof args, "-c '%s' --policy '%s' --check", conf, pol);
    is_int(run_binary(args, out, sizeof out, errout, sizeof errout), 1, "--check with a bad policy exits 1");
    snprintf(want, sizeof want, "%s:1: bad duration in 'ttl=30' (a unit is needed: e.g. 250ms, 30s, 5m, 1h)\n", pol);
    is_string(errout, want, "  stderr: the error");
    ok(strstr(out, "configuration OK") == NULL, "  no 'configuration OK'");
    unlink(pol);
    unlink(conf);
}

static void write_at(const char *file, const char *text)
{
    FILE *f = fopen(file, "w");
    if (f == NULL) bail_out("cannot write %s", file);
    fputs(text, f);
    fclose(f);
}

/* Relative paths in a config file are taken from its directory; flags from the working one. */
static void test_relative(void)
{
    char dir[] = "/tmp/lp-config-rel-XXXXXX", conf[256], want[512];
    if (mkdtemp(dir) == NULL) bail_out("mkdtemp failed");
    snprintf(conf, sizeof conf, "%s/lockproxy.conf", dir);
    write_at(conf, "policy policy.conf\nlog logs/audit.log\n");
    lp_config c;
    lp_config_defaults(&c);
    ok(lp_config_load_file(&c, conf, err, sizeof err) == 0, "relative policy and log load");
    snprintf(want, sizeof want, "%s/policy.conf", dir);
    is_string(c.policy_file, want, "  policy taken from the file's directory");
    snprintf(want, sizeof want, "%s/logs/audit.log", dir);
    is_string(c.log_file, want, "  log taken from the file's directory");
    is_int(c.log_line, 2, "  the line that set log is kept");
    lp_config_free(&c);

    write_at(conf, "policy /etc/lockproxy/policy.conf\nlog -\n");
    lp_config_defaults(&c);
    ok(lp_config_load_file(&c, conf, err, sizeof err) == 0, "absolute policy, log -");
    is_string(c.policy_file, "/etc/lockproxy/policy.conf", "  an absolute path stays");
    ok(c.log_file == NULL, "  - stays stderr");
    lp_config_free(&c);

    write_at(conf, "policy policy.conf\n");
    lp_config_defaults(&c);
    ok(ARGS(&c, "-c", conf, "--policy", "mine.conf", "--log", "here.log") == 0, "flags over a file");
    is_string(c.policy_file, "mine.conf", "  --policy stays relative to the working directory");
    is_string(c.log_file, "here.log", "  --log too");
    is_int(c.log_line, 0, "  and is no line of the file");
    lp_config_free(&c);

    /* The binary started elsewhere, --check: the policy is found, the log opens for append
     * (and is not left behind when it did not exist; an existing one keeps its contents). */
    char pol[300], logf[300], args[1024], out[4096], errout[4096];
    snprintf(pol, sizeof pol, "%s/policy.conf", dir);
    write_at(pol, "rule lock: audit\n");
    write_at(conf, "policy policy.conf\nlog audit.log\n");
    snprintf(logf, sizeof logf, "%s/audit.log", dir);
    snprintf(args, sizeof args, "-c '%s' --upstream 127.0.0.1:1 --check", conf);
    char cmdargs[1100];
    snprintf(cmdargs, sizeof cmdargs, "%s", args);
    int st = run_binary_in("/", cmdargs, out, sizeof out, errout, sizeof errout);
    is_int(st, 0, "--check from / with a config in another directory: exit 0");
    snprintf(want, sizeof want, "policy %s: 1 rule(s)\n", pol);
    ok(strstr(out, want) != NULL, "  the policy is read beside the config: %s", want);
    snprintf(want, sizeof want, "log %s: opens for append\n", logf);
    ok(strstr(out, want) != NULL, "  the log opens for append: %s", want);
    ok(access(logf, F_OK) != 0, "  a log made for the check is removed");
    write_at(logf, "{\"kept\":1}\n");
    is_int(run_binary_in("/", cmdargs, out, sizeof out, errout, sizeof errout), 0, "--check with an existing log");
    FILE *f = fopen(logf, "r");
    char line[64] = "";
    if (f) { if (!fgets(line, sizeof line, f)) line[0] = '\0'; fclose(f); }
    is_string(line, "{\"kept\":1}\n", "  it is neither truncated nor removed");
    unlink(logf);

    /* A log that cannot be opened, an upstream that does not resolve: errors naming the
     * directive and the line. */
    write_at(conf, "policy policy.conf\nlog nodir/audit.log\n");
    is_int(run_binary_in("/", cmdargs, out, sizeof out, errout, sizeof errout), 1, "--check, log in a missing directory: exit 1");
    snprintf(want, sizeof want, "%s:2: log: %s/nodir/audit.log: No such file or directory\n", conf, dir);
    is_string(errout, want, "  stderr names the directive");
    ok(strstr(out, "configuration OK") == NULL, "  no 'configuration OK'");
    write_at(conf, "policy policy.conf\nlog .\n");
    is_int(run_binary_in("/", cmdargs, out, sizeof out, errout, sizeof errout), 1, "--check, log is a directory: exit 1");
    snprintf(want, sizeof want, "%s:2: log: %s/.: Is a directory\n", conf, dir);
    is_string(errout, want, "  stderr names the directive");

    write_at(conf, "# upstream by name\npolicy policy.conf\nupstream no-such-host.invalid:6379\n");
    snprintf(args, sizeof args, "-c '%s' --check", conf);
    is_int(run_binary_in("/", args, out, sizeof out, errout, sizeof errout), 1, "--check, unresolvable upstream: exit 1");
    snprintf(want, sizeof want, "%s:3: upstream: no-such-host.invalid:6379: ", conf);
    ok(strncmp(errout, want, strlen(want)) == 0, "  stderr names the directive: %s", errout);
    ok(strstr(out, "configuration OK") == NULL, "  no 'configuration OK'");
    snprintf(args, sizeof args, "-c '%s' --upstream no-such-host.invalid:1 --check", conf);
    is_int(run_binary_in("/", args, out, sizeof out, errout, sizeof errout), 1, "--check, unresolvable --upstream: exit 1");
    ok(strncmp(errout, "upstream: no-such-host.invalid:1: ", 34) == 0, "  stderr names the directive: %s", errout);

    unlink(pol);
    unlink(conf);
    rmdir(dir);
}

static void test_shipped(void)
{
    lp_config c, d;
    char a[300];
    lp_config_defaults(&c);
    lp_config_defaults(&d);
    int rc = lp_config_load_file(&c, LOCKPROXY_SRC "/conf/lockproxy.conf", err, sizeof err);
    if (!is_int(rc, 0, "shipped conf/lockproxy.conf parses")) diag("%s", err);
    lp_addr_format(&c.listen, a, sizeof a);
    is_string(a, "127.0.0.1:6380", "  listens on 127.0.0.1:6380");
    is_int(c.upstream_set, 0, "  leaves upstream unset (make run starts a redis)");
    is_string(c.policy_file, LOCKPROXY_SRC "/conf/policy.conf", "  names policy.conf beside it");
    ok(c.log_file == NULL, "  logs to stderr");
    ok(c.maxclients == d.maxclients && c.proto_max_bulk_len == d.proto_max_bulk_len &&
       c.client_query_buffer_limit == d.client_query_buffer_limit && c.high_water == d.high_water &&
       c.low_water == d.low_water && c.hard_limit == d.hard_limit &&
       c.connect_timeout_ms == d.connect_timeout_ms && c.shutdown_timeout_ms == d.shutdown_timeout_ms,
       "  shows the defaults");
    policy *p = policy_load(LOCKPROXY_SRC "/conf/policy.conf", err, sizeof err);
    if (!ok(p != NULL && policy_count(p) > 0, "  its policy file parses")) diag("%s", err);
    policy_free(p);
    lp_config_free(&c);
}

/* The admin listener: off by default, HOST:PORT from the file or --admin, no unix socket. */
static void test_admin(void)
{
    lp_config c;
    char a[300];
    lp_config_defaults(&c);
    is_int(c.admin_set, 0, "admin: off by default");
    lp_config_free(&c);
    if (!is_int(load(&c, "admin 127.0.0.1:6381\n"), 0, "admin HOST:PORT loads")) diag("%s", err);
    is_int(c.admin_set, 1, "  admin_set");
    lp_addr_format(&c.admin, a, sizeof a);
    is_string(a, "127.0.0.1:6381", "  the address");
    lp_config_free(&c);
    file_error("admin unix:/tmp/a.sock\n", 1,
               "admin: 'unix:/tmp/a.sock': a unix socket is not supported here (expected HOST:PORT)");
    file_error("admin 127.0.0.1\n", 1, "admin: bad address '127.0.0.1': missing port (expected HOST:PORT, [IPv6]:PORT or unix:/path)");
    is_int(ARGS(&c, "--admin", "[::1]:9100"), 0, "--admin ADDR");
    lp_addr_format(&c.admin, a, sizeof a);
    ok(c.admin_set && strcmp(a, "[::1]:9100") == 0, "  sets the admin address");
    lp_config_free(&c);
}

int main(void)
{
    plan_lazy();
    test_admin();
    test_addresses();
    test_sizes_and_durations();
    test_defaults();
    test_file();
    test_identity();
    test_file_errors();
    test_flags();
    test_check();
    test_relative();
    test_shipped();
    return 0;
}
