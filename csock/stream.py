"""StreamSocket (SOCK_STREAM: TCP, AF_UNIX stream): ordered bytes, no record boundaries."""
from __future__ import annotations

import socket as _std

from . import _fastio
from ._base import register_kind, socket


class StreamSocket(socket):
    """A byte stream with vectored sends and exact reads.

    ``send_buffers(buffers)`` writes every byte of every buffer in order with sendmsg(2)
    scatter/gather: no joining copy, IOV_MAX vectors per call, partial writes resumed.
    ``recv_exactly(n)`` / ``recv_exactly_into(buffer)`` recv(2) until the unit is complete;
    end of stream first raises IncompleteReadError (``.partial`` holds what arrived). If such a
    read times out (or would block) part-way, the bytes it read stay with the socket and the
    next read returns them first: nothing taken from the kernel is lost.
    """

    __slots__ = ("_csock_stash",)

    send_buffers = _fastio.send_buffers
    recv_exactly = _fastio.recv_exactly
    recv_exactly_into = _fastio.recv_exactly_into

    def close(self) -> None:
        _fastio.stash_clear(self)
        super().close()


register_kind(_std.SOCK_STREAM, StreamSocket)
