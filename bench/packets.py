"""The packet workloads: csock.packet beside a tuned stdlib version, dpkt and scapy.

parse: a 92-byte IPv4+UDP packet (20 + 8 + 64 bytes) parsed with every header field read
from Python, the addresses as str, the payload taken and the IPv4 header checksum checked.
The tuned stdlib version is one precompiled Struct for both headers, inet_ntoa, and the
checksum via int.from_bytes(...) % 0xFFFF. build: the same packet from str addresses and
ports, lengths and both checksums (IPv4 header; UDP with the pseudo-header) computed.
raw: build+send through SOCK_RAW / IP_HDRINCL to 127.0.0.1, receive and parse on a raw UDP
socket (bench/c/raw_e2e.c does the same in C, with the same credit window).

dpkt and scapy are far slower: they process `n // SLOW_DIVISOR` packets and report how many.
"""
from __future__ import annotations

import socket as stdlib
import struct
import time
from typing import Any

SRC, DST, SPORT, DPORT = "10.1.2.3", "192.168.200.7", 40000, 5353
PAYLOAD = bytes(range(64))
SLOW_DIVISOR = {"dpkt": 10, "scapy": 200}

HEADERS = struct.Struct("!BBHHHBBH4s4sHHHH")        # IPv4 (no options) + UDP
IPH = struct.Struct("!BBHHHBBH4s4s")
UDPH = struct.Struct("!HHHH")
PSEUDO = struct.Struct("!4s4sBBH")
SEQ = struct.Struct("!Q")


def sample() -> bytes:
    from csock.packet import UDP, IPv4

    return bytes(IPv4(src=SRC, dst=DST, id=1) / UDP(sport=SPORT, dport=DPORT) / PAYLOAD)


def stdlib_build(src: str, dst: str, sport: int, dport: int,
                 payload: bytes, ident: int = 1) -> bytes:
    s, d = stdlib.inet_aton(src), stdlib.inet_aton(dst)
    ulen = 8 + len(payload)
    header = IPH.pack(0x45, 0, 20 + ulen, ident, 0, 64, 17, 0, s, d)
    check = 0xFFFF - int.from_bytes(header, "big") % 0xFFFF
    udp = UDPH.pack(sport, dport, ulen, 0) + payload
    body = PSEUDO.pack(s, d, 0, 17, ulen) + udp
    if len(body) & 1:
        body += b"\0"
    ucheck = (0xFFFF - int.from_bytes(body, "big") % 0xFFFF) or 0xFFFF
    return (
        header[:10]
        + check.to_bytes(2, "big")
        + header[12:]
        + udp[:6]
        + ucheck.to_bytes(2, "big")
        + payload
    )


# --- parse ------------------------------------------------------------------------------------

def parse_csock(packets: list[bytes]) -> int:
    from csock.packet import parse

    for data in packets:
        p: Any = parse(data, "ipv4", True)               # verify=True: the checksums too
        p.version; p.ihl; p.tos; p.len; p.id; p.flags; p.frag; p.ttl; p.proto; p.chksum  # noqa: B018
        p.src; p.dst  # noqa: B018
        u = p.payload
        u.sport; u.dport; u.len; u.chksum; u.payload  # noqa: B018
    return len(packets)


def parse_stdlib(packets: list[bytes]) -> int:
    unpack, ntoa, from_bytes = HEADERS.unpack_from, stdlib.inet_ntoa, int.from_bytes
    for data in packets:
        (vihl, tos, length, ident, fragment, ttl, proto, check, src, dst,
         sport, dport, ulen, ucheck) = unpack(data)
        version, ihl, flags, frag = vihl >> 4, vihl & 15, fragment >> 13, fragment & 0x1FFF
        src, dst = ntoa(src), ntoa(dst)
        if from_bytes(data[:20], "big") % 0xFFFF:
            raise ValueError("bad IPv4 checksum")
        payload = data[28:20 + ulen]
    return len(packets)


def parse_dpkt(packets: list[bytes]) -> int:
    import dpkt  # type: ignore[import-untyped]

    ip_class, ntoa = dpkt.ip.IP, stdlib.inet_ntoa
    for data in packets:
        ip = ip_class(data)                              # dpkt checks nothing: sum read only
        ip.v; ip.hl; ip.tos; ip.len; ip.id; ip.df; ip.mf; ip.offset; ip.ttl; ip.p; ip.sum  # noqa: B018
        ntoa(ip.src); ntoa(ip.dst)
        u = ip.data
        u.sport; u.dport; u.ulen; u.sum; u.data  # noqa: B018
    return len(packets)


def parse_scapy(packets: list[bytes]) -> int:
    from scapy.layers.inet import IP

    for data in packets:
        ip = IP(data)
        ip.version; ip.ihl; ip.tos; ip.len; ip.id; ip.flags; ip.frag; ip.ttl; ip.proto; ip.chksum  # noqa: B018
        ip.src; ip.dst  # noqa: B018
        u = ip.payload
        u.sport; u.dport; u.len; u.chksum; bytes(u.payload)  # noqa: B018
    return len(packets)


# --- build ------------------------------------------------------------------------------------

def build_csock(n: int) -> int:
    from csock.packet import UDP, IPv4

    for i in range(n):
        bytes(IPv4(src=SRC, dst=DST, id=1) / UDP(sport=SPORT, dport=DPORT + (i & 1)) / PAYLOAD)
    return n


def build_stdlib(n: int) -> int:
    for i in range(n):
        stdlib_build(SRC, DST, SPORT, DPORT + (i & 1), PAYLOAD)
    return n


def build_dpkt(n: int) -> int:
    import dpkt

    ip_class, udp_class, aton = dpkt.ip.IP, dpkt.udp.UDP, stdlib.inet_aton
    for i in range(n):
        ip = ip_class(src=aton(SRC), dst=aton(DST), p=17, ttl=64, id=1,
                      data=udp_class(sport=SPORT, dport=DPORT + (i & 1), data=PAYLOAD))
        ip.data.ulen = 8 + len(PAYLOAD)
        ip.len = 20 + ip.data.ulen
        bytes(ip)
    return n


def build_scapy(n: int) -> int:
    from scapy.layers.inet import IP, UDP

    for i in range(n):
        bytes(IP(src=SRC, dst=DST, id=1) / UDP(sport=SPORT, dport=DPORT + (i & 1)) / PAYLOAD)
    return n


def in_memory(workload: str, impl: str, n: int) -> tuple[float, int]:
    """Run one in-memory workload: (seconds, packets processed)."""
    count = max(1, n // SLOW_DIVISOR.get(impl, 1))
    if workload == "packet-parse":
        packets = [sample()] * count
        fn: Any = {"csock": parse_csock, "stdlib-tuned": parse_stdlib, "dpkt": parse_dpkt,
                   "scapy": parse_scapy}[impl]
        start = time.perf_counter()
        done = fn(packets)
    else:
        fn = {"csock": build_csock, "stdlib-tuned": build_stdlib, "dpkt": build_dpkt,
              "scapy": build_scapy}[impl]
        start = time.perf_counter()
        done = fn(count)
    return time.perf_counter() - start, done


# --- raw end to end ---------------------------------------------------------------------------
# The same protocol as bench/c/raw_e2e.c: credits over an AF_UNIX datagram side channel.

WINDOW = 4096
CREDIT_EVERY = 256
BATCH = 1024
FILLER = b"p" * 56


def raw_client(impl: str, n: int, port: int, side: stdlib.socket) -> float:
    import csock
    from csock.packet import UDP, IPv4

    credit = SEQ.unpack(side.recv(8))[0]                 # the server's raw socket exists
    start = time.perf_counter()
    if impl == "csock":
        out: Any = csock.RawSocket()
    else:
        out = stdlib.socket(stdlib.AF_INET, stdlib.SOCK_RAW, stdlib.IPPROTO_RAW)
    sent = 0
    with out:
        while sent < n:
            credit = drain_credits(side, credit)
            while credit + WINDOW - sent <= 0:
                try:
                    credit = max(credit, SEQ.unpack(side.recv(8))[0])
                except BlockingIOError:                  # SO_RCVTIMEO: in flight was lost
                    credit = sent
            k = min(BATCH, n - sent, credit + WINDOW - sent)
            if impl == "csock":
                out.send_packets([IPv4(src="127.0.0.1", dst="127.0.0.1", id=1)
                                  / UDP(sport=40000, dport=port) / (SEQ.pack(i) + FILLER)
                                  for i in range(sent, sent + k)])
            else:
                for i in range(sent, sent + k):
                    out.sendto(stdlib_build("127.0.0.1", "127.0.0.1",
                                            40000, port, SEQ.pack(i) + FILLER),
                               ("127.0.0.1", 0))
            sent += k
    return time.perf_counter() - start


def drain_credits(side: stdlib.socket, credit: int) -> int:
    while True:
        try:
            credit = max(credit, SEQ.unpack(side.recv(8, stdlib.MSG_DONTWAIT))[0])
        except BlockingIOError:
            return credit


def raw_server(impl: str, n: int, port: int, side: stdlib.socket) -> tuple[float, int]:
    import csock

    if impl == "csock":
        raw: Any = csock.RawSocket(csock.AF_INET, csock.IPPROTO_UDP)
    else:
        raw = stdlib.socket(stdlib.AF_INET, stdlib.SOCK_RAW, stdlib.IPPROTO_UDP)
    raw.setsockopt(stdlib.SOL_SOCKET, stdlib.SO_RCVBUF, 8 << 20)
    raw.setsockopt(stdlib.SOL_SOCKET, stdlib.SO_RCVTIMEO, struct.pack("ll", 1, 0))
    side.send(SEQ.pack(0))                               # ready
    following, received, credited = 0, 0, 0
    first = last = 0.0
    with raw:
        while following < n:
            try:
                if impl == "csock":
                    seqs = csock_receive(raw, port)
                else:
                    seqs = stdlib_receive(raw, port)
            except BlockingIOError:
                if received:
                    break
                continue
            last = time.perf_counter()
            first = first or last
            for seq in seqs:
                if seq < following:
                    raise ValueError(f"sequence {seq} after {following}")
                following = seq + 1
            received += len(seqs)
            if received - credited >= CREDIT_EVERY or following == n:
                side.send(SEQ.pack(following))
                credited = received
    return last - first, received


def csock_receive(raw: Any, port: int) -> list[int]:
    from csock.packet import UDP, Layer, PacketError

    seqs = []
    unpack = SEQ.unpack_from
    try:
        packets = raw.recv_packets(max_messages=BATCH, bufsize=2048)
    except PacketError as error:            # someone else's packet, too big or malformed:
        # keep the rest
        packets = [p for p in getattr(error, "packets", []) if isinstance(p, Layer)]
    for p in packets:
        p.version; p.ihl; p.tos; p.len; p.id; p.flags; p.frag; p.ttl; p.chksum; p.src; p.dst  # noqa: B018
        u = p.payload
        if p.proto != 17 or not isinstance(u, UDP) or u.dport != port:
            continue                                     # other UDP traffic on the host
        u.sport; u.len; u.chksum  # noqa: B018
        seqs.append(unpack(u.payload)[0])
    return seqs


def stdlib_receive(raw: stdlib.socket, port: int,
                   buf: bytearray = bytearray(2048)) -> list[int]:  # noqa: B008 (one buffer, reused)
    got = raw.recv_into(buf)
    (vihl, tos, length, ident, fragment, ttl, proto, check, src, dst,
     sport, dport, ulen, ucheck) = HEADERS.unpack_from(buf)
    stdlib.inet_ntoa(src), stdlib.inet_ntoa(dst)
    if proto != 17 or dport != port or vihl != 0x45 or got < 36:
        return []
    return [SEQ.unpack_from(buf, 28)[0]]
