# io.pyx: the one system-call loop. io_call and io_wait are public C API (csock/_fastio.pxd);
# stream, framing and the batch files also decide with io_may_block whether to release the
# GIL, try small calls with it held (io_try_with_gil, io_call_held_first), check that the fd
# is still theirs (fd_still_ours, _check_still_open) and time with monotonic_ns.
from libc.stdint cimport int64_t
from posix.time cimport clock_gettime, timespec, CLOCK_MONOTONIC
from includes.pysocket cimport CSOCK_SOCKET_FIELDS

# Copies larger than this release the GIL even on a non-blocking socket.
cdef enum:
    _RELEASE_GIL_BYTES = 65536

cdef int _check_still_open(IoWait *w) except -1
cdef Py_ssize_t io_try_with_gil(IoWait *w, syscall_t call, void *op, short events) except -1
cdef Py_ssize_t io_call_held_first(IoWait *w, syscall_t call, void *op, short events, size_t nbytes,
                                   bint may_try) except -1


cdef inline int64_t monotonic_ns() noexcept nogil:
    cdef timespec ts
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return <int64_t>ts.tv_sec * 1000000000 + ts.tv_nsec


cdef inline bint io_may_block(IoWait *w, size_t nbytes) noexcept:
    """Whether a call should release the GIL: the fd blocks, or the copy is large."""
    return w.timeout_ns < 0 or nbytes > _RELEASE_GIL_BYTES


cdef inline bint send_cut_raises(IoWait *w, Py_ssize_t moved) noexcept:
    """Whether a send loop the kernel stopped (IO_AGAIN) raises BlockingIOError rather than
    return the part it moved: when nothing moved, and always on a blocking socket, where only
    SO_SNDTIMEO ends a wait that way (a blocking call sends everything or raises, as the
    stdlib's sendall does then). Non-blocking, a partial count is the call's result."""
    return moved == 0 or w.timeout_ns < 0


cdef inline bint fd_still_ours(IoWait *w) noexcept:
    """The socket still holds the fd this call started with, and close() has not run."""
    if w.closing[0]:
        return False
    return w.sock == NULL or CSOCK_SOCKET_FIELDS(<object>w.sock).sock_fd == w.fd
