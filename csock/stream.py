"""StreamSocket (SOCK_STREAM: TCP, AF_UNIX stream): ordered bytes, no record boundaries."""
from __future__ import annotations

from . import _fastio
from ._base import register_kind, socket
from ._stdlib import socket as _std


class StreamSocket(socket):
    """A byte stream with vectored sends and exact reads.

    ``send_buffers(buffers)`` writes every byte of every buffer in order with sendmsg(2)
    scatter/gather: no joining copy, IOV_MAX vectors per call, partial writes resumed.
    ``recv_exactly(n)`` / ``recv_exactly_into(buffer)`` recv(2) until the unit is complete;
    end of stream first raises IncompleteReadError (``.partial`` holds what arrived). If such a
    read times out (or would block) part-way, it raises TimeoutError (BlockingIOError) whose
    ``.partial`` holds the bytes it read: nothing taken from the kernel is lost, and nothing is
    kept on the socket, so every receive method and select() see the stream as it is.

    ``send_buffers(buffers, zerocopy=True)`` uses MSG_ZEROCOPY (TCP): each buffer stays
    exported until the kernel's completion; ``flush_zerocopy(timeout=None)`` waits for all of
    them and ``zerocopy_stats()`` counts sends, completions and kernel copies. Mutating a buffer
    before its completion is the caller's choice (bytes is always safe); the exports outlive
    ``close()`` and garbage collection until their completions (the peer's end of stream waits
    for them). A sendmsg(2) of fewer than
    ``zerocopy_threshold`` bytes (default 10240) is copied instead. The kernel numbers
    completions per open file, so a socket and its duplicates (``dup()``) share this
    bookkeeping; in a forked child a socket open at the fork sends copied and leaves the
    completions to the parent.
    """

    __slots__ = ()

    send_buffers = _fastio.send_buffers
    recv_exactly = _fastio.recv_exactly
    recv_exactly_into = _fastio.recv_exactly_into
    flush_zerocopy = _fastio.flush_zerocopy
    zerocopy_stats = _fastio.zerocopy_stats

    @property
    def zerocopy_threshold(self) -> int:
        """Bytes below which ``send_buffers(..., zerocopy=True)`` copies a sendmsg(2) anyway:
        for small writes pinning pages and reading the kernel's completion cost more than the
        copy (the kernel's MSG_ZEROCOPY notes put the break-even around 10 KB). Default
        10240; 0 asks for zero copy on every send."""
        return int(_fastio.zerocopy_threshold(self))

    @zerocopy_threshold.setter
    def zerocopy_threshold(self, nbytes: int) -> None:
        _fastio.set_zerocopy_threshold(self, nbytes)


register_kind(_std.SOCK_STREAM, StreamSocket)
