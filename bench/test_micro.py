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


DRAIN_SOCKETS, DRAIN_EACH = 64, 16      # udp-ingest-64's phase: 16 datagrams on each of 64


@pytest.fixture
def queued_udp():
    """DRAIN_SOCKETS bound csock UDP sockets and a function that queues DRAIN_EACH 64-byte
    datagrams on each (the setup of every timed drain, not timed)."""
    receivers = [csock.socket(csock.AF_INET, csock.SOCK_DGRAM) for _ in range(DRAIN_SOCKETS)]
    sender = stdlib.socket(stdlib.AF_INET, stdlib.SOCK_DGRAM)
    for sock in receivers:
        sock.setsockopt(csock.SOL_SOCKET, csock.SO_RCVBUF, 1 << 20)
        sock.bind(("127.0.0.1", 0))
        sock.setblocking(False)
    addresses = [sock.getsockname() for sock in receivers]

    def queue():
        for _ in range(DRAIN_EACH):
            for address in addresses:
                sender.sendto(b"d" * 64, address)

    yield receivers, queue
    for sock in [*receivers, sender]:
        sock.close()


def drain_all(receive_round):
    got = 0
    while got < DRAIN_SOCKETS * DRAIN_EACH:
        got += receive_round()
    return got


@pytest.mark.parametrize("how", ["recv_many", "recv_batch"])
def test_drain_64_udp_sockets(benchmark, queued_udp, how):
    """Ring.recv_many (one io_uring_enter) against recv_batch (recvmmsg) on each socket in turn,
    per drain of 1,024 queued datagrams (docs/uring.md compares them)."""
    receivers, queue = queued_udp
    if how == "recv_many":
        uring = pytest.importorskip("csock.uring")
        if not uring.available():
            pytest.skip("io_uring is not available here")
        from bench.ingest import ingest_ring

        ring = ingest_ring()                # (as the udp-ingest-64 row's)

        def receive_round():
            return sum(map(len, ring.recv_many(receivers)))
    else:
        def each(sock):
            try:
                return len(sock.recv_batch(1024, 65))
            except BlockingIOError:
                return 0

        def receive_round():
            return sum(map(each, receivers))

    total = benchmark.pedantic(drain_all, args=(receive_round,), setup=queue, rounds=300)
    assert total == DRAIN_SOCKETS * DRAIN_EACH
