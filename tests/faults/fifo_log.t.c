/* Fault: the audit log is a FIFO whose reader goes away, then SIGHUP asks for a reopen.
 *
 * A blocking open() of a FIFO for writing waits until a reader comes; on the event loop it
 * would stop every client. The proxy reopens on the thread pool with O_NONBLOCK, so:
 *   - with a reader, the proxy starts and lock events reach the FIFO;
 *   - the reader closes; lock events go on (their lines are dropped: EPIPE), clients served;
 *   - SIGHUP: the reopen fails at once (ENXIO), the proxy says so and keeps the old file;
 *     20 clients each get PONG and a lock round trip (SET NX / DEL) answers as it should;
 *   - a new reader appears and SIGHUP again: the reopen succeeds and new lock events reach
 *     the new reader. */
#include "faults.h"

#include <signal.h>
#include <sys/stat.h>

static int wait_log(const hp_proc *p, const char *text, int timeout_ms)
{
    long long until = hp_now_ms() + timeout_ms;
    hp_buf log = {0};
    int found = 0;
    do {
        if (hp_log_read(p, &log) == 0 && hp_buf_find(&log, 0, text, strlen(text)) != (size_t)-1)
            found = 1;
        else
            hp_sleep_ms(20);
    } while (!found && hp_now_ms() < until);
    hp_buf_free(&log);
    return found;
}

/* Reads from the non-blocking FIFO reader until text shows up or the time is over. */
static int fifo_sees(int fd, const char *text, int timeout_ms)
{
    hp_buf got = {0};
    long long until = hp_now_ms() + timeout_ms;
    int found = 0;
    while (!found && hp_now_ms() < until) {
        char b[4096];
        ssize_t n = read(fd, b, sizeof b);
        if (n > 0) hp_buf_append(&got, b, (size_t)n);
        else hp_sleep_ms(20);
        found = hp_buf_find(&got, 0, text, strlen(text)) != (size_t)-1;
    }
    hp_buf_free(&got);
    return found;
}

int main(void)
{
    fl_init(120);
    plan_lazy();
    hp_proc *redis = hp_redis_start(NULL);
    const char *fifo = fl_tmp("audit.fifo");
    unlink(fifo);
    if (mkfifo(fifo, 0600) != 0) hp_bail("mkfifo %s: %s", fifo, strerror(errno));
    int reader = open(fifo, O_RDONLY | O_NONBLOCK);
    if (reader < 0) hp_bail("open %s: %s", fifo, strerror(errno));

    const char *pol = fl_tmp("fifo.policy");
    fl_write_file(pol, "rule lock: enforce ttl=30s\n");
    const char *extra[] = {"--policy", pol, "--log", fifo, NULL};
    hp_proc *px = hp_proxy_start(redis, extra);

    is_int(hp_cmd_int(px, "SETNX lock:a t"), 1, "SETNX through the proxy");
    ok(fifo_sees(reader, "\"key\":\"lock:a\"", 5000), "its event reaches the FIFO's reader");

    close(reader);   /* the reader leaves */
    is_int(hp_cmd_int(px, "SETNX lock:b t"), 1, "after the reader left, lock commands are served");
    hp_signal(px, SIGHUP);
    ok(wait_log(px, "not reopened", 5000), "SIGHUP: the reopen fails at once and the proxy says so");

    int pong = 0, locks = 0;
    for (int i = 0; i < 20; i++) {
        redisReply *r = hp_cmd(px, "PING");
        if (r != NULL && r->type == REDIS_REPLY_STATUS && strcmp(r->str, "PONG") == 0) pong++;
        freeReplyObject(r);
        char key[32];
        snprintf(key, sizeof key, "lock:c%d", i);
        redisContext *c = hp_redis_connect(px);
        if (c == NULL) continue;
        redisReply *s = redisCommand(c, "SET %s tok NX PX 60000", key);
        redisReply *d = redisCommand(c, "DEL %s", key);
        if (s && s->type == REDIS_REPLY_STATUS && d && d->type == REDIS_REPLY_INTEGER && d->integer == 1) locks++;
        freeReplyObject(s);
        freeReplyObject(d);
        redisFree(c);
    }
    is_int(pong, 20, "20 clients get PONG after the SIGHUP");
    is_int(locks, 20, "20 lock round trips (SET NX PX, DEL) answer +OK and :1");

    reader = open(fifo, O_RDONLY | O_NONBLOCK);
    if (reader < 0) hp_bail("open %s: %s", fifo, strerror(errno));
    hp_signal(px, SIGHUP);
    /* The reopen is asynchronous: events are written until one reaches the new reader. */
    int seen = 0;
    for (int i = 0; i < 50 && !seen; i++) {
        char key[32];
        snprintf(key, sizeof key, "lock:d%d", i);
        hp_cmd_int(px, "SETNX %s t", key);
        seen = fifo_sees(reader, "\"key\":\"lock:d", 100);
    }
    ok(seen, "with a new reader, SIGHUP reopens the FIFO and events reach it");
    close(reader);
    is_int(hp_stop(px, 5000), 0, "the proxy exits 0");
    hp_stop(redis, 5000);
    unlink(fifo);
    return 0;
}
