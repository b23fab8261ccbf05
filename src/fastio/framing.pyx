# FramedStream: messages over a byte stream, each a 4-byte big-endian length then the bytes.
#
# Receive: one recv(2) into a large Arena, then every whole frame in it is handed out as a
# MessageView. New bytes are only ever appended after the parsed region, and the region is
# moved or reused only when no view refers to the arena, so a message the caller holds is never
# overwritten. A length is checked against max_size before anything is allocated for it.
#
# Send: small frames are packed (length + payload) into one contiguous buffer, large payloads go
# as their own iovec without a copy; everything goes out with as few sendmsg(2) calls as the
# kernel allows. Once the kernel has taken part of a call's bytes, the call's frames are
# accepted: if it then would block, the timeout expires or a sendmsg fails, the rest is kept in
# a backlog that the next send (or flush()) writes first, so a frame is never cut. Only a
# non-blocking socket returns then (the stdlib's send: it moved data); otherwise the timeout
# (TimeoutError; BlockingIOError for SO_SNDTIMEO) or the failure is raised, its .accepted
# saying the frames must not be sent again, .sent how many of the call's bytes went.
#
# Threads: the arena and its offsets belong to the reading side, the pack buffer, iovecs and
# backlog to the writing side. Each side has its own lock (CallLock), so one thread may send
# while another receives, and concurrent calls on one side run one after the other.
cimport cython
from cpython.buffer cimport PyObject_GetBuffer, PyBuffer_Release, PyBUF_SIMPLE
from cpython.bytes cimport PyBytes_FromStringAndSize
from cpython.bytearray cimport PyByteArray_AS_STRING, PyByteArray_GET_SIZE, PyByteArray_Resize
from cpython.list cimport PyList_Append, PyList_GET_SIZE
from cpython.pyport cimport PY_SSIZE_T_MAX
from cpython.mem cimport PyMem_Malloc, PyMem_Free
from cpython.pythread cimport (PyThread_type_lock, PyThread_allocate_lock, PyThread_free_lock,
                               PyThread_acquire_lock, PyThread_release_lock, NOWAIT_LOCK,
                               PyLockStatus, PY_LOCK_INTR)
from libc.stdint cimport uint32_t
from libc.string cimport memcpy, memmove
from includes.byteorder cimport load_be32, store_be32

cdef enum:
    FRAME_HEADER = 4
    ARENA_SIZE = WARM_ARENA_SIZE     # receive arena, 256 KiB (more for a frame that needs it)
    PACK_LIMIT = 16 * 1024           # payloads up to this are copied into the pack buffer
    PACK_BUFFER = 256 * 1024
    MAX_FRAME_LENGTH = 0xFFFFFFFF
    # a long lock wait is made of waits this long (below PY_TIMEOUT_MAX)
    LOCK_WAIT_SLICE_US = 1000000


cdef extern from "pythread.h":
    PyLockStatus PyThread_acquire_lock_timed(PyThread_type_lock lock, long long microseconds,
                                             int intr_flag) nogil
    unsigned long current_thread "PyThread_get_thread_ident"() noexcept


# --- one direction's lock -------------------------------------------------------------------
# Every call enters and leaves holding the GIL, so a flag the GIL guards is the lock itself:
# uncontended, entering costs a test and two stores (no atomic, no system call, no clock
# read). A thread that finds the flag set waits on `wakeup` with the GIL released, and the call
# that ends posts it while anyone waits; a woken thread checks the flag again (another may
# have taken it first, and a waiter that timed out may leave an extra post behind). The wait
# runs signal handlers as threading.Lock's does and gives up with TimeoutError after the
# socket's timeout. `owner` lets a call re-entered in its own thread (a signal handler), which
# would wait for itself forever, raise at once.
#
# fork(): a forked child has only the thread that forked, so a call another thread was running
# (or waiting to run) does not exist there, and would hold the lock for ever. `generation`
# (sockref.pyx's _fork_generation, as SocketState's calls in flight) tells such a copy: its
# first use in the child frees it.

cdef struct CallLock:
    bint busy                     # a call of this direction is running (changed with the GIL)
    unsigned long owner           # the thread running it
    Py_ssize_t waiters            # threads waiting for it to end
    PyThread_type_lock wakeup     # held while nobody is woken; released to wake a waiter
    unsigned long generation      # _fork_generation when busy/owner/waiters were last valid


cdef int call_lock_init(CallLock *l) except -1:
    l.busy = False
    l.owner = 0
    l.waiters = 0
    l.generation = _fork_generation
    l.wakeup = PyThread_allocate_lock()
    if l.wakeup == NULL:
        raise MemoryError()
    PyThread_acquire_lock(l.wakeup, NOWAIT_LOCK)
    return 0


cdef void call_lock_after_fork(CallLock *l) noexcept:
    """First use in a forked child: a call (or wait) of a thread other than this one was in
    the parent and does not run here, so the lock is free. The thread that forked may itself
    be inside a call (fork() from a signal handler): that one still runs, and keeps it."""
    cdef PyThread_type_lock fresh
    l.generation = _fork_generation
    l.waiters = 0
    if l.busy and l.owner != current_thread():
        l.busy = False
        l.owner = 0
    # A waiter may have been inside an operation on `wakeup` when fork() came: as CPython
    # does for its own locks after fork (_PyThread_at_fork_reinit), take a new one and leak
    # the old rather than free it. Without memory, the old one serves (nobody waits on it).
    fresh = PyThread_allocate_lock()
    if fresh != NULL:
        PyThread_acquire_lock(fresh, NOWAIT_LOCK)
        l.wakeup = fresh


cdef inline bint call_lock_busy(CallLock *l) noexcept:
    """Whether a call of this direction runs now (in this process)."""
    if l.generation != _fork_generation:
        call_lock_after_fork(l)
    return l.busy


cdef void call_lock_free(CallLock *l) noexcept:
    if l.wakeup != NULL:
        PyThread_free_lock(l.wakeup)
        l.wakeup = NULL


cdef inline int call_lock_enter(CallLock *l, object sock, str call) except -1:
    if call_lock_busy(l):
        call_lock_wait(l, sock, call)
    l.busy = True
    l.owner = current_thread()
    return 0


cdef inline void call_lock_exit(CallLock *l) noexcept:
    l.busy = False
    l.owner = 0
    if l.waiters:
        PyThread_release_lock(l.wakeup)


cdef int call_lock_wait(CallLock *l, object sock, str call) except -1:
    """Return once no call of this direction runs (the caller then takes the lock, still
    holding the GIL); TimeoutError once the socket's timeout (if above 0) passes first."""
    cdef PyLockStatus got
    cdef int64_t deadline = 0
    cdef long long wait_us
    if l.owner == current_thread():
        raise RuntimeError(
            f"FramedStream.{call}() re-entered in the same thread while a call of that direction "
            "is running in it (from a signal handler or a finalizer?)")
    timeout = sock.gettimeout()
    if timeout:
        deadline = monotonic_ns() + <int64_t>(timeout * 1e9)
    l.waiters += 1
    try:
        while l.busy:
            wait_us = LOCK_WAIT_SLICE_US
            if deadline:
                wait_us = min(wait_us, (deadline - monotonic_ns()) // 1000)
                if wait_us <= 0:
                    raise TimeoutError("timed out")
            with nogil:
                got = PyThread_acquire_lock_timed(l.wakeup, wait_us, 1)
            if got == PY_LOCK_INTR and PyErr_CheckSignals() < 0:
                return -1                   # a handler raised: the call ends
    finally:
        if l.waiters > 0:               # (a fork() in a handler that ran here reset it)
            l.waiters -= 1
    return 0


@cython.final
cdef class FramedStream:
    """Length-prefixed messages over a stream socket (TCP, AF_UNIX stream).

    Wire format: a 4-byte big-endian unsigned length, then that many bytes; any program that
    speaks it interoperates. ``send``/``send_many`` write frames with as few sendmsg(2) calls as
    the kernel allows; ``recv``/``recv_many`` read once into a large buffer and return read-only
    views (MessageView) that stay valid for as long as the caller holds them.

    Timeouts and non-blocking sockets: a call that cannot complete raises TimeoutError /
    BlockingIOError and loses nothing: a partial frame received stays buffered for the next
    call. A send whose frames the kernel took part of has accepted them all: what it did not
    take yet stays buffered (``pending_send``) and is written first by the next send or by
    flush(). With a timeout (or a kernel SO_SNDTIMEO) such a send still raises when the
    time passes before its frames are written, with ``.accepted`` True: send them again and
    they go twice. Non-blocking, it returns (it moved data); a send that moved nothing
    raises and accepted nothing.

    Threads: one thread may send while another receives. Calls of one direction from several
    threads run one at a time (a receiving side and a sending side lock): a call waits for the
    one in progress, within the socket's timeout (TimeoutError after it), so messages are
    never corrupted, lost or duplicated, and one thread's sends go out in its order. Calling
    back in from the same thread while a call runs there (a signal handler) raises
    RuntimeError. In a child made by fork(), calls that other threads of the parent were
    running do not hold the stream: the child's own calls run (the two processes then share
    the connection, as any forked socket does).

    Attributes
    ----------
    socket : StreamSocket
        The stream socket the frames travel on.
    max_size : int
        The largest message length accepted; a larger announced length raises
        FrameTooLargeError before anything is allocated for it.
    """
    cdef readonly object socket
    cdef readonly Py_ssize_t max_size
    cdef Arena _arena
    cdef Py_ssize_t _start            # first unparsed byte in the arena
    cdef Py_ssize_t _end              # end of the bytes received into the arena
    cdef Py_ssize_t _lent             # bytes after _end an io_uring recv may be writing
    cdef bint _eof
    cdef object _read_error           # FrameTooLargeError: reading is over for good
    cdef char *_pack
    cdef iovec *_iov
    cdef bytearray _backlog           # accepted bytes the kernel has not taken yet
    cdef Py_ssize_t _backlog_sent
    cdef CallLock _reading            # guards the arena, _start, _end, _eof, _read_error
    cdef CallLock _writing            # guards _pack, _iov, _backlog, _backlog_sent

    def __cinit__(self):
        # The pack buffer and the iovecs come with the first send: a stream that only
        # receives, or whose frames another sender lays out (csock.aio's io_uring engine),
        # never pays for them.
        self._pack = NULL
        self._iov = NULL
        call_lock_init(&self._reading)
        call_lock_init(&self._writing)

    def __dealloc__(self):
        PyMem_Free(self._pack)
        PyMem_Free(self._iov)
        call_lock_free(&self._reading)
        call_lock_free(&self._writing)

    def __init__(self, sock, *, Py_ssize_t max_size=16 * 2**20):
        if not isinstance(sock, _socket.socket):
            raise TypeError(f"FramedStream needs a stream socket, not {type(sock).__name__}")
        if sock.type != _socket.SOCK_STREAM:
            raise ValueError("FramedStream needs a SOCK_STREAM socket")
        check_max_size(max_size)
        if call_lock_busy(&self._reading) or call_lock_busy(&self._writing):
            # A running receive writes into the arena, a running send reads the backlog, with
            # the GIL released: replacing either under them would free memory in use.
            raise RuntimeError("FramedStream.__init__() called again while a call is running")
        self._check_not_lent("__init__")
        self.socket = sock
        self.max_size = max_size
        # An empty arena until the first receive: _make_room gives the stream its real one
        # then (an accepted connection that never reads costs no 256 KiB).
        self._arena = Arena(0)
        self._start = self._end = 0
        self._backlog = bytearray()
        self._backlog_sent = 0

    # --- receiving ---------------------------------------------------------------------------

    cdef object _next_frame(self):
        """The next whole frame as a view, or None if the buffer holds no whole frame."""
        cdef Py_ssize_t buffered = self._end - self._start
        cdef Py_ssize_t length
        cdef char *at
        if buffered < FRAME_HEADER:
            return None
        at = self._arena.data + self._start
        length = load_be32(at)
        if length > self.max_size:
            self._read_error = FrameTooLargeError(
                f"frame of {length} bytes announced, above max_size={self.max_size}; "
                "the stream cannot be read any further")
            raise self._read_error
        if buffered < FRAME_HEADER + length:
            return None
        self._start += FRAME_HEADER + length
        return make_view(self._arena, at + FRAME_HEADER, length)

    cdef Py_ssize_t _frame_need(self) noexcept:
        """Bytes the frame at the front needs in all (its header only, if not yet known)."""
        if self._end - self._start < FRAME_HEADER:
            return FRAME_HEADER
        return FRAME_HEADER + <Py_ssize_t>load_be32(self._arena.data + self._start)

    cdef int _check_not_lent(self, str call) except -1:
        """RuntimeError while the kernel receives into the arena (framed_lend): a receive of
        our own would put bytes where the kernel is putting later ones."""
        if self._lent:
            raise RuntimeError(f"FramedStream.{call}() while an io_uring recv receives into it")
        return 0

    cdef Py_ssize_t _lend(self, Py_ssize_t min_length, char **at) except -1:
        """Room in the arena for the rest of the frame at the front, for the kernel to receive
        into: its length (at[0] where it starts), or 0 and nothing lent when the frame's
        length is not known yet or fewer than min_length bytes of it are missing."""
        cdef Py_ssize_t buffered = self._end - self._start
        cdef Py_ssize_t need
        if (self._lent or self._eof or self._read_error is not None
                or call_lock_busy(&self._reading) or buffered < FRAME_HEADER):
            return 0
        need = self._frame_need()
        if need - FRAME_HEADER > self.max_size or need - buffered < min_length:
            return 0
        self._make_room(need)
        at[0] = self._arena.data + self._end
        self._lent = need - buffered
        return self._lent

    cdef list _lent_filled(self, Py_ssize_t length):
        """The kernel wrote length bytes (0 after an error) where _lend said and is done with
        the room: they count as received; returns every whole message now buffered."""
        if length < 0 or length > self._lent:
            raise ValueError(f"{length} bytes received into {self._lent} lent")
        self._lent = 0
        self._end += length
        return self._whole_frames(PY_SSIZE_T_MAX)

    cdef int _make_room(self, Py_ssize_t need) except -1:
        """Make the arena able to hold `need` bytes from the start of the unparsed region.
        The unparsed bytes move only within an arena no view refers to, else to a new one."""
        cdef Py_ssize_t buffered = self._end - self._start
        cdef Arena fresh
        if self._start + need <= self._arena.size:
            return 0
        if arena_is_private(<PyObject *>self._arena) and need <= self._arena.size <= ARENA_SIZE:
            memmove(self._arena.data, self._arena.data + self._start, buffered)
        else:
            fresh = Arena(max(<Py_ssize_t>ARENA_SIZE, need))
            memcpy(fresh.data, self._arena.data + self._start, buffered)
            self._arena = fresh
        self._start = 0
        self._end = buffered
        return 0

    cdef Py_ssize_t _fill(self, IoWait *w) except -1:
        """One recv(2) into the arena, as much as fits: bytes read, 0 at EOF, or IO_AGAIN."""
        cdef BufOp op
        cdef Py_ssize_t r
        self._check_not_lent("recv")
        self._make_room(self._frame_need())
        op.buf = self._arena.data + self._end
        op.len = self._arena.size - self._end
        op.flags = 0
        r = io_call(w, sys_recv, &op, POLLIN, io_may_block(w, op.len))
        if r > 0:
            self._end += r
        elif r == 0:
            self._eof = True
        return r

    cdef int _end_of_stream(self) except -1:
        """At EOF: a partial frame raises IncompleteReadError (once); else returns 0."""
        cdef Py_ssize_t buffered = self._end - self._start
        if buffered == 0:
            return 0
        partial = PyBytes_FromStringAndSize(self._arena.data + self._start, buffered)
        need = self._frame_need()
        self._start = self._end
        raise IncompleteReadError(partial, need)

    cdef list _receive(self, Py_ssize_t max_messages, str call):
        """Up to max_messages messages, one receiving thread at a time."""
        call_lock_enter(&self._reading, self.socket, call)
        try:
            return self._receive_unlocked(max_messages)
        finally:
            call_lock_exit(&self._reading)

    cdef list _receive_unlocked(self, Py_ssize_t max_messages):
        cdef IoWait w
        cdef list messages
        cdef bint waited = False
        if self._read_error is not None:
            raise self._read_error
        while True:
            messages = self._whole_frames(max_messages)
            if messages:
                return messages
            if self._eof:
                self._end_of_stream()
                return messages
            if not waited:
                io_begin(self.socket, &w)   # one deadline for the whole call
                waited = True
            if self._fill(&w) == IO_AGAIN:
                raise_would_block()

    def feed(self, data):
        """Take bytes received elsewhere (csock.aio's io_uring engine receives into the ring's
        buffers) as if recv(2) had returned them, and return every whole message now buffered
        (possibly []). No system call. A length above max_size raises FrameTooLargeError (after
        the messages before it were returned, at the next call)."""
        cdef Py_buffer view
        PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
        try:
            return self._feed(<const char *>view.buf, view.len)
        finally:
            PyBuffer_Release(&view)

    cdef list _feed(self, const char *data, Py_ssize_t length):
        if self._arena is None:
            raise ValueError("FramedStream.__init__() was not called")
        call_lock_enter(&self._reading, self.socket, "feed")
        try:
            if self._read_error is not None:
                raise self._read_error
            if self._eof:
                raise ValueError("feed() after feed_eof()")
            if length:
                self._check_not_lent("feed")
                # Room for the whole frame once its length is known: growing by each arrival
                # copied a large frame's bytes again at every ring buffer (quadratic).
                self._make_room(max(self._end - self._start + length, self._frame_need()))
                memcpy(self._arena.data + self._end, data, length)
                self._end += length
            return self._whole_frames(PY_SSIZE_T_MAX)
        finally:
            call_lock_exit(&self._reading)

    def feed_eof(self):
        """The stream ended (as recv(2) returning 0): IncompleteReadError if a partial frame is
        buffered (once), else nothing. Whole frames still buffered stay for feed()'s caller to
        have taken already: feed returns them all."""
        call_lock_enter(&self._reading, self.socket, "feed_eof")
        try:
            self._check_not_lent("feed_eof")
            self._eof = True
            self._end_of_stream()
        finally:
            call_lock_exit(&self._reading)

    cdef list _whole_frames(self, Py_ssize_t max_messages):
        """Up to max_messages whole messages already buffered (no system call)."""
        cdef list messages = []
        try:
            while PyList_GET_SIZE(messages) < max_messages:
                message = self._next_frame()
                if message is None:
                    break
                PyList_Append(messages, message)
            return messages
        except FrameTooLargeError:
            if messages:
                return messages     # hand over what came before; the next call raises
            raise

    def recv(self):
        """The next message (a read-only MessageView); recv(2) only if none is buffered.
        EOFError at end of stream between frames; IncompleteReadError inside one."""
        messages = self._receive(1, "recv")
        if not messages:
            raise EOFError("end of stream")
        return messages[0]

    def recv_many(self, Py_ssize_t max_messages=1024):
        """Every whole message already received, up to max_messages (at least one: blocks
        until there is one, with one recv(2) per wait). [] at end of stream."""
        if max_messages < 1:
            raise ValueError("max_messages must be at least 1")
        return self._receive(max_messages, "recv_many")

    def __iter__(self):
        return self

    def __next__(self):
        messages = self._receive(1, "__next__")
        if not messages:
            raise StopIteration
        return messages[0]

    # --- sending -----------------------------------------------------------------------------

    @property
    def buffered(self):
        """Bytes received from the kernel and not yet handed out as messages (a partial frame,
        or whole frames a recv() has not taken yet)."""
        return self._end - self._start

    @property
    def read_error(self):
        """The FrameTooLargeError that ended reading for good (every later receive raises
        it), or None."""
        return self._read_error

    @property
    def pending_send(self):
        """Bytes accepted by an earlier send that the kernel has not taken yet."""
        return len(self._backlog) - self._backlog_sent

    cdef Py_ssize_t _flush_backlog(self, IoWait *w) except -1:
        """Write the backlog: 0 once empty, IO_AGAIN if the socket filled up first."""
        cdef BufOp op
        cdef Py_ssize_t r, left
        cdef char *data = self._backlog
        op.flags = 0
        w.resumable = True                  # (partial sends resume here)
        while self._backlog_sent < len(self._backlog):
            left = len(self._backlog) - self._backlog_sent
            op.buf = data + self._backlog_sent
            op.len = left
            r = io_call(w, sys_send, &op, POLLOUT, io_may_block(w, left))
            if r == IO_AGAIN:
                return IO_AGAIN
            self._backlog_sent += r
        self._backlog = bytearray()
        self._backlog_sent = 0
        return 0

    def take_backlog(self):
        """Hand over the frames earlier sends accepted and the kernel has not taken yet (a
        bytearray, empty if none), for another sender to send (csock.aio's io_uring engine
        sends them with its ring); the backlog is empty after."""
        call_lock_enter(&self._writing, self.socket, "take_backlog")
        try:
            backlog, sent = self._backlog, self._backlog_sent
            self._backlog = bytearray()
            self._backlog_sent = 0
            return backlog if sent == 0 else backlog[sent:]
        finally:
            call_lock_exit(&self._writing)

    def flush(self):
        """Write what earlier sends left in the backlog; True once it is empty. Blocks (within
        the socket's timeout) on a blocking socket; writes what it can on a non-blocking one."""
        cdef IoWait w
        call_lock_enter(&self._writing, self.socket, "flush")
        try:
            io_begin(self.socket, &w)
            return self._flush_backlog(&w) == 0
        finally:
            call_lock_exit(&self._writing)

    cdef int _keep_rest(self, Py_ssize_t niov, Py_buffer *views, Py_ssize_t next_item,
                        Py_ssize_t n) except -1:
        """Copy everything of this call the kernel has not taken to the backlog's end (once)."""
        cdef Py_ssize_t i, rest = 0, at = PyByteArray_GET_SIZE(self._backlog)
        cdef char *out
        for i in range(niov):
            rest += self._iov[i].iov_len
        for i in range(next_item, n):
            rest += FRAME_HEADER + views[i].len
        PyByteArray_Resize(self._backlog, at + rest)
        out = PyByteArray_AS_STRING(self._backlog) + at
        for i in range(niov):
            memcpy(out, self._iov[i].iov_base, self._iov[i].iov_len)
            out += self._iov[i].iov_len
        for i in range(next_item, n):
            store_be32(out, <uint32_t>views[i].len)
            memcpy(out + FRAME_HEADER, views[i].buf, views[i].len)
            out += FRAME_HEADER + views[i].len
        return 0

    cdef Py_ssize_t _plan(self, Py_buffer *views, Py_ssize_t first, Py_ssize_t n,
                          Py_ssize_t *niov) noexcept:
        """Lay frames views[first:] out as iovecs: small ones packed into the pack buffer, large
        payloads by reference. Returns the index of the first frame left for the next round."""
        cdef Py_ssize_t i = first, used = 0, segment = 0, k = 0, length
        while i < n and k < IOV_MAX - 2:
            length = views[i].len
            if used + FRAME_HEADER + (length if length <= PACK_LIMIT else 0) > PACK_BUFFER:
                break
            store_be32(self._pack + used, <uint32_t>length)
            used += FRAME_HEADER
            if length <= PACK_LIMIT:
                memcpy(self._pack + used, views[i].buf, length)
                used += length
            else:
                self._iov[k].iov_base = self._pack + segment
                self._iov[k].iov_len = used - segment
                self._iov[k + 1].iov_base = views[i].buf
                self._iov[k + 1].iov_len = length
                k += 2
                segment = used
            i += 1
        if used > segment:
            self._iov[k].iov_base = self._pack + segment
            self._iov[k].iov_len = used - segment
            k += 1
        niov[0] = k
        return i

    cdef int _send_views(self, Py_buffer *views, Py_ssize_t n, str call) except -1:
        """Send frames of views[0:n], one sending thread at a time. An error says what of
        this call went (.sent) and whether its frames were accepted (.accepted)."""
        cdef Py_ssize_t moved = 0
        try:
            call_lock_enter(&self._writing, self.socket, call)
            try:
                self._send_views_unlocked(views, n, &moved)
            finally:
                call_lock_exit(&self._writing)
        except BaseException as error:
            note_accepted(error, moved)
            raise
        return 0

    cdef int _send_views_unlocked(self, Py_buffer *views, Py_ssize_t n,
                                  Py_ssize_t *moved) except -1:
        """Write the backlog, then the frames; moved[0] counts the frames' bytes that went."""
        cdef IoWait w
        if self._pack == NULL:
            self._pack = <char *>PyMem_Malloc(PACK_BUFFER)
            if self._pack == NULL:
                raise MemoryError()
        if self._iov == NULL:
            self._iov = <iovec *>PyMem_Malloc(IOV_MAX * sizeof(iovec))
            if self._iov == NULL:
                raise MemoryError()
        io_begin(self.socket, &w)
        if self._flush_backlog(&w) == IO_AGAIN:
            raise_would_block()             # nothing of this call accepted
        if self._write_frames(&w, views, n, moved) == IO_AGAIN and send_cut_raises(&w, moved[0]):
            # Nothing went (non-blocking), or SO_SNDTIMEO cut a blocking send, which sends
            # everything or raises (the frames are accepted all the same: .accepted).
            raise_would_block()
        return 0

    cdef Py_ssize_t _write_frames(self, IoWait *w, Py_buffer *views, Py_ssize_t n,
                                  Py_ssize_t *moved) except -1:
        """Write frames views[0:n], adding the bytes that go to moved[0]: 0 once all went,
        IO_AGAIN if the kernel would block first. Once part went, what the kernel has not
        taken is kept in the backlog (also when this raises), so no frame is ever cut: the
        next send or flush() writes it first (or fails as this did)."""
        cdef Py_ssize_t done = 0, following = 0, niov = 0
        cdef bint stopped = False
        try:
            while done < n and not stopped:
                following = self._plan(views, done, n, &niov)
                stopped = sendmsg_iovecs(w, self._iov, niov, moved) == IO_AGAIN
                done = following
        except BaseException:
            if moved[0]:
                self._keep_rest(niov, views, following, n)
            raise
        if stopped and moved[0]:
            self._keep_rest(niov, views, following, n)
        return IO_AGAIN if stopped else 0

    def send(self, message):
        """Send one message as one frame (one send/sendmsg(2) unless the kernel splits it).

        Parameters
        ----------
        message : bytes-like
            The frame's payload, at most 2**32 - 1 bytes (ValueError above, nothing sent).

        Raises
        ------
        TimeoutError
            The socket's timeout passed before the frames were all written (or while another
            thread's send ran). If ``.accepted`` is True, part of them went and the rest is kept
            (``pending_send``) for the next send or flush() to write first: do not send the
            messages again. ``.sent``: the bytes of the call's frames that went.
        BlockingIOError
            Non-blocking, and nothing of the call could be written (``.accepted`` False); or
            blocking, and a kernel timeout set with ``setsockopt(SO_SNDTIMEO)`` cut the call
            (``.accepted`` and ``.sent`` as for a timeout).
        OSError
            sendmsg(2)'s error (BrokenPipeError, ...), with ``.accepted`` and ``.sent`` too.

        Notes
        -----
        Non-blocking, a send the kernel took part of returns: its frames are accepted and
        ``pending_send`` holds the rest. close() drops a rest it cannot write in time.
        """
        cdef Py_buffer view
        PyObject_GetBuffer(message, &view, PyBUF_SIMPLE)
        try:
            if <size_t>view.len > MAX_FRAME_LENGTH:
                raise ValueError(f"a message of {view.len} bytes does not fit a 4-byte length")
            self._send_views(&view, 1, "send")
        finally:
            PyBuffer_Release(&view)

    def send_many(self, messages):
        """Send every message, in order, as frames with as few sendmsg(2) calls as the kernel
        allows.

        Parameters
        ----------
        messages : iterable of bytes-like
            Bad items raise TypeError/ValueError before any byte is sent.

        Raises
        ------
        TimeoutError, BlockingIOError, OSError
            As ``send()``, for the call's frames together (``.accepted``: do not send the
            messages again; ``.sent``: the bytes of the call's frames that went).

        Notes
        -----
        The call's frames are accepted together or not at all. Non-blocking, a send the
        kernel took part of returns, as send() does.
        """
        cdef Py_ssize_t n, i, acquired = 0
        cdef Py_buffer *views
        cdef tuple items = tuple(messages)     # (an export runs code that could shrink a list)
        n = len(items)
        if n > MAX_BUFFERS_PER_CALL:
            raise ValueError(f"send_many takes at most {MAX_BUFFERS_PER_CALL} messages per call,"
                             f" got {n}")
        if n == 0:
            return
        views = <Py_buffer *>PyMem_Malloc(n * sizeof(Py_buffer))
        if views == NULL:
            raise MemoryError()
        try:
            export_frames(items, n, views, &acquired)
            self._send_views(views, n, "send_many")
        finally:
            for i in range(acquired):
                PyBuffer_Release(&views[i])
            PyMem_Free(views)

    # --- lifetime ----------------------------------------------------------------------------

    def close(self):
        """Write any backlog, then close the socket. What cannot be written is dropped and
        close() does not raise for it: on a non-blocking socket that is full, past the
        socket's timeout, or when the connection has failed (a send has said so already, and
        a close() in a finally block must not replace that error). A send running in another
        thread is not waited for (it writes the backlog itself, first)."""
        cdef IoWait w
        cdef bint sending_elsewhere = call_lock_busy(&self._writing)
        if not sending_elsewhere:
            call_lock_enter(&self._writing, self.socket, "close")
        try:
            if not sending_elsewhere and self.pending_send and self.socket.fileno() >= 0:
                io_begin(self.socket, &w)
                self._flush_backlog(&w)
        except OSError:
            pass
        finally:
            if not sending_elsewhere:
                call_lock_exit(&self._writing)
            self.socket.close()

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc_value, traceback):
        self.close()

    def __repr__(self):
        return (f"<csock.FramedStream socket={self.socket!r} max_size={self.max_size} "
                f"buffered={self._end - self._start} pending_send={self.pending_send}>")


cdef Py_ssize_t export_frames(tuple items, Py_ssize_t n, Py_buffer *views,
                              Py_ssize_t *acquired) except -1:
    """Export items[0:n] into views (room for n), counting in acquired[0] the exports the
    caller must release (also when this raises); returns the frames' total length. TypeError
    for an item that is not bytes-like, ValueError for one above a 4-byte length."""
    cdef Py_ssize_t i, total = 0
    for i in range(n):
        export_readable(items[i], &views[i])
        acquired[0] += 1
        if <size_t>views[i].len > MAX_FRAME_LENGTH:
            raise ValueError(f"message {i} of {views[i].len} bytes does not fit a 4-byte length")
        total += FRAME_HEADER + views[i].len
    return total


cdef int note_accepted(object error, Py_ssize_t sent) except -1:
    """On an error a FramedStream send raises: .sent, the bytes of its frames that went, and
    .accepted, whether its frames are accepted (some went: the rest is in the backlog, for the
    next send or flush() to write first), in which case the caller must not send them again."""
    try:
        note_sent(error, sent)
        error.accepted = sent > 0
    except AttributeError:
        pass                            # (an exception class that takes no attributes)
    return 0


def check_max_size(Py_ssize_t max_size, /):
    """ValueError unless max_size fits a frame's 4-byte length (FramedStream's max_size)."""
    if max_size < 0 or max_size > MAX_FRAME_LENGTH:
        raise ValueError(f"max_size must be between 0 and {<Py_ssize_t>MAX_FRAME_LENGTH}")


def pack_frames(messages):
    """The frames of messages (each a 4-byte big-endian length, then its bytes) in one bytes
    object: what FramedStream.send_many puts on the wire, for a sender that is not a system call
    of csock's (csock.aio's io_uring engine). TypeError/ValueError for a bad item."""
    cdef Py_ssize_t n, i, acquired = 0, total = 0
    cdef Py_buffer *views
    cdef char *out
    cdef tuple items = tuple(messages)     # (an export runs code that could shrink a list)
    n = len(items)
    views = <Py_buffer *>PyMem_Malloc((n if n else 1) * sizeof(Py_buffer))
    if views == NULL:
        raise MemoryError()
    try:
        total = export_frames(items, n, views, &acquired)
        packed = PyBytes_FromStringAndSize(NULL, total)
        out = packed
        for i in range(n):
            store_be32(out, <uint32_t>views[i].len)
            memcpy(out + FRAME_HEADER, views[i].buf, views[i].len)
            out += FRAME_HEADER + views[i].len
        return packed
    finally:
        for i in range(acquired):
            PyBuffer_Release(&views[i])
        PyMem_Free(views)
