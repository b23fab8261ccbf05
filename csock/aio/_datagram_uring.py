"""The io_uring engine of the batched datagram endpoint (``engine="uring"``).

A :class:`RingDatagramIO` does the receiving and sending of one
:class:`~csock.aio.datagram.BatchDatagramTransport` on its loop's
:class:`~csock.aio._uring_engine.UringDriver`; the transport keeps the protocol, the write
buffer, flow control and the closing rules, as on the readiness (epoll) engine.

Receiving: the ring tells readiness, recvmmsg(2) takes the datagrams. A one-shot
``IORING_OP_POLL_ADD`` for POLLIN stands in for the epoll engine's ``add_reader``; its
completion runs the transport's own read (``recv_batch``: up to max_messages datagrams with
one recvmmsg, UDP GRO messages split back into their datagrams) and arms the poll again,
which completes at once while the socket stays readable. A multishot ``recvmsg`` into the
ring's provided buffers was tried first: one completion, one ring buffer and one Python call
per datagram, and no GRO (its control messages would need splitting in the handler) kept
it at the rate of offload=False, well below the epoll engine (CHANGELOG.md has the run): a
GSO sender's datagrams arrive as one coalesced message that recvmmsg splits in C.

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

from ._uring_engine import UringDriver, cancel_quietly

if TYPE_CHECKING:
    from .._uring import Completion, Request
    from .datagram import BatchDatagramTransport

__all__ = ["RingDatagramIO"]


class RingDatagramIO:
    """The receive and send requests of one datagram endpoint on its loop's io_uring driver.

    Parameters
    ----------
    transport : BatchDatagramTransport
        The transport this engine moves datagrams for (its socket, protocol, write buffer).
    driver : UringDriver
        The loop's driver (:func:`csock.aio._uring_engine.driver_for`).
    """

    def __init__(self, transport: BatchDatagramTransport, driver: UringDriver) -> None:
        self._transport = transport
        self._loop = driver.loop
        self._driver = driver.acquire()         # (released once the endpoint is lost)
        self._released = False
        self._sock = transport._sock
        self._receive: Request | None = None    # the poll for readability, while reading
        self._send: Request | None = None       # the one sendmsg in flight
        self._send_item: tuple[bytes, Any] | None = None
        self._ending = False                    # the transport is lost: wait for our requests

    # --- receiving -------------------------------------------------------------------------

    def start_reading(self) -> None:
        """Arm the poll for readability (submitted with this iteration's enter). A poll still
        ending after stop_reading() is re-armed by its completion instead."""
        if self._receive is None:
            self._arm()

    def stop_reading(self) -> None:
        """Cancel the poll: nothing is read until start_reading()."""
        cancel_quietly(self._receive, self._driver)

    def _arm(self) -> None:
        transport = self._transport
        if self._receive is not None or not transport._reading or transport._closing:
            return
        try:
            self._receive = self._driver.start(self._driver.ring.poll(self._sock),
                                               self._on_readable)
        except OSError as error:
            transport._fatal_error(error, "io_uring poll failed")

    def _on_readable(self, completion: Completion) -> None:
        if completion.request is self._receive:
            self._receive = None
        if self._ending:
            self._maybe_lost()
            return
        transport = self._transport
        error = completion.error
        if error is not None and error.errno != errno.ECANCELED:
            transport._fatal_error(error, "io_uring poll failed")
            return
        if not transport._reading or transport._closing:
            return                  # paused (or cancelled): start_reading() arms it again
        if error is None:
            transport._on_readable()    # one recvmmsg batch, as the epoll engine's callback
        # One-shot: armed again for the next batch (it completes at once if the socket is
        # still readable), with this iteration's enter.
        self._arm()

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
        """Whether the engine serves this socket: SOCK_DGRAM sockets only (a SEQPACKET
        connection keeps the epoll engine)."""
        return sock.type == _std.SOCK_DGRAM

