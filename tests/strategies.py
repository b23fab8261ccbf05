"""Hypothesis strategies for csock.packet layers, shared by the property tests
(test_packet.py) and the fuzz tests (test_fuzz.py)."""
from __future__ import annotations

import socket

from hypothesis import strategies as st

from csock.packet import ICMP, TCP, UDP, ICMPv6, IPv4, IPv6

u8, u16 = st.integers(0, 0xFF), st.integers(0, 0xFFFF)
v4addr = st.binary(min_size=4, max_size=4).map(socket.inet_ntoa)
v6addr = st.binary(min_size=16, max_size=16).map(lambda b: socket.inet_ntop(socket.AF_INET6, b))
opts = st.integers(0, 10).flatmap(lambda n: st.binary(min_size=4 * n, max_size=4 * n))
payloads = st.binary(max_size=300)
maybe16 = st.none() | u16

ipv4s = st.builds(IPv4, tos=u8, id=u16, flags=st.sampled_from([0, 2, 4, 6]), frag=st.just(0),
                  ttl=u8,
                  src=v4addr, dst=v4addr, options=opts, chksum=maybe16)
ipv6s = st.builds(IPv6, tc=u8, fl=st.integers(0, 0xFFFFF), hlim=u8, src=v6addr, dst=v6addr)
udps = st.builds(UDP, sport=u16, dport=u16, chksum=maybe16)
tcps = st.builds(TCP, sport=u16, dport=u16, seq=st.integers(0, 2**32 - 1),
                 ack=st.integers(0, 2**32 - 1),
                 reserved=st.integers(0, 7), flags=st.integers(0, 0x1FF), window=u16, urgptr=u16,
                 options=opts, chksum=maybe16)
icmps = st.builds(ICMP, type=u8, code=u8, id=u16, seq=u16, chksum=maybe16)
icmp6s = st.builds(ICMPv6, type=u8, code=u8, id=u16, seq=u16, chksum=maybe16)


@st.composite
def packets(draw):
    if draw(st.booleans()):
        ip, upper = draw(ipv4s), draw(st.one_of(udps, tcps, icmps))
    else:
        ip, upper = draw(ipv6s), draw(st.one_of(udps, tcps, icmp6s))
    return ip / upper / draw(payloads)


@st.composite
def extension_chains(draw):
    """Raw IPv6 extension headers (hop-by-hop, destination options, routing with no segments
    left, AH) ending in UDP: (first nh, ext bytes)."""
    kinds = draw(st.lists(st.sampled_from([0, 60, 43, 51]), max_size=4))
    chain = b""
    for i, kind in enumerate(kinds):
        nxt = kinds[i + 1] if i + 1 < len(kinds) else 17
        if kind == 51:
            # AH: (len + 2) * 4 bytes; 8-aligned here
            words = draw(st.integers(1, 4))
            size = 8 * words
            body = draw(st.binary(min_size=size - 2, max_size=size - 2))
            chain += bytes([nxt, size // 4 - 2]) + body
        else:
            units = draw(st.integers(0, 3))
            body = draw(st.binary(min_size=8 * units + 6, max_size=8 * units + 6))
            if kind == 43:
                body = bytes([0, 0]) + body[2:]                # type 0, segments left 0
            chain += bytes([nxt, units]) + body
    return (kinds[0] if kinds else 17), chain
