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
the datagrams; when it would block, the datagrams left stay in the write buffer, in order,
and a one-shot ``IORING_OP_POLL_ADD`` for POLLOUT stands in for the epoll engine's
``add_writer``: its completion sends them with sendmmsg again, as far as the socket takes
them, and arms the poll again if some are left. No datagram is handed to an io_uring send
request to wait for room: the kernel's unix_dgram_sendmsg copies the payload out of the
request's iov before it finds the peer's queue full, so io_uring's retry after its internal
poll sent an empty datagram (the Ring now sends datagrams with MSG_DONTWAIT, so such a
request would complete with EAGAIN instead), and requests that wait on one socket are not
kept in order by the kernel either.
"""
from __future__ import annotations

import errno
from select import POLLOUT
from typing import TYPE_CHECKING

from .._stdlib import socket as _std
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
        self._send: Request | None = None       # the poll for send room, while waiting
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
            self._poll_failed(error)

    def _poll_failed(self, error: BaseException) -> None:
        # The socket closed itself under the transport (EBADF) loses the connection quietly,
        # as on the epoll engine; anything else is reported.
        if isinstance(error, OSError) and self._sock.fileno() < 0:
            self._transport._lose(error)
        else:
            self._transport._fatal_error(error, "io_uring poll failed")

    def _on_readable(self, completion: Completion) -> None:
        if completion.request is self._receive:
            self._receive = None
        if self._ending:
            self._maybe_lost()
            return
        transport = self._transport
        error = completion.error
        if error is not None and error.errno != errno.ECANCELED:
            self._poll_failed(error)
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
        """The socket would not take the write buffer's first datagram: arm a poll for
        POLLOUT (submitted with this iteration's enter), whose completion sends the buffer
        again. The datagrams stay in the write buffer, in order, until sendmmsg took them:
        an EAGAIN drops nothing and reports nothing, as on the epoll engine."""
        transport = self._transport
        if self._send is not None or not transport._buffer:
            return
        try:
            self._send = self._driver.start(self._driver.ring.poll(self._sock, POLLOUT),
                                            self._on_room)
        except Exception as error:
            self._poll_failed(error)

    def _on_room(self, completion: Completion) -> None:
        transport = self._transport
        self._send = None
        if self._ending:
            self._maybe_lost()
            return
        error = completion.error
        if error is not None and error.errno != errno.ECANCELED:
            self._poll_failed(error)
            return
        # (POLLERR too: sendmmsg meets the socket's error and reports it, as on epoll.)
        transport._on_writable()        # sendmmsg as far as it goes; send_head() if some left

    @property
    def sending(self) -> bool:
        """Whether the write buffer waits for send room (a POLLOUT poll is in flight)."""
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

