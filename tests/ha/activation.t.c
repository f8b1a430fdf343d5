/* Socket activation and restarts that refuse nobody. The test plays systemd: it creates the
 * listening socket itself and hands it to each lockproxy as fd 3 with LISTEN_FDS=1 and
 * LISTEN_PID=<that process>. Clients connect in a loop (two threads, each connection sends
 * INCR and waits for the answer) while the proxy is restarted three times the way
 * `systemctl restart` does it: SIGTERM, wait for the exit, start a new process on the same
 * socket. Asserted: 0 connections refused, every INCR answered, Redis's counter equals the
 * answers, every old process exits 0. A unix socket passed the same way serves too.
 *
 * For comparison (shown, not asserted), the same restart of a proxy that binds its own port. */
#include <poll.h>
#include <pthread.h>
#include <sys/un.h>

#include "ha/ha_util.h"

#define THREADS 2
#define RESTARTS 3

static hp_proc *redis;
static int port;
static volatile int stop_clients;

typedef struct client_stats {
    long attempts, answered, refused, no_answer, other;
    long long max_ms;
} client_stats;

static client_stats per_thread[THREADS];

/* One connection: connect, INCR, wait for ":N". */
static void one_client(client_stats *st)
{
    st->attempts++;
    long long t0 = hp_now_ms();
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) < 0) {
        if (errno == ECONNREFUSED) st->refused++;
        else st->other++;
        close(fd);
        return;
    }
    static const char req[] = "*2\r\n$4\r\nINCR\r\n$8\r\nha:count\r\n";
    char buf[64];
    size_t got = 0;
    int answered = 0;
    if (write(fd, req, sizeof req - 1) == (ssize_t)(sizeof req - 1)) {
        struct pollfd p = { fd, POLLIN, 0 };
        while (got < sizeof buf - 1 && poll(&p, 1, 15000) > 0) {
            ssize_t n = read(fd, buf + got, sizeof buf - 1 - got);
            if (n <= 0) break;
            got += (size_t)n;
            buf[got] = '\0';
            if (strstr(buf, "\r\n") != NULL) { answered = buf[0] == ':'; break; }
        }
    }
    close(fd);
    if (answered) st->answered++;
    else st->no_answer++;
    long long ms = hp_now_ms() - t0;
    if (ms > st->max_ms) st->max_ms = ms;
}

static void *client_loop(void *arg)
{
    client_stats *st = arg;
    while (!stop_clients) one_client(st);
    return NULL;
}

static int tcp_listener(int *out_port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = 0 };
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    if (bind(fd, (struct sockaddr *)&a, sizeof a) < 0 || listen(fd, 1024) < 0 ||
        getsockname(fd, (struct sockaddr *)&a, &len) < 0)
        hp_abort("listening socket: %s", strerror(errno));
    *out_port = ntohs(a.sin_port);
    return fd;
}

static const char *proxy_bin(void)
{
    const char *bin = getenv("LOCKPROXY_BIN");
    return bin != NULL && *bin ? bin : LOCKPROXY_BIN;
}

/* Starts a proxy on the passed socket; its --listen names a port nobody uses, to show it is
 * not what the proxy listens on. */
static void start_activated(ha_child *c, const char *name, int fd)
{
    static char up[64], unused[64];
    snprintf(up, sizeof up, "127.0.0.1:%d", redis->port);
    snprintf(unused, sizeof unused, "127.0.0.1:%d", hp_free_port());
    const char *argv[] = { proxy_bin(), "--listen", unused, "--upstream", up, "--log", "-", NULL };
    ha_start(c, name, argv, fd);
}

static void totals(client_stats *t)
{
    memset(t, 0, sizeof *t);
    for (int i = 0; i < THREADS; i++) {
        t->attempts += per_thread[i].attempts;
        t->answered += per_thread[i].answered;
        t->refused += per_thread[i].refused;
        t->no_answer += per_thread[i].no_answer;
        t->other += per_thread[i].other;
        if (per_thread[i].max_ms > t->max_ms) t->max_ms = per_thread[i].max_ms;
    }
}

static void run_clients(pthread_t *th)
{
    stop_clients = 0;
    memset(per_thread, 0, sizeof per_thread);
    for (int i = 0; i < THREADS; i++)
        if (pthread_create(&th[i], NULL, client_loop, &per_thread[i]) != 0) hp_abort("pthread_create");
}

static void stop_all(pthread_t *th)
{
    stop_clients = 1;
    for (int i = 0; i < THREADS; i++) pthread_join(th[i], NULL);
}

int main(void)
{
    lk_require_real_proxy();
    plan_lazy();
    redis = hp_redis_start(NULL);

    /* TCP, restarted under clients. */
    int lfd = tcp_listener(&port);
    ha_child gen[RESTARTS + 1];
    char name[32];
    start_activated(&gen[0], "proxy-gen0", lfd);
    ok(ha_wait_pong(port, 15000), "a proxy given the socket as fd 3 answers on it");
    ok(ha_file_wait(gen[0].log, "listening on fd 3 from systemd", 5000), "it says it listens on fd 3 from systemd");
    hp_cmd_ok(redis, "DEL ha:count");

    pthread_t th[THREADS];
    run_clients(th);
    hp_sleep_ms(300);
    long long worst_gap = 0;
    for (int r = 1; r <= RESTARTS; r++) {
        long long t0 = hp_now_ms();
        is_int(ha_stop(&gen[r - 1], 15000), 0, "restart %d: the old proxy drains and exits 0 on SIGTERM", r);
        snprintf(name, sizeof name, "proxy-gen%d", r);
        start_activated(&gen[r], name, lfd);
        ok(ha_wait_pong(port, 15000), "restart %d: the new proxy answers on the same socket", r);
        if (hp_now_ms() - t0 > worst_gap) worst_gap = hp_now_ms() - t0;
        hp_sleep_ms(300);
    }
    stop_all(th);
    client_stats t;
    totals(&t);
    diag("%d restarts under %d client threads: %ld connections, %ld answered, %ld refused, %ld without answer, "
         "%ld other errors; slowest connection %lld ms; longest stop-to-ready %lld ms",
         RESTARTS, THREADS, t.attempts, t.answered, t.refused, t.no_answer, t.other, t.max_ms, worst_gap);
    ok(t.attempts > 100, "clients kept connecting through the restarts (%ld connections)", t.attempts);
    is_int(t.refused, 0, "no connection was refused");
    is_int(t.no_answer + t.other, 0, "every connection's INCR was answered");
    is_int(atol(lk_pstr(redis, "GET ha:count")), t.answered, "Redis counted each answered INCR once");
    is_int(ha_stop(&gen[RESTARTS], 15000), 0, "the last proxy exits 0");
    ok(!ha_file_has(gen[0].log, "cannot listen"), "no proxy bound a socket of its own");

    /* A unix socket passed the same way. */
    {
        char path[sizeof(((struct sockaddr_un *)0)->sun_path)];
        if (snprintf(path, sizeof path, "%s/act.sock", hp_tmpdir()) >= (int)sizeof path) hp_abort("temp dir path too long");
        int ufd = socket(AF_UNIX, SOCK_STREAM, 0);
        struct sockaddr_un ua = { .sun_family = AF_UNIX };
        snprintf(ua.sun_path, sizeof ua.sun_path, "%s", path);
        if (bind(ufd, (struct sockaddr *)&ua, sizeof ua) < 0 || listen(ufd, 64) < 0)
            hp_abort("unix listener: %s", strerror(errno));
        ha_child u;
        start_activated(&u, "proxy-unix", ufd);
        int c = hp_connect_unix(path, 5000);
        hp_buf b = {0};
        int good = c >= 0 && hp_send_all(c, "PING\r\n", 6, 2000) == HP_IO_OK &&
                   hp_read_until(c, &b, 0, "\r\n", 5000) == HP_IO_OK && HP_HAS(&b, "+PONG");
        if (c >= 0) close(c);
        hp_buf_free(&b);
        ok(good, "a unix socket passed as fd 3 serves clients");
        is_int(ha_stop(&u, 15000), 0, "that proxy exits 0");
        ok(access(path, F_OK) == 0, "the socket file, systemd's, is left in place on exit");
        close(ufd);
    }

    /* For comparison: the same restart with a proxy that binds its own port. */
    {
        close(lfd);
        port = hp_free_port();
        char listen[64], up[64];
        snprintf(listen, sizeof listen, "127.0.0.1:%d", port);
        snprintf(up, sizeof up, "127.0.0.1:%d", redis->port);
        const char *argv[] = { proxy_bin(), "--listen", listen, "--upstream", up, "--log", "-", NULL };
        ha_child p0, p1;
        ha_start(&p0, "proxy-bound0", argv, -1);
        if (!ha_wait_pong(port, 15000)) hp_abort("the comparison proxy did not start");
        run_clients(th);
        hp_sleep_ms(300);
        ha_stop(&p0, 15000);
        ha_start(&p1, "proxy-bound1", argv, -1);
        ha_wait_pong(port, 15000);
        hp_sleep_ms(300);
        stop_all(th);
        totals(&t);
        diag("without socket activation, one restart: %ld connections, %ld refused, %ld without answer",
             t.attempts, t.refused, t.no_answer);
        ha_stop(&p1, 15000);
    }
    return 0;
}
