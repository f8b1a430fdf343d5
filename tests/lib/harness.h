/* Integration test harness: real redis-server and lockproxy processes, raw sockets, and the
 * differential check "the same bytes straight to Redis and through the proxy give the same
 * bytes back".
 *
 *   hp_redis_start()  --port P --bind 127.0.0.1 --save '' ...   (a child, log in the temp dir)
 *   hp_proxy_start()  build/lockproxy --listen 127.0.0.1:Q --upstream 127.0.0.1:P --log -
 *
 *   hp_diff():   steps ──► fresh connection to Redis  ──► bytes until quiet/EOF ─┐
 *                steps ──► fresh connection to proxy  ──► bytes until quiet/EOF ─┴► is_bytes
 *
 * Every blocking call is bounded: sockets are non-blocking and waited on with poll() against a
 * deadline, child processes are reaped with a timeout and killed after it, and a watchdog
 * (SIGALRM, LP_TEST_WATCHDOG seconds, default 240) ends a test program that hangs anyway.
 *
 * Children are killed when the test program ends in any way: an atexit handler, handlers for
 * SIGINT/SIGTERM/SIGHUP/SIGQUIT, and PR_SET_PDEATHSIG in each child (which also covers
 * bail_out() and skip_all(), which _exit without running atexit handlers, and crashes).
 * The per-program temp dir (logs, redis files) is removed when every assertion passed and
 * kept, with the tails of the logs printed, when one failed (LP_TEST_KEEP=1 always keeps it).
 *
 * Environment:
 *   LOCKPROXY_BIN            the proxy binary (default: the LOCKPROXY_BIN macro, build/lockproxy)
 *   LP_TEST_PROXY_IS_REDIS=1 harness self-check: hp_proxy_start() starts nothing and returns a
 *                            stand-in for the upstream Redis itself, so every differential test
 *                            must pass; this proves the tests, not the proxy. (Tests of the
 *                            proxy's own behaviour, e.g. faults or signals, cannot use it.)
 *   LP_TEST_IDLE_MS          silence that ends a reply stream (default 200)
 *   LP_TEST_WATCHDOG         seconds before a test program is stopped (default 240)
 *   LP_TEST_KEEP=1           keep the temp dir
 *   LP_TEST_VERBOSE=1        print every started command line and, for each differential
 *                            test, what Redis sent
 *
 * Functions that cannot go on (a server does not start) record a failed assertion, clean up
 * and exit through hp_abort(); they never return an unusable object. */
#ifndef LP_HARNESS_H
#define LP_HARNESS_H

#include <stddef.h>
#include <sys/types.h>

#include <hiredis/hiredis.h>

#include "tap.h"

/* ---- growable byte buffer ---------------------------------------------------------------- */

typedef struct hp_buf {
    char *data;                  /* always NUL-terminated (not counted in len), or NULL */
    size_t len;
    size_t cap;
} hp_buf;

void hp_buf_append(hp_buf *b, const void *p, size_t n);
void hp_buf_puts(hp_buf *b, const char *s);
void hp_buf_printf(hp_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Appends one RESP multibulk request, formatted as hiredis's redisCommand() does
 * ("SET %s %b", key, value, value_len). */
void hp_buf_cmd(hp_buf *b, const char *fmt, ...);
/* Appends one RESP multibulk request from explicit arguments (argvlen may be NULL). */
void hp_buf_cmdargv(hp_buf *b, int argc, const char **argv, const size_t *argvlen);
void hp_buf_reset(hp_buf *b);    /* len = 0, keeps the memory */
void hp_buf_free(hp_buf *b);     /* accepts a zeroed buffer */
/* Position of needle at or after from, or (size_t)-1. */
size_t hp_buf_find(const hp_buf *b, size_t from, const void *needle, size_t nlen);
/* Number of non-overlapping occurrences of needle. */
size_t hp_buf_count(const hp_buf *b, const char *needle);
/* p[0..n) escaped for one line of TAP (\r \n \xNN, at most max bytes shown, then "..."). The
 * result lives until eight more calls. */
const char *hp_esc(const void *p, size_t n, size_t max);
/* 1 when b contains the n bytes of p (ok-friendly). */
int hp_buf_has(const hp_buf *b, const void *p, size_t n);
/* The same for a string literal, which may contain NUL bytes. */
#define HP_HAS(b, lit) hp_buf_has((b), (lit), sizeof(lit) - 1)

/* ---- processes --------------------------------------------------------------------------- */

typedef enum { HP_REDIS, HP_PROXY } hp_kind;

typedef struct hp_proc {
    hp_kind kind;
    char name[32];               /* "redis-1", "proxy-2": in messages and file names */
    pid_t pid;                   /* > 0 while running; 0 when stopped or not a child of ours */
    int port;                    /* loopback TCP port it listens on (0 with unix_path) */
    char unix_path[108];         /* proxy: its unix:... listening socket (then port is 0);
                                  * redis: its --unixsocket (clients still use the port) */
    char log[4096];              /* its stdout and stderr */
    char dir[4096];              /* its working directory (redis: --dir) */
    char password[128];          /* redis: --requirepass, proxy: its upstream's; "" for none */
    char **argv;                 /* the command line, kept for hp_restart() */
    int exit_code;               /* after it was reaped: as hp_stop() returns; -2 before */
    int stand_in;                /* proxy under LP_TEST_PROXY_IS_REDIS: this is the upstream */
    int paused;                  /* stopped with hp_pause() and not resumed */
    const struct hp_proc *upstream;  /* proxy: the Redis behind it */
} hp_proc;

/* Prepares the harness (temp dir, cleanup handlers, watchdog). Idempotent; the hp_ functions
 * that need it call it, so tests rarely do. It works before or after plan(). */
void hp_init(void);
/* The per-program temp dir, e.g. /tmp/lp-diff_basic.t-XXXXXX. */
const char *hp_tmpdir(void);
/* A loopback TCP port that nothing listens on right now. */
int hp_free_port(void);
/* Milliseconds on a monotonic clock. */
long long hp_now_ms(void);
void hp_sleep_ms(int ms);
/* The idle period that ends a reply stream (LP_TEST_IDLE_MS, default 200). */
int hp_idle_ms(void);

/* Starts redis-server on a free port with the standard arguments and the NULL-terminated
 * extra arguments (may be NULL), and waits until it answers PING (-NOAUTH counts). Then it
 * looks every command up a few times: Redis's command tables finish rehashing only as they
 * are used, and until then COMMAND and COMMAND DOCS change order between calls. */
hp_proc *hp_redis_start(const char *const *extra);
/* Starts the proxy in front of upstream (listen on a free loopback port, "--upstream
 * 127.0.0.1:<upstream port>", "--log -") plus extra; extra may give its own "--listen" or
 * "--upstream" instead. Waits until a PING through it is answered. Under
 * LP_TEST_PROXY_IS_REDIS=1 starts nothing and returns a stand-in (see the top). */
hp_proc *hp_proxy_start(const hp_proc *upstream, const char *const *extra);
/* Like hp_proxy_start() but does not wait for readiness and does not fail when the proxy
 * exits at once (for tests of bad flags); the caller uses hp_wait_exit(). */
hp_proc *hp_proxy_spawn(const hp_proc *upstream, const char *const *extra);

/* Sends SIGTERM and waits up to timeout_ms for the exit; after that, SIGKILL (reported with
 * diag). Returns the exit status the shell would show: the exit code, 128+signal when killed
 * by a signal, or -1 when it had to be killed after the timeout. A stand-in returns 0. */
int hp_stop(hp_proc *p, int timeout_ms);
/* SIGKILL and reap. Returns as hp_stop(). */
int hp_kill(hp_proc *p);
/* Sends a signal without waiting (SIGHUP, SIGSTOP, SIGCONT, ...). Returns 0 or -1. */
int hp_signal(hp_proc *p, int sig);
int hp_pause(hp_proc *p);        /* SIGSTOP */
int hp_resume(hp_proc *p);       /* SIGCONT */
/* Waits up to timeout_ms for the child to exit by itself. Returns as hp_stop(), or -1 if it is
 * still running (it is left running). */
int hp_wait_exit(hp_proc *p, int timeout_ms);
/* Starts a stopped or killed process again with the same command line and port, and waits
 * until it is ready. Returns 0, or -1 (with diag) if it did not come up. */
int hp_restart(hp_proc *p);
/* Prints the last lines of p's log with diag(). */
void hp_log_tail(const hp_proc *p, int lines);
/* Reads p's whole log into out (replacing its contents). Returns 0 or -1. */
int hp_log_read(const hp_proc *p, hp_buf *out);

/* Records a failing assertion, prints why and the tails of all logs, kills every child, and
 * exits with status 1. For "cannot go on" inside a test program. */
void hp_abort(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
/* Kills every child, then bail_out(). */
void hp_bail(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

/* ---- raw client ---------------------------------------------------------------------------- */

typedef enum {
    HP_IO_OK = 0,                /* the condition was met */
    HP_IO_EOF,                   /* the peer closed (EOF or connection reset) */
    HP_IO_TIMEOUT,               /* the deadline passed first */
    HP_IO_ERROR                  /* another socket error; errno is set */
} hp_io;

/* Connects to 127.0.0.1:port (or a unix socket). Returns a non-blocking fd, or -1 (errno set)
 * when it did not connect within timeout_ms. */
int hp_connect(int port, int timeout_ms);
int hp_connect_unix(const char *path, int timeout_ms);
/* Connects to where p listens. */
int hp_connect_proc(const hp_proc *p, int timeout_ms);
/* Sends all n bytes within timeout_ms. Does not read: with large pipelines whose replies
 * can fill the socket buffers, use hp_exchange() or a differential step instead. */
hp_io hp_send_all(int fd, const void *p, size_t n, int timeout_ms);
/* Reads and appends to b until b->len >= n. */
hp_io hp_read_n(int fd, hp_buf *b, size_t n, int timeout_ms);
/* Reads and appends to b until nothing arrives for idle_ms, at most deadline_ms in all.
 * HP_IO_OK means the stream went quiet. */
hp_io hp_read_idle(int fd, hp_buf *b, int idle_ms, int deadline_ms);
/* Reads and appends to b until the peer closes. HP_IO_EOF is the success result here. */
hp_io hp_read_eof(int fd, hp_buf *b, int deadline_ms);
/* Reads until b contains needle at or after offset from. */
hp_io hp_read_until(int fd, hp_buf *b, size_t from, const char *needle, int timeout_ms);
/* Sends req while reading whatever comes back, then reads until quiet (idle_ms) or EOF.
 * *closed is set to whether the peer closed. */
hp_io hp_exchange(int fd, const void *req, size_t len, hp_buf *out, int idle_ms, int deadline_ms,
                  int *closed);

/* ---- control commands (hiredis, RESP2, bounded by a 5 s timeout) --------------------------- */

/* A hiredis connection to p with timeouts; AUTHs with p->password when it has one.
 * NULL (with diag) when it cannot connect. */
redisContext *hp_redis_connect(const hp_proc *p);
/* One command on a fresh connection. Returns the reply (freeReplyObject) or NULL with diag. */
redisReply *hp_cmd(const hp_proc *p, const char *fmt, ...);
/* 1 when the command got a reply that is not an error. */
int hp_cmd_ok(const hp_proc *p, const char *fmt, ...);
/* The integer reply of a command, or LLONG_MIN. */
long long hp_cmd_int(const hp_proc *p, const char *fmt, ...);
/* The value of an INFO field (e.g. "blocked_clients") of a Redis, or LLONG_MIN. */
long long hp_info_int(const hp_proc *redis, const char *field);
/* Polls INFO until field == want. Returns 1 when it got there within timeout_ms. */
int hp_wait_info(const hp_proc *redis, const char *field, long long want, int timeout_ms);

/* ---- differential tests ----------------------------------------------------------------- */

typedef enum {
    HP_STEP_END = 0,
    HP_STEP_SEND,                /* send data (reading replies meanwhile) */
    HP_STEP_SEND_SKIP,           /* send data, wait until quiet, leave what came out of the
                                  * comparison (for replies with connection-specific data) */
    HP_STEP_PAUSE,               /* keep reading for ms */
    HP_STEP_WAIT_BYTES,          /* read until bytes have arrived in all */
    HP_STEP_WAIT_MATCH,          /* read until text appears after the previous match */
    HP_STEP_WAIT_QUIET,          /* read until nothing arrives for ms */
    HP_STEP_CALL                 /* run fn (e.g. PUBLISH on another connection) */
} hp_step_kind;

/* fn of HP_STEP_CALL: side is where this side's connection goes (the Redis or the proxy),
 * redis is the Redis itself (for INFO and other inspection). */
typedef void (*hp_call_fn)(const hp_proc *side, const hp_proc *redis, void *arg);

typedef struct hp_step {
    hp_step_kind kind;
    const void *data;            /* SEND, SEND_SKIP: bytes; WAIT_MATCH: NUL-terminated text */
    size_t len;                  /* SEND, SEND_SKIP: length; WAIT_BYTES: total bytes */
    int ms;                      /* PAUSE, WAIT_QUIET */
    hp_call_fn fn;               /* CALL */
    void *arg;
} hp_step;

#define HP_SEND(lit)          { .kind = HP_STEP_SEND, .data = (lit), .len = sizeof(lit) - 1 }
#define HP_SENDN(p, n)        { .kind = HP_STEP_SEND, .data = (p), .len = (n) }
#define HP_SEND_SKIP(lit)     { .kind = HP_STEP_SEND_SKIP, .data = (lit), .len = sizeof(lit) - 1 }
#define HP_PAUSE(t)           { .kind = HP_STEP_PAUSE, .ms = (t) }
#define HP_WAIT_BYTES(n)      { .kind = HP_STEP_WAIT_BYTES, .len = (n) }
#define HP_WAIT_MATCH(text)   { .kind = HP_STEP_WAIT_MATCH, .data = (text) }
#define HP_WAIT_QUIET(t)      { .kind = HP_STEP_WAIT_QUIET, .ms = (t) }
#define HP_CALL(f, a)         { .kind = HP_STEP_CALL, .fn = (f), .arg = (a) }
#define HP_END                { .kind = HP_STEP_END }

/* Rewrites a side's output in place before the comparison (both sides get the same call). */
typedef void (*hp_norm_fn)(hp_buf *out, void *arg);

typedef struct hp_diff_opts {
    hp_norm_fn normalise;        /* NULL: compare raw bytes */
    void *norm_arg;
    int idle_ms;                 /* silence that ends the stream; 0: hp_idle_ms() */
    int patience_ms;             /* the proxy side may be silent this long while it has
                                  * fewer bytes than Redis sent; 0: 3000 */
    int deadline_ms;             /* one side's whole exchange; 0: 30000 */
    int step_ms;                 /* WAIT_BYTES, WAIT_MATCH give up after this; 0: 5000. After
                                  * one gave up, later wait steps of that side are skipped. */
    size_t min_bytes;            /* direct side: the stream is not complete before this many
                                  * bytes (big replies); patience applies until then */
    int no_flush;                /* 1: no FLUSHALL on the Redis before each side */
    int no_retry;                /* 1: compare at once. By default, when the proxy's stream
                                  * goes on where Redis's ended (or closes where Redis's did
                                  * not), the Redis side runs again with a 5x idle period, as
                                  * a loaded machine can pause Redis mid-stream. */
} hp_diff_opts;

/* What one side received. */
typedef struct hp_side {
    hp_buf out;                  /* everything, raw */
    hp_buf cmp;                  /* what is compared: out without SEND_SKIP parts, normalised */
    int closed;                  /* the peer closed (EOF or reset) before the stream went quiet */
    int timed_out;               /* the deadline passed (or a wait step did not complete) */
    int send_error;              /* errno of a failed send (EPIPE after a close), or 0 */
    int connect_error;           /* errno when the connection could not be made, or 0 */
} hp_side;

void hp_side_free(hp_side *s);

/* Runs steps on a fresh connection to Redis directly, then on a fresh connection to the
 * proxy (FLUSHALL on the Redis before each unless opts->no_flush), and asserts twice:
 * "<name>: same bytes" (is_bytes on the compared streams) and "<name>: same close"
 * (both closed or both open). opts may be NULL. Returns 1 when both assertions passed.
 * When direct/proxied are not NULL they receive the two sides (free with hp_side_free). */
int hp_diff(const hp_proc *redis, const hp_proc *proxy, const char *name,
            const hp_step *steps, const hp_diff_opts *opts);
int hp_diff_ex(const hp_proc *redis, const hp_proc *proxy, const char *name,
               const hp_step *steps, const hp_diff_opts *opts,
               hp_side *direct, hp_side *proxied);
/* The same for one byte string sent at once. */
int hp_diff_bytes(const hp_proc *redis, const hp_proc *proxy, const char *name,
                  const void *req, size_t len, const hp_diff_opts *opts);
/* Runs steps against one target only (the building block of hp_diff). upstream is the Redis
 * (for HP_CALL). want_len > 0 is a length to expect (patience applies until then). */
void hp_run_steps(const hp_proc *target, const hp_proc *upstream, const hp_step *steps,
                  const hp_diff_opts *opts, size_t want_len, hp_side *side);

/* Normaliser building block: after each occurrence of marker, replaces the run of bytes from
 * charset (at least one) with "#". E.g. ("\r\n$2\r\nid\r\n:", "0123456789"). */
void hp_mask_after(hp_buf *b, const char *marker, const char *charset);
/* Normalisers for hp_diff_opts.normalise (arg unused): */
void hp_norm_hello(hp_buf *b, void *arg);    /* the "id" field of HELLO replies */
void hp_norm_monitor(hp_buf *b, void *arg);  /* MONITOR timestamps and client addresses */
void hp_norm_digits(hp_buf *b, void *arg);   /* every run of digits (structure only) */

/* ---- other programs (redis-cli) --------------------------------------------------------- */

/* Runs argv[0] (looked up in PATH) with stdin from in/inlen, collecting stdout and stderr
 * (either may be NULL to discard). Killed after timeout_ms. Returns as hp_stop(). */
int hp_run(const char *const *argv, const void *in, size_t inlen, hp_buf *out, hp_buf *err,
           int timeout_ms);

/* A program on a pseudo-terminal (forkpty), for interactive redis-cli. */
typedef struct hp_pty {
    pid_t pid;
    int fd;                      /* the master side, non-blocking */
    hp_buf out;                  /* everything the program wrote */
    size_t mark;                 /* hp_pty_expect() searches from here */
} hp_pty;

/* Starts argv on a rows x cols terminal with extra environment entries ("K=V", NULL-terminated,
 * may be NULL). Returns 0 or -1. */
int hp_pty_spawn(hp_pty *t, const char *const *argv, const char *const *env, int rows, int cols);
/* Types text (with "\r" for Enter). Returns 0 or -1. */
int hp_pty_write(hp_pty *t, const char *text);
/* Reads until needle appears after the mark; then moves the mark past it. Returns 1 when
 * found within timeout_ms. */
int hp_pty_expect(hp_pty *t, const char *needle, int timeout_ms);
/* Reads what arrives for idle_ms (at most deadline_ms). */
void hp_pty_drain(hp_pty *t, int idle_ms, int deadline_ms);
/* Waits up to timeout_ms for the program to exit (reading its output meanwhile), kills it
 * after that, closes the terminal. Returns as hp_stop(). */
int hp_pty_close(hp_pty *t, int timeout_ms);

#endif
