"""The benchmark workloads: what each moves, how its rate is read, its targets.

A workload is run once per implementation per round, as two processes (server and client)
on two CPUs, with a count sized so that the measured side's window lasts at least a second
(runner.sized_run): count_full and count_quick are only where that sizing starts. Python
implementations are in workers.py; the C one is bench/c/<c_program>.c.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .workers import CHUNK


@dataclass(frozen=True)
class Target:
    """The issue's minimum for one row: its rate over the reference's (and, on the echo rows,
    the reference's server CPU per message over its own) at least `minimum`."""
    ref: str
    minimum: float
    row: str = "csock"


@dataclass(frozen=True)
class Workload:
    name: str
    title: str
    count_full: int
    count_quick: int
    measured: str                       # the side whose elapsed time is the figure
    unit: str                           # how rates are shown: "msg/s", "GB/s" or "us/rt"
    bytes_per_count: int = 0            # for GB/s
    c_program: str | None = None
    # "tcp" (listener + port), "udp" or "seqpacket" (a connected pair), "raw" (raw sockets and a
    # credit side channel; needs CAP_NET_RAW), "inproc" (one process, in memory) or "tcp-many"
    # (a port: the servers bind it with SO_REUSEPORT, the client opens many connections)
    transport: str = "tcp"
    c_args: tuple[str, ...] = ()        # extra arguments for the C program
    c_variants: tuple[str, ...] = ()    # more C rows: "c-gso" runs it with "gso" appended
    implementations: tuple[str, ...] = ("csock", "stdlib-naive", "stdlib-tuned")
    # (reference implementation, the minimum row/reference rate ratio the issue asks for[, row]):
    # the row judged is "csock" unless a third item names another (such as "csock-uring")
    targets: tuple[tuple[Any, ...], ...] = field(default=())
    pinned: bool = True                 # server and client each on its own CPU
    c_client: bool = False              # every row's client is the C program (a fast sender)

    def goals(self) -> list[Target]:
        """The targets, each with the row it judges."""
        return [Target(*target) for target in self.targets]

    def rate(self, count: int, elapsed: float) -> float:
        """Units per second (higher is better, for every unit); count is what arrived.
        Receivers start their clock at the first unit that arrives, and ping-pong clients
        after the first round trip (see workers.PING), so that unit is not counted."""
        timed = count - 1 if self.measured == "server" or self.unit == "us/rt" else count
        return max(timed, 1) / max(elapsed, 1e-6)

    def show(self, rate: float) -> str:
        if self.unit == "GB/s":
            return f"{rate * self.bytes_per_count / 1e9:.2f} GB/s"
        if self.unit == "us/rt":
            return f"{1e6 / rate:.1f} µs/rt"
        if rate < 100_000:
            return f"{rate / 1e3:.1f}k msg/s"
        return f"{rate / 1e6:.2f}M msg/s"


DATAGRAM_IMPLS = ("csock", "stdlib-naive")
# one way also with recv_batch_into: no object per datagram, each batch checked at once
ONEWAY_IMPLS = ("csock", "csock-into", "stdlib-naive")
PACKET_IMPLS = ("csock", "stdlib-tuned", "dpkt", "scapy")
# csock.aio on uvloop, csock.aio on the default loop, the loops' own streams / endpoints
AIO_IMPLS = ("csock", "csock-asyncio", "uvloop", "asyncio")
# csock.aio on uvloop with the server's engine named: io_uring, then readiness (epoll); the
# csock rows' client is the same in all of them (csock.aio, default engine), see bench/aio.py
ENGINE_IMPLS = ("csock-uring", "csock-epoll")
# the io_uring rows: csock-uring ≥ 1.0× csock-epoll ("not slower on uring than on epoll")
NOT_SLOWER = ("csock-epoll", 1.0, "csock-uring")
INGEST_SOCKETS = 64        # udp-ingest-64: bound UDP sockets the receiver drains


def scale_workload(processes: int) -> Workload:
    """The framed echo with csock.aio on uvloop, the server in 1..processes processes sharing
    one port (SO_REUSEPORT); nothing pinned, so the kernel spreads them over the CPUs."""
    return Workload("aio-scale", f"aio framed echo, 100 conns, server in 1..{processes} procs",
                    100_000, 20_000, "client", "msg/s", transport="tcp-many",
                    implementations=tuple(f"csock-x{k}" for k in range(1, processes + 1)),
                    pinned=False)


WORKLOADS = [
    Workload("framed", "framed 64 B messages, TCP loopback", 1_000_000, 100_000, "server", "msg/s",
             c_program="framed", targets=(("c", 0.10), ("stdlib-tuned", 2.0))),
    Workload("bulk", "TCP bulk, 256 KiB writes", 8192, 1024, "server", "GB/s",
             bytes_per_count=CHUNK, c_program="bulk", implementations=("csock", "stdlib-naive"),
             targets=(("c", 0.95),)),
    Workload("bulk-zerocopy", "TCP bulk, 256 KiB writes, MSG_ZEROCOPY", 8192, 1024, "server",
             "GB/s",
             bytes_per_count=CHUNK, c_program="bulk", implementations=("csock", "stdlib-naive")),
    Workload("pingpong", "TCP ping-pong, 32 B", 20_000, 5_000, "client", "us/rt",
             c_program="pingpong", targets=(("c", 0.97),)),
    Workload("udp", "UDP one way, 64 B, credit window", 300_000, 60_000, "server", "msg/s",
             c_program="dgram_oneway", transport="udp", implementations=ONEWAY_IMPLS,
             targets=(("c", 1.0),)),
    Workload("seqpacket", "SEQPACKET one way, 64 B", 1_000_000, 200_000, "server", "msg/s",
             c_program="dgram_oneway", transport="seqpacket", implementations=ONEWAY_IMPLS,
             targets=(("c", 0.95),)),
    Workload("udp-pingpong", "UDP ping-pong, 32 B", 20_000, 5_000, "client", "us/rt",
             c_program="dgram_pingpong", transport="udp", implementations=DATAGRAM_IMPLS,
             targets=(("c", 0.97),)),
    Workload("seqpacket-pingpong", "SEQPACKET ping-pong, 32 B", 20_000, 5_000, "client", "us/rt",
             c_program="dgram_pingpong", transport="seqpacket", implementations=DATAGRAM_IMPLS,
             targets=(("c", 0.97),)),
    *[Workload(f"udp-gso-{size}", f"UDP one way, {size} B, GSO+GRO", 300_000, 60_000, "server",
               "msg/s", c_program="dgram_oneway", transport="udp", implementations=DATAGRAM_IMPLS,
               c_args=(str(size),), c_variants=("c-gso",), targets=(("c", 3.0),))
      for size in (64, 1200)],
    Workload("pingpong-spin", "TCP ping-pong, 32 B, spinning", 20_000, 5_000, "client", "us/rt",
             c_program="pingpong", c_args=("spin",), implementations=DATAGRAM_IMPLS,
             targets=(("c", 0.8),)),
    *[Workload(f"{kind}-pingpong-spin", f"{kind.upper()} ping-pong, 32 B, spinning", 20_000, 5_000,
               "client", "us/rt", c_program="dgram_pingpong", transport=kind, c_args=("spin",),
               implementations=DATAGRAM_IMPLS, targets=(("c", 0.8),))
      for kind in ("udp", "seqpacket")],
    Workload("packet-parse", "parse IPv4+UDP 92 B, all fields, verify", 1_000_000, 200_000,
             "server",
             "msg/s", c_program="packet", transport="inproc", implementations=PACKET_IMPLS,
             targets=(("stdlib-tuned", 1.5), ("dpkt", 20.0))),
    Workload("packet-build", "build IPv4+UDP 92 B, both checksums", 1_000_000, 200_000, "server",
             "msg/s", c_program="packet", transport="inproc", implementations=PACKET_IMPLS,
             targets=(("stdlib-tuned", 1.5), ("dpkt", 20.0))),
    Workload("raw", "SOCK_RAW IPv4+UDP, build+send, recv+parse", 100_000, 20_000, "server",
             "msg/s", c_program="raw_e2e", transport="raw",
             implementations=("csock", "stdlib-tuned"),
             targets=(("c", 0.8),)),
    Workload("aio-echo", "aio framed echo 64 B, 100 conns, bursts of 100", 100_000, 20_000,
             "client", "msg/s", transport="tcp-many", implementations=(*AIO_IMPLS, *ENGINE_IMPLS),
             targets=(("uvloop", 3.0),)),
    Workload("aio-echo-pingpong", "aio framed echo 64 B, 100 conns, ping-pong", 100_000,
             20_000, "client", "msg/s", transport="tcp-many",
             implementations=(*AIO_IMPLS, *ENGINE_IMPLS), targets=(NOT_SLOWER,)),
    Workload("aio-udp", "aio UDP one way, 64 B, credit window", 300_000, 60_000, "server",
             "msg/s", c_program="dgram_oneway", transport="udp",
             implementations=(*AIO_IMPLS, "csock-plain", *ENGINE_IMPLS),
             targets=(("uvloop", 2.0), NOT_SLOWER)),
    scale_workload(2),
    # issue 18's targets for the io_uring engine (csock-uring); the C row is bench/c/uring_echo.c
    Workload("aio-echo-1k", "aio framed echo 64 B, 1000 conns × 100, accepted in window",
             200_000, 100_000, "client", "msg/s", transport="tcp-many", c_program="uring_echo",
             implementations=(*ENGINE_IMPLS, "uvloop"),
             targets=(("uvloop", 3.0, "csock-uring"), ("csock-epoll", 2.0, "csock-uring"))),
    Workload("aio-reqresp-1k", "aio framed echo 64 B, 1000 conns, one in flight each",
             100_000, 20_000, "client", "msg/s", transport="tcp-many", c_program="uring_echo",
             implementations=(*ENGINE_IMPLS, "uvloop"),
             targets=(("uvloop", 1.5, "csock-uring"), NOT_SLOWER)),
    Workload("aio-pingpong-1", "aio framed echo 64 B, 1 conn, ping-pong", 20_000, 5_000,
             "client", "msg/s", transport="tcp-many", implementations=(*ENGINE_IMPLS, "uvloop"),
             targets=(NOT_SLOWER,)),
    Workload("aio-stream-1", "aio framed echo 64 B, 1 conn, bursts of 100", 100_000, 20_000,
             "client", "msg/s", transport="tcp-many", implementations=(*ENGINE_IMPLS, "uvloop"),
             targets=(NOT_SLOWER,)),
    Workload("aio-bulk-1", "aio framed echo 64 KiB, 1 conn, bursts of 16", 20_000, 4_000,
             "client", "msg/s", transport="tcp-many", implementations=(*ENGINE_IMPLS, "uvloop"),
             targets=(NOT_SLOWER,)),
    Workload("udp-ingest-64", f"UDP ingest 64 B from {INGEST_SOCKETS} sockets, C sender",
             1_000_000, 200_000, "server", "msg/s", c_program="udp_ingest",
             transport="udp-many", c_client=True,
             implementations=("csock-uring", "csock", "stdlib-naive"),
             targets=(("c", 1.0, "csock-uring"),)),
]

BY_NAME = {w.name: w for w in WORKLOADS}
