# stream.pyx: send/recv and the vectored sends. fio_sendall and fio_recv_exactly_into are
# public C API (csock/_fastio.pxd). framing sends and receives through the same system-call
# wrappers and the vectored send; zerocopy resumes a partial vectored send with
# consume_iovecs; mmsg exports receive buffers with get_writable_buffer.
from includes.uio cimport iovec

# One call of send_buffers takes at most this many buffers (ValueError above it, before any
# allocation): each needs a buffer export held for the duration of the call.
cdef enum:
    MAX_BUFFERS_PER_CALL = 1 << 20

cdef struct BufOp:                      # the op of sys_send / sys_recv
    char *buf
    size_t len
    int flags

cdef Py_ssize_t sys_send(int fd, void *op) noexcept nogil
cdef Py_ssize_t sys_recv(int fd, void *op) noexcept nogil
cdef int get_writable_buffer(object obj, Py_buffer *view, str call) except -1
cdef Py_ssize_t sendmsg_iovecs(IoWait *w, iovec *iov, Py_ssize_t count, Py_ssize_t *moved) except -1


cdef inline Py_ssize_t consume_iovecs(iovec *iov, Py_ssize_t first, Py_ssize_t r) noexcept:
    """Drop r bytes the kernel took from the front of iov[first:]; the new first index."""
    while r > 0:
        if <size_t>r >= iov[first].iov_len:
            r -= iov[first].iov_len
            iov[first].iov_len = 0
            first += 1
        else:
            iov[first].iov_base = <char *>iov[first].iov_base + r
            iov[first].iov_len -= r
            r = 0
    return first
