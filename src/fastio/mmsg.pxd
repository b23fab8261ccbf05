# mmsg.pyx: what the batch files (datagram, batch_send, batch_recv, offload, metadata) share:
# the sendmmsg/recvmmsg system-call wrappers and their op, the batch limits, and small socket
# queries. spp's send_records / recv_records batch through them as well.
from includes.socket cimport mmsghdr, setsockopt, AF_INET, AF_INET6, SOCK_DGRAM

cdef enum:
    MMSG_MAX = 1024                   # UIO_MAXIOV: the most messages one call takes
    MAX_BATCH = 1 << 20               # items in one send_batch call (ValueError above)
    MAX_RECV_MESSAGES = 1 << 16       # max_messages of one recv_batch call
    MAX_BUFSIZE = 1 << 24             # bufsize of one message
    MAX_SCRATCH = 64 << 20            # receive memory laid out for one recvmmsg
    SCRATCH_AHEAD = 1 << 20           # a receiver's scratch: room for several calls up to this

cdef struct MmsgOp:                   # the op of sys_sendmmsg / sys_recvmmsg
    mmsghdr *msgs
    unsigned int count
    int flags

cdef Py_ssize_t sys_sendmmsg(int fd, void *op) noexcept nogil
cdef Py_ssize_t sys_recvmmsg(int fd, void *op) noexcept nogil
cdef int socket_family_type(object sock, int *family, int *kind) except -1


cdef inline bint is_udp(int family, int kind, int proto) noexcept:
    return ((family == AF_INET or family == AF_INET6) and kind == SOCK_DGRAM
            and (proto == 0 or proto == 17))


cdef inline bint set_int_option(int fd, int level, int name, int value) noexcept:
    return setsockopt(fd, level, name, &value, sizeof(value)) == 0
