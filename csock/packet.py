"""csock.packet: build and parse IPv4, IPv6, ICMP, ICMPv6, UDP and TCP packets.

Layers stack with ``/`` and ``bytes()`` builds the packet, filling every field left as None
(lengths, IPv4 proto / IPv6 nh from the next layer, the IPv4 header checksum and the UDP,
TCP, ICMP and ICMPv6 checksums, pseudo-header included)::

    from csock.packet import IPv4, UDP, parse
    p = IPv4(dst="127.0.0.1") / UDP(sport=4000, dport=9) / b"payload"
    data = bytes(p)
    q = parse(data)                  # q[UDP].payload is a read-only view into data
    assert bytes(q) == data and q[UDP].dport == 9
    q.verify()                       # PacketError naming the layer if a checksum is wrong

Field names are scapy's. A value the caller set, or that came from parsing, is kept as it
is, so a packet with a bad checksum round-trips unchanged. Truncated or inconsistent input
raises PacketError (a ValueError); a field out of range raises ValueError, a field of the
wrong type TypeError. The layers are implemented in Cython (csock._packet, src/packet/).
"""
from __future__ import annotations

from ._packet import ICMP as ICMP
from ._packet import TCP as TCP
from ._packet import UDP as UDP
from ._packet import ICMPv6 as ICMPv6
from ._packet import IPv4 as IPv4
from ._packet import IPv6 as IPv6
from ._packet import Layer as Layer
from ._packet import PacketError as PacketError
from ._packet import PayloadView as PayloadView
from ._packet import checksum as checksum
from ._packet import parse as parse

ICMP_ECHO_REPLY = 0
ICMP_DEST_UNREACH = 3
ICMP_ECHO_REQUEST = 8
ICMP_TIME_EXCEEDED = 11
ICMPV6_DEST_UNREACH = 1
ICMPV6_PACKET_TOO_BIG = 2
ICMPV6_TIME_EXCEEDED = 3
ICMPV6_ECHO_REQUEST = 128
ICMPV6_ECHO_REPLY = 129

# TCP flag bits (scapy's letters FSRPAUECN)
TCP_FIN = 0x01
TCP_SYN = 0x02
TCP_RST = 0x04
TCP_PSH = 0x08
TCP_ACK = 0x10
TCP_URG = 0x20
TCP_ECE = 0x40
TCP_CWR = 0x80
TCP_NS = 0x100

__all__ = [
    "IPv4", "IPv6", "ICMP", "ICMPv6", "UDP", "TCP", "Layer", "PacketError", "PayloadView", "parse",
    "checksum",
    "ICMP_ECHO_REPLY", "ICMP_DEST_UNREACH", "ICMP_ECHO_REQUEST", "ICMP_TIME_EXCEEDED",
    "ICMPV6_DEST_UNREACH", "ICMPV6_PACKET_TOO_BIG", "ICMPV6_TIME_EXCEEDED",
    "ICMPV6_ECHO_REQUEST", "ICMPV6_ECHO_REPLY",
    "TCP_FIN", "TCP_SYN", "TCP_RST", "TCP_PSH", "TCP_ACK", "TCP_URG", "TCP_ECE", "TCP_CWR",
    "TCP_NS",
]
