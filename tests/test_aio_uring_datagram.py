"""csock.aio.create_datagram_endpoint(engine="uring"): datagrams through the loop's io_uring
ring (a poll request for readability, recvmmsg batches, a POLLOUT poll when the socket
is full), on both loops: bytes, counts,
order and addresses, truncation, flow control, pause/resume, errors, close and abort with no
fd and no request left, and "auto" falling back to epoll."""
from __future__ import annotations

import asyncio
import socket as std
import time
from typing import Any

import pytest

import csock
import csock.aio
import csock.uring
from csock.aio import _uring_engine

from .pairs import fd_count, indexed_payload, nonblocking_pair
from .test_aio_datagram import Recorder

pytestmark = [
    pytest.mark.timeout(60),
    pytest.mark.skipif(not _uring_engine.usable(),
                       reason="io_uring (or an operation csock.aio needs) is not usable here"),
]

RCVBUF = 8 << 20        # loopback bursts: the kernel drops UDP datagrams a full socket can't take


class Settled(Recorder):
    """Records, when connection_lost comes, the ring requests its socket still has."""

    def connection_lost(self, exc: Exception | None) -> None:
        ring = _uring_engine.driver_for(asyncio.get_running_loop()).ring
        sock = self.transport.get_extra_info("socket")
        self.left = [r for r in ring.pending_requests() if r.sock is sock]
        self.closed_at_lost = sock.fileno() == -1
        super().connection_lost(exc)


async def uring_endpoint(protocol: Any = Recorder, **kw: Any) -> tuple[Any, Any]:
    transport, proto = await csock.aio.create_datagram_endpoint(protocol, engine="uring", **kw)
    assert transport._ring_io is not None
    transport.get_extra_info("socket").setsockopt(csock.SOL_SOCKET, csock.SO_RCVBUF, RCVBUF)
    return transport, proto


async def wait_for_count(proto: Recorder, count: int) -> None:
    while len(proto.received) < count:
        proto.arrived.clear()
        await asyncio.wait_for(proto.arrived.wait(), 10)


async def sent(transport: Any) -> None:
    """Until every datagram given to transport completed (the loop must run to submit)."""
    for _ in range(1000):
        if transport.get_write_buffer_size() == 0:
            return
        await asyncio.sleep(0.005)
    raise AssertionError(f"{transport!r} still has {transport.get_write_buffer_size()} bytes")


def close_driver() -> None:
    """Every endpoint is closed: the loop's driver has no request left; close its ring."""
    driver = _uring_engine._drivers.get(asyncio.get_running_loop())
    if driver is None or driver.ring.closed:
        return                                  # closed with its last user
    try:
        assert driver.pending == 0 and driver.ring.pending == 0
    finally:
        driver.close()


def stdlib_receiver() -> std.socket:
    rx = std.socket(std.AF_INET, std.SOCK_DGRAM)
    rx.setsockopt(std.SOL_SOCKET, std.SO_RCVBUF, RCVBUF)
    rx.bind(("127.0.0.1", 0))
    rx.settimeout(5)
    return rx


def test_uring_endpoint_receives_every_datagram_of_several_senders(run: Any) -> None:
    """Four senders, 1,000 datagrams each: every one arrives once, as a csock.Datagram with
    its sender's address, each sender's in order, in batches (not one call per datagram)."""
    senders, count = 4, 1000
    msgs = [[indexed_payload(s * count + i) for i in range(count)] for s in range(senders)]

    async def main() -> None:
        rx_t, rx = await uring_endpoint(local_addr=("127.0.0.1", 0))
        address = rx_t.get_extra_info("sockname")
        txs = [await uring_endpoint(remote_addr=address) for _ in range(senders)]
        for start in range(0, count, 250):          # a window of 4 x 250 in flight
            for (tx_t, _), sent in zip(txs, msgs, strict=True):
                tx_t.send_batch(sent[start:start + 250])
            await wait_for_count(rx, senders * (start + 250))
        got = [d for batch in rx.batches for d in batch]
        assert len(got) == senders * count
        assert all(isinstance(d, csock.Datagram) and not d.truncated for d in got)
        for (tx_t, _), sent in zip(txs, msgs, strict=True):
            mine = tx_t.get_extra_info("sockname")
            assert [bytes(d.data) for d in got if d.address == mine] == sent
        assert len(rx.batches) < senders * count // 4
        for tx_t, tx in txs:
            assert tx_t.get_write_buffer_size() == 0
            tx_t.close()
            assert await tx.lost is None
        rx_t.close()
        assert await rx.lost is None
        close_driver()
    run(main())


def test_uring_endpoint_sends_in_order(run: Any) -> None:
    """sendto and send_batch, to a connected peer and to an address: a stdlib receiver gets
    exactly the datagrams, in order."""
    msgs = [indexed_payload(i) for i in range(3000)]

    async def main() -> None:
        rx = stdlib_receiver()
        connected_t, connected = await uring_endpoint(remote_addr=rx.getsockname())
        for m in msgs[:100]:
            connected_t.sendto(bytearray(m))        # copied: the caller may reuse it at once
        connected_t.send_batch(msgs[100:])
        await sent(connected_t)
        assert [rx.recv(65535) for _ in msgs] == msgs
        unbound_t, unbound = await uring_endpoint(family=std.AF_INET)
        unbound_t.send_batch([(m, rx.getsockname()) for m in msgs[:500]])
        unbound_t.send_batch(msgs[500:1000], rx.getsockname())
        await sent(unbound_t)
        assert [rx.recv(65535) for _ in msgs[:1000]] == msgs[:1000]
        for transport, proto in ((connected_t, connected), (unbound_t, unbound)):
            transport.close()
            assert await proto.lost is None
            assert transport.get_write_buffer_size() == 0
            assert not proto.errors
        rx.close()
        close_driver()
    run(main())


def test_uring_endpoint_marks_truncated_datagrams(run: Any) -> None:
    """Lengths as on the epoll engine: a payload beyond bufsize is cut to it and truncated,
    one of bufsize is whole, and one larger than the ring's provided buffers (the engine reads
    with recvmmsg, not into them) is whole."""
    async def main() -> None:
        rx_t, rx = await uring_endpoint(local_addr=("127.0.0.1", 0))
        small_t, small = await uring_endpoint(local_addr=("127.0.0.1", 0), bufsize=100)
        tx = std.socket(std.AF_INET, std.SOCK_DGRAM)
        big = bytes(range(256)) * 200                        # 51,200 bytes
        assert len(big) > _uring_engine.RING_BUFFER_SIZE
        tx.sendto(big, rx_t.get_extra_info("sockname"))
        tx.sendto(b"whole", rx_t.get_extra_info("sockname"))
        tx.sendto(big[:101], small_t.get_extra_info("sockname"))
        tx.sendto(big[:100], small_t.get_extra_info("sockname"))
        await wait_for_count(rx, 2)
        await wait_for_count(small, 2)
        assert [(bytes(d.data), d.truncated) for b in rx.batches for d in b] == [
            (big, False), (b"whole", False)]
        assert [(bytes(d.data), d.truncated) for b in small.batches for d in b] == [
            (big[:100], True), (big[:100], False)]
        tx.close()
        for transport, proto in ((rx_t, rx), (small_t, small)):
            transport.close()
            await proto.lost
        close_driver()
    run(main())


def test_uring_endpoint_with_plain_asyncio_protocol(run: Any) -> None:
    class Plain(asyncio.DatagramProtocol):
        def __init__(self) -> None:
            self.got: list[tuple[bytes, Any]] = []
            self.lost = asyncio.get_running_loop().create_future()

        def datagram_received(self, data: bytes, addr: Any) -> None:
            self.got.append((data, addr))

        def connection_lost(self, exc: Exception | None) -> None:
            self.lost.set_result(exc)

    async def main() -> None:
        a, b = nonblocking_pair(std.SOCK_DGRAM)
        transport, proto = await csock.aio.create_datagram_endpoint(Plain, sock=b,
                                                                    engine="uring")
        a.send_batch([b"r1", b"r2", b"r3"])
        for _ in range(200):
            if len(proto.got) == 3:
                break
            await asyncio.sleep(0.01)
        assert proto.got == [(b"r1", None), (b"r2", None), (b"r3", None)]
        assert all(type(data) is bytes for data, _ in proto.got)
        transport.close()
        assert await proto.lost is None
        assert b.fileno() == -1
        a.close()
        close_driver()
    run(main())


def test_uring_endpoint_keeps_order_when_sends_must_wait(run: Any) -> None:
    """An AF_UNIX peer that reads nothing fills up, so sends must wait for room (where the
    kernel does not keep io_uring requests in order): still every datagram, in order, and
    pause_writing/resume_writing around the wait; bytes count in the write buffer until
    their send completed."""
    msgs = [indexed_payload(i) + bytes(100) for i in range(3000)]

    async def main() -> None:
        a, b = nonblocking_pair(std.SOCK_DGRAM)
        transport, proto = await csock.aio.create_datagram_endpoint(Recorder, sock=a,
                                                                    engine="uring")
        transport.set_write_buffer_limits(high=1000)
        transport.send_batch(msgs)
        assert transport.get_write_buffer_size() > 1000
        assert proto.events == ["made", "pause"]
        got: list[bytes] = []
        while len(got) < len(msgs):
            got.extend(bytes(d.data) for d in await csock.aio.recv_batch(b, max_messages=512))
        assert got == msgs
        await sent(transport)
        assert proto.events == ["made", "pause", "resume"]
        transport.close()
        assert await proto.lost is None
        assert a.fileno() == -1
        b.close()
        close_driver()
    run(main())


@pytest.mark.parametrize("how", ["close", "abort"])
def test_uring_endpoint_closes_with_a_send_waiting(run: Any, how: str) -> None:
    """A send waits on the ring for a full AF_UNIX peer: close() still sends everything once
    the peer reads, abort() cancels it; connection_lost comes after the socket's last
    request, and the socket is closed."""
    msgs = [indexed_payload(i) + bytes(100) for i in range(1000)]

    async def main() -> None:
        a, b = nonblocking_pair(std.SOCK_DGRAM)
        transport, proto = await csock.aio.create_datagram_endpoint(Settled, sock=a,
                                                                    engine="uring")
        transport.send_batch(msgs)
        for _ in range(3):
            await asyncio.sleep(0)
        ring_io = transport._ring_io
        assert ring_io is not None and ring_io.sending  # the kernel holds the first left
        getattr(transport, how)()
        got: list[bytes] = []
        if how == "close":
            while len(got) < len(msgs):
                got.extend(bytes(d.data) for d in await csock.aio.recv_batch(b, 512))
            assert got == msgs
        assert await asyncio.wait_for(proto.lost, 5) is None
        assert proto.left == [] and a.fileno() == -1
        b.close()
        close_driver()
    run(main())


def test_uring_endpoint_receives_while_the_ring_has_no_free_buffer(run: Any) -> None:
    """Another user of the loop's ring holds every provided buffer: the endpoint, which reads
    with recvmmsg into its own memory, still gets every datagram, in order, with no error."""
    async def main() -> None:
        driver = _uring_engine.driver_for(asyncio.get_running_loop()).acquire()
        pool = driver.ring.pool
        assert pool is not None
        hog = csock.socket(csock.AF_INET, csock.SOCK_DGRAM)
        hog.setsockopt(csock.SOL_SOCKET, csock.SO_RCVBUF, RCVBUF)
        hog.bind(("127.0.0.1", 0))
        held: list[Any] = []

        def hold(c: Any) -> None:
            # The ring offers a part of its buffers at first, more each time a receive finds
            # none (ENOBUFS ends it): arm again until every buffer is held.
            if c.error is None:
                held.append(c.value)
            elif not c.more and len(held) < pool.count:
                driver.start(driver.ring.recvmsg(hog), hold)

        driver.start(driver.ring.recvmsg(hog), hold)
        tx = std.socket(std.AF_INET, std.SOCK_DGRAM)
        for _ in range(pool.count + 10):
            tx.sendto(b"hog", hog.getsockname())
        for _ in range(200):
            if len(held) == pool.count:
                break
            await asyncio.sleep(0.005)
        assert len(held) == pool.count            # every buffer held in a view
        rx_t, rx = await uring_endpoint(local_addr=("127.0.0.1", 0))
        for i in range(100):
            tx.sendto(b"%03d" % i, rx_t.get_extra_info("sockname"))
        await wait_for_count(rx, 100)
        assert rx.received == [b"%03d" % i for i in range(100)] and not rx.errors
        assert len(held) == pool.count            # (still none free)
        held.clear()                               # the buffers go back to the kernel
        tx.close()
        hog.close()
        rx_t.close()
        await rx.lost
        await asyncio.sleep(0.01)                  # (the hog's request: ended by ENOBUFS)
        close_driver()
    run(main())


def test_uring_endpoint_pause_and_resume_reading(run: Any) -> None:
    """While paused nothing is delivered (the poll request is cancelled); on resume every
    datagram sent meanwhile arrives, in order."""
    async def main() -> None:
        rx_t, rx = await uring_endpoint(local_addr=("127.0.0.1", 0))
        tx = std.socket(std.AF_INET, std.SOCK_DGRAM)
        address = rx_t.get_extra_info("sockname")
        tx.sendto(b"before", address)
        await wait_for_count(rx, 1)
        rx_t.pause_reading()
        assert not rx_t.is_reading()
        await asyncio.sleep(0.05)                           # the cancel completes
        assert rx_t._ring_io._receive is None
        for i in range(100):
            tx.sendto(b"paused %d" % i, address)
        await asyncio.sleep(0.1)
        assert rx.received == [b"before"]
        rx_t.resume_reading()
        rx_t.resume_reading()                               # (twice: one request)
        await wait_for_count(rx, 101)
        assert rx.received == [b"before"] + [b"paused %d" % i for i in range(100)]
        rx_t.pause_reading()
        rx_t.resume_reading()                               # before the cancel completed
        tx.sendto(b"after", address)
        await wait_for_count(rx, 102)
        assert rx.received[-1] == b"after"
        tx.close()
        rx_t.close()
        await rx.lost
        close_driver()
    run(main())


@pytest.mark.parametrize("how", ["close", "abort"])
def test_uring_endpoint_close_under_load_leaves_no_fd_and_no_request(run: Any,
                                                                     how: str) -> None:
    """Ten endpoints, each receiving and with thousands of sends queued, closed (or aborted)
    at once: connection_lost(None) once each, after which the driver has no request and no
    socket is left open. close() sends what was queued first."""
    count = 500

    async def main() -> None:
        # Held, so that the endpoints use this driver and it outlives them (with no user left,
        # a driver closes its ring).
        driver = _uring_engine.driver_for(asyncio.get_running_loop()).acquire()
        before = fd_count()
        rx = stdlib_receiver()
        rx.setblocking(False)
        pairs = []
        for _ in range(10):
            transport, proto = await uring_endpoint(Settled, local_addr=("127.0.0.1", 0))
            pairs.append((transport, proto))
        sink_t, sink = await uring_endpoint(Settled, local_addr=("127.0.0.1", 0))
        idle_t, idle = await uring_endpoint(Settled, local_addr=("127.0.0.1", 0))
        getattr(idle_t, how)()                  # nothing in flight but its recvmsg
        assert await idle.lost is None and idle.left == [] and not idle.closed_at_lost
        assert idle_t.get_extra_info("socket").fileno() == -1
        for transport, _ in pairs:
            transport.send_batch([b"%06d" % i for i in range(count)], rx.getsockname())
            transport.send_batch([b"ping"] * 100, sink_t.get_extra_info("sockname"))
        await asyncio.sleep(0)
        for transport, _ in pairs + [(sink_t, sink)]:
            getattr(transport, how)()
            assert transport.is_closing()
        for _, proto in pairs + [(sink_t, sink)]:
            assert await asyncio.wait_for(proto.lost, 10) is None
        assert driver.pending == 0
        for _, proto in pairs + [(sink_t, sink)]:
            assert proto.events.count("lost") == 1
            assert proto.left == []             # connection_lost came after the last one
        received = 0
        while True:
            try:
                received += len(rx.recv(100)) > 0
            except BlockingIOError:
                break
        if how == "close":
            assert received == 10 * count
        rx.close()
        assert fd_count() == before
        close_driver()
    run(main())


def test_auto_falls_back_to_epoll_when_io_uring_is_unavailable(run: Any,
                                                               monkeypatch: Any) -> None:
    """engine="auto" where io_uring is missing (forced): the readiness path, which still
    works; engine="uring" there is an OSError, and no socket is left behind."""
    async def main() -> None:
        auto_t, auto = await csock.aio.create_datagram_endpoint(
            Recorder, local_addr=("127.0.0.1", 0), engine="auto")
        assert auto_t._ring_io is not None                    # usable: the ring
        auto_t.close()
        await auto.lost
        close_driver()

        monkeypatch.setattr(csock.uring, "_fallback_forced", True)
        before = fd_count()
        with pytest.raises(OSError):
            await csock.aio.create_datagram_endpoint(
                Recorder, local_addr=("127.0.0.1", 0), engine="uring")
        assert fd_count() == before
        rx_t, rx = await csock.aio.create_datagram_endpoint(
            Recorder, local_addr=("127.0.0.1", 0), engine="auto")
        tx_t, tx = await csock.aio.create_datagram_endpoint(
            Recorder, remote_addr=rx_t.get_extra_info("sockname"), engine="auto")
        assert rx_t._ring_io is None and tx_t._ring_io is None
        msgs = [indexed_payload(i) for i in range(200)]
        tx_t.send_batch(msgs)
        await wait_for_count(rx, len(msgs))
        assert rx.received == msgs
        for transport, proto in ((tx_t, tx), (rx_t, rx)):
            transport.close()
            assert await proto.lost is None
    run(main())


def test_engine_argument_is_checked(run: Any) -> None:
    """An unknown engine is a ValueError; engine="uring" serves SOCK_DGRAM sockets only
    (ValueError for SEQPACKET), where "auto" takes epoll."""
    async def main() -> None:
        with pytest.raises(ValueError):
            await csock.aio.create_datagram_endpoint(Recorder, local_addr=("127.0.0.1", 0),
                                                     engine="kqueue")
        a, b = nonblocking_pair(std.SOCK_SEQPACKET)
        with pytest.raises(ValueError):
            await csock.aio.create_datagram_endpoint(Recorder, sock=b, engine="uring")
        transport, proto = await csock.aio.create_datagram_endpoint(Recorder, sock=b,
                                                                    engine="auto")
        assert transport._ring_io is None
        a.send_batch([b"x"])
        await wait_for_count(proto, 1)
        transport.close()
        await proto.lost
        a.close()
    run(main())


def test_uring_endpoint_closes_after_its_driver_was_closed(run: Any) -> None:
    """Closing the loop's driver drops every handler: an endpoint closed afterwards still
    gets connection_lost(None) and closes its socket."""
    async def main() -> None:
        transport, proto = await uring_endpoint(local_addr=("127.0.0.1", 0))
        _uring_engine.driver_for(asyncio.get_running_loop()).close()
        transport.close()
        assert await asyncio.wait_for(proto.lost, 5) is None
        assert transport.get_extra_info("socket").fileno() == -1
    run(main())


@pytest.mark.parametrize("engine", ["epoll", "uring"])
@pytest.mark.parametrize("connected", [True, False], ids=["connected", "to-address"])
def test_endpoint_sends_every_datagram_whole_and_in_order_to_a_full_unix_peer(
        run: Any, tmp_path: Any, engine: str, connected: bool) -> None:
    """A bound AF_UNIX receiver that reads slowly, the endpoint not its peer: the kernel's
    recvq-full path, where unix_dgram_sendmsg has copied the payload out of the iov before
    it fails with EAGAIN (an io_uring retry then sent an empty datagram, and a send that
    completed with EAGAIN was dropped with error_received). The receiver gets every
    datagram, whole, once and in order; the protocol sees no error."""
    msgs = [indexed_payload(i) + b"x" for i in range(3000)]
    path = str(tmp_path / "rx")

    async def main() -> None:
        rx = csock.socket(csock.AF_UNIX, csock.SOCK_DGRAM)
        rx.bind(path)
        rx.setblocking(False)
        kw: dict[str, Any] = {"remote_addr": path} if connected else {}
        transport, proto = await csock.aio.create_datagram_endpoint(
            Recorder, family=csock.AF_UNIX, engine=engine, **kw)
        if connected:
            transport.send_batch(msgs)
        else:
            transport.send_batch([(m, path) for m in msgs])
        got: list[bytes] = []
        deadline = time.monotonic() + 10
        while len(got) < len(msgs) and time.monotonic() < deadline:
            try:
                got.extend(bytes(d.data) for d in rx.recv_batch(64))
            except BlockingIOError:
                await asyncio.sleep(0.001)              # slow reader: the queue fills up
        assert len(got) == len(msgs) and got.count(b"") == 0 and proto.errors == []
        assert got == msgs
        await sent(transport)
        with pytest.raises(BlockingIOError):
            rx.recv(100)                                # nothing more: no empty datagram
        assert proto.errors == []
        transport.close()
        assert await asyncio.wait_for(proto.lost, 5) is None
        rx.close()
        close_driver()
    run(main())
