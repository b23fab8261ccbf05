"""Connected csock stream socket pairs over real kernels (AF_UNIX, TCP/IPv4, TCP/IPv6), a
recv_batch helper for the datagram tests, and where a view's memory lies."""
from __future__ import annotations

import contextlib
import socket as stdlib_socket
from collections.abc import Iterator
from typing import Any

import numpy
import pytest

import csock

STREAM_FAMILIES = ["unix", "tcp4", "tcp6"]


@contextlib.contextmanager
def stream_pair(kind: str) -> Iterator[tuple[csock.StreamSocket, csock.StreamSocket]]:
    if kind == "unix":
        a, b = csock.socketpair()
    else:
        family, host = (csock.AF_INET, "127.0.0.1") if kind == "tcp4" else (csock.AF_INET6, "::1")
        if family == csock.AF_INET6 and not stdlib_socket.has_ipv6:
            pytest.skip("no IPv6 on this machine")
        with csock.create_server((host, 0), family=family) as server:
            a = csock.create_connection(server.getsockname()[:2])
            b, _ = server.accept()
    try:
        yield a, b
    finally:
        a.close()
        b.close()


def receive(rx: Any, n: int, **kwargs: Any) -> list[csock.Datagram]:
    """recv_batch until n datagrams have come (each call must return at least one)."""
    got: list[csock.Datagram] = []
    while len(got) < n:
        batch = rx.recv_batch(**kwargs)
        assert batch
        got.extend(batch)
    return got


def address_of(view: Any) -> int:
    """Where the memory behind a bytes-like object starts (to tell reused memory from new)."""
    return int(numpy.frombuffer(view, dtype=numpy.uint8).ctypes.data)
