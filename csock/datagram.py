"""DatagramSocket (SOCK_DGRAM: UDP, AF_UNIX dgram): boundaries kept, delivery not guaranteed."""
from __future__ import annotations

from typing import Any

from . import _fastio
from ._base import register_kind, socket
from ._stdlib import socket as _std


class DatagramSocket(socket):
    """Connectionless datagrams, in batches.

    ``send_batch(messages, address=None)`` sends each item (bytes-like, or a ``(data,
    address)`` pair) as one datagram with one sendmmsg(2) per 1024; all items and addresses
    are checked before anything is sent. If the kernel fails after k datagrams went out, the
    call returns k and the next ``send_batch`` raises that error: nothing is resent or lost
    silently. ``recv_batch(max_messages=64, bufsize=65535)`` waits for one datagram, then
    returns every one already queued (one recvmmsg(2)) as ``csock.Datagram`` objects whose ``data``
    views stay valid while held and whose ``truncated`` flag says a datagram was cut
    (``bufsize=0`` takes each datagram as an empty one, flagged unless it was empty, with its
    address, as ``recvfrom(0)`` would).
    ``recv_batch_into(buffer, bufsize)`` is the same receive into the caller's buffer (datagram
    i at ``i * bufsize``), returning the lengths: no object per datagram, no addresses.

    UDP offloads (opt-in): ``send_batch(..., segment_size=N or "auto")`` packs runs of
    equal-sized datagrams to one destination into UDP_SEGMENT (GSO) messages, falling back to
    plain datagrams (remembered per socket) where the kernel refuses; the count returned is of
    datagrams. ``recv_batch(..., gro=True)`` / ``enable_gro()`` set UDP_GRO and split coalesced
    messages back into the datagrams sent (``max_messages`` still counts datagrams; the rest
    of a coalesced message is returned first by the next call). ``enable_metadata(timestamp=,
    destination=, tos=)`` fills ``Datagram.timestamp``, ``.destination``, ``.interface``,
    ``.tos``. segment_size and gro are ignored on non-UDP sockets.
    """

    __slots__ = ()      # its state (receiver, offload modes) is in its _fastio.SocketState

    def __init__(self, family: int = -1, type: int = -1,
                 proto: int = -1, fileno: Any = None) -> None:
        if fileno is None and type == -1:
            type = _std.SOCK_DGRAM          # (socket()'s default is SOCK_STREAM)
        super().__init__(family, type, proto, fileno)

    send_batch = _fastio.send_batch
    recv_batch = _fastio.recv_batch
    recv_batch_into = _fastio.recv_batch_into
    enable_metadata = _fastio.enable_metadata
    enable_gro = _fastio.enable_gro


register_kind(_std.SOCK_DGRAM, DatagramSocket)
