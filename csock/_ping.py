"""``python -m csock ping HOST [-c COUNT] [-i INTERVAL] [-W TIMEOUT]``: ICMP echo over a raw
socket, requests built and replies parsed with csock.packet (IPv4 and IPv6).

Prints one line per reply and the usual summary. Exit status: 0 when replies came, 1 when
none did, 2 on bad usage, an unknown host or missing privilege (CAP_NET_RAW)."""
from __future__ import annotations

import argparse
import math
import os
import struct
import sys
import time
from dataclasses import dataclass, field
from typing import Any, TextIO

from ._stdlib import socket as _std

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
    family.add_argument("-4", dest="family", action="store_const",
                        const=_std.AF_INET, help="IPv4 only")
    family.add_argument("-6", dest="family", action="store_const",
                        const=_std.AF_INET6, help="IPv6 only")


def positive_int(text: str) -> int:
    """argparse type for -c: a whole number of at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive integer, not {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, not {text}")
    return value


# The longest -i or -W: a timeout or sleep beyond time_t's range in nanoseconds overflows.
MAX_SECONDS = 10**9


def positive_float(text: str) -> float:
    """argparse type for -i and -W: a number of seconds above 0, at most MAX_SECONDS."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"must be a positive number of seconds, not {text!r}"
        ) from None
    if not value > 0 or value != value or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, not {text}")
    if value > MAX_SECONDS:
        raise argparse.ArgumentTypeError(
            f"must be a positive number of seconds up to {MAX_SECONDS}, not {text}")
    return value


VALUED = ("-c", "-i", "-W")


def attach_values(argv: list[str]) -> list[str]:
    """"-c -1" as "-c-1": with -4 and -6 defined, argparse takes "-1" for an option and says
    "expected one argument"; attached, the value reaches the type check and its message."""
    out: list[str] = []
    i = 0
    while i < len(argv):
        if (
            argv[i] in VALUED
            and i + 1 < len(argv)
            and argv[i + 1].startswith("-")
            and argv[i + 1] not in ("-4", "-6")
        ):
            out.append(argv[i] + argv[i + 1])
            i += 2
        else:
            out.append(argv[i])
            i += 1
    return out


@dataclass
class Tally:
    """What a session sent and got back, in constant space (a ping may run for ever): running
    round-trip sums, as iputils keeps, and the wire sequence numbers answered since each was
    last sent."""

    sent: int = 0
    errors: int = 0                     # sends the kernel refused (no route, say)
    received: int = 0
    duplicates: int = 0
    rtt_sum: float = 0.0
    rtt_squares: float = 0.0
    rtt_min: float = float("inf")
    rtt_max: float = 0.0
    seen: set[int] = field(default_factory=set)

    def sending(self, wire_seq: int) -> None:
        """A request goes out under wire_seq: a reply to it is new, even after a wrap."""
        self.sent += 1
        self.seen.discard(wire_seq)

    def reply(self, wire_seq: int, rtt: float) -> bool:
        """Count a reply; False for a duplicate (already answered since it was sent), whose
        round trip counts in the statistics too, as iputils'."""
        new = wire_seq not in self.seen
        if new:
            self.seen.add(wire_seq)
            self.received += 1
        else:
            self.duplicates += 1
        self.rtt_sum += rtt
        self.rtt_squares += rtt * rtt
        self.rtt_min = min(self.rtt_min, rtt)
        self.rtt_max = max(self.rtt_max, rtt)
        return new

    def summary(self, host: str, elapsed: float) -> list[str]:
        """iputils' summary lines: its fields, its formats (%g for the loss)."""
        loss = 100.0 * (self.sent - self.received) / self.sent if self.sent else 0.0
        duplicates = f" +{self.duplicates} duplicates," if self.duplicates else ""
        errors = f" +{self.errors} errors," if self.errors else ""
        lines = [f"--- {host} ping statistics ---",
                 f"{self.sent} packets transmitted, {self.received} received,{duplicates}"
                 f"{errors} {loss:g}% packet loss, time {elapsed * 1000:.0f}ms"]
        replies = self.received + self.duplicates
        if self.received:
            mean = self.rtt_sum / replies
            deviation = math.sqrt(max(self.rtt_squares / replies - mean * mean, 0.0))
            lines.append(f"rtt min/avg/max/mdev = {self.rtt_min * 1000:.3f}/{mean * 1000:.3f}/"
                         f"{self.rtt_max * 1000:.3f}/{deviation * 1000:.3f} ms")
        return lines


# ICMP's sequence field is 16 bits: request n goes out as n modulo 2**16, as iputils'
SEQ_MASK = 0xFFFF


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
        if self.v6:
            # each reply's hop limit arrives as IPV6_HOPLIMIT ancillary data (no IP header here)
            self.sock.setsockopt(_std.IPPROTO_IPV6, _std.IPV6_RECVHOPLIMIT, 1)
        self.ident = os.getpid() & 0xFFFF

    def request(self, seq: int) -> Any:
        payload = STAMP.pack(time.perf_counter()) + bytes(range(PAYLOAD - STAMP.size))
        if self.v6:
            # the kernel computes the ICMPv6 checksum on raw ICMPv6 sockets (it knows the source)
            return self.packet.ICMPv6(type=self.packet.ICMPV6_ECHO_REQUEST, id=self.ident, seq=seq,
                                      chksum=0) / payload
        return (
            self.packet.ICMP(type=self.packet.ICMP_ECHO_REQUEST, id=self.ident, seq=seq) / payload
        )

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
                received = self.receive_v6() if self.v6 else self.receive_v4()
            except TimeoutError:
                return found
            except pk.PacketError:
                continue                           # not ours to judge: skip what will not parse
            now = time.perf_counter()
            for icmp, source, ttl in received:
                (stamp,) = STAMP.unpack_from(icmp.payload)
                found.append((icmp, source, ttl, icmp.seq, now - stamp))
            if found:
                return found

    def receive_v4(self) -> list[tuple[Any, str, int | None]]:
        """Our echo replies among the queued packets (one recvmmsg): IPv4 has the TTL in its
        header."""
        replies = (self.match(p) for p in self.sock.recv_packets(max_messages=64))
        return [reply for reply in replies if reply is not None]

    def receive_v6(self) -> list[tuple[Any, str, int | None]]:
        """One ICMPv6 message (recvmsg, for its IPV6_HOPLIMIT ancillary data), if it is our
        reply."""
        pk = self.packet
        data, ancillary, _, sender = self.sock.recvmsg(65535, _std.CMSG_SPACE(4))
        hop_limit = next((int.from_bytes(cdata[:4], sys.byteorder)
                          for level, kind, cdata in ancillary
                          if level == _std.IPPROTO_IPV6 and kind == _std.IPV6_HOPLIMIT), None)
        p = pk.parse(data, first="icmpv6")
        if (isinstance(p, pk.ICMPv6) and p.type == pk.ICMPV6_ECHO_REPLY and p.id == self.ident
                and len(p.payload) >= STAMP.size):
            return [(p, str(sender[0]), hop_limit)]
        return []

    def match(self, p: Any) -> tuple[Any, str, int | None] | None:
        """(ICMP layer, source, TTL) if p is an IPv4 echo reply to this session."""
        pk = self.packet
        if pk.ICMP in p:
            icmp = p[pk.ICMP]
            if (
                icmp.type == pk.ICMP_ECHO_REPLY
                and icmp.id == self.ident
                and len(icmp.payload) >= STAMP.size
            ):
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
    print(f"PING {args.host} ({address}) {PAYLOAD}({PAYLOAD + (48 if pinger.v6 else 28)}) "
          "bytes of data.", file=out, flush=True)
    start = time.perf_counter()
    seq = 0
    try:
        with pinger.sock:
            while args.count is None or seq < args.count:
                seq += 1
                tally.sending(seq & SEQ_MASK)
                last = args.count is not None and seq == args.count
                try:
                    pinger.send(seq & SEQ_MASK)
                except OSError as error:        # as iputils: say so, go on, count it
                    print(f"ping: sendmsg: {error.strerror}", file=err, flush=True)
                    tally.errors += 1
                    if not last:
                        time.sleep(args.interval)
                    continue
                deadline = time.perf_counter() + (args.timeout if last else args.interval)
                while True:
                    for icmp, source, ttl, reply_seq, rtt in pinger.replies(deadline):
                        duplicate = "" if tally.reply(reply_seq, rtt) else " (DUP!)"
                        # as iputils: ttl= for IPv4, hlim= (the hop limit) for IPv6
                        hops = "" if ttl is None else f" {'hlim' if pinger.v6 else 'ttl'}={ttl}"
                        print(f"{len(icmp)} bytes from {source}: icmp_seq={reply_seq}{hops} "
                              f"time={rtt * 1000:.3f} ms{duplicate}", file=out, flush=True)
                    if time.perf_counter() >= deadline or (last and tally.received == tally.sent):
                        break
    except KeyboardInterrupt:
        pass
    print("", file=out)
    for line in tally.summary(args.host, time.perf_counter() - start):
        print(line, file=out)
    return 0 if tally.received else 1


def main(argv: list[str] | None = None) -> int:
    """python -m csock ping: its own parser, so a usage error prints ping's usage."""
    parser = argparse.ArgumentParser(prog="python -m csock ping", description=__doc__)
    add_arguments(parser)
    argv = sys.argv[1:] if argv is None else list(argv)
    return ping(parser.parse_args(attach_values(argv)))
