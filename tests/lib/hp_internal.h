/* What the files of the harness library (tests/lib/) share; not for tests, which include
 * lib/harness.h only. The files, by job:
 *
 *   setup.c   temp dir, child registry, cleanup at exit and on signals, watchdog, clock and
 *             environment
 *   buf.c     hp_buf and hp_esc
 *   proc.c    redis-server and lockproxy processes: ports, start, stop, signals, logs
 *   client.c  raw sockets (connect, send, read with deadlines) and hiredis control commands
 *   diff.c    differential runs and normalisers
 *   pty.c     other programs: hp_run and programs on a pseudo-terminal */
#ifndef LP_HP_INTERNAL_H
#define LP_HP_INTERNAL_H

#include <sys/types.h>

#include "lib/harness.h"

#ifndef LOCKPROXY_BIN
#define LOCKPROXY_BIN "build/lockproxy"
#endif

#define HP_MAX_CHILDREN 64
#define HP_MAX_PROCS 32
#define HP_READY_MS 15000          /* a server must answer PING within this */
#define HP_CONNECT_MS 5000
#define HP_CMD_TIMEOUT_S 5

/* ---- setup.c ---- */

extern char hp_dir[1024];
extern pid_t hp_parent;
/* Every child we started and have not reaped: read by the signal handlers. */
extern volatile pid_t hp_children[HP_MAX_CHILDREN];
extern hp_proc *hp_procs[HP_MAX_PROCS];
extern int hp_nprocs;

void hp_child_add(pid_t pid);
void hp_child_del(pid_t pid);
/* Async-signal-safe: SIGKILLs every child still on the list. */
void hp_kill_children(void);
/* The value of an environment variable as a non-negative int, or dflt. */
int hp_env_int(const char *name, int dflt);
int hp_verbose(void);              /* LP_TEST_VERBOSE */
int hp_stand_in(void);             /* LP_TEST_PROXY_IS_REDIS */
/* Closes every inherited descriptor from lowfd up (the child side of a fork). */
void hp_close_fds_from(int lowfd);
/* In a fresh child: die with the parent (which covers _exit from bail_out and crashes). */
void hp_child_setup(void);

/* ---- buf.c ---- */

/* Makes room for extra more bytes and the NUL after them. */
void hp_buf_reserve(hp_buf *b, size_t extra);

/* ---- proc.c ---- */

/* Waits up to block_ms for p to exit. Returns 0 when reaped (p->exit_code set), -1 when it is
 * still running. */
int hp_reap(hp_proc *p, int block_ms);

/* ---- client.c ---- */

/* Waits until fd has one of events or the time until (hp_now_ms()) passes. Returns the
 * revents, 0 on timeout, -1 on error. */
int hp_wait_fd(int fd, short events, long long until);

/* One connection's traffic: what was received, whether the peer closed. */
typedef struct hp_pump {
    int fd;
    hp_buf *out;
    int closed;            /* EOF or reset seen */
    int error;             /* errno of a read error other than reset */
    int send_error;        /* errno of a failed send */
    long long last;        /* last activity: bytes received or a send completed */
} hp_pump;

/* Waits at most until `until` (and at most wait_ms) for something to read, or for room to
 * write data[*pos..len) when data is not NULL; does what it can. */
void hp_pump_once(hp_pump *p, const char *data, size_t len, size_t *pos, long long until,
                  int wait_ms);
/* Sends data while reading. Returns HP_IO_OK when all was sent. */
hp_io hp_pump_send(hp_pump *p, const void *data, size_t len, long long until);
/* Reads until the stream has been quiet for idle_ms (and has at least want bytes, or has been
 * quiet for patience_ms), the peer closed, or until. */
hp_io hp_pump_quiet(hp_pump *p, int idle_ms, size_t want, int patience_ms, long long until);

#endif
