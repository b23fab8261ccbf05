/* The io_uring kernel ABI that csock._uring uses, declared here under csock's own names so
 * that the build needs neither liburing nor a <linux/io_uring.h> recent enough to know the
 * newer features: which of them the running kernel has is probed at run time
 * (IORING_REGISTER_PROBE, io_uring_params.features), never assumed from headers.
 * Layouts and numbers follow include/uapi/linux/io_uring.h (stable kernel ABI). */
#ifndef CSOCK_URING_ABI_H
#define CSOCK_URING_ABI_H

#include <stdint.h>
#include <unistd.h>
#include <sys/syscall.h>

#ifndef __NR_io_uring_setup
#define __NR_io_uring_setup 425          /* same number on every architecture since 5.1 */
#endif
#ifndef __NR_io_uring_enter
#define __NR_io_uring_enter 426
#endif
#ifndef __NR_io_uring_register
#define __NR_io_uring_register 427
#endif

struct csock_sqring_offsets {
    uint32_t head, tail, ring_mask, ring_entries, flags, dropped, array, resv1;
    uint64_t user_addr;
};

struct csock_cqring_offsets {
    uint32_t head, tail, ring_mask, ring_entries, overflow, cqes, flags, resv1;
    uint64_t user_addr;
};

struct csock_uring_params {
    uint32_t sq_entries, cq_entries, flags, sq_thread_cpu, sq_thread_idle, features, wq_fd;
    uint32_t resv[3];
    struct csock_sqring_offsets sq_off;
    struct csock_cqring_offsets cq_off;
};

/* struct io_uring_sqe with its unions flattened to the members csock writes. */
struct csock_uring_sqe {
    uint8_t opcode;
    uint8_t flags;
    uint16_t ioprio;         /* recv/send: IORING_RECV_MULTISHOT...; accept: ACCEPT_MULTISHOT */
    int32_t fd;
    uint64_t off;            /* (addr2) SEND_ZC/sendto: the destination sockaddr */
    uint64_t addr;
    uint32_t len;
    uint32_t op_flags;       /* msg_flags, accept_flags, cancel_flags, ... */
    uint64_t user_data;
    uint16_t buf_group;      /* (buf_index) with IOSQE_BUFFER_SELECT: the buffer group */
    uint16_t personality;
    union {
        uint32_t optlen;     /* multishot recv: bytes after which it ends (EINVAL if too old) */
        struct {
            uint16_t addr_len;   /* SEND_ZC/sendto: sockaddr length */
            uint16_t pad3;
        };
    };
    uint64_t addr3;
    uint64_t pad2;
};

struct csock_uring_cqe {
    uint64_t user_data;
    int32_t res;
    uint32_t flags;
};

struct csock_uring_probe_op {
    uint8_t op, resv;
    uint16_t flags;
    uint32_t resv2;
};

struct csock_uring_probe {
    uint8_t last_op, ops_len;
    uint16_t resv;
    uint32_t resv2[3];
    struct csock_uring_probe_op ops[256];
};

struct csock_uring_buf {          /* one provided-buffer ring entry */
    uint64_t addr;
    uint32_t len;
    uint16_t bid;
    uint16_t resv;                /* entry 0's resv is the ring's tail */
};

struct csock_uring_buf_reg {
    uint64_t ring_addr;
    uint32_t ring_entries;
    uint16_t bgid, flags;
    uint64_t resv[3];
};

struct csock_uring_recvmsg_out {  /* heads a multishot recvmsg's buffer: name, control, data */
    uint32_t namelen, controllen, payloadlen, flags;
};

struct csock_uring_getevents_arg {
    uint64_t sigmask;
    uint32_t sigmask_sz, min_wait_usec;
    uint64_t ts;
};

struct csock_kernel_timespec {
    int64_t tv_sec;
    long long tv_nsec;
};

_Static_assert(sizeof(struct csock_uring_params) == 120, "io_uring_params");
_Static_assert(sizeof(struct csock_uring_sqe) == 64, "io_uring_sqe");
_Static_assert(sizeof(struct csock_uring_cqe) == 16, "io_uring_cqe");
_Static_assert(sizeof(struct csock_uring_buf) == 16, "io_uring_buf");
_Static_assert(sizeof(struct csock_uring_buf_reg) == 40, "io_uring_buf_reg");
_Static_assert(sizeof(struct csock_uring_recvmsg_out) == 16, "io_uring_recvmsg_out");
_Static_assert(sizeof(struct csock_uring_getevents_arg) == 24, "io_uring_getevents_arg");

enum {
    CSOCK_IORING_OFF_SQ_RING = 0,
    CSOCK_IORING_OFF_CQ_RING = 0x8000000,
    CSOCK_IORING_OFF_SQES = 0x10000000,

    CSOCK_IORING_SETUP_CLAMP = 1U << 4,
    CSOCK_IORING_SETUP_SUBMIT_ALL = 1U << 7,
    CSOCK_IORING_SETUP_COOP_TASKRUN = 1U << 8,
    CSOCK_IORING_SETUP_TASKRUN_FLAG = 1U << 9,

    CSOCK_IORING_FEAT_SINGLE_MMAP = 1U << 0,
    CSOCK_IORING_FEAT_NODROP = 1U << 1,
    CSOCK_IORING_FEAT_SUBMIT_STABLE = 1U << 2,
    CSOCK_IORING_FEAT_FAST_POLL = 1U << 5,
    CSOCK_IORING_FEAT_EXT_ARG = 1U << 8,

    CSOCK_IORING_ENTER_GETEVENTS = 1U << 0,
    CSOCK_IORING_ENTER_EXT_ARG = 1U << 3,

    CSOCK_IOSQE_BUFFER_SELECT = 1U << 5,

    CSOCK_IORING_CQE_F_BUFFER = 1U << 0,
    CSOCK_IORING_CQE_F_MORE = 1U << 1,
    CSOCK_IORING_CQE_F_NOTIF = 1U << 3,
    CSOCK_IORING_CQE_BUFFER_SHIFT = 16,

    CSOCK_IORING_RECV_MULTISHOT = 1U << 1,
    CSOCK_IORING_ACCEPT_MULTISHOT = 1U << 0,
    CSOCK_IORING_ASYNC_CANCEL_ALL = 1U << 0,

    CSOCK_IORING_OP_NOP = 0,
    CSOCK_IORING_OP_POLL_ADD = 6,
    CSOCK_IORING_OP_SENDMSG = 9,
    CSOCK_IORING_OP_RECVMSG = 10,
    CSOCK_IORING_OP_ACCEPT = 13,
    CSOCK_IORING_OP_ASYNC_CANCEL = 14,
    CSOCK_IORING_OP_SEND = 26,
    CSOCK_IORING_OP_RECV = 27,
    CSOCK_IORING_OP_SOCKET = 45,
    CSOCK_IORING_OP_SEND_ZC = 47,
    CSOCK_IORING_OP_LAST_KNOWN = 64,

    CSOCK_IO_URING_OP_SUPPORTED = 1U << 0,

    CSOCK_IORING_REGISTER_PROBE = 8,
    CSOCK_IORING_REGISTER_PBUF_RING = 22,
    CSOCK_IORING_UNREGISTER_PBUF_RING = 23,
};

static inline int csock_io_uring_setup(unsigned entries, struct csock_uring_params *p) {
    return (int)syscall(__NR_io_uring_setup, entries, p);
}

static inline int csock_io_uring_enter(int fd, unsigned to_submit, unsigned min_complete,
                                       unsigned flags, void *arg, size_t argsz) {
    return (int)syscall(__NR_io_uring_enter, fd, to_submit, min_complete, flags, arg, argsz);
}

static inline int csock_io_uring_register(int fd, unsigned opcode, void *arg, unsigned nr) {
    return (int)syscall(__NR_io_uring_register, fd, opcode, arg, nr);
}

/* The rings are shared with the kernel: the application's stores to a tail (SQ, buffer ring)
 * and its head (CQ) are releases, its loads of the kernel's tail (CQ) and head (SQ) acquires. */
static inline uint32_t csock_load_acquire(const uint32_t *p) {
    return __atomic_load_n(p, __ATOMIC_ACQUIRE);
}
static inline void csock_store_release(uint32_t *p, uint32_t v) {
    __atomic_store_n(p, v, __ATOMIC_RELEASE);
}
static inline void csock_store_release16(uint16_t *p, uint16_t v) {
    __atomic_store_n(p, v, __ATOMIC_RELEASE);
}

#endif
