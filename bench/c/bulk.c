/* TCP bulk: N chunks of 256 KiB, each starting with its 8-byte sequence number. */
#include "common.h"

#define CHUNK (256 * 1024)

int main(int argc, char **argv) {
    static char buf[CHUNK];
    if (argc != 4) { fprintf(stderr, "usage: %s server|client N FD|PORT\n", argv[0]); return 2; }
    long long n = atoll(argv[2]);
    int fd = open_connection(argv[1], argv[3]);
    if (strcmp(argv[1], "client") == 0) {
        memset(buf, 'b', CHUNK);
        for (long long i = 0; i < n; i++) {
            store_be64(buf, (uint64_t)i);
            write_all(fd, buf, CHUNK);
        }
    } else {
        double t0 = 0;
        for (long long i = 0; i < n; i++) {
            read_exactly(fd, buf, CHUNK);
            if (i == 0) t0 = now();             /* the clock starts at the first chunk */
            if ((long long)load_be64(buf) != i) mismatch("chunk sequence", i, (long long)load_be64(buf));
        }
        report(now() - t0, n);
    }
    close(fd);
    return 0;
}
