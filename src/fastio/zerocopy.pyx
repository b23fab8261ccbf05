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
#
# The ids count per open file (struct sock), not per fd: every csock socket object on one
# open file in this process (dup(), fromfd) shares one ZeroCopyState, found by the socket's
# inode (_shared; the state's own dup keeps the inode, so the key cannot be reused while it
# lives). Another process's numbering cannot be known: in a forked child a socket open at the
# fork sends copied (never MSG_ZEROCOPY) and its error queue is never read, which would steal
# the parent's completions.
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

import stat as _stat
import weakref as _weakref

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


cdef ZeroCopyState zc_state_held(object sock, IoWait *w):
    """zc_state for a call begun with io_begin, counted in flight around it: its fstat
    releases the GIL, and a close() meanwhile must not free the number it looks at (another
    file's SO_ZEROCOPY would be set, its fd dup'd). EBADF if the socket was closed."""
    cdef ZeroCopyState state
    family = sock.family
    io_enter(w)
    try:
        state = zc_state(sock, w.fd, family)
    finally:
        io_leave(w)
    _check_still_open(w)
    return state


cdef ZeroCopyState zc_state(object sock, int fd, int family):
    """sock's ZeroCopyState, found or made on first use and shared by every csock socket on
    the same open file; None for a stdlib socket."""
    cdef SocketState owner = state_of(sock)
    cdef ZeroCopyState state
    if owner is None:
        return None                                  # a stdlib socket: no zero copy
    state = <ZeroCopyState>owner.zerocopy if owner.zerocopy is not None else None
    if state is not None and state.generation == _fork_generation:
        return state
    # None yet, or one inherited over fork() (the parent's numbering: not ours).
    state = open_file_state(fd, family)
    state.owners += 1
    owner.zerocopy = state
    return state


cdef ZeroCopyState open_file_state(int fd, int family):
    """The ZeroCopyState of fd's open file: the one in use in this process, or a new one (a
    plain-send one for a socket a forked child inherited)."""
    cdef ZeroCopyState state
    key = socket_key(fd)
    if key is None or inherited_over_fork(key):
        return plain_send_state()
    state = _shared.get(key)
    if state is not None:
        return state
    state = new_zerocopy_state(fd, family)
    if state.errfd >= 0:
        _shared[key] = state
    return state


cdef ZeroCopyState plain_send_state():
    """A state that never asks for zero copy, so never reads the error queue."""
    cdef ZeroCopyState state = ZeroCopyState()
    state.mode = -1
    return state


cdef ZeroCopyState new_zerocopy_state(int fd, int family):
    """A state for a socket no one sent zero-copy on yet: SO_ZEROCOPY asked for, fd dup'ed.
    The kernel numbers a file's zero-copy sends from 0 for its whole life, and only once
    SO_ZEROCOPY is on: a file that has it on already (an earlier state of this process, now
    gone, another holder, another process, the caller's setsockopt) may have used numbers
    this state cannot know, and matching completions by number would release buffers early
    or never. Such a file sends copied."""
    cdef ZeroCopyState state = ZeroCopyState()
    cdef int one = 1
    if family != AF_INET and family != AF_INET6 or zerocopy_was_on(fd):
        state.mode = -1
    elif setsockopt(fd, SOL_SOCKET, SO_ZEROCOPY, &one, sizeof(one)) == 0:
        state.errfd = fcntl(fd, F_DUPFD_CLOEXEC, 0)
        state.mode = 1 if state.errfd >= 0 else -1
    else:
        state.mode = -1
    return state


cdef bint zerocopy_was_on(int fd) noexcept:
    """SO_ZEROCOPY is on already (or cannot be read: then as good as on)."""
    cdef int on = 0
    cdef socklen_t size = sizeof(on)
    return getsockopt(fd, SOL_SOCKET, SO_ZEROCOPY, &on, &size) < 0 or on != 0


cdef object socket_key(int fd):
    """(st_dev, st_ino) of fd's socket: the same for every fd on one open file; None if fd is
    not open."""
    try:
        st = _os.fstat(fd)
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


cdef bint inherited_over_fork(object key):
    """Whether this process is a forked child and key's socket was open at the fork."""
    return _inherited_sockets is None or key in _inherited_sockets


def _open_socket_keys():
    """socket_key of every socket open now; None if /proc cannot say (then every socket
    counts as inherited: copied sends are safe)."""
    try:
        names = _os.listdir("/proc/self/fd")
    except OSError:
        return None
    keys = set()
    for name in names:
        try:
            st = _os.fstat(int(name))
        except OSError:
            continue                                 # listdir's own fd, closed since
        if _stat.S_ISSOCK(st.st_mode):
            keys.add((st.st_dev, st.st_ino))
    return frozenset(keys)


cdef object _shared = _weakref.WeakValueDictionary()    # socket_key -> ZeroCopyState
cdef object _inherited_sockets = frozenset()           # open at the last fork() (child only)


cdef list _orphans = []                 # ZeroCopyStates of closed sockets, exports still held


cdef int zerocopy_orphan(object zerocopy) except -1:
    """A socket using this ZeroCopyState is being closed or collected: when it was the last
    one, keep the exports (and the dup of the fd) until the kernel's completions, or drop them
    now if none is pending."""
    cdef ZeroCopyState state = <ZeroCopyState>zerocopy
    if state.generation != _fork_generation:
        return 0                                     # the parent's sends: not ours to read
    if state.owners > 0:
        state.owners -= 1
    if state.owners == 0:
        orphan_if_holding(state)
    drain_orphans()
    return 0


cdef int orphan_if_holding(ZeroCopyState state) except -1:
    """No socket uses state any more: keep it in _orphans while the kernel may read its
    exports."""
    state.drain_orphaned()
    if state.held and not state.orphaned:
        state.orphaned = True
        _orphans.append(state)
    return 0


cdef int drain_orphans() except -1:
    """Release the orphans whose sends have all completed."""
    global _orphans, _orphans_waiting
    cdef ZeroCopyState state
    kept = []
    for state in _orphans:
        state.drain_orphaned()
        if state.held and state.owners == 0:
            kept.append(state)
        else:
            state.orphaned = False              # done, or a dup's socket took it up again
    _orphans = kept
    _orphans_waiting = len(kept) != 0
    return 0


def zerocopy_orphans():
    """How many closed sockets still hold zero-copy buffers the kernel may read (after
    draining the completions that have arrived)."""
    drain_orphans()
    return len(_orphans)


def _zerocopy_after_fork_in_child():
    global _orphans, _orphans_waiting, _inherited_sockets
    _orphans_waiting = False
    _orphans = []                                    # the parent's: their dups close here only
    _shared.clear()
    _inherited_sockets = _open_socket_keys()


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
        if first < n and send_cut_raises(w, moved):
            raise_would_block()                 # (.sent below)
        return moved
    except OSError as error:
        note_sent(error, moved)
        raise
    finally:
        PyMem_Free(iov)
        orphan_if_closed_meanwhile(state)


cdef int orphan_if_closed_meanwhile(ZeroCopyState state) except -1:
    """close() (or collection) in another thread while this send ran found its exports not
    yet held, so did not orphan the state: hand them to the orphans now, or they would be
    released with this call while the kernel still reads them."""
    if state.owners == 0 and state.generation == _fork_generation:
        orphan_if_holding(state)
        drain_orphans()
    return 0


def flush_zerocopy(sock, timeout=None):
    """Wait until the kernel has finished with every zero-copy send's buffers, and release them.

    After it returns, the buffers of earlier ``send_buffers(..., zerocopy=True)`` calls may be
    mutated or resized: those of this socket and of every csock socket on the same open file
    in this process (``dup()``, ``fromfd``), whose completions the kernel numbers together.
    In a forked child, a socket open at the fork sent nothing zero-copy: this returns 0 and
    reads nothing (the completions are the parent's).

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
    """Count the zero-copy sends on this socket's open file (shared with its ``dup()`` copies).

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
    state = zc_state_held(sock, &w)
    if state is None:
        raise TypeError("zerocopy_threshold needs a csock StreamSocket")
    state.threshold = nbytes


cdef ZeroCopyState zc_existing(object sock):
    """sock's ZeroCopyState if it has one of this process (not inherited over fork)."""
    cdef SocketState owner = existing_state(sock)
    cdef ZeroCopyState state
    if owner is None or owner.zerocopy is None:
        return None
    state = <ZeroCopyState>owner.zerocopy
    return state if state.generation == _fork_generation else None
