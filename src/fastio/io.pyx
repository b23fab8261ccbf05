# The one system-call loop. Every socket operation in csock goes through io_call().
#
# Rules (the stdlib's, PEP 475 included):
#  * EINTR: run signal handlers (PyErr_CheckSignals), then retry; a handler that raises
#    (KeyboardInterrupt on Ctrl-C) ends the call.
#  * EAGAIN on a socket with a timeout: poll() until ready or until the call's deadline (one
#    deadline per call, set at the first wait), then TimeoutError("timed out").
#  * EAGAIN on a non-blocking socket, or on a blocking one with SO_RCVTIMEO/SO_SNDTIMEO set:
#    IO_AGAIN; the caller returns what it moved or raises BlockingIOError. A blocking call
#    whose socket got a timeout from another thread meanwhile goes on under that timeout.
#  * spin_us (IoWait.spin_ns, from the socket): before sleeping, busy-poll for up to spin_us:
#    a blocking receive is retried with MSG_DONTWAIT (io_spin_receive; GIL released, except
#    for the first 10 µs in a process with one Python thread), a wait for a timeout polls
#    with a zero timeout (io_spin, GIL released). The deadline bounds the spin, so timeouts
#    stay exact.
# Unlike the stdlib, a socket with a timeout tries the system call before polling, so a ready
# socket costs one system call, not two.
from libc.errno cimport errno, EINTR, EAGAIN, EBADF
from libc.limits cimport INT_MAX
from libc.stdint cimport uint64_t
from cpython.exc cimport PyErr_CheckSignals
from posix.unistd cimport close as close_fd, read as read_fd, write as write_fd
from posix.stat cimport fstat, struct_stat
from includes.poll cimport poll, pollfd, POLLIN, POLLOUT, POLLERR
from includes.spin cimport csock_extra_flags
from includes.socket cimport MSG_DONTWAIT, SOL_SOCKET, SO_SNDTIMEO, getsockopt, socklen_t
from includes.fcntl cimport (fcntl, F_DUPFD, F_DUPFD_CLOEXEC, F_GETFD, F_GETFL, FD_CLOEXEC,
                             O_NONBLOCK)
from includes.pyapi cimport PyInterpreterState_Get
from cpython.pystate cimport PyInterpreterState_ThreadHead, PyThreadState_Next

import os as _os

cdef extern from *:
    """
    /* A flag another thread sets (with the GIL) read by a loop that runs without it. */
    static inline int csock_load_flag(const int *flag) {
        return __atomic_load_n(flag, __ATOMIC_RELAXED);
    }
    """
    int csock_load_flag(const int *flag) noexcept nogil

cdef extern from "<sys/eventfd.h>" nogil:
    int eventfd(unsigned int initval, int flags)
    enum:
        EFD_CLOEXEC
        EFD_NONBLOCK


# fd lifetime. A csock call counts itself in its socket's SocketState.inflight around each
# system call it makes without the GIL (io_enter/io_leave), after checking, with the GIL held,
# that the socket still holds the fd it started with. close() from another thread therefore
# finds either no call in the kernel (and closes at once: a later call of the same operation
# finds the fd gone and raises EBADF before touching the number) or some (and leaves close(2)
# to the last of them: io_leave), so the number cannot be reused while a call may use it.
#
# close() does not shut the connection down (that would break it for dup()s and forked
# children). It wakes the calls it can: those asleep in csock's own poll(2), which also watches
# one eventfd per process (_wake_fd) that close() makes readable: timed calls, and blocking
# send loops (sendall, send_buffers, FramedStream, send_batch) waiting for room when the
# process has other threads. A call blocked inside a system call (a blocking receive, as the
# stdlib's) stays there until the kernel returns, as with the stdlib's close(): it then moves
# no more bytes and raises EBADF; shutdown() is the way to wake it.
cdef int _wake_fd = -1
cdef unsigned long _wake_dev = 0, _wake_ino = 0     # its file (a program may close the number)
cdef Py_ssize_t _wakes_owed = 0      # sleepers of closed sockets not yet woken: drain at 0


cdef inline bint file_of(int fd, unsigned long *dev, unsigned long *ino) noexcept nogil:
    """The device and inode of the file fd names (False, both 0, if fstat fails): what tells
    that a number still names the file csock meant, after a program may have closed it and
    put another file there."""
    cdef struct_stat st
    if fstat(fd, &st) != 0:
        dev[0] = ino[0] = 0
        return False
    dev[0], ino[0] = st.st_dev, st.st_ino
    return True


cdef inline bint names_file(int fd, unsigned long dev, unsigned long ino) noexcept nogil:
    cdef unsigned long now_dev = 0, now_ino = 0
    return file_of(fd, &now_dev, &now_ino) and now_dev == dev and now_ino == ino


cdef int wake_fd() noexcept:
    """The process's close() eventfd, made on first use; -1 if it cannot be made (EMFILE):
    sleeps then simply cannot be cut short."""
    global _wake_fd
    if _wake_fd < 0:
        _wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)
        if _wake_fd >= 0:
            file_of(_wake_fd, &_wake_dev, &_wake_ino)
    return _wake_fd


cdef bint _wake_fd_is_ours() noexcept nogil:
    """Whether _wake_fd still names csock's eventfd. A program that closes every fd but its
    own (a daemon's close-all loop) frees the number, and a file of the program's may take
    it: csock must then neither write nor read it. Such a number is dropped (not closed: it is
    not csock's), and the next sleep makes a new eventfd. Checked where bytes would move or a
    wake was seen, never on the path of a sleep."""
    global _wake_fd
    if _wake_fd < 0:
        return False
    if names_file(_wake_fd, _wake_dev, _wake_ino):
        return True
    _wake_fd = -1
    return False


cdef void _drain_wake_fd() noexcept nogil:
    cdef uint64_t value = 0
    if _wake_fd_is_ours():
        read_fd(_wake_fd, &value, sizeof(value))


cdef int wake_sleepers(SocketState state) except -1:
    """close() left calls in flight: wake those asleep in io_wait (they raise EBADF)."""
    global _wakes_owed
    cdef uint64_t one = 1
    if state.sleeping and _wake_fd_is_ours():
        _wakes_owed += state.sleeping
        write_fd(_wake_fd, &one, sizeof(one))
    return 0


cdef int _check_still_open(IoWait *w) except -1:
    """EBADF if the socket was closed (by another thread, or by code this call ran) since the
    call read its fd, or was closed already."""
    if w.fd < 0 or not fd_still_ours(w):
        raise_errno(EBADF)
    return 0


cdef inline int io_enter(IoWait *w) except -1:
    """Before a system call made without the GIL: check the fd is still this socket's, and
    count the call in flight so that close() leaves close(2) to io_leave."""
    _check_still_open(w)
    if w.state != NULL:
        (<SocketState>w.state).calls_in_flight()     # (resets a count inherited over fork)
        (<SocketState>w.state).inflight += 1
    return 0


cdef inline void io_leave(IoWait *w) noexcept:
    """After that system call: the last call out finishes a close() that came meanwhile."""
    cdef SocketState state
    if w.state != NULL:
        state = <SocketState>w.state
        if state.inflight > 0:
            state.inflight -= 1
        if state.inflight == 0 and state.pending_fd >= 0:
            finish_deferred_close(state)


cdef void finish_deferred_close(SocketState state) noexcept:
    cdef int fd = state.pending_fd
    state.pending_fd = -1
    _deferred_closes.discard(state)
    if still_names_its_file(fd, state):
        with nogil:
            close_fd(fd)                # (like the stdlib's close(), errors here go unreported)


cdef bint still_names_its_file(int fd, SocketState state) noexcept:
    """Whether fd still names the file close() left on it: after close() returned, the number
    was free as far as the program knew, and it may have put another file there with dup2(2),
    which closed this one. That file is the program's: the deferred close(2) leaves it."""
    cdef unsigned long dev = 0, ino = 0
    if not file_of(fd, &dev, &ino):
        return False
    return state.pending_ino == 0 or (dev == state.pending_dev and ino == state.pending_ino)


def close_socket(sock):
    """close() for a csock socket: close(2) now, or, while csock calls run on its fd in other
    threads, mark it closed at once (fileno() -1, every later call EBADF), wake the calls
    asleep in csock's poll, and leave close(2) to the last call in flight. Never shutdown(2):
    other holders of the open file (dup(), a forked child) keep their connection. A zero-copy
    send's buffers stay held until the kernel's completion (zerocopy_orphan; one still running
    in another thread hands its exports over when it returns). What csock kept for the socket
    in user space is dropped (drop_kept)."""
    cdef SocketState state = existing_state(sock)
    give_up_zerocopy(state)
    drop_kept(state)
    if state is None or state.calls_in_flight() == 0:
        _socket.socket.close(sock)
        return
    leave_fd_to_calls_in_flight(sock, state)


def detach_socket(sock):
    """detach() for a csock socket: the socket gives up its fd without closing it, and no
    csock call touches the number the caller gets. With calls in flight on the socket in
    other threads, the number is theirs until the last one ends (as after close(): marked
    closed, sleepers woken, io_uring requests cancelled, close(2) by the last call out), and
    the caller gets a duplicate of it (dup(2): the same open file, connection and options,
    another number), so that a call between its check and its system call can never reach a
    file the caller put on the number. Zero-copy sends in flight stay held, as on close(), and
    what csock kept for the socket in user space is dropped, as on close() (drop_kept): the
    caller gets the fd alone."""
    cdef SocketState state = existing_state(sock)
    give_up_zerocopy(state)
    drop_kept(state)
    if state is None or state.calls_in_flight() == 0:
        return _socket.socket.detach(sock)
    fd = _socket.socket.fileno(sock)
    if fd < 0:
        return fd
    # (with the GIL held throughout: os.dup() would let the calls end before the handover,
    # and no one would then close the number they leave)
    handed_over = fcntl(fd, F_DUPFD_CLOEXEC if fcntl(fd, F_GETFD) & FD_CLOEXEC else F_DUPFD, 0)
    if handed_over < 0:
        raise_errno(errno)
    leave_fd_to_calls_in_flight(sock, state)
    return handed_over


cdef int give_up_zerocopy(SocketState state) except -1:
    """The socket lets go of its zero-copy bookkeeping: buffers still in the kernel go to the
    orphans, held until their completions (the bookkeeping's own dup of the fd with them)."""
    if state is not None and state.zerocopy is not None:
        zerocopy_orphan(state.zerocopy)
        state.zerocopy = None
    return 0


cdef int drop_kept(SocketState state) except -1:
    """The socket lets go of what csock kept for it in user space, as closing a stdlib socket
    lets go of what a makefile() buffered: datagrams taken from the kernel but not yet handed
    out (SocketState.pending) and errors deferred to the next call. Every later call then
    raises EBADF (what a call still in flight keeps or defers after it is never handed out:
    take_kept and raise_deferred_error check the fd first)."""
    if state is not None:
        state.pending = None
        state.send_error = None
        state.recv_error = None
    return 0


cdef int leave_fd_to_calls_in_flight(object sock, SocketState state) except -1:
    """The socket gives up its fd while calls run on it: mark it closing (every call then ends
    with EBADF at its next check), wake the calls asleep in csock's poll, cancel its io_uring
    requests, and leave close(2) to the last call out."""
    fd = _socket.socket.detach(sock)
    if fd < 0:
        return 0
    state.pending_fd = fd
    file_of(fd, &state.pending_dev, &state.pending_ino)
    _deferred_closes.add(state)
    state.closing = 1
    wake_sleepers(state)
    run_close_hook(state)               # io_uring requests: cancelled (uring_support.pyx)
    return 0


def error_pending(sock):
    """error_pending(sock) -> bool: whether poll(2) reports POLLERR on the socket now (an error
    the next call will raise, or a queued MSG_ERRQUEUE message). For csock.aio on uvloop, whose
    libuv poll handle stops watching an fd after the first POLLERR. False once closed."""
    cdef pollfd pfd
    pfd.fd = sock.fileno()      # (the GIL is held to the poll: no close() in between)
    pfd.events = 0
    pfd.revents = 0
    return pfd.fd >= 0 and poll(&pfd, 1, 0) == 1 and (pfd.revents & POLLERR) != 0


def _after_fork_in_child():
    """The child runs none of the parent's calls: counts from before the fork are void
    (generation), the parent's deferred closes are the child's to finish on its copies, and
    the child gets its own wake eventfd."""
    global _fork_generation, _wake_fd, _wakes_owed
    _fork_generation += 1
    for state in _deferred_closes:
        if still_names_its_file((<SocketState>state).pending_fd, <SocketState>state):
            close_fd((<SocketState>state).pending_fd)
        (<SocketState>state).pending_fd = -1
    _deferred_closes.clear()
    if _wake_fd_is_ours():              # (a number the program took over is the program's)
        close_fd(_wake_fd)
    _wake_fd = -1
    _wakes_owed = 0


_os.register_at_fork(after_in_child=_after_fork_in_child)


# A call tried with the GIL held that would have blocked (io_try_with_gil) cost a system call for
# nothing: the next calls in that direction on that fd go straight to io_call, 7 of them after
# one miss and twice as many after each further miss in a row (up to 255), then one tries
# again; a try that finds data ends the run. A ping-pong, whose reply is never there yet,
# settles at one wasted call in 256 receives (a fixed 7 left it at one in 8: 12 % of a
# SEQPACKET ping-pong's receives failed under strace); a socket whose data is ready keeps
# skipping the GIL hand-over. (Per socket, in its SocketState.)
cdef enum:
    HELD_FIRST_BACKOFF = 7
    HELD_MAX_MISSES = 6         # the sixth miss in a row skips (8 << 5) - 1 = 255 calls


cdef inline HeldTryBackoff *_held_try_backoff(IoWait *w, short events) noexcept:
    cdef SocketState state
    if w.state == NULL:
        return NULL                     # a stdlib socket: always try
    state = <SocketState>w.state
    return &state.held_in if events == POLLIN else &state.held_out


cdef inline void _held_try_missed(HeldTryBackoff *hint) noexcept:
    """After a try that found nothing: skip 7, 15, 31, ... 255 calls."""
    if hint.misses < HELD_MAX_MISSES:
        hint.misses += 1
    hint.skip = min((HELD_FIRST_BACKOFF + 1) << (hint.misses - 1), 256) - 1


cdef inline bint io_try_first(IoWait *w, size_t nbytes, short events) noexcept:
    """Whether a call on a blocking socket should first be tried with the GIL held (a small
    copy, and no recent miss in this direction: see io_try_with_gil)."""
    cdef HeldTryBackoff *hint
    if w.timeout_ns >= 0 or nbytes > _RELEASE_GIL_BYTES:
        return False
    hint = _held_try_backoff(w, events)
    if hint != NULL and hint.skip:
        hint.skip -= 1
        return False
    return True


cdef Py_ssize_t io_try_with_gil(IoWait *w, syscall_t call, void *op, short events) except -1:
    """The call once, with MSG_DONTWAIT and the GIL held (it cannot block): its result, or
    IO_AGAIN when it would block or a signal interrupted it, and the caller goes on with
    io_call (which waits, and runs the handlers). A blocking socket that is ready thus skips
    giving up the GIL and taking it back, about 0.2 us a call. Only for calls whose result
    MSG_DONTWAIT cannot change when the socket is ready: receives without MSG_WAITALL, sends
    of whole datagrams or records (a stream send could be cut short)."""
    global csock_extra_flags
    cdef Py_ssize_t r
    cdef int err
    cdef HeldTryBackoff *hint = _held_try_backoff(w, events)
    _check_still_open(w)    # (code the caller ran since io_begin, an __index__, may have closed it)
    w.calls += 1
    csock_extra_flags = MSG_DONTWAIT  # no-cython-lint: spin.h's C global
    r = call(w.fd, op)
    err = errno
    csock_extra_flags = 0  # no-cython-lint: spin.h's C global
    if r >= 0:
        if hint != NULL:
            hint.misses = 0
        return r
    if err == EAGAIN:
        if hint != NULL:
            _held_try_missed(hint)
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
        r = io_try_with_gil(w, call, op, events)
    if r == IO_AGAIN:
        r = io_call(w, call, op, events, io_may_block(w, nbytes))
    return r


cdef int io_wait(IoWait *w, short events) except -1:
    """Sleep in poll(2) until fd is ready for events (a timed call: or its deadline passes,
    TimeoutError). A csock socket's sleep also watches the wake eventfd, so close() from
    another thread ends it with EBADF; a wake meant for another socket's sleepers is left to
    them (this call then polls its fd alone for up to 1 ms at a time until they drained it).
    (Public C API, as declared in csock/_fastio.pxd.)"""
    return io_sleep(w, events, -1)


cdef int io_sleep(IoWait *w, short events, int nap_ms) except -1:
    """io_wait; or, with nap_ms >= 0, a nap for readiness poll(2) cannot see: at most that
    long, woken early only by close() or an error on the fd."""
    global _wakes_owed
    cdef pollfd pfd[2]
    cdef int r, err, ms, nfds
    cdef bint others_wake = False
    cdef int64_t now = monotonic_ns(), left
    cdef SocketState state = <SocketState>w.state if w.state != NULL else None
    pfd[0].fd = w.fd
    pfd[0].events = events if nap_ms < 0 else 0
    pfd[1].fd = wake_fd() if state is not None else -1
    pfd[1].events = POLLIN
    if w.timeout_ns >= 0 and w.deadline_ns == 0:
        w.deadline_ns = now + w.timeout_ns
    while True:
        ms = -1                                     # a blocking call: no deadline
        if w.timeout_ns >= 0:
            left = w.deadline_ns - now
            if left <= 0:
                raise_timeout()
            left = (left + 999999) // 1000000      # poll() takes milliseconds: round up
            ms = <int>left if left < INT_MAX else INT_MAX
        nfds = 2 if pfd[1].fd >= 0 else 1
        if others_wake:
            nfds = 1
            ms = 1 if ms < 0 else min(ms, 1)
        if nap_ms >= 0:
            ms = nap_ms if ms < 0 else min(ms, nap_ms)
        pfd[0].revents = 0
        pfd[1].revents = 0
        io_enter(w)
        if state is not None:
            state.sleeping += 1
        with nogil:
            r = poll(pfd, nfds, ms)
            err = errno
        if state is not None:
            state.sleeping -= 1
            if state.closing:
                _wakes_owed -= 1                    # this sleeper was counted by close()
                if _wakes_owed <= 0:
                    _wakes_owed = 0
                    _drain_wake_fd()
        io_leave(w)
        _check_still_open(w)
        if r > 0 and pfd[0].revents or r == 0 and nap_ms >= 0:
            return 0                                # readiness or an error: the call says which
        if r > 0 and (pfd[1].fd != _wake_fd or not _wake_fd_is_ours()):
            pfd[1].fd = -1                          # not csock's eventfd now: watch the fd alone
            continue
        others_wake = r > 0                         # the eventfd: another socket was closed
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
    also busy-polls the device queue. close() from another thread ends the spin (EBADF)."""
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
    io_enter(w)
    with nogil:
        while True:
            pfd.revents = 0
            r = poll(&pfd, 1, 0)
            if r != 0 or csock_load_flag(w.closing) or monotonic_ns() >= end:
                break                           # ready, an error (EINTR: handled below), or time
    io_leave(w)
    if PyErr_CheckSignals() < 0:
        return -1
    _check_still_open(w)
    return r > 0


cdef Py_ssize_t io_spin_receive(IoWait *w, syscall_t call, void *op, int *err,
                                int64_t ns) noexcept nogil:
    """spin_us on a blocking socket: the receive itself, with MSG_DONTWAIT, over and over
    until it returns data (or an error other than EAGAIN) or ns pass, as a C program that
    busy-polls would; EBADF once close() ran in another thread (the caller counted this call
    in flight, so the fd is still this socket's). Sends are not spun: they find room nearly
    always."""
    global csock_extra_flags
    cdef Py_ssize_t r = -1
    cdef int64_t end = monotonic_ns() + ns
    csock_extra_flags = MSG_DONTWAIT  # no-cython-lint: spin.h's C global
    while True:
        r = call(w.fd, op)
        err[0] = errno
        if r >= 0 or err[0] != EAGAIN or monotonic_ns() >= end:
            break
        if csock_load_flag(w.closing):
            err[0] = EBADF
            break
    csock_extra_flags = 0  # no-cython-lint: spin.h's C global
    return r


cdef enum:
    SPIN_HELD_NS = 10000              # alone in its process, a spin keeps the GIL this long


cdef inline bint only_thread() noexcept:
    """Whether the calling thread is the interpreter's only one (no other can want the GIL)."""
    return PyThreadState_Next(PyInterpreterState_ThreadHead(PyInterpreterState_Get())) == NULL


cdef inline bint wakeable_sleep(IoWait *w) noexcept:
    """Whether a blocking send loop should sleep in io_wait (where close() wakes it) rather
    than in the system call: a csock socket, other threads in the process (only they can close
    it under the call), and no SO_SNDTIMEO (poll(2) would not honour it)."""
    return w.state != NULL and not (<SocketState>w.state).kernel_timeouts and not only_thread()


cdef bint send_sleeps_elsewhere(IoWait *w) noexcept:
    """A send loop asleep in csock's poll would not honour a kernel send timeout set where
    csock's setsockopt did not see it (on a dup, on an fd adopted with it, by a stdlib socket
    on the fd, with SO_SNDTIMEO_NEW): if one is set now, note it, so that the loop sleeps in
    the kernel from now on, where it applies (BlockingIOError, as the stdlib's). One
    getsockopt, only when the socket is full."""
    cdef char timeout[16]                       # struct timeval
    cdef socklen_t size = sizeof(timeout)
    cdef int i
    if getsockopt(w.fd, SOL_SOCKET, SO_SNDTIMEO, timeout, &size) < 0:
        return False
    for i in range(size):
        if timeout[i]:
            (<SocketState>w.state).kernel_timeouts = True
            return True
    return False


cdef bint fd_is_nonblocking(int fd) noexcept:
    """O_NONBLOCK on the file (set by setblocking(False) meanwhile, or behind the socket's
    back: os.set_blocking, another holder): the stdlib's send would raise BlockingIOError."""
    cdef int flags = fcntl(fd, F_GETFL)
    return flags >= 0 and (flags & O_NONBLOCK) != 0


cdef bint timeout_set_meanwhile(IoWait *w) noexcept:
    """EAGAIN on a call that began blocking: if another thread has given the socket a timeout
    since (settimeout(t > 0) puts O_NONBLOCK on the file), the call goes on under it, its
    deadline from its next wait, as the stdlib's, which reads the timeout afresh on EAGAIN
    (sock_call_ex). True if so. Read only after EAGAIN: calls that go through pay nothing."""
    cdef int64_t timeout_ns
    if w.timeout_ns >= 0 or w.sock == NULL:     # (no layout: the captured timeout stays)
        return False
    timeout_ns = timeout_ns_of(CSOCK_SOCKET_FIELDS(<object>w.sock))
    if timeout_ns <= 0:
        return False
    w.timeout_ns = timeout_ns
    w.deadline_ns = 0
    return True


cdef Py_ssize_t io_call(IoWait *w, syscall_t call, void *op, short events,
                        bint release_gil) except -1:
    global csock_extra_flags
    cdef bint wakeable_send, woke_ready = False
    cdef int nap_ms = 1
    cdef Py_ssize_t r
    cdef int64_t held
    cdef int err
    cdef bint spin = w.spin_ns > 0 and w.timeout_ns < 0 and events == POLLIN
    while True:
        # A signal that arrived while csock held the GIL (copying a long batch) or during an
        # earlier call of this operation, which then returned a partial count instead of EINTR
        # (send(2): "If ... interrupted by a signal handler after some data was transmitted,
        # the call returns the number transmitted"), must run its handler before the call
        # blocks: otherwise nothing wakes the call, and Ctrl-C stops no long transfer.
        if release_gil and PyErr_CheckSignals() < 0:
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
            io_enter(w)
            if held:
                r = io_spin_receive(w, call, op, &err, held)
            if r < 0 and err == EAGAIN and w.spin_ns > held:
                with nogil:
                    r = io_spin_receive(w, call, op, &err, w.spin_ns - held)
            io_leave(w)
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
            # A blocking send loop in a process with other threads (which may close the
            # socket under it) sends with MSG_DONTWAIT, which nearly always finds room, and
            # sleeps in io_wait, where close() wakes it, only when the socket is full. A
            # blocking receive sleeps in the call itself, as the stdlib's: waiting in poll(2)
            # first made a threaded ping-pong 6-9 us a round trip slower (docs/benchmarks.md).
            wakeable_send = (w.timeout_ns < 0 and events == POLLOUT and w.resumable
                             and wakeable_sleep(w))
            io_enter(w)
            if wakeable_send:
                csock_extra_flags = MSG_DONTWAIT  # no-cython-lint: spin.h's C global
            with nogil:
                # close() may have come while the GIL changed hands, and the program put another
                # file on the number meanwhile (dup2): look once more, as late as the stdlib's
                # re-read of sock_fd, rather than reach that file
                if csock_load_flag(w.closing):
                    r = -1
                    err = EBADF
                else:
                    r = call(w.fd, op)
                    err = errno
            csock_extra_flags = 0  # no-cython-lint: spin.h's C global
            io_leave(w)
            if r < 0:                       # (data, or the end of stream, that did arrive is
                _check_still_open(w)        # returned, never lost: it came from this file)
            if r < 0 and err == EAGAIN and wakeable_send:
                if timeout_set_meanwhile(w):
                    continue                # now a timed call
                if send_sleeps_elsewhere(w):
                    continue                # now as the stdlib's would: in the kernel
                if fd_is_nonblocking(w.fd):
                    return IO_AGAIN         # made non-blocking meanwhile or behind its back
                if woke_ready:
                    # poll(2) said writable and the send still found no room: a datagram to
                    # an address (unconnected AF_UNIX: poll sees our buffer, not the
                    # receiver's queue). Nap, 1 ms doubling to 64, where close() still wakes
                    # the call, rather than spin on poll and EAGAIN.
                    io_sleep(w, events, nap_ms)
                    nap_ms = min(nap_ms * 2, 64)
                    continue
                io_wait(w, events)
                woke_ready = True
                continue
        else:
            _check_still_open(w)            # (the GIL is held: no close() can come during the call)
            # Never block with the GIL held: O_NONBLOCK on the file may be gone (another
            # holder's setblocking(True)); EAGAIN then waits in poll, as a timed call does.
            csock_extra_flags = MSG_DONTWAIT  # no-cython-lint: spin.h's C global
            r = call(w.fd, op)
            err = errno
            csock_extra_flags = 0  # no-cython-lint: spin.h's C global
        if r >= 0:
            return r
        if err == EINTR:
            if PyErr_CheckSignals() < 0:
                return -1
            continue
        if err != EAGAIN:                   # EWOULDBLOCK == EAGAIN on Linux
            raise_errno(err)
        if w.timeout_ns <= 0 and not timeout_set_meanwhile(w):
            return IO_AGAIN
        if w.spin_ns > 0 and io_spin(w, events):
            continue                            # ready while spinning: no sleep
        io_wait(w, events)
