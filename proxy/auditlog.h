/* The audit log writer: lines are queued in memory and written by libuv's thread pool
 * (uv_fs_write), one write in flight at a time, so a slow disk never blocks the loop.
 * The queue is bounded; past it lines are dropped and counted, and a log_dropped line says
 * how many once there is room again. */
#ifndef LP_AUDITLOG_H
#define LP_AUDITLOG_H

#include <stddef.h>
#include <uv.h>

#define LP_AUDITLOG_MAX_QUEUE (8 * 1024 * 1024)

typedef struct lp_auditlog lp_auditlog;

/* path NULL or "-": stderr. Returns NULL with a message in err when the file cannot be opened. */
lp_auditlog *lp_auditlog_open(uv_loop_t *loop, const char *path, char *err, size_t errlen);
void lp_auditlog_write(lp_auditlog *l, const char *line, size_t len);
/* Writes what is still queued (synchronously: this is for shutdown) and frees. */
void lp_auditlog_close(lp_auditlog *l);

#endif
