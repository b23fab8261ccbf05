"""csock.aio.FramedStream: length-prefixed messages over a stream socket, on an asyncio loop.

On the wire each message is a 4-byte big-endian unsigned length and then that many bytes,
exactly as ``csock.FramedStream`` (which does the work: this class wraps one around the
non-blocking socket and drives it with ``loop.add_reader``/``loop.add_writer``).
"""
from __future__ import annotations

import _socket
import asyncio
import errno
import os
from collections.abc import Callable, Iterable
from types import TracebackType
from typing import TYPE_CHECKING, Any

from .. import _fastio
from .._fastio import MessageView
from .._stdlib import socket as _std
from ._readiness import HoldsItsFd, polls_end_at_an_error, register_again

if TYPE_CHECKING:
    from typing_extensions import Buffer, Self

__all__ = ["FramedStream", "DEFAULT_WRITE_LIMIT"]

DEFAULT_WRITE_LIMIT = 64 * 1024


# The family as the C socket object keeps it: socket.family's enum conversion costs more
# than the rest of a server's per-connection set-up.
_raw_family = _socket.socket.family.__get__
_TCP_FAMILIES = (_std.AF_INET, _std.AF_INET6)
_uring_stream_class: Any = None       # UringFramedStream, once an engine asked for it
# The engine of FramedStreams, servers, connections and datagram endpoints made without one
# (engine=None): io_uring where this process can run it, the readiness path otherwise.
default_engine = "auto"


def _uring_class(engine: str) -> Any:
    """UringFramedStream if engine ("uring", "auto") resolves to io_uring (on the running
    loop, if there is one), else None."""
    global _uring_stream_class
    from ._uring_engine import resolve_engine

    if not resolve_engine(engine, asyncio._get_running_loop()):
        return None
    if _uring_stream_class is None:
        from ._uring_framed import UringFramedStream

        _uring_stream_class = UringFramedStream
    return _uring_stream_class


def check_limits(max_size: int, write_limit: int) -> None:
    """The TypeError or ValueError a FramedStream with these limits raises, before any socket
    exists (a server checks them before it listens)."""
    _fastio.check_max_size(max_size)
    if write_limit < 0:
        raise ValueError("write_limit must be >= 0")


def _closed_error() -> ConnectionAbortedError:
    return ConnectionAbortedError(errno.ECONNABORTED, "the FramedStream is closed")


def _names_of(sock: _std.socket) -> dict[str, Any]:
    """The socket's own and its peer's address now (those it has), as asyncio's transports
    keep them from the start: a handler logging its peer after a reset still can."""
    names = {}
    for name, call in (("sockname", sock.getsockname), ("peername", sock.getpeername)):
        try:
            names[name] = call()
        except OSError:
            pass
    return names


class FramedStream(HoldsItsFd):
    """Messages over a stream socket (TCP, AF_UNIX stream), with ``await``.

    Same wire format, errors and end-of-stream rules as the blocking ``csock.FramedStream``:
    ``recv()`` raises EOFError and ``recv_many()`` returns ``[]`` at end of stream between
    frames, end of stream inside a frame raises ``csock.IncompleteReadError``, a length
    above max_size raises ``csock.FrameTooLargeError``. Messages come back as read-only
    ``csock.MessageView`` objects that stay valid while held.

    Receiving: each call first takes what is already buffered; otherwise it waits for the
    socket to be readable, and the readiness callback itself reads (one recv(2) per
    wake-up) and hands the whole messages to the waiting call, so no recv(2) is spent on a
    socket that has not been reported readable and a stale readiness never wakes the
    coroutine. Cancelling ``recv`` loses nothing: a partial frame stays buffered and the
    next call completes it; messages (or an error) the callback received for a call that
    was cancelled before it resumed are what the next call returns (raises).

    Sending: ``send``/``send_many`` hand the frames to the kernel with as few sendmsg(2)
    calls as it allows. A call either accepts all its messages or (cancelled or failed before
    that) none of them. What the kernel did not take at once is written from a backlog as
    the socket becomes writable; the call returns once the backlog is at most
    ``write_limit`` bytes (64 KiB by default; 0 waits until the kernel has everything), so
    buffering is bounded. Cancelling a send after its frames were accepted does not unsend
    them.

    ``close()`` stops reading, lets the backlog drain, then closes the socket;
    ``wait_closed()`` waits for that. ``abort()`` drops the backlog and closes at once.

    The stream owns its socket's fd on the loop: it keeps the reader registered between
    calls that find nothing buffered (removing it at the first wake-up nobody waits for), so
    a busy connection costs no epoll_ctl(2) per message. One coroutine may wait in
    ``recv``/``recv_many`` at a time: a second one raises RuntimeError at once, as asyncio's
    ``StreamReader`` does (the waiting one is not disturbed). Any number may send: each
    call's frames go out whole, in the order the calls are accepted.

    ``engine`` chooses how the stream meets the kernel. "epoll" is the readiness path above.
    "uring" runs it on the loop's io_uring Ring (``csock.aio._uring_framed``): one multishot
    recv stays armed and receives every arrival without a system call, each call's frames go
    to one non-blocking send(2) and what the kernel would not take to an IORING_OP_SEND, and
    the ring sends and re-arms of every stream on the loop reach the kernel with one
    ``io_uring_enter`` per loop iteration. A send returns once its frames are accepted, so
    ``drain()`` is what waits for the kernel to have them all, on both engines. "auto" (the
    default, see ``csock.aio.framed.default_engine``) takes "uring" where io_uring and the
    operations it needs are available, and "epoll" otherwise (ENOSYS, EPERM from a seccomp
    filter or ``kernel.io_uring_disabled``, an older kernel, or no fd or memory left for the
    running loop's ring); "uring" raises OSError where it cannot run. The same wire format,
    errors, limits and cancellation rules hold on both.
    """

    #: "epoll" (readiness: add_reader/add_writer and csock's own system calls) or "uring"
    #: (the loop's io_uring Ring): what this stream runs on.
    engine = "epoll"

    def __new__(cls, sock: _std.socket, *, max_size: int = 16 * 2**20,
                write_limit: int = DEFAULT_WRITE_LIMIT,
                engine: str | None = None) -> FramedStream:
        if engine is None:
            engine = default_engine
        if engine != "epoll" and cls is FramedStream:
            cls = _uring_class(engine) or cls
        return object.__new__(cls)

    def __init__(self, sock: _std.socket, *, max_size: int = 16 * 2**20,
                 write_limit: int = DEFAULT_WRITE_LIMIT, engine: str | None = None) -> None:
        check_limits(max_size, write_limit)
        self._framed = _fastio.FramedStream(sock, max_size=max_size)
        sock.setblocking(False)
        if _raw_family(sock) in _TCP_FAMILIES:
            try:
                sock.setsockopt(_std.IPPROTO_TCP, _std.TCP_NODELAY, 1)
            except OSError:
                pass
        self._sock = sock
        self._fd = sock.fileno()
        self._names = _names_of(sock)
        self._write_limit = write_limit
        self._loop: asyncio.AbstractEventLoop | None = None
        self._read_waiter: asyncio.Future[list[MessageView]] | None = None
        self._read_want = 1
        self._pending: list[MessageView] = []           # received for a cancelled call
        self._pending_error: BaseException | None = None
        self._reader_on = False
        self._polls_end = False             # (polls_end_at_an_error, once the loop is known)
        self._write_waiters: list[tuple[asyncio.Future[None], int]] = []
        self._writer_on = False
        self._write_error: BaseException | None = None
        self._closing = False
        self._closed = False
        self._closed_waiter: asyncio.Future[None] | None = None

    # --- properties ------------------------------------------------------------------------

    @property
    def socket(self) -> _std.socket:
        """The underlying (non-blocking) socket."""
        return self._sock

    @property
    def max_size(self) -> int:
        """The largest message length accepted (FrameTooLargeError above it)."""
        return self._framed.max_size

    @property
    def pending_send(self) -> int:
        """Bytes accepted by send calls that the kernel has not taken yet."""
        return self._framed.pending_send

    @property
    def write_limit(self) -> int:
        """The backlog in bytes a send may leave behind when it returns."""
        return self._write_limit

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        """'socket', 'sockname' or 'peername', as asyncio transports answer them: the
        addresses as they were when the stream was made (after a reset or close too)."""
        if name == "socket":
            return self._sock
        return self._names.get(name, default)

    def is_closing(self) -> bool:
        """True once close() was called."""
        return self._closing

    def _get_loop(self) -> asyncio.AbstractEventLoop:
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
            self._polls_end = polls_end_at_an_error(loop)
        return loop

    def _closed_under_us(self) -> None:
        """The socket was closed (or detached) itself, not through the stream: stop watching
        its number, let close(2) go on, and fail the calls waiting with EBADF, as on the uring
        engine (later calls raise it too)."""
        if self._watch is None:
            return
        loop = self._loop
        if loop is not None and not loop.is_closed():
            if self._reader_on:
                loop.remove_reader(self._fd)
            if self._writer_on:
                loop.remove_writer(self._fd)
        self._reader_on = self._writer_on = False
        self._release_fd()
        if loop is not None and loop.is_closed():
            return                      # (no future of a closed loop can be resolved)
        error = OSError(errno.EBADF, os.strerror(errno.EBADF))
        waiter = self._read_waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(error)
        if self._write_error is None:
            self._fail_writes(error)

    def _renew_polls_after_an_error(self) -> None:
        # On uvloop, a POLLERR (a reset, say) ends this fd's registrations after this callback.
        register_again(self._get_loop(), self._fd,
                       self._on_readable if self._reader_on else None,
                       self._on_writable if self._writer_on else None)

    # --- receiving -------------------------------------------------------------------------

    def _on_readable(self) -> None:
        if self._polls_end and _fastio.error_pending(self._sock):
            self._renew_polls_after_an_error()
        waiter = self._read_waiter
        if waiter is None:
            # Nobody is in recv: stop watching until the next recv needs to wait.
            assert self._loop is not None
            self._loop.remove_reader(self._fd)
            self._reader_on = False
            self._release_fd_if_unwatched()
        elif not waiter.done():
            # Read here, in the readiness callback: a readiness reported after the data was
            # taken costs one recv(2) that would block, never a wake-up of the coroutine.
            # (The waiter stays set until its coroutine resumes, so that readiness reported
            # again before then does not unregister the reader.)
            try:
                messages = self._framed.recv_many(self._read_want)
            except BlockingIOError:
                return
            except Exception as error:
                waiter.set_exception(error)
                return
            waiter.set_result(messages)

    async def recv(self) -> MessageView:
        """The next message. EOFError at end of stream between frames, IncompleteReadError
        inside one; ConnectionResetError (etc.) as the socket reports it."""
        messages = await self.recv_many(1)
        if not messages:
            raise EOFError("end of stream")
        return messages[0]

    async def recv_many(self, max_messages: int = 1024) -> list[MessageView]:
        """Every whole message already received, up to max_messages; waits until there is at
        least one. ``[]`` at end of stream."""
        if max_messages < 1:
            raise ValueError("max_messages must be at least 1")
        if self._pending:
            messages = self._pending[:max_messages]
            del self._pending[:max_messages]
            return messages
        pending_error = self._pending_error
        if pending_error is not None:
            self._pending_error = None
            raise pending_error
        framed = self._framed
        if framed.buffered >= 4:
            try:
                return framed.recv_many(max_messages)
            except BlockingIOError:
                pass
        # No whole frame (nor a length to check) is buffered: only the kernel can have more,
        # so wait for readiness rather than spend a recv(2) that would block.
        if self._read_waiter is not None:
            raise RuntimeError("recv() called while another coroutine is already waiting in recv()")
        if self._closing:
            raise _closed_error()
        loop = self._get_loop()
        if not self._reader_on:
            self._hold_fd()
            loop.add_reader(self._fd, self._on_readable)
            self._reader_on = True
        waiter: asyncio.Future[list[MessageView]] = loop.create_future()
        self._read_waiter = waiter
        self._read_want = max_messages
        try:
            return await waiter
        except asyncio.CancelledError:
            # Cancelled after the callback had received for us: keep it for the next call.
            if waiter.done() and not waiter.cancelled():
                error = waiter.exception()
                if error is None:
                    self._pending = waiter.result() + self._pending
                elif not isinstance(error, ConnectionAbortedError):
                    self._pending_error = error
            raise
        finally:
            if self._read_waiter is waiter:
                self._read_waiter = None

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> MessageView:
        try:
            return await self.recv()
        except EOFError as error:
            if isinstance(error, _fastio.IncompleteReadError):
                raise
            raise StopAsyncIteration from None

    # --- sending ---------------------------------------------------------------------------

    def _on_writable(self) -> None:
        if self._polls_end and _fastio.error_pending(self._sock):
            self._renew_polls_after_an_error()
        framed = self._framed
        if framed.pending_send:
            try:
                framed.flush()
            except OSError as error:
                self._fail_writes(error)
                return
        pending = framed.pending_send
        self._release_writers(pending)
        if pending == 0 and not self._write_waiters:
            self._stop_writer()
            if self._closing:
                self._finish_close()

    def _release_writers(self, pending: int) -> None:
        """Resolve the send calls waiting for at most their threshold of bytes pending."""
        if self._write_waiters:
            keep = []
            for waiter, threshold in self._write_waiters:
                if pending <= threshold:
                    if not waiter.done():
                        waiter.set_result(None)
                else:
                    keep.append((waiter, threshold))
            self._write_waiters = keep

    def _start_writer(self) -> None:
        if not self._writer_on:
            self._hold_fd()
            self._get_loop().add_writer(self._fd, self._on_writable)
            self._writer_on = True

    def _stop_writer(self) -> None:
        if self._writer_on:
            assert self._loop is not None
            if not self._loop.is_closed():
                self._loop.remove_writer(self._fd)
            self._writer_on = False
            self._release_fd_if_unwatched()

    def _release_fd_if_unwatched(self) -> None:
        # Held only while the loop watches the number: between waits a detach() gives the
        # caller the socket's own number, as the stdlib's does.
        if not self._reader_on and not self._writer_on:
            self._release_fd()

    def _fail_writes(self, error: BaseException) -> None:
        self._write_error = error
        waiters, self._write_waiters = self._write_waiters, []
        for waiter, _ in waiters:
            if not waiter.done():
                waiter.set_exception(error)
        self._stop_writer()
        if self._closing:
            self._finish_close()

    async def _wait_writable(self, threshold: int) -> None:
        loop = self._get_loop()
        waiter: asyncio.Future[None] = loop.create_future()
        entry = (waiter, threshold)
        self._write_waiters.append(entry)
        self._start_writer()
        try:
            await waiter
        finally:
            try:
                self._write_waiters.remove(entry)
            except ValueError:
                pass

    def _check_writable(self) -> None:
        if self._write_error is not None:
            raise self._write_error
        if self._closing:
            raise _closed_error()

    async def _drain(self) -> None:
        framed = self._framed
        if framed.pending_send:
            self._start_writer()
            while framed.pending_send > self._write_limit:
                await self._wait_writable(self._write_limit)
                if self._write_error is not None:
                    raise self._write_error

    async def send(self, message: Buffer) -> None:
        """Send one message as one frame; returns once it is accepted and the backlog is at
        most write_limit bytes."""
        if self._write_error is not None or self._closing:
            self._check_writable()
        if not self._try_send(self._framed.send, message):
            await self._send_when_writable(self._framed.send, message)
        if self._framed.pending_send:
            await self._drain()

    async def send_many(self, messages: Iterable[Buffer]) -> None:
        """Send every message, in order, one frame each, with as few sendmsg(2) calls as the
        kernel allows; returns once all are accepted and the backlog is at most write_limit."""
        if self._write_error is not None or self._closing:
            self._check_writable()
        items = messages if isinstance(messages, (list, tuple)) else list(messages)
        if not self._try_send(self._framed.send_many, items):
            await self._send_when_writable(self._framed.send_many, items)
        if self._framed.pending_send:
            await self._drain()

    def _try_send(self, call: Callable[[Any], None], argument: Any) -> bool:
        """call(argument), one of the parser's sends; False if the socket was full (nothing
        taken). An error after part of the call went out is raised, and the rest the parser
        kept is still written when the socket is writable: a frame is never cut."""
        try:
            call(argument)
        except BlockingIOError:
            return False
        except OSError:
            if self._framed.pending_send:
                self._start_writer()
            raise
        return True

    async def _send_when_writable(self, call: Callable[[Any], None], argument: Any) -> None:
        while True:
            await self._wait_writable(0)
            self._check_writable()
            if self._try_send(call, argument):
                return

    async def drain(self) -> None:
        """Wait until the kernel has every byte sent so far (the backlog is empty)."""
        if self._write_error is not None:
            raise self._write_error
        while self._framed.pending_send:
            await self._wait_writable(0)
            if self._write_error is not None:
                raise self._write_error

    # --- lifetime --------------------------------------------------------------------------

    def close(self) -> None:
        """Stop reading, write what the backlog holds as the socket drains, then close the
        socket (at once when the backlog is empty). A coroutine waiting in recv raises
        ConnectionAbortedError. Idempotent."""
        if self._closing:
            return
        self._closing = True
        self._wake_reader_closed()
        if self._framed.pending_send and self._write_error is None and self._loop is not None \
                and not self._loop.is_closed():
            try:
                self._start_writer()    # _on_writable finishes the close once drained
            except OSError:             # (the socket itself is closed: nothing can drain)
                self._finish_close()
        else:
            self._finish_close()

    def abort(self) -> None:
        """Close at once, dropping any bytes not yet taken by the kernel."""
        self._closing = True
        self._wake_reader_closed()
        self._finish_close()

    def _wake_reader_closed(self) -> None:
        if self._reader_on:
            assert self._loop is not None
            if not self._loop.is_closed():
                self._loop.remove_reader(self._fd)
            self._reader_on = False
        waiter, self._read_waiter = self._read_waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(_closed_error())

    def _finish_close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._stop_writer()
        waiters, self._write_waiters = self._write_waiters, []
        for waiter, _ in waiters:
            if not waiter.done():
                waiter.set_exception(_closed_error())
        self._release_fd()              # (held, it would leave the close(2) to itself)
        self._sock.close()
        if self._closed_waiter is not None and not self._closed_waiter.done():
            self._closed_waiter.set_result(None)

    async def wait_closed(self) -> None:
        """Wait until close() (or abort()) has closed the socket."""
        if self._closed:
            return
        if self._closed_waiter is None:
            self._closed_waiter = self._get_loop().create_future()
        await asyncio.shield(self._closed_waiter)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        self.close()
        await self.wait_closed()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "closing" if self._closing else "open"
        return f"<csock.aio.FramedStream {state} fd={self._fd} pending_send={self.pending_send}>"
