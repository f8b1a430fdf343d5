/* The audit log writer: JSON Lines to a file or stderr, without ever blocking the loop.
 *
 * Lines are appended to an in-memory queue and written by libuv's thread pool (uv_fs_write),
 * one write in flight at a time, the whole queue as the next batch when it completes: a slow
 * disk or a full pipe never blocks the loop. The queue is bounded (LP_AUDITLOG_MAX_QUEUE
 * bytes, counting the batch in flight); past it lines are dropped and counted, and a
 * {"ts":..,"event":"log_dropped","detail":"N lines dropped"} line says how many as soon as
 * there is room again. A descriptor that answers EAGAIN (a non-blocking pipe) is retried on a
 * short timer; a write error drops the batch (its lines count as dropped) and the writer
 * carries on. When nothing is queued the writer has no active handle or request, so it never
 * keeps the loop alive. */
#ifndef LP_AUDITLOG_H
#define LP_AUDITLOG_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#define LP_AUDITLOG_MAX_QUEUE (8 * 1024 * 1024)
/* How long lp_auditlog_close() waits for a write in flight plus the final flush. */
#define LP_AUDITLOG_CLOSE_MS 2000

typedef struct lp_auditlog lp_auditlog;

/* Opens the log: path NULL or "-" is stderr (not closed at the end); any other path is
 * opened O_WRONLY|O_APPEND|O_CREAT, mode 0644 (before umask). Returns NULL with a message
 * ("log PATH: reason") in err when the file cannot be opened or memory runs out. */
lp_auditlog *lp_auditlog_open(uv_loop_t *loop, const char *path, char *err, size_t errlen);

/* Queues one line (len bytes; a '\n' is added when it does not end with one) and starts a
 * write when none is in flight. Never blocks and never fails: a line that does not fit is
 * counted as dropped. Accepts NULL l (does nothing). */
void lp_auditlog_write(lp_auditlog *l, const char *line, size_t len);

/* Reopens the file by its path (after log rotation), without blocking the loop: the open
 * runs on libuv's thread pool with O_NONBLOCK (a FIFO without a reader fails at once). Once
 * it is open, lines go to the new file; the write in flight finishes on the old one, which
 * is closed after it. When the open fails the old file is kept and a line saying so goes to
 * stderr. Returns 0 when the reopen was started (or there is nothing to reopen: stderr, or
 * one already in flight), -1 with a message in err when it could not be started. */
int lp_auditlog_reopen(lp_auditlog *l, char *err, size_t errlen);

/* Lines dropped so far (reported or not). */
uint64_t lp_auditlog_dropped(const lp_auditlog *l);

/* Writes out what is queued, closes the file and frees l. For shutdown: call it outside any
 * loop callback (it may run the loop to let the write in flight finish), e.g. after uv_run()
 * returned. Gives up after LP_AUDITLOG_CLOSE_MS (a pipe nobody reads): what is left is lost,
 * and if a write is still in flight its memory is left for process exit. Accepts NULL. */
void lp_auditlog_close(lp_auditlog *l);

#endif
