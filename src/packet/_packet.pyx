# cython: language_level=3
"""csock._packet: the packet stack behind csock.packet and csock.raw.

Build and parse IPv4, IPv6, ICMP, ICMPv6, UDP and TCP headers. A separate extension from
csock._fastio (the socket hot path), as asyncpg keeps pgproto apart; it cimports the pieces
of the core it uses (ReadOnlyView, the member-descriptor helpers) through csock._fastio's
declarations. Each part lives in its own file:

    checksum.pyx   the Internet checksum (RFC 1071) and IPv4/IPv6 pseudo-header sums
    packet.pyx     PacketError, Layer (stacking, lookup, build), parse(), packet_items()
    ipv4.pyx       IPv4 header
    ipv6.pyx       IPv6 header (extension headers skipped when parsing)
    icmp.pyx       ICMP and ICMPv6 headers
    udp.pyx        UDP header
    tcp.pyx        TCP header
"""

include "checksum.pyx"
include "packet.pyx"
include "ipv4.pyx"
include "ipv6.pyx"
include "icmp.pyx"
include "udp.pyx"
include "tcp.pyx"
