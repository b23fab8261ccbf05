"""csock.aio: csock's batch and framed I/O on any asyncio loop (the default one, uvloop, ...).

Everything here drives non-blocking csock sockets with ``loop.add_reader``/``add_writer``:
try the system call first, and only when the kernel would block wait for readiness, then
try again. Nothing is read or written through asyncio transports, so the wire traffic is
exactly that of the blocking calls:

* ``await recv_batch(sock)`` / ``await send_batch(sock, messages)``: datagrams and SEQPACKET
  records with recvmmsg(2)/sendmmsg(2); one wake-up hands over every datagram queued
  (``await recv_batch_into(sock, buffer, bufsize)``: into your buffer, lengths only).
* ``await create_datagram_endpoint(...)``: a transport whose protocol gets
  ``datagrams_received(list_of_Datagram)`` once per wake-up, with buffered, flow-controlled
  batch sends.
* ``FramedStream(sock)``: 4-byte big-endian length-prefixed messages, as
  ``csock.FramedStream``, with ``await send/send_many/recv/recv_many``.
* ``await open_framed_connection(host, port)`` and ``await start_framed_server(handler, ...)``:
  TCP clients and servers speaking that framing.
"""
from __future__ import annotations

from ._readiness import recv_batch as recv_batch
from ._readiness import recv_batch_into as recv_batch_into
from ._readiness import send_batch as send_batch
from ._readiness import wait_readable as wait_readable
from ._readiness import wait_writable as wait_writable
from .datagram import BatchDatagramProtocol as BatchDatagramProtocol
from .datagram import BatchDatagramTransport as BatchDatagramTransport
from .datagram import create_datagram_endpoint as create_datagram_endpoint
from .framed import FramedStream as FramedStream
from .server import FramedServer as FramedServer
from .server import open_framed_connection as open_framed_connection
from .server import start_framed_server as start_framed_server

__all__ = [
    "recv_batch",
    "recv_batch_into",
    "send_batch",
    "wait_readable",
    "wait_writable",
    "BatchDatagramProtocol",
    "BatchDatagramTransport",
    "create_datagram_endpoint",
    "FramedStream",
    "FramedServer",
    "open_framed_connection",
    "start_framed_server",
]
