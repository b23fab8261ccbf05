"""``python -m csock ping HOST [-c COUNT] [-i INTERVAL] [-W TIMEOUT]``: ICMP echo over a raw
socket, requests built and replies parsed with csock.packet (IPv4 and IPv6).

Prints one line per reply and the usual summary. Exit status: 0 when replies came, 1 when
none did, 2 on bad usage, an unknown host or missing privilege (CAP_NET_RAW)."""
from __future__ import annotations

import argparse
import os
import socket as _std
import statistics
import struct
import sys
import time
from dataclasses import dataclass, field
from typing import Any, TextIO

PAYLOAD = 56                         # bytes after the ICMP header, as ping(8): 64 in all
STAMP = struct.Struct("!d")          # the send time, first in the payload


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("host", help="name or address to ping")
    parser.add_argument("-c", dest="count", type=positive_int, default=None,
                        help="stop after COUNT replies are due (default: until interrupted)")
    parser.add_argument("-i", dest="interval", type=positive_float, default=1.0,
                        help="seconds between requests (default 1)")
    parser.add_argument("-W", dest="timeout", type=positive_float, default=2.0,
                        help="seconds to wait for the last reply (default 2)")
    family = parser.add_mutually_exclusive_group()
    family.add_argument("-4", dest="family", action="store_const", const=_std.AF_INET, help="IPv4 only")
    family.add_argument("-6", dest="family", action="store_const", const=_std.AF_INET6, help="IPv6 only")


def positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer: {text}")
    return value


def positive_float(text: str) -> float:
    value = float(text)
    if not value > 0 or value != value or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds: {text}")
    return value


@dataclass
class Tally:
    sent: int = 0
    rtts: list[float] = field(default_factory=list)
    seen: set[int] = field(default_factory=set)

    def summary(self, host: str, elapsed: float) -> list[str]:
        received = len(self.rtts)
        loss = 100.0 * (self.sent - received) / self.sent if self.sent else 0.0
        lines = [f"--- {host} ping statistics ---",
                 f"{self.sent} packets transmitted, {received} received, {loss:.0f}% packet loss, "
                 f"time {elapsed * 1000:.0f}ms"]
        if self.rtts:
            ms = [r * 1000 for r in self.rtts]
            lines.append(f"rtt min/avg/max/mdev = {min(ms):.3f}/{statistics.fmean(ms):.3f}/"
                         f"{max(ms):.3f}/{statistics.pstdev(ms):.3f} ms")
        return lines


class Pinger:
    """One echo session: requests numbered from 1 under this process's identifier."""

    def __init__(self, family: int, address: str) -> None:
        from . import packet
        from .raw import RawSocket

        self.packet = packet
        self.family, self.address = family, address
        self.v6 = family == _std.AF_INET6
        proto = _std.IPPROTO_ICMPV6 if self.v6 else _std.IPPROTO_ICMP
        self.sock = RawSocket(family, proto)
        self.ident = os.getpid() & 0xFFFF

    def request(self, seq: int) -> Any:
        payload = STAMP.pack(time.perf_counter()) + bytes(range(PAYLOAD - STAMP.size))
        if self.v6:
            # the kernel computes the ICMPv6 checksum on raw ICMPv6 sockets (it knows the source)
            return self.packet.ICMPv6(type=self.packet.ICMPV6_ECHO_REQUEST, id=self.ident, seq=seq,
                                      chksum=0) / payload
        return self.packet.ICMP(type=self.packet.ICMP_ECHO_REQUEST, id=self.ident, seq=seq) / payload

    def send(self, seq: int) -> None:
        self.sock.send_packet(self.request(seq), (self.address, 0))

    def replies(self, deadline: float) -> list[tuple[Any, str, int | None, int, float]]:
        """Echo replies for this session until deadline: (ICMP layer, from, ttl, seq, rtt)."""
        pk = self.packet
        found: list[tuple[Any, str, int | None, int, float]] = []
        while True:
            left = deadline - time.perf_counter()
            if left <= 0:
                return found
            self.sock.settimeout(left)
            try:
                packets = self.sock.recv_packets(max_messages=64)
            except TimeoutError:
                return found
            except pk.PacketError:
                continue                           # not ours to judge: skip what will not parse
            now = time.perf_counter()
            for p in packets:
                reply = self.match(p)
                if reply is not None:
                    icmp, source, ttl = reply
                    (stamp,) = STAMP.unpack_from(icmp.payload)
                    found.append((icmp, source, ttl, icmp.seq, now - stamp))
            if found:
                return found

    def match(self, p: Any) -> tuple[Any, str, int | None] | None:
        pk = self.packet
        if self.v6:
            if isinstance(p, pk.ICMPv6) and p.type == pk.ICMPV6_ECHO_REPLY and p.id == self.ident:
                return p, self.address, None
            return None
        if pk.ICMP in p:
            icmp = p[pk.ICMP]
            if icmp.type == pk.ICMP_ECHO_REPLY and icmp.id == self.ident and len(icmp.payload) >= STAMP.size:
                return icmp, p.src, p.ttl
        return None


def resolve(host: str, family: int | None) -> tuple[int, str]:
    infos = _std.getaddrinfo(host, None, family or 0, _std.SOCK_RAW)
    infos.sort(key=lambda info: info[0] != _std.AF_INET)     # IPv4 first, as ping(8)
    chosen, _, _, _, sockaddr = infos[0]
    return int(chosen), str(sockaddr[0])


def ping(args: argparse.Namespace, out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
    try:
        family, address = resolve(args.host, args.family)
    except _std.gaierror as error:
        print(f"ping: {args.host}: {error.strerror}", file=err)
        return 2
    try:
        pinger = Pinger(family, address)
    except PermissionError as error:
        print(f"ping: {error}", file=err)
        return 2
    tally = Tally()
    print(f"PING {args.host} ({address}) {PAYLOAD}({PAYLOAD + (48 if pinger.v6 else 28)}) bytes of data.",
          file=out, flush=True)
    start = time.perf_counter()
    seq = 0
    try:
        with pinger.sock:
            while args.count is None or seq < args.count:
                seq += 1
                pinger.send(seq)
                tally.sent += 1
                last = args.count is not None and seq == args.count
                deadline = time.perf_counter() + (args.timeout if last else args.interval)
                while True:
                    for icmp, source, ttl, reply_seq, rtt in pinger.replies(deadline):
                        if reply_seq in tally.seen:
                            continue                   # a duplicate reply is not counted twice
                        tally.seen.add(reply_seq)
                        tally.rtts.append(rtt)
                        hops = f" ttl={ttl}" if ttl is not None else ""
                        print(f"{len(icmp)} bytes from {source}: icmp_seq={reply_seq}{hops} time={rtt * 1000:.3f} ms",
                              file=out, flush=True)
                    if time.perf_counter() >= deadline or (last and len(tally.seen) == tally.sent):
                        break
    except KeyboardInterrupt:
        pass
    print("", file=out)
    for line in tally.summary(args.host, time.perf_counter() - start):
        print(line, file=out)
    return 0 if tally.rtts else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m csock ping", description=__doc__)
    add_arguments(parser)
    return ping(parser.parse_args(argv))
