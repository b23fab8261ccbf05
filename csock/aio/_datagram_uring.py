"""The io_uring engine of the batched datagram endpoint (``engine="uring"``).

A :class:`RingDatagramIO` does the receiving and sending of one
:class:`~csock.aio.datagram.BatchDatagramTransport` on its loop's
:class:`~csock.aio._uring_engine.UringDriver`; the transport keeps the protocol, the write
buffer, flow control and the closing rules, as on the readiness (epoll) engine.

Receiving: one multishot ``recvmsg`` per socket, armed while reading. The kernel takes each
datagram into one of the ring's provided buffers and posts a completion; the handler copies
the payload into a :class:`csock.Datagram` and drops the view, so the buffer goes straight
back to the kernel (the ring's buffers are shared by every endpoint and stream on the loop: a
protocol that keeps its datagrams must not starve the others). The datagrams of one reap are
handed to the protocol in one ``datagrams_received`` call, at the start of the next loop
iteration.

Sending: each datagram is one ``sendmsg`` request; the requests queued in one loop iteration
reach the kernel with the driver's one ``io_uring_enter``. The kernel does not order requests
on a socket among themselves, so at most one batch is in flight: the next one is queued when
every completion of the previous one came back.
"""
from __future__ import annotations

import errno
import socket as _std
from typing import TYPE_CHECKING, Any

from .. import _fastio
from ._uring_engine import UringDriver, cancel_quietly

if TYPE_CHECKING:
    from .._uring import Completion, Request
    from .datagram import BatchDatagramTransport

__all__ = ["RECVMSG_HEADROOM", "RingDatagramIO"]

# A multishot recvmsg's buffer starts with struct io_uring_recvmsg_out (16 bytes) and the room
# the Ring asks for the sender's address (a sockaddr_storage, 128 bytes): the payload gets the
# rest of the buffer.
RECVMSG_HEADROOM = 16 + 128
_SEND_BATCH = 1024               # sendmsg requests in flight per endpoint at most
_ENOBUFS_BACKOFF_MAX = 0.05      # seconds between re-arms while every buffer stays held

# Datagram(data, address, truncated): Datagram has no Python constructor; this is its factory.
_make_datagram: Any = _fastio._restore_datagram  # type: ignore[attr-defined]
_UDP_GRO = 104                   # linux/udp.h


def disable_gro(sock: _std.socket) -> None:
    """Turn UDP GRO off: a multishot recvmsg asks for no control messages, so it could not
    split a coalesced message back into its datagrams."""
    if sock.family in (_std.AF_INET, _std.AF_INET6) and sock.type == _std.SOCK_DGRAM:
        try:
            sock.setsockopt(_std.SOL_UDP, _UDP_GRO, 0)
        except OSError:
            pass                 # a kernel without UDP_GRO never coalesces


class RingDatagramIO:
    """The receive and send requests of one datagram endpoint on its loop's io_uring driver.

    Parameters
    ----------
    transport : BatchDatagramTransport
        The transport this engine moves datagrams for (its socket, protocol, write buffer).
    driver : UringDriver
        The loop's driver (:func:`csock.aio._uring_engine.driver_for`).
    bufsize : int
        Payloads longer than this are cut to it and marked ``truncated``, as with recvmmsg.
    """

    def __init__(self, transport: BatchDatagramTransport, driver: UringDriver,
                 bufsize: int) -> None:
        self._transport = transport
        self._loop = driver.loop
        self._driver = driver
        self._sock = transport._sock
        self._bufsize = bufsize
        # Payloads that fill their buffer may have been cut: the Ring does not pass on the
        # kernel's MSG_TRUNC, so filling the room is reported as truncated (never silent).
        pool = driver.ring.pool
        assert pool is not None                 # (the driver's Ring has buffers)
        self._room = pool.buffer_size - RECVMSG_HEADROOM
        self._receive: Request | None = None
        self._arm_scheduled = False
        self._enobufs = 0                       # consecutive re-arms that found no buffer
        self._received: list[Any] = []
        self._flush_scheduled = False
        self._sending: dict[Request, int] = {}  # request -> its datagram's length
        self._batch_open = False                # the batch in flight is not submitted yet
        self._ending = False                    # the transport is lost: wait for our requests

    # --- receiving -------------------------------------------------------------------------

    def start_reading(self) -> None:
        """Arm the multishot recvmsg (submitted with this iteration's enter). A request still
        ending after stop_reading() is re-armed by its last completion instead."""
        if self._receive is None:
            self._arm()

    def stop_reading(self) -> None:
        """Cancel the multishot recvmsg; datagrams the kernel already took are kept for
        start_reading() (or dropped by close)."""
        cancel_quietly(self._receive, self._driver)

    def _arm(self) -> None:
        self._arm_scheduled = False
        transport = self._transport
        if self._receive is not None or not transport._reading or transport._closing:
            return
        try:
            self._receive = self._driver.start(self._driver.ring.recvmsg(self._sock),
                                               self._on_received)
        except OSError as error:
            transport._fatal_error(error, "io_uring recvmsg failed")

    def _schedule_arm(self) -> None:
        if self._arm_scheduled:
            return
        self._arm_scheduled = True
        if self._enobufs:
            # Every buffer is held (by views elsewhere on this loop): wait for releases.
            delay = min(0.001 * (1 << min(self._enobufs, 6)), _ENOBUFS_BACKOFF_MAX)
            self._loop.call_later(delay, self._arm)
        else:
            self._loop.call_soon(self._arm)

    def _on_received(self, completion: Completion) -> None:
        request = completion.request
        error = completion.error
        if error is None:
            view, address = completion.value
            length = len(view)
            if length > self._bufsize:
                data, truncated = bytes(view)[:self._bufsize], True
            else:
                data, truncated = bytes(view), length >= self._room
            del view                            # the buffer goes back to the kernel now
            self._enobufs = 0
            if not self._transport._lost:
                self._received.append(_make_datagram(data, address, truncated))
                if not self._flush_scheduled:
                    self._flush_scheduled = True
                    self._loop.call_soon(self._flush)
        if completion.more:
            return
        # The request's last completion: it ended on an error, ENOBUFS, cancel or close.
        if request is self._receive:
            self._receive = None
        if self._ending:
            self._maybe_lost()
            return
        if error is not None:
            if error.errno == errno.ENOBUFS:
                self._enobufs += 1              # the datagram is still queued in the socket
            elif error.errno != errno.ECANCELED:
                self._transport._protocol_error(error)
        if self._transport._reading and not self._transport._closing:
            self._schedule_arm()

    def _flush(self) -> None:
        """Hand the datagrams of the last reap to the protocol in one call."""
        self._flush_scheduled = False
        transport = self._transport
        if transport._lost:
            self._received.clear()
        elif self._received and transport._reading:
            batch, self._received = self._received, []
            transport._deliver(batch)

    def resume_delivery(self) -> None:
        """Deliver what was received while reading was paused (resume_reading)."""
        if self._received and not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)

    # --- sending ---------------------------------------------------------------------------

    def send_queued(self) -> None:
        """Queue a sendmsg request per buffered datagram while the batch in flight has not
        reached the kernel (or none is in flight), in order, up to _SEND_BATCH in flight."""
        transport = self._transport
        if self._sending and not self._batch_open:
            return                              # the next batch waits for this one
        buffer = transport._buffer
        ring = self._driver.ring
        start = self._driver.start
        on_sent = self._on_sent
        sending = self._sending
        while buffer and len(sending) < _SEND_BATCH:
            data, address = buffer[0]
            try:
                request = start(ring.sendmsg(self._sock, data, address), on_sent)
            except OSError as error:
                if error.errno == errno.EBADF or ring.closed:
                    transport._fatal_error(error, "io_uring sendmsg failed")
                    return
                buffer.popleft()
                transport._buffer_size -= len(data)
                transport._protocol_error(error)
                continue
            except (TypeError, ValueError) as error:   # an address checked too late
                buffer.popleft()
                transport._buffer_size -= len(data)
                transport._protocol_error(OSError(errno.EINVAL, str(error)))
                continue
            buffer.popleft()
            sending[request] = len(data)
        if sending and not self._batch_open:
            # The driver's submit is already scheduled (start() did it): once it ran, the
            # batch is in the kernel and later datagrams wait for its completions.
            self._batch_open = True
            self._loop.call_soon(self._seal_batch)
        transport._maybe_pause_protocol()

    def _seal_batch(self) -> None:
        self._batch_open = False

    def _on_sent(self, completion: Completion) -> None:
        transport = self._transport
        length = self._sending.pop(completion.request, 0)
        if not transport._lost:                 # (losing the transport zeroed the count)
            transport._buffer_size -= length
        error = completion.error
        if error is not None and not transport._lost and error.errno != errno.ECANCELED:
            transport._protocol_error(error)    # the datagram is dropped, as asyncio does
        if self._sending:
            return
        if self._ending:
            self._maybe_lost()
            return
        if transport._buffer:
            self.send_queued()
        transport._maybe_resume_protocol()
        if not transport._buffer and not self._sending and transport._closing:
            transport._lose(None)

    @property
    def sends_in_flight(self) -> int:
        """Datagrams handed to the ring whose completion has not come back."""
        return len(self._sending)

    # --- closing ---------------------------------------------------------------------------

    def end(self, abort: bool) -> None:
        """The transport is lost: cancel the receive (and, on abort, the sends in flight);
        connection_lost runs once the last of them completed, so that the socket's close
        leaves no request behind."""
        self._ending = True
        self._received.clear()
        cancel_quietly(self._receive, self._driver)
        if abort:
            for request in list(self._sending):
                cancel_quietly(request, self._driver)
        self._maybe_lost()

    def _maybe_lost(self) -> None:
        if self._receive is None and not self._sending:
            self._ending = False
            self._loop.call_soon(self._transport._call_connection_lost, self._transport._lost_exc)

    @staticmethod
    def usable_for(sock: _std.socket) -> bool:
        """Whether the engine serves this socket: datagram sockets only (a SEQPACKET
        socket's end of stream cannot be told from an empty record in a multishot recvmsg)."""
        return sock.type == _std.SOCK_DGRAM

