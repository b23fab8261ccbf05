"""The Python sides of every benchmark workload, one function per (workload, implementation).

Each runs in its own process (csock._bench.worker), gets a connected socket, moves `n` units,
verifies every sequence number, and returns the seconds its measured part took. A data
mismatch raises DataMismatch, which the worker turns into exit status 1.
"""
from __future__ import annotations

import socket as stdlib
import struct
import time
from collections.abc import Callable
from typing import Any

import csock

PAYLOAD = 64                      # framed: payload bytes per message (sequence number first)
BATCH = 1024                      # framed: messages per send call
CHUNK = 256 * 1024                # bulk: bytes per write
PING = 32                         # ping-pong: bytes per message

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


# (workload, implementation) -> (socket module, server side, client side)
Side = Callable[[Any, int], float]
WORKERS: dict[tuple[str, str], tuple[Any, Side, Side]] = {
    ("framed", "csock"): (csock, framed_csock_server, framed_csock_client),
    ("framed", "stdlib-naive"): (stdlib, framed_naive_server, framed_naive_client),
    ("framed", "stdlib-tuned"): (stdlib, framed_tuned_server, framed_tuned_client),
    ("bulk", "csock"): (csock, bulk_csock_server, bulk_client),
    ("bulk", "stdlib-naive"): (stdlib, bulk_stdlib_server, bulk_client),
    ("pingpong", "csock"): (csock, pingpong_csock_server, pingpong_csock_client),
    ("pingpong", "stdlib-naive"): (stdlib, pingpong_stdlib_server, pingpong_stdlib_client),
    ("pingpong", "stdlib-tuned"): (stdlib, pingpong_tuned_server, pingpong_stdlib_client),
}
