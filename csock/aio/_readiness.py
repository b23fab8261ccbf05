"""Readiness waits on a loop, and the datagram batch coroutines built on them.

Every wait is ``loop.add_reader``/``loop.add_writer`` on the socket's fd and a future that the
callback resolves; the registration is removed when the last coroutine waiting on that fd
resumes (or is cancelled). Several coroutines may wait on the same fd and direction at once:
one readiness callback wakes them all, and each retries its own system call.
"""
from __future__ import annotations

import _socket
import asyncio
import errno
import os
import weakref
from collections.abc import Callable, Iterable
from functools import partial
from typing import TYPE_CHECKING, Any, TypeVar

from .. import _fastio
from .._fastio import Datagram
from .._stdlib import socket as _std

if TYPE_CHECKING:
    from typing_extensions import Buffer

__all__ = ["recv_batch", "recv_batch_into", "send_batch", "wait_readable", "wait_writable"]

_T = TypeVar("_T")

_Key = tuple[asyncio.AbstractEventLoop, int, bool]      # (loop, fd, for_writing)
# key -> the coroutines waiting for that readiness; present iff registered. Weak: what keeps
# a registration is the coroutines waiting in it (and, through its callback, the loop), so
# that a wait left pending on a loop closed and dropped keeps no socket, fd or loop alive.
_waiting: weakref.WeakValueDictionary[_Key, _Registration] = weakref.WeakValueDictionary()


def polls_end_at_an_error(loop: asyncio.AbstractEventLoop) -> bool:
    """Whether loop's add_reader/add_writer registrations end at the first POLLERR on the fd:
    uvloop's do (libuv stops the uv_poll handle and uvloop runs its callbacks one last time),
    asyncio's selector loops report the error on every poll. A registration kept across waits
    must then be made again (csock._fastio.error_pending tells when), or it waits for ever."""
    return type(loop).__module__.partition(".")[0] == "uvloop"


def on_loop_thread(loop: asyncio.AbstractEventLoop | None, callback: Callable[[], None]) -> None:
    """callback() on loop's thread: at once when loop runs in this thread, or in none (or is
    closed, or None), else at its next iteration (call_soon_threadsafe). For a LoopWatch's
    on_close, which runs in whichever thread closed the socket: a loop's registrations may
    only be changed from the thread that runs it."""
    if (loop is not None and loop.is_running() and not loop.is_closed()
            and asyncio._get_running_loop() is not loop):
        try:
            loop.call_soon_threadsafe(callback)
            return
        except RuntimeError:                # closed meanwhile: nothing watches any more
            pass
    callback()


class HoldsItsFd:
    """For what keeps its socket's fd registered on a loop (a FramedStream, a datagram
    transport on epoll): ``_hold_fd()`` before the first registration takes a LoopWatch, so
    that a close() of the socket itself, from any thread, leaves close(2) to the loop's
    thread, where ``_closed_under_us()`` removes the registrations and then ``_release_fd()``.
    Without it the loop watched the bare number: its next registration on a reused number
    failed with ENOENT (asyncio) or aborted the process (uvloop), or took the newcomer's
    readiness."""

    _sock: _std.socket
    _loop: asyncio.AbstractEventLoop | None
    _watch: _fastio.LoopWatch | None = None

    def _hold_fd(self) -> None:
        """OSError EBADF if the socket is closed."""
        if self._watch is None:
            self._watch = _fastio.LoopWatch(self._sock, self._socket_closed)

    def _socket_closed(self) -> None:
        # (the LoopWatch's on_close: in the thread that closed the socket)
        on_loop_thread(self._loop, self._closed_under_us)

    def _closed_under_us(self) -> None:
        raise NotImplementedError

    def _release_fd(self) -> bool:
        """Let the close(2) a close() deferred go on; False if nothing was held."""
        watch, self._watch = self._watch, None
        if watch is None:
            return False
        watch.release()
        return True


def register_again(loop: asyncio.AbstractEventLoop, fd: int,
                   on_readable: Callable[[], None] | None,
                   on_writable: Callable[[], None] | None) -> None:
    """Make fd's registrations on loop again (those whose callback is given): after a POLLERR
    where polls end at it (polls_end_at_an_error), so that the error, or data queued before
    it, still wakes the calls waiting."""
    if on_readable is not None:
        loop.remove_reader(fd)
        loop.add_reader(fd, on_readable)
    if on_writable is not None:
        loop.remove_writer(fd)
        loop.add_writer(fd, on_writable)


def _wake(waiters: list[asyncio.Future[None]]) -> None:
    for future in waiters:
        if not future.done():
            future.set_result(None)


class _Registration(HoldsItsFd):
    """One readiness of one fd watched on one loop for the coroutines waiting for it, the fd
    held meanwhile: the socket closed under them, they raise OSError(EBADF) and the loop stops
    watching the number before another file can take it."""

    def __init__(self, key: _Key, sock: _std.socket) -> None:
        self.key = key
        self._loop, fd, write = key
        self._sock = sock
        self.waiters: list[asyncio.Future[None]] = []
        self._hold_fd()                         # (EBADF: closed)
        try:
            (self._loop.add_writer if write else self._loop.add_reader)(fd, _wake, self.waiters)
        except BaseException:
            self._release_fd()
            raise
        _waiting[key] = self

    def _closed_under_us(self) -> None:
        if _waiting.get(self.key) is self:
            self.end()
            if self._loop is None or self._loop.is_closed():
                return                  # (no future of a closed loop can be resolved)
            error = OSError(errno.EBADF, os.strerror(errno.EBADF))
            for future in self.waiters:
                if not future.done():
                    future.set_exception(error)

    def end(self) -> None:
        """The loop stops watching the fd, then lets it go."""
        del _waiting[self.key]
        loop, fd, write = self.key
        if not loop.is_closed():
            (loop.remove_writer if write else loop.remove_reader)(fd)
        self._release_fd()


async def _wait(loop: asyncio.AbstractEventLoop, sock: _std.socket, write: bool) -> None:
    key = (loop, sock.fileno(), write)
    future: asyncio.Future[None] = loop.create_future()
    registration = _waiting.get(key)
    if registration is None:
        registration = _Registration(key, sock)
    registration.waiters.append(future)
    try:
        await future
    finally:
        registration.waiters.remove(future)
        if not registration.waiters and _waiting.get(key) is registration:
            registration.end()


async def wait_readable(sock: _std.socket) -> None:
    """Wait until sock is readable (loop.add_reader; removed again before returning)."""
    await _wait(asyncio.get_running_loop(), sock, False)


async def wait_writable(sock: _std.socket) -> None:
    """Wait until sock is writable (loop.add_writer; removed again before returning)."""
    await _wait(asyncio.get_running_loop(), sock, True)


def _check_nonblocking(sock: _std.socket) -> None:
    # (the C class, as csock's calls check it: socket.socket may be csock's, patched in)
    if not isinstance(sock, _socket.socket):
        raise TypeError(f"expected a socket object, not {type(sock).__name__}")
    if sock.gettimeout() != 0:
        raise ValueError("csock.aio needs a non-blocking socket (call sock.setblocking(False))")


async def _when_readable(sock: _std.socket, receive: Callable[[], _T]) -> _T:
    """receive() now, and again each time the loop says sock is readable, until it stops
    raising BlockingIOError. Cancelled while waiting: the reader is removed and whatever is
    queued stays in the kernel."""
    _check_nonblocking(sock)
    try:
        return receive()
    except BlockingIOError:
        pass
    loop = asyncio.get_running_loop()
    while True:
        await _wait(loop, sock, False)
        try:
            return receive()
        except BlockingIOError:
            pass


async def recv_batch(sock: _std.socket,
                     max_messages: int = 64, bufsize: int = 65535) -> list[Datagram]:
    """Every datagram (or SEQPACKET record) already queued on sock, up to max_messages, as
    ``csock.Datagram`` objects: one recvmmsg(2) per wake-up, never one callback per datagram.

    Tries the call first; if nothing is queued (BlockingIOError) it waits for readability
    with ``loop.add_reader`` and tries again. Cancelling it while it waits loses nothing:
    the reader is removed and the datagrams stay queued in the kernel. On a SEQPACKET socket
    ``[]`` means end of stream and a zero-length record is an empty Datagram, as with the
    blocking call (bufsize=0 is a ValueError there). sock must be non-blocking.
    """
    return await _when_readable(sock, partial(_fastio.recv_batch, sock, max_messages, bufsize))


async def recv_batch_into(sock: _std.socket, buffer: Buffer,
                          bufsize: int, max_messages: int = 1024) -> list[int]:
    """recv_batch into the caller's buffer, as the blocking ``recv_batch_into``: datagram i at
    ``buffer[i * bufsize:]``, their lengths returned (above bufsize: cut), no object per
    datagram. Waits, and is cancelled, as recv_batch. sock must be non-blocking; the buffer
    must not be touched until the call returns."""
    return await _when_readable(sock,
                                partial(_fastio.recv_batch_into, sock,
                                        buffer, bufsize, max_messages))


async def send_batch(sock: _std.socket, messages: Iterable[Buffer | tuple[Buffer, Any]],
                     address: Any = None) -> int:
    """Send every message as one datagram each (sendmmsg(2), up to 1024 per call) and return
    how many were sent, which is all of them: when the kernel takes only part of a batch the
    rest is sent once ``loop.add_writer`` says the socket is writable again.

    Items are bytes-like (sent to address, or to the connected peer) or ``(data, address)``
    pairs, all checked before anything is sent. An error raises; datagrams sent before it
    stay sent (the blocking call's rule). Cancelled while waiting: the datagrams before the
    wait went out, the rest did not. sock must be non-blocking.
    """
    _check_nonblocking(sock)
    items = messages if isinstance(messages, list) else list(messages)
    total = len(items)
    sent = 0
    loop: asyncio.AbstractEventLoop | None = None
    while sent < total:
        try:
            sent += _fastio.send_batch(sock, items if sent == 0 else items[sent:], address)
            continue
        except BlockingIOError:
            pass
        if loop is None:
            loop = asyncio.get_running_loop()
        await _wait(loop, sock, True)
    return sent
