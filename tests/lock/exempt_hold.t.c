/* Exempt clients and max-hold, through a real proxy and Redis:
 *   - "exempt user ops": an operator's connection, authenticated as ops, has its lock
 *     commands forwarded unchanged; its DEL of a lock someone else holds deletes it, as
 *     asked, and is logged exempt_release;
 *   - "exempt addr 127.0.0.2/32": a client from that address gets no rewrite (its SETNX
 *     leaves the lock without a TTL, as Redis alone would);
 *   - "max-hold": a SETNX lock renewed while its holder is connected stops being renewed
 *     after max-hold (logged max_hold) and ends within its ttl. */
#include "lock/lock_util.h"

static hp_proc *redis, *proxy;
static char logpath[4096];

int main(void)
{
    lk_require_real_proxy();
    plan_lazy();
    redis = hp_redis_start(NULL);
    proxy = lk_proxy_start(redis, "exempt",
                           "rule lock: enforce ttl=5s owner=connection\n"
                           "rule hold: enforce ttl=300ms max-hold=1s\n"
                           "exempt user ops\n"
                           "exempt addr 127.0.0.2/32\n",
                           logpath, sizeof logpath);
    ok(hp_cmd_ok(redis, "ACL SETUSER ops on >opspw ~* &* +@all"), "ACL user ops");

    /* Someone holds lock:x; the operator clears it. */
    redisContext *app = lk_connect(proxy);
    is_string(lk_str(app, "SET lock:x app-token NX PX 60000"), "+OK", "an application holds lock:x");
    redisContext *op = lk_connect(proxy);
    is_string(lk_str(op, "AUTH ops opspw"), "+OK", "the operator authenticates as ops");
    is_string(lk_str(op, "SETNX lock:y v"), ":1", "the operator's SETNX runs as sent");
    is_int(hp_cmd_int(redis, "PTTL lock:y"), -1, "  and leaves no TTL (no rewrite for an exempt user)");
    is_string(lk_str(op, "DEL lock:x lock:y"), ":2", "the operator's DEL deletes the application's lock as asked");
    is_int(hp_cmd_int(redis, "EXISTS lock:x"), 0, "  lock:x is gone");
    ok(lk_log_wait(logpath, "exempt_release", "lock:x", 5000), "  exempt_release logged for lock:x");
    redisFree(op);
    redisFree(app);

    /* An exempt address. */
    int fd = lk_raw_open_from(proxy, "127.0.0.2");
    ok(fd >= 0, "a client from 127.0.0.2");
    if (fd >= 0) {
        lk_raw_expect(fd, "SETNX lock:z v\r\n", ":1\r\n", "the exempt address's SETNX answers :1");
        is_int(hp_cmd_int(redis, "PTTL lock:z"), -1, "  and runs as sent (no TTL)");
        close(fd);
    }
    lk_flushall(redis);

    /* max-hold: renewed for 1 s, then left to its ttl. */
    redisContext *h = lk_connect(proxy);
    is_string(lk_str(h, "SETNX hold:m v"), ":1", "a holder takes hold:m (ttl 300ms, max-hold 1s)");
    hp_sleep_ms(700);
    ok(hp_cmd_int(redis, "EXISTS hold:m") == 1, "  renewed past its ttl while connected (700 ms)");
    long long t0 = hp_now_ms(), gone = -1;
    while (hp_now_ms() - t0 < 4000) {
        if (hp_cmd_int(redis, "EXISTS hold:m") == 0) { gone = hp_now_ms() - t0 + 700; break; }
        hp_sleep_ms(20);
    }
    ok(gone >= 900 && gone <= 2000, "  no longer renewed after max-hold: gone %lld ms after the acquire", gone);
    ok(lk_log_wait(logpath, "max_hold", "hold:m", 5000), "  max_hold logged");
    redisFree(h);
    lk_check_json_log(logpath, "audit log");
    return 0;
}
