/*
 * latency: single-client GET round-trip times for `make bench`.
 *
 * One connection sends N GETs one after another (key:<12-digit random number below KEYSPACE>,
 * the keys redis-benchmark -r writes) and times each request-to-reply with CLOCK_MONOTONIC.
 * redis-benchmark's own percentiles come from a histogram whose buckets are several
 * microseconds wide at these values, too coarse for proxy overheads of a few tens of
 * microseconds; this keeps every sample and reports exact order statistics.
 *
 * Usage: latency HOST PORT N [KEYSPACE]
 * Output: one line, e.g. "n=20000 p50_us=31.2 mean_us=33.0 p99_us=52.8 rps=30303.0"
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <hiredis/hiredis.h>

static double now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec / 1e3;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv)
{
    struct sockaddr_in sa;
    redisReader *rd;
    double *lat, t_all, sum = 0;
    uint64_t rng = 88172645463325252ULL;
    int fd, one = 1, n;
    long keyspace;

    if (argc < 4) {
        fprintf(stderr, "usage: latency HOST PORT N [KEYSPACE]\n");
        return 2;
    }
    n = atoi(argv[3]);
    keyspace = argc > 4 ? atol(argv[4]) : 100000;
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_port = htons((unsigned short)atoi(argv[2]));
    if (n < 1 || keyspace < 1 || inet_pton(AF_INET, argv[1], &sa.sin_addr) != 1) {
        fprintf(stderr, "latency: bad arguments\n");
        return 2;
    }
    fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
        fprintf(stderr, "latency: connect: %s\n", strerror(errno));
        return 1;
    }
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    lat = malloc(sizeof *lat * (size_t)n);
    rd = redisReaderCreate();
    if (lat == NULL || rd == NULL) return 1;

    t_all = now_us();
    for (int i = 0; i < n; i++) {
        char cmd[64], buf[4096];
        void *reply = NULL;
        int len;
        double t0;

        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        len = snprintf(cmd, sizeof cmd, "*2\r\n$3\r\nGET\r\n$16\r\nkey:%012lu\r\n",
                       (unsigned long)(rng % (uint64_t)keyspace));
        t0 = now_us();
        if (write(fd, cmd, (size_t)len) != len) {
            fprintf(stderr, "latency: write: %s\n", strerror(errno));
            return 1;
        }
        while (reply == NULL) {
            ssize_t got = read(fd, buf, sizeof buf);
            if (got < 0 && errno == EINTR) continue;
            if (got <= 0) {
                fprintf(stderr, "latency: connection %s\n", got == 0 ? "closed" : strerror(errno));
                return 1;
            }
            if (redisReaderFeed(rd, buf, (size_t)got) != REDIS_OK ||
                redisReaderGetReply(rd, &reply) != REDIS_OK) {
                fprintf(stderr, "latency: bad reply\n");
                return 1;
            }
        }
        lat[i] = now_us() - t0;
        sum += lat[i];
        if (((redisReply *)reply)->type == REDIS_REPLY_ERROR) {
            fprintf(stderr, "latency: %s\n", ((redisReply *)reply)->str);
            return 1;
        }
        freeReplyObject(reply);
    }
    t_all = now_us() - t_all;
    qsort(lat, (size_t)n, sizeof *lat, cmp_double);
    printf("n=%d p50_us=%.1f mean_us=%.1f p99_us=%.1f rps=%.1f\n", n,
           n % 2 ? lat[n / 2] : (lat[n / 2 - 1] + lat[n / 2]) / 2, sum / n,
           lat[(size_t)((double)(n - 1) * 0.99)], n / (t_all / 1e6));
    redisReaderFree(rd);
    free(lat);
    close(fd);
    return 0;
}
