# Batches of datagrams and records: sendmmsg(2) and recvmmsg(2) (DatagramSocket,
# SeqPacketSocket, RawSocket), one system call for up to MMSG_MAX messages. This file holds
# what the batch files share; datagram.pyx, batch_send.pyx, batch_recv.pyx, offload.pyx
# (GSO/GRO) and metadata.pyx hold the rest. The limits, MmsgOp, is_udp and set_int_option
# are in mmsg.pxd.
from includes.socket cimport sendmmsg, recvmmsg, MSG_NOSIGNAL
from includes.pysocket cimport CSOCK_SOCKET_FIELDS


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
