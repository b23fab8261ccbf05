# A socket's fd and timeout, read from the object.
#
# csock sockets subclass _socket.socket, whose C struct holds the fd and the timeout in
# nanoseconds (negative: blocking, 0: non-blocking). Reading them directly saves two method calls per
# operation. The layout is checked against a live socket at import (_check_layout); if it does
# not match (another Python), every read goes through fileno()/gettimeout() instead.
from cpython.object cimport PyObject, PyTypeObject, PyObject_TypeCheck
from libc.stdint cimport int64_t
from includes.pysocket cimport csock_socket_fields, CSOCK_SOCKET_FIELDS
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


# Sockets with spin_us set (their _csock_spin_ns slot); while none has, io_begin skips the
# slot. Counted up and down as sockets turn spinning on and off.
cdef Py_ssize_t _spin_users = 0
# csock.socket registers its class: io_begin reads the slot straight from its instances (a
# getattr costs ~40 ns, and formats an AttributeError while the slot is unset).
cdef PyTypeObject *_spin_class = NULL
cdef Py_ssize_t _spin_offset = 0
cdef enum:
    MAX_SPIN_US = 1000000


def set_spin(sock, us):
    """Set a csock socket's spin_us: before a call would sleep (blocking, or waiting for its
    timeout), poll the socket without sleeping for up to this many microseconds (GIL
    released, but for the first 10 µs of a receive in a process with one Python thread: see
    io_call). 0 turns it off. Non-blocking sockets never spin.

    Where the kernel allows it, SO_BUSY_POLL is set to the same value, so that the sleep which
    follows a spin, and poll(2), busy-poll the device queue first (NICs with NAPI busy
    polling; raising it needs CAP_NET_ADMIN, and loopback has no queue to poll). Returns
    whether SO_BUSY_POLL took."""
    global _spin_users
    cdef long value = us
    cdef int busy
    if value < 0 or value > MAX_SPIN_US:
        raise ValueError(f"spin_us must be between 0 and {MAX_SPIN_US}, got {value}")
    old = getattr(sock, "_csock_spin_ns", 0) or 0
    sock._csock_spin_ns = value * 1000            # AttributeError on a socket without the slot
    if old == 0 and value != 0:
        _spin_users += 1
    elif old != 0 and value == 0:
        _spin_users -= 1
    busy = <int>value
    fd = sock.fileno()
    return fd >= 0 and setsockopt(fd, SOL_SOCKET, SO_BUSY_POLL, &busy, sizeof(busy)) == 0


def register_socket_class(cls):
    """Called once by csock.socket: its instances carry spin_us in a _csock_spin_ns slot."""
    global _spin_class, _spin_offset
    _spin_offset = slot_offset(cls, "_csock_spin_ns")
    _spin_class = <PyTypeObject *>cls
    _registered.append(cls)                       # the pointer stays valid


cdef list _registered = []


def get_spin(sock):
    """A csock socket's spin_us (0: off)."""
    return (getattr(sock, "_csock_spin_ns", 0) or 0) // 1000


cdef int io_begin(object sock, IoWait *w) except -1:
    """Fill w with sock's fd and timeout; the deadline starts at the first wait."""
    cdef csock_socket_fields *f
    w.deadline_ns = 0
    w.calls = 0
    w.sock = NULL
    w.spin_ns = 0
    cdef PyObject *spin
    if _spin_users and _spin_class != NULL and PyObject_TypeCheck(sock, _spin_class):
        spin = slot_value(sock, _spin_offset)
        if spin != NULL:
            w.spin_ns = <int64_t><object>spin
    if _layout_ok and PyObject_TypeCheck(sock, _socket_type):
        w.sock = <void *>sock
        f = CSOCK_SOCKET_FIELDS(sock)
        w.fd = f.sock_fd
        w.timeout_ns = f.sock_timeout if f.sock_timeout >= 0 else -1   # blocking is -1 s (in ns)
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
