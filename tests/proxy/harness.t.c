/* Self-test of the integration harness (tests/lib/) against a real redis-server:
 * process control (stop, kill, pause, resume, restart on the same port), the bounded socket
 * helpers, the differential runner's close detection and skip ranges, the normalisers, and
 * hp_run's timeout. It needs no proxy. */
#include <signal.h>
#include <string.h>
#include <unistd.h>

#include "lib/harness.h"

static void test_processes(void)
{
    hp_proc *r = hp_redis_start(NULL);
    ok(r->pid > 0 && r->port > 0, "redis-server started on port %d", r->port);
    ok(hp_cmd_ok(r, "SET k v"), "it answers commands");

    ok(hp_pause(r) == 0, "SIGSTOP");
    int fd = hp_connect(r->port, 1000);
    ok(fd >= 0, "a stopped Redis still accepts connections (the kernel does)");
    hp_buf b = {0};
    static const char ping[] = "PING\r\n";
    hp_send_all(fd, ping, sizeof ping - 1, 1000);
    long long t0 = hp_now_ms();
    is_int(hp_read_n(fd, &b, 7, 300), HP_IO_TIMEOUT, "but does not answer: the read times out");
    ok(hp_now_ms() - t0 < 2000, "within its deadline");
    ok(hp_resume(r) == 0, "SIGCONT");
    is_int(hp_read_n(fd, &b, 7, 5000), HP_IO_OK, "the answer arrives after SIGCONT");
    is_bytes(b.data, b.len, "+PONG\r\n", 7, "it is +PONG");
    close(fd);

    int port = r->port;
    ok(hp_kill(r) == 128 + SIGKILL, "SIGKILL: status 128+9");
    ok(hp_connect(port, 500) < 0, "nothing listens after the kill");
    ok(hp_restart(r) == 0 && r->port == port, "restarted on the same port");
    ok(hp_cmd_ok(r, "PING"), "it answers again");
    is_int(hp_stop(r, 10000), 0, "SIGTERM: exit status 0");
    is_int(hp_stop(r, 10000), 0, "stopping again returns the same status");
    hp_buf_free(&b);
}

static void test_io(hp_proc *r)
{
    int fd = hp_connect(r->port, 1000);
    hp_buf b = {0};
    static const char quit[] = "PING\r\nQUIT\r\n";
    is_int(hp_send_all(fd, quit, sizeof quit - 1, 1000), HP_IO_OK, "send_all");
    is_int(hp_read_eof(fd, &b, 5000), HP_IO_EOF, "read_eof sees the close after QUIT");
    is_bytes(b.data, b.len, "+PONG\r\n+OK\r\n", 12, "and everything before it");
    close(fd);

    fd = hp_connect(r->port, 1000);
    hp_buf_reset(&b);
    long long t0 = hp_now_ms();
    is_int(hp_read_idle(fd, &b, 100, 5000), HP_IO_OK, "read_idle on a silent connection");
    long long took = hp_now_ms() - t0;
    ok(took >= 90 && took < 1000, "returns after the idle period (%lld ms)", took);
    hp_buf_reset(&b);
    int closed = -1;
    static const char req[] = "ECHO hello\r\n";
    is_int(hp_exchange(fd, req, sizeof req - 1, &b, 100, 5000, &closed), HP_IO_OK, "exchange");
    ok(b.len == 11 && closed == 0, "exchange: reply and not closed");
    close(fd);
    ok(hp_connect(hp_free_port(), 500) < 0, "a free port refuses connections");
    hp_buf_free(&b);
}

static void test_diff_runner(hp_proc *r)
{
    /* With Redis on both sides every comparison must hold. */
    static const hp_step s[] = {
        HP_SEND("CLIENT ID\r\n"), HP_WAIT_MATCH("\r\n"),
        HP_SEND_SKIP("CLIENT INFO\r\n"),
        HP_SEND("PING\r\n"), HP_END
    };
    hp_diff_opts o = { .normalise = hp_norm_digits };
    hp_side d, p;
    ok(hp_diff_ex(r, r, "Redis against itself, ids masked, CLIENT INFO skipped", s, &o, &d, &p),
       "the runner reports equality");
    ok(HP_HAS(&d.out, "id=") && !HP_HAS(&d.cmp, "id="), "SEND_SKIP output is left out of cmp");
    is_bytes(d.cmp.data, d.cmp.len, ":#\r\n+PONG\r\n", 11, "digits are masked");
    hp_side_free(&d);
    hp_side_free(&p);

    static const hp_step quit[] = { HP_SEND("QUIT\r\n"), HP_END };
    hp_run_steps(r, r, quit, NULL, 0, &d);
    ok(d.closed && !d.timed_out, "the runner sees a close");
    hp_side_free(&d);

    diag("(a wait step that gives up, on purpose: the two lines below are expected)");
    hp_diff_opts quick = { .step_ms = 300 };
    static const hp_step never[] = { HP_SEND("PING\r\n"), HP_WAIT_MATCH("never"), HP_WAIT_MATCH("again"), HP_END };
    long long t0 = hp_now_ms();
    hp_run_steps(r, r, never, &quick, 0, &d);
    ok(d.timed_out && hp_now_ms() - t0 < 2000, "a wait step that never completes gives up (once)");
    hp_side_free(&d);

    hp_buf m = {0};
    hp_buf_puts(&m, "+OK\r\n+1700000000.123456 [0 127.0.0.1:4567] \"get\" \"k\"\r\n");
    hp_norm_monitor(&m, NULL);
    is_string(m.data, "+OK\r\n+# [0 127.0.0.1:#] \"get\" \"k\"\r\n", "hp_norm_monitor");
    hp_buf_reset(&m);
    hp_buf_puts(&m, "%7\r\n$2\r\nid\r\n:42\r\n$4\r\nmode\r\n");
    hp_norm_hello(&m, NULL);
    is_string(m.data, "%7\r\n$2\r\nid\r\n:#\r\n$4\r\nmode\r\n", "hp_norm_hello");
    hp_buf_free(&m);
}

static void test_run(void)
{
    diag("(a program killed on purpose: the line below is expected)");
    const char *sleeper[] = { "sleep", "30", NULL };
    long long t0 = hp_now_ms();
    is_int(hp_run(sleeper, NULL, 0, NULL, NULL, 300), -1, "hp_run kills a program after its timeout");
    ok(hp_now_ms() - t0 < 3000, "promptly");
    const char *cat[] = { "cat", NULL };
    hp_buf out = {0};
    is_int(hp_run(cat, "abc", 3, &out, NULL, 5000), 0, "hp_run: exit status");
    is_bytes(out.data, out.len, "abc", 3, "hp_run: stdin to stdout");
    hp_buf_free(&out);
    const char *f[] = { "false", NULL };
    is_int(hp_run(f, NULL, 0, NULL, NULL, 5000), 1, "hp_run: a failing program's status");
}

int main(void)
{
    plan_lazy();
    test_processes();
    hp_proc *r = hp_redis_start(NULL);
    test_io(r);
    test_diff_runner(r);
    test_run();
    return 0;
}
