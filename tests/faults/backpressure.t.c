/* Fault: a client that asks for a lot and never reads. It pipelines GET of a 1 MiB value
 * 1,000 times (about 1 GiB of replies) and reads nothing. Backpressure must keep the proxy
 * small: once the client's socket and the proxy's write queue are full (high-water, 1mb by
 * default), the proxy stops reading Redis, and the rest waits in Redis's output buffer.
 *
 *   - the proxy's peak resident memory (VmHWM) stays well under 128 MiB;
 *   - Redis holds the backlog (its client output buffer grows), which shows the proxy really
 *     stopped reading rather than absorbing the replies;
 *   - when the client goes, the proxy closes the upstream connection, Redis frees its
 *     buffer, and the proxy's resident memory falls back near where it started;
 *   - a second client that does read gets every byte of all 1,000 replies. */
#include "faults.h"

#define VALUE_LEN (1024 * 1024)
#define NGETS 1000
#define LIMIT_KB (128 * 1024)

static const char get_big[] = "*2\r\n$3\r\nGET\r\n$3\r\nbig\r\n";

int main(void)
{
    fl_init(100);
    plan_lazy();
    hp_proc *redis = hp_redis_start(NULL);
    hp_proc *px = hp_proxy_start(redis, NULL);

    char *value = malloc(VALUE_LEN);
    if (value == NULL)
        hp_bail("out of memory");
    for (size_t i = 0; i < VALUE_LEN; i++)
        value[i] = (char)('a' + i % 26);
    ok(hp_cmd_ok(redis, "SET big %b", value, (size_t)VALUE_LEN), "a 1 MiB value is stored");
    free(value);

    long long base = fl_status_kb(px->pid, "VmRSS");
    diag("proxy VmRSS before: %lld KiB", base);

    hp_buf req = {0};
    for (int i = 0; i < NGETS; i++)
        hp_buf_append(&req, get_big, sizeof(get_big) - 1);

    /* The client that never reads. */
    int fd = hp_connect_proc(px, 5000);
    ok(fd >= 0, "client connected");
    ok(hp_send_all(fd, req.data, req.len, 10000) == HP_IO_OK, "%d GETs of the 1 MiB value sent", NGETS);

    /* Let the pipes fill up: watch until Redis holds a large output buffer, then a while. */
    long long max_rss = 0, redis_buf = 0, until = hp_now_ms() + 15000, settled = 0;
    while (hp_now_ms() < until) {
        long long rss = fl_status_kb(px->pid, "VmRSS");
        if (rss > max_rss)
            max_rss = rss;
        redis_buf = hp_info_int(redis, "client_recent_max_output_buffer");
        if (redis_buf > 100LL * VALUE_LEN && settled == 0)
            settled = hp_now_ms();
        if (settled && hp_now_ms() - settled > 1000)
            break;
        hp_sleep_ms(100);
    }
    long long hwm = fl_status_kb(px->pid, "VmHWM");
    diag("while the client does not read: proxy VmRSS up to %lld KiB, VmHWM %lld KiB; Redis "
         "output buffer up to %lld MiB", max_rss, hwm, redis_buf >> 20);
    ok(redis_buf > 100LL * VALUE_LEN, "Redis holds the replies the proxy does not take (%lld MiB)",
       redis_buf >> 20);
    ok(hwm > 0 && hwm < LIMIT_KB, "proxy peak VmHWM %lld KiB is under %d MiB", hwm, LIMIT_KB / 1024);
    ok(fl_alive(px), "the proxy is running");

    close(fd);
    ok(hp_wait_info(redis, "connected_clients", 1, 10000),
       "when the client goes, its upstream connection goes");
    long long after = -1;
    until = hp_now_ms() + 5000;
    do {
        hp_sleep_ms(100);
        after = fl_status_kb(px->pid, "VmRSS");
    } while (after > base + 16 * 1024 && hp_now_ms() < until);
    diag("proxy VmRSS after the client left: %lld KiB (before: %lld KiB)", after, base);
    ok(after >= 0 && after <= base + 16 * 1024, "the proxy's memory is released (%lld KiB, within "
       "16 MiB of the %lld KiB it started with)", after, base);

    /* The same pipeline, read this time: every byte arrives. */
    fd = hp_connect_proc(px, 5000);
    hp_buf out = {0};
    size_t reply_len = (size_t)NGETS * (VALUE_LEN + strlen("$1048576\r\n") + 2);
    /* Redis builds all the replies before it writes the first (about 2 s here). */
    ok(hp_send_all(fd, req.data, req.len, 10000) == HP_IO_OK, "the pipeline is sent again");
    hp_read_n(fd, &out, reply_len, 60000);
    is_int((long long)out.len, (long long)reply_len, "a reading client gets all %d replies", NGETS);
    int intact = out.len == reply_len;
    for (size_t i = 0; intact && i < NGETS; i++) {
        const char *r = out.data + i * (reply_len / NGETS);
        intact = memcmp(r, "$1048576\r\nabc", 13) == 0 &&
                 memcmp(r + reply_len / NGETS - 2, "\r\n", 2) == 0;
    }
    ok(intact, "and every reply is whole");
    hp_buf_free(&out);
    close(fd);
    hwm = fl_status_kb(px->pid, "VmHWM");
    ok(hwm < LIMIT_KB, "proxy VmHWM %lld KiB still under %d MiB", hwm, LIMIT_KB / 1024);
    hp_buf_free(&req);
    is_int(hp_stop(px, 5000), 0, "the proxy exits 0");
    return 0;
}
