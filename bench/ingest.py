"""udp-ingest-64: one receiver drains INGEST_SOCKETS bound UDP sockets at once.

The sender (bench/c/udp_ingest.c, the same C program for every row, so that the receiver is
what is measured) sends 64-byte datagrams round-robin: datagram i, stamped with its sequence
number i, goes to socket i % INGEST_SOCKETS. The receiver returns a credit (8 bytes: how many
datagrams it has received) at least every CREDIT_EVERY datagrams on a datagram socketpair, and
the sender keeps at most WINDOW datagrams beyond the last credit, so no socket is overrun; its
first credit (0) says it is ready. Losses are counted, not hidden; a second of silence ends a
run.

Each round the receiver takes what every socket has queued, then checks each datagram (its
length, its socket, its sequence increasing per socket); when a round finds nothing it sleeps
in epoll on all the sockets. The rows differ in how a round reads:

- ``csock-uring``: ``Ring.recv_many(socks)``, one ``io_uring_enter`` for all 64 (a ring of
  4096 provided buffers of 256 bytes: the default ring's 64 KiB buffers would hold one
  datagram each);
- ``csock``: ``recv_batch`` (recvmmsg) on each socket in turn;
- ``stdlib-naive``: ``recv`` on each socket until it would block;
- ``c``: recvmmsg on each socket in turn (the reference).
"""
from __future__ import annotations

import json
import select
import socket as stdlib
import sys
import time
from collections.abc import Callable
from typing import Any

import csock

from .workers import SEQ, DataMismatch

SIZE = 64                # bytes per datagram
CREDIT_EVERY = 1024      # the receiver returns a credit at least this often (as udp_ingest.c)
SILENCE = 1.0            # seconds without a datagram that end a run
BATCH = 1024             # recv_batch's max_messages (as the C program's recvmmsg)

Round = Callable[[], list[list[Any]]]       # one round: each socket's datagrams' payloads


class Tally:
    """The receiver's bookkeeping: per-socket sequence checks, the count, credits, the clock."""

    def __init__(self, sockets: int, credit: stdlib.socket) -> None:
        self.next = list(range(sockets))     # the smallest sequence number each may carry next
        self.sockets = sockets
        self.received = self.credited = 0
        self.first = self.last = 0.0
        self.credit = credit

    def take(self, index: int, payloads: list[Any]) -> None:
        following = self.next[index]
        unpack = SEQ.unpack_from
        for data in payloads:
            if len(data) != SIZE:
                raise DataMismatch(f"socket {index}: a datagram of {len(data)} bytes, not {SIZE}")
            (seq,) = unpack(data)
            if seq < following or seq % self.sockets != index:
                raise DataMismatch(f"socket {index}: expected a sequence number of at least "
                                   f"{following}, {index} modulo {self.sockets}, got {seq}")
            following = seq + self.sockets
        self.next[index] = following
        self.received += len(payloads)

    def credit_if_due(self, n: int) -> None:
        if self.received - self.credited >= CREDIT_EVERY or self.received == n:
            self.credit.send(SEQ.pack(self.received))
            self.credited = self.received


def receive(socks: list[Any], credit: stdlib.socket, n: int, round_: Round) -> tuple[float, int]:
    """Rounds until n datagrams arrived or SILENCE passed without one: (elapsed from the first
    round that found datagrams to the last, datagrams received)."""
    tally = Tally(len(socks), credit)
    waiter = select.epoll()
    for sock in socks:
        waiter.register(sock.fileno(), select.EPOLLIN)
    credit.send(SEQ.pack(0))                    # ready
    started = time.monotonic()
    try:
        while tally.received < n:
            got = round_()
            if any(got):
                tally.last = time.perf_counter()
                if not tally.first:
                    tally.first = tally.last
                for index, payloads in enumerate(got):
                    if payloads:
                        tally.take(index, payloads)
                del got                         # views go back to their pool before the wait
                tally.credit_if_due(n)
                continue
            if not waiter.poll(SILENCE):
                if tally.received:
                    break                       # silence: the rest was lost
                if time.monotonic() - started > 60:
                    raise DataMismatch("nothing arrived in 60 s")
    finally:
        waiter.close()
    if not tally.received:
        raise DataMismatch("nothing arrived")
    return tally.last - tally.first, tally.received


def uring_round(socks: list[Any]) -> Round:
    import csock.uring

    ring = csock.uring.Ring(256, 4096, 256)

    def round_() -> list[list[Any]]:
        return [[view for view, _ in got] for got in ring.recv_many(socks)]

    return round_


def batch_round(socks: list[Any]) -> Round:
    def drain(sock: Any) -> list[Any]:
        try:
            return [d.data for d in sock.recv_batch(BATCH, SIZE + 1)]
        except BlockingIOError:
            return []

    return lambda: [drain(sock) for sock in socks]


def naive_round(socks: list[Any]) -> Round:
    def drain(sock: Any) -> list[bytes]:
        got = []
        while True:
            try:
                got.append(sock.recv(2048))
            except BlockingIOError:
                return got

    return lambda: [drain(sock) for sock in socks]


ROUNDS = {"csock-uring": uring_round, "csock": batch_round, "stdlib-naive": naive_round}


def main(workload: str, impl: str, n: int, where: str) -> int:
    """The receiver (the sender is always the C program): prints the result line."""
    fds, credit_fd = where.split(":")
    module = stdlib if impl == "stdlib-naive" else csock
    socks = [module.socket(fileno=int(fd)) for fd in fds.split(",")]
    for sock in socks:
        sock.setblocking(False)
    credit = stdlib.socket(fileno=int(credit_fd))
    try:
        elapsed, received = receive(socks, credit, n, ROUNDS[impl](socks))
    except DataMismatch as error:
        print(f"DATA MISMATCH in {workload}/{impl} (server): {error}", file=sys.stderr)
        return 1
    print(json.dumps({"elapsed": elapsed, "count": n, "received": received}), flush=True)
    return 0
