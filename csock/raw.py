"""RawSocket (SOCK_RAW): raw IP: the protocol headers are the caller's.

Packets go out and come back as ``csock.packet`` layers (or any bytes-like object going out).
What the kernel adds and what it hands back differ by family (raw(7), raw(7) for IPv6):

* AF_INET: every packet received starts with its IPv4 header. With ``header_included``
  (IP_HDRINCL, implied by IPPROTO_RAW) the caller writes the IPv4 header too. Linux then
  expects ``ip_len`` and ``ip_off`` in network byte order (the BSDs wanted host order) and
  always fills in the header checksum and the total length, plus the source address and the
  id when they are 0; csock.packet writes every field in network order, so its packets are
  sent as built.
* AF_INET6: packets received start at the upper-layer header (ICMPv6, UDP, ...): the kernel
  never hands over the IPv6 header. With ``header_included`` (IPV6_HDRINCL) the caller
  writes it when sending. On ICMPv6 sockets the kernel computes the ICMPv6 checksum itself.
"""
from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from . import _fastio, _packet
from ._base import register_kind, socket
from ._stdlib import socket as _std
from .packet import IPv4, IPv6, Layer, PacketError, parse

if TYPE_CHECKING:
    from typing_extensions import Buffer

IPV6_HDRINCL = 36          # linux/in6.h; not exported by the stdlib

# the first header of a packet as a raw socket of this (family, protocol) receives it
_FIRST_LAYER_V6 = {_std.IPPROTO_ICMPV6: "icmpv6", _std.IPPROTO_UDP: "udp", _std.IPPROTO_TCP: "tcp"}


class RawPermissionError(PermissionError):
    """The stdlib's PermissionError (same errno, strerror and args) whose message also says
    what raw sockets need."""

    def __str__(self) -> str:
        return (f"{super().__str__()}: raw sockets need CAP_NET_RAW (run as root, or grant it: "
                "setcap cap_net_raw+ep on the interpreter)")


def _privilege_error(error: PermissionError) -> PermissionError:
    return RawPermissionError(error.errno, error.strerror)


class RawSocket(socket):
    """A raw IPv4 or IPv6 socket that sends and receives whole packets.

    ``RawSocket(family=AF_INET, proto=IPPROTO_RAW, *, header_included=None)``: the caller
    supplies the IP header when ``header_included`` is true (the default for IPPROTO_RAW);
    otherwise the kernel builds it and ``send_packet`` sends what follows the packet's IP
    layer. Without CAP_NET_RAW, construction raises PermissionError saying so.

    Attributes
    ----------
    header_included : bool
        True when packets go out with the caller's IP header (IP_HDRINCL).
    """

    __slots__ = ("header_included",)    # csock's own state: in its _fastio.SocketState

    def __new__(cls, *args: Any, **kwargs: Any) -> RawSocket:
        # RawSocket(...) itself takes (family, proto); csock.socket(family, SOCK_RAW, proto,
        # fileno) reaches __init__ without passing through here, with the stdlib's arguments.
        self = _std.socket.__new__(cls)
        _fastio.socket_state(self).raw_direct = True
        return self

    def __init__(self, *args: Any, header_included: bool | None = None, **kwargs: Any) -> None:
        # dup() and friends call the class with the stdlib's (family, type, proto, fileno)
        stdlib_style = len(args) > 2 or "fileno" in kwargs or "type" in kwargs
        if _fastio.socket_state(self).raw_direct and not stdlib_style:
            family, proto = self._raw_arguments(*args, **kwargs)
            try:
                super().__init__(family, _std.SOCK_RAW, proto)
            except PermissionError as error:
                raise _privilege_error(error) from None
        else:
            try:
                super().__init__(*args, **kwargs)
            except PermissionError as error:
                raise _privilege_error(error) from None
        if header_included is None:
            header_included = self.proto == _std.IPPROTO_RAW or self._hdrincl_set()
        elif header_included:
            level, option = ((_std.IPPROTO_IP, _std.IP_HDRINCL) if self.family == _std.AF_INET
                             else (_std.IPPROTO_IPV6, IPV6_HDRINCL))
            self.setsockopt(level, option, 1)
        elif self.proto == _std.IPPROTO_RAW:
            self.close()
            raise ValueError("an IPPROTO_RAW socket always takes the IP header from the caller "
                             "(raw(7)): header_included=False needs another protocol, such as "
                             "IPPROTO_UDP")
        elif self._hdrincl_set():
            self.setsockopt(_std.IPPROTO_IP, _std.IP_HDRINCL, 0)    # (an adopted fd's)
        self.header_included = bool(header_included)

    @staticmethod
    def _raw_arguments(family: int = _std.AF_INET,
                       proto: int = _std.IPPROTO_RAW) -> tuple[int, int]:
        if family not in (_std.AF_INET, _std.AF_INET6):
            raise ValueError(f"RawSocket is for AF_INET or AF_INET6, not {family!r}")
        return family, proto

    def _hdrincl_set(self) -> bool:
        if self.family != _std.AF_INET:
            return False
        return bool(self.getsockopt(_std.IPPROTO_IP, _std.IP_HDRINCL))

    # --- sending ----------------------------------------------------------------------------

    def _outgoing(self, packet: Layer | Buffer, address: Any) -> tuple[Buffer, Any]:
        """(the bytes to send, the destination) for one packet."""
        if isinstance(packet, Layer):
            ip = packet if isinstance(packet, (IPv4, IPv6)) else None
            if ip is not None and ip.src in _UNSPECIFIED:
                packet = ip = self._with_kernels_source(ip)
            data: Buffer = bytes(packet)
            if ip is not None and not self.header_included:
                data = memoryview(data)[_ip_header_length(data):]   # the kernel adds its own
            destination = ip.dst if ip is not None else None
        else:
            data = packet
            destination = _destination_of(packet) if self.header_included else None
        if address is None:
            if destination is None:
                raise ValueError("no destination: pass address=, or send a packet with an IP layer")
            address = destination
        if isinstance(address, str):
            address = (address, 0)
        return data, address

    def _with_kernels_source(self, ip: Any) -> Any:
        """A copy of ip whose src is the address the kernel will send it from (the socket's
        bound address, else the route's to ip.dst). The kernel fills an unspecified source in
        (raw(7)), but the UDP/TCP/ICMPv6 checksums cover a pseudo-header holding it: computed
        with 0.0.0.0 they were wrong on the wire, and the receiver dropped the packet."""
        source = self.getsockname()[0]
        if source in _UNSPECIFIED:
            source = _route_source(self.family, ip.dst)
            if source is None:
                return ip                       # no route: the send says so
        sourced = ip.copy()
        sourced.src = source
        return sourced

    def send_packet(self, packet: Layer | Buffer, address: Any = None) -> int:
        """Send one packet (a csock.packet layer stack, built with bytes(), or bytes-like) to
        address, or to its IP layer's dst; returns the bytes sent (one sendto(2))."""
        data, destination = self._outgoing(packet, address)
        return self.sendto(data, destination)

    def send_packets(self, packets: Iterable[Layer | Buffer], address: Any = None) -> int:
        """Send every packet with one sendmmsg(2) per 1024 (send_batch's rules: all are built
        and checked before any is sent; the count says how many went out)."""
        items = _packet.packet_items(packets, address, self.header_included, self._outgoing)
        sent: int = _fastio.send_batch(self, items)
        return sent

    # --- receiving --------------------------------------------------------------------------

    def _first_layer(self) -> str:
        if self.family == _std.AF_INET:
            return "ipv4"
        return _FIRST_LAYER_V6.get(self.proto, "")

    def _parse(self, datagram: Any, first: str) -> Any:
        """The datagram's packet parsed from its first layer (its bytes when there is none to
        parse); PacketError carrying the bytes if it was truncated or does not parse."""
        if not first:
            return datagram.data
        if datagram.truncated:
            error = PacketError("packet truncated: it was longer than bufsize")
            error.data = datagram.data  # type: ignore[attr-defined]
            raise error
        try:
            return parse(datagram.data, first=first)
        except PacketError as error:
            error.data = datagram.data  # type: ignore[attr-defined]   # nothing is lost
            raise

    def recv_packet(self, bufsize: int = 65535) -> Any:
        """The next packet, parsed (its layers; IPv4 packets include the IP header, IPv6 ones
        start at the upper layer). bytes() of it gives back exactly the bytes received.
        PacketError (with the raw bytes as .data) if it is truncated or malformed."""
        return self.recv_packet_from(bufsize)[0]

    def recv_packet_from(self, bufsize: int = 65535) -> tuple[Any, Any]:
        """(packet, sender address): as recv_packet, with the address recvfrom(2) gives."""
        (datagram,) = _fastio.recv_batch(self, 1, bufsize)
        return self._parse(datagram, self._first_layer()), datagram.address

    def recv_packets(self, max_messages: int = 64, bufsize: int = 65535) -> list[Any]:
        """Every packet already queued (at least one: waits), up to max_messages, with one
        recvmmsg(2), parsed. A malformed one raises PacketError whose .packets holds the whole
        batch (parsed packets, and the raw bytes for those that would not parse)."""
        batch = _fastio.recv_batch(self, max_messages, bufsize)
        first, parse_one = self._first_layer(), self._parse
        packets: list[Any] = []
        failure: PacketError | None = None
        for datagram in batch:
            try:
                packets.append(parse_one(datagram, first))
            except PacketError as error:
                failure = failure or error
                packets.append(datagram.data)
        if failure is not None:
            failure.packets = packets  # type: ignore[attr-defined]
            raise failure
        return packets

    recv_batch = _fastio.recv_batch
    send_batch = _fastio.send_batch


_UNSPECIFIED = ("0.0.0.0", "::")


def _route_source(family: int, destination: str) -> str | None:
    """The source address the kernel's routing picks for destination (a UDP socket's
    connect(2) asks it; nothing is sent), or None when there is no route."""
    with _std.socket(family, _std.SOCK_DGRAM) as probe:
        try:
            probe.connect((destination, 9))
        except OSError:
            return None
        source: str = probe.getsockname()[0]
        return source


def _ip_header_length(data: Buffer) -> int:
    """Length of the IP header (IPv4 with options; IPv6's fixed 40 bytes) at the front."""
    view = memoryview(data)
    if view[0] >> 4 == 4:
        return (view[0] & 0x0F) * 4
    if view[6] not in (_std.IPPROTO_ICMPV6, _std.IPPROTO_UDP, _std.IPPROTO_TCP):
        raise ValueError("an IPv6 packet with extension headers needs header_included=True")
    return 40


def _destination_of(data: Buffer) -> str | None:
    """The destination address in an IPv4 or IPv6 header at the front of data, if any."""
    view = memoryview(data).cast("B")
    if len(view) >= 20 and view[0] >> 4 == 4:
        return _std.inet_ntop(_std.AF_INET, bytes(view[16:20]))
    if len(view) >= 40 and view[0] >> 4 == 6:
        return _std.inet_ntop(_std.AF_INET6, bytes(view[24:40]))
    return None


register_kind(_std.SOCK_RAW, RawSocket)
