"""Socket pairs over real kernels, and the small helpers the tests share: one home for each.

Stream pairs (AF_UNIX, TCP/IPv4, TCP/IPv6), UDP and non-blocking AF_UNIX pairs, csock.aio
framed pairs, a recv_batch helper for the datagram tests, a call a signal lands on, the
process's descriptor count, where a view's memory lies, a call's outcome to set beside the
stdlib's, IPv6 address fields and receive buffers to try.
"""
from __future__ import annotations

import contextlib
import fcntl
import functools
import operator
import os
import signal
import socket as stdlib_socket
import struct
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import csock
import csock.aio

STREAM_FAMILIES = ["unix", "tcp4", "tcp6"]
LOOPBACK = {"v4": (csock.AF_INET, "127.0.0.1"), "v6": (csock.AF_INET6, "::1")}


def tcp_pair(family: int = csock.AF_INET) -> tuple[csock.StreamSocket, csock.StreamSocket]:
    """A connected TCP pair over loopback: (client, the accepted socket); blocking."""
    host = "127.0.0.1" if family == csock.AF_INET else "::1"
    with csock.create_server((host, 0), family=family) as listener:
        client = csock.create_connection(listener.getsockname()[:2])
        accepted, _ = listener.accept()
    return client, accepted


@contextlib.contextmanager
def stream_pair(kind: str) -> Iterator[tuple[csock.StreamSocket, csock.StreamSocket]]:
    """A connected stream pair of one of STREAM_FAMILIES, closed on exit."""
    if kind == "unix":
        a, b = csock.socketpair()
    else:
        family = csock.AF_INET if kind == "tcp4" else csock.AF_INET6
        if family == csock.AF_INET6 and not stdlib_socket.has_ipv6:
            pytest.skip("no IPv6 on this machine")
        a, b = tcp_pair(family)
    try:
        yield a, b
    finally:
        a.close()
        b.close()


def udp_pair(kind: str = "v4", *, blocking: bool = True) -> tuple[Any, Any]:
    """Two UDP sockets bound on loopback ("v4" or "v6"): (tx, rx), with 16 MiB of send and
    receive buffer so bursts are not dropped. Blocking ones time out after 5 s on receive."""
    family, host = LOOPBACK[kind]
    rx = csock.socket(family, csock.SOCK_DGRAM)
    rx.bind((host, 0))
    rx.setsockopt(csock.SOL_SOCKET, csock.SO_RCVBUF, 16 << 20)
    tx = csock.socket(family, csock.SOCK_DGRAM)
    tx.bind((host, 0))
    tx.setsockopt(csock.SOL_SOCKET, csock.SO_SNDBUF, 16 << 20)
    if blocking:
        rx.settimeout(5)
    else:
        tx.setblocking(False)
        rx.setblocking(False)
    return tx, rx


def nonblocking_pair(kind: int) -> tuple[Any, Any]:
    """A non-blocking AF_UNIX socketpair of kind (SOCK_DGRAM, SOCK_SEQPACKET or SOCK_STREAM)."""
    a, b = csock.socketpair(csock.AF_UNIX, kind)
    a.setblocking(False)
    b.setblocking(False)
    return a, b


def framed_pair(**kw: Any) -> tuple[csock.aio.FramedStream, csock.aio.FramedStream]:
    """Two csock.aio.FramedStream over an AF_UNIX stream socketpair; kw goes to both."""
    a, b = csock.socketpair()
    return csock.aio.FramedStream(a, **kw), csock.aio.FramedStream(b, **kw)


def indexed_payload(i: int) -> bytes:
    """Message i: its index, then i % 200 bytes of i's low byte (sizes vary, each distinct)."""
    return struct.pack("!I", i) + bytes([i & 0xFF]) * (i % 200)


def receive(rx: Any, n: int, **kwargs: Any) -> list[csock.Datagram]:
    """recv_batch until n datagrams have come (each call must return at least one)."""
    got: list[csock.Datagram] = []
    while len(got) < n:
        batch = rx.recv_batch(**kwargs)
        assert batch
        got.extend(batch)
    return got


def call_as_a_signal_lands(call: Callable[[], Any]) -> Any:
    """call() (a C callable: a functools.partial of a csock method) with SIGALRM delivered
    but its Python handler not yet run when it starts, as when a signal lands while C code
    runs: a C function keeps the interpreter busy while the timer fires, and call follows it
    with no bytecode between. The handler runs inside call (its exception then comes from
    call) or, at the latest, right after call returns, before its result is used."""
    busy = functools.partial(sum, range(5_000_000))          # ~50 ms: the 2 ms timer fires
    signal.setitimer(signal.ITIMER_REAL, 0.002)
    try:
        return list(map(operator.methodcaller("__call__"), [busy, call]))[1]
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)


def fd_count() -> int:
    """Open descriptors, less eventfds (csock makes one per process, on first need, to wake
    calls that close() interrupts, and keeps it)."""
    count = 0
    for name in os.listdir("/proc/self/fd"):
        try:
            count += os.readlink(f"/proc/self/fd/{name}") != "anon_inode:[eventfd]"
        except OSError:
            pass                                # the listing's own descriptor, gone
    return count


def address_of(view: Any) -> int:
    """Where the memory behind a bytes-like object starts (to tell reused memory from new)."""
    import numpy  # here, not at the top: the soak driver imports this module and needs none

    return int(numpy.frombuffer(view, dtype=numpy.uint8).ctypes.data)


class Index:
    """An integer only through __index__ (value may be anything, to make __index__ fail)."""

    def __init__(self, value: Any) -> None:
        self.value = value

    def __index__(self) -> Any:
        return self.value

    def __repr__(self) -> str:
        return f"Index({self.value!r})"


# (flowinfo[, scope_id]) of IPv6 addresses, as the stdlib's "I" reads them: any __index__
# integer wrapped modulo 2**32 (flowinfo then at most 0xFFFFF), never a float or a str.
IPV6_FIELDS = [(1.5,), (0, 7.9), (1.0,), (0, 2.0), ("1",), (None,), (0, b"1"),
               (Index(3),), (0, Index(2**32 + 1)), (Index(-1),), (Index(1.5),), (True, True),
               (-1,), (0xFFFFF,), (0x100000,), (2**32,), (2**32 + 5,), (2**100,), (-2**32,),
               (0, -1), (0, 2**32), (0, 2**64 + 1), (0, -2**40), (0, 2**200 + 7)]


def _released() -> memoryview:
    view = memoryview(bytearray(8))
    view.release()
    return view


# Buffers a receive cannot write into (each call makes a new one), by name.
BAD_RECEIVE_BUFFERS = {"released view": _released, "bytes": lambda: b"abc", "empty bytes": bytes,
                       "None": lambda: None, "str": lambda: "abc",
                       "read-only view": lambda: memoryview(bytearray(8)).toreadonly(),
                       "strided view": lambda: memoryview(bytearray(8))[::2]}


def outcome(call: Any) -> str:
    """What a call did, to compare a csock call with the stdlib's: "ok", or the exception's
    type and message (less the stdlib's "sendto(): " prefix)."""
    try:
        call()
    except Exception as error:
        return f"{type(error).__name__}: {str(error).removeprefix('sendto(): ')}"
    return "ok"


def outcome_of(call: Any) -> tuple[threading.Thread, list[Any]]:
    """Run call in a thread; the thread and a list that gets its result or exception."""
    box: list[Any] = []

    def run() -> None:
        try:
            box.append(call())
        except BaseException as error:       # noqa: BLE001 - the outcome is the assertion
            box.append(error)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, box


def recv_all(sock: Any, n: int) -> bytes:
    """Up to n bytes from a stream socket: fewer only at end of stream."""
    got = bytearray()
    while len(got) < n:
        chunk = sock.recv(n - len(got))
        if not chunk:
            break
        got += chunk
    return bytes(got)


CLOSERS = ["loop thread", "another thread"]


def close_from(closer: str, sock: Any) -> None:
    """sock.close() here (in the loop's thread, for csock.aio's tests) or, for "another
    thread", in a thread of its own, waited for."""
    if closer == "loop thread":
        sock.close()
    else:
        closing = threading.Thread(target=sock.close)
        closing.start()
        closing.join()


def take_number(number: int, *socks: Any) -> list[Any]:
    """socks, the first of them moved onto fd number (free) unless one of them has it, which
    then comes first."""
    ordered = sorted(socks, key=lambda sock: sock.fileno() != number)
    first = ordered[0]
    if first.fileno() != number:
        with first:
            moved = fcntl.fcntl(first.fileno(), fcntl.F_DUPFD, number)  # the lowest >= it
        assert moved == number
        ordered[0] = csock.socket(fileno=moved)
    return ordered
