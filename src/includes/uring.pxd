# csock's own declarations of the io_uring kernel ABI (uring_abi.h): no liburing, and no
# dependence on how new the build machine's <linux/io_uring.h> is.
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t, int32_t, int64_t


cdef extern from "uring_abi.h" nogil:
    struct csock_sqring_offsets:
        uint32_t head, tail, ring_mask, ring_entries, flags, dropped, array

    struct csock_cqring_offsets:
        uint32_t head, tail, ring_mask, ring_entries, overflow, cqes, flags

    struct csock_uring_params:
        uint32_t sq_entries, cq_entries, flags, features
        csock_sqring_offsets sq_off
        csock_cqring_offsets cq_off

    struct csock_uring_sqe:
        uint8_t opcode
        uint8_t flags
        uint16_t ioprio
        int32_t fd
        uint64_t off
        uint64_t addr
        uint32_t len
        uint32_t op_flags
        uint64_t user_data
        uint16_t buf_group
        uint16_t addr_len
        uint32_t optlen

    struct csock_uring_cqe:
        uint64_t user_data
        int32_t res
        uint32_t flags

    struct csock_uring_probe_op:
        uint8_t op
        uint16_t flags

    struct csock_uring_probe:
        uint8_t last_op, ops_len
        csock_uring_probe_op ops[256]

    struct csock_uring_buf:
        uint64_t addr
        uint32_t len
        uint16_t bid
        uint16_t resv

    struct csock_uring_buf_reg:
        uint64_t ring_addr
        uint32_t ring_entries
        uint16_t bgid, flags

    struct csock_uring_recvmsg_out:
        uint32_t namelen, controllen, payloadlen, flags

    struct csock_uring_getevents_arg:
        uint64_t sigmask
        uint32_t sigmask_sz, min_wait_usec
        uint64_t ts

    struct csock_kernel_timespec:
        int64_t tv_sec
        long long tv_nsec

    enum:
        CSOCK_IORING_OFF_SQ_RING
        CSOCK_IORING_OFF_CQ_RING
        CSOCK_IORING_OFF_SQES
        CSOCK_IORING_SETUP_CLAMP
        CSOCK_IORING_SETUP_SUBMIT_ALL
        CSOCK_IORING_SETUP_COOP_TASKRUN
        CSOCK_IORING_SETUP_TASKRUN_FLAG
        CSOCK_IORING_FEAT_SINGLE_MMAP
        CSOCK_IORING_FEAT_NODROP
        CSOCK_IORING_FEAT_SUBMIT_STABLE
        CSOCK_IORING_FEAT_FAST_POLL
        CSOCK_IORING_FEAT_EXT_ARG
        CSOCK_IORING_ENTER_GETEVENTS
        CSOCK_IORING_ENTER_EXT_ARG
        CSOCK_IOSQE_BUFFER_SELECT
        CSOCK_IORING_CQE_F_BUFFER
        CSOCK_IORING_CQE_F_MORE
        CSOCK_IORING_CQE_F_NOTIF
        CSOCK_IORING_CQE_BUFFER_SHIFT
        CSOCK_IORING_RECV_MULTISHOT
        CSOCK_IORING_ACCEPT_MULTISHOT
        CSOCK_IORING_ASYNC_CANCEL_ALL
        CSOCK_IORING_OP_NOP
        CSOCK_IORING_OP_SENDMSG
        CSOCK_IORING_OP_POLL_ADD
        CSOCK_IORING_OP_RECVMSG
        CSOCK_IORING_OP_ACCEPT
        CSOCK_IORING_OP_ASYNC_CANCEL
        CSOCK_IORING_OP_SEND
        CSOCK_IORING_OP_RECV
        CSOCK_IORING_OP_SOCKET
        CSOCK_IORING_OP_SEND_ZC
        CSOCK_IORING_OP_LAST_KNOWN
        CSOCK_IO_URING_OP_SUPPORTED
        CSOCK_IORING_REGISTER_PROBE
        CSOCK_IORING_REGISTER_PBUF_RING
        CSOCK_IORING_UNREGISTER_PBUF_RING

    int csock_io_uring_setup(unsigned entries, csock_uring_params *p)
    int csock_io_uring_enter(int fd, unsigned to_submit, unsigned min_complete,
                             unsigned flags, void *arg, size_t argsz)
    int csock_io_uring_register(int fd, unsigned opcode, void *arg, unsigned nr)
    uint32_t csock_load_acquire(const uint32_t *p)
    void csock_store_release(uint32_t *p, uint32_t v)
    void csock_store_release16(uint16_t *p, uint16_t v)
