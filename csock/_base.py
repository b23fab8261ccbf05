"""csock.socket: the stdlib socket class with csock's hot path underneath.

``csock.socket(...)`` returns the class for the socket's type (StreamSocket, DatagramSocket,
SeqPacketSocket, RawSocket); each subclasses ``csock.socket``, which subclasses the stdlib's
``socket.socket``, so everything the stdlib offers is still there.
"""
from __future__ import annotations

import errno
import io
import operator
import os
import stat
import sys
import types
from typing import TYPE_CHECKING, Any, Literal, cast, overload

from . import _fastio
from ._stdlib import socket as _std

if TYPE_CHECKING:
    from typing_extensions import Self

    from .datagram import DatagramSocket
    from .raw import RawSocket
    from .seqpacket import SeqPacketSocket
    from .stream import StreamSocket

# The socket kinds, for the overloads that tell a type checker which class a call returns.
_Stream = Literal[_std.SocketKind.SOCK_STREAM]
_Dgram = Literal[_std.SocketKind.SOCK_DGRAM]
_SeqPacket = Literal[_std.SocketKind.SOCK_SEQPACKET]
_Raw = Literal[_std.SocketKind.SOCK_RAW]

# type -> csock class, filled in by the type-specific modules (see register_kind).
_CLASS_FOR_KIND: dict[int, type] = {}
_TYPE_FLAGS = getattr(_std, "SOCK_NONBLOCK", 0) | getattr(_std, "SOCK_CLOEXEC", 0)


def register_kind(kind: int, cls: type) -> None:
    """Make ``csock.socket(type=kind)`` return an instance of cls."""
    _CLASS_FOR_KIND[kind] = cls


def _class_for(family: Any = -1, type: Any = -1, proto: Any = -1, fileno: Any = None,
               *_: Any, **__: Any) -> type:
    """The class csock.socket(...) returns for the stdlib constructor's arguments: the one
    registered for the socket's type, else csock.socket (its __init__ reports bad arguments)."""
    return _CLASS_FOR_KIND.get(_kind_of(type, fileno), socket)


def _kind_of(type: int, fileno: Any) -> int:
    if type == -1 or type is None:
        if fileno is None:
            return _std.SOCK_STREAM
        try:
            return _fastio.fd_socket_type(fileno)
        except (OSError, TypeError, ValueError, OverflowError):
            return -1   # the stdlib's __init__ reports a bad fileno
    try:
        return int(type) & ~_TYPE_FLAGS
    except (TypeError, ValueError, OverflowError):
        return -1       # and a bad type


class socket(_std.socket):
    """A stdlib ``socket.socket`` whose send/recv run on csock's Cython hot path.

    ``send``, ``sendall``, ``recv`` and ``recv_into`` make the same system calls as the
    stdlib's (send(2)/recv(2), ``MSG_NOSIGNAL`` on every send so a closed peer raises
    BrokenPipeError instead of killing the process with SIGPIPE) with the same blocking,
    timeout and non-blocking rules, in fewer instructions.
    """

    __slots__ = ("_csock_state",)     # a _fastio.SocketState, made by the first csock call
    _csock_state: _fastio.SocketState  # (unset until then: AttributeError)

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

    # For type checkers: the class csock.socket(...) returns follows its type argument. (mypy
    # applies these to a subclass too: one without its own __init__ is typed as the kind's
    # class; declaring ``def __new__(cls, *args: Any) -> Self`` in it types it as itself.)
    @overload
    def __new__(cls, family: int = -1, type: _Stream = ..., proto: int = -1,
                fileno: None = None) -> StreamSocket: ...
    @overload
    def __new__(cls, family: int, type: _Dgram, proto: int = -1,
                fileno: int | None = None) -> DatagramSocket: ...
    @overload
    def __new__(cls, family: int = -1, *, type: _Dgram, proto: int = -1,
                fileno: int | None = None) -> DatagramSocket: ...
    @overload
    def __new__(cls, family: int, type: _SeqPacket, proto: int = -1,
                fileno: int | None = None) -> SeqPacketSocket: ...
    @overload
    def __new__(cls, family: int = -1, *, type: _SeqPacket, proto: int = -1,
                fileno: int | None = None) -> SeqPacketSocket: ...
    @overload
    def __new__(cls, family: int, type: _Raw, proto: int = -1,
                fileno: int | None = None) -> RawSocket: ...
    @overload
    def __new__(cls, family: int = -1, type: int = -1, proto: int = -1,
                fileno: int | None = None) -> Self: ...

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        # Only csock.socket itself picks the class for the socket's type; a user's subclass
        # gets exactly its own class, whatever its __init__ takes (as the stdlib, whose
        # __new__ ignores the arguments).
        if cls is socket:
            cls = _class_for(*args, **kwargs)
        return super().__new__(cls)

    if not TYPE_CHECKING:       # (the __new__ overloads type the constructor, not this)
        def __init__(self, family=-1, type=-1, proto=-1, fileno=None):
            super().__init__(family, type, proto, fileno)
            # An fd adopted with UDP_GRO on (set by a stdlib socket or another process, or
            # copied by dup()): recv_batch must split what the kernel coalesces. (A kernel
            # send timeout it carries is found by the send that meets a full socket.)
            if fileno is not None and _gro_is_set(self):
                _fastio.enable_gro(self)

    send = _fastio.sock_send
    sendall = _fastio.sock_sendall
    recv = _fastio.sock_recv
    recv_into = _fastio.sock_recv_into

    def __getstate__(self) -> Any:
        # The stdlib's refusal, naming the class socket.socket() returns as the stdlib does
        # (csock's own are its kinds: StreamSocket, ...); a user's subclass by its own name.
        name = "socket" if type(self).__module__.startswith("csock.") else type(self).__name__
        raise TypeError(f"cannot pickle {name!r} object")

    def _real_close(self) -> None:
        # Never shutdown(2) (dup()s and forked children keep the connection); while csock calls
        # run on the fd in other threads, close(2) waits for the last of them (fd lifetime).
        _fastio.close_socket(self)

    def sendmsg(self, *args: Any, **kwargs: Any) -> int:
        """sendmsg(buffers[, ancdata[, flags[, address]]]): the stdlib's, with MSG_NOSIGNAL.

        One sendmsg(2) of the buffers in order, with the ancillary data (SCM_RIGHTS, ...), to
        address or the connected peer; returns the bytes sent. MSG_NOSIGNAL is added to
        flags: a closed peer raises BrokenPipeError and no SIGPIPE reaches the process.
        Arguments, timeouts and errors are the stdlib's.
        """
        # (kwargs: the stdlib's error for them)
        sent: int = _held(self, _CSocket.sendmsg, *_with_nosignal(args, 2, ((), 0)), **kwargs)
        return sent

    def sendto(self, *args: Any, **kwargs: Any) -> int:
        """sendto(data[, flags], address): the stdlib's, with MSG_NOSIGNAL.

        One sendto(2) of data to address; returns the bytes sent. MSG_NOSIGNAL is added to
        flags: a closed peer raises BrokenPipeError and no SIGPIPE reaches the process.
        Arguments, timeouts and errors are the stdlib's.
        """
        if len(args) == 2:
            args = (args[0], 0, args[1])        # (data, address): flags 0
        sent: int = _held(self, _CSocket.sendto, *_with_nosignal(args, 1, ()), **kwargs)
        return sent

    # The stdlib's C calls below run as csock's own do: counted in flight, so that a close()
    # or detach() from another thread leaves them the number (they never reach a file that
    # took it: bytes sent into, or read from, another connection, or another socket shut
    # down). Arguments, timeouts and errors are the stdlib's.

    def recvfrom(self, *args: Any, **kwargs: Any) -> Any:
        """recvfrom(bufsize[, flags]) -> (bytes, address): one recvfrom(2), as the stdlib's."""
        return _held(self, _CSocket.recvfrom, *args, **kwargs)

    def recvfrom_into(self, *args: Any, **kwargs: Any) -> Any:
        """recvfrom_into(buffer[, nbytes[, flags]]) -> (nbytes, address): one recvfrom(2) into
        buffer, as the stdlib's."""
        return _held(self, _CSocket.recvfrom_into, *args, **kwargs)

    def recvmsg(self, *args: Any, **kwargs: Any) -> Any:
        """recvmsg(bufsize[, ancbufsize[, flags]]) -> (data, ancdata, msg_flags, address): one
        recvmsg(2), as the stdlib's."""
        return _held(self, _CSocket.recvmsg, *args, **kwargs)

    def recvmsg_into(self, *args: Any, **kwargs: Any) -> Any:
        """recvmsg_into(buffers[, ancbufsize[, flags]]): one recvmsg(2) into buffers, as the
        stdlib's."""
        return _held(self, _CSocket.recvmsg_into, *args, **kwargs)

    def connect(self, *args: Any, **kwargs: Any) -> None:
        """connect(address): connect(2), waiting for it within the socket's timeout, as the
        stdlib's."""
        _held(self, _CSocket.connect, *args, **kwargs)

    def connect_ex(self, *args: Any, **kwargs: Any) -> int:
        """connect_ex(address) -> errno: connect() returning the error number, as the
        stdlib's."""
        result: int = _held(self, _CSocket.connect_ex, *args, **kwargs)
        return result

    def shutdown(self, *args: Any, **kwargs: Any) -> None:
        """shutdown(how): shutdown(2) of the connection for every holder of the open file (the
        FIN goes out with SHUT_WR), as the stdlib's."""
        _held(self, _CSocket.shutdown, *args, **kwargs)

    # The same for the calls that change, or read, the fd's own state: the stdlib's dup() and
    # set_inheritable() call fileno() and then use the number, and settimeout() releases the
    # GIL around its ioctl(FIONBIO); racing a close() they duplicated, made inheritable or
    # non-blocking the socket that took the number. (The stdlib class's methods, as taken at
    # import: once a program puts csock's class in socket.socket, those would be these.)

    def dup(self) -> Any:
        """dup() -> socket: a new socket object on a dup(2) of the fd (the same open file,
        non-inheritable), as the stdlib's."""
        return _held(self, _stdlib_socket_class.dup)

    def set_inheritable(self, inheritable: bool) -> None:
        """Set the fd's inheritable flag (FD_CLOEXEC cleared or set), as the stdlib's."""
        _held(self, _stdlib_socket_class.set_inheritable, inheritable)

    def get_inheritable(self) -> bool:
        """Get the fd's inheritable flag, as the stdlib's."""
        result: bool = _held(self, _stdlib_socket_class.get_inheritable)
        return result

    def settimeout(self, *args: Any, **kwargs: Any) -> None:
        """settimeout(value): the socket's timeout (None: blocking; 0: non-blocking; O_NONBLOCK
        on the open file unless blocking), as the stdlib's."""
        _held(self, _CSocket.settimeout, *args, **kwargs)

    def setblocking(self, *args: Any, **kwargs: Any) -> None:
        """setblocking(flag): settimeout(None) if flag is true, else settimeout(0.0)."""
        _held(self, _CSocket.setblocking, *args, **kwargs)

    def bind(self, *args: Any, **kwargs: Any) -> None:
        """bind(address): bind(2), as the stdlib's."""
        _held(self, _CSocket.bind, *args, **kwargs)

    def listen(self, *args: Any, **kwargs: Any) -> None:
        """listen([backlog]): listen(2), as the stdlib's."""
        _held(self, _CSocket.listen, *args, **kwargs)

    def getsockname(self) -> Any:
        """getsockname() -> address: the socket's own address, as the stdlib's."""
        return _held(self, _CSocket.getsockname)

    def getpeername(self) -> Any:
        """getpeername() -> address: the connected peer's address, as the stdlib's."""
        return _held(self, _CSocket.getpeername)

    def getsockopt(self, *args: Any, **kwargs: Any) -> Any:
        """getsockopt(level, option[, buflen]): getsockopt(2), as the stdlib's."""
        return _held(self, _CSocket.getsockopt, *args, **kwargs)

    def detach(self) -> int:
        """Put the socket in the closed state without closing its fd, and return the fd.

        Nothing goes on the wire: the connection stays open for whoever takes the fd. As
        ``close()``, it ends csock's use of the socket: calls running on it in other threads
        end with OSError(EBADF) or what they moved, and none ever touches the number returned.
        Only the fd is handed over: what csock kept for the socket in user space is dropped,
        as by ``close()`` (datagrams ``recv_batch`` took from the kernel and keeps for its next
        call, the rest of a split GRO message, say, and errors deferred to the next call);
        the fd's new owner receives from the kernel's queue on. Drain them with
        ``recv_batch`` first if they matter.

        Returns
        -------
        int
            The fd (-1 if the socket was already closed or detached). With calls in flight in
            other threads, a duplicate of it (the same open file, as inheritable): the old
            number stays theirs, closed by the last one out.
        """
        self._closed = True             # (as the stdlib's: makefile() objects see it closed)
        return int(_fastio.detach_socket(self))

    def _sendfile_use_sendfile(self, file: Any, offset: int = 0, count: int | None = None) -> int:
        # The stdlib's socket.sendfile() calls this first (and falls back to send() on
        # _GiveupOnSendfile). Its own loop keeps the fd number and calls os.sendfile outside
        # csock's in-flight count: after a close() from another thread it sent the rest of
        # the file to whatever socket took the number. This is that loop, each sendfile(2) a
        # csock call that looks the fd up afresh (EBADF once closed), with csock's timeouts.
        self._check_sendfile_params(file, offset, count)  # type: ignore[attr-defined]
        offset = operator.index(offset)     # (TypeError before any byte goes: 1.5 is no offset)
        fileno, size = _sendfile_source(file)
        if not size:
            return 0                                    # an empty file
        if self.gettimeout() == 0:
            raise ValueError("non-blocking sockets are not supported")
        if self.fileno() < 0:   # (the stdlib's selector.register(-1) says so, at this point)
            raise ValueError("Invalid file descriptor: -1")
        total = 0
        try:
            while True:
                # (at most 1 GiB a call, as the stdlib: bpo-38319; a count too, from 3.13 on)
                blocksize = min(size, 2 ** 30) if not count else \
                    min(count - total, 2 ** 30) if _SENDFILE_COUNT_CHUNKED else count - total
                if blocksize <= 0:
                    break
                sent = _sendfile_chunk(self, fileno, offset, blocksize, total)
                if sent == 0:
                    break                               # end of file
                offset += sent
                total += sent
            return total
        finally:
            if total > 0 and hasattr(file, "seek"):
                file.seek(offset)

    def setsockopt(self, *args: Any, **kwargs: Any) -> None:
        """setsockopt(level, option, value) or setsockopt(level, option, None, optlen), as the
        stdlib's. Setting SO_RCVTIMEO or SO_SNDTIMEO makes csock's blocking calls wait in the
        system call itself, so the kernel's timeout applies; setting UDP_GRO makes recv_batch
        split coalesced messages, as ``enable_gro()`` does."""
        _held(self, _CSocket.setsockopt, *args, **kwargs)      # (kwargs: the stdlib's error)
        if len(args) >= 2 and args[0] == _std.SOL_SOCKET and args[1] in _KERNEL_TIMEOUTS:
            _fastio.note_kernel_timeout(self)
        elif tuple(args[:2]) == _UDP_GRO:  # (the kernel says: the value may be any form)
            _fastio.enable_gro(self) if _gro_is_set(self) else _fastio.forget_gro(self)

    def accept(self) -> tuple[socket, Any]:
        """accept(2): a csock socket for the new connection and the peer's address."""
        fd, address = _held(self, _own_accept)
        conn = socket(self.family, self.type, self.proto, fileno=fd)
        # As the stdlib: the accepted socket is blocking unless a default timeout is set,
        # whatever the listening socket's mode.
        if _std.getdefaulttimeout() is None and self.gettimeout():
            conn.setblocking(True)
        return conn, address


def _with_nosignal(args: tuple[Any, ...], index: int,
                   defaults: tuple[Any, ...]) -> tuple[Any, ...]:
    """args with MSG_NOSIGNAL or'ed into the flags at args[index]; defaults are the values of
    the optional arguments up to there (args[index - len(defaults) + 1:index + 1]) where
    args stop short. Flags the stdlib would refuse, and too few arguments, are left as they
    are: the stdlib's own call then raises its own error."""
    required = index + 1 - len(defaults)
    if len(args) < required:
        return args
    args = args + defaults[len(args) - required:]
    try:
        flags = operator.index(args[index])
    except TypeError:
        return args
    if not _INT_MIN <= flags <= _INT_MAX:
        return args                             # (the stdlib's OverflowError)
    return args[:index] + (flags | _MSG_NOSIGNAL,) + args[index + 1:]


_MSG_NOSIGNAL = int(getattr(_std, "MSG_NOSIGNAL", 0))   # (an IntFlag would drop bit 31 of -1)
_INT_MIN, _INT_MAX = -(2 ** 31), 2 ** 31 - 1


def _sendfile_source(file: Any) -> tuple[int, int]:
    """The file's fd and size for sendfile(2); _GiveupOnSendfile (send() instead) if it has
    none, as the stdlib's."""
    giveup = _std._GiveupOnSendfile  # type: ignore[attr-defined]
    try:
        fileno = file.fileno()
    except (AttributeError, io.UnsupportedOperation) as error:
        raise giveup(error) from None
    try:
        return fileno, os.fstat(fileno).st_size
    except OSError as error:
        raise giveup(error) from None


def _sendfile_chunk(sock: socket, fileno: int, offset: int, count: int, total: int) -> int:
    """One sendfile(2) for socket.sendfile(). An error before any byte went (a file sendfile(2)
    cannot read: EINVAL, or EBADF for one opened write-only) gives up for send(), as the
    stdlib's; a timeout does not, nor the socket's closing meanwhile (send() would read the
    file, then fail the same)."""
    try:
        return int(_fastio.sock_sendfile_once(sock, fileno, offset, count))
    except (TimeoutError, BlockingIOError):
        raise
    except OSError as error:
        if total == 0 and not (error.errno == errno.EBADF and sock.fileno() < 0):
            raise _std._GiveupOnSendfile(error) from None  # type: ignore[attr-defined]
        raise


_held = _fastio.held_call


def _own_accept(sock: _std.socket) -> tuple[int, Any]:
    # (the socket's own _accept, as the stdlib's accept() calls it: a subclass may override it)
    return sock._accept()  # type: ignore[attr-defined,no-any-return]


# The C socket class the stdlib's socket.socket subclasses: its methods, taken at import,
# whatever a program later puts in the stdlib module (socket.socket = csock.socket).
_CSocket = _std._socket.socket  # type: ignore[attr-defined]

# SO_RCVTIMEO/SO_SNDTIMEO, and their _NEW forms (66, 67: 64-bit time on every platform)
_KERNEL_TIMEOUTS = (_std.SO_RCVTIMEO, _std.SO_SNDTIMEO, 66, 67)
_UDP_GRO = (getattr(_std, "SOL_UDP", 17), getattr(_std, "UDP_GRO", 104))
_INET = (_std.AF_INET, _std.AF_INET6)


def _gro_is_set(sock: _std.socket) -> bool:
    """Whether a UDP socket's fd has UDP_GRO on (False for any other socket, and where the
    kernel has no UDP_GRO)."""
    raw = _CSocket                      # (ints: no enum conversion)
    if raw.type.__get__(sock) != _std.SOCK_DGRAM or raw.family.__get__(sock) not in _INET:
        return False
    try:
        return bool(raw.getsockopt(sock, *_UDP_GRO))
    except OSError:
        return False


_fastio.register_socket_class(socket)     # its state is read from its slot on every call


class _StdlibSignature:
    """socket's ``__signature__``, for inspect (help(), IDEs, mock's autospec): the stdlib's
    ``(family=-1, type=-1, proto=-1, fileno=None)``, not the dispatching ``__new__``'s
    ``(*args, **kwargs)``. A subclass with a ``__new__`` or ``__init__`` of its own is
    inspected as usual. (inspect is imported only when asked.)"""

    def __get__(self, instance: Any, owner: type) -> Any:
        own = any(getattr(owner, name) is not getattr(socket, name)
                  for name in ("__new__", "__init__"))
        if instance is not None or own:
            raise AttributeError("__signature__")
        import inspect
        return inspect.signature(_stdlib_socket_class)


socket.__signature__ = _StdlibSignature()  # type: ignore[attr-defined]


# The stdlib's own functions, taken at import: a program that replaces the stdlib module's
# attributes with csock's (socket.socketpair = csock.socketpair) must not make csock call itself.
_stdlib_socketpair = _std.socketpair
_stdlib_create_server = _std.create_server
_stdlib_has_dualstack_ipv6 = _std.has_dualstack_ipv6
_stdlib_fallback_socketpair = getattr(_std, "_fallback_socketpair", None)  # (3.13; gh-122133)
_stdlib_getaddrinfo = _std.getaddrinfo
_stdlib_socket_class = _std.socket
# 3.13's socket.sendfile() sends a count in chunks of at most 1 GiB too (earlier ones hand the
# whole count to os.sendfile, which refuses one past ssize_t)
_SENDFILE_COUNT_CHUNKED = sys.version_info >= (3, 13)


def _in_use(name: str, own: Any, original: Any) -> Any:
    """The socket module's attribute `name` as looked up at call time, so that a test's
    replacement is used either way csock stands in for the stdlib: csock's (sys.modules["socket"]
    = csock, then mock.patch("socket.<name>")), or the stdlib module's once something other
    than csock's own (own) or the stdlib's (original) is there (csock patched into the stdlib's
    attributes, then the test replaces that); else own."""
    made = getattr(sys.modules[__package__], name)
    if made is not own:
        return made
    current = getattr(_std, name)
    return made if current is original or current is own else current


def _socket_class() -> Any:
    """The socket class csock's functions make sockets with (a test's replacement, if any)."""
    return _in_use("socket", socket, _stdlib_socket_class)


def _run_stdlib(function: Any, *args: Any, **kwargs: Any) -> Any:
    """Call the stdlib module's own function (its code, as this Python has it) with its global
    names the stdlib module's but for the socket class and has_dualstack_ipv6, which are the
    ones in use (_in_use): it makes csock sockets, or a test's replacement, as it would make
    the stdlib module's."""
    names = {**vars(_std), "socket": _socket_class(),
             "has_dualstack_ipv6": _in_use("has_dualstack_ipv6", has_dualstack_ipv6,
                                           _stdlib_has_dualstack_ipv6)}
    run = types.FunctionType(function.__code__, names, function.__name__,
                             function.__defaults__, function.__closure__)
    run.__kwdefaults__ = function.__kwdefaults__
    return run(*args, **kwargs)


@overload
def socketpair(family: int | None = None, type: _Stream = ...,
               proto: int = 0) -> tuple[StreamSocket, StreamSocket]: ...
@overload
def socketpair(family: int | None, type: _Dgram,
               proto: int = 0) -> tuple[DatagramSocket, DatagramSocket]: ...
@overload
def socketpair(family: int | None = None, *, type: _Dgram,
               proto: int = 0) -> tuple[DatagramSocket, DatagramSocket]: ...
@overload
def socketpair(family: int | None, type: _SeqPacket,
               proto: int = 0) -> tuple[SeqPacketSocket, SeqPacketSocket]: ...
@overload
def socketpair(family: int | None = None, *, type: _SeqPacket,
               proto: int = 0) -> tuple[SeqPacketSocket, SeqPacketSocket]: ...
@overload
def socketpair(family: int | None = None, type: int = _std.SOCK_STREAM,
               proto: int = 0) -> tuple[Any, Any]: ...


def socketpair(family: int | None = None, type: int = _std.SOCK_STREAM,
               proto: int = 0) -> tuple[Any, Any]:
    """socketpair(2): two connected csock sockets (AF_UNIX by default) of the class for the
    type argument (StreamSocket for the default SOCK_STREAM, DatagramSocket, SeqPacketSocket).

    Raises OSError as socketpair(2) does (EOPNOTSUPP for a family without pairs). The stdlib's
    own code, making the sockets through ``csock.socket`` as looked up at call time (a test's
    replacement is used).
    """
    return cast("tuple[Any, Any]", _run_stdlib(_stdlib_socketpair, family, type, proto))


def _connect_to_first(address: tuple[str | None, int | str | bytes | None], timeout: float | None,
                      source_address: Any, all_errors: bool) -> StreamSocket:
    """The stdlib's create_connection, with csock sockets: the last error, or all of them."""
    make_socket = _socket_class()
    host, port = address
    errors: list[OSError] = []
    resolve = _in_use("getaddrinfo", _stdlib_getaddrinfo, _stdlib_getaddrinfo)
    for family, kind, proto, _, sockaddr in resolve(host, port, 0, _std.SOCK_STREAM):
        sock = None
        try:
            sock = make_socket(family, kind, proto)
            if timeout is not _std._GLOBAL_DEFAULT_TIMEOUT:  # type: ignore[attr-defined]
                sock.settimeout(timeout)
            if source_address:
                sock.bind(source_address)
            sock.connect(sockaddr)
            errors.clear()          # no reference cycle through the tracebacks
            return cast("StreamSocket", sock)
        except OSError as error:
            if not all_errors:
                errors.clear()      # only the last error is raised
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
        errors.clear()


if sys.version_info >= (3, 11):
    def create_connection(
        address: tuple[str | None, int | str | bytes | None],
        timeout: float | None = _std._GLOBAL_DEFAULT_TIMEOUT,  # type: ignore[attr-defined]
        source_address: Any = None,
        *,
        all_errors: bool = False,
    ) -> StreamSocket:
        """Connect a TCP csock socket to (host, port): each address getaddrinfo(3) gives is
        tried in turn (socket, optional bind to source_address, connect with the timeout)
        until one connects. Raises the last error, or an ExceptionGroup of all with
        all_errors=True, as the stdlib's.

        Sockets are made through ``csock.socket`` as looked up at call time, so code that
        swaps the module's ``socket`` (as the stdlib's tests do) sees its replacement used."""
        return _connect_to_first(address, timeout, source_address, all_errors)
else:
    def create_connection(
        address: tuple[str | None, int | str | bytes | None],
        timeout: float | None = _std._GLOBAL_DEFAULT_TIMEOUT,  # type: ignore[attr-defined]
        source_address: Any = None,
    ) -> StreamSocket:
        """Connect a TCP csock socket to (host, port): each address getaddrinfo(3) gives is
        tried in turn until one connects; raises the last error, as 3.10's stdlib."""
        return _connect_to_first(address, timeout, source_address, False)


def create_server(*args: Any, **kwargs: Any) -> StreamSocket:
    """The stdlib's create_server (its own code: same arguments, options and errors), returning
    a listening csock socket. As create_connection, it makes the socket through
    ``csock.socket`` as looked up at call time (a test's replacement is used)."""
    return cast("StreamSocket", _run_stdlib(_stdlib_create_server, *args, **kwargs))


def has_dualstack_ipv6() -> bool:
    """The stdlib's has_dualstack_ipv6 (its own code), its probe socket made through
    ``csock.socket`` as looked up at call time (a test's replacement is used)."""
    return bool(_run_stdlib(_stdlib_has_dualstack_ipv6))


def _fallback_socketpair(*args: Any, **kwargs: Any) -> tuple[Any, Any]:
    """The stdlib's _fallback_socketpair (its own code: a pair over TCP on loopback, the peers
    checked; CPython's tests put it in place of socketpair), making csock sockets as
    socketpair does. csock has it where the stdlib module has it."""
    return cast("tuple[Any, Any]", _run_stdlib(_stdlib_fallback_socketpair, *args, **kwargs))


def fromfd(fd: Any, family: int, type: int, proto: int = 0) -> Any:
    """A csock socket on a duplicate of fd (dup(2)), as the stdlib's fromfd; OSError(ENOTSOCK)
    for a fd that is not a socket's, before the duplicate is made (the stdlib's leaks it)."""
    if not stat.S_ISSOCK(os.fstat(fd).st_mode):
        raise OSError(errno.ENOTSOCK, os.strerror(errno.ENOTSOCK))
    return socket(family, type, proto, os.dup(fd))


# --- multiprocessing: passing csock sockets to children ---------------------------------------
# multiprocessing.reduction registers its socket reducer for socket.socket by exact type, so
# ForkingPickler refuses csock's classes. csock registers its own for each class, rebuilding the
# same class in the child. Importing multiprocessing costs ~4 ms, a third of csock's own import:
# the reducers are registered when (if ever) multiprocessing.reduction is imported.
# Plain pickle still refuses sockets, as the stdlib's does.
_REDUCTION_MODULE = "multiprocessing.reduction"


def _reduce_for_child(sock: _std.socket) -> tuple[Any, tuple[Any, ...]]:
    """ForkingPickler's reducer: a duplicate of the fd (multiprocessing's DupFd), rebuilt in
    the child as the same class."""
    from multiprocessing.reduction import DupFd
    cls = type(sock)
    # (None: the stdlib's class, which pickle cannot name once socket.socket is csock's)
    return _rebuild_in_child, (DupFd(sock.fileno()), None if cls is _stdlib_socket_class else cls,
                               sock.family, sock.type, sock.proto)


def _rebuild_in_child(duplicate: Any, cls: type | None, family: int, kind: int,
                      proto: int) -> Any:
    return (cls or _stdlib_socket_class)(family, kind, proto, fileno=duplicate.detach())


def _register_reducers(reduction: Any) -> None:
    # (the stdlib's class too: reduction.py registered its reducer for socket.socket, which is
    # csock's own once the stdlib module is patched, and then nothing passed a stdlib socket)
    for cls in {_stdlib_socket_class, socket, *_CLASS_FOR_KIND.values()}:
        reduction.register(cls, _reduce_for_child)


class _ThenRegister:
    """The loader multiprocessing.reduction is found with, registering csock's reducers once
    the module has run (everything else is the wrapped loader's)."""

    def __init__(self, loader: Any) -> None:
        self._loader = loader

    def create_module(self, spec: Any) -> Any:
        return self._loader.create_module(spec)

    def exec_module(self, module: Any) -> None:
        self._loader.exec_module(module)
        _register_reducers(module)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._loader, name)


class _WatchForReduction:
    """A sys.meta_path entry that finds nothing itself: when multiprocessing.reduction is
    imported, it wraps the loader the other finders find (it stays in place, inert otherwise:
    removing it could make another thread's import skip a finder)."""

    @classmethod
    def find_spec(cls, fullname: str, path: Any = None, target: Any = None) -> Any:
        if fullname != _REDUCTION_MODULE:
            return None
        for finder in sys.meta_path:
            find = getattr(finder, "find_spec", None)
            if finder is cls or find is None:
                continue
            spec = find(fullname, path, target)
            if spec is not None:
                if hasattr(spec.loader, "exec_module"):
                    spec.loader = _ThenRegister(spec.loader)
                return spec
        return None


def register_with_multiprocessing() -> None:
    """Register csock's reducers with multiprocessing now if it is loaded, else when it is."""
    reduction = sys.modules.get(_REDUCTION_MODULE)
    if reduction is not None:
        _register_reducers(reduction)
    elif _WatchForReduction not in sys.meta_path:
        sys.meta_path.insert(0, _WatchForReduction)
