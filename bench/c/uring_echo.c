/* The C limit row of the echo workloads: a framed echo server on io_uring through the raw
 * system calls (no liburing; the ABI from csock's own src/includes/uring_abi.h).
 *
 * Run as:  uring_echo server N PORT   (N is not used: the client decides how much is echoed)
 * Binds 127.0.0.1:PORT with SO_REUSEPORT, prints "ready", and echoes every whole frame (4-byte
 * big-endian length, then that many bytes, as csock.FramedStream) back on its connection until
 * its stdin closes. One multishot accept yields the connections; each connection has one
 * request in flight at a time: a receive into its buffer, then one send of every whole frame
 * received (the partial frame after them stays for the next receive), then the next receive.
 * Completions are reaped in batches and every request they lead to goes out with the next
 * io_uring_enter, which also waits for the next completion: one system call per batch. */
#include "common.h"
#include "../../src/includes/uring_abi.h"

#include <poll.h>
#include <sys/mman.h>
#include <sys/resource.h>

#define OP_POLL_ADD 6            /* IORING_OP_POLL_ADD (5.1), not among csock's own opcodes */
#define ENTRIES 4096
#define BUF (64 * 1024)          /* per connection, each way: a frame is at most BUF - 4 bytes */
#define MAX_FDS 65536

enum { ACCEPT = 1, RECV, SEND, STDIN };

static struct {
    int fd;
    unsigned *sq_head, *sq_tail, *sq_mask, *cq_head, *cq_tail, *cq_mask;
    unsigned entries, tail, submitted;
    struct csock_uring_sqe *sqes;
    struct csock_uring_cqe *cqes;
} ring;

struct conn {
    char *in, *out;              /* receive into in; send whole frames from out (swapped) */
    size_t in_len, out_len, out_sent;
};

static struct conn *conns[MAX_FDS];

static void ring_setup(void) {
    struct csock_uring_params p;
    memset(&p, 0, sizeof p);
    ring.fd = csock_io_uring_setup(ENTRIES, &p);
    if (ring.fd < 0) die("io_uring_setup");
    if (!(p.features & CSOCK_IORING_FEAT_SINGLE_MMAP)) { fprintf(stderr, "kernel too old\n"); exit(2); }
    size_t sq_size = p.sq_off.array + p.sq_entries * sizeof(unsigned);
    size_t cq_size = p.cq_off.cqes + p.cq_entries * sizeof(struct csock_uring_cqe);
    size_t size = sq_size > cq_size ? sq_size : cq_size;
    char *rings = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, ring.fd,
                       CSOCK_IORING_OFF_SQ_RING);
    ring.sqes = mmap(NULL, p.sq_entries * sizeof(struct csock_uring_sqe), PROT_READ | PROT_WRITE,
                     MAP_SHARED | MAP_POPULATE, ring.fd, CSOCK_IORING_OFF_SQES);
    if (rings == MAP_FAILED || ring.sqes == MAP_FAILED) die("mmap");
    ring.sq_head = (unsigned *)(rings + p.sq_off.head);
    ring.sq_tail = (unsigned *)(rings + p.sq_off.tail);
    ring.sq_mask = (unsigned *)(rings + p.sq_off.ring_mask);
    ring.cq_head = (unsigned *)(rings + p.cq_off.head);
    ring.cq_tail = (unsigned *)(rings + p.cq_off.tail);
    ring.cq_mask = (unsigned *)(rings + p.cq_off.ring_mask);
    ring.cqes = (struct csock_uring_cqe *)(rings + p.cq_off.cqes);
    ring.entries = p.sq_entries;
    unsigned *array = (unsigned *)(rings + p.sq_off.array);
    for (unsigned i = 0; i < p.sq_entries; i++) array[i] = i;      /* SQE i in slot i, always */
    ring.tail = ring.submitted = *ring.sq_tail;
}

/* hand the queued SQEs to the kernel; with wait, also sleep until a completion is posted */
static void enter(int wait) {
    csock_store_release(ring.sq_tail, ring.tail);
    for (;;) {
        int r = csock_io_uring_enter(ring.fd, ring.tail - ring.submitted, wait ? 1 : 0,
                                     wait ? CSOCK_IORING_ENTER_GETEVENTS : 0, NULL, 0);
        if (r >= 0) { ring.submitted += (unsigned)r; return; }
        if (errno != EINTR && errno != EBUSY && errno != EAGAIN) die("io_uring_enter");
        if (errno != EINTR) return;                 /* CQ overflow backlog: reap first */
    }
}

static struct csock_uring_sqe *sqe(uint8_t op, int fd, uint64_t user_data) {
    if (ring.tail - csock_load_acquire(ring.sq_head) >= ring.entries) enter(0);     /* full */
    struct csock_uring_sqe *s = &ring.sqes[ring.tail++ & *ring.sq_mask];
    memset(s, 0, sizeof *s);
    s->opcode = op;
    s->fd = fd;
    s->user_data = user_data;
    return s;
}

static uint64_t tag(int kind, int fd) { return (uint64_t)kind << 32 | (uint32_t)fd; }

static void arm_accept(int listener) {
    sqe(CSOCK_IORING_OP_ACCEPT, listener, tag(ACCEPT, listener))->ioprio =
        CSOCK_IORING_ACCEPT_MULTISHOT;
}

static void arm_recv(int fd) {
    struct conn *c = conns[fd];
    struct csock_uring_sqe *s = sqe(CSOCK_IORING_OP_RECV, fd, tag(RECV, fd));
    s->addr = (uint64_t)(uintptr_t)(c->in + c->in_len);
    s->len = (uint32_t)(BUF - c->in_len);
}

static void arm_send(int fd) {
    struct conn *c = conns[fd];
    struct csock_uring_sqe *s = sqe(CSOCK_IORING_OP_SEND, fd, tag(SEND, fd));
    s->addr = (uint64_t)(uintptr_t)(c->out + c->out_sent);
    s->len = (uint32_t)(c->out_len - c->out_sent);
    s->op_flags = MSG_NOSIGNAL | MSG_WAITALL;
}

static void drop(int fd) {
    free(conns[fd]->in);
    free(conns[fd]->out);
    free(conns[fd]);
    conns[fd] = NULL;
    close(fd);
}

static void accepted(int fd) {
    int one = 1;
    if (fd >= MAX_FDS) { fprintf(stderr, "fd %d beyond %d\n", fd, MAX_FDS); exit(2); }
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct conn *c = calloc(1, sizeof *c);
    if (!c || !(c->in = malloc(BUF)) || !(c->out = malloc(BUF))) die("malloc");
    conns[fd] = c;
    arm_recv(fd);
}

/* whole frames received: swap them into out and send them; the partial one stays in in */
static void received(int fd, size_t n) {
    struct conn *c = conns[fd];
    size_t whole = 0;
    c->in_len += n;
    while (c->in_len - whole >= 4) {
        uint32_t length;
        memcpy(&length, c->in + whole, 4);
        length = ntohl(length);
        if (length > BUF - 4) mismatch("frame length at most", BUF - 4, length);
        if (c->in_len - whole < 4 + (size_t)length) break;
        whole += 4 + length;
    }
    if (!whole) { arm_recv(fd); return; }
    char *frames = c->in;
    c->in = c->out;
    c->out = frames;
    c->in_len -= whole;
    memcpy(c->in, frames + whole, c->in_len);
    c->out_len = whole;
    c->out_sent = 0;
    arm_send(fd);
}

static void complete(struct csock_uring_cqe *cqe, int listener) {
    int kind = (int)(cqe->user_data >> 32), fd = (int)(uint32_t)cqe->user_data, res = cqe->res;
    switch (kind) {
    case ACCEPT:
        if (res >= 0) accepted(res);
        else if (res != -EAGAIN && res != -ECONNABORTED && res != -EINTR) {
            errno = -res; die("accept");
        }
        if (!(cqe->flags & CSOCK_IORING_CQE_F_MORE)) arm_accept(listener);
        break;
    case RECV:
        if (res <= 0) drop(fd);                     /* end of stream or reset: nothing in flight */
        else received(fd, (size_t)res);
        break;
    case SEND:
        if (res < 0) { drop(fd); break; }
        conns[fd]->out_sent += (size_t)res;
        if (conns[fd]->out_sent < conns[fd]->out_len) arm_send(fd);
        else arm_recv(fd);
        break;
    case STDIN:                                     /* the runner closed stdin: stop */
        exit(0);
    }
}

static int listen_on(int port) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), one = 1;
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd < 0) die("socket");
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
    if (bind(fd, (struct sockaddr *)&sa, sizeof sa) < 0 || listen(fd, 4096) < 0) die("listen");
    return fd;
}

int main(int argc, char **argv) {
    if (argc != 4 || strcmp(argv[1], "server") != 0) {
        fprintf(stderr, "usage: %s server N PORT\n", argv[0]);
        return 2;
    }
    struct rlimit files;
    if (getrlimit(RLIMIT_NOFILE, &files) == 0) {       /* a connection per client task */
        files.rlim_cur = files.rlim_max < MAX_FDS ? files.rlim_max : MAX_FDS;
        setrlimit(RLIMIT_NOFILE, &files);
    }
    (void)now;                                      /* common.h's clock: not needed here */
    ring_setup();
    int listener = listen_on(atoi(argv[3]));
    arm_accept(listener);
    struct csock_uring_sqe *s = sqe(OP_POLL_ADD, 0, tag(STDIN, 0));
    s->op_flags = POLLIN;                           /* poll32_events: EOF reads as readable */
    enter(0);
    printf("ready\n");
    fflush(stdout);
    for (;;) {
        enter(1);
        unsigned head = *ring.cq_head, tail = csock_load_acquire(ring.cq_tail);
        for (; head != tail; head++) complete(&ring.cqes[head & *ring.cq_mask], listener);
        csock_store_release(ring.cq_head, head);        /* the batch's slots are free again */
    }
}
