"""The Python sides of every benchmark workload, one function per (workload, implementation).

Each runs in its own process (bench/side.py), gets a connected socket, moves `n` units,
verifies every sequence number, and returns the seconds its measured part took. A data
mismatch raises DataMismatch, which the worker turns into exit status 1.
"""
from __future__ import annotations

import operator
import socket as stdlib
import struct
import sys
import time
from array import array
from collections.abc import Callable
from functools import partial
from typing import Any

import csock

PAYLOAD = 64                      # framed: payload bytes per message (sequence number first)
BATCH = 1024                      # framed: messages per send call
CHUNK = 256 * 1024                # bulk: bytes per write
PING = 32                         # ping-pong: bytes per message
# A ping-pong client restarts its clock after round trip 0, which waits for the server process
# to start (tens of ms for an interpreter: over 5000 round trips, several µs each); the C
# programs do the same, and Workload.rate counts n - 1 round trips.
DGRAM = 64                        # datagram one-way: bytes per datagram / record
CREDIT_EVERY = 256                # UDP one-way: the receiver returns a credit this often

HEADER = struct.Struct("!I")
SEQ = struct.Struct("!Q")
FRAME = struct.Struct(f"!IQ{PAYLOAD - 8}s")
FILLER = b"p" * (PAYLOAD - 8)


class DataMismatch(Exception):
    pass


def expect(what: str, expected: int, got: int) -> None:
    if expected != got:
        raise DataMismatch(f"{what}: expected {expected}, got {got}")


def payloads(n: int) -> list[bytes]:
    return [SEQ.pack(i) + FILLER for i in range(n)]


# --- framed 64-byte messages ------------------------------------------------------------------

def framed_csock_client(sock: Any, n: int) -> float:
    messages = payloads(n)                               # built before the clock starts
    stream = csock.FramedStream(sock)
    start = time.perf_counter()
    for i in range(0, n, BATCH):
        stream.send_many(messages[i:i + BATCH])
    return time.perf_counter() - start


def framed_csock_server(sock: Any, n: int) -> float:
    stream = csock.FramedStream(sock)
    unpack = SEQ.unpack_from
    expected = 0
    start = 0.0
    while expected < n:
        batch = stream.recv_many()
        if not start:
            start = time.perf_counter()
        if not batch:
            raise DataMismatch(f"end of stream after {expected} of {n} messages")
        for message in batch:                            # the user touches every message
            (seq,) = unpack(message)
            if seq != expected:
                expect("sequence", expected, seq)
            expected += 1
    return time.perf_counter() - start


def framed_naive_client(sock: stdlib.socket, n: int) -> float:
    messages = payloads(n)
    start = time.perf_counter()
    for m in messages:
        sock.sendall(HEADER.pack(len(m)) + m)
    return time.perf_counter() - start


def recv_exactly_naive(sock: stdlib.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise DataMismatch("unexpected end of stream")
        data += chunk
    return data


def framed_naive_server(sock: stdlib.socket, n: int) -> float:
    start = 0.0
    for expected in range(n):
        (length,) = HEADER.unpack(recv_exactly_naive(sock, 4))
        if not start:
            start = time.perf_counter()
        (seq,) = SEQ.unpack_from(recv_exactly_naive(sock, length))
        if seq != expected:
            expect("sequence", expected, seq)
    return time.perf_counter() - start


def framed_tuned_client(sock: stdlib.socket, n: int) -> float:
    messages = payloads(n)
    header = HEADER.pack(PAYLOAD)
    start = time.perf_counter()
    for i in range(0, n, BATCH):
        sock.sendall(b"".join(header + m for m in messages[i:i + BATCH]))
    return time.perf_counter() - start


def framed_tuned_server(sock: stdlib.socket, n: int) -> float:
    """recv_into a reused buffer and parse with unpack_from; messages are views into the
    buffer (which csock's contract forbids: they are overwritten by the next read)."""
    buf = bytearray(1 << 18)
    view = memoryview(buf)
    head, end, expected, start = 0, 0, 0, 0.0
    unpack_header, unpack_seq = HEADER.unpack_from, SEQ.unpack_from
    while expected < n:
        if head:
            buf[:end - head] = buf[head:end]
            end -= head
            head = 0
        got = sock.recv_into(view[end:])
        if not got:
            raise DataMismatch(f"end of stream after {expected} of {n} messages")
        if not start:
            start = time.perf_counter()
        end += got
        while end - head >= 4:
            (length,) = unpack_header(buf, head)
            if end - head < 4 + length:
                break
            message = view[head + 4:head + 4 + length]
            (seq,) = unpack_seq(message)
            if seq != expected:
                expect("sequence", expected, seq)
            expected += 1
            head += 4 + length
    return time.perf_counter() - start


# --- bulk -------------------------------------------------------------------------------------

def bulk_client(sock: Any, n: int) -> float:
    chunk = bytearray(b"b" * CHUNK)
    start = time.perf_counter()
    for i in range(n):
        SEQ.pack_into(chunk, 0, i)
        sock.sendall(chunk)
    return time.perf_counter() - start


def bulk_zerocopy_client(sock: Any, n: int) -> float:
    """send_buffers(zerocopy=True) from a ring of buffers; a buffer is written again only after
    flush_zerocopy() says the kernel is done with every earlier send (loopback: it copies)."""
    ring = [bytearray(b"b" * CHUNK) for _ in range(16)]
    start = time.perf_counter()
    for i in range(n):
        chunk = ring[i % len(ring)]
        if i and i % len(ring) == 0:
            sock.flush_zerocopy()
        SEQ.pack_into(chunk, 0, i)
        sock.send_buffers([chunk], zerocopy=True)
    sock.flush_zerocopy()
    return time.perf_counter() - start


def bulk_csock_server(sock: Any, n: int) -> float:
    chunk = bytearray(CHUNK)
    start = 0.0
    for i in range(n):
        sock.recv_exactly_into(chunk)
        if i == 0:
            start = time.perf_counter()                  # the clock starts at the first chunk
        (seq,) = SEQ.unpack_from(chunk)
        if seq != i:
            expect("chunk sequence", i, seq)
    return time.perf_counter() - start


def bulk_stdlib_server(sock: stdlib.socket, n: int) -> float:
    chunk = bytearray(CHUNK)
    view = memoryview(chunk)
    start = 0.0
    for i in range(n):
        got = 0
        while got < CHUNK:
            r = sock.recv_into(view[got:])
            if not r:
                raise DataMismatch("unexpected end of stream")
            got += r
        if i == 0:
            start = time.perf_counter()
        (seq,) = SEQ.unpack_from(chunk)
        if seq != i:
            expect("chunk sequence", i, seq)
    return time.perf_counter() - start


# --- ping-pong --------------------------------------------------------------------------------

def pingpong_csock_server(sock: Any, n: int) -> float:
    for _ in range(n):
        sock.sendall(sock.recv_exactly(PING))
    return 0.0


def pingpong_csock_client(sock: Any, n: int) -> float:
    message = bytearray(b"q" * PING)
    start = time.perf_counter()
    for i in range(n):
        SEQ.pack_into(message, 0, i)
        sock.sendall(message)
        (seq,) = SEQ.unpack_from(sock.recv_exactly(PING))
        if seq != i:
            expect("echo", i, seq)
        if i == 0:
            start = time.perf_counter()                  # round trip 0 is not timed (see PING)
    return time.perf_counter() - start


def pingpong_stdlib_server(sock: stdlib.socket, n: int) -> float:
    for _ in range(n):
        sock.sendall(recv_exactly_naive(sock, PING))
    return 0.0


def pingpong_stdlib_client(sock: stdlib.socket, n: int) -> float:
    message = bytearray(b"q" * PING)
    start = time.perf_counter()
    for i in range(n):
        SEQ.pack_into(message, 0, i)
        sock.sendall(message)
        (seq,) = SEQ.unpack_from(recv_exactly_naive(sock, PING))
        if seq != i:
            expect("echo", i, seq)
        if i == 0:
            start = time.perf_counter()                  # round trip 0 is not timed (see PING)
    return time.perf_counter() - start


def pingpong_tuned_server(sock: stdlib.socket, n: int) -> float:
    buf = bytearray(PING)
    view = memoryview(buf)
    for _ in range(n):
        got = 0
        while got < PING:
            r = sock.recv_into(view[got:])
            if not r:
                raise DataMismatch("unexpected end of stream")
            got += r
        sock.sendall(buf)
    return 0.0


# --- datagrams and records one way (UDP with a credit window, SOCK_SEQPACKET) -----------------
#
# UDP has no flow control: the receiver sends back a credit (8 bytes: the highest sequence
# number seen + 1) at least every CREDIT_EVERY datagrams and the sender keeps at most
# `credit_window` beyond the last credit, so the receiver is never overrun. Losses are
# counted, not hidden. The receiver's first credit (0) says it is ready, so nothing is sent
# before it has set its socket up. SOCK_SEQPACKET is reliable: the kernel paces the sender.
# The C program (bench/c/dgram_oneway.c) follows the same protocol.

def credit_window(sock: Any, size: int = DGRAM) -> int:
    """Datagrams the receive buffer holds with room to spare (a 64-byte datagram costs about
    830 bytes of buffer on loopback, and UDP releases the memory of datagrams read in steps of
    up to a quarter of rcvbuf, so only about 3/4 of it is reliably free): rcvbuf / (size +
    1.5 KiB), at most 8192. (rcvbuf / 1 KiB overran slow receivers that keep the window
    queued: the asyncio endpoint lost ~4 % of aio-udp.)"""
    rcvbuf: int = sock.getsockopt(stdlib.SOL_SOCKET, stdlib.SO_RCVBUF)
    return max(16, min(8192, rcvbuf // (size + 1536)))


def datagrams(n: int, size: int = DGRAM) -> list[bytes]:
    filler = b"p" * (size - 8)
    return [SEQ.pack(i) + filler for i in range(n)]


def counted_up_to(n: int) -> memoryview:
    """0..n-1 as the big-endian 8-byte numbers the senders stamp, in one 'Q' table."""
    numbers = array("Q", range(n))
    if sys.byteorder == "little":
        numbers.byteswap()
    return memoryview(numbers)


class Slots:
    """The one-way senders' messages, kept as the C client keeps them: BATCH slots of `size`
    bytes in one buffer, zeros after an 8-byte sequence number. Each batch copies its numbers
    from a table made up front into the first k slots (one memoryview assignment, item by item
    in C, as the C client's loop stamps them) and sends views of the slots. (A list of n
    distinct bytes objects streamed ~100 MB through the cache; packing k ints per batch cost
    ~40 ns a record: costs the C client does not have.)"""

    def __init__(self, n: int, size: int = DGRAM) -> None:
        self.buffer = bytearray(BATCH * size)
        whole = memoryview(self.buffer)
        self.views = [whole[i * size:(i + 1) * size] for i in range(BATCH)]
        self.numbers = whole.cast("Q")[:: size // 8]    # size is a multiple of 8
        self.counted = counted_up_to(n)

    def stamp(self, first: int, k: int) -> list[memoryview]:
        """Slots 0..k-1 numbered first..first+k-1."""
        self.numbers[:k] = self.counted[first:first + k]
        return self.views[:k]


class Credits:
    """The sender's side of the UDP credit window."""

    def __init__(self, sock: Any, size: int = DGRAM) -> None:
        self.sock, self.window, self.credit = sock, credit_window(sock, size), 0
        self.reliable = sock.type != stdlib.SOCK_DGRAM
        while not self.reliable:                         # the receiver's "ready" (credit 0)
            try:
                self.take(sock.recv(8))
                break
            except BlockingIOError:                      # SO_RCVTIMEO: still starting up
                continue

    def allowance(self, sent: int, want: int) -> int:
        """How many of `want` datagrams may go now; waits while the window is full."""
        if self.reliable:
            return want
        self.drain()
        while self.credit + self.window - sent <= 0:
            try:
                self.take(self.sock.recv(8))
            except BlockingIOError:                      # SO_RCVTIMEO: silence, so what
                self.credit = sent                       # is in flight was lost
            self.drain()
        return min(want, self.credit + self.window - sent)

    def drain(self) -> None:
        while True:
            try:
                self.take(self.sock.recv(8, stdlib.MSG_DONTWAIT))
            except BlockingIOError:
                return

    def take(self, message: bytes) -> None:
        if len(message) == 8:
            self.credit = max(self.credit, SEQ.unpack(message)[0])


class Receipts:
    """The receiver's side: sequence checks, loss counting, credits, the clock. The runner
    sets SO_RCVTIMEO (1 s) on UDP sockets: a receive that times out after data arrived means
    the rest was lost (BlockingIOError, with no poll() per call in any implementation)."""

    def __init__(self, sock: Any, n: int) -> None:
        self.sock, self.n = sock, n
        self.udp = sock.type == stdlib.SOCK_DGRAM
        self.next = self.received = self.credited = 0
        self.first = self.last = 0.0
        if self.udp:
            sock.send(SEQ.pack(0))                       # ready: the sender may start

    def arrived(self, seq: int) -> None:
        if seq < self.next or (not self.udp and seq != self.next):
            expect("sequence", self.next, seq)
        self.next = seq + 1
        self.received += 1

    def arrived_up_to(self, next_seq: int, count: int) -> None:
        """A batch of `count`, in increasing order, ending just before next_seq."""
        if not self.udp and next_seq - self.next != count:
            raise DataMismatch(f"records {self.next}..{next_seq} arrived as {count}")
        self.next = next_seq
        self.received += count

    def after_batch(self) -> None:
        self.last = time.perf_counter()
        if not self.first:
            self.first = self.last
        if self.udp and (self.received - self.credited >= CREDIT_EVERY or self.next == self.n):
            self.sock.send(SEQ.pack(self.next))
            self.credited = self.received

    def result(self) -> tuple[float, int]:
        return self.last - self.first, self.received


def oneway_csock_client(sock: Any, n: int, size: int = DGRAM, offload: bool = False) -> float:
    """send_batch per credit-sized batch; with offload, UDP GSO (segment_size="auto")."""
    slots = Slots(n, size)
    credits = Credits(sock, size)
    segment_size = "auto" if offload else None
    start = time.perf_counter()
    sent = 0
    while sent < n:
        k = credits.allowance(sent, min(BATCH, n - sent))
        sent += sock.send_batch(slots.stamp(sent, k), segment_size=segment_size)
    return time.perf_counter() - start


def oneway_csock_server(sock: Any, n: int, size: int = DGRAM,
                        offload: bool = False) -> tuple[float, int]:
    """recv_batch per wake-up; with offload, UDP GRO splits coalesced datagrams back."""
    if offload:
        sock.enable_gro()                                # before anything arrives
    receipts = Receipts(sock, n)
    unpack = SEQ.unpack_from
    while receipts.next < n:
        try:
            batch = sock.recv_batch(max_messages=BATCH, bufsize=size, gro=offload)
        except BlockingIOError:
            if receipts.received:
                break
            continue
        if not batch:
            raise DataMismatch(f"end of stream after {receipts.next} of {n} records")
        first = receipts.next
        for d in batch:                                  # the user touches every datagram
            (seq,) = unpack(d.data)
            if seq < first:
                expect("sequence", first, seq)
            first = seq + 1
        receipts.arrived_up_to(first, len(batch))
        receipts.after_batch()
    return receipts.result()


def oneway_csock_into_server(sock: Any, n: int, size: int = DGRAM) -> tuple[float, int]:
    """recv_batch_into one buffer, no object per datagram, checked a batch at a time as numpy
    would, with the stdlib: the sequence numbers that start the slots, seen as one strided 'Q'
    view of the buffer, compare (memoryview ==, item by item in C) with a table of the numbers
    expected, made before the first record. A batch after a loss (UDP) is unpacked instead."""
    expected = counted_up_to(n)                          # before the UDP receiver says ready
    receipts = Receipts(sock, n)
    buf = bytearray(BATCH * size)
    numbers = memoryview(buf).cast("Q")[:: size // 8]    # size is a multiple of 8
    columns: dict[int, struct.Struct] = {}
    while receipts.next < n:
        try:
            lengths = sock.recv_batch_into(buf, size)
        except BlockingIOError:
            if receipts.received:
                break
            continue
        if not lengths:
            raise DataMismatch(f"end of stream after {receipts.next} of {n} records")
        k = len(lengths)
        if lengths.count(size) != k:
            raise DataMismatch(f"a datagram of other than {size} bytes in {lengths}")
        first = receipts.next
        if numbers[:k] == expected[first:first + k]:
            receipts.arrived_up_to(first + k, k)
        else:
            column = columns.get(k) or columns.setdefault(k,
                                                          struct.Struct(">" + f"Q{size - 8}x" * k))
            seqs = column.unpack_from(buf)
            if seqs[0] < first or not all(map(operator.lt, seqs, seqs[1:])):
                raise DataMismatch(f"sequence numbers out of order after {first}: {seqs}")
            receipts.arrived_up_to(seqs[-1] + 1, k)
        receipts.after_batch()
    return receipts.result()


def oneway_stdlib_client(sock: stdlib.socket, n: int, size: int = DGRAM) -> float:
    slots = Slots(n, size)
    credits = Credits(sock, size)
    send = sock.send
    start = time.perf_counter()
    sent = 0
    while sent < n:
        k = credits.allowance(sent, min(CREDIT_EVERY, n - sent))
        for m in slots.stamp(sent, k):
            send(m)
        sent += k
    return time.perf_counter() - start


def oneway_stdlib_server(sock: stdlib.socket, n: int, size: int = DGRAM) -> tuple[float, int]:
    receipts = Receipts(sock, n)
    buf = bytearray(size)
    recv_into, unpack = sock.recv_into, SEQ.unpack_from
    while receipts.next < n:
        try:
            for _ in range(min(CREDIT_EVERY, n - receipts.next)):
                if not recv_into(buf):
                    raise DataMismatch(f"end of stream after {receipts.next} of {n} records")
                receipts.arrived(unpack(buf)[0])
                if receipts.next == n:
                    break
        except BlockingIOError:
            if receipts.received:
                break
            continue
        receipts.after_batch()
    return receipts.result()


# --- datagram / record ping-pong ---------------------------------------------------------------

def dgram_pingpong_server(sock: Any, n: int) -> float:
    recv, send = sock.recv, sock.send
    for _ in range(n):
        send(recv(PING))
    return 0.0


def dgram_pingpong_client(sock: Any, n: int) -> float:
    message = bytearray(b"q" * PING)
    recv, send = sock.recv, sock.send
    start = time.perf_counter()
    for i in range(n):
        SEQ.pack_into(message, 0, i)
        send(message)
        (seq,) = SEQ.unpack_from(recv(PING))
        if seq != i:
            expect("echo", i, seq)
        if i == 0:
            start = time.perf_counter()                  # round trip 0 is not timed (see PING)
    return time.perf_counter() - start


# --- ping-pong with busy polling ----------------------------------------------------------------

SPIN_US = 1000                    # spin_us for the *-spin ping-pongs: longer than a round trip


def spinning(side: Callable[[Any, int], float]) -> Callable[[Any, int], float]:
    """The same side with csock's spin_us set: poll without sleeping before each wait."""
    def run(sock: Any, n: int) -> float:
        sock.spin_us = SPIN_US
        return side(sock, n)
    return run


# (workload, implementation) -> (socket module, server side, client side)
Side = Callable[[Any, int], Any]   # seconds, or (seconds, units received) for lossy workloads
WORKERS: dict[tuple[str, str], tuple[Any, Side, Side]] = {
    ("framed", "csock"): (csock, framed_csock_server, framed_csock_client),
    ("framed", "stdlib-naive"): (stdlib, framed_naive_server, framed_naive_client),
    ("framed", "stdlib-tuned"): (stdlib, framed_tuned_server, framed_tuned_client),
    ("bulk", "csock"): (csock, bulk_csock_server, bulk_client),
    ("bulk", "stdlib-naive"): (stdlib, bulk_stdlib_server, bulk_client),
    ("bulk-zerocopy", "csock"): (csock, bulk_csock_server, bulk_zerocopy_client),
    ("bulk-zerocopy", "stdlib-naive"): (stdlib, bulk_stdlib_server, bulk_client),
    ("pingpong", "csock"): (csock, pingpong_csock_server, pingpong_csock_client),
    ("pingpong", "stdlib-naive"): (stdlib, pingpong_stdlib_server, pingpong_stdlib_client),
    ("pingpong", "stdlib-tuned"): (stdlib, pingpong_tuned_server, pingpong_stdlib_client),
    ("udp", "csock"): (csock, oneway_csock_server, oneway_csock_client),
    ("udp", "csock-into"): (csock, oneway_csock_into_server, oneway_csock_client),
    ("udp", "stdlib-naive"): (stdlib, oneway_stdlib_server, oneway_stdlib_client),
    ("seqpacket", "csock"): (csock, oneway_csock_server, oneway_csock_client),
    ("seqpacket", "csock-into"): (csock, oneway_csock_into_server, oneway_csock_client),
    ("seqpacket", "stdlib-naive"): (stdlib, oneway_stdlib_server, oneway_stdlib_client),
    ("udp-pingpong", "csock"): (csock, dgram_pingpong_server, dgram_pingpong_client),
    ("udp-pingpong", "stdlib-naive"): (stdlib, dgram_pingpong_server, dgram_pingpong_client),
    ("seqpacket-pingpong", "csock"): (csock, dgram_pingpong_server, dgram_pingpong_client),
    ("seqpacket-pingpong", "stdlib-naive"): (stdlib, dgram_pingpong_server, dgram_pingpong_client),
    ("pingpong-spin", "csock"): (csock, spinning(pingpong_csock_server),
                                 spinning(pingpong_csock_client)),
    ("pingpong-spin", "stdlib-naive"): (stdlib, pingpong_stdlib_server, pingpong_stdlib_client),
    **{(f"{kind}-pingpong-spin", "csock"): (csock, spinning(dgram_pingpong_server),
                                            spinning(dgram_pingpong_client))
       for kind in ("udp", "seqpacket")},
    **{(f"{kind}-pingpong-spin", "stdlib-naive"): (stdlib, dgram_pingpong_server,
                                                   dgram_pingpong_client)
       for kind in ("udp", "seqpacket")},
    **{(f"udp-gso-{size}", "csock"): (csock, partial(oneway_csock_server, size=size, offload=True),
                                       partial(oneway_csock_client, size=size, offload=True))
       for size in (64, 1200)},
    **{(f"udp-gso-{size}", "stdlib-naive"): (stdlib, partial(oneway_stdlib_server, size=size),
                                              partial(oneway_stdlib_client, size=size))
       for size in (64, 1200)},
}
