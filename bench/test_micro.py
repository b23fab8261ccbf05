"""pytest-benchmark micro-benchmarks of the hot calls, csock beside the stdlib, same process.

    python -m pytest bench -q            (not part of the default test run)
"""
from __future__ import annotations

import socket as stdlib

import pytest

import csock

MODULES = {"csock": csock, "stdlib": stdlib}


@pytest.fixture(params=list(MODULES))
def pair(request):
    a, b = MODULES[request.param].socketpair()
    yield a, b
    a.close()
    b.close()


def test_send_recv_64(benchmark, pair):
    a, b = pair
    data = b"x" * 64

    def roundtrip():
        a.send(data)
        return b.recv(64)

    assert benchmark(roundtrip) == data


def test_send_recv_into_64(benchmark, pair):
    a, b = pair
    data, buf = b"x" * 64, bytearray(64)

    def roundtrip():
        a.send(data)
        return b.recv_into(buf)

    assert benchmark(roundtrip) == 64


def test_send_recv_64_while_another_socket_spins(benchmark):
    """A socket with spin_us elsewhere in the process must not slow the others (their spin
    setting is read from a slot, not looked up by name)."""
    a, b = csock.socketpair()
    spinner, other = csock.socketpair()
    spinner.spin_us = 50
    data = b"x" * 64

    def roundtrip():
        a.send(data)
        return b.recv(64)

    try:
        assert benchmark(roundtrip) == data
    finally:
        for s in (a, b, spinner, other):
            s.close()


def test_sendall_recv_with_timeout(benchmark, pair):
    a, b = pair
    a.settimeout(5)
    b.settimeout(5)
    data = b"y" * 512

    def roundtrip():
        a.sendall(data)
        return b.recv(512)

    assert benchmark(roundtrip) == data


def test_send_buffers_16_parts(benchmark):
    a, b = csock.socketpair()
    parts = [b"z" * 32] * 16
    buf = bytearray(512)

    def roundtrip():
        a.send_buffers(parts)
        b.recv_exactly_into(buf)

    with a, b:
        benchmark(roundtrip)
        assert buf == b"z" * 512


def test_stdlib_sendmsg_16_parts(benchmark):
    a, b = stdlib.socketpair()
    parts = [b"z" * 32] * 16
    buf = bytearray(512)

    def roundtrip():
        a.sendmsg(parts)
        b.recv_into(buf)

    with a, b:
        benchmark(roundtrip)


def test_framed_send_many_recv_many_64x64(benchmark):
    a, b = csock.socketpair()
    fa, fb = csock.FramedStream(a), csock.FramedStream(b)
    batch = [b"m" * 64] * 64

    def roundtrip():
        fa.send_many(batch)
        got = 0
        while got < 64:
            got += len(fb.recv_many())
        return got

    with a, b:
        assert benchmark(roundtrip) == 64
