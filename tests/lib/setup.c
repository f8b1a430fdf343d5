/* Integration test harness: the temp dir, the registry of children, cleanup at exit and on
 * signals, the watchdog, the clock and the environment (see harness.h). */
#define _GNU_SOURCE     /* memmem, pipe2, program_invocation_short_name, nftw */
#include "lib/hp_internal.h"

#include <errno.h>
#include <ftw.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* ---- state ----------------------------------------------------------------------------- */

static int hp_ready;
char hp_dir[1024];
pid_t hp_parent;
volatile pid_t hp_children[HP_MAX_CHILDREN];
hp_proc *hp_procs[HP_MAX_PROCS];
int hp_nprocs;
static int hp_watchdog_s = 240;

void hp_child_add(pid_t pid)
{
    for (int i = 0; i < HP_MAX_CHILDREN; i++) {
        if (hp_children[i] == 0) {
            hp_children[i] = pid;
            return;
        }
    }
}

void hp_child_del(pid_t pid)
{
    for (int i = 0; i < HP_MAX_CHILDREN; i++)
        if (hp_children[i] == pid) hp_children[i] = 0;
}

void hp_kill_children(void)
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

int hp_env_int(const char *name, int dflt)
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

int hp_verbose(void)
{
    return hp_env_int("LP_TEST_VERBOSE", 0) != 0;
}

int hp_stand_in(void)
{
    return hp_env_int("LP_TEST_PROXY_IS_REDIS", 0) != 0;
}

static int hp_rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st; (void)flag; (void)ftw;
    remove(path);
    return 0;
}

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

void hp_close_fds_from(int lowfd)
{
    long max = sysconf(_SC_OPEN_MAX);
    if (max < 0 || max > 65536) max = 65536;
    for (int fd = lowfd; fd < max; fd++) close(fd);
}

void hp_child_setup(void)
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
