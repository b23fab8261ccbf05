"""udp-ingest-64: one receiver drains INGEST_SOCKETS bound UDP sockets at once.

The sender (bench/c/udp_ingest.c, the same C program for every row, so that the receiver is
what is measured) sends 64-byte datagrams round-robin: datagram i, stamped with its sequence
number i, goes to socket i % INGEST_SOCKETS. It works in phases, so that the receiver's
draining is timed alone (a sender and a receiver running at once on loopback would time the
sender's wake-ups of a receiver that keeps up): the sender sends PHASE datagrams (16 per
socket), then a notice on a control socketpair (8 bytes: how many it has sent); the receiver,
woken by it, starts its clock, reads every socket in rounds until all of them are there,
stops its clock and sends the notice back; then the next phase. The figure is the datagrams
over the phases' drain times summed. Losses are counted, not hidden (a round that finds
nothing while datagrams are missing waits in epoll on all the sockets; a second of silence
means they were lost).

A round reads every socket, then checks each datagram (its length, its socket, its sequence
increasing per socket). The rows differ in how a round reads:

- ``csock-uring``: ``Ring.recv_many(socks)``, one ``io_uring_enter`` for all 64 (a ring of
  4096 provided buffers of 512 bytes, room for the recvmsg header, the address and the
  control messages, ``RECVMSG_HEADROOM``, and 112 bytes of payload: the default ring's
  64 KiB buffers would hold one datagram each);
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
SILENCE = 1.0            # seconds without a datagram while some are missing: they were lost
BATCH = 1024             # recv_batch's max_messages (as the C program's recvmmsg)

Round = Callable[[], list[list[Any]]]       # one round: each socket's datagrams' payloads


class Tally:
    """The receiver's bookkeeping: per-socket sequence checks and the count."""

    def __init__(self, sockets: int) -> None:
        self.next = list(range(sockets))     # the smallest sequence number each may carry next
        self.sockets = sockets
        self.received = 0

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


def drain(tally: Tally, missing: int, round_: Round, waiter: select.epoll) -> int:
    """Rounds until `missing` more datagrams arrived (or SILENCE passed without one); how
    many of them were lost."""
    while missing > 0:
        got = round_()
        found = 0
        for index, payloads in enumerate(got):
            if payloads:
                tally.take(index, payloads)
                found += len(payloads)
        del got                                 # views go back to their pool
        missing -= found
        if not found and missing > 0 and not waiter.poll(SILENCE):
            return missing                      # silence: lost
    return 0


def receive(socks: list[Any], control: stdlib.socket, n: int, round_: Round) -> tuple[float, int]:
    """Every phase the sender announces, drained: (the drain times summed, datagrams
    received)."""
    tally = Tally(len(socks))
    waiter = select.epoll()
    for sock in socks:
        waiter.register(sock.fileno(), select.EPOLLIN)
    elapsed = 0.0
    sent = lost = 0
    control.send(SEQ.pack(0))                   # ready
    try:
        while sent < n:
            notice = control.recv(8)            # the next phase was sent
            (sent,) = SEQ.unpack(notice)
            start = time.perf_counter()
            lost += drain(tally, sent - tally.received - lost, round_, waiter)
            elapsed += time.perf_counter() - start
            control.send(notice)                # drained
    finally:
        waiter.close()
    if not tally.received:
        raise DataMismatch("nothing arrived")
    return elapsed, tally.received


def ingest_ring() -> Any:
    """The csock-uring row's ring: 4096 buffers of 512 bytes (RECVMSG_HEADROOM, then room
    for a 64-byte datagram and then some)."""
    import csock.uring

    return csock.uring.Ring(256, 4096, 512)


def uring_round(socks: list[Any]) -> Round:
    ring = ingest_ring()

    def round_() -> list[list[Any]]:
        return [[d.data for d in got] for got in ring.recv_many(socks)]

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
    fds, control_fd = where.split(":")
    module = stdlib if impl == "stdlib-naive" else csock
    socks = [module.socket(fileno=int(fd)) for fd in fds.split(",")]
    for sock in socks:
        sock.setblocking(False)
    control = stdlib.socket(fileno=int(control_fd))
    try:
        elapsed, received = receive(socks, control, n, ROUNDS[impl](socks))
    except DataMismatch as error:
        print(f"DATA MISMATCH in {workload}/{impl} (server): {error}", file=sys.stderr)
        return 1
    print(json.dumps({"elapsed": elapsed, "count": n, "received": received}), flush=True)
    return 0
