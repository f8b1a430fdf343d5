/* `make install DESTDIR=<tmp> PREFIX=/usr` lays out the files: binary, man page, systemd unit
 * (with its installed paths, a dynamic user, hardening, reload by SIGHUP), logrotate snippet,
 * /etc/lockproxy (an edited one is kept on the next install) and the examples. The installed
 * configuration passes --check from another directory (its relative policy path is taken
 * from /etc/lockproxy). The unit passes `systemd-analyze verify` and the man page renders
 * without warnings (groff -ww, or mandoc -T lint) where those tools exist. The man page and
 * --help name every flag, config directive and policy option; the man page every event. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "lib/harness.h"

static char root[1024];

static const char *at(const char *rel)
{
    static char bufs[8][4096];
    static int next;
    char *b = bufs[next++ % 8];
    snprintf(b, 4096, "%s%s", root, rel);
    return b;
}

static void slurp(const char *path, hp_buf *out)
{
    hp_buf_reset(out);
    FILE *f = fopen(path, "rb");
    char chunk[8192];
    size_t n;
    while (f && (n = fread(chunk, 1, sizeof chunk, f)) > 0) hp_buf_append(out, chunk, n);
    if (f) fclose(f);
    hp_buf_append(out, "", 0);
}

static int has(const hp_buf *b, const char *s)
{
    return b->data && strstr(b->data, s) != NULL;
}

static int in_path(const char *prog)
{
    const char *argv[] = { "sh", "-c", "command -v \"$0\" >/dev/null", prog, NULL };
    return hp_run(argv, NULL, 0, NULL, NULL, 10000) == 0;
}

/* make -C <src> install DESTDIR=<root> PREFIX=/usr BUILD=<the build dir of this binary> */
static int make_install(hp_buf *out)
{
    char build[4096], destdir[4200], buildarg[4200];
    snprintf(build, sizeof build, "%s", LOCKPROXY_BIN);
    char *slash = strrchr(build, '/');
    if (slash) *slash = '\0';
    snprintf(destdir, sizeof destdir, "DESTDIR=%s", root);
    snprintf(buildarg, sizeof buildarg, "BUILD=%s", build);
    const char *argv[] = { "make", "-s", "-C", LOCKPROXY_SRC, "install", destdir, "PREFIX=/usr", buildarg, NULL };
    hp_buf_reset(out);
    return hp_run(argv, NULL, 0, out, out, 300000);
}

int main(void)
{
    plan_lazy();
    snprintf(root, sizeof root, "%s/root", hp_tmpdir());
    hp_buf out = {0}, f = {0};
    int rc = make_install(&out);
    if (!is_int(rc, 0, "make install DESTDIR=... PREFIX=/usr: exit 0")) diag("%s", out.data ? out.data : "");

    static const char *files[] = {
        "/usr/sbin/lockproxy", "/usr/share/man/man8/lockproxy.8", "/usr/lib/systemd/system/lockproxy.service",
        "/usr/lib/systemd/system/lockproxy.socket", "/usr/share/doc/lockproxy/examples/lockproxy.socket",
        "/etc/logrotate.d/lockproxy", "/etc/lockproxy/lockproxy.conf", "/etc/lockproxy/policy.conf",
        "/usr/share/doc/lockproxy/examples/lockproxy.conf", "/usr/share/doc/lockproxy/examples/policy.conf",
        "/usr/share/doc/lockproxy/examples/lockproxy.service", "/usr/share/doc/lockproxy/examples/lockproxy.logrotate",
    };
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        struct stat st;
        ok(stat(at(files[i]), &st) == 0 && S_ISREG(st.st_mode) && st.st_size > 0, "installed: %s", files[i]);
    }
    ok(access(at("/usr/sbin/lockproxy"), X_OK) == 0, "the binary is executable");
    const char *ver[] = { at("/usr/sbin/lockproxy"), "--version", NULL };
    is_int(hp_run(ver, NULL, 0, &out, NULL, 10000), 0, "installed lockproxy --version: exit 0");
    ok(has(&out, "lockproxy "), "  prints %s", hp_esc(out.data, out.len, 60));

    slurp(at("/usr/lib/systemd/system/lockproxy.service"), &f);
    static const char *unit_lines[] = {
        "\nExecStart=/usr/sbin/lockproxy -c /etc/lockproxy/lockproxy.conf\n",
        "\nExecReload=/bin/kill -HUP $MAINPID\n", "\nDynamicUser=yes\n", "\nNoNewPrivileges=yes\n",
        "\nProtectSystem=strict\n", "\nProtectHome=yes\n", "\nPrivateTmp=yes\n", "\nLogsDirectory=lockproxy\n",
        "\nStateDirectory=lockproxy\n", "\nDocumentation=man:lockproxy(8)\n", "\nWantedBy=multi-user.target\n",
        "\nRequires=lockproxy.socket\n",
    };
    for (size_t i = 0; i < sizeof unit_lines / sizeof unit_lines[0]; i++)
        ok(has(&f, unit_lines[i]), "unit: %s", hp_esc(unit_lines[i] + 1, strlen(unit_lines[i]) - 2, 100));

    slurp(at("/etc/logrotate.d/lockproxy"), &f);
    ok(has(&f, "/var/log/lockproxy/*.log {"), "logrotate: the unit's log directory");
    ok(has(&f, "postrotate") && has(&f, "systemctl reload lockproxy.service"), "logrotate: postrotate reloads (SIGHUP)");
    ok(has(&f, "compress"), "logrotate: compresses (lockproxy report reads .gz)");

    slurp(at("/etc/lockproxy/lockproxy.conf"), &f);
    ok(has(&f, "\nlog /var/log/lockproxy/audit.log\n"), "/etc conf: logs to /var/log/lockproxy/audit.log");
    ok(has(&f, "\npolicy policy.conf\n"), "/etc conf: policy beside it");
    slurp(at("/etc/lockproxy/policy.conf"), &f);
    ok(has(&f, "\nrule lock: audit"), "/etc policy: starts in audit mode");

    /* The installed configuration, from another directory (log and upstream overridden:
     * /var/log/lockproxy is made by systemd, and nothing needs to answer). */
    char logf[4200];
    snprintf(logf, sizeof logf, "%s/check.log", hp_tmpdir());
    const char *check[] = { "sh", "-c", "cd / && exec \"$0\" -c \"$1\" --log \"$2\" --upstream 127.0.0.1:1 --check",
                            at("/usr/sbin/lockproxy"), at("/etc/lockproxy/lockproxy.conf"), logf, NULL };
    hp_buf err = {0};
    is_int(hp_run(check, NULL, 0, &out, &err, 10000), 0, "installed lockproxy -c /etc/lockproxy/lockproxy.conf --check from /: exit 0");
    char want[4300];
    snprintf(want, sizeof want, "policy %s: 2 rule(s)", at("/etc/lockproxy/policy.conf"));
    ok(has(&out, want), "  its policy is read from /etc/lockproxy: %s", want);
    ok(has(&err, "warning: upstream: 127.0.0.1:1 does not answer PING"), "  an upstream that does not answer is a warning");

    /* An edited configuration survives the next install. */
    FILE *c = fopen(at("/etc/lockproxy/lockproxy.conf"), "a");
    if (c) { fputs("maxclients 77\n", c); fclose(c); }
    is_int(make_install(&out), 0, "make install again: exit 0");
    ok(has(&out, "Kept: ") && has(&out, "/etc/lockproxy/lockproxy.conf (already there)"), "  says the /etc files are kept");
    slurp(at("/etc/lockproxy/lockproxy.conf"), &f);
    ok(has(&f, "\nmaxclients 77\n"), "  the edited /etc/lockproxy/lockproxy.conf is kept");

    /* systemd-analyze verify, on a copy whose ExecStart names the DESTDIR binary. */
    if (in_path("systemd-analyze")) {
        char unit[4200], cmd[9000];
        snprintf(unit, sizeof unit, "%s/lockproxy.service", hp_tmpdir());
        snprintf(cmd, sizeof cmd, "sed 's|/usr/sbin/lockproxy|%s|; s|/etc/lockproxy/|%s|' '%s' > '%s'",
                 at("/usr/sbin/lockproxy"), at("/etc/lockproxy/"), at("/usr/lib/systemd/system/lockproxy.service"), unit);
        const char *sed[] = { "sh", "-c", cmd, NULL };
        is_int(hp_run(sed, NULL, 0, NULL, NULL, 10000), 0, "unit copy for verify");
        char sock[4200];
        snprintf(sock, sizeof sock, "%s/lockproxy.socket", hp_tmpdir());
        snprintf(cmd, sizeof cmd, "cp '%s' '%s'", at("/usr/lib/systemd/system/lockproxy.socket"), sock);
        const char *cp[] = { "sh", "-c", cmd, NULL };
        is_int(hp_run(cp, NULL, 0, NULL, NULL, 10000), 0, "the socket unit beside it");
        char manpath[4200];
        snprintf(manpath, sizeof manpath, "MANPATH=%s", at("/usr/share/man"));
        const char *verify[] = { "env", manpath, "systemd-analyze", "verify", unit, sock, NULL };
        hp_buf_reset(&out);
        hp_buf_reset(&err);
        rc = hp_run(verify, NULL, 0, &out, &err, 60000);
        if (!is_int(rc, 0, "systemd-analyze verify lockproxy.service: exit 0")) diag("%s%s", out.data, err.data);
        ok(err.len == 0, "  and nothing on stderr: %s", hp_esc(err.data, err.len, 300));
    } else {
        skip(2, "systemd-analyze not installed");
    }

    /* The man page renders without warnings. */
    if (in_path("groff")) {
        const char *g[] = { "groff", "-man", "-Tutf8", "-ww", "-z", at("/usr/share/man/man8/lockproxy.8"), NULL };
        hp_buf_reset(&out);
        hp_buf_reset(&err);
        is_int(hp_run(g, NULL, 0, &out, &err, 30000), 0, "groff -man -ww: exit 0");
        ok(err.len == 0, "  no warnings: %s", hp_esc(err.data, err.len, 300));
    } else if (in_path("mandoc")) {
        const char *g[] = { "mandoc", "-T", "lint", "-W", "warning", at("/usr/share/man/man8/lockproxy.8"), NULL };
        hp_buf_reset(&out);
        hp_buf_reset(&err);
        is_int(hp_run(g, NULL, 0, &out, &err, 30000), 0, "mandoc -T lint: exit 0");
        ok(out.len == 0 && err.len == 0, "  no warnings: %s", hp_esc(out.data, out.len, 300));
    } else {
        skip(2, "neither groff nor mandoc installed");
    }

    /* Coverage: every flag, directive and policy option in the man page and in --help; every
     * event in the man page. The page is searched in its source with roff's \- as -. */
    slurp(at("/usr/share/man/man8/lockproxy.8"), &f);
    hp_buf page = {0};
    for (size_t i = 0; f.data && i < f.len; i++) {
        if (f.data[i] == '\\' && i + 1 < f.len && f.data[i + 1] == '-') continue;
        hp_buf_append(&page, &f.data[i], 1);
    }
    hp_buf_append(&page, "", 0);
    const char *help[] = { at("/usr/sbin/lockproxy"), "--help", NULL };
    hp_buf helptext = {0};
    hp_run(help, NULL, 0, &helptext, NULL, 10000);
    ok(has(&helptext, "man 8 lockproxy"), "--help points at the man page");
    static const char *names[] = {
        "-c", "--listen", "--upstream", "--policy", "--log", "--admin", "--check", "--version", "--help", "report", "--since", "--json",
        "listen", "upstream", "policy", "log", "maxclients", "proto-max-bulk-len", "client-query-buffer-limit",
        "high-water", "low-water", "hard-limit", "connect-timeout", "upstream-timeout", "shutdown-timeout",
        "instance-name", "upstream-auth", "admin", "rule", "exempt user", "exempt addr", "enforce", "audit", "off",
        "ttl=", "max-ttl=", "owner=", "connection", "client-addr", "client-name", "renew=", "always", "max-hold=",
    };
    int missing_man = 0, missing_help = 0;
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        if (!has(&page, names[i])) { diag("man page lacks %s", names[i]); missing_man++; }
        if (!has(&helptext, names[i])) { diag("--help lacks %s", names[i]); missing_help++; }
    }
    is_int(missing_man, 0, "the man page names every flag, directive and policy option");
    is_int(missing_help, 0, "--help names every flag, directive and policy option");
    static const char *events[] = {
        "setnx_no_ttl", "set_nx_no_ttl", "ttl_capped", "unconditional_set", "getset_lock", "foreign_expire",
        "persist_lock", "del_unchecked", "late_release", "foreign_release", "unknown_lease", "exempt_release",
        "script_lock", "check_unavailable", "long_hold", "max_hold", "tracking_lost", "audit_suppressed", "log_dropped",
        "failover_lost",
    };
    int missing_ev = 0;
    for (size_t i = 0; i < sizeof events / sizeof events[0]; i++) {
        char b[64];
        snprintf(b, sizeof b, ".B %s\n", events[i]);
        if (!has(&f, b)) { diag("man page lacks event %s", events[i]); missing_ev++; }
    }
    is_int(missing_ev, 0, "the man page describes every audit event");
    hp_buf_free(&page);
    hp_buf_free(&helptext);
    hp_buf_free(&out);
    hp_buf_free(&err);
    hp_buf_free(&f);
    return 0;
}
