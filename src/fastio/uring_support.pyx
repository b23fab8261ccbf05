# What csock._uring cimports (declared in csock/_fastio.pxd).
#
# In-flight holds for requests that outlive the call that made them: an io_uring request
# (csock._uring) holds its socket's in-flight reference from the moment its SQE is written
# until its last completion, as a system call does between io_enter and io_leave (io.pyx).
# close() meanwhile defers close(2) to the last release, and calls the close hook, which
# cancels the socket's pending and multishot requests: without that a multishot receive
# would keep the file open, and the FIN unsent, for ever. An event loop watching the fd
# (csock.aio's epoll engine) holds it the same way, with a LoopWatch.

cdef close_hook_t _close_hook = NULL


cdef object inflight_hold(object sock, int *fd):
    """Count one request in flight on sock and store its fd in fd[0]; returns the socket's
    SocketState to give back to inflight_release (None for a stdlib socket, which has no
    count: its close() is the stdlib's). EBADF if the socket is closed or closing."""
    cdef SocketState state = state_of(sock)
    if not isinstance(sock, _socket.socket):
        raise TypeError(f"expected a socket object, not {type(sock).__name__}")
    fileno = CSOCK_SOCKET_FIELDS(sock).sock_fd     # (its fileno(), without a method call)
    if fileno < 0 or (state is not None and state.closing):
        raise_errno(EBADF)
    if state is not None:
        state.calls_in_flight()                 # (resets a count inherited over fork)
        state.inflight += 1
    fd[0] = fileno
    return state


cdef void inflight_release(object state) noexcept:
    """A request's last completion: the last one out finishes a close() that came meanwhile.
    A hold taken before fork() is not counted in the child: nothing to give back there."""
    cdef SocketState s
    if state is None or type(state) is not SocketState:
        return
    s = <SocketState>state
    if s.generation != _fork_generation:
        return
    if s.inflight > 0:
        s.inflight -= 1
    if s.inflight == 0 and s.pending_fd >= 0:
        finish_deferred_close(s)


def held_call(sock, method, *args, **kwargs):
    """method(sock, *args, **kwargs), a stdlib socket method csock does not reimplement
    (sendto, recvfrom, connect, shutdown...), counted in flight on sock like csock's own
    calls: a close() or detach() from another thread meanwhile leaves the number to it (closed
    by the last call out), so the call never reaches a file that took the number. On a
    socket closed already (fd -1) the method runs as it is: its own checks and errors, as
    the stdlib's (connect_ex returns EBADF's number, bad arguments raise first)."""
    cdef int fd = -1
    if isinstance(sock, _socket.socket) and CSOCK_SOCKET_FIELDS(sock).sock_fd < 0:
        return method.__get__(sock)(*args, **kwargs) if kwargs else method(sock, *args)
    state = inflight_hold(sock, &fd)
    try:
        if kwargs:      # (bound, so that the stdlib's errors name the method as it does)
            return method.__get__(sock)(*args, **kwargs)
        return method(sock, *args)
    except TimeoutError:
        # Closed (or detached) meanwhile: the stdlib's poll(2) would have found the file
        # gone at its timeout (POLLNVAL) and raised EBADF; the deferred close(2) kept it open.
        if CSOCK_SOCKET_FIELDS(sock).sock_fd < 0:
            raise OSError(EBADF, _strerror(EBADF)) from None
        raise
    finally:
        inflight_release(state)


cdef void set_close_hook(close_hook_t hook) noexcept:
    """Install the function close() calls when it defers close(2) (one: csock._uring's)."""
    global _close_hook
    _close_hook = hook


cdef inline void run_close_hook(SocketState state) noexcept:
    if _close_hook != NULL:
        _close_hook(state)
    if state.loop_watches:
        for ref in list(state.loop_watches):
            watch = ref()
            # (a forked child's close(): the parent's loop and its watches are not the child's)
            if watch is not None and (<LoopWatch>watch).generation == _fork_generation:
                (<LoopWatch>watch).tell_closed()


@cython.final
@cython.no_gc_clear     # (__dealloc__ must still see state: it gives the hold back)
cdef class LoopWatch:
    """LoopWatch(sock, on_close): sock's fd number stays its file's while an event loop watches
    it (``add_reader``/``add_writer`` take a number, and keep it after the file is gone).

    Held, it counts as a call in flight: ``close()`` or ``detach()`` from any thread marks the
    socket closed at once, calls ``on_close()`` in the closing thread (once), and leaves
    close(2) to ``release()``, so that the loop stops watching the number before another file
    can take it. Otherwise the loop's registration outlives the file: asyncio's next
    registration on the reused number fails with ENOENT, and uvloop aborts the process.
    A stdlib socket is not held (its ``close()`` is the stdlib's).

    Raises
    ------
    OSError
        EBADF: the socket is closed.
    """
    cdef object sock            # kept alive: its collection would close the number
    cdef object state           # inflight_hold's token; None once released
    cdef object on_close
    cdef unsigned long generation   # _fork_generation when made: a forked child's is not held
    # The state lists its watches weakly: one dropped with its loop (a hand-over the closed
    # loop never ran) gives its hold back when collected.
    cdef object __weakref__

    def __cinit__(self, sock, on_close):
        cdef int fd = -1
        if not callable(on_close):
            raise TypeError("on_close must be callable")
        self.state = inflight_hold(sock, &fd)
        self.sock = sock
        self.on_close = on_close
        self.generation = _fork_generation
        if self.state is not None:
            state = <SocketState>self.state
            if state.loop_watches is None:
                state.loop_watches = []
            state.loop_watches.append(_weakref.ref(self))

    @property
    def held(self):
        """True until release(): close(2) of the socket waits for it."""
        return self.state is not None

    cdef void tell_closed(self) noexcept:
        # (an exception from on_close is reported as unraisable: close() goes on)
        on_close, self.on_close = self.on_close, None
        if on_close is not None:
            on_close()

    def release(self):
        """The loop no longer watches the number: a close() that came meanwhile closes it
        now. Idempotent."""
        state, self.state = self.state, None
        self.on_close = None
        if state is not None:
            watches = (<SocketState>state).loop_watches
            if watches is not None:
                (<SocketState>state).loop_watches = [
                    ref for ref in watches if ref() is not None and ref() is not self]
            if self.generation == _fork_generation:     # (the parent's hold, not counted here)
                inflight_release(state)

    def __dealloc__(self):
        if self.state is not None and self.generation == _fork_generation:
            inflight_release(self.state)


# Addresses for io_uring sendmsg/recvmsg, through address.pyx's converters (plain C types in
# the .pxd, so that a downstream module cimporting csock._fastio needs no csock headers).
cdef unsigned int address_to_sockaddr(object address, int family, void *out) except 0:
    return sockaddr_from_python(address, family, <sockaddr_storage *>out)


cdef object address_from_sockaddr(const void *sa, unsigned int length):
    return sockaddr_to_python(<const sockaddr *>sa, length)


cdef unsigned int address_to_sockaddr_on(object address, int family, void *out,
                                         int fd) except 0:
    return sockaddr_from_python(address, family, <sockaddr_storage *>out, fd)


cdef object address_from_sockaddr_on(const void *sa, unsigned int length, int fd):
    return sockaddr_to_python(<const sockaddr *>sa, length, fd)


cdef object datagram_of(object data, object address, bint truncated, const ControlInfo *info):
    cdef Datagram d = make_datagram(data, address, truncated)
    if info != NULL:
        if info.has_timestamp:
            d.timestamp = info.timestamp
        if info.destination_family:
            d.destination = ip_text(info.destination_family, info.destination)
            d.interface = info.interface
        if info.tos >= 0:
            d.tos = info.tos
    return d


cdef FramedStream as_framed(object framed):
    """framed itself, checked: TypeError unless it is a csock._fastio.FramedStream."""
    if type(framed) is not FramedStream:
        raise TypeError(f"expected a csock._fastio.FramedStream, not {type(framed).__name__}")
    return <FramedStream>framed


# A multishot receive's bytes, straight from the ring's buffer into a FramedStream's arena
# (csock.aio's io_uring engine): no view of the ring buffer is made, so it goes back at once.
cdef list framed_feed(object framed, const char *data, Py_ssize_t length):
    """FramedStream.feed() from memory: the whole messages now buffered (possibly [])."""
    return as_framed(framed)._feed(data, length)


# The rest of a large frame, received by the kernel straight into the stream's arena (one
# copy, as recv(2) makes, instead of a ring buffer's second): see csock/_fastio.pxd.
cdef Py_ssize_t framed_lend(object framed, Py_ssize_t min_length, char **at) except -1:
    return as_framed(framed)._lend(min_length, at)


cdef list framed_lent_filled(object framed, Py_ssize_t length):
    return as_framed(framed)._lent_filled(length)
