"""SeqPacketSocket (SOCK_SEQPACKET): reliable, ordered records, boundaries kept.

Records can carry a header after the Xerox NS Sequenced Packet Protocol (``SPPHeader``, 12
bytes at the front of each record): ``default_header`` for every record, a prototype header
per record, and the header handed back with every record received. The socket numbers the
records it sends and checks the numbers of those it receives.
"""
from __future__ import annotations

from typing import Any

from . import _fastio
from ._base import register_kind, socket
from ._fastio import SPPHeader
from ._stdlib import socket as _std


class SequenceError(Exception):
    """A received record's sequence number is not the one expected. Nothing is lost: the
    record is here (``header``, ``data``; ``records`` holds the whole batch for the batch
    form), and the socket now expects the number after this record's."""

    def __init__(self, header: SPPHeader, data: Any, expected: int,
                 records: list[tuple[SPPHeader | None, Any]] | None = None) -> None:
        super().__init__(f"SPP record numbered {header.sequence}, expected {expected}")
        self.header = header
        self.data = data
        self.expected = expected
        self.records = records if records is not None else [(header, data)]


class MalformedRecordError(ValueError):
    """A record shorter than the 12-byte SPP header; ``records`` holds the batch it came in
    (its header is None), so nothing is lost."""

    def __init__(self, records: list[tuple[SPPHeader | None, Any]]) -> None:
        super().__init__("a record is shorter than the 12-byte SPP header")
        self.records = records


class TruncatedRecordError(ValueError):
    """A record longer than the receive's bufsize: the kernel kept bufsize bytes of it (the
    header included) and dropped the rest, as recv_batch's ``Datagram.truncated`` says.
    ``records`` holds the batch it came in, that record cut, so nothing received is lost."""

    def __init__(self, records: list[tuple[SPPHeader | None, Any]]) -> None:
        super().__init__("a record was longer than bufsize: its end was dropped")
        self.records = records


class SeqPacketSocket(socket):
    """Reliable ordered records (AF_UNIX natively; AF_INET/AF_INET6 through SCTP).

    ``send``/``recv`` as the stdlib; ``send_batch``/``recv_batch``/``recv_batch_into`` as
    DatagramSocket's (sendmmsg/recvmmsg). At end of stream ``recv`` returns b"" and
    ``recv_batch`` (``recv_batch_into``) returns [] (records that arrived before it come
    first). A zero-length record is an empty Datagram (a length of 0): recv(2) returns 0 for
    both, so the batch calls ask the peer's shutdown state (POLLRDHUP) to tell them apart.
    What stays ambiguous once the peer has shut down: a zero-length record sent right before
    its close (more precisely, in recv_batch's docstring) reads as the end of stream.
    ``recv`` returns b"" for both, as the stdlib's does. ``recv_batch(bufsize=0)`` is a
    ValueError.
    """

    __slots__ = ()      # its state (default header, numbering) is in its _fastio.SocketState

    send_batch = _fastio.send_batch
    recv_batch = _fastio.recv_batch
    recv_batch_into = _fastio.recv_batch_into
    # The record paths read and number through the socket's SocketState in C (src/fastio/spp.pyx).
    send_record = _fastio.send_record
    send_records = _fastio.send_records
    recv_record = _fastio.recv_record
    recv_records = _fastio.recv_records

    def __init__(self, family: int = -1, type: int = -1,
                 proto: int = -1, fileno: Any = None) -> None:
        if fileno is None and type == -1:
            type = _std.SOCK_SEQPACKET
            if family == -1:
                family = _std.AF_UNIX
        try:
            super().__init__(family, type, proto, fileno)
        except OSError as error:
            if fileno is None and family in (_std.AF_INET, _std.AF_INET6):
                raise OSError(error.errno, "SOCK_SEQPACKET over AF_INET/AF_INET6 needs SCTP, "
                              f"which this kernel does not provide ({error.strerror}); "
                              "load it with `modprobe sctp`") from error
            raise

    @property
    def default_header(self) -> SPPHeader | None:
        """The header every ``send_record``/``send_records`` without its own carries (None:
        all fields 0). TypeError for anything but an SPPHeader or None."""
        header: SPPHeader | None = _fastio.socket_state(self).spp_default_header
        return header

    @default_header.setter
    def default_header(self, header: SPPHeader | None) -> None:
        _fastio.socket_state(self).spp_default_header = _header_or_none(header, "default_header")


def _header_or_none(header: Any, name: str) -> SPPHeader | None:
    if header is not None and not isinstance(header, SPPHeader):
        raise TypeError(f"{name} must be a csock.SPPHeader or None, not {type(header).__name__}")
    return header


register_kind(_std.SOCK_SEQPACKET, SeqPacketSocket)
