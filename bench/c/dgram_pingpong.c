/* Ping-pong of 32-byte datagrams or records (UDP or SOCK_SEQPACKET): the client sends one
 * (sequence number first), the server sends it back; one send and one recv per side per round.
 *
 * With "spin", receives busy-poll (MSG_DONTWAIT in a loop) instead of sleeping.
 *
 * Run as:  dgram_pingpong server|client N FD [spin]  (FD: one end of a connected pair) */
#include "common.h"

#define SIZE 32

int main(int argc, char **argv) {
    char buf[SIZE];
    if (argc < 4) { fprintf(stderr, "usage: %s server|client N FD [spin]\n", argv[0]); return 2; }
    SPIN = argc > 4 && strcmp(argv[4], "spin") == 0;
    long long n = atoll(argv[2]);
    int fd = atoi(argv[3]);
    if (strcmp(argv[1], "server") == 0) {
        for (long long i = 0; i < n; i++) {
            ssize_t r = recv_some(fd, buf, SIZE);
            if (r != SIZE) mismatch("message size", SIZE, r);
            write_all(fd, buf, SIZE);
        }
    } else {
        memset(buf, 'q', SIZE);
        double t0 = now();
        for (long long i = 0; i < n; i++) {
            store_be64(buf, (uint64_t)i);
            write_all(fd, buf, SIZE);
            ssize_t r = recv_some(fd, buf, SIZE);
            if (r != SIZE) mismatch("message size", SIZE, r);
            if ((long long)load_be64(buf) != i) mismatch("echo", i, (long long)load_be64(buf));
            if (i == 0) t0 = now();   /* round trip 0 waited for the server to start: untimed */
        }
        report(now() - t0, n);
    }
    close(fd);
    return 0;
}
