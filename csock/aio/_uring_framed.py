"""csock.aio.FramedStream on the io_uring engine (``FramedStream(sock, engine="uring")``).

Receiving: one multishot recv per stream, armed at the first ``recv`` and kept armed: the
kernel receives every arrival into the loop Ring's provided buffers without a system call per
receive, and the reap copies each completion's bytes into the stream's frame parser
(``Ring.recv(sock, framed=...)``: into its arena, the ring's buffer given back at once,
no view made); the completion brings the messages now whole, for ``recv``. Above
``READ_HIGH_WATER`` bytes queued and not taken, the receive is cancelled (the kernel then
keeps the rest, and TCP pushes back on the peer) and is armed again once ``recv`` has taken
them.

Sending: each call's frames are packed into one buffer (``pack_frames``) and offered to the
kernel with one non-blocking send(2); a call whose first message is ``SEND_IN_PLACE`` bytes or
more is offered with sendmsg(2) over the messages' own buffers instead, and only what the
kernel does not take is copied. What it does not take goes out with one
``IORING_OP_SEND`` (MSG_WAITALL: the kernel finishes it when there is room, with no
readiness callback); the ring sends of one loop iteration, of every stream, reach the kernel
with one ``io_uring_enter``. One ring send is in flight per stream, since io_uring does not
order requests on a socket among themselves: what later calls accept meanwhile is joined and
sent when it completes.
"""
from __future__ import annotations

import asyncio
import errno
import os
from typing import TYPE_CHECKING, Any

from .._fastio import FrameTooLargeError, MessageView, pack_frames
from ._uring_engine import UringDriver, cancel_quietly, driver_for
from .framed import DEFAULT_WRITE_LIMIT, FramedStream, _closed_error

if TYPE_CHECKING:
    from collections.abc import Coroutine, Iterable

    from typing_extensions import Buffer

    from .._uring import Completion, Request

__all__ = ["UringFramedStream"]

# Bytes received since recv last took everything, above which receiving pauses until it has.
READ_HIGH_WATER = 4 * 2**20
# What each queued message costs besides its bytes (its MessageView, list slot and allocator
# overhead), counted against READ_HIGH_WATER: a peer sending empty frames to a slow reader
# queued a million views (60 MiB) before 4 MiB of wire bytes paused the receive.
MESSAGE_COST = 64
# A call whose first message is at least this large is sent from the messages' own buffers:
# packing them first copied every byte once more (a fifth of a 1 MiB echo's server CPU).
# Smaller ones are packed: the size test and the sendmsg cost a ping-pong more than the copy.
SEND_IN_PLACE = 64 * 1024
# More messages than this in one call are packed (sendmsg's iovecs are for a few large ones).
SEND_IN_PLACE_MESSAGES = 64


class UringFramedStream(FramedStream):
    """A FramedStream whose receives and sends go through the loop's io_uring Ring."""

    engine = "uring"

    def __init__(self, sock: Any, *, max_size: int = 16 * 2**20,
                 write_limit: int = DEFAULT_WRITE_LIMIT, engine: str | None = "uring") -> None:
        super().__init__(sock, max_size=max_size, write_limit=write_limit)
        self._driver: UringDriver | None = None
        self._recv_request: Request | None = None
        self._inbox: list[MessageView] = []
        self._inbox_bytes = 0
        self._eof = False                             # no more receives: end of stream or error
        self._parser_ended = False                    # feed_eof ran (IncompleteReadError: once)
        self._paused = False                          # READ_HIGH_WATER reached: not receiving
        self._send_request: Request | None = None
        self._sending: memoryview | None = None      # the buffer the send in flight sends
        self._queued: list[bytes] = []                # accepted while a send was in flight
        self._pending_bytes = 0
        if asyncio._get_running_loop() is not None:
            self._get_driver()      # the loop's ring, made as the engine was chosen (__new__)

    def _get_driver(self) -> UringDriver:
        driver = self._driver
        if driver is None:
            driver = self._driver = driver_for(self._get_loop()).acquire()
        return driver

    @property
    def pending_send(self) -> int:
        """Bytes accepted by send calls whose send the kernel has not completed yet."""
        return self._pending_bytes

    # --- receiving -------------------------------------------------------------------------

    def _arm_receive(self) -> None:
        # One receive at a time: a second multishot recv on the socket could take bytes out
        # of order, so a cancelled one is re-armed only after its last completion.
        if (self._recv_request is None and not self._paused and not self._eof
                and not self._closing):
            driver = self._get_driver()
            self._recv_request = driver.start(driver.ring.recv(self._sock, framed=self._framed),
                                              self._on_received)

    def _on_received(self, completion: Completion) -> None:
        # The ring fed the bytes to the parser during the reap (recv(framed=...)): the value
        # is the messages now whole, b"" at end of stream.
        if not completion.more and completion.request is self._recv_request:
            self._recv_request = None
        messages = completion.value
        if messages is None:
            error = completion.error
            if isinstance(error, OSError):
                self._on_receive_error(error)
            elif error is not None:
                self._fail_reads(error)              # FrameTooLargeError from the parser
            return
        if not isinstance(messages, list):
            self._eof = True
            self._parser_ended = True
            try:
                self._framed.feed_eof()              # IncompleteReadError inside a frame
            except Exception as failure:
                self._fail_reads(failure)
            else:
                self._wake_reader()
            return
        if messages:
            waiter = self._read_waiter
            if (waiter is not None and not self._inbox and not waiter.done()
                    and len(messages) <= self._read_want):
                # Straight to the coroutine waiting in recv_many, which takes everything (as
                # the epoll engine's readiness callback does): nothing stays queued.
                waiter.set_result(messages)
                self._inbox_bytes = 0
                if self._framed.buffered >= 4:
                    self._check_next_length()
                return
            self._inbox += messages
        if self._framed.buffered >= 4:
            # (also when no message is whole yet: a length above max_size followed by the
            # end of stream is FrameTooLargeError, as on epoll, not IncompleteReadError)
            self._check_next_length()
        self._inbox_bytes += completion.result + MESSAGE_COST * len(messages)
        if not self._inbox:
            # Only part of a frame so far: nothing for recv to take, so no wake-up (one per
            # ring buffer made bulk transfers crawl), and no pause (recv could never end it).
            # The receive's last completion (the Ring does not arm it again on a socket
            # being closed): arm it here, or raise that EBADF in the recv waiting.
            if self._recv_request is None and self._read_waiter is not None:
                self._rearm_receive()
            return
        if self._inbox_bytes > READ_HIGH_WATER and not self._paused:
            self._paused = True
            cancel_quietly(self._recv_request, self._driver)
        self._wake_reader()

    def _check_next_length(self) -> None:
        # A length is buffered, maybe above max_size, which feed reports at its next call:
        # make that call now, not at the next arrival (there may be none).
        try:
            self._framed.feed(b"")
        except Exception as failure:
            self._fail_reads(failure)

    def _on_receive_error(self, error: OSError) -> None:
        if self._closing:
            return
        if error.errno == errno.ECANCELED:
            self._rearm_receive()                    # paused, and resumed since: go on
            return
        if error.errno == errno.ENOBUFS:
            # Every ring buffer was held: the bytes wait in the socket; try again next
            # iteration, when the views being dispatched are released.
            self._get_loop().call_soon(self._rearm_receive)
            return
        self._fail_reads(error)

    def _rearm_receive(self) -> None:
        """Arm the receive again from a completion: if the socket was closed under the stream
        (its close() is what cancelled the receive), the recv waiting raises that EBADF."""
        try:
            self._arm_receive()
        except OSError as error:
            self._fail_reads(error)

    def _fail_reads(self, error: BaseException) -> None:
        # A FrameTooLargeError stays in the parser (read_error): every later recv raises it,
        # whatever came after (the end of stream inside that frame, say).
        if not isinstance(error, FrameTooLargeError) and self._pending_error is None \
                and self._framed.read_error is None:
            self._pending_error = error
        if self._recv_request is not None:
            cancel_quietly(self._recv_request, self._driver)
        self._eof = True
        self._wake_reader()

    def _wake_reader(self) -> None:
        waiter = self._read_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result([])                    # recv_many looks at the inbox itself

    async def recv_many(self, max_messages: int = 1024) -> list[MessageView]:
        """Every whole message already received, up to max_messages; waits until there is at
        least one. ``[]`` at end of stream."""
        if max_messages < 1:
            raise ValueError("max_messages must be at least 1")
        while True:
            inbox = self._inbox
            if inbox:
                if len(inbox) > max_messages:
                    messages = inbox[:max_messages]
                    del inbox[:max_messages]
                    return messages
                self._inbox = []
                self._inbox_bytes = 0
                if self._paused:
                    self._paused = False
                    self._arm_receive()              # (or at the cancelled one's end)
                return inbox
            error = self._pending_error
            if error is not None:
                self._pending_error = None
                raise error
            if self._framed.read_error is not None:
                raise self._framed.read_error
            if self._closing:
                raise _closed_error()               # (closed after the end of stream too)
            if self._eof:
                if self._sock.fileno() < 0:         # closed under the stream: not an EOF
                    raise OSError(errno.EBADF, os.strerror(errno.EBADF))
                if not self._parser_ended:
                    # reading ended in an error (a reset): after it, a frame cut short is
                    # IncompleteReadError, as on epoll and the blocking stream, not a clean end
                    self._parser_ended = True
                    self._framed.feed_eof()
                return []
            if self._read_waiter is not None:
                raise RuntimeError(
                    "recv() called while another coroutine is already waiting in recv()")
            if self._recv_request is None:
                self._arm_receive()
            loop = self._loop
            if loop is None:
                loop = self._get_loop()
            waiter: asyncio.Future[list[MessageView]] = loop.create_future()
            self._read_waiter = waiter
            self._read_want = max_messages
            try:
                handed = await waiter                # messages, or [] when the inbox has news
            except asyncio.CancelledError:
                # Cancelled after messages were handed over: keep them for the next call. (A
                # waiter failed meanwhile, by close() say, keeps its error: the cancel wins.)
                if waiter.done() and not waiter.cancelled() and waiter.exception() is None \
                        and waiter.result():
                    self._inbox[:0] = waiter.result()
                raise
            finally:
                if self._read_waiter is waiter:
                    self._read_waiter = None
            if handed:
                return handed

    # --- sending ---------------------------------------------------------------------------

    def _start_send(self, data: memoryview) -> None:
        driver = self._get_driver()
        self._sending = data
        self._send_request = driver.start(driver.ring.send(self._sock, data), self._on_sent)

    def _on_sent(self, completion: Completion) -> None:
        self._send_request = None
        sending, self._sending = self._sending, None
        if self._closed:
            return                                   # abort(): cancelled, maybe part sent
        if completion.error is not None:
            self._queued.clear()
            self._pending_bytes = 0
            self._fail_writes(completion.error)
            return
        assert sending is not None
        sent = completion.value
        self._pending_bytes -= sent
        if sent < len(sending):
            self._start_send(sending[sent:])         # (a signal cut it short)
        elif self._queued:
            queued, self._queued = self._queued, []
            self._start_send(memoryview(queued[0] if len(queued) == 1 else b"".join(queued)))
        self._wake_writers()

    def _wake_writers(self) -> None:
        pending = self._pending_bytes
        self._release_writers(pending)
        if pending == 0 and self._closing:
            self._finish_close()

    def _start_writer(self) -> None:
        pass                                         # completions, not readiness, drive sends

    def _stop_writer(self) -> None:
        pass

    async def _drain_to(self, limit: int) -> None:
        while self._pending_bytes > limit:
            await self._wait_writable(limit)
            if self._write_error is not None:
                raise self._write_error

    async def send(self, message: Buffer) -> None:
        """Send one message as one frame; returns once it is accepted and the frames not yet
        sent are at most write_limit bytes."""
        # (Not through send_many: a coroutine more per message is measurable in ping-pong.)
        if self._write_error is not None or self._closing:
            self._check_writable()
        if self._send_request is None and _large(message):
            waiting = self._send_in_place((message,))
        else:
            waiting = self._offer(pack_frames((message,)))
        if waiting is not None:
            await waiting

    async def send_many(self, messages: Iterable[Buffer]) -> None:
        """Send every message, in order, one frame each (one IORING_OP_SEND for the call, or
        joined with other calls' frames while a send is in flight); returns once all are
        accepted and the frames not yet sent are at most write_limit bytes."""
        if self._write_error is not None or self._closing:
            self._check_writable()
        items = messages if isinstance(messages, (list, tuple)) else list(messages)
        # (Bad items raise before anything is sent, on either path.)
        if (self._send_request is None and 0 < len(items) <= SEND_IN_PLACE_MESSAGES
                and _large(items[0])):
            waiting = self._send_in_place(items)
        else:
            waiting = self._offer(pack_frames(items))
        if waiting is not None:
            await waiting

    def _offer(self, packed: bytes) -> Coroutine[Any, Any, None] | None:
        """Accept packed now, unless above the limit; what the call must await, if anything."""
        if self._pending_bytes > self._write_limit:
            return self._accept_when_below_the_limit(packed)
        if not packed:
            return None
        if self._send_request is None:
            # Nothing in flight: one non-blocking send(2) now. Deferring every send to the
            # iteration's submit cost a loop iteration per round trip (request/response at
            # half uvloop's rate); the ring sends only what the kernel would not take.
            try:
                sent = self._sock.send(packed)
            except (BlockingIOError, InterruptedError):
                sent = 0
            if sent == len(packed):
                return None
            self._pending_bytes += len(packed) - sent
            self._start_send(memoryview(packed)[sent:])
        else:
            self._pending_bytes += len(packed)
            self._queued.append(packed)
        if self._pending_bytes > self._write_limit:
            return self._drain_to(self._write_limit)
        return None

    def _send_in_place(self, items: list[Buffer] | tuple[Buffer, ...],
                       ) -> Coroutine[Any, Any, None] | None:
        """Offer items' frames with sendmsg(2) over their own buffers (nothing in flight, so
        below the limit); what the kernel does not take is copied and goes to the ring."""
        try:
            self._framed.send_many(items)            # non-blocking: the rest stays in its backlog
        except (BlockingIOError, InterruptedError):
            rest: bytes | bytearray = pack_frames(items)     # none of it taken
        except OSError:
            # Part went out before the error: its rest, kept by the parser, still follows it
            # (a frame is never cut), and the error is the caller's.
            self._start_rest(self._framed.take_backlog())
            raise
        else:
            rest = self._framed.take_backlog()
        self._start_rest(rest)
        if self._pending_bytes > self._write_limit:
            return self._drain_to(self._write_limit)
        return None

    def _start_rest(self, rest: bytes | bytearray) -> None:
        """Send what the kernel did not take with the ring (nothing is in flight)."""
        if rest:
            self._pending_bytes += len(rest)
            self._start_send(memoryview(rest))

    async def _accept_when_below_the_limit(self, packed: bytes) -> None:
        # Above the limit a call waits before its frames are accepted: cancelled meanwhile,
        # it sends nothing.
        await self._drain_to(self._write_limit)
        self._check_writable()
        waiting = self._offer(packed)                # (now below it: accepted)
        if waiting is not None:
            await waiting

    async def drain(self) -> None:
        """Wait until the kernel has sent every byte accepted so far."""
        if self._write_error is not None:
            raise self._write_error
        await self._drain_to(0)

    # --- lifetime --------------------------------------------------------------------------

    def close(self) -> None:
        """Stop receiving, let the frames accepted go out, then close the socket (at once when
        nothing is pending). A coroutine waiting in recv raises ConnectionAbortedError."""
        if self._closing:
            return
        self._closing = True
        self._stop_receiving()
        if self._pending_bytes == 0 or self._write_error is not None or self._driver_gone():
            self._finish_close()
        # else _wake_writers closes once the last send completed

    def _driver_gone(self) -> bool:
        """The loop's ring is closed (the loop was): no send completion will come."""
        return self._driver is None or self._driver.ring.closed

    def abort(self) -> None:
        """Close at once: the socket's close() cancels its send in flight."""
        self._closing = True
        self._stop_receiving()
        self._queued.clear()
        self._pending_bytes = 0
        self._finish_close()

    def _finish_close(self) -> None:
        if self._closed:
            return
        super()._finish_close()
        if self._driver is not None:
            self._driver.release()

    def _stop_receiving(self) -> None:
        cancel_quietly(self._recv_request, self._driver)
        waiter, self._read_waiter = self._read_waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(_closed_error())

    def __repr__(self) -> str:
        state = "closed" if self._closed else "closing" if self._closing else "open"
        return (f"<csock.aio.FramedStream engine=uring {state} fd={self._fd} "
                f"pending_send={self.pending_send}>")


def _large(message: Any) -> bool:
    """Whether message is at least SEND_IN_PLACE long (False for a buffer without a length:
    it is packed, as before)."""
    try:
        return len(message) >= SEND_IN_PLACE
    except TypeError:
        return False
