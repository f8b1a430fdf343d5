/* Fault: slowloris clients. Twenty clients send a pipeline (multibulk and inline commands)
 * one byte every 10 ms, so every frame arrives split at every offset; meanwhile twenty
 * other clients, one after another on a second thread, do 50 request/reply rounds each.
 * Every slow client gets exactly the replies Redis gives, every fast round is answered, all
 * within a deadline. No timing is asserted; how long things took is printed. */
#include "faults.h"

#include <pthread.h>

#define NSLOW 20
#define NFAST 20
#define ROUNDS 50

typedef struct fast_result {
    int rounds_ok;
    int failures;
    long long done_ms;
    char first_error[200];
} fast_result;

static const hp_proc *proxy;

/* Fast clients: each connects, does ROUNDS of PING and ECHO, and leaves. */
static void *fast_clients(void *arg)
{
    fast_result *r = arg;
    hp_buf b = {0};
    for (int i = 0; i < NFAST; i++) {
        int fd = hp_connect_proc(proxy, 5000);
        if (fd < 0) {
            r->failures++;
            snprintf(r->first_error, sizeof(r->first_error), "connect: %s", strerror(errno));
            continue;
        }
        for (int k = 0; k < ROUNDS; k++) {
            char req[64], want[64];
            int n = snprintf(req, sizeof(req), "PING\r\n*2\r\n$4\r\nECHO\r\n$6\r\nf%02d-%02d\r\n", i, k);
            snprintf(want, sizeof(want), "+PONG\r\n$6\r\nf%02d-%02d\r\n", i, k);
            hp_buf_reset(&b);
            if (hp_send_all(fd, req, (size_t)n, 5000) != HP_IO_OK ||
                hp_read_n(fd, &b, strlen(want), 5000) != HP_IO_OK || strcmp(b.data, want) != 0) {
                if (r->failures++ == 0)
                    snprintf(r->first_error, sizeof(r->first_error), "client %d round %d got '%.60s'",
                             i, k, b.data ? b.data : "");
                break;
            }
            r->rounds_ok++;
        }
        close(fd);
    }
    hp_buf_free(&b);
    r->done_ms = hp_now_ms();
    return NULL;
}

static int got_expected(const fl_conn *c)
{
    return c->eof || c->in.len >= strlen((const char *)c->ud);
}

int main(void)
{
    fl_init(100);
    plan_lazy();
    hp_proc *redis = hp_redis_start(NULL);
    hp_proc *px = hp_proxy_start(redis, NULL);
    proxy = px;

    static char reqs[NSLOW][256], wants[NSLOW][256];
    fl_conn slow[NSLOW];
    memset(slow, 0, sizeof(slow));
    for (int i = 0; i < NSLOW; i++) {
        char key[16], val[16], echo[16];
        snprintf(key, sizeof(key), "slow:%d", i);
        snprintf(val, sizeof(val), "value-%d", i);
        snprintf(echo, sizeof(echo), "hello-%d", i);
        snprintf(reqs[i], sizeof(reqs[i]),
                 "*3\r\n$3\r\nSET\r\n$%zu\r\n%s\r\n$%zu\r\n%s\r\n"
                 "*2\r\n$3\r\nGET\r\n$%zu\r\n%s\r\n"
                 "ECHO \"%s\"\r\nPING\r\n",
                 strlen(key), key, strlen(val), val, strlen(key), key, echo);
        snprintf(wants[i], sizeof(wants[i]), "+OK\r\n$%zu\r\n%s\r\n$%zu\r\n%s\r\n+PONG\r\n",
                 strlen(val), val, strlen(echo), echo);
        slow[i].fd = hp_connect_proc(px, 5000);
        slow[i].out = reqs[i];
        slow[i].outlen = strlen(reqs[i]);
        slow[i].drip = 1;
        slow[i].ud = wants[i];
    }

    fast_result fr;
    memset(&fr, 0, sizeof(fr));
    pthread_t th;
    long long t0 = hp_now_ms();
    if (pthread_create(&th, NULL, fast_clients, &fr) != 0)
        hp_bail("pthread_create failed");
    size_t done = fl_pump(slow, NSLOW, got_expected, 10, 30000);
    long long slow_ms = hp_now_ms() - t0;
    pthread_join(th, NULL);

    is_int((long long)done, NSLOW, "every slow client finished within the deadline");
    int good = 0;
    for (int i = 0; i < NSLOW; i++) {
        if (slow[i].in.len == strlen(wants[i]) && memcmp(slow[i].in.data, wants[i], slow[i].in.len) == 0 &&
            !slow[i].eof)
            good++;
        else
            diag("slow client %d got '%s'", i, hp_esc(slow[i].in.data, slow[i].in.len, 120));
    }
    is_int(good, NSLOW, "every slow client got exactly its replies");
    is_int(fr.failures, 0, "no fast round failed%s%s", fr.failures ? ": " : "", fr.first_error);
    is_int(fr.rounds_ok, NFAST * ROUNDS, "every fast round was answered");
    diag("slow clients (%zu bytes each, one per 10 ms) took %lld ms; the %d fast clients "
         "finished after %lld ms", slow[0].outlen, slow_ms, NFAST, fr.done_ms - t0);
    fl_conns_close(slow, NSLOW);
    ok(fl_ping(px, 5000), "the proxy still answers");
    is_int(hp_stop(px, 5000), 0, "the proxy exits 0");
    return 0;
}
