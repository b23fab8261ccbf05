/* udp-ingest-64: 64-byte datagrams sent round-robin into many bound UDP sockets, drained by one
 * receiver (see bench/ingest.py, whose Python receivers this program's sender also feeds).
 *
 * Sender:    udp_ingest client N SEND_FD:PORT,PORT,...:CREDIT_FD
 *   datagram i carries its sequence number i (8 bytes, big-endian) and goes to 127.0.0.1:PORT
 *   number i % K, with sendmmsg in batches of BATCH; at most WINDOW datagrams beyond the
 *   receiver's last credit (8 bytes: datagrams received). SO_RCVTIMEO (1 s, set by the runner)
 *   on CREDIT_FD: silence means what is in flight was lost.
 * Receiver:  udp_ingest server N FD,FD,...:CREDIT_FD
 *   each round, recvmmsg (MSG_DONTWAIT, up to BATCH) on each socket in turn; a round that finds
 *   nothing sleeps in epoll on all of them. Checks every datagram (length, socket, sequence
 *   increasing per socket); a credit at least every CREDIT_EVERY datagrams; 1 s of silence
 *   ends the run. Prints {"elapsed", "count", "received"}, timed from the first datagram. */
#include "common.h"
#include <sys/epoll.h>

#define SIZE 64
#define BATCH 1024
#define MAX_SOCKETS 1024
#define WINDOW 16384
#define CREDIT_EVERY 1024

static int parse_fds(char *list, int *out) {
    int k = 0;
    for (char *tok = strtok(list, ","); tok && k < MAX_SOCKETS; tok = strtok(NULL, ","))
        out[k++] = atoi(tok);
    return k;
}

static void client(long long n, char *where) {
    static struct sockaddr_in dest[MAX_SOCKETS];
    static int ports[MAX_SOCKETS];
    static char bufs[BATCH][SIZE];
    static struct iovec iov[BATCH];
    static struct mmsghdr msgs[BATCH];
    int fd = atoi(strtok(where, ":"));
    char *port_list = strtok(NULL, ":");
    int credit_fd = atoi(strtok(NULL, ":"));
    int k = parse_fds(port_list, ports);
    long long credit = 0, sent = 0;
    for (int i = 0; i < k; i++) {
        dest[i].sin_family = AF_INET;
        dest[i].sin_port = htons((uint16_t)ports[i]);
        dest[i].sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    }
    for (int j = 0; j < BATCH; j++) {
        memset(bufs[j], 'p', SIZE);
        iov[j].iov_base = bufs[j];
        iov[j].iov_len = SIZE;
    }
    char c[8];
    for (int waited = 0;; waited++) {                     /* the receiver's "ready": credit 0 */
        ssize_t r = recv(credit_fd, c, sizeof c, 0);
        if (r == 8) break;
        if (r < 0 && errno != EAGAIN && errno != EINTR) die("recv ready");
        if (waited > 60) { fprintf(stderr, "the receiver was not ready in 60 s\n"); exit(1); }
    }
    while (sent < n) {
        for (;;) {                                        /* the newest credit queued */
            ssize_t r = recv(credit_fd, c, sizeof c, MSG_DONTWAIT);
            if (r == 8) { long long v = (long long)load_be64(c); if (v > credit) credit = v; continue; }
            if (r < 0 && errno == EINTR) continue;
            break;
        }
        if (sent - credit >= WINDOW) {                    /* window full: wait for a credit */
            ssize_t r = recv(credit_fd, c, sizeof c, 0);
            if (r == 8) { long long v = (long long)load_be64(c); if (v > credit) credit = v; }
            else if (r < 0 && errno == EAGAIN) credit = sent;   /* silence: in flight was lost */
            else if (r < 0 && errno != EINTR) die("recv credit");
            continue;
        }
        long long m = n - sent;
        if (m > BATCH) m = BATCH;
        if (m > WINDOW - (sent - credit)) m = WINDOW - (sent - credit);
        for (long long j = 0; j < m; j++) {
            long long seq = sent + j;
            store_be64(bufs[j], (uint64_t)seq);
            memset(&msgs[j].msg_hdr, 0, sizeof msgs[j].msg_hdr);
            msgs[j].msg_hdr.msg_name = &dest[seq % k];
            msgs[j].msg_hdr.msg_namelen = sizeof dest[0];
            msgs[j].msg_hdr.msg_iov = &iov[j];
            msgs[j].msg_hdr.msg_iovlen = 1;
        }
        int done = 0;
        while (done < m) {
            int r = sendmmsg(fd, msgs + done, (unsigned)(m - done), 0);
            if (r < 0) { if (errno == EINTR) continue; die("sendmmsg"); }
            done += r;
        }
        sent += m;
    }
}

static void server(long long n, char *where) {
    static int fds[MAX_SOCKETS];
    static long long next[MAX_SOCKETS];
    static char bufs[BATCH][SIZE + 1];                    /* + 1: a longer datagram shows */
    static struct iovec iov[BATCH];
    static struct mmsghdr msgs[BATCH];
    char *fd_list = strtok(where, ":");
    int credit_fd = atoi(strtok(NULL, ":"));           /* before parse_fds: strtok has one state */
    int k = parse_fds(fd_list, fds);
    long long received = 0, credited = 0;
    double t0 = 0, t_last = 0, started = now();
    int ep = epoll_create1(0);
    if (ep < 0) die("epoll_create1");
    for (int i = 0; i < k; i++) {
        struct epoll_event ev = {.events = EPOLLIN, .data.u32 = (uint32_t)i};
        if (epoll_ctl(ep, EPOLL_CTL_ADD, fds[i], &ev) < 0) die("epoll_ctl");
        next[i] = i;
    }
    for (int j = 0; j < BATCH; j++) {
        iov[j].iov_base = bufs[j];
        iov[j].iov_len = SIZE + 1;
        msgs[j].msg_hdr.msg_iov = &iov[j];
        msgs[j].msg_hdr.msg_iovlen = 1;
    }
    char c[8];
    store_be64(c, 0);
    send(credit_fd, c, sizeof c, MSG_NOSIGNAL);           /* ready */
    while (received < n) {
        long long round = 0;
        for (int i = 0; i < k; i++) {
            int r = recvmmsg(fds[i], msgs, BATCH, MSG_DONTWAIT, NULL);
            if (r < 0) {
                if (errno == EAGAIN || errno == EINTR) continue;
                die("recvmmsg");
            }
            for (int j = 0; j < r; j++) {
                long long seq = (long long)load_be64(bufs[j]);
                if (msgs[j].msg_len != SIZE) mismatch("datagram length", SIZE, msgs[j].msg_len);
                if (seq < next[i] || seq % k != i) mismatch("sequence", next[i], seq);
                next[i] = seq + k;
            }
            round += r;
        }
        if (round) {
            t_last = now();
            if (!t0) t0 = t_last;
            received += round;
            if (received - credited >= CREDIT_EVERY || received == n) {
                store_be64(c, (uint64_t)received);
                send(credit_fd, c, sizeof c, MSG_NOSIGNAL);
                credited = received;
            }
            continue;
        }
        struct epoll_event ev;
        int r = epoll_wait(ep, &ev, 1, 1000);
        if (r < 0 && errno != EINTR) die("epoll_wait");
        if (r == 0 && received) break;                    /* silence: the rest was lost */
        if (r == 0 && now() - started > 60) { fprintf(stderr, "nothing arrived in 60 s\n"); exit(1); }
    }
    printf("{\"elapsed\": %.9f, \"count\": %lld, \"received\": %lld}\n", t_last - t0, n, received);
}

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: %s server N FD,...:CREDIT_FD | client N FD:PORT,...:CREDIT_FD\n", argv[0]);
        return 2;
    }
    long long n = atoll(argv[2]);
    if (strcmp(argv[1], "server") == 0) server(n, argv[3]); else client(n, argv[3]);
    return 0;
}
