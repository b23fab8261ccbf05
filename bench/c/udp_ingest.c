/* udp-ingest-64: 64-byte datagrams sent round-robin into many bound UDP sockets, drained by one
 * receiver (see bench/ingest.py, whose Python receivers this program's sender also feeds).
 *
 * In phases, so that the receiver's draining is timed alone (a sender and a receiver that run
 * at once on loopback time the sender's wake-ups of the receiver instead): the sender sends
 * PHASE datagrams, then a notice (8 bytes: datagrams sent so far) on the control socket; the
 * receiver, woken by it, starts its clock, reads every socket in rounds until all of them are
 * there, stops its clock and sends the notice back; then the next phase.
 *
 * Sender:    udp_ingest client N SEND_FD:PORT,PORT,...:CONTROL_FD
 *   datagram i carries its sequence number i (8 bytes, big-endian) and goes to 127.0.0.1:PORT
 *   number i % K, with sendmmsg. SO_RCVTIMEO (1 s, set by the runner) on CONTROL_FD.
 * Receiver:  udp_ingest server N FD,FD,...:CONTROL_FD
 *   each round, recvmmsg (MSG_DONTWAIT, up to BATCH) on each socket in turn; a round that finds
 *   nothing while datagrams are missing sleeps in epoll on all of them (1 s without one: they
 *   were lost). Checks every datagram (length, socket, sequence increasing per socket).
 *   Prints {"elapsed": the phases' drain times summed, "count", "received"}. */
#include "common.h"
#include <sys/epoll.h>

#define SIZE 64
#define BATCH 1024
#define MAX_SOCKETS 1024
#define PHASE 1024               /* datagrams per phase: 16 per socket of 64 */

static int parse_fds(char *list, int *out) {
    int k = 0;
    for (char *tok = strtok(list, ","); tok && k < MAX_SOCKETS; tok = strtok(NULL, ","))
        out[k++] = atoi(tok);
    return k;
}

/* the notice sent back for `sent`, waiting at most 60 s */
static void await_drained(int control, long long sent) {
    char c[8];
    for (int waited = 0; waited <= 60;) {
        ssize_t r = recv(control, c, sizeof c, 0);
        if (r == 8 && (long long)load_be64(c) == sent) return;
        if (r < 0 && errno == EAGAIN) waited++;
        else if (r < 0 && errno != EINTR) die("recv notice");
    }
    fprintf(stderr, "the receiver did not drain phase %lld in 60 s\n", sent);
    exit(1);
}

static void client(long long n, char *where) {
    static struct sockaddr_in dest[MAX_SOCKETS];
    static int ports[MAX_SOCKETS];
    static char bufs[BATCH][SIZE];
    static struct iovec iov[BATCH];
    static struct mmsghdr msgs[BATCH];
    int fd = atoi(strtok(where, ":"));
    char *port_list = strtok(NULL, ":");
    int control = atoi(strtok(NULL, ":"));
    int k = parse_fds(port_list, ports);
    long long sent = 0;
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
    await_drained(control, 0);                            /* the receiver is ready */
    while (sent < n) {
        long long m = n - sent < PHASE ? n - sent : PHASE;
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
        char c[8];
        store_be64(c, (uint64_t)sent);
        if (send(control, c, sizeof c, MSG_NOSIGNAL) < 0) die("send notice");
        await_drained(control, sent);
    }
}

static void server(long long n, char *where) {
    static int fds[MAX_SOCKETS];
    static long long next[MAX_SOCKETS];
    static char bufs[BATCH][SIZE + 1];                    /* + 1: a longer datagram shows */
    static struct iovec iov[BATCH];
    static struct mmsghdr msgs[BATCH];
    char *fd_list = strtok(where, ":");
    int control = atoi(strtok(NULL, ":"));               /* before parse_fds: strtok has one state */
    int k = parse_fds(fd_list, fds);
    long long received = 0, lost = 0, sent = 0;
    double elapsed = 0;
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
    send(control, c, sizeof c, MSG_NOSIGNAL);            /* ready */
    while (sent < n) {
        ssize_t got = recv(control, c, sizeof c, 0);      /* the next phase was sent */
        if (got < 0 && errno == EINTR) continue;
        if (got != 8) die("recv notice");
        sent = (long long)load_be64(c);
        double t0 = now();
        long long missing = sent - received - lost;       /* of this phase */
        while (missing > 0) {
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
            received += round;
            missing -= round;
            if (!round && missing > 0) {                  /* not there yet, or lost */
                struct epoll_event ev;
                int r = epoll_wait(ep, &ev, 1, 1000);
                if (r < 0 && errno != EINTR) die("epoll_wait");
                if (r == 0) { lost += missing; break; }   /* a second of silence */
            }
        }
        elapsed += now() - t0;
        if (send(control, c, sizeof c, MSG_NOSIGNAL) < 0) die("send notice");    /* drained */
    }
    printf("{\"elapsed\": %.9f, \"count\": %lld, \"received\": %lld}\n", elapsed, n, received);
}

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: %s server N FD,...:CONTROL_FD | client N FD:PORT,...:CONTROL_FD\n", argv[0]);
        return 2;
    }
    long long n = atoll(argv[2]);
    if (strcmp(argv[1], "server") == 0) server(n, argv[3]); else client(n, argv[3]);
    return 0;
}
