# A socket's fd and timeout, read from the object.
#
# csock sockets subclass _socket.socket, whose C struct holds the fd and the timeout in
# nanoseconds (negative: blocking, 0: non-blocking). Reading them directly saves two method calls
# per operation. The layout is checked against a live socket at import (_check_layout); if it
# does not match (another Python), every read goes through fileno()/gettimeout() instead.
cimport cython
from cpython.object cimport PyObject, PyTypeObject, PyObject_TypeCheck, Py_TYPE
from libc.stdint cimport int64_t
from includes.pysocket cimport csock_socket_fields, CSOCK_SOCKET_FIELDS
from includes.members cimport csock_slot_store as slot_store
from includes.socket cimport getsockopt, setsockopt, socklen_t, SOL_SOCKET, SO_TYPE, SO_BUSY_POLL
from libc.errno cimport errno

import _socket

cdef PyTypeObject *_socket_type = <PyTypeObject *>_socket.socket
cdef bint _layout_ok = False


cdef int _check_layout() except -1:
    global _layout_ok
    cdef csock_socket_fields *f
    s = _socket.socket(_socket.AF_INET, _socket.SOCK_DGRAM)
    try:
        f = CSOCK_SOCKET_FIELDS(s)
        ok = f.sock_fd == s.fileno() and f.sock_family == s.family and f.sock_timeout < 0
        s.settimeout(2.5)
        ok = ok and f.sock_timeout == 2500000000
        s.setblocking(False)
        ok = ok and f.sock_timeout == 0
    finally:
        s.close()
    _layout_ok = ok and f.sock_fd == -1
    return 0


_check_layout()


# Per-socket state: one SocketState per csock socket, in its _csock_state slot (made on first
# use), read at a fixed offset. Everything csock keeps per socket lives here, so a new feature
# adds a field and nothing else: what must follow the socket's open file rather than its fd
# number (the calls in flight: close() defers close(2) until they have left, as Go's
# internal/poll.FD does), spin_us, the GIL-held try back-off, zero-copy bookkeeping, the batch
# receiver, GSO/GRO/metadata modes and SPP numbering. The fields are declared in sockref.pxd.
@cython.final
@cython.no_gc_clear             # tp_clear must not drop zerocopy before __dealloc__ orphans it
cdef class SocketState:
    """A csock socket's own state (its _csock_state slot)."""

    def __cinit__(self):
        self.pending_fd = -1
        self.spp_expected = -1             # (any number may come first)
        self.generation = _fork_generation

    def __dealloc__(self):
        if self.zerocopy is not None:
            zerocopy_orphan(self.zerocopy)      # exports the kernel may still read outlive us

    cdef inline int calls_in_flight(self) noexcept:
        """Calls running now; those counted before a fork() do not run in this process."""
        if self.generation != _fork_generation:
            self.generation = _fork_generation
            self.inflight = 0
            self.sleeping = 0
        return self.inflight


# After fork() the child's states still count the parent's calls in flight (generation
# tells), and a close the parent deferred is the child's to finish on its copy of the fd.
cdef unsigned long _fork_generation = 0
cdef set _deferred_closes = set()       # SocketStates whose pending_fd waits for a call to leave

cdef PyTypeObject *_csock_class = NULL
cdef Py_ssize_t _state_offset = 0
cdef list _registered = []
cdef enum:
    MAX_SPIN_US = 1000000


def register_socket_class(cls):
    """Called once by csock.socket: its instances keep a SocketState in their _csock_state slot."""
    global _csock_class, _state_offset
    if _csock_class != NULL:
        if cls is not <object>_csock_class:
            raise ValueError(f"{(<object>_csock_class).__qualname__} is already registered")
        return
    _state_offset = slot_offset(cls, "_csock_state")
    _csock_class = <PyTypeObject *>cls
    _registered.append(cls)                       # the pointer stays valid
    # Read-only from Python from now on: a call borrows the state from the slot (io_begin),
    # and deleting or replacing it while the call ran freed the state under it. (The member
    # descriptor itself goes: a property over its __get__ would still reach its __delete__.)
    setattr(cls, "_csock_state", property(_csock_state, None, None,
                                          cls.__dict__["_csock_state"].__doc__))


def _csock_state(sock):
    """The socket's SocketState (AttributeError until a csock call made it)."""
    cdef PyObject *state = NULL
    if _csock_class != NULL and PyObject_TypeCheck(sock, _csock_class):
        state = slot_value(sock, _state_offset)
    if state == NULL:
        raise AttributeError("_csock_state")
    return <object>state


cdef inline SocketState existing_state(object sock):
    """sock's SocketState, or None (a stdlib socket, or no csock call ran on it yet)."""
    cdef PyObject *state
    if _csock_class == NULL or not PyObject_TypeCheck(sock, _csock_class):
        return None
    state = slot_value(sock, _state_offset)
    if state == NULL or Py_TYPE(<object>state) != <PyTypeObject *>SocketState:
        return None                     # (a store to the private slot must not crash us)
    return <SocketState>state


cdef SocketState state_of(object sock):
    """sock's SocketState, made on first use; None for a socket that is not a csock socket."""
    cdef SocketState state = existing_state(sock)
    if state is None and _csock_class != NULL and PyObject_TypeCheck(sock, _csock_class):
        state = SocketState.__new__(SocketState)
        slot_store(sock, _state_offset, state)
    return state


def socket_state(sock):
    """A csock socket's SocketState (made on first use); TypeError for any other socket. For
    csock's Python layer (SPP numbering) and tests; the fields it shows are private."""
    cdef SocketState state = state_of(sock)
    if state is None:
        raise TypeError(f"expected a csock socket, not {type(sock).__name__}")
    return state


def set_spin(sock, us):
    """Set a csock socket's spin_us: before a call would sleep (blocking, or waiting for its
    timeout), poll the socket without sleeping for up to this many microseconds (GIL
    released, but for the first 10 µs of a receive in a process with one Python thread: see
    io_call). 0 turns it off. Non-blocking sockets never spin.

    Where the kernel allows it, SO_BUSY_POLL is set to the same value, so that the sleep which
    follows a spin, and poll(2), busy-poll the device queue first (NICs with NAPI busy
    polling; raising it needs CAP_NET_ADMIN, and loopback has no queue to poll). Returns
    whether SO_BUSY_POLL took."""
    cdef long value = us
    cdef int busy
    cdef SocketState state
    if value < 0 or value > MAX_SPIN_US:
        raise ValueError(f"spin_us must be between 0 and {MAX_SPIN_US}, got {value}")
    state = state_of(sock)
    if state is None:
        raise TypeError(f"spin_us needs a csock socket, not {type(sock).__name__}")
    state.spin_ns = value * 1000
    busy = <int>value
    fd = sock.fileno()
    return fd >= 0 and setsockopt(fd, SOL_SOCKET, SO_BUSY_POLL, &busy, sizeof(busy)) == 0


def note_kernel_timeout(sock):
    """setsockopt(SO_RCVTIMEO or SO_SNDTIMEO) ran on a csock socket: its blocking calls sleep in
    the system call itself, so the kernel's timeout applies (BlockingIOError, as the stdlib),
    instead of in csock's poll(2), which that timeout would not end."""
    cdef SocketState state = state_of(sock)
    if state is not None:
        state.kernel_timeouts = True


def get_spin(sock):
    """A csock socket's spin_us (0: off)."""
    cdef SocketState state = existing_state(sock)
    return 0 if state is None else state.spin_ns // 1000


cdef int _no_close_pending = 0                  # what IoWait.closing points at without a state
# Closed sockets' zero-copy sends still waiting for completions (zerocopy.pyx): every csock
# call drains them first, so their dups close (and their peers see end of stream) soon after.
cdef bint _orphans_waiting = False


cdef inline int64_t timeout_ns_of(csock_socket_fields *f) noexcept:
    """The socket object's timeout as IoWait keeps it: -1 blocking, 0 non-blocking, > 0 ns."""
    return f.sock_timeout if f.sock_timeout >= 0 else -1


cdef int io_begin(object sock, IoWait *w) except -1:
    """Fill w with sock's fd, timeout and state; the deadline starts at the first wait."""
    cdef csock_socket_fields *f
    cdef SocketState state = state_of(sock)
    if _orphans_waiting:
        drain_orphans()
    w.deadline_ns = 0
    w.calls = 0
    w.sock = NULL
    w.spin_ns = 0
    w.state = NULL
    w.resumable = False
    w.closing = &_no_close_pending
    if state is not None:
        w.state = <void *>state                 # the socket's slot keeps it alive
        w.closing = &state.closing
        w.spin_ns = state.spin_ns
    if _layout_ok and PyObject_TypeCheck(sock, _socket_type):
        w.sock = <void *>sock
        f = CSOCK_SOCKET_FIELDS(sock)
        w.fd = f.sock_fd
        w.timeout_ns = timeout_ns_of(f)
        return 0
    if not isinstance(sock, _socket.socket):
        raise TypeError(f"expected a socket object, not {type(sock).__name__}")
    w.fd = sock.fileno()
    timeout = sock.gettimeout()
    w.timeout_ns = -1 if timeout is None else <int64_t>(timeout * 1e9)
    return 0


def layout_ok():
    """True when the fd and timeout are read straight from the socket object (fast path)."""
    return _layout_ok


def fd_socket_type(fileno):
    """The SO_TYPE of a descriptor (getsockopt(2)), e.g. SOCK_STREAM."""
    cdef int fd = fileno, kind = 0
    cdef socklen_t size = sizeof(kind)
    if getsockopt(fd, SOL_SOCKET, SO_TYPE, &kind, &size) < 0:
        raise_errno(errno)
    return kind
