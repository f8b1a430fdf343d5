/* The Sentinel upstream address, "sentinel://HOST:PORT[,HOST:PORT...]/MASTER": what parses,
 * how it formats back, the messages for bad ones, and the config file and flag that take it. */
#include "tap.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "proxy/addr.h"
#include "proxy/config.h"

static char err[1024];

static void good(const char *s, int n, const char *first_host, int first_port, const char *master)
{
    lp_sentinel_cfg sc;
    char out[2048];
    err[0] = '\0';
    if (!ok(lp_sentinel_parse(s, &sc, err, sizeof err) == 0, "'%s' parses", s)) diag("%s", err);
    is_int(sc.n, n, "  %d sentinel(s)", n);
    is_string(sc.addr[0].host, first_host, "  first host");
    is_int(sc.addr[0].port, first_port, "  first port");
    is_string(sc.master, master, "  master name");
    lp_sentinel_format(&sc, out, sizeof out);
    is_string(out, s, "  formats back");
}

static void bad(const char *s, const char *msg)
{
    lp_sentinel_cfg sc;
    char want[1024];
    err[0] = '\0';
    ok(lp_sentinel_parse(s, &sc, err, sizeof err) == -1, "'%s' is rejected", s);
    snprintf(want, sizeof want, "bad address '%s': %s", s, msg);
    is_string(err, want, "  message");
    is_int(sc.n, 0, "  nothing half-parsed");
}

int main(void)
{
    plan_lazy();
    good("sentinel://127.0.0.1:26379/mymaster", 1, "127.0.0.1", 26379, "mymaster");
    good("sentinel://a:1,b:2,[::1]:26379/m", 3, "a", 1, "m");
    ok(lp_sentinel_is("sentinel://x") && !lp_sentinel_is("127.0.0.1:6379"), "lp_sentinel_is");

    bad("sentinel://127.0.0.1:26379", "missing master name (expected sentinel://HOST:PORT[,HOST:PORT...]/MASTER)");
    bad("sentinel://127.0.0.1:26379/", "missing master name (expected sentinel://HOST:PORT[,HOST:PORT...]/MASTER)");
    bad("sentinel:///m", "no sentinel address");
    bad("sentinel://a:1,/m", "sentinel '' is not HOST:PORT");
    bad("sentinel://a/m", "sentinel 'a' is not HOST:PORT");
    bad("sentinel://a:99999/m", "sentinel 'a:99999' is not HOST:PORT");
    bad("sentinel://unix:/tmp/s/m", "sentinel 'unix:/tmp/s' is not HOST:PORT");
    bad("sentinel://a:1/my master", "bad character in master name");
    {
        char many[2048] = "sentinel://";
        for (int i = 0; i < 17; i++) strcat(many, i ? ",h:1" : "h:1");
        strcat(many, "/m");
        bad(many, "more than 16 sentinels");
    }

    /* The config file's upstream directive and the flag. */
    {
        lp_config c;
        lp_config_defaults(&c);
        char path[] = "/tmp/lp-sentinel-XXXXXX";
        int fd = mkstemp(path);
        const char *text = "upstream sentinel://127.0.0.1:26379,127.0.0.1:26380/mymaster\n";
        if (fd < 0 || write(fd, text, strlen(text)) != (ssize_t)strlen(text)) bail_out("mkstemp/write failed");
        close(fd);
        ok(lp_config_load_file(&c, path, err, sizeof err) == 0, "config file: upstream sentinel://... is accepted");
        is_int(c.sentinel.n, 2, "  two sentinels");
        is_string(c.sentinel.master, "mymaster", "  the master name");
        char *argv[] = { "lockproxy", "-c", path, "--upstream", "127.0.0.1:7000", NULL };
        lp_config_free(&c);
        lp_config_defaults(&c);
        ok(lp_config_from_args(&c, 5, argv, err, sizeof err) == 0, "a plain --upstream flag overrides it");
        is_int(c.sentinel.n, 0, "  no sentinels then");
        is_int(c.upstream.port, 7000, "  the flag's address");
        lp_config_free(&c);
        char *argv2[] = { "lockproxy", "--upstream", "sentinel://h:1/m", NULL };
        lp_config_defaults(&c);
        ok(lp_config_from_args(&c, 3, argv2, err, sizeof err) == 0, "--upstream sentinel://h:1/m");
        is_int(c.sentinel.n, 1, "  one sentinel");
        lp_config_free(&c);
        char *argv3[] = { "lockproxy", "--upstream", "sentinel://h:1", NULL };
        lp_config_defaults(&c);
        ok(lp_config_from_args(&c, 3, argv3, err, sizeof err) == -1, "--upstream without a master name is an error");
        diag("%s", err);
        lp_config_free(&c);
        unlink(path);
    }
    return 0;
}
