/* One way over a datagram-type socket, 64-byte messages (sequence number first), with
 * sendmmsg/recvmmsg in batches of 1024 (recvmmsg with MSG_WAITFORONE: wait for one, take
 * every one queued).
 *
 * SOCK_SEQPACKET is reliable: the kernel's flow control paces the sender. UDP is not: the
 * receiver returns a credit (8 bytes: the highest sequence seen + 1) at least every
 * CREDIT_EVERY datagrams, and the sender keeps at most WINDOW datagrams beyond the last
 * credit, so the receiver is never overrun; any losses are counted, not hidden. The runner
 * sets SO_RCVTIMEO (1 s) on UDP sockets: a receive that times out means silence.
 *
 * Run as:  dgram_oneway server|client N FD  (FD: one end of a connected pair, from the runner) */
#include "common.h"

#define SIZE 64
#define BATCH 1024
#define CREDIT_EVERY 256

static long long window_for(int fd) {   /* as csock/_bench/workers.py: rcvbuf / 1.5 KiB, <= 8192 */
    int rcvbuf = 0;
    socklen_t len = sizeof rcvbuf;
    getsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, &len);
    long long w = rcvbuf / 1536;
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

static void client(int fd, long long n) {
    static char bufs[BATCH][SIZE];
    static struct iovec iov[BATCH];
    static struct mmsghdr msgs[BATCH];
    int udp = is_udp(fd);
    long long window = window_for(fd), credit = 0, sent = 0;
    for (int i = 0; i < BATCH; i++) {
        memset(bufs[i], 'p', SIZE);
        iov[i].iov_base = bufs[i];
        iov[i].iov_len = SIZE;
        msgs[i].msg_hdr.msg_iov = &iov[i];
        msgs[i].msg_hdr.msg_iovlen = 1;
    }
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
        long long done = 0;
        while (done < k) {
            int r = sendmmsg(fd, msgs + done, (unsigned)(k - done), MSG_NOSIGNAL);
            if (r < 0) { if (errno == EINTR) continue; die("sendmmsg"); }
            done += r;
        }
        sent += k;
    }
}

static void server(int fd, long long n) {
    static char bufs[BATCH][SIZE];
    static struct iovec iov[BATCH];
    static struct mmsghdr msgs[BATCH];
    int udp = is_udp(fd);
    long long received = 0, next = 0, credited = 0;
    double t0 = 0, t_last = 0;
    for (int i = 0; i < BATCH; i++) {
        iov[i].iov_base = bufs[i];
        iov[i].iov_len = SIZE;
        msgs[i].msg_hdr.msg_iov = &iov[i];
        msgs[i].msg_hdr.msg_iovlen = 1;
    }
    while (next < n) {
        int r = recvmmsg(fd, msgs, BATCH, MSG_WAITFORONE, NULL);
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
            long long seq = (long long)load_be64(bufs[i]);
            if (msgs[i].msg_len != SIZE) mismatch("message size", SIZE, msgs[i].msg_len);
            if (seq < next || (!udp && seq != next)) mismatch("sequence", next, seq);
            next = seq + 1;
            received++;
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
    if (argc != 4) { fprintf(stderr, "usage: %s server|client N FD\n", argv[0]); return 2; }
    long long n = atoll(argv[2]);
    int fd = atoi(argv[3]);
    if (strcmp(argv[1], "server") == 0) server(fd, n); else client(fd, n);
    close(fd);
    return 0;
}
