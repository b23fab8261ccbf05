/* End to end through raw sockets: the client builds IPv4+UDP packets (64-byte payload,
 * sequence number first, both checksums) and sends them with IP_HDRINCL to 127.0.0.1 in
 * sendmmsg batches of 1024; the server receives them on a raw UDP socket with
 * recvmmsg(MSG_WAITFORONE), reads every header field and checks the sequence.
 *
 * A raw socket sees every UDP packet on the host and has no flow control: the server returns
 * credits (8 bytes: highest sequence + 1) over an AF_UNIX datagram side channel, the first one
 * as soon as its raw socket exists, and the client keeps at most WINDOW packets beyond the last.
 *
 *   raw_e2e server|client N PORT:SIDE_FD */
#include "common.h"

#define PAYLOAD 64
#define TOTAL (20 + 8 + PAYLOAD)
#define BATCH 1024
#define WINDOW 4096
#define CREDIT_EVERY 256

static void build(uint8_t *p, uint16_t dport, uint64_t seq) {
    uint32_t lo = htonl(INADDR_LOOPBACK);
    uint16_t ulen = 8 + PAYLOAD;
    memset(p, 0, 28);
    p[0] = 0x45; p[8] = 64; p[9] = 17; p[2] = TOTAL >> 8; p[3] = TOTAL & 0xFF; p[5] = 1;
    memcpy(p + 12, &lo, 4); memcpy(p + 16, &lo, 4);
    uint16_t ck = fold(sum16(p, 20, 0));
    p[10] = ck >> 8; p[11] = ck & 0xFF;
    p[20] = 40000 >> 8; p[21] = 40000 & 0xFF; p[22] = dport >> 8; p[23] = dport & 0xFF;
    p[24] = ulen >> 8; p[25] = ulen & 0xFF;
    store_be64((char *)p + 28, seq);
    memset(p + 36, 'p', PAYLOAD - 8);
    uint32_t pseudo = sum16(p + 12, 8, 0) + 17 + ulen;
    uint16_t uck = fold(sum16(p + 20, ulen, pseudo));
    if (uck == 0) uck = 0xFFFF;
    p[26] = uck >> 8; p[27] = uck & 0xFF;
}

static long long credit_from(int side, long long credit, int wait) {
    char buf[8];
    for (;;) {
        ssize_t r = recv(side, buf, sizeof buf, wait ? 0 : MSG_DONTWAIT);
        if (r < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN) return wait ? -1 : credit;
            die("recv credit");
        }
        wait = 0;
        if (r == 8 && (long long)load_be64(buf) > credit) credit = (long long)load_be64(buf);
    }
}

static void client(long long n, uint16_t port, int side) {
    static uint8_t bufs[BATCH][TOTAL];
    static struct iovec iov[BATCH];
    static struct mmsghdr msgs[BATCH];
    struct sockaddr_in to = {.sin_family = AF_INET};
    to.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int fd = socket(AF_INET, SOCK_RAW, IPPROTO_RAW);
    if (fd < 0) die("socket(SOCK_RAW)");
    for (int i = 0; i < BATCH; i++) {
        iov[i].iov_base = bufs[i]; iov[i].iov_len = TOTAL;
        msgs[i].msg_hdr.msg_iov = &iov[i]; msgs[i].msg_hdr.msg_iovlen = 1;
        msgs[i].msg_hdr.msg_name = &to; msgs[i].msg_hdr.msg_namelen = sizeof to;
    }
    long long credit = credit_from(side, 0, 1), sent = 0;     /* the server is ready */
    while (sent < n) {
        credit = credit_from(side, credit, 0);
        while (credit + WINDOW - sent <= 0) {
            long long c = credit_from(side, credit, 1);
            credit = c < 0 ? sent : c;
        }
        long long k = n - sent < BATCH ? n - sent : BATCH;
        if (credit + WINDOW - sent < k) k = credit + WINDOW - sent;
        for (long long j = 0; j < k; j++) build(bufs[j], port, (uint64_t)(sent + j));
        long long done = 0;
        while (done < k) {
            int r = sendmmsg(fd, msgs + done, (unsigned)(k - done), 0);
            if (r < 0) { if (errno == EINTR) continue; die("sendmmsg"); }
            done += r;
        }
        sent += k;
    }
    close(fd);
}

static void server(long long n, uint16_t port, int side) {
    static uint8_t bufs[BATCH][2048];
    static struct iovec iov[BATCH];
    static struct mmsghdr msgs[BATCH];
    int fd = socket(AF_INET, SOCK_RAW, IPPROTO_UDP), size = 8 << 20;
    struct timeval second = {.tv_sec = 1};
    if (fd < 0) die("socket(SOCK_RAW)");
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, sizeof size);
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &second, sizeof second);
    for (int i = 0; i < BATCH; i++) {
        iov[i].iov_base = bufs[i]; iov[i].iov_len = sizeof bufs[i];
        msgs[i].msg_hdr.msg_iov = &iov[i]; msgs[i].msg_hdr.msg_iovlen = 1;
    }
    char credit[8];
    store_be64(credit, 0);
    send(side, credit, 8, 0);                                 /* ready */
    long long next = 0, received = 0, credited = 0;
    double t0 = 0, t_last = 0;
    uint64_t fields = 0;
    while (next < n) {
        int r = recvmmsg(fd, msgs, BATCH, MSG_WAITFORONE, NULL);
        if (r < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN) { if (received) break; continue; }
            die("recvmmsg");
        }
        t_last = now();
        if (!t0) t0 = t_last;
        for (int i = 0; i < r; i++) {
            const uint8_t *p = bufs[i];
            size_t ihl = (size_t)(p[0] & 15) * 4;
            if (msgs[i].msg_len < ihl + 8 + 8 || p[9] != 17) continue;
            const uint8_t *u = p + ihl;
            if ((u[2] << 8 | u[3]) != port) continue;             /* other UDP traffic */
            fields += p[1] + (p[2] << 8 | p[3]) + (p[4] << 8 | p[5]) + p[6] + p[7] + p[8] + p[10]
                + p[12] + p[16] + (u[0] << 8 | u[1]) + (u[4] << 8 | u[5]) + (u[6] << 8 | u[7]);
            long long seq = (long long)load_be64((const char *)u + 8);
            if (seq < next) mismatch("sequence", next, seq);
            next = seq + 1;
            received++;
        }
        if (received - credited >= CREDIT_EVERY || next == n) {
            store_be64(credit, (uint64_t)next);
            send(side, credit, 8, 0);
            credited = received;
        }
    }
    printf("{\"elapsed\": %.9f, \"count\": %lld, \"received\": %lld}\n", t_last - t0, n, received);
    if (fields == 42) fprintf(stderr, "\n");
    close(fd);
}

int main(int argc, char **argv) {
    if (argc != 4 || !strchr(argv[3], ':')) {
        fprintf(stderr, "usage: %s server|client N PORT:SIDE_FD\n", argv[0]);
        return 2;
    }
    long long n = atoll(argv[2]);
    uint16_t port = (uint16_t)atoi(argv[3]);
    int side = atoi(strchr(argv[3], ':') + 1);
    if (strcmp(argv[1], "server") == 0) server(n, port, side); else client(n, port, side);
    return 0;
}
