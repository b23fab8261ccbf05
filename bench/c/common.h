/* Shared plumbing for the C reference programs: connection setup from the runner's arguments,
 * exact reads and writes, a monotonic clock and the one-line JSON result.
 *
 * Stream programs are run as:  PROG server N LISTEN_FD   or   PROG client N PORT;
 * datagram programs as  PROG server|client N FD  (one end of a pair the runner connected).
 * Each prints {"elapsed": seconds, "count": n} on success; a data mismatch exits 1. */
#define _GNU_SOURCE
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

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void die(const char *what) { perror(what); exit(2); }

static void mismatch(const char *what, long long expected, long long got) {
    fprintf(stderr, "DATA MISMATCH in %s: expected %lld, got %lld\n", what, expected, got);
    exit(1);
}

/* server: accept one connection on the inherited listening fd; client: connect to the port */
static inline int open_connection(const char *role, const char *where) {
    int fd, one = 1;
    if (strcmp(role, "server") == 0) {
        fd = accept(atoi(where), NULL, NULL);
        if (fd < 0) die("accept");
    } else {
        struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(atoi(where))};
        sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        fd = socket(AF_INET, SOCK_STREAM, 0);
        if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0) die("connect");
    }
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return fd;
}

static inline void write_all(int fd, const char *buf, size_t n) {
    while (n) {
        ssize_t r = send(fd, buf, n, MSG_NOSIGNAL);
        if (r < 0) { if (errno == EINTR) continue; die("send"); }
        buf += r; n -= (size_t)r;
    }
}

/* SPIN: receive with MSG_DONTWAIT in a busy loop instead of sleeping (the "spin" argument) */
static int SPIN = 0;

static inline ssize_t recv_some(int fd, char *buf, size_t n) {
    for (;;) {
        ssize_t r = recv(fd, buf, n, SPIN ? MSG_DONTWAIT : 0);
        if (r >= 0 || (errno != EINTR && !(SPIN && errno == EAGAIN))) return r;
    }
}

static inline void read_exactly(int fd, char *buf, size_t n) {
    while (n) {
        ssize_t r = recv_some(fd, buf, n);
        if (r < 0) die("recv");
        if (r == 0) { fprintf(stderr, "unexpected end of stream\n"); exit(1); }
        buf += r; n -= (size_t)r;
    }
}

/* RFC 1071 internet checksum: 16-bit big-endian words summed, carries folded, complemented */
static inline uint32_t sum16(const uint8_t *p, size_t n, uint32_t sum) {
    for (; n > 1; p += 2, n -= 2) sum += (uint32_t)(p[0] << 8 | p[1]);
    if (n) sum += (uint32_t)(p[0] << 8);
    return sum;
}

static inline uint16_t fold(uint32_t sum) {
    while (sum >> 16) sum = (sum & 0xFFFF) + (sum >> 16);
    return (uint16_t)~sum;
}

static inline uint64_t load_be64(const char *p) { uint64_t v; memcpy(&v, p, 8); return be64toh(v); }
static inline void store_be64(char *p, uint64_t v) { v = htobe64(v); memcpy(p, &v, 8); }

static inline void report(double elapsed, long long count) {
    printf("{\"elapsed\": %.9f, \"count\": %lld}\n", elapsed, count);
}
