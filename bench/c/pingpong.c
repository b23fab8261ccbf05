/* TCP ping-pong: the client sends 32 bytes (sequence number first), the server echoes them.
 * With "spin", receives busy-poll (MSG_DONTWAIT in a loop) instead of sleeping. */
#include "common.h"

#define SIZE 32

int main(int argc, char **argv) {
    char buf[SIZE];
    if (argc < 4) { fprintf(stderr, "usage: %s server|client N FD|PORT [spin]\n", argv[0]); return 2; }
    SPIN = argc > 4 && strcmp(argv[4], "spin") == 0;
    long long n = atoll(argv[2]);
    int fd = open_connection(argv[1], argv[3]);
    if (strcmp(argv[1], "server") == 0) {
        for (long long i = 0; i < n; i++) {
            read_exactly(fd, buf, SIZE);
            write_all(fd, buf, SIZE);
        }
    } else {
        memset(buf, 'q', SIZE);
        double t0 = now();
        for (long long i = 0; i < n; i++) {
            store_be64(buf, (uint64_t)i);
            write_all(fd, buf, SIZE);
            read_exactly(fd, buf, SIZE);
            if ((long long)load_be64(buf) != i) mismatch("echo", i, (long long)load_be64(buf));
            if (i == 0) t0 = now();   /* round trip 0 waited for the server to start: untimed */
        }
        report(now() - t0, n);
    }
    close(fd);
    return 0;
}
