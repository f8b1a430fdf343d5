/* Integration test harness: redis-server and lockproxy processes, their ports, start-up,
 * signals, exit and logs (see harness.h). */
#define _GNU_SOURCE     /* memmem, pipe2, program_invocation_short_name, nftw */
#include "lib/hp_internal.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static int hp_nredis, hp_nproxy;
static int hp_used_ports[256];
static int hp_nused_ports;

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

int hp_reap(hp_proc *p, int block_ms)
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

