# MSG_ZEROCOPY sends for StreamSocket.send_buffers(buffers, zerocopy=True)
# (Documentation/networking/msg_zerocopy.rst).
#
# The kernel sends straight from the caller's pages, so each buffer's export (Py_buffer) is
# held until the kernel says it is done with it: every successful sendmsg(MSG_ZEROCOPY) gets
# the next 32-bit id of the socket, and completions arrive on the socket's error queue as
# sock_extended_err records (ee_origin SO_EE_ORIGIN_ZEROCOPY) naming a range of ids
# ee_info..ee_data. The queue is drained (in C, GIL released) before every zero-copy send and
# by flush_zerocopy(). When a completion says the kernel copied after all
# (SO_EE_CODE_ZEROCOPY_COPIED: loopback, a device without scatter/gather), the socket stops
# asking for zero copy: the bookkeeping would only cost.
#
# The exports must outlive the socket object: close() and garbage collection can come before
# the completions. So a socket's ZeroCopyState keeps its own dup(2) of the fd, and one that
# still holds exports when its socket is closed or collected becomes an orphan: its error
# queue is drained (never blocking) on later csock zero-copy calls and closes, and at exit,
# and the dup is closed once every send has completed. Until then the connection stays open:
# the peer sees end of stream only after the kernel is done with the buffers. After fork()
# the child drops its copies of the orphans without reading their queues (the parent's).
from libc.stdint cimport uint32_t, int64_t
from libc.errno cimport ENOBUFS
from includes.socket cimport (sendmsg, recvmsg, msghdr, cmsghdr, CMSG_FIRSTHDR, CMSG_NXTHDR,
                              CMSG_DATA, setsockopt, SOL_SOCKET, SO_ZEROCOPY, MSG_ZEROCOPY,
                              MSG_ERRQUEUE, MSG_DONTWAIT, MSG_NOSIGNAL, AF_INET, AF_INET6)
from includes.inet cimport IPPROTO_IP, IPPROTO_IPV6
from includes.offload cimport (IP_RECVERR, IPV6_RECVERR, sock_extended_err, SO_EE_ORIGIN_ZEROCOPY,
                               SO_EE_CODE_ZEROCOPY_COPIED)
from includes.uio cimport iovec, IOV_MAX
from cpython.buffer cimport PyObject_GetBuffer, PyBuffer_Release, PyBUF_SIMPLE
from cpython.mem cimport PyMem_Malloc, PyMem_Free
from libc.string cimport memcpy, memset
from posix.unistd cimport close as close_fd
from includes.fcntl cimport fcntl, F_DUPFD_CLOEXEC

cdef enum:
    ZC_CONTROL = 128
    # A sendmsg of fewer bytes is copied even with zerocopy=True (the socket's
    # zerocopy_threshold): MSG_ZEROCOPY "is generally only effective at writes over around
    # 10 KB" (msg_zerocopy.rst); below that, pinning pages and reading the completion cost more
    # than the copy. This VM has no NIC that could show the crossover (loopback and veth copy).
    ZEROCOPY_THRESHOLD = 10240


cdef void zc_drain(int fd, ZcOp *o) noexcept nogil:
    """Read zero-copy completions from fd's error queue into o (never blocks)."""
    cdef char control[ZC_CONTROL]
    cdef msghdr m
    cdef cmsghdr *cm
    cdef sock_extended_err ee
    while o.nranges < ZC_RANGES:
        memset(&m, 0, sizeof(m))
        m.msg_control = control
        m.msg_controllen = sizeof(control)
        if recvmsg(fd, &m, MSG_ERRQUEUE | MSG_DONTWAIT) < 0:
            return                                  # EAGAIN: the queue is empty
        cm = CMSG_FIRSTHDR(&m)
        while cm != NULL:
            if (cm.cmsg_level == IPPROTO_IP and cm.cmsg_type == IP_RECVERR) or \
                    (cm.cmsg_level == IPPROTO_IPV6 and cm.cmsg_type == IPV6_RECVERR):
                memcpy(&ee, CMSG_DATA(cm), sizeof(ee))
                if ee.ee_errno == 0 and ee.ee_origin == SO_EE_ORIGIN_ZEROCOPY:
                    if ee.ee_code & SO_EE_CODE_ZEROCOPY_COPIED:
                        o.copied += <uint32_t>(ee.ee_data - ee.ee_info) + 1
                    if o.nranges and o.hi[o.nranges - 1] + 1 == ee.ee_info:
                        o.hi[o.nranges - 1] = ee.ee_data
                    else:
                        o.lo[o.nranges] = ee.ee_info
                        o.hi[o.nranges] = ee.ee_data
                        o.nranges += 1
            cm = CMSG_NXTHDR(&m, cm)


cdef Py_ssize_t sys_sendmsg_zc(int fd, void *op) noexcept nogil:
    cdef ZcOp *o = <ZcOp *>op
    zc_drain(fd, o)
    return sendmsg(fd, o.msg, o.flags | MSG_NOSIGNAL)


cdef Py_ssize_t sys_drain_zc(int fd, void *op) noexcept nogil:
    """io_call op for flush_zerocopy: EAGAIN until at least one completion was read."""
    cdef ZcOp *o = <ZcOp *>op
    zc_drain(fd, o)
    if o.nranges:
        return 0
    errno_set_eagain()
    return -1


cdef extern from *:
    """
    #include <errno.h>
    static inline void errno_set_eagain(void) { errno = EAGAIN; }
    """
    void errno_set_eagain() noexcept nogil


@cython.final
cdef class _Export:
    """One buffer export, released when the last zero-copy send using it completes."""
    cdef Py_buffer view
    cdef bint held

    def __dealloc__(self):
        if self.held:
            PyBuffer_Release(&self.view)


@cython.final
cdef class ZeroCopyState:
    """A stream socket's MSG_ZEROCOPY bookkeeping (in its SocketState). Fields: zerocopy.pxd."""

    def __cinit__(self):
        self.held = {}
        self.threshold = ZEROCOPY_THRESHOLD
        self.errfd = -1
        self.generation = _fork_generation

    def __dealloc__(self):
        if self.errfd >= 0:
            close_fd(self.errfd)

    cdef int drain_orphaned(self) except -1:
        """Read the completions queued for an orphan (never blocks)."""
        cdef ZcOp op
        memset(&op, 0, sizeof(op))
        while self.held and self.errfd >= 0:
            zc_drain(self.errfd, &op)
            if not op.nranges:
                break
            self.absorb(&op)
        return 0

    cdef int absorb(self, ZcOp *o) except -1:
        """Forget the ids the drained completions name (their exports go when unused)."""
        cdef int i
        cdef uint32_t k, n
        for i in range(o.nranges):
            n = <uint32_t>(o.hi[i] - o.lo[i]) + 1
            k = o.lo[i]
            while n:
                if self.held.pop(k, None) is not None:
                    self.completed += 1
                k += 1
                n -= 1
        if o.copied:
            self.copied += o.copied
            self.copying = True
        o.nranges = 0
        o.copied = 0
        return 0


cdef ZeroCopyState zc_state(object sock, int fd, int family):
    """sock's ZeroCopyState, made (SO_ZEROCOPY asked for, the fd dup'ed) on first use; None
    for a stdlib socket."""
    cdef SocketState owner = state_of(sock)
    cdef ZeroCopyState state
    cdef int one = 1
    if owner is None:
        return None                                  # a stdlib socket: no zero copy
    if owner.zerocopy is not None:
        return owner.zerocopy
    state = ZeroCopyState()
    if family != AF_INET and family != AF_INET6:
        state.mode = -1
    elif setsockopt(fd, SOL_SOCKET, SO_ZEROCOPY, &one, sizeof(one)) == 0:
        state.errfd = fcntl(fd, F_DUPFD_CLOEXEC, 0)
        state.mode = 1 if state.errfd >= 0 else -1
    else:
        state.mode = -1
    owner.zerocopy = state
    return state


cdef list _orphans = []                 # ZeroCopyStates of closed sockets, exports still held


cdef int zerocopy_orphan(object zerocopy) except -1:
    """The socket of this ZeroCopyState is being closed or collected: keep its exports (and
    its dup of the fd) until the kernel's completions, or drop them now if none is pending."""
    cdef ZeroCopyState state = <ZeroCopyState>zerocopy
    if state.generation != _fork_generation:
        return 0                                     # the parent's sends: not ours to read
    global _orphans_waiting
    state.drain_orphaned()
    if state.held:
        _orphans.append(state)
    drain_orphans()
    return 0


cdef int drain_orphans() except -1:
    """Release the orphans whose sends have all completed."""
    global _orphans, _orphans_waiting
    cdef ZeroCopyState state
    kept = []
    for state in _orphans:
        state.drain_orphaned()
        if state.held:
            kept.append(state)
    _orphans = kept
    _orphans_waiting = len(kept) != 0
    return 0


def zerocopy_orphans():
    """How many closed sockets still hold zero-copy buffers the kernel may read (after
    draining the completions that have arrived)."""
    drain_orphans()
    return len(_orphans)


def _zerocopy_after_fork_in_child():
    global _orphans, _orphans_waiting
    _orphans_waiting = False
    _orphans = []                                    # the parent's: their dups close here only


def _zerocopy_at_exit():
    drain_orphans()


_os.register_at_fork(after_in_child=_zerocopy_after_fork_in_child)
import atexit as _atexit
_atexit.register(_zerocopy_at_exit)


cdef Py_ssize_t zc_send_buffers(object sock, IoWait *w, ZeroCopyState state, tuple items) except -1:
    """send_buffers with MSG_ZEROCOPY: like sendmsg_iovecs, but each call's buffers are held
    (state.held[id]) until its completion arrives."""
    cdef Py_ssize_t n = len(items), i, first = 0, last, r, total, moved = 0, count
    cdef iovec *iov = <iovec *>PyMem_Malloc(max(n, 1) * sizeof(iovec))
    cdef msghdr msg
    cdef ZcOp op
    cdef _Export e
    cdef list exports = []
    cdef size_t left
    try:
        if iov == NULL:
            raise MemoryError()
        for i in range(n):                  # every export first: bad items fail before any send
            e = _Export.__new__(_Export)
            PyObject_GetBuffer(items[i], &e.view, PyBUF_SIMPLE)
            e.held = True
            exports.append(e)
            iov[i].iov_base = e.view.buf
            iov[i].iov_len = e.view.len
        memset(&msg, 0, sizeof(msg))
        memset(&op, 0, sizeof(op))
        op.msg = &msg
        while first < n:
            if iov[first].iov_len == 0:
                first += 1
                continue
            count = min(n - first, <Py_ssize_t>IOV_MAX)
            msg.msg_iov = &iov[first]
            msg.msg_iovlen = count
            total = 0
            for i in range(count):
                total += iov[first + i].iov_len
            op.flags = MSG_ZEROCOPY if not state.copying and total >= state.threshold else 0
            try:
                r = io_call(w, sys_sendmsg_zc, &op, POLLOUT, True)
            except OSError as error:
                state.absorb(&op)
                if error.errno == ENOBUFS and op.flags:
                    # Too many notifications outstanding (optmem): this one is copied.
                    op.flags = 0
                    r = io_call(w, sys_sendmsg_zc, &op, POLLOUT, True)
                else:
                    raise
            state.absorb(&op)
            if r == IO_AGAIN:
                break
            moved += r
            if op.flags and r > 0:          # the kernel now refers to these buffers' pages
                left = r
                last = first
                while last < n and left > iov[last].iov_len:
                    left -= iov[last].iov_len
                    last += 1
                state.held[state.next_id] = exports[first:last + 1]
                state.next_id += 1
                state.sends += 1
            first = consume_iovecs(iov, first, r)
        if moved == 0 and first < n:
            raise_would_block()
        return moved
    except OSError as error:
        note_sent(error, moved)
        raise
    finally:
        PyMem_Free(iov)


def flush_zerocopy(sock, timeout=None):
    """Wait until the kernel has finished with every zero-copy send's buffers, and release them.

    After it returns, the buffers of earlier ``send_buffers(..., zerocopy=True)`` calls may be
    mutated or resized.

    Parameters
    ----------
    timeout : float or None, optional
        Seconds to wait at most (None: no limit).

    Returns
    -------
    int
        How many zero-copy sends completed.

    Raises
    ------
    TimeoutError
        The timeout passed with sends still pending.

    Notes
    -----
    Reads the completions from the socket's error queue (recvmsg(2) ``MSG_ERRQUEUE``), polling
    for more while some are pending.
    """
    cdef IoWait w
    cdef ZcOp op
    cdef ZeroCopyState state = zc_existing(sock)
    cdef Py_ssize_t before
    drain_orphans()
    if state is None or not state.held:
        return 0
    before = state.completed
    io_begin(sock, &w)
    w.spin_ns = 0
    if timeout is None:
        w.timeout_ns = 1 << 62
    else:
        if timeout < 0:
            raise ValueError("timeout must be non-negative or None")
        w.timeout_ns = <int64_t>(timeout * 1e9)
    memset(&op, 0, sizeof(op))
    while state.held:
        if w.timeout_ns == 0:
            sys_drain_zc(w.fd, &op)
            state.absorb(&op)
            if state.held:
                raise_timeout()
            break
        io_call(&w, sys_drain_zc, &op, 0, True)   # poll() reports POLLERR: completions queued
        state.absorb(&op)
    return state.completed - before


def zerocopy_stats(sock):
    """Count this socket's zero-copy sends.

    Returns
    -------
    dict
        ``sends`` (zero-copy sendmsg calls), ``completed``, ``copied`` (sends the kernel copied
        after all), ``pending`` (still holding buffers) and ``active`` (still asking for zero
        copy).
    """
    cdef ZeroCopyState state = zc_existing(sock)
    if state is None:
        return {"sends": 0, "completed": 0, "copied": 0, "pending": 0, "active": False}
    return {"sends": state.sends, "completed": state.completed, "copied": state.copied,
            "pending": len(state.held), "active": state.mode == 1 and not state.copying}


def zerocopy_threshold(sock):
    """zerocopy_threshold(sock) -> int: with zerocopy=True, send_buffers copies a sendmsg(2) of
    fewer bytes than this (default 10240)."""
    cdef ZeroCopyState state = zc_existing(sock)
    return ZEROCOPY_THRESHOLD if state is None else state.threshold


def set_zerocopy_threshold(sock, Py_ssize_t nbytes):
    """set_zerocopy_threshold(sock, nbytes): see zerocopy_threshold (0: every send zero-copy)."""
    cdef IoWait w
    cdef ZeroCopyState state
    if nbytes < 0:
        raise ValueError("zerocopy_threshold must be non-negative")
    io_begin(sock, &w)
    state = zc_state(sock, w.fd, sock.family)
    if state is None:
        raise TypeError("zerocopy_threshold needs a csock StreamSocket")
    state.threshold = nbytes


cdef ZeroCopyState zc_existing(object sock):
    cdef SocketState owner = existing_state(sock)
    return None if owner is None else owner.zerocopy
