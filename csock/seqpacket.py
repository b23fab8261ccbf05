"""SeqPacketSocket (SOCK_SEQPACKET): reliable, ordered records, boundaries kept.

Records can carry a header after the Xerox NS Sequenced Packet Protocol (``SPPHeader``, 12
bytes at the front of each record): ``default_header`` for every record, a prototype header
per record, and the header handed back with every record received. The socket numbers the
records it sends and checks the numbers of those it receives.
"""
from __future__ import annotations

import socket as _std
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from . import _fastio
from ._base import register_kind, socket
from ._fastio import SPPHeader

if TYPE_CHECKING:
    from typing_extensions import Buffer


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
        header: SPPHeader | None = self._state().spp_default_header
        return header

    @default_header.setter
    def default_header(self, header: SPPHeader | None) -> None:
        self._state().spp_default_header = _header_or_none(header, "default_header")

    def _state(self) -> Any:
        # The state's slot, read directly: a call into _fastio for it on every record cost a
        # send_record + recv_record pair ~15 % more instructions. The slot is unset until the
        # first csock call makes the state.
        try:
            return self._csock_state
        except AttributeError:
            return _fastio.socket_state(self)

    def _prototype(self, state: Any, header: SPPHeader | None) -> tuple[SPPHeader, int]:
        prototype = _header_or_none(header, "header")
        if prototype is None:
            default = state.spp_default_header
            prototype = default if default is not None else SPPHeader()
        first = prototype.sequence if prototype.sequence is not None else state.spp_next
        return prototype, first

    def send_record(self, data: Buffer, header: SPPHeader | None = None) -> None:
        """Send one record: the 12-byte SPP header (``header``, else ``default_header``, its
        sequence numbered by the socket unless set) then data, in one sendmsg(2). TypeError
        (nothing sent) if data is not bytes-like or header not an SPPHeader or None."""
        self.send_records([data], header)

    def send_records(self, records: Iterable[Buffer], header: SPPHeader | None = None) -> int:
        """Send each record behind the header (numbered consecutively), one sendmmsg(2) per
        1024; returns how many went out (send_batch's rules). TypeError (nothing sent) for a
        record that is not bytes-like or a header that is not an SPPHeader or None."""
        try:                                # (self._state() inline: a call per record shows)
            state = self._csock_state
        except AttributeError:
            state = _fastio.socket_state(self)
        prototype, first = self._prototype(state, header)
        sent: int = _fastio.send_records(self, records, prototype, first)
        state.spp_next = (first + sent) & 0xFFFF
        return sent

    def _check_sequence(self, records: list[tuple[SPPHeader | None, Any]]) -> None:
        """Raise MalformedRecordError (a record without a header) or SequenceError (a gap)
        for the batch; either way the socket then expects the number after the batch's last
        well-formed record, since the error hands every record over."""
        try:                                # (self._state() inline: a call per record shows)
            state = self._csock_state
        except AttributeError:
            state = _fastio.socket_state(self)
        gap = None
        malformed = False
        expected = state.spp_expected                       # (a local: the field is a property)
        for header, data in records:
            if header is None:
                malformed = True
                continue
            assert header.sequence is not None              # a received header has its number
            if expected is not None and header.sequence != expected and gap is None:
                gap = SequenceError(header, data, expected, records)
            expected = (header.sequence + 1) & 0xFFFF
        state.spp_expected = expected
        if malformed:
            raise MalformedRecordError(records)
        if gap is not None:
            raise gap

    def recv_record(self, bufsize: int = 65535) -> tuple[SPPHeader, Any]:
        """The next record's header and data (a read-only view). EOFError at end of stream;
        SequenceError if its number is not the one expected (the record is in the error);
        MalformedRecordError for a record shorter than the header, a zero-length one
        included (see the class doc for when one reads as the end of stream)."""
        records = self.recv_records(1, bufsize)
        if not records:
            raise EOFError("end of stream")
        return records[0]

    def recv_records(self, max_messages: int = 64,
                     bufsize: int = 65535) -> list[tuple[SPPHeader, Any]]:
        """Every record already queued (at least one: waits), up to max_messages, with one
        recvmmsg(2): [(SPPHeader, data)]; [] at end of stream. MalformedRecordError or
        SequenceError carry the whole batch; the records in it count for the numbering."""
        records: list[tuple[Any, Any]] = _fastio.split_records(
            self.recv_batch(max_messages, bufsize)
        )
        self._check_sequence(records)
        return records


def _header_or_none(header: Any, name: str) -> SPPHeader | None:
    if header is not None and not isinstance(header, SPPHeader):
        raise TypeError(f"{name} must be a csock.SPPHeader or None, not {type(header).__name__}")
    return header


register_kind(_std.SOCK_SEQPACKET, SeqPacketSocket)
