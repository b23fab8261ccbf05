"""csock.aio on the default asyncio loop and on uvloop: every test runs on both (the
``run`` fixture depends on the parametrized ``loop_kind``)."""
from __future__ import annotations

import asyncio
import errno
import logging
import os
import random
import socket as std
import struct
from typing import Any

import pytest

import csock
import csock.aio
from csock.aio import _io

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(params=["asyncio", "uvloop"])
def loop_kind(request: pytest.FixtureRequest) -> str:
    if request.param == "uvloop":
        try:
            import uvloop  # noqa: F401
        except ImportError as error:
            pytest.skip(f"uvloop is not installed ({error})")
    return str(request.param)


@pytest.fixture
def run(loop_kind: str) -> Any:
    def run(coro: Any) -> Any:
        factory = None
        if loop_kind == "uvloop":
            import uvloop
            factory = uvloop.new_event_loop
        return run_on_new_loop(coro, factory)
    return run


def run_on_new_loop(coro: Any, factory: Any = None) -> Any:
    """asyncio.Runner(loop_factory=factory).run(coro), on 3.10 too (Runner came in 3.11): a new
    loop runs coro, then the tasks left are cancelled, async generators closed, the loop closed."""
    if hasattr(asyncio, "Runner"):
        with asyncio.Runner(loop_factory=factory) as runner:
            return runner.run(coro)
    loop = (factory or asyncio.new_event_loop)()
    if factory is None:
        asyncio.set_event_loop(loop)
    try:
        return loop.run_until_complete(coro)
    finally:
        try:
            left = asyncio.all_tasks(loop)
            for task in left:
                task.cancel()
            if left:    # (an empty gather() would bind to the current loop, not this one)
                loop.run_until_complete(asyncio.gather(*left, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            if factory is None:
                asyncio.set_event_loop(None)
            loop.close()


def fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


def fd_baseline(run: Any) -> int:
    """The fd count once the loop kind's process-wide descriptors exist (libuv opens a
    signal pipe the first time a uvloop loop runs, and keeps it)."""
    run(asyncio.sleep(0))
    return fd_count()


def nb_pair(kind: int) -> tuple[Any, Any]:
    a, b = csock.socketpair(std.AF_UNIX, kind)
    a.setblocking(False)
    b.setblocking(False)
    return a, b


def udp_pair() -> tuple[Any, Any]:
    a = csock.socket(std.AF_INET, std.SOCK_DGRAM)
    b = csock.socket(std.AF_INET, std.SOCK_DGRAM)
    for s in (a, b):
        s.setsockopt(std.SOL_SOCKET, std.SO_RCVBUF, 4 * 2**20)
        s.bind(("127.0.0.1", 0))
        s.setblocking(False)
    return a, b


def payload(i: int) -> bytes:
    return struct.pack("!I", i) + bytes([i & 0xFF]) * (i % 200)


def test_loop_is_the_one_asked_for(run: Any, loop_kind: str) -> None:
    async def main() -> str:
        return type(asyncio.get_running_loop()).__module__
    module = run(main())
    assert module.startswith("uvloop") if loop_kind == "uvloop" else module.startswith("asyncio")


def test_csock_aio_reachable_from_csock() -> None:
    import subprocess
    import sys
    code = "import csock; print(csock.aio.FramedStream.__module__, csock.aio.start_framed_server.__name__)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.split() == ["csock.aio.framed", "start_framed_server"], out.stderr


# --- recv_batch / send_batch ----------------------------------------------------------------

@pytest.mark.parametrize("kind", [std.SOCK_DGRAM, std.SOCK_SEQPACKET], ids=["dgram", "seqpacket"])
def test_batches_over_socketpair_10k_in_order(run: Any, kind: int) -> None:
    count = 10_000
    messages = [payload(i) for i in range(count)]

    async def main() -> None:
        a, b = nb_pair(kind)
        received: list[bytes] = []
        wakeups = 0

        async def receiver() -> None:
            nonlocal wakeups
            while len(received) < count:
                batch = await csock.aio.recv_batch(b, max_messages=256, bufsize=1024)
                wakeups += 1
                assert batch, "no end of stream expected"
                received.extend(bytes(d.data) for d in batch)
                assert not any(d.truncated for d in batch)

        task = asyncio.create_task(receiver())
        sent = 0
        for start in range(0, count, 700):
            sent += await csock.aio.send_batch(a, messages[start:start + 700])
        assert sent == count
        await asyncio.wait_for(task, 30)
        assert received == messages
        assert wakeups < count          # batches, not one call per datagram
        assert not _io._waiting
        a.close()
        b.close()
    run(main())


def test_seqpacket_end_of_stream_is_empty_batch(run: Any) -> None:
    async def main() -> None:
        a, b = nb_pair(std.SOCK_SEQPACKET)
        assert await csock.aio.send_batch(a, [b"one", b"two"]) == 2
        a.close()
        got = []
        while True:
            batch = await csock.aio.recv_batch(b)
            if not batch:
                break
            got.extend(bytes(d.data) for d in batch)
        assert got == [b"one", b"two"]
        b.close()
    run(main())


def test_seqpacket_zero_length_records_are_not_end_of_stream(run: Any) -> None:
    async def main() -> None:
        a, b = nb_pair(std.SOCK_SEQPACKET)
        with a, b:
            assert await csock.aio.send_batch(a, [b"", b"one", b"", b"two"]) == 4
            got = []
            while len(got) < 4:
                batch = await csock.aio.recv_batch(b)
                assert batch                    # an empty record is not the end of stream
                got.extend(bytes(d.data) for d in batch)
            assert got == [b"", b"one", b"", b"two"]
            assert await csock.aio.send_batch(a, [b""]) == 1
            assert [bytes(d.data) for d in await csock.aio.recv_batch(b)] == [b""]
            a.close()
            assert await csock.aio.recv_batch(b) == []
            with pytest.raises(ValueError):
                await csock.aio.recv_batch(b, bufsize=0)
    run(main())


def test_seqpacket_transport_delivers_zero_length_records(run: Any) -> None:
    async def main() -> None:
        a, b = nb_pair(std.SOCK_SEQPACKET)
        loop = asyncio.get_running_loop()
        received: list[bytes] = []
        lost: asyncio.Future[Any] = loop.create_future()

        class Protocol(asyncio.DatagramProtocol):
            def datagram_received(self, data: bytes, addr: Any) -> None:
                received.append(data)

            def connection_lost(self, exc: Exception | None) -> None:
                lost.set_result(exc)

        with a, b:
            transport, _ = await csock.aio.create_datagram_endpoint(Protocol, sock=b)
            try:
                assert await csock.aio.send_batch(a, [b"x", b"", b"y"]) == 3
                for _ in range(200):
                    if len(received) == 3:
                        break
                    await asyncio.sleep(0.01)
                assert received == [b"x", b"", b"y"] and not lost.done()
                a.close()
                assert await asyncio.wait_for(lost, 5) is None
            finally:
                transport.abort()
    run(main())


def test_seqpacket_transport_rejects_bufsize_zero(run: Any) -> None:
    async def main() -> None:
        a, b = nb_pair(std.SOCK_SEQPACKET)
        with a, b:
            with pytest.raises(ValueError):
                transport, _ = await csock.aio.create_datagram_endpoint(asyncio.DatagramProtocol,
                                                                        sock=b, bufsize=0)
                transport.abort()
    run(main())


def test_udp_10k_with_credit_window_all_arrive(run: Any) -> None:
    count, window = 10_000, 1000
    messages = [payload(i) for i in range(count)]

    async def main() -> None:
        a, b = udp_pair()
        dest = b.getsockname()
        seen: set[bytes] = set()
        progress = asyncio.Event()

        async def receiver() -> None:
            while len(seen) < count:
                for d in await csock.aio.recv_batch(b, max_messages=512, bufsize=512):
                    assert d.address == a.getsockname()
                    seen.add(bytes(d.data))
                progress.set()

        task = asyncio.create_task(receiver())
        sent = 0
        while sent < count:
            while sent - len(seen) >= window:
                progress.clear()
                await asyncio.wait_for(progress.wait(), 10)
            chunk = messages[sent:sent + 250]
            assert await csock.aio.send_batch(a, chunk, dest) == len(chunk)
            sent += len(chunk)
        await asyncio.wait_for(task, 30)
        assert seen == set(messages)
        a.close()
        b.close()
    run(main())


def test_one_wakeup_hands_over_every_queued_datagram(run: Any) -> None:
    async def main() -> None:
        a, b = nb_pair(std.SOCK_DGRAM)
        msgs = [payload(i) for i in range(100)]
        # Queued before the await: one call returns all 100.
        assert a.send_batch(msgs) == 100
        batch = await csock.aio.recv_batch(b, max_messages=1000)
        assert [bytes(d.data) for d in batch] == msgs
        # Queued while a coroutine waits: the one wake-up returns all 100.
        task = asyncio.create_task(csock.aio.recv_batch(b, max_messages=1000))
        await asyncio.sleep(0.01)
        assert not task.done()
        assert a.send_batch(msgs) == 100
        batch = await asyncio.wait_for(task, 5)
        assert [bytes(d.data) for d in batch] == msgs
        a.close()
        b.close()
    run(main())


def test_recv_batch_cancelled_loses_nothing(run: Any) -> None:
    async def main() -> None:
        a, b = nb_pair(std.SOCK_DGRAM)
        task = asyncio.create_task(csock.aio.recv_batch(b))
        await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert not _io._waiting          # reader removed
        a.send(b"after")
        batch = await asyncio.wait_for(csock.aio.recv_batch(b), 5)
        assert [bytes(d.data) for d in batch] == [b"after"]
        a.close()
        b.close()
    run(main())


def test_recv_batch_into_waits_then_fills_the_buffer(run: Any) -> None:
    async def main() -> None:
        for kind in (std.SOCK_DGRAM, std.SOCK_SEQPACKET):
            a, b = nb_pair(kind)
            buf = bytearray(16 * 32)
            task = asyncio.create_task(csock.aio.recv_batch_into(b, buf, 16))
            await asyncio.sleep(0.01)
            assert not task.done()
            msgs = [b"%03d" % i * (1 + i % 5) for i in range(20)]
            assert a.send_batch(msgs) == 20
            lengths = await asyncio.wait_for(task, 5)
            assert lengths == [len(m) for m in msgs]
            assert [bytes(buf[i * 16:i * 16 + n]) for i, n in enumerate(lengths)] == msgs
            assert not _io._waiting
            a.close()
            b.close()
    run(main())


def test_concurrent_waiters_on_one_socket(run: Any) -> None:
    async def main() -> None:
        a, b = nb_pair(std.SOCK_DGRAM)
        tasks = [asyncio.create_task(csock.aio.recv_batch(b, max_messages=1)) for _ in range(3)]
        await asyncio.sleep(0.01)
        a.send_batch([b"1", b"2", b"3"])
        results = await asyncio.wait_for(asyncio.gather(*tasks), 5)
        assert sorted(bytes(r[0].data) for r in results) == [b"1", b"2", b"3"]
        assert not _io._waiting
        a.close()
        b.close()
    run(main())


def test_send_batch_waits_for_writability(run: Any) -> None:
    async def main() -> None:
        a, b = nb_pair(std.SOCK_DGRAM)
        msgs = [bytes(1000)] * 2000          # far more than an AF_UNIX dgram queue holds
        task = asyncio.create_task(csock.aio.send_batch(a, msgs))
        await asyncio.sleep(0.05)
        assert not task.done()
        got = 0
        while got < len(msgs):
            got += len(await csock.aio.recv_batch(b, max_messages=512, bufsize=2000))
        assert await asyncio.wait_for(task, 5) == len(msgs)
        a.close()
        b.close()
    run(main())


def test_batch_calls_need_nonblocking_socket(run: Any) -> None:
    async def main() -> None:
        a, b = csock.socketpair(std.AF_UNIX, std.SOCK_DGRAM)
        with pytest.raises(ValueError, match="non-blocking"):
            await csock.aio.recv_batch(b)
        with pytest.raises(ValueError, match="non-blocking"):
            await csock.aio.send_batch(a, [b"x"])
        a.close()
        b.close()
    run(main())


def test_send_batch_error_raises(run: Any) -> None:
    async def main() -> None:
        a, b = nb_pair(std.SOCK_DGRAM)
        b.close()
        with pytest.raises(OSError) as info:
            await csock.aio.send_batch(a, [b"x"])
        assert info.value.errno in (errno.ECONNREFUSED, errno.ENOTCONN, errno.EPIPE)
        a.close()
    run(main())


# --- datagram endpoint ----------------------------------------------------------------------

class Recorder(csock.aio.BatchDatagramProtocol):
    def __init__(self) -> None:
        self.transport: Any = None
        self.batches: list[list[Any]] = []
        self.received: list[bytes] = []
        self.errors: list[OSError] = []
        self.events: list[str] = []
        self.lost: asyncio.Future[Exception | None] = asyncio.get_running_loop().create_future()
        self.arrived = asyncio.Event()

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        self.events.append("made")

    def datagrams_received(self, datagrams: list[Any]) -> None:
        self.batches.append(datagrams)
        self.received.extend(bytes(d.data) for d in datagrams)
        self.arrived.set()

    def error_received(self, exc: OSError) -> None:
        self.errors.append(exc)
        self.arrived.set()

    def pause_writing(self) -> None:
        self.events.append("pause")

    def resume_writing(self) -> None:
        self.events.append("resume")

    def connection_lost(self, exc: Exception | None) -> None:
        self.events.append("lost")
        self.lost.set_result(exc)


class Echo(Recorder):
    def datagrams_received(self, datagrams: list[Any]) -> None:
        super().datagrams_received(datagrams)
        self.transport.send_batch([(d.data, d.address) for d in datagrams])


def test_endpoint_offload_delivers_every_datagram_in_order(run: Any) -> None:
    """offload=True: GSO on send, GRO on receive; with max_messages smaller than what one
    coalesced message carries, the rest (kept on the socket, invisible to the loop's
    readiness checks) still arrives without another datagram to wake the reader."""
    count = 2000
    msgs = [i.to_bytes(4, "big") * 16 for i in range(count)]

    async def main() -> None:
        rx_t, rx = await csock.aio.create_datagram_endpoint(
            Recorder, local_addr=("127.0.0.1", 0), max_messages=8, offload=True)
        tx_t, _ = await csock.aio.create_datagram_endpoint(
            Recorder, remote_addr=rx_t.get_extra_info("sockname"), offload=True)
        rx_t.get_extra_info("socket").setsockopt(csock.SOL_SOCKET, csock.SO_RCVBUF, 4 << 20)
        for start in range(0, count, 200):       # a window of 200 in flight
            tx_t.send_batch(msgs[start:start + 200])
            while len(rx.received) < start + 200:
                rx.arrived.clear()
                await asyncio.wait_for(rx.arrived.wait(), 10)
        assert rx.received == msgs
        assert max(len(b) for b in rx.batches) <= 8
        tx_t.close()
        rx_t.close()
    run(main())


UDP_GRO = 104          # linux/udp.h


def test_endpoint_offload_is_on_by_default_for_udp_only(run: Any, tmp_path: Any) -> None:
    """UDP endpoints receive with GRO unless offload=False; AF_UNIX endpoints are untouched
    (GRO/GSO do not apply) and still deliver."""
    async def main() -> None:
        default_t, _ = await csock.aio.create_datagram_endpoint(Recorder, local_addr=("127.0.0.1", 0))
        plain_t, _ = await csock.aio.create_datagram_endpoint(Recorder, local_addr=("127.0.0.1", 0),
                                                              offload=False)
        gro = [t.get_extra_info("socket").getsockopt(csock.SOL_UDP, UDP_GRO) for t in (default_t, plain_t)]
        assert gro == [1, 0]
        a, b = csock.socketpair(csock.AF_UNIX, csock.SOCK_DGRAM)
        unix_t, unix = await csock.aio.create_datagram_endpoint(Recorder, sock=b)
        a.send_batch([b"one", b"two"])
        while len(unix.received) < 2:
            unix.arrived.clear()
            await asyncio.wait_for(unix.arrived.wait(), 10)
        assert unix.received == [b"one", b"two"]
        for t in (default_t, plain_t, unix_t):
            t.close()
        a.close()
    run(main())


@pytest.mark.parametrize("offload", [True, False])
def test_endpoint_with_and_without_offload_sends_the_same_datagrams(run: Any, offload: bool) -> None:
    """A stdlib receiver (no GRO) gets exactly the datagrams sent, sizes and order kept, whether
    they left as GSO messages or one by one."""
    msgs = [bytes([i % 251]) * (100 if i % 7 else 37) for i in range(600)]

    async def main() -> None:
        import socket as stdlib
        rx = stdlib.socket(stdlib.AF_INET, stdlib.SOCK_DGRAM)
        rx.setsockopt(stdlib.SOL_SOCKET, stdlib.SO_RCVBUF, 4 << 20)
        rx.bind(("127.0.0.1", 0))
        rx.settimeout(5)
        tx_t, _ = await csock.aio.create_datagram_endpoint(
            Recorder, remote_addr=rx.getsockname(), offload=offload)
        tx_t.send_batch(msgs)
        got = [rx.recv(65535) for _ in msgs]
        assert got == msgs
        tx_t.close()
        rx.close()
    run(main())


def test_endpoint_echo_1000(run: Any) -> None:
    count = 1000
    msgs = [payload(i) for i in range(count)]

    async def main() -> None:
        server_t, server = await csock.aio.create_datagram_endpoint(Echo, local_addr=("127.0.0.1", 0))
        address = server_t.get_extra_info("sockname")
        assert isinstance(server_t.get_extra_info("socket"), csock.DatagramSocket)
        client_t, client = await csock.aio.create_datagram_endpoint(Recorder, remote_addr=address)
        assert client_t.get_extra_info("peername") == address
        assert client.events == ["made"]
        for start in range(0, count, 100):       # a window of 100 in flight
            for m in msgs[start:start + 100]:
                client_t.sendto(m)
            while len(client.received) < start + 100:
                client.arrived.clear()
                await asyncio.wait_for(client.arrived.wait(), 10)
        assert sorted(client.received) == sorted(msgs)
        assert sorted(server.received) == sorted(msgs)
        assert len(server.batches) < count
        client_t.close()
        server_t.close()
        assert client_t.is_closing()
        assert await client.lost is None
        assert await server.lost is None
        assert client.events[-1] == "lost" and server.events[-1] == "lost"
    run(main())


def test_endpoint_flow_control_with_blocked_receiver(run: Any) -> None:
    async def main() -> None:
        a, b = nb_pair(std.SOCK_DGRAM)
        transport, proto = await csock.aio.create_datagram_endpoint(Recorder, sock=a)
        transport.set_write_buffer_limits(high=1000)
        assert transport.get_write_buffer_limits() == (250, 1000)
        msgs = [payload(i) + bytes(100) for i in range(3000)]
        transport.send_batch(msgs)              # b reads nothing: the kernel fills up
        assert transport.get_write_buffer_size() > 1000
        assert proto.events == ["made", "pause"]
        got: list[bytes] = []
        while len(got) < len(msgs):
            got.extend(bytes(d.data) for d in await csock.aio.recv_batch(b, max_messages=512))
        assert got == msgs                       # every datagram, in order
        for _ in range(100):
            if transport.get_write_buffer_size() == 0:
                break
            await asyncio.sleep(0.01)
        assert transport.get_write_buffer_size() == 0
        assert proto.events == ["made", "pause", "resume"]
        transport.close()
        assert await proto.lost is None
        assert a.fileno() == -1
        b.close()
    run(main())


def test_endpoint_close_drains_then_abort_drops(run: Any) -> None:
    async def main() -> None:
        a, b = nb_pair(std.SOCK_DGRAM)
        transport, proto = await csock.aio.create_datagram_endpoint(Recorder, sock=a)
        msgs = [bytes(1000)] * 2000
        transport.send_batch(msgs)
        assert transport.get_write_buffer_size() > 0
        transport.close()
        with pytest.raises(RuntimeError):
            transport.sendto(b"late")
        got = 0
        while got < len(msgs):
            got += len(await csock.aio.recv_batch(b, max_messages=512, bufsize=2000))
        assert await asyncio.wait_for(proto.lost, 5) is None
        b.close()

        a, b = nb_pair(std.SOCK_DGRAM)
        transport, proto = await csock.aio.create_datagram_endpoint(Recorder, sock=a)
        transport.send_batch(msgs)
        transport.abort()
        assert transport.get_write_buffer_size() == 0
        assert await asyncio.wait_for(proto.lost, 5) is None
        b.close()
    run(main())


def test_endpoint_error_received_and_stays_open(run: Any) -> None:
    async def main() -> None:
        probe = std.socket(std.AF_INET, std.SOCK_DGRAM)
        probe.bind(("127.0.0.1", 0))
        dead = probe.getsockname()
        probe.close()
        transport, proto = await csock.aio.create_datagram_endpoint(Recorder, remote_addr=dead)
        transport.sendto(b"anyone?")
        for _ in range(3):
            if proto.errors:
                break
            proto.arrived.clear()
            try:
                await asyncio.wait_for(proto.arrived.wait(), 1)
            except asyncio.TimeoutError:
                transport.sendto(b"anyone?")
        assert proto.errors and isinstance(proto.errors[0], ConnectionRefusedError)
        assert not transport.is_closing()
        transport.close()
        await proto.lost
    run(main())


def test_endpoint_bad_address_raises_before_sending(run: Any) -> None:
    async def main() -> None:
        transport, proto = await csock.aio.create_datagram_endpoint(Recorder, local_addr=("127.0.0.1", 0))
        with pytest.raises(ValueError):
            transport.sendto(b"x")               # not connected: an address is needed
        with pytest.raises((ValueError, TypeError, OSError)):
            transport.sendto(b"x", ("999.1.1.1", 5))
        with pytest.raises(TypeError):
            transport.send_batch([object()], ("127.0.0.1", 9))  # type: ignore[list-item]
        transport.close()
        await proto.lost
    run(main())


def test_endpoint_with_plain_asyncio_protocol(run: Any) -> None:
    class Plain(asyncio.DatagramProtocol):
        def __init__(self) -> None:
            self.got: list[tuple[bytes, Any]] = []

        def datagram_received(self, data: bytes, addr: Any) -> None:
            self.got.append((data, addr))

    async def main() -> None:
        a, b = nb_pair(std.SOCK_SEQPACKET)
        transport, proto = await csock.aio.create_datagram_endpoint(Plain, sock=b)
        a.send_batch([b"r1", b"r2", b"r3"])
        for _ in range(100):
            if len(proto.got) == 3:
                break
            await asyncio.sleep(0.01)
        assert [d for d, _ in proto.got] == [b"r1", b"r2", b"r3"]
        assert all(isinstance(d, bytes) for d, _ in proto.got)
        a.close()                               # SEQPACKET end of stream: connection lost
        for _ in range(100):
            if transport.is_closing():
                break
            await asyncio.sleep(0.01)
        assert transport.is_closing()
        await asyncio.sleep(0.01)
        assert b.fileno() == -1
    run(main())


# --- FramedStream ---------------------------------------------------------------------------

def framed_pair(**kw: Any) -> tuple[csock.aio.FramedStream, csock.aio.FramedStream]:
    a, b = csock.socketpair()
    return csock.aio.FramedStream(a, **kw), csock.aio.FramedStream(b, **kw)


def tcp_pair() -> tuple[Any, Any]:
    with csock.create_server(("127.0.0.1", 0)) as listener:
        client = csock.create_connection(listener.getsockname())
        server, _ = listener.accept()
    return client, server


def test_framed_10k_random_sizes_all_views_held(run: Any) -> None:
    rng = random.Random(1234)
    sizes = [0, 65536] + [min(65536, int(65537 ** rng.random())) for _ in range(10_000 - 2)]
    messages = [rng.randbytes(n) for n in sizes]

    async def main() -> None:
        a, b = framed_pair()
        held: list[Any] = []

        async def receiver() -> None:
            while len(held) < len(messages):
                batch = await b.recv_many()
                assert batch
                held.extend(batch)

        task = asyncio.create_task(receiver())
        i = 0
        while i < len(messages):
            step = rng.choice([1, 7, 50, 300])
            if step == 1:
                await a.send(messages[i])
            else:
                await a.send_many(messages[i:i + step])
            i += step
        await a.drain()
        await asyncio.wait_for(task, 30)
        assert len(held) == len(messages)
        assert all(isinstance(m, csock.MessageView) for m in held)
        for k, (got, want) in enumerate(zip(held, messages)):
            assert bytes(got) == want, f"message {k} differs"
        a.close()
        b.close()
        await a.wait_closed()
        await b.wait_closed()
    run(main())


def test_framed_wire_format_interoperates(run: Any) -> None:
    async def main() -> None:
        raw, sock = csock.socketpair()
        stream = csock.aio.FramedStream(sock)
        await stream.send_many([b"abc", b"", b"z" * 300])
        raw.settimeout(5)
        assert raw.recv_exactly(4 + 3 + 4 + 4 + 300) == (
            b"\0\0\0\3abc" + b"\0\0\0\0" + b"\0\0\x01\x2c" + b"z" * 300)
        raw.sendall(b"\0\0\0\5hello\0\0\0\0")
        assert bytes(await stream.recv()) == b"hello"
        assert bytes(await stream.recv()) == b""
        raw.close()
        with pytest.raises(EOFError):
            await stream.recv()
        await stream.__aexit__(None, None, None)
        assert sock.fileno() == -1
    run(main())


def test_framed_cancelled_recv_mid_frame_loses_nothing(run: Any) -> None:
    async def main() -> None:
        raw, sock = csock.socketpair()
        stream = csock.aio.FramedStream(sock)
        body = bytes(range(256)) * 40
        frame = struct.pack("!I", len(body)) + body
        raw.sendall(frame[:len(frame) // 2])
        task = asyncio.create_task(stream.recv())
        await asyncio.sleep(0.02)
        assert not task.done()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        raw.sendall(frame[len(frame) // 2:] + struct.pack("!I", 2) + b"ok")
        assert bytes(await asyncio.wait_for(stream.recv(), 5)) == body
        assert [bytes(m) for m in await stream.recv_many()] == [b"ok"]
        # Cancelled while only part of the header is in.
        raw.sendall(frame[:2])
        task = asyncio.create_task(stream.recv_many())
        await asyncio.sleep(0.02)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        raw.sendall(frame[2:])
        assert [bytes(m) for m in await asyncio.wait_for(stream.recv_many(), 5)] == [body]
        raw.close()
        stream.close()
        await stream.wait_closed()
    run(main())


def test_framed_peer_reset_during_recv_many(run: Any) -> None:
    async def main() -> None:
        client, server = tcp_pair()
        stream = csock.aio.FramedStream(server)
        task = asyncio.create_task(stream.recv_many())
        await asyncio.sleep(0.02)
        client.setsockopt(std.SOL_SOCKET, std.SO_LINGER, struct.pack("ii", 1, 0))
        client.close()                          # RST
        with pytest.raises(ConnectionResetError):
            await asyncio.wait_for(task, 5)
        stream.close()
        await stream.wait_closed()
    run(main())


@pytest.mark.parametrize("tail, outcome", [
    (b"", "clean"),
    (b"\0\0", "partial-header"),
    (b"\0\0\0\x09abc", "partial-body"),
])
def test_framed_end_of_stream_rules_match_blocking(run: Any, tail: bytes, outcome: str) -> None:
    wire = b"\0\0\0\2hi" + tail

    def blocking() -> list[Any]:
        raw, sock = csock.socketpair()
        raw.sendall(wire)
        raw.close()
        f = csock.FramedStream(sock)
        results: list[Any] = [bytes(f.recv())]
        for call in ("recv", "recv_many", "recv", "recv_many"):
            try:
                r = getattr(f, call)()
                results.append([bytes(m) for m in r] if isinstance(r, list) else bytes(r))
            except Exception as error:
                results.append((type(error), getattr(error, "partial", None)))
        f.close()
        return results

    async def asynchronous() -> list[Any]:
        raw, sock = csock.socketpair()
        f = csock.aio.FramedStream(sock)
        task = asyncio.create_task(f.recv())
        await asyncio.sleep(0.01)
        raw.sendall(wire)
        raw.close()
        results: list[Any] = [bytes(await task)]
        for call in ("recv", "recv_many", "recv", "recv_many"):
            try:
                r = await getattr(f, call)()
                results.append([bytes(m) for m in r] if isinstance(r, list) else bytes(r))
            except Exception as error:
                results.append((type(error), getattr(error, "partial", None)))
        f.close()
        await f.wait_closed()
        return results

    expected = blocking()
    assert run(asynchronous()) == expected
    if outcome == "clean":
        assert expected == [b"hi", (EOFError, None), [], (EOFError, None), []]
    else:
        assert expected[1] == (csock.IncompleteReadError, tail)


def test_framed_frame_too_large(run: Any) -> None:
    async def main() -> None:
        raw, sock = csock.socketpair()
        stream = csock.aio.FramedStream(sock, max_size=10)
        task = asyncio.create_task(stream.recv())
        await asyncio.sleep(0.01)
        raw.sendall(b"\0\0\0\x0b" + bytes(11))
        with pytest.raises(csock.FrameTooLargeError):
            await asyncio.wait_for(task, 5)
        with pytest.raises(csock.FrameTooLargeError):
            await stream.recv()
        raw.close()
        stream.close()
    run(main())


def test_framed_send_waits_for_a_slow_reader(run: Any) -> None:
    async def main() -> None:
        a, b = framed_pair(write_limit=0)
        a.socket.setsockopt(std.SOL_SOCKET, std.SO_SNDBUF, 4096)
        big = bytes(range(256)) * 4096            # 1 MiB: more than the socket holds
        task = asyncio.create_task(a.send(big))
        await asyncio.sleep(0.05)
        assert not task.done()                    # waits: bounded buffering
        assert a.pending_send > 0
        got = await asyncio.wait_for(b.recv(), 10)
        await asyncio.wait_for(task, 10)
        assert a.pending_send == 0
        assert bytes(got) == big
        a.close()
        b.close()
    run(main())


def test_framed_send_returns_below_write_limit(run: Any) -> None:
    async def main() -> None:
        a, b = framed_pair(write_limit=1 << 20)
        a.socket.setsockopt(std.SOL_SOCKET, std.SO_SNDBUF, 4096)
        big = bytes(200_000)
        await asyncio.wait_for(a.send(big), 5)    # within the limit: returns at once
        assert 0 < a.pending_send <= 1 << 20
        got = await asyncio.wait_for(b.recv(), 10)  # the backlog drains in the background
        assert len(got) == len(big)
        a.close()
        b.close()
    run(main())


def test_framed_close_writes_backlog_first(run: Any) -> None:
    async def main() -> None:
        a, b = framed_pair(write_limit=1 << 22)
        a.socket.setsockopt(std.SOL_SOCKET, std.SO_SNDBUF, 4096)
        msgs = [bytes([i]) * 10_000 for i in range(100)]
        await a.send_many(msgs)
        assert a.pending_send > 0
        a.close()
        with pytest.raises(ConnectionAbortedError):
            await a.send(b"late")
        got: list[bytes] = []
        while True:
            batch = await asyncio.wait_for(b.recv_many(), 10)
            if not batch:
                break
            got.extend(bytes(m) for m in batch)
        assert got == msgs
        await asyncio.wait_for(a.wait_closed(), 5)
        b.close()
    run(main())


def test_framed_send_to_closed_peer_raises_broken_pipe(run: Any) -> None:
    async def main() -> None:
        a, b = framed_pair()
        b.close()
        with pytest.raises((BrokenPipeError, ConnectionResetError)):
            for _ in range(100):
                await a.send(bytes(1000))
        a.close()
    run(main())


def test_framed_close_wakes_waiting_recv(run: Any) -> None:
    async def main() -> None:
        a, b = framed_pair()
        task = asyncio.create_task(b.recv())
        await asyncio.sleep(0.01)
        b.close()
        with pytest.raises(ConnectionAbortedError):
            await asyncio.wait_for(task, 5)
        await b.wait_closed()
        a.close()
    run(main())


@pytest.mark.parametrize("buffered", [b"", b"\x00\x00\x00\x03a"], ids=["empty", "partial-frame"])
@pytest.mark.parametrize("second", ["recv", "recv_many"])
def test_framed_second_concurrent_recv_refused(run: Any, buffered: bytes, second: str) -> None:
    """As asyncio's StreamReader: a second coroutine receiving while one waits raises
    RuntimeError at once; the first still gets its message, and later calls work."""
    async def main() -> None:
        raw, sock = csock.socketpair()
        b = csock.aio.FramedStream(sock)
        raw.sendall(buffered)
        first = asyncio.create_task(b.recv())
        await asyncio.sleep(0.01)
        with pytest.raises(RuntimeError, match="already waiting"):
            await getattr(b, second)()
        raw.sendall(b"xy" if buffered else b"\x00\x00\x00\x02xy")
        assert bytes(await asyncio.wait_for(first, 5)) == (b"axy" if buffered else b"xy")
        raw.sendall(b"\x00\x00\x00\x01z")
        assert bytes(await asyncio.wait_for(b.recv(), 5)) == b"z"
        raw.close()
        b.close()
    run(main())


def test_framed_concurrent_senders_deliver_every_message_once_intact(run: Any) -> None:
    """Any number of coroutines may send at once (a small socket buffer makes them wait for
    writability): each message arrives once, intact, in its sender's order."""
    from .test_framing import check_numbered, numbered_message
    senders, per_sender = 4, 400

    async def main() -> None:
        a_sock, b_sock = csock.socketpair()
        a_sock.setsockopt(std.SOL_SOCKET, std.SO_SNDBUF, 4096)
        a, b = csock.aio.FramedStream(a_sock), csock.aio.FramedStream(b_sock)

        async def send(writer: int) -> None:
            for seq in range(per_sender):
                message = numbered_message(writer, seq)
                if seq % 3:
                    await a.send(message)
                else:
                    await a.send_many([message])

        tasks = [asyncio.create_task(send(w)) for w in range(senders)]
        received: list[Any] = []
        while len(received) < senders * per_sender:
            received.extend(await asyncio.wait_for(b.recv_many(), 10))
        await asyncio.gather(*tasks)
        seen = [check_numbered(m) for m in received]
        for writer in range(senders):
            assert [s for w, s in seen if w == writer] == list(range(per_sender))
        assert len(seen) == senders * per_sender
        a.close()
        b.close()
        await a.wait_closed()
        await b.wait_closed()
    run(main())


def test_framed_async_iteration(run: Any) -> None:
    async def main() -> None:
        a, b = framed_pair()
        async with a:
            await a.send_many([b"1", b"2", b"3"])
        assert a.socket.fileno() == -1
        assert [bytes(m) async for m in b] == [b"1", b"2", b"3"]
        b.close()
    run(main())


# --- server and client ----------------------------------------------------------------------

async def echo(stream: csock.aio.FramedStream) -> None:
    while True:
        messages = await stream.recv_many()
        if not messages:
            return
        await stream.send_many(messages)


async def echo_clients(port: int, connections: int, messages: int) -> None:
    async def client(k: int) -> None:
        stream = await csock.aio.open_framed_connection("127.0.0.1", port)
        async with stream:
            for i in range(messages):
                msg = struct.pack("!II", k, i) + bytes(56)
                await stream.send(msg)
                assert bytes(await stream.recv()) == msg
    await asyncio.gather(*(client(k) for k in range(connections)))


def _server_echo(run: Any, connections: int, messages: int) -> None:
    before = fd_baseline(run)

    async def main() -> None:
        server = await csock.aio.start_framed_server(echo, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        async with server:
            await asyncio.wait_for(echo_clients(port, connections, messages), 50)
        assert server.connections == 0
        assert server.sockets == ()

    run(main())
    assert fd_count() == before


def test_server_echo_100_connections(run: Any) -> None:
    _server_echo(run, 100, 100)


@pytest.mark.slow
def test_server_echo_1000_connections(run: Any) -> None:
    _server_echo(run, 1000, 100)


def test_server_handler_exception_logged_connection_closed(run: Any, caplog: pytest.LogCaptureFixture) -> None:
    async def handler(stream: csock.aio.FramedStream) -> None:
        async for message in stream:
            if bytes(message) == b"boom":
                raise RuntimeError("handler failed on purpose")
            await stream.send(message)

    async def main() -> None:
        server = await csock.aio.start_framed_server(handler, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        good = await csock.aio.open_framed_connection("127.0.0.1", port)
        bad = await csock.aio.open_framed_connection("127.0.0.1", port)
        await good.send(b"a")
        assert bytes(await good.recv()) == b"a"
        await bad.send(b"boom")
        assert await asyncio.wait_for(bad.recv_many(), 5) == []   # that connection is closed
        await good.send(b"b")
        assert bytes(await good.recv()) == b"b"                   # the other one is not
        assert server.is_serving()
        good.close()
        bad.close()
        server.close()
        await asyncio.wait_for(server.wait_closed(), 5)

    with caplog.at_level(logging.ERROR, logger="csock.aio"):
        run(main())
    records = [r for r in caplog.records if r.name == "csock.aio"]
    assert len(records) == 1
    assert records[0].exc_info and "handler failed on purpose" in str(records[0].exc_info[1])


def test_server_close_with_connections_open(run: Any) -> None:
    before = fd_baseline(run)

    async def main() -> None:
        server = await csock.aio.start_framed_server(echo, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        clients = [await csock.aio.open_framed_connection("127.0.0.1", port) for _ in range(3)]
        for c in clients:
            await c.send(b"hi")
            assert bytes(await c.recv()) == b"hi"
        server.close()
        assert not server.is_serving()
        with pytest.raises(ConnectionRefusedError):
            await csock.aio.open_framed_connection("127.0.0.1", port)
        # Accepted connections go on; wait_closed waits for their handlers.
        await clients[0].send(b"still")
        assert bytes(await clients[0].recv()) == b"still"
        waiting = asyncio.create_task(server.wait_closed())
        await asyncio.sleep(0.05)
        assert not waiting.done()
        clients[0].close()
        await asyncio.sleep(0.05)
        assert server.connections == 2 and not waiting.done()
        server.abort_clients()                    # the rest: cancel their handlers
        await asyncio.wait_for(waiting, 5)
        for c in clients[1:]:
            assert await asyncio.wait_for(c.recv_many(), 5) == []   # closed by the server
            c.close()
            await c.wait_closed()

    run(main())
    assert fd_count() == before


def test_server_serve_forever_and_cancel(run: Any) -> None:
    async def main() -> None:
        server = await csock.aio.start_framed_server(echo, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        forever = asyncio.create_task(server.serve_forever())
        await asyncio.sleep(0)
        await echo_clients(port, 5, 10)
        forever.cancel()
        with pytest.raises(asyncio.CancelledError):
            await forever
        assert server.sockets == ()
    run(main())


def test_server_reuse_port_lets_two_listen(run: Any) -> None:
    async def main() -> None:
        one = await csock.aio.start_framed_server(echo, "127.0.0.1", 0, reuse_port=True)
        port = one.sockets[0].getsockname()[1]
        sock = one.sockets[0]
        assert sock.getsockopt(std.SOL_SOCKET, std.SO_REUSEPORT) == 1
        two = await csock.aio.start_framed_server(echo, "127.0.0.1", port, reuse_port=True)
        assert two.sockets[0].getsockname()[1] == port
        await echo_clients(port, 20, 3)
        for s in (one, two):
            s.close()
            await s.wait_closed()
        with pytest.raises(OSError):
            taken = await csock.aio.start_framed_server(echo, "127.0.0.1", 0)
            try:
                await csock.aio.start_framed_server(
                    echo, "127.0.0.1", taken.sockets[0].getsockname()[1])
            finally:
                taken.close()
    run(main())


def test_server_on_unix_socket(run: Any, tmp_path: Any) -> None:
    async def main() -> None:
        listener = csock.socket(std.AF_UNIX, std.SOCK_STREAM)
        listener.bind(str(tmp_path / "s"))
        server = await csock.aio.start_framed_server(echo, sock=listener)
        client_sock = csock.socket(std.AF_UNIX, std.SOCK_STREAM)
        client_sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(client_sock, str(tmp_path / "s"))
        async with csock.aio.FramedStream(client_sock) as client:
            await client.send_many([b"u1", b"u2"])
            got = []
            while len(got) < 2:
                got += [bytes(m) for m in await client.recv_many()]
            assert got == [b"u1", b"u2"]
        async with server:
            pass
    run(main())


def test_open_framed_connection_refused(run: Any) -> None:
    async def main() -> None:
        probe = std.socket()
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
        probe.close()
        with pytest.raises(ConnectionRefusedError):
            await csock.aio.open_framed_connection("127.0.0.1", port)
    before = fd_baseline(run)
    run(main())
    assert fd_count() == before


def test_framed_too_large_after_a_good_frame_in_one_read(run: Any) -> None:
    async def main() -> None:
        raw, sock = csock.socketpair()
        stream = csock.aio.FramedStream(sock, max_size=100)
        raw.sendall(b"\0\0\0\2ok" + b"\0\0\x10\0")  # then the peer waits: no more readiness
        assert [bytes(m) for m in await asyncio.wait_for(stream.recv_many(), 5)] == [b"ok"]
        with pytest.raises(csock.FrameTooLargeError):
            await asyncio.wait_for(stream.recv_many(), 5)
        raw.close()
        stream.close()
    run(main())


def test_framed_data_queued_before_the_stream_exists(run: Any) -> None:
    async def main() -> None:
        raw, sock = csock.socketpair()
        raw.sendall(b"\0\0\0\1a\0\0\0\1b")
        stream = csock.aio.FramedStream(sock)
        assert bytes(await asyncio.wait_for(stream.recv(), 5)) == b"a"
        assert bytes(await asyncio.wait_for(stream.recv(), 5)) == b"b"
        raw.close()
        stream.close()
    run(main())


def test_framed_send_cancelled_before_acceptance_sends_nothing(run: Any) -> None:
    async def main() -> None:
        a, b = framed_pair(write_limit=1 << 24)
        a.socket.setsockopt(std.SOL_SOCKET, std.SO_SNDBUF, 4096)
        first = bytes([1]) * 2_000_000
        await asyncio.wait_for(a.send(first), 5)     # accepted; most of it in the backlog
        assert a.pending_send > 0
        second = asyncio.create_task(a.send(bytes([2]) * 10))
        await asyncio.sleep(0.02)
        assert not second.done()                     # the backlog must drain first
        second.cancel()
        with pytest.raises(asyncio.CancelledError):
            await second
        third = asyncio.create_task(a.send(bytes([3]) * 10))
        got = [bytes(await asyncio.wait_for(b.recv(), 10)) for _ in range(2)]
        await asyncio.wait_for(third, 5)
        assert got == [first, bytes([3]) * 10]       # the cancelled message never went out
        a.close()
        b.close()
    run(main())


SERVE_PID = """
import asyncio, os, sys
import csock.aio

async def handler(stream):
    async for message in stream:
        await stream.send(str(os.getpid()).encode())

async def main():
    server = await csock.aio.start_framed_server(handler, "127.0.0.1", int(sys.argv[1]), reuse_port=True)
    print(server.sockets[0].getsockname()[1], flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    server.close()

asyncio.run(main())
"""


def test_reuse_port_two_processes_serve_one_port(run: Any) -> None:
    import subprocess
    import sys
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""))
    procs = []
    try:
        procs.append(subprocess.Popen([sys.executable, "-c", SERVE_PID, "0"], env=env, text=True,
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE))
        port = int(procs[0].stdout.readline())  # type: ignore[union-attr]
        procs.append(subprocess.Popen([sys.executable, "-c", SERVE_PID, str(port)], env=env, text=True,
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE))
        assert int(procs[1].stdout.readline()) == port  # type: ignore[union-attr]

        async def main() -> set[int]:
            pids = set()
            for _ in range(64):
                async with await csock.aio.open_framed_connection("127.0.0.1", port) as stream:
                    await stream.send(b"who?")
                    pids.add(int(bytes(await asyncio.wait_for(stream.recv(), 10))))
            return pids

        assert run(main()) == {p.pid for p in procs}
    finally:
        for p in procs:
            p.stdin.close()  # type: ignore[union-attr]
            p.wait(timeout=30)
            p.stdout.close()  # type: ignore[union-attr]


def test_endpoint_reuse_port_shares_a_udp_port(run: Any) -> None:
    async def main() -> None:
        t1, p1 = await csock.aio.create_datagram_endpoint(Recorder, local_addr=("127.0.0.1", 0), reuse_port=True)
        port = t1.get_extra_info("sockname")[1]
        t2, p2 = await csock.aio.create_datagram_endpoint(Recorder, local_addr=("127.0.0.1", port), reuse_port=True)
        assert t2.get_extra_info("sockname")[1] == port
        assert t2.get_extra_info("socket").getsockopt(std.SOL_SOCKET, std.SO_REUSEPORT) == 1
        with pytest.raises(OSError):
            await csock.aio.create_datagram_endpoint(Recorder, local_addr=("127.0.0.1", port))
        for t in (t1, t2):
            t.close()
        await p1.lost
        await p2.lost
    run(main())


AIO_SAMPLE = '''
import asyncio
import csock
import csock.aio


class Proto(csock.aio.BatchDatagramProtocol):
    def datagrams_received(self, datagrams: list[csock.Datagram]) -> None:
        first: csock.MessageView = datagrams[0].data


async def handler(stream: csock.aio.FramedStream) -> None:
    message: csock.MessageView = await stream.recv()
    messages: list[csock.MessageView] = await stream.recv_many(16)
    await stream.send(message)
    await stream.send_many(messages)


async def use(sock: csock.DatagramSocket) -> None:
    batch: list[csock.Datagram] = await csock.aio.recv_batch(sock, max_messages=8)
    sent: int = await csock.aio.send_batch(sock, [b"x", (b"y", ("127.0.0.1", 9))])
    server: csock.aio.FramedServer = await csock.aio.start_framed_server(handler, "127.0.0.1", 0, reuse_port=True)
    async with server:
        stream = await csock.aio.open_framed_connection("127.0.0.1", 1)
        async with stream:
            await stream.send(b"hello")
    transport, proto = await csock.aio.create_datagram_endpoint(Proto, local_addr=("127.0.0.1", 0))
    transport.send_batch([b"a"], ("127.0.0.1", 9))
    size: int = transport.get_write_buffer_size()
    transport.close()
    await stream.wait_closed()
'''


def test_mypy_strict_on_aio_usage(tmp_path: Any) -> None:
    import subprocess
    import sys
    pytest.importorskip("mypy")
    sample = tmp_path / "aio_sample.py"
    sample.write_text(AIO_SAMPLE)
    package = os.path.dirname(csock.aio.__file__)
    proc = subprocess.run([sys.executable, "-m", "mypy", "--strict", "--no-incremental", package, str(sample)],
                          capture_output=True, text=True, timeout=300,
                          cwd=os.path.dirname(os.path.dirname(package)))
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_framed_close_after_the_loop_is_gone(loop_kind: str) -> None:
    factory = None
    if loop_kind == "uvloop":
        import uvloop
        factory = uvloop.new_event_loop
    a, b = framed_pair()

    async def main() -> None:
        task = asyncio.create_task(b.recv())
        await asyncio.sleep(0.01)
        await a.send(b"x")
        assert bytes(await task) == b"x"
        # b's reader is still registered (it stays between calls) when the loop closes.

    run_on_new_loop(main(), factory)
    b.close()
    a.close()
    assert a.socket.fileno() == -1 and b.socket.fileno() == -1


def test_framed_cancelled_after_the_callback_received_loses_nothing(run: Any) -> None:
    """The readiness callback reads for the waiting recv; a cancel that lands before the
    coroutine resumes keeps those messages (and errors) for the next call."""
    async def main() -> None:
        raw, sock = csock.socketpair()
        stream = csock.aio.FramedStream(sock)
        task = asyncio.create_task(stream.recv_many())
        await asyncio.sleep(0.01)
        raw.sendall(b"\0\0\0\1a\0\0\0\1b")
        stream._on_readable()                    # as the loop would call it
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert bytes(await stream.recv()) == b"a"
        assert [bytes(m) for m in await stream.recv_many()] == [b"b"]

        task = asyncio.create_task(stream.recv())
        await asyncio.sleep(0.01)
        raw.sendall(b"\0\0\0\5ab")
        raw.close()
        stream._on_readable()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        with pytest.raises(csock.IncompleteReadError) as info:
            await stream.recv()
        assert info.value.partial == b"\0\0\0\5ab"
        assert await stream.recv_many() == []
        stream.close()
    run(main())
