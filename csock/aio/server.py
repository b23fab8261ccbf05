"""Framed connections and servers on an asyncio loop: open_framed_connection and
start_framed_server."""

from __future__ import annotations

import asyncio
import errno
import logging
from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from types import TracebackType
from typing import TYPE_CHECKING, Any

from .. import _fastio
from .._base import socket as _csocket
from .._stdlib import socket as _std
from . import framed as _framed
from ._readiness import on_loop_thread
from .framed import DEFAULT_WRITE_LIMIT, FramedStream, check_limits

if TYPE_CHECKING:
    from typing_extensions import Self

__all__ = ["open_framed_connection", "start_framed_server", "FramedServer"]

logger = logging.getLogger("csock.aio")

Handler = Callable[[FramedStream], Awaitable[Any]]

_ACCEPT_RESOURCE_ERRORS = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)


async def open_framed_connection(host: str | None, port: int | str, *, family: int = 0,
                                 local_addr: tuple[str, int] | None = None,
                                 max_size: int = 16 * 2**20,
                                 write_limit: int = DEFAULT_WRITE_LIMIT,
                                 engine: str | None = None) -> FramedStream:
    """Connect over TCP to (host, port) and return a ``csock.aio.FramedStream`` on it.

    Each address getaddrinfo(3) gives is tried in turn (a non-blocking csock socket,
    TCP_NODELAY, optional bind to local_addr, ``loop.sock_connect``); the first error is
    raised when none connects. ``engine`` is the stream's ("epoll", "uring" or "auto": see
    ``FramedStream``); it is checked before anything is connected.
    """
    loop = asyncio.get_running_loop()
    engine = _engine_name(engine)
    _check_port(port, "connect")
    infos = await loop.getaddrinfo(host, port, family=family, type=_std.SOCK_STREAM)
    if not infos:
        raise OSError(f"getaddrinfo({host!r}, {port!r}) returned nothing")
    errors: list[OSError] = []
    for fam, kind, proto, _, address in infos:
        sock = _csocket(fam, kind, proto)
        try:
            sock.setblocking(False)
            if local_addr is not None:
                sock.bind(local_addr)
            await loop.sock_connect(sock, address)
        except OSError as error:
            sock.close()
            errors.append(error)
            continue
        except BaseException:
            sock.close()
            raise
        return FramedStream(sock, max_size=max_size, write_limit=write_limit, engine=engine)
    try:
        raise errors[0]
    finally:
        errors = []


def _check_port(port: Any, call: str) -> None:
    """OverflowError for a port number out of range, as the stdlib's bind()/connect() raise
    (getaddrinfo(3) would take 70000 as 4464)."""
    if isinstance(port, int) and not 0 <= port <= 0xFFFF:
        raise OverflowError(f"{call}(): port must be 0-65535.")


def _engine_name(engine: str | None) -> str:
    """"uring" or "epoll" for engine (resolving "auto" once, for every stream it makes; None
    is csock.aio.framed.default_engine)."""
    if engine is None:
        engine = _framed.default_engine
    if engine == "epoll":
        return engine
    from ._uring_engine import resolve_engine

    return "uring" if resolve_engine(engine, asyncio._get_running_loop()) else "epoll"


class FramedServer:
    """Listening sockets whose connections each run ``handler(FramedStream)`` as a task.

    Accepting is driven by ``loop.add_reader`` on each listening socket: one wake-up
    accepts every connection already queued (up to backlog). An exception escaping a
    handler is logged on the "csock.aio" logger and closes that connection only; every
    connection is closed (its backlog written first) when its handler returns.

    ``close()`` stops accepting and closes the listening sockets; connections already
    accepted keep running: ``wait_closed()`` waits for their handlers to return. To end them
    too, call ``abort_clients()``, which cancels every running handler (their connections
    are then closed at once). ``async with server:`` closes and waits on exit.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, handler: Handler,
                 sockets: list[_std.socket],
                 backlog: int, max_size: int, write_limit: int,
                 engine: str | None = None) -> None:
        self._engine = _engine_name(engine)
        self._stream_class: type[FramedStream] = FramedStream
        if self._engine == "uring":
            from ._uring_framed import UringFramedStream

            self._stream_class = UringFramedStream
        # listener -> its multishot accept request (uring), or its fd and the LoopWatch that
        # holds it while the loop watches it (epoll)
        self._accepting: dict[_std.socket, Any] = {}
        self._driver: Any = None                          # uring: the loop's, while serving
        self._loop = loop
        self._handler = handler
        self._sockets = sockets
        self._backlog = backlog
        self._max_size = max_size
        self._write_limit = write_limit
        self._tasks: set[asyncio.Task[None]] = set()
        self._serving = False
        self._closed = False
        self._idle: asyncio.Future[None] | None = None
        self._serving_forever: asyncio.Future[None] | None = None

    @property
    def sockets(self) -> tuple[_std.socket, ...]:
        """The listening sockets (empty once closed)."""
        return tuple(self._sockets)

    @property
    def engine(self) -> str:
        """"uring" or "epoll": what accepts, and what every connection's stream runs on."""
        return self._engine

    @property
    def connections(self) -> int:
        """How many handlers are running."""
        return len(self._tasks)

    def get_loop(self) -> asyncio.AbstractEventLoop:
        """The loop the server runs on."""
        return self._loop

    def is_serving(self) -> bool:
        """True while the server accepts connections."""
        return self._serving

    async def start_serving(self) -> None:
        """Start accepting (start_framed_server has already done this)."""
        self._start_serving()

    def _start_serving(self) -> None:
        if self._serving or self._closed:
            return
        self._serving = True
        for sock in self._sockets:
            sock.listen(self._backlog)
            self._watch(sock)

    def _watch(self, listener: _std.socket) -> None:
        if self._engine == "uring":
            # One multishot accept per listener: each completion is a connection.
            from ._uring_engine import driver_for

            if self._driver is None:
                self._driver = driver_for(self._loop).acquire()
            driver = self._driver
            self._accepting[listener] = driver.start(
                driver.ring.accept(listener), partial(self._on_accepted, listener))
        else:
            # (held: a close() of the listener itself leaves close(2) to _unwatch, on the
            # loop's thread, after the loop stopped watching the number)
            watch = _fastio.LoopWatch(listener, partial(on_loop_thread, self._loop,
                                                        partial(self._unwatch, listener)))
            fd = listener.fileno()
            try:
                self._loop.add_reader(fd, self._accept, listener)
            except BaseException:
                watch.release()
                raise
            self._accepting[listener] = (fd, watch)

    def _unwatch(self, listener: _std.socket) -> None:
        accepting = self._accepting.pop(listener, None)
        if self._engine == "uring":
            from ._uring_engine import cancel_quietly

            cancel_quietly(accepting, self._driver)
        elif accepting is not None:
            fd, watch = accepting
            if not self._loop.is_closed():
                self._loop.remove_reader(fd)
            watch.release()

    def _on_accepted(self, listener: _std.socket, completion: Any) -> None:
        if not completion.more and self._accepting.get(listener) is completion.request:
            del self._accepting[listener]
        error = completion.error
        if error is None:
            self._serve(completion.value)
            return
        if error.errno == errno.ECANCELED or not self._serving:
            return
        if error.errno == errno.ECONNABORTED:
            pass
        elif error.errno in _ACCEPT_RESOURCE_ERRORS:
            logger.error("csock.aio server: accept failed on %r: %s; pausing for 1 s",
                         listener, error)
            if not completion.more:
                self._loop.call_later(1.0, self._resume_accepting, listener)
            return
        else:
            logger.error("csock.aio server: accept failed on %r: %s", listener, error)
        if not completion.more:
            self._resume_accepting(listener)

    def _serve(self, conn: _std.socket) -> None:
        if self._closed:
            # Accepted before close() but reaped after it (uring: a completion already in the
            # CQ): never served, closed at once, as the listener's queue is by its close.
            conn.close()
            return
        try:
            stream = self._stream_class(conn, max_size=self._max_size,
                                        write_limit=self._write_limit, engine=self._engine)
        except BaseException:
            conn.close()
            raise
        task = self._loop.create_task(self._run(stream))
        self._tasks.add(task)
        task.add_done_callback(partial(self._handler_done, stream))

    def _accept(self, listener: _std.socket) -> None:
        # (at least one: the kernel queues connections with listen(0) too)
        for _ in range(max(1, self._backlog)):
            try:
                conn, _address = listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except ConnectionAbortedError:
                continue
            except OSError as error:
                if listener.fileno() < 0:
                    # closed itself by another thread: the loop's turn to stop watching it
                    # (LoopWatch's hand-over) is queued; nothing to report
                    return
                if error.errno in _ACCEPT_RESOURCE_ERRORS:
                    # Out of descriptors or memory: stop accepting on this socket for a
                    # second rather than spinning on a readiness we cannot serve.
                    logger.error("csock.aio server: accept() failed on %r: %s; pausing for 1 s",
                                 listener, error)
                    self._unwatch(listener)
                    self._loop.call_later(1.0, self._resume_accepting, listener)
                    return
                logger.error("csock.aio server: accept() failed on %r", listener, exc_info=True)
                return
            self._serve(conn)

    def _resume_accepting(self, listener: _std.socket) -> None:
        if self._serving and listener in self._sockets and listener not in self._accepting \
                and listener.fileno() >= 0:
            self._watch(listener)

    async def _run(self, stream: FramedStream) -> None:
        try:
            await self._handler(stream)
        except Exception:
            logger.exception("csock.aio server: handler %r raised; "
                             "closing its connection (peer %s)",
                             self._handler, stream.get_extra_info("peername"))
        finally:
            stream.close()
        try:
            await stream.wait_closed()          # the backlog drains before the fd closes
        finally:
            stream.abort()

    def _handler_done(self, stream: FramedStream, task: asyncio.Task[None]) -> None:
        # A task cancelled before its first step never ran _run (nor its finally): nothing
        # else closes its stream. (One _run closed is left to finish writing its backlog.)
        if not stream.is_closing():
            stream.abort()
        self._tasks.discard(task)
        if not self._tasks:
            self._wake_idle()

    def _wake_idle(self) -> None:
        if self._idle is not None and not self._idle.done():
            self._idle.set_result(None)

    def close(self) -> None:
        """Stop accepting and close the listening sockets. Running handlers go on."""
        if self._closed:
            return
        self._closed = True
        self._serving = False
        for sock in self._sockets:
            self._unwatch(sock)
            sock.close()
        self._sockets = []
        if self._driver is not None:
            self._driver.release()
            self._driver = None
        self._wake_idle()
        if self._serving_forever is not None and not self._serving_forever.done():
            self._serving_forever.cancel()

    def abort_clients(self) -> None:
        """Cancel every running handler; their connections close at once."""
        for task in list(self._tasks):
            task.cancel()

    async def wait_closed(self) -> None:
        """Wait until the server is closed and every handler has returned."""
        while not self._closed or self._tasks:
            if self._idle is None or self._idle.done():
                self._idle = self._loop.create_future()
            await asyncio.shield(self._idle)

    async def serve_forever(self) -> None:
        """Accept until cancelled; then close the server and wait for its handlers."""
        if self._serving_forever is not None:
            raise RuntimeError("serve_forever() is already running")
        if self._closed:
            raise RuntimeError("the server is closed")
        self._start_serving()
        self._serving_forever = self._loop.create_future()
        try:
            await self._serving_forever
        except asyncio.CancelledError:
            try:
                self.close()
                await self.wait_closed()
            finally:
                raise
        finally:
            self._serving_forever = None

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        self.close()
        await self.wait_closed()

    def __repr__(self) -> str:
        return f"<csock.aio.FramedServer sockets={self.sockets!r} connections={len(self._tasks)}>"


async def start_framed_server(handler: Handler, host: str | Sequence[str] | None = None,
                              port: int | str = 0,
                              *, family: int = 0, reuse_port: bool = False,
                              reuse_address: bool = True,
                              backlog: int = 1024, sock: _std.socket | None = None,
                              max_size: int = 16 * 2**20,
                              write_limit: int = DEFAULT_WRITE_LIMIT,
                              engine: str | None = None) -> FramedServer:
    """Listen on (host, port) and run ``await handler(stream)`` for every connection, stream
    being a ``csock.aio.FramedStream`` (length-prefixed messages, as ``csock.FramedStream``).

    Like ``asyncio.start_server``: host None listens on every interface getaddrinfo(3)
    gives for AI_PASSIVE (IPv6 sockets are IPV6_V6ONLY), a sequence of hosts on each;
    ``sock`` serves an existing listening socket (TCP or AF_UNIX stream) instead.
    SO_REUSEADDR is set unless reuse_address=False; ``reuse_port=True`` sets SO_REUSEPORT so
    that several processes can serve the same port (the kernel spreads connections).

    ``engine="uring"`` accepts with one multishot io_uring accept per listening socket and
    runs every connection's FramedStream on the loop's io_uring Ring (see FramedStream);
    "auto" (the default: ``csock.aio.framed.default_engine``) does so where io_uring and the
    operations it needs are available, and uses the readiness path ("epoll") otherwise.
    "uring" raises OSError where it cannot.
    """
    loop = asyncio.get_running_loop()
    engine = _engine_name(engine)
    if not callable(handler):
        raise TypeError(f"handler must be a coroutine function, not {type(handler).__name__}")
    check_limits(max_size, write_limit)
    sockets: list[_std.socket] = []
    if sock is not None:
        if host is not None or port not in (0, None):
            raise ValueError("host/port and sock are mutually exclusive")
        if sock.type != _std.SOCK_STREAM:
            raise ValueError(f"a SOCK_STREAM socket is needed, not {sock!r}")
        sock.setblocking(False)
        sockets.append(sock)
    else:
        _check_port(port, "bind")
        hosts: list[str | None] = [host] if host is None or isinstance(host, str) else list(host)
        seen: set[tuple[int, Any]] = set()
        try:
            for h in hosts:
                infos = await loop.getaddrinfo(h, port, family=family, type=_std.SOCK_STREAM,
                                               flags=_std.AI_PASSIVE)
                for fam, kind, proto, _, address in infos:
                    if (fam, address) in seen:
                        continue
                    seen.add((fam, address))
                    listener: _std.socket = _csocket(fam, kind, proto)
                    sockets.append(listener)
                    if reuse_address:
                        listener.setsockopt(_std.SOL_SOCKET, _std.SO_REUSEADDR, 1)
                    if reuse_port:
                        listener.setsockopt(_std.SOL_SOCKET, _std.SO_REUSEPORT, 1)
                    if fam == _std.AF_INET6 and hasattr(_std, "IPPROTO_IPV6"):
                        listener.setsockopt(_std.IPPROTO_IPV6, _std.IPV6_V6ONLY, 1)
                    try:
                        listener.bind(address)
                    except OSError as error:
                        raise OSError(error.errno, f"error while attempting to bind on address "
                                      f"{address!r}: {error.strerror}") from None
                    listener.setblocking(False)
        except BaseException:
            for listener in sockets:
                listener.close()
            raise
        if not sockets:
            raise OSError(f"getaddrinfo({host!r}, {port!r}) returned nothing to listen on")
    server = FramedServer(loop, handler, sockets, backlog, max_size, write_limit, engine)
    server._start_serving()
    await asyncio.sleep(0)
    return server
