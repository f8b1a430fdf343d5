/* Integration test harness (see harness.h). */
#define _GNU_SOURCE     /* memmem, pipe2, program_invocation_short_name, nftw */
#include "lib/harness.h"

#include <errno.h>
#include <dirent.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <poll.h>
#include <pty.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#ifndef LOCKPROXY_BIN
#define LOCKPROXY_BIN "build/lockproxy"
#endif

#define HP_MAX_CHILDREN 64
#define HP_MAX_PROCS 32
#define HP_READY_MS 15000          /* a server must answer PING within this */
#define HP_CONNECT_MS 5000
#define HP_CMD_TIMEOUT_S 5

/* ---- state ----------------------------------------------------------------------------- */

static int hp_ready;
static char hp_dir[1024];
static pid_t hp_parent;
/* Every child we started and have not reaped: read by the signal handlers. */
static volatile pid_t hp_children[HP_MAX_CHILDREN];
static hp_proc *hp_procs[HP_MAX_PROCS];
static int hp_nprocs;
static int hp_nredis, hp_nproxy;
static int hp_used_ports[256];
static int hp_nused_ports;
static int hp_watchdog_s = 240;

static void hp_child_add(pid_t pid)
{
    for (int i = 0; i < HP_MAX_CHILDREN; i++) {
        if (hp_children[i] == 0) {
            hp_children[i] = pid;
            return;
        }
    }
}

static void hp_child_del(pid_t pid)
{
    for (int i = 0; i < HP_MAX_CHILDREN; i++)
        if (hp_children[i] == pid) hp_children[i] = 0;
}

/* Async-signal-safe: SIGKILLs every child still on the list. */
static void hp_kill_children(void)
{
    for (int i = 0; i < HP_MAX_CHILDREN; i++) {
        pid_t pid = hp_children[i];
        if (pid > 0) {
            kill(pid, SIGCONT);
            kill(pid, SIGKILL);
        }
    }
}

static void hp_write_str(int fd, const char *s)
{
    ssize_t r = write(fd, s, strlen(s));
    (void)r;
}

static void hp_on_signal(int sig)
{
    hp_kill_children();
    signal(sig, SIG_DFL);
    raise(sig);
}

static void hp_on_alarm(int sig)
{
    (void)sig;
    hp_kill_children();
    hp_write_str(STDOUT_FILENO, "Bail out! watchdog: the test program ran too long "
                                "(LP_TEST_WATCHDOG); its children were killed\n");
    _exit(255);
}

long long hp_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void hp_sleep_ms(int ms)
{
    if (ms <= 0) return;
    struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

static int hp_env_int(const char *name, int dflt)
{
    const char *v = getenv(name);
    if (v == NULL || *v == '\0') return dflt;
    char *end;
    long n = strtol(v, &end, 10);
    if (*end != '\0' || n < 0 || n > INT_MAX) return dflt;
    return (int)n;
}

int hp_idle_ms(void)
{
    return hp_env_int("LP_TEST_IDLE_MS", 200);
}

static int hp_verbose(void)
{
    return hp_env_int("LP_TEST_VERBOSE", 0) != 0;
}

static int hp_stand_in(void)
{
    return hp_env_int("LP_TEST_PROXY_IS_REDIS", 0) != 0;
}

static int hp_rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st; (void)flag; (void)ftw;
    remove(path);
    return 0;
}

static int hp_reap(hp_proc *p, int block_ms);

static void hp_atexit(void)
{
    if (getpid() != hp_parent) return;
    /* Ask every process to stop, then make sure. */
    for (int i = 0; i < hp_nprocs; i++) {
        hp_proc *p = hp_procs[i];
        if (p->pid > 0) {
            if (p->paused) kill(p->pid, SIGCONT);
            kill(p->pid, SIGTERM);
        }
    }
    long long until = hp_now_ms() + 3000;
    for (int i = 0; i < hp_nprocs; i++) {
        hp_proc *p = hp_procs[i];
        if (p->pid > 0) {
            long long left = until - hp_now_ms();
            if (hp_reap(p, left > 0 ? (int)left : 0) != 0) {
                kill(p->pid, SIGKILL);
                hp_reap(p, 2000);
            }
        }
    }
    hp_kill_children();
    int keep = hp_env_int("LP_TEST_KEEP", 0) != 0;
    if (tap_failures() > 0) {
        for (int i = 0; i < hp_nprocs; i++)
            if (!hp_procs[i]->stand_in) hp_log_tail(hp_procs[i], 20);
        keep = 1;
    }
    if (hp_dir[0] != '\0') {
        if (keep) diag("test files kept in %s", hp_dir);
        else nftw(hp_dir, hp_rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    }
    for (int i = 0; i < hp_nprocs; i++) {
        if (hp_procs[i]->argv != NULL) {
            for (char **a = hp_procs[i]->argv; *a != NULL; a++) free(*a);
            free(hp_procs[i]->argv);
        }
        free(hp_procs[i]);
    }
    hp_nprocs = 0;
}

void hp_init(void)
{
    if (hp_ready) return;
    hp_ready = 1;
    hp_parent = getpid();
    /* Makes tap.c register its own exit handler first, so that ours runs before it (tap's
     * handler ends with _exit). skip(0, ...) prints nothing. */
    skip(0, "%s", "");
    signal(SIGPIPE, SIG_IGN);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = hp_on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);
    sigaction(SIGQUIT, &sa, NULL);
    sa.sa_handler = hp_on_alarm;
    sigaction(SIGALRM, &sa, NULL);
    hp_watchdog_s = hp_env_int("LP_TEST_WATCHDOG", 240);
    if (hp_watchdog_s > 0) alarm((unsigned)hp_watchdog_s);
    srand((unsigned)getpid() ^ (unsigned)time(NULL));

    const char *tmp = getenv("TMPDIR");
    if (tmp == NULL || *tmp == '\0') tmp = "/tmp";
    snprintf(hp_dir, sizeof hp_dir, "%s/lp-%s-XXXXXX", tmp, program_invocation_short_name);
    if (mkdtemp(hp_dir) == NULL) {
        hp_dir[0] = '\0';
        bail_out("cannot create a temp dir under %s: %s", tmp, strerror(errno));
    }
    atexit(hp_atexit);
}

const char *hp_tmpdir(void)
{
    hp_init();
    return hp_dir;
}

/* ---- buffers --------------------------------------------------------------------------- */

static void hp_buf_reserve(hp_buf *b, size_t extra)
{
    if (b->len + extra + 1 <= b->cap) return;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + extra + 1) cap *= 2;
    char *p = realloc(b->data, cap);
    if (p == NULL) bail_out("out of memory (%zu bytes)", cap);
    b->data = p;
    b->cap = cap;
}

void hp_buf_append(hp_buf *b, const void *p, size_t n)
{
    hp_buf_reserve(b, n);
    if (n > 0) memcpy(b->data + b->len, p, n);
    b->len += n;
    b->data[b->len] = '\0';
}

void hp_buf_puts(hp_buf *b, const char *s)
{
    hp_buf_append(b, s, strlen(s));
}

void hp_buf_printf(hp_buf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0) return;
    hp_buf_reserve(b, (size_t)n);
    va_start(ap, fmt);
    vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

void hp_buf_cmd(hp_buf *b, const char *fmt, ...)
{
    char *cmd = NULL;
    va_list ap;
    va_start(ap, fmt);
    int n = redisvFormatCommand(&cmd, fmt, ap);
    va_end(ap);
    if (n < 0) bail_out("hp_buf_cmd: cannot format \"%s\"", fmt);
    hp_buf_append(b, cmd, (size_t)n);
    free(cmd);
}

void hp_buf_cmdargv(hp_buf *b, int argc, const char **argv, const size_t *argvlen)
{
    char *cmd = NULL;
    int n = redisFormatCommandArgv(&cmd, argc, argv, argvlen);
    if (n < 0) bail_out("hp_buf_cmdargv: cannot format");
    hp_buf_append(b, cmd, (size_t)n);
    free(cmd);
}

void hp_buf_reset(hp_buf *b)
{
    b->len = 0;
    if (b->data) b->data[0] = '\0';
}

void hp_buf_free(hp_buf *b)
{
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}

size_t hp_buf_find(const hp_buf *b, size_t from, const void *needle, size_t nlen)
{
    if (b->data == NULL || from > b->len || nlen > b->len - from) return (size_t)-1;
    if (nlen == 0) return from;
    const char *p = memmem(b->data + from, b->len - from, needle, nlen);
    return p ? (size_t)(p - b->data) : (size_t)-1;
}

size_t hp_buf_count(const hp_buf *b, const char *needle)
{
    size_t n = 0, nlen = strlen(needle), at = 0, pos;
    if (nlen == 0) return 0;
    while ((pos = hp_buf_find(b, at, needle, nlen)) != (size_t)-1) {
        n++;
        at = pos + nlen;
    }
    return n;
}

const char *hp_esc(const void *p, size_t n, size_t max)
{
    static char *ring[8];
    static int next;
    const unsigned char *s = p;
    size_t shown = n < max ? n : max;
    char *out = malloc(shown * 4 + 4);
    if (out == NULL) return "(out of memory)";
    size_t o = 0;
    for (size_t i = 0; i < shown; i++) {
        unsigned char c = s[i];
        if (c == '\r') { out[o++] = '\\'; out[o++] = 'r'; }
        else if (c == '\n') { out[o++] = '\\'; out[o++] = 'n'; }
        else if (c == '\\') { out[o++] = '\\'; out[o++] = '\\'; }
        else if (c >= 32 && c < 127) out[o++] = (char)c;
        else o += (size_t)sprintf(out + o, "\\x%02x", c);
    }
    if (shown < n) { memcpy(out + o, "...", 3); o += 3; }
    out[o] = '\0';
    free(ring[next]);
    ring[next] = out;
    next = (next + 1) % 8;
    return out;
}

int hp_buf_has(const hp_buf *b, const void *p, size_t n)
{
    return hp_buf_find(b, 0, p, n) != (size_t)-1;
}

/* ---- processes ------------------------------------------------------------------------- */

static int hp_port_used(int port)
{
    for (int i = 0; i < hp_nused_ports; i++)
        if (hp_used_ports[i] == port) return 1;
    return 0;
}

/* 1 when 127.0.0.1:port can be bound (and nothing listens there). */
static int hp_port_free(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return 0;
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)port);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int ok_ = bind(fd, (struct sockaddr *)&sa, sizeof sa) == 0;
    close(fd);
    return ok_;
}

int hp_free_port(void)
{
    hp_init();
    /* Below the usual ephemeral range (32768-60999), so that our own outgoing connections
     * cannot be holding the port we pick. */
    for (int tries = 0; tries < 500; tries++) {
        int port = 20000 + rand() % 12000;
        if (hp_port_used(port) || !hp_port_free(port)) continue;
        if (hp_nused_ports < (int)(sizeof hp_used_ports / sizeof hp_used_ports[0]))
            hp_used_ports[hp_nused_ports++] = port;
        return port;
    }
    hp_bail("no free loopback port found");
}

static char **hp_argv_build(const char *const *base, int nbase, const char *const *extra)
{
    int nextra = 0;
    while (extra != NULL && extra[nextra] != NULL) nextra++;
    char **v = calloc((size_t)(nbase + nextra + 1), sizeof *v);
    if (v == NULL) bail_out("out of memory");
    for (int i = 0; i < nbase; i++) v[i] = strdup(base[i]);
    for (int i = 0; i < nextra; i++) v[nbase + i] = strdup(extra[i]);
    return v;
}

static const char *hp_argv_value(const char *const *extra, const char *flag)
{
    for (int i = 0; extra != NULL && extra[i] != NULL; i++)
        if (strcmp(extra[i], flag) == 0 && extra[i + 1] != NULL) return extra[i + 1];
    return NULL;
}

static void hp_register(hp_proc *p)
{
    if (hp_nprocs >= HP_MAX_PROCS) hp_bail("too many processes in one test program");
    hp_procs[hp_nprocs++] = p;
}

/* Closes every inherited descriptor above stderr (the child side of a fork). */
static void hp_close_fds_from(int lowfd)
{
    long max = sysconf(_SC_OPEN_MAX);
    if (max < 0 || max > 65536) max = 65536;
    for (int fd = lowfd; fd < max; fd++) close(fd);
}

/* In a fresh child: die with the parent (which covers _exit from bail_out and crashes). */
static void hp_child_setup(void)
{
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != hp_parent) _exit(127);
    signal(SIGPIPE, SIG_DFL);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = SIG_DFL;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);
    sigaction(SIGQUIT, &sa, NULL);
    sigaction(SIGALRM, &sa, NULL);
    alarm(0);
}

/* Forks and execs p->argv with output to p->log. Returns 0 or -1. */
static int hp_spawn(hp_proc *p)
{
    if (hp_verbose()) {
        hp_buf line = {0};
        for (char **a = p->argv; *a != NULL; a++) {
            hp_buf_puts(&line, **a ? *a : "''");
            hp_buf_puts(&line, " ");
        }
        diag("%s: %s", p->name, line.data);
        hp_buf_free(&line);
    }
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid < 0) {
        diag("%s: fork: %s", p->name, strerror(errno));
        return -1;
    }
    if (pid == 0) {
        hp_child_setup();
        int in = open("/dev/null", O_RDONLY);
        int out = open(p->log, O_WRONLY | O_CREAT | O_APPEND, 0644);
        if (in < 0 || out < 0) _exit(127);
        dup2(in, STDIN_FILENO);
        dup2(out, STDOUT_FILENO);
        dup2(out, STDERR_FILENO);
        hp_close_fds_from(3);
        if (p->dir[0] != '\0' && chdir(p->dir) != 0) _exit(127);
        execvp(p->argv[0], p->argv);
        dprintf(STDERR_FILENO, "harness: cannot run %s: %s\n", p->argv[0], strerror(errno));
        _exit(127);
    }
    p->pid = pid;
    p->exit_code = -2;
    hp_child_add(pid);
    return 0;
}

static int hp_exit_code(int status)
{
    if (WIFEXITED(status)) return WEXITSTATUS(status);
    if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
    return -1;
}

/* Waits up to block_ms for p to exit. Returns 0 when reaped (p->exit_code set), -1 when it is
 * still running. */
static int hp_reap(hp_proc *p, int block_ms)
{
    if (p->pid <= 0) return 0;
    long long until = hp_now_ms() + block_ms;
    for (;;) {
        int status;
        pid_t r = waitpid(p->pid, &status, WNOHANG);
        if (r == p->pid || (r < 0 && errno == ECHILD)) {
            p->exit_code = r == p->pid ? hp_exit_code(status) : -1;
            hp_child_del(p->pid);
            p->pid = 0;
            return 0;
        }
        if (hp_now_ms() >= until) return -1;
        hp_sleep_ms(5);
    }
}

/* Reads one line (up to CRLF) of a reply within timeout_ms into line. Returns its length or -1. */
static int hp_read_line(int fd, char *line, size_t cap, int timeout_ms)
{
    hp_buf b = {0};
    hp_io r = hp_read_until(fd, &b, 0, "\r\n", timeout_ms);
    int n = -1;
    if (r == HP_IO_OK || b.len > 0) {
        size_t len = b.len < cap - 1 ? b.len : cap - 1;
        memcpy(line, b.data, len);
        line[len] = '\0';
        char *crlf = strstr(line, "\r\n");
        if (crlf) *crlf = '\0';
        n = (int)strlen(line);
    }
    hp_buf_free(&b);
    return n;
}

/* Waits until p answers PING (+PONG or -NOAUTH). Returns 0, or -1 (with a reason in why)
 * when it exited or did not answer within timeout_ms. */
static int hp_wait_ready(hp_proc *p, int timeout_ms, char *why, size_t whylen)
{
    long long until = hp_now_ms() + timeout_ms;
    char line[256] = "";
    snprintf(why, whylen, "no answer to PING within %d ms", timeout_ms);
    while (hp_now_ms() < until) {
        if (p->pid > 0 && hp_reap(p, 0) == 0) {
            snprintf(why, whylen, "it exited with status %d", p->exit_code);
            return -1;
        }
        int fd = hp_connect_proc(p, 200);
        if (fd >= 0) {
            static const char ping[] = "*1\r\n$4\r\nPING\r\n";
            if (hp_send_all(fd, ping, sizeof ping - 1, 1000) == HP_IO_OK &&
                hp_read_line(fd, line, sizeof line, 2000) >= 0) {
                if (strcmp(line, "+PONG") == 0 || strncmp(line, "-NOAUTH", 7) == 0) {
                    close(fd);
                    return 0;
                }
                snprintf(why, whylen, "PING answered \"%s\"", line);
            }
            close(fd);
        }
        hp_sleep_ms(20);
    }
    return -1;
}

static int hp_log_mentions(const hp_proc *p, const char *text)
{
    hp_buf b = {0};
    int found = hp_log_read(p, &b) == 0 && hp_buf_find(&b, 0, text, strlen(text)) != (size_t)-1;
    hp_buf_free(&b);
    return found;
}

static hp_proc *hp_proc_new(hp_kind kind)
{
    hp_init();
    hp_proc *p = calloc(1, sizeof *p);
    if (p == NULL) bail_out("out of memory");
    p->kind = kind;
    p->exit_code = -2;
    if (kind == HP_REDIS) snprintf(p->name, sizeof p->name, "redis-%d", ++hp_nredis);
    else snprintf(p->name, sizeof p->name, "proxy-%d", ++hp_nproxy);
    snprintf(p->log, sizeof p->log, "%s/%s.log", hp_dir, p->name);
    hp_register(p);
    return p;
}

static void hp_proc_set_argv(hp_proc *p, char **argv)
{
    if (p->argv != NULL) {
        for (char **a = p->argv; *a != NULL; a++) free(*a);
        free(p->argv);
    }
    p->argv = argv;
}

/* Redis's command table holds hash tables that are still being rehashed after start-up;
 * each lookup moves the rehash on, and the iteration order, so COMMAND and COMMAND DOCS
 * list things in a different order on their first calls than later. Looking every command
 * up a few times finishes the rehash, so that both sides of a differential test see the
 * same order. */
static void hp_redis_settle(const hp_proc *p)
{
    redisReply *list = hp_cmd(p, "COMMAND LIST");
    if (list == NULL || list->type != REDIS_REPLY_ARRAY) {
        freeReplyObject(list);
        return;
    }
    const char **argv = calloc(list->elements + 2, sizeof *argv);
    if (argv == NULL) bail_out("out of memory");
    argv[0] = "COMMAND";
    argv[1] = "INFO";
    for (size_t i = 0; i < list->elements; i++) argv[i + 2] = list->element[i]->str;
    hp_buf req = {0}, out = {0};
    if (p->password[0] != '\0') hp_buf_cmd(&req, "AUTH %s", p->password);
    for (int round = 0; round < 3; round++)
        hp_buf_cmdargv(&req, (int)list->elements + 2, argv, NULL);
    hp_buf_puts(&req, "PING\r\n");
    int fd = hp_connect_proc(p, HP_CONNECT_MS);
    if (fd >= 0) {
        if (hp_send_all(fd, req.data, req.len, 5000) == HP_IO_OK)
            hp_read_until(fd, &out, 0, "+PONG\r\n", 10000);
        close(fd);
    }
    hp_buf_free(&req);
    hp_buf_free(&out);
    free(argv);
    freeReplyObject(list);
}

hp_proc *hp_redis_start(const char *const *extra)
{
    hp_proc *p = hp_proc_new(HP_REDIS);
    snprintf(p->dir, sizeof p->dir, "%s/%s", hp_dir, p->name);
    if (mkdir(p->dir, 0755) != 0 && errno != EEXIST) hp_bail("mkdir %s: %s", p->dir, strerror(errno));
    const char *pw = hp_argv_value(extra, "--requirepass");
    if (pw != NULL) snprintf(p->password, sizeof p->password, "%s", pw);
    /* Clients reach it over TCP; a unix socket is there for proxies' "--upstream unix:...". */
    const char *sock = hp_argv_value(extra, "--unixsocket");
    if (sock != NULL) snprintf(p->unix_path, sizeof p->unix_path, "%s", sock);
    char why[300] = "";
    for (int attempt = 0; attempt < 5; attempt++) {
        p->port = hp_free_port();
        char port[16];
        snprintf(port, sizeof port, "%d", p->port);
        const char *base[] = {
            "redis-server", "--port", port, "--bind", "127.0.0.1", "--save", "",
            "--appendonly", "no", "--enable-debug-command", "yes", "--daemonize", "no",
            "--dir", p->dir,
        };
        hp_proc_set_argv(p, hp_argv_build(base, (int)(sizeof base / sizeof base[0]), extra));
        if (hp_spawn(p) != 0) hp_abort("%s: cannot start redis-server", p->name);
        if (hp_wait_ready(p, HP_READY_MS, why, sizeof why) == 0) {
            hp_redis_settle(p);
            return p;
        }
        if (p->pid > 0) {
            kill(p->pid, SIGKILL);
            hp_reap(p, 2000);
        }
        if (!hp_log_mentions(p, "in use")) break;
        diag("%s: port %d was taken; trying another", p->name, p->port);
    }
    hp_abort("%s did not start: %s", p->name, why);
}

static const char *hp_proxy_bin(void)
{
    const char *bin = getenv("LOCKPROXY_BIN");
    return bin != NULL && *bin != '\0' ? bin : LOCKPROXY_BIN;
}

static hp_proc *hp_proxy_make(const hp_proc *upstream, const char *const *extra, int wait)
{
    hp_proc *p = hp_proc_new(HP_PROXY);
    p->upstream = upstream;
    if (upstream != NULL) snprintf(p->password, sizeof p->password, "%s", upstream->password);
    if (hp_stand_in()) {
        static int said;
        if (!said) {
            said = 1;
            diag("LP_TEST_PROXY_IS_REDIS=1: the \"proxy\" is Redis itself (harness self-check)");
        }
        if (upstream == NULL) hp_abort("stand-in proxy without an upstream");
        p->stand_in = 1;
        p->port = upstream->port;
        snprintf(p->unix_path, sizeof p->unix_path, "%s", upstream->unix_path);
        strncat(p->name, "(redis)", sizeof p->name - strlen(p->name) - 1);
        return p;
    }
    const char *bin = hp_proxy_bin();
    if (access(bin, X_OK) != 0) hp_abort("the proxy binary %s is missing: build it first", bin);
    const char *listen_arg = hp_argv_value(extra, "--listen");
    const char *upstream_arg = hp_argv_value(extra, "--upstream");
    char why[300] = "";
    for (int attempt = 0; attempt < 5; attempt++) {
        char listen[160], up[160];
        const char *base[8];
        int n = 0;
        base[n++] = bin;
        if (listen_arg == NULL) {
            p->port = hp_free_port();
            snprintf(listen, sizeof listen, "127.0.0.1:%d", p->port);
            base[n++] = "--listen";
            base[n++] = listen;
        } else if (strncmp(listen_arg, "unix:", 5) == 0) {
            p->port = 0;
            snprintf(p->unix_path, sizeof p->unix_path, "%s", listen_arg + 5);
        } else {
            const char *colon = strrchr(listen_arg, ':');
            p->port = colon ? atoi(colon + 1) : 0;
        }
        if (upstream_arg == NULL) {
            if (upstream == NULL) hp_abort("%s: no upstream", p->name);
            snprintf(up, sizeof up, "127.0.0.1:%d", upstream->port);
            base[n++] = "--upstream";
            base[n++] = up;
        }
        if (hp_argv_value(extra, "--log") == NULL) {
            base[n++] = "--log";
            base[n++] = "-";
        }
        hp_proc_set_argv(p, hp_argv_build(base, n, extra));
        if (hp_spawn(p) != 0) hp_abort("%s: cannot start %s", p->name, bin);
        if (!wait) return p;
        if (hp_wait_ready(p, HP_READY_MS, why, sizeof why) == 0) {
            hp_redis_settle(p);
            return p;
        }
        if (p->pid > 0) {
            kill(p->pid, SIGKILL);
            hp_reap(p, 2000);
        }
        if (listen_arg != NULL || !hp_log_mentions(p, "in use")) break;
        diag("%s: port %d was taken; trying another", p->name, p->port);
    }
    hp_abort("%s (%s) did not start: %s", p->name, bin, why);
}

hp_proc *hp_proxy_start(const hp_proc *upstream, const char *const *extra)
{
    return hp_proxy_make(upstream, extra, 1);
}

hp_proc *hp_proxy_spawn(const hp_proc *upstream, const char *const *extra)
{
    return hp_proxy_make(upstream, extra, 0);
}

int hp_wait_exit(hp_proc *p, int timeout_ms)
{
    if (p->stand_in) return -1;
    if (p->pid <= 0) return p->exit_code;
    return hp_reap(p, timeout_ms) == 0 ? p->exit_code : -1;
}

/* For a process that hangs: its threads' stacks (gdb, when installed) into <name>.stacks in
 * the temp dir, and their first lines as diagnostics. */
static void hp_dump_stacks(const hp_proc *p)
{
    /* Its threads and states, and whether something traces it already (LeakSanitizer stops
     * the world with ptrace at exit; gdb cannot attach then). */
    char path[1200], text[256];
    snprintf(path, sizeof path, "/proc/%d/task", (int)p->pid);
    DIR *tasks = opendir(path);
    struct dirent *de;
    while (tasks != NULL && (de = readdir(tasks)) != NULL) {
        if (de->d_name[0] == '.') continue;
        char comm[256] = "?", state[256] = "?", tracer[64] = "";
        snprintf(path, sizeof path, "/proc/%d/task/%s/status", (int)p->pid, de->d_name);
        FILE *f = fopen(path, "r");
        while (f != NULL && fgets(text, sizeof text, f) != NULL) {
            text[strcspn(text, "\n")] = '\0';
            if (strncmp(text, "Name:", 5) == 0) snprintf(comm, sizeof comm, "%s", text + 6);
            else if (strncmp(text, "State:", 6) == 0) snprintf(state, sizeof state, "%s", text + 7);
            else if (strncmp(text, "TracerPid:", 10) == 0 && atoi(text + 11) != 0)
                snprintf(tracer, sizeof tracer, ", traced by %d", atoi(text + 11));
        }
        if (f != NULL) fclose(f);
        diag("%s: thread %s (%s): %s%s", p->name, de->d_name, comm, state, tracer);
    }
    if (tasks != NULL) closedir(tasks);
    if (access("/usr/bin/gdb", X_OK) != 0) return;
    char pid[16];
    snprintf(pid, sizeof pid, "%d", (int)p->pid);
    const char *argv[] = { "/usr/bin/gdb", "-p", pid, "-batch", "-nx", "-ex", "thread apply all bt",
                           NULL };
    hp_buf out = {0};
    hp_run(argv, NULL, 0, &out, &out, 20000);
    snprintf(path, sizeof path, "%s/%s.stacks", hp_dir, p->name);
    FILE *f = fopen(path, "w");
    if (f != NULL) {
        if (out.len) fwrite(out.data, 1, out.len, f);
        fclose(f);
    }
    int shown = 0;
    for (char *line = out.data; line != NULL && *line && shown < 40; ) {
        char *nl = strchr(line, '\n');
        int len = nl ? (int)(nl - line) : (int)strlen(line);
        if (line[0] == '#' || strncmp(line, "Thread", 6) == 0) {
            diag("%s| %.*s", p->name, len, line);
            shown++;
        }
        line = nl ? nl + 1 : NULL;
    }
    diag("%s: stacks in %s", p->name, path);
    hp_buf_free(&out);
}

int hp_stop(hp_proc *p, int timeout_ms)
{
    if (p->stand_in) return 0;
    if (p->pid <= 0) return p->exit_code;
    /* SIGCONT only to a process we stopped, and before SIGTERM: a SIGCONT that arrives while
     * the process is exiting would cancel the SIGSTOP with which LeakSanitizer's tracer stops
     * it, and leave the sanitized process hanging in its leak check. */
    if (p->paused) kill(p->pid, SIGCONT);
    p->paused = 0;
    kill(p->pid, SIGTERM);
    if (hp_reap(p, timeout_ms) == 0) return p->exit_code;
    diag("%s did not exit within %d ms of SIGTERM: killing it", p->name, timeout_ms);
    hp_dump_stacks(p);
    kill(p->pid, SIGKILL);
    hp_reap(p, 5000);
    return -1;
}

int hp_kill(hp_proc *p)
{
    if (p->stand_in) return 0;
    if (p->pid <= 0) return p->exit_code;
    kill(p->pid, SIGKILL);
    p->paused = 0;
    hp_reap(p, 5000);
    return p->exit_code;
}

int hp_signal(hp_proc *p, int sig)
{
    if (p->stand_in || p->pid <= 0) return -1;
    int r = kill(p->pid, sig);
    if (r == 0 && (sig == SIGSTOP || sig == SIGTSTP)) p->paused = 1;
    if (r == 0 && sig == SIGCONT) p->paused = 0;
    return r;
}

int hp_pause(hp_proc *p)
{
    return hp_signal(p, SIGSTOP);
}

int hp_resume(hp_proc *p)
{
    return hp_signal(p, SIGCONT);
}

int hp_restart(hp_proc *p)
{
    if (p->stand_in) return 0;
    if (p->pid > 0) hp_kill(p);
    if (hp_spawn(p) != 0) return -1;
    char why[300];
    if (hp_wait_ready(p, HP_READY_MS, why, sizeof why) != 0) {
        diag("%s did not restart on port %d: %s", p->name, p->port, why);
        return -1;
    }
    if (p->kind == HP_REDIS) hp_redis_settle(p);
    return 0;
}

int hp_log_read(const hp_proc *p, hp_buf *out)
{
    hp_buf_reset(out);
    FILE *f = fopen(p->log, "rb");
    if (f == NULL) return -1;
    char chunk[8192];
    size_t n;
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0) hp_buf_append(out, chunk, n);
    fclose(f);
    if (out->data == NULL) hp_buf_append(out, "", 0);
    return 0;
}

void hp_log_tail(const hp_proc *p, int lines)
{
    hp_buf b = {0};
    if (hp_log_read(p, &b) != 0) {
        diag("%s: no log", p->name);
        return;
    }
    size_t at = b.len;
    if (at > 0 && b.data[at - 1] == '\n') at--;
    int seen = 0;
    while (at > 0 && seen < lines) {
        at--;
        if (b.data[at] == '\n' && ++seen == lines) {
            at++;
            break;
        }
    }
    diag("---- last lines of %s (%s) ----", p->name, p->log);
    char *line = b.data + at;
    while (line < b.data + b.len) {
        char *nl = memchr(line, '\n', (size_t)(b.data + b.len - line));
        size_t len = nl ? (size_t)(nl - line) : (size_t)(b.data + b.len - line);
        diag("%s| %.*s", p->name, (int)(len > 300 ? 300 : len), line);
        line += len + 1;
    }
    hp_buf_free(&b);
}

void hp_abort(const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    ok(0, "%s", msg);
    exit(1);        /* hp_atexit prints the logs and kills the children */
}

void hp_bail(const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    for (int i = 0; i < hp_nprocs; i++)
        if (!hp_procs[i]->stand_in) hp_log_tail(hp_procs[i], 20);
    hp_kill_children();
    bail_out("%s", msg);
}

/* ---- raw client ------------------------------------------------------------------------ */

static int hp_wait_fd(int fd, short events, long long until)
{
    for (;;) {
        long long left = until - hp_now_ms();
        if (left < 0) left = 0;
        struct pollfd pfd = { fd, events, 0 };
        int r = poll(&pfd, 1, (int)left);
        if (r > 0) return pfd.revents;
        if (r == 0) return 0;
        if (errno != EINTR) return -1;
    }
}

static int hp_connect_addr(const struct sockaddr *sa, socklen_t salen, int timeout_ms)
{
    hp_init();
    int fd = socket(sa->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) return -1;
    if (connect(fd, sa, salen) != 0) {
        if (errno != EINPROGRESS && errno != EAGAIN) {
            int e = errno;
            close(fd);
            errno = e;
            return -1;
        }
        int ev = hp_wait_fd(fd, POLLOUT, hp_now_ms() + timeout_ms);
        int err = 0;
        socklen_t len = sizeof err;
        if (ev <= 0) {
            close(fd);
            errno = ev == 0 ? ETIMEDOUT : errno;
            return -1;
        }
        if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0 || err != 0) {
            close(fd);
            errno = err ? err : EIO;
            return -1;
        }
    }
    if (sa->sa_family == AF_INET) {
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    }
    return fd;
}

int hp_connect(int port, int timeout_ms)
{
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)port);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    return hp_connect_addr((struct sockaddr *)&sa, sizeof sa, timeout_ms);
}

int hp_connect_unix(const char *path, int timeout_ms)
{
    struct sockaddr_un sa;
    memset(&sa, 0, sizeof sa);
    sa.sun_family = AF_UNIX;
    if (strlen(path) >= sizeof sa.sun_path) {
        errno = ENAMETOOLONG;
        return -1;
    }
    strcpy(sa.sun_path, path);
    return hp_connect_addr((struct sockaddr *)&sa, sizeof sa, timeout_ms);
}

int hp_connect_proc(const hp_proc *p, int timeout_ms)
{
    if (p->port == 0 && p->unix_path[0] != '\0') return hp_connect_unix(p->unix_path, timeout_ms);
    return hp_connect(p->port, timeout_ms);
}

/* One connection's traffic: what was received, whether the peer closed. */
typedef struct hp_pump {
    int fd;
    hp_buf *out;
    int closed;            /* EOF or reset seen */
    int error;             /* errno of a read error other than reset */
    int send_error;        /* errno of a failed send */
    long long last;        /* last activity: bytes received or a send completed */
} hp_pump;

/* Reads everything available now (at most 16 MiB per call). Returns bytes read. */
static size_t hp_pump_read(hp_pump *p)
{
    size_t total = 0;
    while (!p->closed && total < (16u << 20)) {
        hp_buf_reserve(p->out, 256 * 1024);
        ssize_t n = recv(p->fd, p->out->data + p->out->len, p->out->cap - p->out->len - 1, 0);
        if (n > 0) {
            p->out->len += (size_t)n;
            p->out->data[p->out->len] = '\0';
            total += (size_t)n;
            continue;
        }
        if (n == 0) {
            p->closed = 1;
        } else if (errno == EINTR) {
            continue;
        } else if (errno == EAGAIN || errno == EWOULDBLOCK) {
            break;
        } else {
            if (errno != ECONNRESET) p->error = errno;
            p->closed = 1;
        }
    }
    if (total > 0) p->last = hp_now_ms();
    return total;
}

/* Waits at most until `until` (and at most wait_ms) for something to read, or for room to
 * write data[*pos..len) when data is not NULL; does what it can. */
static void hp_pump_once(hp_pump *p, const char *data, size_t len, size_t *pos, long long until,
                         int wait_ms)
{
    int want_write = data != NULL && *pos < len && !p->send_error && !p->closed;
    long long now = hp_now_ms();
    long long stop = now + wait_ms < until ? now + wait_ms : until;
    short events = POLLIN;
    if (want_write) events |= POLLOUT;
    int ev = p->closed ? 0 : hp_wait_fd(p->fd, events, stop);
    if (p->closed) {
        if (stop > now) hp_sleep_ms((int)(stop - now));
        return;
    }
    if (ev < 0) {
        p->error = errno;
        p->closed = 1;
        return;
    }
    if (ev & (POLLIN | POLLHUP | POLLERR)) hp_pump_read(p);
    if (want_write && !p->closed && (ev & (POLLOUT | POLLERR))) {
        while (*pos < len) {
            size_t chunk = len - *pos > (1u << 20) ? (1u << 20) : len - *pos;
            ssize_t n = send(p->fd, data + *pos, chunk, MSG_NOSIGNAL);
            if (n > 0) {
                *pos += (size_t)n;
                continue;
            }
            if (n < 0 && errno == EINTR) continue;
            if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
            p->send_error = n < 0 ? errno : EIO;
            break;
        }
        if (*pos == len) p->last = hp_now_ms();
    }
}

/* Sends data while reading. Returns HP_IO_OK when all was sent. */
static hp_io hp_pump_send(hp_pump *p, const void *data, size_t len, long long until)
{
    size_t pos = 0;
    while (pos < len) {
        if (p->send_error || p->closed) return HP_IO_EOF;
        if (hp_now_ms() >= until) return HP_IO_TIMEOUT;
        hp_pump_once(p, data, len, &pos, until, 100);
    }
    p->last = hp_now_ms();
    return HP_IO_OK;
}

/* Reads until the stream has been quiet for idle_ms (and has at least want bytes, or has been
 * quiet for patience_ms), the peer closed, or until. */
static hp_io hp_pump_quiet(hp_pump *p, int idle_ms, size_t want, int patience_ms, long long until)
{
    for (;;) {
        if (p->closed) return HP_IO_EOF;
        long long now = hp_now_ms();
        long long quiet = now - p->last;
        if (quiet >= idle_ms && (p->out->len >= want || quiet >= patience_ms)) return HP_IO_OK;
        if (now >= until) return HP_IO_TIMEOUT;
        long long need = (p->out->len >= want ? idle_ms : patience_ms) - quiet;
        if (need < 1) need = 1;
        hp_pump_once(p, NULL, 0, NULL, until, (int)(need > 100 ? 100 : need));
    }
}

hp_io hp_send_all(int fd, const void *data, size_t n, int timeout_ms)
{
    const char *p = data;
    size_t pos = 0;
    long long until = hp_now_ms() + timeout_ms;
    while (pos < n) {
        ssize_t w = send(fd, p + pos, n - pos, MSG_NOSIGNAL);
        if (w > 0) {
            pos += (size_t)w;
            continue;
        }
        if (w < 0 && errno == EINTR) continue;
        if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            int ev = hp_wait_fd(fd, POLLOUT, until);
            if (ev == 0) return HP_IO_TIMEOUT;
            if (ev < 0) return HP_IO_ERROR;
            continue;
        }
        if (w < 0 && (errno == EPIPE || errno == ECONNRESET)) return HP_IO_EOF;
        return HP_IO_ERROR;
    }
    return HP_IO_OK;
}

/* Reads until cond(b) holds, the peer closes or the deadline passes. */
static hp_io hp_read_cond(int fd, hp_buf *b, long long until,
                          int (*cond)(const hp_buf *b, const void *arg), const void *arg)
{
    hp_pump p = { .fd = fd, .out = b, .last = hp_now_ms() };
    for (;;) {
        if (cond(b, arg)) return HP_IO_OK;
        if (p.closed) return p.error ? (errno = p.error, HP_IO_ERROR) : HP_IO_EOF;
        if (hp_now_ms() >= until) return HP_IO_TIMEOUT;
        hp_pump_once(&p, NULL, 0, NULL, until, 100);
    }
}

static int hp_cond_len(const hp_buf *b, const void *arg)
{
    return b->len >= *(const size_t *)arg;
}

hp_io hp_read_n(int fd, hp_buf *b, size_t n, int timeout_ms)
{
    return hp_read_cond(fd, b, hp_now_ms() + timeout_ms, hp_cond_len, &n);
}

struct hp_needle {
    size_t from;
    const char *text;
};

static int hp_cond_needle(const hp_buf *b, const void *arg)
{
    const struct hp_needle *nd = arg;
    return hp_buf_find(b, nd->from, nd->text, strlen(nd->text)) != (size_t)-1;
}

hp_io hp_read_until(int fd, hp_buf *b, size_t from, const char *needle, int timeout_ms)
{
    struct hp_needle nd = { from, needle };
    return hp_read_cond(fd, b, hp_now_ms() + timeout_ms, hp_cond_needle, &nd);
}

static int hp_cond_never(const hp_buf *b, const void *arg)
{
    (void)b; (void)arg;
    return 0;
}

hp_io hp_read_eof(int fd, hp_buf *b, int deadline_ms)
{
    hp_io r = hp_read_cond(fd, b, hp_now_ms() + deadline_ms, hp_cond_never, NULL);
    return r == HP_IO_ERROR && errno == ECONNRESET ? HP_IO_EOF : r;
}

hp_io hp_read_idle(int fd, hp_buf *b, int idle_ms, int deadline_ms)
{
    hp_pump p = { .fd = fd, .out = b, .last = hp_now_ms() };
    return hp_pump_quiet(&p, idle_ms, 0, idle_ms, hp_now_ms() + deadline_ms);
}

hp_io hp_exchange(int fd, const void *req, size_t len, hp_buf *out, int idle_ms, int deadline_ms,
                  int *closed)
{
    long long until = hp_now_ms() + deadline_ms;
    hp_pump p = { .fd = fd, .out = out, .last = hp_now_ms() };
    hp_io r = hp_pump_send(&p, req, len, until);
    if (r != HP_IO_TIMEOUT) r = hp_pump_quiet(&p, idle_ms, 0, idle_ms, until);
    if (closed) *closed = p.closed;
    return r;
}

/* ---- control commands ------------------------------------------------------------------ */

redisContext *hp_redis_connect(const hp_proc *p)
{
    hp_init();
    struct timeval tv = { HP_CMD_TIMEOUT_S, 0 };
    redisContext *c;
    if (p->port == 0 && p->unix_path[0] != '\0') c = redisConnectUnixWithTimeout(p->unix_path, tv);
    else c = redisConnectWithTimeout("127.0.0.1", p->port, tv);
    if (c == NULL || c->err) {
        diag("%s: cannot connect: %s", p->name, c ? c->errstr : "out of memory");
        redisFree(c);
        return NULL;
    }
    redisSetTimeout(c, tv);
    if (p->password[0] != '\0') {
        redisReply *r = redisCommand(c, "AUTH %s", p->password);
        int good = r != NULL && r->type != REDIS_REPLY_ERROR;
        if (!good) diag("%s: AUTH failed: %s", p->name, r ? r->str : c->errstr);
        freeReplyObject(r);
        if (!good) {
            redisFree(c);
            return NULL;
        }
    }
    return c;
}

static redisReply *hp_vcmd(const hp_proc *p, const char *fmt, va_list ap)
{
    redisContext *c = hp_redis_connect(p);
    if (c == NULL) return NULL;
    redisReply *r = redisvCommand(c, fmt, ap);
    if (r == NULL) diag("%s: \"%s\" failed: %s", p->name, fmt, c->errstr);
    redisFree(c);
    return r;
}

redisReply *hp_cmd(const hp_proc *p, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    redisReply *r = hp_vcmd(p, fmt, ap);
    va_end(ap);
    return r;
}

int hp_cmd_ok(const hp_proc *p, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    redisReply *r = hp_vcmd(p, fmt, ap);
    va_end(ap);
    int good = r != NULL && r->type != REDIS_REPLY_ERROR;
    if (r != NULL && r->type == REDIS_REPLY_ERROR) diag("%s: \"%s\": %s", p->name, fmt, r->str);
    freeReplyObject(r);
    return good;
}

long long hp_cmd_int(const hp_proc *p, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    redisReply *r = hp_vcmd(p, fmt, ap);
    va_end(ap);
    long long v = r != NULL && r->type == REDIS_REPLY_INTEGER ? r->integer : LLONG_MIN;
    freeReplyObject(r);
    return v;
}

long long hp_info_int(const hp_proc *redis, const char *field)
{
    redisReply *r = hp_cmd(redis, "INFO");
    long long v = LLONG_MIN;
    if (r != NULL && r->type == REDIS_REPLY_STRING) {
        size_t flen = strlen(field);
        for (const char *line = r->str; line != NULL && *line; ) {
            if (strncmp(line, field, flen) == 0 && line[flen] == ':') {
                v = strtoll(line + flen + 1, NULL, 10);
                break;
            }
            line = strchr(line, '\n');
            if (line) line++;
        }
    }
    freeReplyObject(r);
    return v;
}

int hp_wait_info(const hp_proc *redis, const char *field, long long want, int timeout_ms)
{
    long long until = hp_now_ms() + timeout_ms;
    long long v;
    do {
        v = hp_info_int(redis, field);
        if (v == want) return 1;
        hp_sleep_ms(10);
    } while (hp_now_ms() < until);
    diag("%s: INFO %s is %lld, not %lld, after %d ms", redis->name, field, v, want, timeout_ms);
    return 0;
}

/* ---- differential tests ---------------------------------------------------------------- */

void hp_side_free(hp_side *s)
{
    hp_buf_free(&s->out);
    hp_buf_free(&s->cmp);
}

struct hp_range {
    size_t from, to;
};

void hp_run_steps(const hp_proc *target, const hp_proc *upstream, const hp_step *steps,
                  const hp_diff_opts *opts, size_t want_len, hp_side *side)
{
    static const hp_diff_opts none;
    if (opts == NULL) opts = &none;
    int idle = opts->idle_ms > 0 ? opts->idle_ms : hp_idle_ms();
    int patience = opts->patience_ms > 0 ? opts->patience_ms : 3000;
    if (patience < idle) patience = idle;
    long long until = hp_now_ms() + (opts->deadline_ms > 0 ? opts->deadline_ms : 30000);
    int step_ms = opts->step_ms > 0 ? opts->step_ms : 5000;
    memset(side, 0, sizeof *side);
    hp_buf_append(&side->out, "", 0);

    struct hp_range skips[64];
    int nskips = 0;
    int fd = hp_connect_proc(target, HP_CONNECT_MS);
    if (fd < 0) {
        side->connect_error = errno;
        side->closed = 1;
        diag("%s: cannot connect: %s", target->name, strerror(errno));
    } else {
        hp_pump p = { .fd = fd, .out = &side->out, .last = hp_now_ms() };
        size_t match_from = 0;
        int derailed = 0;          /* a wait step gave up: skip the later ones */
        for (int i = 0; steps[i].kind != HP_STEP_END; i++) {
            const hp_step *s = &steps[i];
            hp_io r = HP_IO_OK;
            long long step_until = hp_now_ms() + step_ms;
            if (step_until > until) step_until = until;
            switch (s->kind) {
            case HP_STEP_SEND:
                r = hp_pump_send(&p, s->data, s->len, until);
                break;
            case HP_STEP_SEND_SKIP: {
                size_t from = side->out.len;
                r = hp_pump_send(&p, s->data, s->len, until);
                if (r == HP_IO_OK) r = hp_pump_quiet(&p, idle, 1, patience, until);
                if (nskips < 64) skips[nskips++] = (struct hp_range){ from, side->out.len };
                break;
            }
            case HP_STEP_PAUSE: {
                long long stop = hp_now_ms() + s->ms;
                while (hp_now_ms() < stop && hp_now_ms() < until)
                    hp_pump_once(&p, NULL, 0, NULL, stop < until ? stop : until, 100);
                break;
            }
            case HP_STEP_WAIT_BYTES:
                while (!derailed && side->out.len < s->len && !p.closed && hp_now_ms() < step_until)
                    hp_pump_once(&p, NULL, 0, NULL, step_until, 100);
                if (side->out.len < s->len) {
                    if (!derailed)
                        diag("%s: step %d: waited for %zu bytes, got %zu", target->name, i,
                             s->len, side->out.len);
                    r = p.closed ? HP_IO_EOF : HP_IO_TIMEOUT;
                }
                break;
            case HP_STEP_WAIT_MATCH: {
                const char *text = s->data;
                size_t tlen = strlen(text), at, scan = match_from;
                /* Each pass searches only the bytes that arrived since the last one (with an
                 * overlap of tlen - 1), so that waiting behind 64 MiB stays linear. */
                while ((at = hp_buf_find(&side->out, scan, text, tlen)) == (size_t)-1 &&
                       !derailed && !p.closed && hp_now_ms() < step_until) {
                    if (side->out.len >= tlen && side->out.len - tlen + 1 > scan)
                        scan = side->out.len - tlen + 1;
                    hp_pump_once(&p, NULL, 0, NULL, step_until, 100);
                }
                if (at == (size_t)-1) at = hp_buf_find(&side->out, scan, text, tlen);
                if (at == (size_t)-1) {
                    if (!derailed)
                        diag("%s: step %d: \"%s\" did not arrive", target->name, i,
                             hp_esc(text, tlen, 80));
                    r = p.closed ? HP_IO_EOF : HP_IO_TIMEOUT;
                } else {
                    match_from = at + tlen;
                }
                break;
            }
            case HP_STEP_WAIT_QUIET:
                r = hp_pump_quiet(&p, s->ms, 0, s->ms, until);
                break;
            case HP_STEP_CALL:
                s->fn(target, upstream, s->arg);
                break;
            case HP_STEP_END:
                break;
            }
            if (r == HP_IO_TIMEOUT) {
                side->timed_out = 1;
                if (!derailed) diag("%s: step %d did not complete in time", target->name, i);
                if (s->kind == HP_STEP_WAIT_BYTES || s->kind == HP_STEP_WAIT_MATCH) derailed = 1;
            }
        }
        if (hp_pump_quiet(&p, idle, want_len, patience, until) == HP_IO_TIMEOUT) {
            side->timed_out = 1;
            diag("%s: the reply stream did not end before the deadline (%zu bytes)",
                 target->name, side->out.len);
        }
        side->closed = p.closed;
        side->send_error = p.send_error;
        close(fd);
    }

    /* What is compared: the output without the skipped ranges, normalised. */
    hp_buf_append(&side->cmp, "", 0);
    size_t at = 0;
    for (int i = 0; i < nskips; i++) {
        if (skips[i].from > at) hp_buf_append(&side->cmp, side->out.data + at, skips[i].from - at);
        if (skips[i].to > at) at = skips[i].to;
    }
    if (side->out.len > at) hp_buf_append(&side->cmp, side->out.data + at, side->out.len - at);
    if (opts->normalise) opts->normalise(&side->cmp, opts->norm_arg);
}

int hp_diff_ex(const hp_proc *redis, const hp_proc *proxy, const char *name,
               const hp_step *steps, const hp_diff_opts *opts, hp_side *direct, hp_side *proxied)
{
    static const hp_diff_opts none;
    if (opts == NULL) opts = &none;
    hp_side d, p;
    if (!opts->no_flush && !hp_cmd_ok(redis, "FLUSHALL")) diag("%s: FLUSHALL failed", name);
    hp_run_steps(redis, redis, steps, opts, opts->min_bytes, &d);
    if (d.timed_out) diag("%s: the direct side did not complete: the test itself may be wrong", name);
    if (!opts->no_flush && !hp_cmd_ok(redis, "FLUSHALL")) diag("%s: FLUSHALL failed", name);
    size_t want = d.out.len > opts->min_bytes ? d.out.len : opts->min_bytes;
    hp_run_steps(proxy, redis, steps, opts, want, &p);

    /* The proxy's stream going on where Redis's stopped, or Redis not closing where the proxy
     * did, is what a starved Redis looks like on a loaded machine: a pause taken for the end
     * of the stream. Ask Redis once more, patiently, before calling it a difference. */
    int longer = p.cmp.len > d.cmp.len && memcmp(p.cmp.data, d.cmp.data, d.cmp.len) == 0;
    int later_close = p.cmp.len == d.cmp.len && p.closed && !d.closed &&
                      memcmp(p.cmp.data, d.cmp.data, d.cmp.len) == 0;
    if ((longer || later_close) && !opts->no_retry) {
        diag("%s: Redis's stream ended first (%zu bytes, proxy %zu): asking Redis again, "
             "more patiently", name, d.out.len, p.out.len);
        hp_diff_opts again = *opts;
        again.idle_ms = 5 * (opts->idle_ms > 0 ? opts->idle_ms : hp_idle_ms());
        if (!opts->no_flush && !hp_cmd_ok(redis, "FLUSHALL")) diag("%s: FLUSHALL failed", name);
        hp_side_free(&d);
        hp_run_steps(redis, redis, steps, &again, p.out.len, &d);
    }

    int same = is_bytes(p.cmp.data, p.cmp.len, d.cmp.data, d.cmp.len, "%s: same bytes", name);
    if (!same)
        diag("%s: proxy sent %zu bytes%s, Redis %zu%s", name, p.out.len,
             p.closed ? " and closed" : "", d.out.len, d.closed ? " and closed" : "");
    same &= is_int(p.closed, d.closed, "%s: same close (1 = closed)", name);
    if (hp_verbose())
        diag("%s: Redis sent%s: \"%s\"", name, d.closed ? " and closed" : "",
             hp_esc(d.out.data, d.out.len, 3000));
    if (direct) *direct = d;
    else hp_side_free(&d);
    if (proxied) *proxied = p;
    else hp_side_free(&p);
    return same;
}

int hp_diff(const hp_proc *redis, const hp_proc *proxy, const char *name,
            const hp_step *steps, const hp_diff_opts *opts)
{
    return hp_diff_ex(redis, proxy, name, steps, opts, NULL, NULL);
}

int hp_diff_bytes(const hp_proc *redis, const hp_proc *proxy, const char *name,
                  const void *req, size_t len, const hp_diff_opts *opts)
{
    const hp_step steps[] = { HP_SENDN(req, len), HP_END };
    return hp_diff(redis, proxy, name, steps, opts);
}

void hp_mask_after(hp_buf *b, const char *marker, const char *charset)
{
    size_t mlen = strlen(marker);
    if (b->data == NULL || mlen == 0) return;
    hp_buf out = {0};
    size_t at = 0, pos;
    while ((pos = hp_buf_find(b, at, marker, mlen)) != (size_t)-1) {
        size_t start = pos + mlen, end = start;
        while (end < b->len && b->data[end] != '\0' && strchr(charset, b->data[end]) != NULL) end++;
        hp_buf_append(&out, b->data + at, start - at);
        if (end > start) hp_buf_append(&out, "#", 1);
        at = end;
    }
    hp_buf_append(&out, b->data + at, b->len - at);
    hp_buf_free(b);
    *b = out;
}

void hp_norm_hello(hp_buf *b, void *arg)
{
    (void)arg;
    hp_mask_after(b, "\r\n$2\r\nid\r\n:", "0123456789");
}

void hp_norm_monitor(hp_buf *b, void *arg)
{
    (void)arg;
    hp_mask_after(b, "\r\n+", "0123456789.");
    hp_mask_after(b, " 127.0.0.1:", "0123456789");
}

void hp_norm_digits(hp_buf *b, void *arg)
{
    (void)arg;
    hp_buf out = {0};
    hp_buf_append(&out, "", 0);
    for (size_t i = 0; i < b->len; ) {
        if (b->data[i] >= '0' && b->data[i] <= '9') {
            while (i < b->len && b->data[i] >= '0' && b->data[i] <= '9') i++;
            hp_buf_append(&out, "#", 1);
        } else {
            hp_buf_append(&out, b->data + i, 1);
            i++;
        }
    }
    hp_buf_free(b);
    *b = out;
}

/* ---- other programs -------------------------------------------------------------------- */

static void hp_set_nonblock(int fd)
{
    int fl = fcntl(fd, F_GETFL);
    if (fl >= 0) fcntl(fd, F_SETFL, fl | O_NONBLOCK);
}

/* Reads what is available from fd into b (NULL discards). Returns 0 at EOF, 1 otherwise. */
static int hp_drain_fd(int fd, hp_buf *b)
{
    char chunk[65536];
    for (;;) {
        ssize_t n = read(fd, chunk, sizeof chunk);
        if (n > 0) {
            if (b) hp_buf_append(b, chunk, (size_t)n);
            continue;
        }
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return 1;
        return 0;   /* EOF, or EIO on a pty whose other side closed */
    }
}

int hp_run(const char *const *argv, const void *in, size_t inlen, hp_buf *out, hp_buf *err,
           int timeout_ms)
{
    hp_init();
    int pin[2], pout[2], perr[2];
    if (pipe2(pin, O_CLOEXEC) != 0) return -1;
    if (pipe2(pout, O_CLOEXEC) != 0 || pipe2(perr, O_CLOEXEC) != 0) hp_bail("pipe: %s", strerror(errno));
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid < 0) hp_bail("fork: %s", strerror(errno));
    if (pid == 0) {
        hp_child_setup();
        dup2(pin[0], STDIN_FILENO);
        dup2(pout[1], STDOUT_FILENO);
        dup2(perr[1], STDERR_FILENO);
        hp_close_fds_from(3);
        execvp(argv[0], (char *const *)argv);
        dprintf(STDERR_FILENO, "harness: cannot run %s: %s\n", argv[0], strerror(errno));
        _exit(127);
    }
    hp_child_add(pid);
    close(pin[0]);
    close(pout[1]);
    close(perr[1]);
    hp_set_nonblock(pin[1]);
    hp_set_nonblock(pout[0]);
    hp_set_nonblock(perr[0]);
    const char *data = in;
    size_t pos = 0;
    int win = pin[1], rout = pout[0], rerr = perr[0];
    if (inlen == 0) {
        close(win);
        win = -1;
    }
    long long until = hp_now_ms() + timeout_ms;
    int timed_out = 0;
    while (rout >= 0 || rerr >= 0 || win >= 0) {
        long long left = until - hp_now_ms();
        if (left <= 0) {
            timed_out = 1;
            break;
        }
        struct pollfd pf[3] = {
            { rout, POLLIN, 0 }, { rerr, POLLIN, 0 }, { win, POLLOUT, 0 },
        };
        int r = poll(pf, 3, (int)(left > 100 ? 100 : left));
        if (r < 0 && errno != EINTR) break;
        if (r <= 0) continue;
        if (rout >= 0 && pf[0].revents && !hp_drain_fd(rout, out)) {
            close(rout);
            rout = -1;
        }
        if (rerr >= 0 && pf[1].revents && !hp_drain_fd(rerr, err)) {
            close(rerr);
            rerr = -1;
        }
        if (win >= 0 && pf[2].revents) {
            ssize_t n = write(win, data + pos, inlen - pos > 65536 ? 65536 : inlen - pos);
            if (n > 0) pos += (size_t)n;
            if ((n < 0 && errno != EAGAIN && errno != EINTR) || pos == inlen) {
                close(win);
                win = -1;
            }
        }
    }
    if (rout >= 0) close(rout);
    if (rerr >= 0) close(rerr);
    if (win >= 0) close(win);
    hp_proc tmp = { .pid = pid, .exit_code = -2 };
    if (timed_out || hp_reap(&tmp, (int)(until - hp_now_ms() > 0 ? until - hp_now_ms() : 0)) != 0) {
        diag("%s did not finish within %d ms: killing it", argv[0], timeout_ms);
        kill(pid, SIGKILL);
        hp_reap(&tmp, 5000);
        return -1;
    }
    return tmp.exit_code;
}

int hp_pty_spawn(hp_pty *t, const char *const *argv, const char *const *env, int rows, int cols)
{
    hp_init();
    memset(t, 0, sizeof *t);
    hp_buf_append(&t->out, "", 0);
    struct winsize ws = { .ws_row = (unsigned short)rows, .ws_col = (unsigned short)cols };
    fflush(stdout);
    fflush(stderr);
    int master;
    pid_t pid = forkpty(&master, NULL, NULL, &ws);
    if (pid < 0) {
        diag("forkpty: %s", strerror(errno));
        return -1;
    }
    if (pid == 0) {
        hp_child_setup();
        hp_close_fds_from(3);
        for (int i = 0; env != NULL && env[i] != NULL; i++) putenv((char *)env[i]);
        execvp(argv[0], (char *const *)argv);
        dprintf(STDERR_FILENO, "harness: cannot run %s: %s\n", argv[0], strerror(errno));
        _exit(127);
    }
    fcntl(master, F_SETFD, FD_CLOEXEC);
    hp_set_nonblock(master);
    hp_child_add(pid);
    t->pid = pid;
    t->fd = master;
    return 0;
}

int hp_pty_write(hp_pty *t, const char *text)
{
    size_t len = strlen(text), pos = 0;
    long long until = hp_now_ms() + 5000;
    while (pos < len) {
        ssize_t n = write(t->fd, text + pos, len - pos);
        if (n > 0) {
            pos += (size_t)n;
            continue;
        }
        if (n < 0 && errno != EAGAIN && errno != EINTR) return -1;
        if (hp_wait_fd(t->fd, POLLOUT, until) <= 0) return -1;
        hp_drain_fd(t->fd, &t->out);
    }
    return 0;
}

int hp_pty_expect(hp_pty *t, const char *needle, int timeout_ms)
{
    long long until = hp_now_ms() + timeout_ms;
    size_t nlen = strlen(needle);
    for (;;) {
        size_t at = hp_buf_find(&t->out, t->mark, needle, nlen);
        if (at != (size_t)-1) {
            t->mark = at + nlen;
            return 1;
        }
        int ev = hp_wait_fd(t->fd, POLLIN, until);
        if (ev <= 0) return 0;
        if (!hp_drain_fd(t->fd, &t->out)) {
            at = hp_buf_find(&t->out, t->mark, needle, nlen);
            if (at != (size_t)-1) t->mark = at + nlen;
            return at != (size_t)-1;
        }
    }
}

void hp_pty_drain(hp_pty *t, int idle_ms, int deadline_ms)
{
    long long until = hp_now_ms() + deadline_ms;
    for (;;) {
        long long left = until - hp_now_ms();
        if (left <= 0) return;
        int ev = hp_wait_fd(t->fd, POLLIN, hp_now_ms() + (idle_ms < left ? idle_ms : left));
        if (ev <= 0) return;
        if (!hp_drain_fd(t->fd, &t->out)) return;
    }
}

int hp_pty_close(hp_pty *t, int timeout_ms)
{
    long long until = hp_now_ms() + timeout_ms;
    hp_proc tmp = { .pid = t->pid, .exit_code = -2 };
    int code = -1;
    while (t->pid > 0) {
        if (hp_reap(&tmp, 0) == 0) {
            code = tmp.exit_code;
            break;
        }
        if (hp_now_ms() >= until) {
            diag("pty program %d did not exit within %d ms: killing it", (int)t->pid, timeout_ms);
            kill(t->pid, SIGKILL);
            hp_reap(&tmp, 5000);
            code = -1;
            break;
        }
        if (hp_wait_fd(t->fd, POLLIN, hp_now_ms() + 20) > 0) hp_drain_fd(t->fd, &t->out);
    }
    hp_drain_fd(t->fd, &t->out);
    close(t->fd);
    t->fd = -1;
    t->pid = 0;
    return code;
}
