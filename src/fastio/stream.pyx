# Byte-stream operations: send, sendall, recv, recv_into (the stdlib's, on the hot path),
# send_buffers (vectored sendmsg) and recv_exactly (read a whole unit; what it read before a
# timeout is handed back on the exception, never kept on the socket).
from cpython.buffer cimport PyObject_GetBuffer, PyBuffer_Release, PyBUF_SIMPLE, PyBUF_WRITABLE
from cpython.bytes cimport PyBytes_FromStringAndSize, PyBytes_AS_STRING
from cpython.mem cimport PyMem_Malloc, PyMem_Free
from cpython.object cimport PyObject
from libc.string cimport memset
from includes.socket cimport (send, recv, sendmsg, msghdr, MSG_NOSIGNAL,
                              MSG_WAITALL, SOCK_STREAM)
from includes.uio cimport iovec, IOV_MAX
from includes.pyapi cimport _PyBytes_Resize
from cpython.number cimport PyNumber_Index
from libc.errno cimport EINVAL, ENOTCONN, EPIPE
from posix.types cimport off_t
import _socket


cdef struct MsgOp:
    msghdr *msg
    int flags


cdef Py_ssize_t sys_send(int fd, void *op) noexcept nogil:
    cdef BufOp *o = <BufOp *>op
    # MSG_NOSIGNAL: a closed peer gives EPIPE, never SIGPIPE
    return send(fd, o.buf, o.len, o.flags | MSG_NOSIGNAL | csock_extra_flags)


cdef Py_ssize_t sys_recv(int fd, void *op) noexcept nogil:
    cdef BufOp *o = <BufOp *>op
    return recv(fd, o.buf, o.len, o.flags | csock_extra_flags)


cdef Py_ssize_t sys_sendmsg(int fd, void *op) noexcept nogil:
    cdef MsgOp *o = <MsgOp *>op
    return sendmsg(fd, o.msg, o.flags | MSG_NOSIGNAL | csock_extra_flags)


cdef int get_writable_buffer(object obj, Py_buffer *view, str call) except -1:
    """Export obj's memory for writing. Whatever refuses it (read-only, not a buffer, a
    released view) is the stdlib's TypeError, as its "w*" converter makes of any error;
    the *_into calls export first, as the stdlib reads the buffer before other arguments."""
    try:
        PyObject_GetBuffer(obj, view, PyBUF_WRITABLE)
    except Exception:
        raise TypeError(f"{call}() argument 1 must be read-write bytes-like object, "
                        f"not {'None' if obj is None else type(obj).__name__}") from None
    return 0


# --- the stdlib's calls, on the hot path -----------------------------------------------------

cdef inline int flags_of(object flags) except? -1:
    """A flags argument as the stdlib takes it: an int, or any object with __index__ (a float
    is a TypeError, not truncated: 2.9 would have been MSG_PEEK)."""
    if type(flags) is int:
        return flags
    return PyNumber_Index(flags)


cdef inline Py_ssize_t send_once(IoWait *w, BufOp *op, bint may_try) except -1:
    """One send(2) of op under w's rules (io_call_held_first)."""
    if w.timeout_ns > 0:
        return send_once_timed(w, op, may_try)
    return io_call_held_first(w, sys_send, op, POLLOUT, op.len, may_try)


cdef Py_ssize_t send_once_timed(IoWait *w, BufOp *op, bint may_try) except -1:
    """send_once with a timeout. The stdlib polls before it sends, and a listening socket is
    never writable: it waits out the timeout, where csock, sending first, met EPIPE (TCP) or
    ENOTCONN (AF_UNIX). On those this waits as the stdlib would (elsewhere they come with
    POLLOUT or POLLHUP at once), then sends again. (Apart from the timed path: a try block
    costs a few ns.)"""
    try:
        return io_call_held_first(w, sys_send, op, POLLOUT, op.len, may_try)
    except OSError as error:
        if error.errno != EPIPE and error.errno != ENOTCONN:
            raise
    io_wait(w, POLLOUT)
    return io_call(w, sys_send, op, POLLOUT, io_may_block(w, op.len))


def sock_send(sock, data, flags=0, /):
    """Send data with one send(2); return the number of bytes the kernel took.

    As the stdlib's ``socket.send``, plus ``MSG_NOSIGNAL``: a closed peer raises
    BrokenPipeError instead of SIGPIPE.

    Parameters
    ----------
    data : bytes-like
        Sent from its own memory, without a copy into a new bytes object.
    flags : int, optional
        ``MSG_*`` flags for send(2).

    Returns
    -------
    int
        Bytes the kernel took: may be fewer than ``len(data)``.

    Raises
    ------
    BlockingIOError
        Non-blocking, and the send buffer is full.
    TimeoutError
        The socket's timeout passed before any room appeared.
    OSError
        send(2)'s error, as the stdlib's subclass (BrokenPipeError, ConnectionResetError, ...);
        EBADF after ``close()``.

    Notes
    -----
    One system call. A small send on a blocking socket is first tried with the GIL held
    (``MSG_DONTWAIT``), which saves the GIL hand-over when there is room.
    """
    cdef IoWait w
    cdef Py_buffer view
    cdef BufOp op
    cdef Py_ssize_t r
    cdef int c_flags
    PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
    try:
        c_flags = flags_of(flags)       # (its __index__ may run code: before the fd is read)
        io_begin(sock, &w)
        op.buf = <char *>view.buf
        op.len = view.len
        op.flags = c_flags
        r = send_once(&w, &op, sends_whole_messages(&w))
        if r == IO_AGAIN:
            raise_would_block()
        return r
    finally:
        PyBuffer_Release(&view)


cdef inline bint sends_whole_messages(IoWait *w) noexcept:
    """A csock datagram, SEQPACKET or raw socket: one send moves the whole message or nothing."""
    return w.sock != NULL and CSOCK_SOCKET_FIELDS(<object>w.sock).sock_type != SOCK_STREAM


cdef int sendall_wait(object sock, IoWait *w, const char *buf, Py_ssize_t n, int flags) except -1:
    """send(2) until all n bytes are taken. A small send on a blocking socket is first tried
    with the GIL held (io_try_with_gil): if MSG_DONTWAIT cuts it short, the loop sends the rest."""
    cdef BufOp op
    cdef Py_ssize_t r, sent = 0
    cdef bint first = True
    op.flags = flags
    w.resumable = True
    try:
        while True:                     # at least one send(2), as the stdlib's: b"" is a
            op.buf = <char *>buf + sent  # datagram or record of its own
            op.len = n - sent
            r = send_once(w, &op, first)
            first = False
            if r == IO_AGAIN:
                raise_would_block()
            sent += r
            if sent >= n:
                break
    except OSError as error:
        note_sent(error, sent)
        raise
    return 0


cdef int fio_sendall(object sock, const char *buf, Py_ssize_t n) except -1:
    cdef IoWait w
    io_begin(sock, &w)
    return sendall_wait(sock, &w, buf, n, 0)


def sock_sendall(sock, data, flags=0, /):
    """Send every byte of data with send(2), as many calls as the kernel needs.

    Parameters
    ----------
    data : bytes-like
        Sent from its own memory, without a copy.
    flags : int, optional
        ``MSG_*`` flags for send(2).

    Raises
    ------
    TimeoutError
        The socket's timeout (one deadline for the whole call) passed first.
    BlockingIOError
        Non-blocking, and the kernel would block before everything went.
    OSError
        send(2)'s error, as the stdlib's subclass; BrokenPipeError (never SIGPIPE) on a
        closed peer; EBADF after ``close()``. Each of these has ``.sent``, the bytes that
        went before it (the stdlib's sendall does not say).

    Notes
    -----
    One send(2) when the kernel takes everything at once, which is the usual case for
    small writes.
    """
    cdef IoWait w
    cdef Py_buffer view
    cdef int c_flags
    PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
    try:
        c_flags = flags_of(flags)       # (once, as the stdlib's; before the fd is read)
        io_begin(sock, &w)
        if c_flags & MSG_DONTWAIT and w.timeout_ns < 0:
            w.timeout_ns = 0            # the caller's would-block, as the stdlib's sendall
        sendall_wait(sock, &w, <char *>view.buf, view.len, c_flags)
    finally:
        PyBuffer_Release(&view)


cdef inline Py_ssize_t receive_once(IoWait *w, BufOp *op) except -1:
    """One recv(2) into op under w's rules, first tried with the GIL held where MSG_DONTWAIT
    cannot change the result (io_try_with_gil: not with MSG_WAITALL)."""
    if w.timeout_ns > 0:
        return receive_once_timed(w, op)
    return io_call_held_first(w, sys_recv, op, POLLIN, op.len, not (op.flags & MSG_WAITALL))


cdef Py_ssize_t receive_once_timed(IoWait *w, BufOp *op) except -1:
    """receive_once with a timeout. The stdlib polls before it receives, and a listening
    socket is not readable until a connection comes: it waits out the timeout, where csock,
    receiving first, met ENOTCONN (TCP) or EINVAL (AF_UNIX). On those this waits as the stdlib
    would (at once for an unconnected socket, which poll(2) reports hung up), then receives
    again."""
    try:
        return io_call_held_first(w, sys_recv, op, POLLIN, op.len, not (op.flags & MSG_WAITALL))
    except OSError as error:
        if error.errno != ENOTCONN and error.errno != EINVAL:
            raise
    io_wait(w, POLLIN)
    return io_call(w, sys_recv, op, POLLIN, io_may_block(w, op.len))


cdef int check_is_socket(object sock) except -1:
    """A receive of 0 bytes makes no system call (the stdlib's checks only the type)."""
    if not isinstance(sock, _socket.socket):
        raise TypeError(f"expected a socket object, not {type(sock).__name__}")
    return 0


def sock_recv(sock, Py_ssize_t bufsize, flags=0, /):
    """Receive up to bufsize bytes with one recv(2).

    Parameters
    ----------
    bufsize : int
        The most bytes to return. ``recv(0)`` returns ``b""`` at once, without a system call
        (which would take a datagram or wait for data), as the stdlib's does.
    flags : int, optional
        ``MSG_*`` flags for recv(2).

    Returns
    -------
    bytes
        What arrived; ``b""`` at end of stream.

    Raises
    ------
    BlockingIOError
        Non-blocking, and nothing is queued.
    TimeoutError
        The socket's timeout passed with nothing received.
    ValueError
        bufsize is negative.
    OSError
        recv(2)'s error, as the stdlib's subclass; EBADF after ``close()``.

    Notes
    -----
    One system call and one bytes object, shrunk in place when fewer bytes came.
    """
    cdef IoWait w
    cdef BufOp op
    cdef Py_ssize_t r
    cdef PyObject *raw
    cdef int c_flags = flags_of(flags)  # (checked first, as the stdlib's: recv(0, "x") too)
    if bufsize <= 0:
        if bufsize == 0:
            check_is_socket(sock)
            return b""
        raise ValueError("negative buffersize in recv")
    io_begin(sock, &w)
    # The bytes object is handled as a raw pointer: _PyBytes_Resize needs the only reference.
    raw = new_bytes(NULL, bufsize)
    try:
        op.buf = PyBytes_AS_STRING(<object>raw)
        op.len = bufsize
        op.flags = c_flags
        r = receive_once(&w, &op)
        if r == IO_AGAIN:
            raise_would_block()
    except BaseException:
        Py_DECREF_raw(raw)
        raise
    if r != bufsize:
        _PyBytes_Resize(&raw, r)
    result = <object>raw
    Py_DECREF_raw(raw)
    return result


cdef extern from *:
    """
    static inline void Py_DECREF_raw(PyObject *o) { Py_DECREF(o); }
    """
    void Py_DECREF_raw(PyObject *o)
    PyObject *new_bytes "PyBytes_FromStringAndSize"(const char *data, Py_ssize_t n) except NULL


def sock_recv_into(sock, buffer, nbytes=0, flags=0):
    """Receive into buffer with one recv(2); return the number of bytes received.

    Parameters
    ----------
    buffer : writable bytes-like
        Filled from its start. An empty buffer returns 0 at once, without a system call.
    nbytes : int, optional
        The most bytes to receive (0: ``len(buffer)``).
    flags : int, optional
        ``MSG_*`` flags for recv(2).

    Returns
    -------
    int
        Bytes received; 0 at end of stream.

    Raises
    ------
    BlockingIOError
        Non-blocking, and nothing is queued.
    TimeoutError
        The socket's timeout passed with nothing received.
    TypeError
        buffer is not writable (checked before the other arguments, as the stdlib's).
    ValueError
        nbytes is negative or larger than the buffer.
    OSError
        recv(2)'s error, as the stdlib's subclass; EBADF after ``close()``.

    Notes
    -----
    One system call, no allocation.
    """
    cdef IoWait w
    cdef Py_buffer view
    cdef BufOp op
    cdef Py_ssize_t r, n
    cdef int c_flags
    get_writable_buffer(buffer, &view, "recv_into")    # ("w*|ni": the buffer, then the others)
    try:
        n = nbytes
        c_flags = flags_of(flags)
        if n < 0:
            raise ValueError("negative buffersize in recv_into")
        if n == 0:
            n = view.len
        elif n > view.len:
            raise ValueError("buffer too small for requested bytes")
        if n == 0:
            check_is_socket(sock)
            return 0
        io_begin(sock, &w)
        op.buf = <char *>view.buf
        op.len = n
        op.flags = c_flags
        r = receive_once(&w, &op)
        if r == IO_AGAIN:
            raise_would_block()
        return r
    finally:
        PyBuffer_Release(&view)


# --- send_buffers: vectored sendmsg(2) -----------------------------------------------------

cdef Py_ssize_t sendmsg_iovecs(IoWait *w, iovec *iov, Py_ssize_t count,
                               Py_ssize_t *moved) except -1:
    """Send iov[0:count] completely, resuming partial writes, IOV_MAX vectors per sendmsg.
    Adds the bytes sent to moved[0]; returns IO_AGAIN if a non-blocking socket fills up."""
    cdef msghdr msg
    cdef MsgOp op
    cdef Py_ssize_t r, first = 0, total
    memset(&msg, 0, sizeof(msg))
    op.msg = &msg
    op.flags = 0
    w.resumable = True
    while first < count:
        if iov[first].iov_len == 0:
            first += 1
            continue
        msg.msg_iov = &iov[first]
        msg.msg_iovlen = min(count - first, <Py_ssize_t>IOV_MAX)
        total = 0
        for i in range(msg.msg_iovlen):
            total += iov[first + i].iov_len
        r = io_call(w, sys_sendmsg, &op, POLLOUT, io_may_block(w, total))
        if r == IO_AGAIN:
            return IO_AGAIN
        moved[0] += r
        first = consume_iovecs(iov, first, r)
    return 0


def send_buffers(sock, buffers, *, bint zerocopy=False):
    """Send every byte of every buffer, in order, with sendmsg(2) scatter/gather.

    No joining copy: the kernel reads each buffer where it is, up to IOV_MAX buffers a call;
    partial writes are resumed where they stopped.

    Parameters
    ----------
    buffers : iterable of bytes-like
        Sent in order, as one byte stream.
    zerocopy : bool, optional
        TCP: send with ``MSG_ZEROCOPY``, the kernel reading the buffers' own pages (plain sends
        on other sockets, and for sendmsg(2) calls below ``zerocopy_threshold`` bytes). Each
        buffer stays exported (a bytearray cannot be resized) until the kernel's completion;
        ``flush_zerocopy()`` waits for that. Mutating a buffer before then changes what may go
        on the wire: that is the caller's choice (bytes is always safe). When the kernel reports
        that it copied anyway (loopback), the socket stops asking. The kernel numbers the
        completions per open file: csock sockets on one open file in this process (``dup()``,
        ``fromfd``) share the bookkeeping, threshold and counts. In a forked child, a socket
        that was open at the fork sends copied (its numbering is the parent's), and the child
        never reads its completions; sharing one connection's zero-copy sends with another
        process in any other way (SCM_RIGHTS) is not supported.

    Returns
    -------
    int
        The total byte count. Blocking or with a timeout that is every byte; non-blocking,
        the count moved before the socket filled.

    Raises
    ------
    TypeError
        An item is not bytes-like (before anything is sent).
    BlockingIOError
        Non-blocking, and nothing could be sent; or blocking, and a kernel timeout set with
        ``setsockopt(SO_SNDTIMEO)`` passed before every byte went (``.sent``: the bytes
        that went first), as the stdlib's ``sendall`` raises then.
    TimeoutError
        The socket's timeout passed before every byte was sent.
    OSError
        sendmsg(2)'s error, as the stdlib's subclass; BrokenPipeError on a closed peer.
        Each of these has ``.sent``, the bytes that went before it.

    Notes
    -----
    One sendmsg(2) per IOV_MAX (1024) buffers when the kernel takes everything; no copy of
    the data in user space.
    """
    cdef IoWait w
    cdef Py_ssize_t n, i, acquired = 0, moved = 0
    cdef Py_buffer *views = NULL
    cdef iovec *iov = NULL
    cdef ZeroCopyState state
    cdef ZcOp drained
    # A tuple: exporting an item runs the item's code, which must not be able to shrink what C
    # indexes next (a caller's list could).
    cdef tuple items = tuple(buffers)
    n = len(items)
    if n > MAX_BUFFERS_PER_CALL:
        raise ValueError(f"send_buffers takes at most {MAX_BUFFERS_PER_CALL} buffers per call,"
                         f" got {n}")
    io_begin(sock, &w)
    if n == 0:
        return 0
    if zerocopy:
        state = zc_state_held(sock, &w)
        if state is not None and state.held:
            memset(&drained, 0, sizeof(drained))
            zc_drain(w.fd, &drained)
            state.absorb(&drained)
        if state is not None and state.mode == 1 and not state.copying:
            return zc_send_buffers(sock, &w, state, items)
    views = <Py_buffer *>PyMem_Malloc(n * sizeof(Py_buffer))
    iov = <iovec *>PyMem_Malloc(n * sizeof(iovec))
    try:
        if views == NULL or iov == NULL:
            raise MemoryError()
        for i in range(n):                  # every export first: bad items fail before any send
            export_readable(items[i], &views[i])
            acquired += 1
            iov[i].iov_base = views[i].buf
            iov[i].iov_len = views[i].len
        try:
            if sendmsg_iovecs(&w, iov, n, &moved) == IO_AGAIN and send_cut_raises(&w, moved):
                raise_would_block()             # (.sent below)
        except OSError as error:
            note_sent(error, moved)
            raise
        return moved
    finally:
        for i in range(acquired):
            PyBuffer_Release(&views[i])
        PyMem_Free(views)
        PyMem_Free(iov)


# --- recv_exactly ---------------------------------------------------------------------------

cdef int recv_exactly_wait(object sock, IoWait *w, char *buf, Py_ssize_t n) except -1:
    """Fill buf[0:n] with recv(2). End of stream first raises IncompleteReadError; a timeout,
    a would-block or any other error is raised with `.partial` set to the bytes read so far
    (also in buf[0:len(partial)]). Nothing is kept back on the socket: the next read, of any
    kind, gets the bytes that follow."""
    cdef BufOp op
    cdef Py_ssize_t r, got = 0
    op.flags = 0
    try:
        while got < n:
            op.buf = buf + got
            op.len = n - got
            r = io_call(w, sys_recv, &op, POLLIN, io_may_block(w, n - got))
            if r == IO_AGAIN:
                raise_would_block()
            if r == 0:
                raise IncompleteReadError(PyBytes_FromStringAndSize(buf, got), n)
            got += r
    except IncompleteReadError:
        raise
    except BaseException as error:
        attach_partial(error, buf, got)
        raise
    return 0


cdef int attach_partial(object error, const char *buf, Py_ssize_t got) except -1:
    """error.partial = the bytes read, where the exception takes attributes."""
    try:
        error.partial = PyBytes_FromStringAndSize(buf, got)
    except AttributeError:
        pass
    return 0


cdef int fio_recv_exactly_into(object sock, char *buf, Py_ssize_t n) except -1:
    cdef IoWait w
    io_begin(sock, &w)
    return recv_exactly_wait(sock, &w, buf, n)


def recv_exactly_into(sock, buffer):
    """Fill buffer completely: recv(2) until ``len(buffer)`` bytes have arrived.

    Parameters
    ----------
    buffer : writable bytes-like
        Filled from its start to its end.

    Raises
    ------
    IncompleteReadError
        End of stream first; ``.partial`` holds the bytes that did arrive.
    TimeoutError, BlockingIOError
        The socket's timeout passed (or, non-blocking, the kernel would block) first;
        ``.partial`` holds the bytes read so far, as bytes (they are also in the buffer's
        first ``len(partial)`` bytes). Nothing is kept on the socket.
    OSError
        recv(2)'s error, with ``.partial`` too.

    Notes
    -----
    Reads straight into the buffer: one recv(2) when the bytes are already queued, no
    allocation.
    """
    cdef Py_buffer view
    get_writable_buffer(buffer, &view, "recv_exactly_into")
    try:
        fio_recv_exactly_into(sock, <char *>view.buf, view.len)
    finally:
        PyBuffer_Release(&view)


def recv_exactly(sock, Py_ssize_t n):
    """Receive exactly n bytes: recv(2) until they have all arrived.

    Parameters
    ----------
    n : int
        The byte count.

    Returns
    -------
    bytes
        Exactly n bytes.

    Raises
    ------
    IncompleteReadError
        End of stream first; ``.partial`` holds the bytes that did arrive.
    TimeoutError, BlockingIOError
        The socket's timeout passed (or, non-blocking, the kernel would block) first;
        ``.partial`` holds the bytes read so far. Nothing is kept on the socket, so every
        receive method, select() and asyncio see the stream as the kernel has it.
    OSError
        recv(2)'s error, with ``.partial`` too.

    Notes
    -----
    One bytes object of n bytes, filled in place; one recv(2) when the bytes are queued.
    """
    if n < 0:
        raise ValueError("negative size in recv_exactly")
    result = PyBytes_FromStringAndSize(NULL, n)
    fio_recv_exactly_into(sock, PyBytes_AS_STRING(result), n)
    return result


# --- sendfile: the stdlib's socket.sendfile() loop, one sendfile(2) at a time ----------------

cdef extern from *:
    """
    #include <signal.h>
    #include <sys/sendfile.h>
    /* sendfile(2) to a closed peer: EPIPE and SIGPIPE, and unlike send(2) it takes no
     * MSG_NOSIGNAL. SIGPIPE is blocked in this thread around the call, and one the call
     * left pending is taken (sigtimedwait, no wait) unless one was pending already: that
     * one is the program's, and the call's merged into it. Then the mask is restored.
     * (A call cut short can have met EPIPE too: sendfile(2) returns the bytes it moved
     * before, and leaves the signal.) */
    static Py_ssize_t csock_sendfile_nosigpipe(int out_fd, int in_fd, off_t *offset,
                                               size_t count) {
        sigset_t pipe_only, old, pending;
        struct timespec now = {0, 0};
        int was_pending, err;
        Py_ssize_t r;
        sigemptyset(&pipe_only);
        sigaddset(&pipe_only, SIGPIPE);
        pthread_sigmask(SIG_BLOCK, &pipe_only, &old);
        was_pending = sigpending(&pending) == 0 && sigismember(&pending, SIGPIPE) == 1;
        r = sendfile(out_fd, in_fd, offset, count);
        err = errno;
        if (!was_pending && (r < 0 ? err == EPIPE : (size_t)r < count)
                && sigpending(&pending) == 0 && sigismember(&pending, SIGPIPE) == 1)
            sigtimedwait(&pipe_only, NULL, &now);
        pthread_sigmask(SIG_SETMASK, &old, NULL);
        errno = err;
        return r;
    }
    """
    Py_ssize_t csock_sendfile_nosigpipe(int out_fd, int in_fd, off_t *offset,
                                        size_t count) noexcept nogil


cdef struct SendfileOp:
    int in_fd
    off_t offset
    size_t count


cdef Py_ssize_t sys_sendfile(int fd, void *op) noexcept nogil:
    cdef SendfileOp *o = <SendfileOp *>op
    return csock_sendfile_nosigpipe(fd, o.in_fd, &o.offset, o.count)


def sock_sendfile_once(sock, int in_fd, off_t offset, Py_ssize_t count, /):
    """Send up to count bytes of the file in_fd from offset with one sendfile(2) (the file's
    own position is not used or moved); the number of bytes the kernel took.

    A csock call like send(): counted in flight on the socket's fd, so a close() from another
    thread makes it raise EBADF (never send to whatever new socket took the number), with
    the socket's timeout (TimeoutError) and EINTR retried. It is what ``socket.sendfile()``
    calls in a loop, looking up the fd afresh each time. A closed peer raises
    BrokenPipeError and no SIGPIPE reaches the process (blocked in this thread meanwhile).

    Raises
    ------
    BlockingIOError
        A kernel send timeout (SO_SNDTIMEO) passed, or the socket is non-blocking and full.
    TimeoutError
        The socket's timeout passed before any room appeared.
    OSError
        sendfile(2)'s error (EINVAL for a file it cannot map, ...); EBADF once the socket is
        closed.
    """
    cdef IoWait w
    cdef SendfileOp op
    cdef Py_ssize_t sent
    if count < 0:               # (a ssize_t, as os.sendfile takes it: 2**63 is OverflowError)
        raise ValueError("count must be >= 0")
    op.in_fd = in_fd
    op.offset = offset
    op.count = <size_t>count
    io_begin(sock, &w)
    sent = io_call(&w, sys_sendfile, &op, POLLOUT, True)
    if sent == IO_AGAIN:
        raise_errno(EAGAIN)
    return sent
