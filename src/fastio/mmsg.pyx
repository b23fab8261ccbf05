# Batches of datagrams and records: sendmmsg(2) and recvmmsg(2) (DatagramSocket,
# SeqPacketSocket, RawSocket), one system call for up to MMSG_MAX messages. This file holds
# what the batch files share; datagram.pyx, batch_send.pyx, batch_recv.pyx, offload.pyx
# (GSO/GRO) and metadata.pyx hold the rest.
from includes.socket cimport sendmmsg, recvmmsg, mmsghdr, MSG_NOSIGNAL
from includes.pysocket cimport CSOCK_SOCKET_FIELDS
from includes.socket cimport AF_INET, AF_INET6, SOCK_DGRAM
from includes.socket cimport setsockopt


cdef enum:
    MMSG_MAX = 1024                   # UIO_MAXIOV: the most messages one call takes
    MAX_BATCH = 1 << 20               # items in one send_batch call (ValueError above)
    MAX_RECV_MESSAGES = 1 << 16       # max_messages of one recv_batch call
    MAX_BUFSIZE = 1 << 24             # bufsize of one message
    MAX_SCRATCH = 64 << 20            # receive memory laid out for one recvmmsg
    SCRATCH_AHEAD = 1 << 20           # a receiver's scratch: room for several calls up to this


cdef struct MmsgOp:
    mmsghdr *msgs
    unsigned int count
    int flags


cdef Py_ssize_t sys_sendmmsg(int fd, void *op) noexcept nogil:
    cdef MmsgOp *o = <MmsgOp *>op
    return sendmmsg(fd, o.msgs, o.count, o.flags | MSG_NOSIGNAL | csock_extra_flags)


cdef Py_ssize_t sys_recvmmsg(int fd, void *op) noexcept nogil:
    cdef MmsgOp *o = <MmsgOp *>op
    return recvmmsg(fd, o.msgs, o.count, o.flags | csock_extra_flags, NULL)


cdef int socket_family_type(object sock, int *family, int *kind) except -1:
    if _layout_ok and PyObject_TypeCheck(sock, _socket_type):
        family[0] = CSOCK_SOCKET_FIELDS(sock).sock_family
        kind[0] = CSOCK_SOCKET_FIELDS(sock).sock_type
    else:
        family[0] = sock.family
        kind[0] = sock.type
    return 0


cdef inline bint is_udp(int family, int kind, int proto) noexcept:
    return ((family == AF_INET or family == AF_INET6) and kind == SOCK_DGRAM
            and (proto == 0 or proto == 17))


cdef inline bint set_int_option(int fd, int level, int name, int value) noexcept:
    return setsockopt(fd, level, name, &value, sizeof(value)) == 0
