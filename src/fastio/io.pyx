# The one system-call loop. Every socket operation in csock goes through io_call().
#
# Rules (the stdlib's, PEP 475 included):
#  * EINTR: run signal handlers (PyErr_CheckSignals), then retry; a handler that raises
#    (KeyboardInterrupt on Ctrl-C) ends the call.
#  * EAGAIN on a socket with a timeout: poll() until ready or until the call's deadline (one
#    deadline per call, set at the first wait), then TimeoutError("timed out").
#  * EAGAIN on a non-blocking socket, or on a blocking one with SO_RCVTIMEO/SO_SNDTIMEO set:
#    IO_AGAIN; the caller returns what it moved or raises BlockingIOError.
#  * spin_us (IoWait.spin_ns, from the socket): before sleeping, busy-poll for up to spin_us:
#    a blocking receive is retried with MSG_DONTWAIT (io_spin_receive; GIL released, except
#    for the first 10 µs in a process with one Python thread), a wait for a timeout polls
#    with a zero timeout (io_spin, GIL released). The deadline bounds the spin, so timeouts
#    stay exact.
# Unlike the stdlib, a socket with a timeout tries the system call before polling, so a ready
# socket costs one system call, not two.
from libc.errno cimport errno, EINTR, EAGAIN, EBADF
from includes.pysocket cimport CSOCK_SOCKET_FIELDS
from includes.socket cimport shutdown, SHUT_RDWR
from libc.limits cimport INT_MAX
from cpython.exc cimport PyErr_CheckSignals
from posix.time cimport clock_gettime, timespec, CLOCK_MONOTONIC
from includes.poll cimport poll, pollfd, POLLIN, POLLOUT
from includes.spin cimport csock_extra_flags
from includes.socket cimport MSG_DONTWAIT
from includes.pyapi cimport PyInterpreterState_Get
from cpython.pystate cimport PyInterpreterState_ThreadHead, PyThreadState_Next

# Copies larger than this release the GIL even on a non-blocking socket.
cdef enum:
    _RELEASE_GIL_BYTES = 65536
    _TRACKED_FDS = 65536

# How many csock calls are blocked in the kernel on each fd (changed only with the GIL held).
# close(2) from another thread does not wake a thread blocked in recv(2) or poll(2) on Linux:
# csock's close() shuts such a socket down first (wake_blocked_calls), and the woken call
# finds its socket's fd gone and raises EBADF instead of touching a number that may already
# name another file.
cdef unsigned short _blocked[_TRACKED_FDS]


cdef inline void _enter_kernel(int fd) noexcept:
    if 0 <= fd < _TRACKED_FDS:
        _blocked[fd] += 1


cdef inline void _leave_kernel(int fd) noexcept:
    if 0 <= fd < _TRACKED_FDS and _blocked[fd]:
        _blocked[fd] -= 1


cdef inline bint socket_still_open(IoWait *w) noexcept:
    return w.sock == NULL or CSOCK_SOCKET_FIELDS(<object>w.sock).sock_fd == w.fd


cdef int _check_still_open(IoWait *w) except -1:
    """EBADF if the socket was closed (by another thread) while this call waited."""
    if not socket_still_open(w):
        raise_errno(EBADF)
    return 0


def wake_blocked_calls(int fd):
    """If csock calls are blocked on fd, shutdown(2) it so they return (the caller is about
    to close it); the GIL is held throughout so they cannot run before the fd is marked
    closed. True if there were any."""
    if fd < 0 or fd >= _TRACKED_FDS or not _blocked[fd]:
        return False
    shutdown(fd, SHUT_RDWR)
    return True


cdef inline int64_t monotonic_ns() noexcept nogil:
    cdef timespec ts
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return <int64_t>ts.tv_sec * 1000000000 + ts.tv_nsec


cdef inline bint io_may_block(IoWait *w, size_t nbytes) noexcept:
    """Whether a call should release the GIL: the fd blocks, or the copy is large."""
    return w.timeout_ns < 0 or nbytes > _RELEASE_GIL_BYTES


# A call tried with the GIL held that would have blocked (io_try_held) cost a system call for
# nothing: the next calls in that direction on that fd go straight to io_call, 7 of them after
# one miss and twice as many after each further miss in a row (up to 255), then one tries
# again; a try that finds data ends the run. A ping-pong, whose reply is never there yet,
# settles at one wasted call in 256 receives (a fixed 7 left it at one in 8: 12 % of a
# SEQPACKET ping-pong's receives failed under strace); a socket whose data is ready keeps
# skipping the GIL hand-over. (Per fd, like _blocked; an fd number reused inherits only a hint.)
cdef struct HeldHint:
    unsigned char skip          # calls left to send straight to io_call
    unsigned char misses        # tries in a row that found nothing
cdef enum:
    HELD_FIRST_BACKOFF = 7
    HELD_MAX_MISSES = 6         # the sixth miss in a row skips (8 << 5) - 1 = 255 calls
cdef HeldHint _held_in[_TRACKED_FDS]
cdef HeldHint _held_out[_TRACKED_FDS]


cdef inline HeldHint *_held_hint(int fd, short events) noexcept:
    if fd < 0 or fd >= _TRACKED_FDS:
        return NULL
    return &_held_in[fd] if events == POLLIN else &_held_out[fd]


cdef inline void _held_missed(HeldHint *hint) noexcept:
    """After a try that found nothing: skip 7, 15, 31, ... 255 calls."""
    if hint.misses < HELD_MAX_MISSES:
        hint.misses += 1
    hint.skip = min((HELD_FIRST_BACKOFF + 1) << (hint.misses - 1), 256) - 1


cdef inline bint io_try_first(IoWait *w, size_t nbytes, short events) noexcept:
    """Whether a call on a blocking socket should first be tried with the GIL held (a small
    copy, and no recent miss in this direction: see io_try_held)."""
    cdef HeldHint *hint
    if w.timeout_ns >= 0 or nbytes > _RELEASE_GIL_BYTES:
        return False
    hint = _held_hint(w.fd, events)
    if hint != NULL and hint.skip:
        hint.skip -= 1
        return False
    return True


cdef Py_ssize_t io_try_held(IoWait *w, syscall_t call, void *op, short events) except -1:
    """The call once, with MSG_DONTWAIT and the GIL held (it cannot block): its result, or
    IO_AGAIN when it would block or a signal interrupted it, and the caller goes on with
    io_call (which waits, and runs the handlers). A blocking socket that is ready thus skips
    giving up the GIL and taking it back, about 0.2 us a call. Only for calls whose result
    MSG_DONTWAIT cannot change when the socket is ready: receives without MSG_WAITALL, sends
    of whole datagrams or records (a stream send could be cut short)."""
    global csock_extra_flags
    cdef Py_ssize_t r
    cdef int err
    cdef HeldHint *hint = _held_hint(w.fd, events)
    w.calls += 1
    csock_extra_flags = MSG_DONTWAIT
    r = call(w.fd, op)
    err = errno
    csock_extra_flags = 0
    if r >= 0:
        if hint != NULL:
            hint.misses = 0
        return r
    if err == EAGAIN:
        if hint != NULL:
            _held_missed(hint)
        return IO_AGAIN
    if err == EINTR:
        return IO_AGAIN
    raise_errno(err)


cdef Py_ssize_t io_call_held_first(IoWait *w, syscall_t call, void *op, short events, size_t nbytes,
                                   bint may_try) except -1:
    """io_call, tried once with the GIL held first where may_try (MSG_DONTWAIT cannot change
    the call's result) and io_try_first allow it."""
    cdef Py_ssize_t r = IO_AGAIN
    if may_try and io_try_first(w, nbytes, events):
        r = io_try_held(w, call, op, events)
    if r == IO_AGAIN:
        r = io_call(w, call, op, events, io_may_block(w, nbytes))
    return r


cdef int io_wait(IoWait *w, short events) except -1:
    cdef pollfd pfd
    cdef int r, err
    cdef int64_t now = monotonic_ns(), left
    pfd.fd = w.fd
    pfd.events = events
    pfd.revents = 0
    if w.deadline_ns == 0:
        w.deadline_ns = now + w.timeout_ns
    while True:
        left = w.deadline_ns - now
        if left <= 0:
            raise_timeout()
        left = (left + 999999) // 1000000          # poll() takes milliseconds: round up
        _enter_kernel(w.fd)
        with nogil:
            r = poll(&pfd, 1, <int>left if left < INT_MAX else INT_MAX)
            err = errno
        _leave_kernel(w.fd)
        _check_still_open(w)
        if r > 0:
            return 0                                # readiness or an error: the call says which
        if r < 0:
            if err != EINTR:
                raise_errno(err)
            if PyErr_CheckSignals() < 0:
                return -1
        now = monotonic_ns()


cdef int io_spin(IoWait *w, short events) except -1:
    """Busy-poll (poll(2) with a zero timeout, GIL released) until fd is ready for events or
    w.spin_ns passes (never past the call's deadline); 1 if ready. Signal handlers run after
    the spin, so Ctrl-C waits at most spin_us. With SO_BUSY_POLL set on the socket, each poll
    also busy-polls the device queue."""
    cdef pollfd pfd
    cdef int r = 0
    cdef int64_t now = monotonic_ns(), end = now + w.spin_ns
    if w.timeout_ns > 0:
        if w.deadline_ns == 0:
            w.deadline_ns = now + w.timeout_ns
        if end > w.deadline_ns:
            end = w.deadline_ns
    pfd.fd = w.fd
    pfd.events = events
    with nogil:
        while True:
            pfd.revents = 0
            r = poll(&pfd, 1, 0)
            if r != 0 or monotonic_ns() >= end:
                break                           # ready, an error (EINTR: handled below), or time
    if PyErr_CheckSignals() < 0:
        return -1
    _check_still_open(w)
    return r > 0


cdef Py_ssize_t io_spin_receive(IoWait *w, syscall_t call, void *op, int *err, int64_t ns) noexcept nogil:
    """spin_us on a blocking socket: the receive itself, with MSG_DONTWAIT, over and over
    until it returns data (or an error other than EAGAIN) or ns pass, as a C program that
    busy-polls would. Sends are not spun: they find room nearly always."""
    global csock_extra_flags
    cdef Py_ssize_t r
    cdef int64_t end = monotonic_ns() + ns
    csock_extra_flags = MSG_DONTWAIT
    while True:
        r = call(w.fd, op)
        err[0] = errno
        if r >= 0 or err[0] != EAGAIN or monotonic_ns() >= end:
            break
    csock_extra_flags = 0
    return r


cdef enum:
    SPIN_HELD_NS = 10000              # alone in its process, a spin keeps the GIL this long (io_call)


cdef inline bint only_thread() noexcept:
    """Whether the calling thread is the interpreter's only one (no other can want the GIL)."""
    return PyThreadState_Next(PyInterpreterState_ThreadHead(PyInterpreterState_Get())) == NULL


cdef Py_ssize_t io_call(IoWait *w, syscall_t call, void *op, short events, bint release_gil) except -1:
    cdef Py_ssize_t r
    cdef int64_t held
    cdef int err
    cdef bint spin = w.spin_ns > 0 and w.timeout_ns < 0 and events == POLLIN
    while True:
        # A signal that arrived during an earlier call of this operation, which then returned
        # a partial count instead of EINTR (send(2): "If ... interrupted by a signal handler
        # after some data was transmitted, the call returns the number transmitted"), must
        # run its handler before the operation blocks again: Ctrl-C stops long transfers.
        if w.calls and release_gil and PyErr_CheckSignals() < 0:
            return -1
        w.calls += 1
        if spin:
            spin = False
            # In a process with one Python thread, the first SPIN_HELD_NS keep the GIL (no one
            # else can want it): a reply that comes within them costs no GIL hand-over, ~0.12
            # µs a receive. With other threads, which may be the very ones about to send the
            # reply, the whole spin runs with the GIL released.
            held = min(w.spin_ns, <int64_t>SPIN_HELD_NS) if only_thread() else 0
            r = -1
            err = EAGAIN
            if held:
                r = io_spin_receive(w, call, op, &err, held)
            if r < 0 and err == EAGAIN and w.spin_ns > held:
                with nogil:
                    r = io_spin_receive(w, call, op, &err, w.spin_ns - held)
            if r >= 0:
                return r
            if err == EAGAIN:
                continue                        # spun out: now the call that sleeps
            if err == EINTR:
                if PyErr_CheckSignals() < 0:
                    return -1
                continue
            raise_errno(err)
        if release_gil:
            _enter_kernel(w.fd)
            with nogil:
                r = call(w.fd, op)
                err = errno
            _leave_kernel(w.fd)
            if r <= 0:                      # (data that did arrive is returned, never lost)
                _check_still_open(w)
        else:
            r = call(w.fd, op)
            err = errno
        if r >= 0:
            return r
        if err == EINTR:
            if PyErr_CheckSignals() < 0:
                return -1
            continue
        if err != EAGAIN:                   # EWOULDBLOCK == EAGAIN on Linux
            raise_errno(err)
        if w.timeout_ns <= 0:
            return IO_AGAIN
        if w.spin_ns > 0 and io_spin(w, events):
            continue                            # ready while spinning: no sleep
        io_wait(w, events)
