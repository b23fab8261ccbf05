"""csock.socket: the stdlib socket class with csock's hot path underneath.

``csock.socket(...)`` returns the class for the socket's type (StreamSocket, DatagramSocket,
SeqPacketSocket, RawSocket); each subclasses ``csock.socket``, which subclasses the stdlib's
``socket.socket``, so everything the stdlib offers is still there.
"""
from __future__ import annotations

import _socket
import os
import socket as _std
import sys
from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:
    from typing_extensions import Self

    from .stream import StreamSocket

from . import _fastio

# type -> csock class, filled in by the type-specific modules (see register_kind).
_CLASS_FOR_KIND: dict[int, type] = {}
_TYPE_FLAGS = getattr(_std, "SOCK_NONBLOCK", 0) | getattr(_std, "SOCK_CLOEXEC", 0)


def register_kind(kind: int, cls: type) -> None:
    """Make ``csock.socket(type=kind)`` return an instance of cls."""
    _CLASS_FOR_KIND[kind] = cls


def _kind_of(type: int, fileno: Any) -> int:
    if type == -1 or type is None:
        if fileno is None:
            return _std.SOCK_STREAM
        try:
            return _fastio.fd_socket_type(fileno)
        except (OSError, TypeError, ValueError, OverflowError):
            return -1   # the stdlib's __init__ reports a bad fileno
    return int(type) & ~_TYPE_FLAGS


class socket(_std.socket):
    """A stdlib ``socket.socket`` whose send/recv run on csock's Cython hot path.

    ``send``, ``sendall``, ``recv`` and ``recv_into`` make the same system calls as the
    stdlib's (send(2)/recv(2), ``MSG_NOSIGNAL`` on every send so a closed peer raises
    BrokenPipeError instead of killing the process with SIGPIPE) with the same blocking,
    timeout and non-blocking rules, in fewer instructions.
    """

    __slots__ = ("_csock_state",)     # a _fastio.SocketState, made by the first csock call

    @property
    def spin_us(self) -> int:
        """Busy-wait budget in microseconds (0: off): before a blocking receive or a timed
        call would sleep, csock busy-polls for up to this long (a blocking receive is retried
        with MSG_DONTWAIT, GIL released; alone in its process, a thread keeps the GIL for the
        first 10 µs), then sleeps as usual. Timeouts stay exact; signal handlers (Ctrl-C) run
        at most spin_us late. Where the kernel allows it, ``SO_BUSY_POLL`` (socket option 46)
        is set to the same value, so the sleep that follows busy-polls the device queue first
        (NICs with NAPI busy polling; raising it needs CAP_NET_ADMIN)."""
        return int(_fastio.get_spin(self))

    @spin_us.setter
    def spin_us(self, us: int) -> None:
        _fastio.set_spin(self, us)

    def __new__(cls, family: int = -1, type: int = -1, proto: int = -1, fileno: Any = None) -> Self:
        specific = _CLASS_FOR_KIND.get(_kind_of(type, fileno))
        if specific is not None and issubclass(specific, cls):
            cls = specific
        return super().__new__(cls)

    send = _fastio.sock_send
    sendall = _fastio.sock_sendall
    recv = _fastio.sock_recv
    recv_into = _fastio.sock_recv_into

    def _real_close(self) -> None:
        # Never shutdown(2) (dup()s and forked children keep the connection); while csock calls
        # run on the fd in other threads, close(2) waits for the last of them (fd lifetime).
        _fastio.close_socket(self)

    def setsockopt(self, *args: Any) -> None:
        """setsockopt(level, option, value) or setsockopt(level, option, None, optlen), as the
        stdlib's. Setting SO_RCVTIMEO or SO_SNDTIMEO makes csock's blocking calls wait in the
        system call itself, so the kernel's timeout applies."""
        super().setsockopt(*args)
        if len(args) >= 2 and args[0] == _std.SOL_SOCKET and args[1] in _KERNEL_TIMEOUTS:
            _fastio.note_kernel_timeout(self)

    def accept(self) -> tuple[socket, Any]:
        """accept(2): a csock socket for the new connection and the peer's address."""
        fd, address = self._accept()  # type: ignore[attr-defined]
        conn = socket(self.family, self.type, self.proto, fileno=fd)
        # As the stdlib: the accepted socket is blocking unless a default timeout is set,
        # whatever the listening socket's mode.
        if _std.getdefaulttimeout() is None and self.gettimeout():
            conn.setblocking(True)
        return conn, address


_KERNEL_TIMEOUTS = (_std.SO_RCVTIMEO, _std.SO_SNDTIMEO)
_fastio.register_socket_class(socket)     # its state is read from its slot on every call


def adopt(std_sock: _std.socket) -> Any:
    """Move a stdlib socket's fd into a csock socket of the matching class (mode kept)."""
    timeout = std_sock.gettimeout()
    family, kind, proto = std_sock.family, std_sock.type, std_sock.proto
    sock = socket(family, kind, proto, std_sock.detach())
    sock.settimeout(timeout)
    return sock


def socketpair(family: int | None = None, type: int = _std.SOCK_STREAM, proto: int = 0) -> tuple[Any, Any]:
    """socketpair(2): two connected csock sockets (AF_UNIX by default), typed Any because the
    class depends on the type argument (StreamSocket for the default SOCK_STREAM)."""
    a, b = _std.socketpair(family, type, proto)
    return adopt(a), adopt(b)


def create_connection(
    address: tuple[str | None, int | str | bytes | None],
    timeout: float | None = _std._GLOBAL_DEFAULT_TIMEOUT,  # type: ignore[attr-defined]
    source_address: Any = None,
    *,
    all_errors: bool = False,
) -> StreamSocket:
    """Connect a TCP csock socket to (host, port): each address getaddrinfo(3) gives is tried
    in turn (socket, optional bind to source_address, connect with the timeout) until one
    connects. Raises the first error, or an ExceptionGroup of all with all_errors=True.

    Sockets are made through ``csock.socket`` as looked up at call time, so code that swaps
    the module's ``socket`` (as the stdlib's tests do) sees its replacement used."""
    package = sys.modules[__package__]
    host, port = address
    errors: list[OSError] = []
    for family, kind, proto, _, sockaddr in package.getaddrinfo(host, port, 0, _std.SOCK_STREAM):
        sock = None
        try:
            sock = package.socket(family, kind, proto)
            if timeout is not _std._GLOBAL_DEFAULT_TIMEOUT:  # type: ignore[attr-defined]
                sock.settimeout(timeout)
            if source_address:
                sock.bind(source_address)
            sock.connect(sockaddr)
            return cast("StreamSocket", sock)
        except OSError as error:
            errors.append(error)
            if sock is not None:
                sock.close()
    if not errors:
        raise OSError("getaddrinfo returns an empty list")
    try:
        if all_errors:
            raise ExceptionGroup("create_connection failed", errors)  # noqa: F821 (3.11+)
        raise errors[0]
    finally:
        errors = []         # no reference cycle through the traceback


def create_server(*args: Any, **kwargs: Any) -> StreamSocket:
    """The stdlib's create_server (same arguments), returning a csock socket."""
    return cast("StreamSocket", adopt(_std.create_server(*args, **kwargs)))


def fromfd(fd: Any, family: int, type: int, proto: int = 0) -> Any:
    """A csock socket on a duplicate of fd (dup(2)), as the stdlib's fromfd."""
    return socket(family, type, proto, os.dup(fd))
