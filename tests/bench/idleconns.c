/*
 * idleconns: opens N client connections to HOST:PORT, sends one PING on each and reads its
 * +PONG, then keeps them all open and idle until it is killed (SIGTERM). `make bench` reads
 * the proxy's VmRSS before and while they are held, for its memory per idle connection.
 *
 * Connections are opened one after another (each PING answered before the next connect), so
 * the proxy's accept backlog never overflows and every connection is known to be fully set
 * up, upstream included, when "ready" is printed.
 *
 * Usage: idleconns HOST PORT N
 * Prints "ready N SECONDS" on stdout once all N answered, or a message on stderr and exits 1.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static const char ping[] = "*1\r\n$4\r\nPING\r\n";

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Reads one reply line; 0 when it is +PONG. */
static int read_pong(int fd)
{
    char buf[64];
    size_t have = 0;
    while (have < sizeof buf - 1) {
        ssize_t n = read(fd, buf + have, sizeof buf - 1 - have);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return -1;
        have += (size_t)n;
        buf[have] = '\0';
        if (memchr(buf, '\n', have) != NULL) break;
    }
    return strncmp(buf, "+PONG\r\n", 7) == 0 ? 0 : -1;
}

int main(int argc, char **argv)
{
    struct sockaddr_in sa;
    struct rlimit rl;
    struct timeval tv = {10, 0};
    int n;
    double t0;

    if (argc != 4) {
        fprintf(stderr, "usage: idleconns HOST PORT N\n");
        return 2;
    }
    n = atoi(argv[3]);
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_port = htons((unsigned short)atoi(argv[2]));
    if (inet_pton(AF_INET, argv[1], &sa.sin_addr) != 1 || n < 1) {
        fprintf(stderr, "idleconns: bad HOST or N\n");
        return 2;
    }
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < (rlim_t)n + 64) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }

    t0 = now();
    for (int i = 0; i < n; i++) {
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        int one = 1;
        if (fd < 0) {
            fprintf(stderr, "idleconns: socket %d: %s\n", i, strerror(errno));
            return 1;
        }
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
            fprintf(stderr, "idleconns: connect %d: %s\n", i, strerror(errno));
            return 1;
        }
        if (write(fd, ping, sizeof ping - 1) != (ssize_t)(sizeof ping - 1) || read_pong(fd) != 0) {
            fprintf(stderr, "idleconns: connection %d: no +PONG\n", i);
            return 1;
        }
        /* fd stays open on purpose: the connection is held idle until exit. */
    }
    printf("ready %d %.3f\n", n, now() - t0);
    fflush(stdout);
    for (;;) pause();
}
