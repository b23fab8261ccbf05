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

Sending: as on the epoll engine, with sendmmsg(2) (and GSO) at once while the socket takes
the datagrams; when it would block, the first datagram left becomes one ``sendmsg`` request
on the ring, which the kernel completes when the socket has room, and the rest follows with
sendmmsg from its completion. Only one request is in flight: the kernel does not keep the
requests on a socket in order once they have to wait (a batch of sendmsg requests to a full
AF_UNIX peer arrives reordered), so a batch of them would need linked requests
(IOSQE_IO_HARDLINK), which the Ring does not offer yet.
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
        self._driver = driver.acquire()         # (released once the endpoint is lost)
        self._released = False
        self._sock = transport._sock
        self._bufsize = bufsize
        # Payloads longer than bufsize are cut to it; the kernel says (MSG_TRUNC, as
        # Completion.truncated) when one was longer than its ring buffer's room.
        self._truncated_from = bufsize + 1
        self._receive: Request | None = None
        self._arm_scheduled = False
        self._enobufs = 0                       # consecutive arms that found no buffer
        self._got = False                       # the request armed last received something
        self._received: list[Any] = []
        self._flush_scheduled = False
        self._send: Request | None = None       # the one sendmsg in flight
        self._send_item: tuple[bytes, Any] | None = None
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
        self._got = False
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
            data = bytes(view)
            del view        # (the buffer goes back once the driver drops the completion)
            truncated = completion.truncated or len(data) >= self._truncated_from
            if len(data) > self._bufsize:
                data = data[:self._bufsize]
            self._got = True
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
                # The datagrams left are still queued in the socket. After a burst that took
                # every buffer, re-arm now: the request reaches the kernel with the next
                # submit, once the driver dropped this reap's completions and so the views.
                # With nothing received, the buffers are held elsewhere on the loop: back
                # off until they come back.
                if self._got and self._transport._reading and not self._transport._closing:
                    self._enobufs = 0
                    self._arm()
                    return
                self._enobufs += 1
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

    def send_head(self) -> None:
        """The socket would not take the write buffer's first datagram: hand it to the ring as
        one sendmsg request, which the kernel completes once the socket has room (no readiness
        callback). Only this one is in flight, and the transport sends nothing else until it
        completed: the kernel does not keep requests on a socket in order once they wait."""
        transport = self._transport
        if self._send is not None or not transport._buffer:
            return
        item = transport._buffer[0]
        try:
            self._send = self._driver.start(self._driver.ring.sendmsg(self._sock, *item),
                                            self._on_sent)
        except Exception as error:
            transport._fatal_error(error, "io_uring sendmsg failed")
            return
        self._send_item = item

    def _on_sent(self, completion: Completion) -> None:
        transport = self._transport
        item, self._send, self._send_item = self._send_item, None, None
        if self._ending:
            self._maybe_lost()
            return
        buffer = transport._buffer
        if buffer and buffer[0] is item:
            buffer.popleft()
            transport._buffer_size -= len(item[0])
            error = completion.error
            if error is not None and error.errno != errno.ECANCELED:
                transport._protocol_error(error)    # the datagram is dropped, as asyncio does
        transport._on_writable()                    # the rest with sendmmsg, as far as it goes

    @property
    def sending(self) -> bool:
        """Whether a sendmsg request is in flight."""
        return self._send is not None

    # --- closing ---------------------------------------------------------------------------

    def end(self) -> None:
        """The transport is lost: cancel the receive and the send in flight (close() comes
        here only once the buffer is sent); connection_lost runs once both completed, so
        that the socket's close leaves no request behind and closes its fd at once."""
        self._ending = True
        self._received.clear()
        cancel_quietly(self._receive, self._driver)
        cancel_quietly(self._send, self._driver)
        # A request already done without reaching its handler (the driver was closed, which
        # drops every handler) has nothing more to wait for.
        if self._receive is not None and self._receive.done:
            self._receive = None
        if self._send is not None and self._send.done:
            self._send = None
        self._maybe_lost()

    def _maybe_lost(self) -> None:
        if self._receive is None and self._send is None:
            self._ending = False
            if not self._released:
                self._released = True
                self._driver.release()
            self._loop.call_soon(self._transport._call_connection_lost, self._transport._lost_exc)

    @staticmethod
    def usable_for(sock: _std.socket) -> bool:
        """Whether the engine serves this socket: datagram sockets only (a SEQPACKET
        socket's end of stream cannot be told from an empty record in a multishot recvmsg)."""
        return sock.type == _std.SOCK_DGRAM

