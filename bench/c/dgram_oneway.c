/* One way over a datagram-type socket, 64-byte messages (sequence number first), with
 * sendmmsg/recvmmsg in batches of 1024 (recvmmsg with MSG_WAITFORONE: wait for one, take
 * every one queued).
 *
 * SOCK_SEQPACKET is reliable: the kernel's flow control paces the sender. UDP is not: the
 * receiver returns a credit (8 bytes: the highest sequence seen + 1) at least every
 * CREDIT_EVERY datagrams, and the sender keeps at most WINDOW datagrams beyond the last
 * credit, so the receiver is never overrun; any losses are counted, not hidden. Its first
 * credit (0) says it is ready. The runner
 * sets SO_RCVTIMEO (1 s) on UDP sockets: a receive that times out means silence.
 *
 * With "gso" (UDP only), the client packs up to 64 equal datagrams into one message with a
 * UDP_SEGMENT control message and the server sets UDP_GRO and splits what the kernel coalesced
 * at the gso_size it reports: the same datagrams, fewer trips through the stack.
 *
 * Run as:  dgram_oneway server|client N FD [SIZE [gso]]  (FD: one end of a connected pair) */
#include "common.h"
#include <netinet/udp.h>

#ifndef UDP_SEGMENT
#define UDP_SEGMENT 103
#endif
#ifndef UDP_GRO
#define UDP_GRO 104
#endif
#define MAX_SIZE 1472
#define BATCH 1024
#define CREDIT_EVERY 256
#define GSO_MAX 64

static int SIZE = 64, GSO = 0;

/* as csock/_bench/workers.py: rcvbuf / (SIZE + 1.5 KiB), <= 8192 (see credit_window there) */
static long long window_for(int fd) {
    int rcvbuf = 0;
    socklen_t len = sizeof rcvbuf;
    getsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, &len);
    long long w = rcvbuf / (SIZE + 1536);
    return w > 8192 ? 8192 : (w < 16 ? 16 : w);
}

static int is_udp(int fd) {
    int type = 0;
    socklen_t len = sizeof type;
    getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len);
    return type == SOCK_DGRAM;
}

/* the newest credit queued; with wait, block for one first (-1 when SO_RCVTIMEO expires) */
static long long take_credit(int fd, long long credit, int wait) {
    char buf[8];
    for (;;) {
        ssize_t r = recv(fd, buf, sizeof buf, wait ? 0 : MSG_DONTWAIT);
        if (r < 0 && errno == EAGAIN && wait) return -1;
        wait = 0;
        if (r < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN) return credit;
            die("recv credit");
        }
        if (r == 8 && (long long)load_be64(buf) > credit) credit = (long long)load_be64(buf);
    }
}

/* sendmmsg k datagrams from bufs; with GSO, 64 per message behind one UDP_SEGMENT cmsg */
static void send_datagrams(int fd, char (*bufs)[MAX_SIZE], long long k) {
    static struct iovec iov[BATCH];
    static struct mmsghdr msgs[BATCH];
    static char control[BATCH][CMSG_SPACE(sizeof(uint16_t))];
    int per = GSO ? (65507 / SIZE < GSO_MAX ? 65507 / SIZE : GSO_MAX) : 1, m = 0;   /* one UDP payload max */
    for (long long j = 0; j < k; j++) {
        iov[j].iov_base = bufs[j];
        iov[j].iov_len = (size_t)SIZE;
    }
    memset(msgs, 0, sizeof msgs);
    for (long long j = 0; j < k; j += per, m++) {
        int parts = (int)(k - j < per ? k - j : per);
        msgs[m].msg_hdr.msg_iov = &iov[j];
        msgs[m].msg_hdr.msg_iovlen = (size_t)parts;
        if (GSO && parts > 1) {
            msgs[m].msg_hdr.msg_control = control[m];
            msgs[m].msg_hdr.msg_controllen = sizeof control[m];
            struct cmsghdr *c = CMSG_FIRSTHDR(&msgs[m].msg_hdr);
            c->cmsg_level = SOL_UDP;
            c->cmsg_type = UDP_SEGMENT;
            c->cmsg_len = CMSG_LEN(sizeof(uint16_t));
            uint16_t seg = (uint16_t)SIZE;
            memcpy(CMSG_DATA(c), &seg, sizeof seg);
        }
    }
    int done = 0;
    while (done < m) {
        int r = sendmmsg(fd, msgs + done, (unsigned)(m - done), MSG_NOSIGNAL);
        if (r < 0) { if (errno == EINTR) continue; die("sendmmsg"); }
        done += r;
    }
}

static void client(int fd, long long n) {
    static char bufs[BATCH][MAX_SIZE];
    int udp = is_udp(fd);
    long long window = window_for(fd), credit = 0, sent = 0;
    for (int i = 0; i < BATCH; i++) memset(bufs[i], 'p', (size_t)SIZE);
    while (udp && (credit = take_credit(fd, 0, 1)) < 0) {}   /* the server's "ready" */
    while (sent < n) {
        long long k = n - sent < BATCH ? n - sent : BATCH;
        if (udp) {
            credit = take_credit(fd, credit, 0);
            while (credit + window - sent <= 0) {          /* window full: wait for a credit */
                long long c = take_credit(fd, credit, 1);
                credit = c < 0 ? sent : c;                 /* silence: count what is in flight as lost */
            }
            if (credit + window - sent < k) k = credit + window - sent;
        }
        for (long long j = 0; j < k; j++) store_be64(bufs[j], (uint64_t)(sent + j));
        send_datagrams(fd, bufs, k);
        sent += k;
    }
}

static void server(int fd, long long n) {
    /* with GRO a slot holds a coalesced message of up to 64 KiB: fewer slots, same memory */
    static char bufs[BATCH][MAX_SIZE];
    static char big[64][65536];
    static char control[BATCH][CMSG_SPACE(sizeof(int))];
    static struct iovec iov[BATCH];
    static struct mmsghdr msgs[BATCH];
    int udp = is_udp(fd), slots = GSO ? 64 : BATCH, one = 1;
    long long received = 0, next = 0, credited = 0;
    double t0 = 0, t_last = 0;
    if (GSO && setsockopt(fd, SOL_UDP, UDP_GRO, &one, sizeof one) < 0) die("UDP_GRO");
    if (udp) {                                        /* ready: credit 0 */
        char ready[8];
        store_be64(ready, 0);
        send(fd, ready, sizeof ready, MSG_NOSIGNAL);
    }
    for (int i = 0; i < slots; i++) {
        iov[i].iov_base = GSO ? big[i] : bufs[i];
        iov[i].iov_len = GSO ? sizeof big[i] : (size_t)SIZE;
        msgs[i].msg_hdr.msg_iov = &iov[i];
        msgs[i].msg_hdr.msg_iovlen = 1;
    }
    while (next < n) {
        for (int i = 0; GSO && i < slots; i++) {
            msgs[i].msg_hdr.msg_control = control[i];
            msgs[i].msg_hdr.msg_controllen = sizeof control[i];
        }
        int r = recvmmsg(fd, msgs, (unsigned)slots, MSG_WAITFORONE, NULL);
        if (r < 0) {
            if (errno == EINTR) continue;
            /* SO_RCVTIMEO (1 s, set by the runner on UDP) expired: the rest was lost */
            if (errno == EAGAIN) { if (received) break; continue; }
            die("recvmmsg");
        }
        if (r == 0) mismatch("end of stream after records", n, next);
        t_last = now();
        if (!t0) t0 = t_last;
        for (int i = 0; i < r; i++) {
            size_t segment = (size_t)SIZE, length = msgs[i].msg_len;
            struct cmsghdr *c;
            for (c = GSO ? CMSG_FIRSTHDR(&msgs[i].msg_hdr) : NULL; c; c = CMSG_NXTHDR(&msgs[i].msg_hdr, c))
                if (c->cmsg_level == SOL_UDP && c->cmsg_type == UDP_GRO) {
                    int gso_size;
                    memcpy(&gso_size, CMSG_DATA(c), sizeof gso_size);
                    segment = (size_t)gso_size;
                }
            const char *base = iov[i].iov_base;
            for (size_t at = 0; at < length; at += segment) {      /* one datagram per segment */
                size_t part = length - at < segment ? length - at : segment;
                long long seq = (long long)load_be64(base + at);
                if (part != (size_t)SIZE) mismatch("message size", SIZE, (long long)part);
                if (seq < next || (!udp && seq != next)) mismatch("sequence", next, seq);
                next = seq + 1;
                received++;
            }
        }
        if (udp && (received - credited >= CREDIT_EVERY || next == n)) {
            char credit[8];
            store_be64(credit, (uint64_t)next);
            send(fd, credit, sizeof credit, MSG_NOSIGNAL);
            credited = received;
        }
    }
    printf("{\"elapsed\": %.9f, \"count\": %lld, \"received\": %lld}\n", t_last - t0, n, received);
}

int main(int argc, char **argv) {
    if (argc < 4 || argc > 6) { fprintf(stderr, "usage: %s server|client N FD [SIZE [gso]]\n", argv[0]); return 2; }
    long long n = atoll(argv[2]);
    int fd = atoi(argv[3]);
    if (argc > 4) SIZE = atoi(argv[4]);
    GSO = argc > 5 && strcmp(argv[5], "gso") == 0;
    if (SIZE < 8 || SIZE > MAX_SIZE) { fprintf(stderr, "SIZE must be 8..%d\n", MAX_SIZE); return 2; }
    if (strcmp(argv[1], "server") == 0) server(fd, n); else client(fd, n);
    close(fd);
    return 0;
}
