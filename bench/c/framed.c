/* Framed 64-byte messages (4-byte big-endian length + payload whose first 8 bytes are the
 * sequence number): the client packs 1024 frames per write, the server parses in batches. */
#include "common.h"

#define PAYLOAD 64
#define FRAME (4 + PAYLOAD)
#define BATCH 1024

static void client(int fd, long long n) {
    static char buf[BATCH * FRAME];
    for (long long i = 0; i < n; i += BATCH) {
        int k = (n - i < BATCH) ? (int)(n - i) : BATCH;
        for (int j = 0; j < k; j++) {
            char *f = buf + j * FRAME;
            uint32_t len = htonl(PAYLOAD);
            memcpy(f, &len, 4);
            store_be64(f + 4, (uint64_t)(i + j));
            memset(f + 12, 'p', PAYLOAD - 8);
        }
        write_all(fd, buf, (size_t)k * FRAME);
    }
}

static void server(int fd, long long n) {
    static char buf[1 << 18];
    size_t start = 0, end = 0;
    long long expected = 0;
    double t0 = 0;
    while (expected < n) {
        if (start > 0) { memmove(buf, buf + start, end - start); end -= start; start = 0; }
        ssize_t r = recv(fd, buf + end, sizeof buf - end, 0);
        if (r <= 0) { if (r < 0 && errno == EINTR) continue; mismatch("stream length", n, expected); }
        if (t0 == 0) t0 = now();
        end += (size_t)r;
        while (end - start >= 4) {
            uint32_t len;
            memcpy(&len, buf + start, 4);
            len = ntohl(len);
            if (end - start < 4 + len) break;
            if (len != PAYLOAD) mismatch("frame length", PAYLOAD, len);
            uint64_t seq = load_be64(buf + start + 4);
            if ((long long)seq != expected) mismatch("sequence", expected, (long long)seq);
            expected++;
            start += 4 + len;
        }
    }
    report(now() - t0, n);
}

int main(int argc, char **argv) {
    if (argc != 4) { fprintf(stderr, "usage: %s server|client N FD|PORT\n", argv[0]); return 2; }
    long long n = atoll(argv[2]);
    int fd = open_connection(argv[1], argv[3]);
    if (strcmp(argv[1], "server") == 0) server(fd, n); else client(fd, n);
    close(fd);
    return 0;
}
