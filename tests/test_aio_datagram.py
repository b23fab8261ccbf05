"""csock.aio.create_datagram_endpoint: batch delivery, GSO/GRO offload, flow control, close
and abort, errors, SO_REUSEPORT, on both loops."""
from __future__ import annotations

import asyncio
import errno
import os
import select
import socket as std
from typing import Any

import pytest

import csock
import csock.aio
from csock.aio._uring_engine import usable

from .pairs import CLOSERS, close_from, fd_count, indexed_payload, nonblocking_pair, take_number

pytestmark = pytest.mark.timeout(60)


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


def test_seqpacket_transport_delivers_zero_length_records(run: Any) -> None:
    async def main() -> None:
        a, b = nonblocking_pair(std.SOCK_SEQPACKET)
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
        a, b = nonblocking_pair(std.SOCK_SEQPACKET)
        with a, b:
            with pytest.raises(ValueError):
                transport, _ = await csock.aio.create_datagram_endpoint(asyncio.DatagramProtocol,
                                                                        sock=b, bufsize=0)
                transport.abort()
    run(main())


def skip_unless_engine_usable(engine: str) -> None:
    if engine == "uring" and not usable():
        pytest.skip("io_uring, or an operation csock.aio's engine needs, is unavailable")


@pytest.mark.parametrize("engine", ["epoll", "uring"])
@pytest.mark.parametrize("limits, error", [
    ({"max_messages": 0}, ValueError), ({"max_messages": 10**9}, ValueError),
    ({"max_messages": "x"}, TypeError), ({"bufsize": -5}, ValueError),
    ({"bufsize": 2**40}, ValueError)])
def test_an_endpoint_refuses_receive_limits_recv_batch_refuses(
        run: Any, engine: str, limits: dict[str, Any], error: type[Exception]) -> None:
    """At once, before a socket is made: the transport used to open, and the first datagram to
    arrive closed it with connection_lost(ValueError), that datagram lost."""
    skip_unless_engine_usable(engine)
    before = fd_count()

    async def main() -> None:
        with pytest.raises(error):
            await csock.aio.create_datagram_endpoint(
                asyncio.DatagramProtocol, local_addr=("127.0.0.1", 0), engine=engine, **limits)

    run(main())
    assert fd_count() == before


@pytest.mark.parametrize("closer", CLOSERS)
@pytest.mark.parametrize("engine", ["epoll", "uring"])
def test_endpoint_socket_closed_under_it_is_lost_and_its_number_served_anew(
        run: Any, engine: str, closer: str, caplog: pytest.LogCaptureFixture) -> None:
    """The endpoint's socket itself closed (not the transport): connection_lost(EBADF), the fd
    closed, and an endpoint on a socket that takes the number receives (on epoll the loop
    kept watching the bare number: the transport never heard, and the newcomer got nothing).
    Nothing is logged (the uring engine reported "io_uring poll failed" to the loop)."""
    skip_unless_engine_usable(engine)

    async def main() -> None:
        transport, proto = await csock.aio.create_datagram_endpoint(
            Recorder, local_addr=("127.0.0.1", 0), engine=engine)
        sock = transport.get_extra_info("socket")
        number = sock.fileno()
        await asyncio.sleep(0.02)
        close_from(closer, sock)
        lost = await asyncio.wait_for(proto.lost, 2)
        assert isinstance(lost, OSError) and lost.errno == errno.EBADF
        assert not os.path.exists(f"/proc/self/fd/{number}")
        [taker] = take_number(number, csock.socket(csock.AF_INET, csock.SOCK_DGRAM))
        taker.bind(("127.0.0.1", 0))
        second, second_proto = await csock.aio.create_datagram_endpoint(
            Recorder, sock=taker, engine=engine)
        with csock.socket(csock.AF_INET, csock.SOCK_DGRAM) as sender:
            sender.sendto(b"to the newcomer", taker.getsockname())
            await asyncio.wait_for(second_proto.arrived.wait(), 2)
        assert second_proto.received == [b"to the newcomer"] and proto.received == []
        second.close()
        await second_proto.lost

    with caplog.at_level("WARNING"):
        run(main())
    assert not caplog.records


@pytest.mark.parametrize("closer", CLOSERS)
def test_recv_batch_waiting_as_its_socket_closes_raises_ebadf(run: Any, closer: str) -> None:
    """Two coroutines waiting in csock.aio.recv_batch when the socket is closed: both raise
    OSError(EBADF), the loop stops watching the number, and a socket that takes the number is
    awaited afresh (the loop watched the bare number: the waits hung, and the newcomer's
    readiness went to the old registration)."""
    async def main() -> None:
        a, b = nonblocking_pair(std.SOCK_DGRAM)
        number = b.fileno()
        waiting = [asyncio.create_task(csock.aio.recv_batch(b)) for _ in range(2)]
        await asyncio.sleep(0.02)
        close_from(closer, b)
        for task in waiting:
            with pytest.raises(OSError) as caught:
                await asyncio.wait_for(task, 2)
            assert caught.value.errno == errno.EBADF
        assert not os.path.exists(f"/proc/self/fd/{number}")
        d, c = take_number(number, *nonblocking_pair(std.SOCK_DGRAM))
        d.setblocking(False)
        receiving = asyncio.create_task(csock.aio.recv_batch(d))
        await asyncio.sleep(0.02)
        c.send(b"to the newcomer")
        batch = await asyncio.wait_for(receiving, 2)
        assert [bytes(m.data) for m in batch] == [b"to the newcomer"]
        for sock in (a, c, d):
            sock.close()
    run(main())


@pytest.mark.parametrize("engine", ["epoll", "uring"])
def test_endpoint_offload_delivers_every_datagram_in_order(run: Any, engine: str) -> None:
    """offload=True: GSO on send, GRO on receive, on either engine; with max_messages smaller
    than what one coalesced message carries, the rest (kept on the socket, invisible to the
    loop's readiness checks) still arrives without another datagram to wake the reader."""
    skip_unless_engine_usable(engine)
    count = 2000
    msgs = [i.to_bytes(4, "big") * 16 for i in range(count)]

    async def main() -> None:
        rx_t, rx = await csock.aio.create_datagram_endpoint(
            Recorder, local_addr=("127.0.0.1", 0), max_messages=8, offload=True, engine=engine)
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


def keep_the_rest_of_a_coalesced_message(rx_sock: Any, sent: list[bytes]) -> list[bytes]:
    """Send sent as one GSO message to rx_sock and take its first datagram with GRO on: the
    socket keeps the rest (invisible to readiness checks). Returns what was taken."""
    rx_sock.enable_gro()
    with csock.socket(csock.AF_INET, csock.SOCK_DGRAM) as tx:
        tx.send_batch(sent, rx_sock.getsockname(), segment_size=len(sent[0]))
    select.select([rx_sock], [], [], 5)
    first = [bytes(d.data) for d in rx_sock.recv_batch(1, 2048, gro=True)]
    assert csock._fastio.pending_datagrams(rx_sock) == len(sent) - 1
    return first


@pytest.mark.parametrize("engine", ["epoll", "uring"])
@pytest.mark.parametrize("when", ["start", "resume"])
def test_datagrams_the_socket_keeps_reach_the_protocol_without_another(
        run: Any, engine: str, when: str) -> None:
    """Datagrams a socket keeps (the rest of a coalesced message a recv_batch(1) split, or a
    batch a signal handler's exception interrupted) are invisible to readiness checks: an
    endpoint made on that socket, or resumed after a pause, delivers them at once, not when
    another datagram happens to arrive (only a GRO endpoint looked, and only after a batch)."""
    skip_unless_engine_usable(engine)
    sent = [i.to_bytes(4, "big") * 25 for i in range(10)]

    async def main() -> None:
        rx_sock = csock.socket(csock.AF_INET, csock.SOCK_DGRAM)
        rx_sock.bind(("127.0.0.1", 0))
        if when == "start":
            first = keep_the_rest_of_a_coalesced_message(rx_sock, sent)
        transport, rx = await csock.aio.create_datagram_endpoint(
            Recorder, sock=rx_sock, offload=False, engine=engine)
        if when == "resume":
            transport.pause_reading()
            first = keep_the_rest_of_a_coalesced_message(rx_sock, sent)
            transport.resume_reading()
        while len(first) + len(rx.received) < len(sent):
            rx.arrived.clear()
            await asyncio.wait_for(rx.arrived.wait(), 5)
        transport.close()
        assert first + rx.received == sent

    run(main())


UDP_GRO = 104          # linux/udp.h


@pytest.mark.parametrize("engine", ["epoll", "uring"])
def test_endpoint_offload_is_on_by_default_for_udp_only(run: Any, engine: str) -> None:
    """UDP endpoints receive with GRO unless offload=False, on either engine; AF_UNIX
    endpoints are untouched (GRO/GSO do not apply) and still deliver."""
    skip_unless_engine_usable(engine)

    async def main() -> None:
        default_t, _ = await csock.aio.create_datagram_endpoint(
            Recorder, local_addr=("127.0.0.1", 0), engine=engine
        )
        plain_t, _ = await csock.aio.create_datagram_endpoint(Recorder, local_addr=("127.0.0.1", 0),
                                                              offload=False, engine=engine)
        gro = [
            t.get_extra_info("socket").getsockopt(csock.SOL_UDP, UDP_GRO)
            for t in (default_t, plain_t)
        ]
        assert gro == [1, 0]
        a, b = csock.socketpair(csock.AF_UNIX, csock.SOCK_DGRAM)
        unix_t, unix = await csock.aio.create_datagram_endpoint(Recorder, sock=b, engine=engine)
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
def test_endpoint_with_and_without_offload_sends_the_same_datagrams(
    run: Any, offload: bool
) -> None:
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
    msgs = [indexed_payload(i) for i in range(count)]

    async def main() -> None:
        server_t, server = await csock.aio.create_datagram_endpoint(
            Echo, local_addr=("127.0.0.1", 0)
        )
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
        a, b = nonblocking_pair(std.SOCK_DGRAM)
        transport, proto = await csock.aio.create_datagram_endpoint(Recorder, sock=a)
        transport.set_write_buffer_limits(high=1000)
        assert transport.get_write_buffer_limits() == (250, 1000)
        msgs = [indexed_payload(i) + bytes(100) for i in range(3000)]
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
        a, b = nonblocking_pair(std.SOCK_DGRAM)
        transport, proto = await csock.aio.create_datagram_endpoint(Recorder, sock=a)
        msgs = [bytes(1000)] * 2000
        transport.send_batch(msgs)
        assert transport.get_write_buffer_size() > 0
        transport.close()
        transport.sendto(b"late")       # dropped, as asyncio's and uvloop's transports do
        got = 0
        while got < len(msgs):
            got += len(await csock.aio.recv_batch(b, max_messages=512, bufsize=2000))
        assert await asyncio.wait_for(proto.lost, 5) is None
        assert got == len(msgs)
        with pytest.raises(BlockingIOError):
            b.recv(2000)                # nothing after the 2,000: "late" was not sent
        b.close()

        a, b = nonblocking_pair(std.SOCK_DGRAM)
        transport, proto = await csock.aio.create_datagram_endpoint(Recorder, sock=a)
        transport.send_batch(msgs)
        transport.abort()
        assert transport.get_write_buffer_size() == 0
        assert await asyncio.wait_for(proto.lost, 5) is None
        b.close()
    run(main())


@pytest.mark.parametrize("engine", ["epoll", "uring"])
def test_endpoint_error_received_and_stays_open(run: Any, engine: str) -> None:
    """A send to a closed port on a connected UDP socket: ECONNREFUSED reaches
    error_received (from the send or the receive that sees the ICMP error), on either engine;
    the endpoint stays open, and receives what the peer sends once it is there (on uvloop the
    readiness engine went deaf: libuv ends a poll at its first POLLERR)."""
    skip_unless_engine_usable(engine)

    async def main() -> None:
        probe = std.socket(std.AF_INET, std.SOCK_DGRAM)
        probe.bind(("127.0.0.1", 0))
        dead = probe.getsockname()
        probe.close()
        transport, proto = await csock.aio.create_datagram_endpoint(Recorder, remote_addr=dead,
                                                                    engine=engine)
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
        with std.socket(std.AF_INET, std.SOCK_DGRAM) as peer:
            peer.bind(dead)
            for i in range(3):
                peer.sendto(b"after %d" % i, transport.get_extra_info("sockname"))
            for _ in range(50):
                if len(proto.received) == 3:
                    break
                proto.arrived.clear()
                await asyncio.wait_for(proto.arrived.wait(), 5)
            assert proto.received == [b"after 0", b"after 1", b"after 2"]
            transport.pause_reading()       # (nothing arrives: no stray loop reader either)
            peer.sendto(b"while paused", transport.get_extra_info("sockname"))
            await asyncio.sleep(0.3)
            assert proto.received == [b"after 0", b"after 1", b"after 2"]
            transport.resume_reading()
            for _ in range(50):
                if len(proto.received) == 4:
                    break
                proto.arrived.clear()
                await asyncio.wait_for(proto.arrived.wait(), 5)
            assert proto.received[3:] == [b"while paused"]
        transport.close()
        await proto.lost
    run(main())


def test_endpoint_bad_address_raises_before_sending(run: Any) -> None:
    async def main() -> None:
        transport, proto = await csock.aio.create_datagram_endpoint(
            Recorder, local_addr=("127.0.0.1", 0)
        )
        with pytest.raises(ValueError):
            transport.sendto(b"x")               # not connected: an address is needed
        with pytest.raises((ValueError, TypeError, OSError)):
            transport.sendto(b"x", ("999.1.1.1", 5))
        with pytest.raises(TypeError):
            transport.send_batch([object()], ("127.0.0.1", 9))  # type: ignore[list-item]
        transport.close()
        await proto.lost
    run(main())


@pytest.mark.parametrize("base", [asyncio.DatagramProtocol, csock.aio.BatchDatagramProtocol])
def test_endpoint_with_plain_asyncio_protocol(run: Any, base: type) -> None:
    """A protocol with asyncio's datagram_received gets one call per datagram, also when it
    subclasses BatchDatagramProtocol without overriding datagrams_received (whose no-op got
    every datagram)."""
    class Plain(base):  # type: ignore[misc, valid-type]
        def __init__(self) -> None:
            self.got: list[tuple[bytes, Any]] = []

        def datagram_received(self, data: bytes, addr: Any) -> None:
            self.got.append((data, addr))

    async def main() -> None:
        a, b = nonblocking_pair(std.SOCK_SEQPACKET)
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


def test_endpoint_reuse_port_shares_a_udp_port(run: Any) -> None:
    async def main() -> None:
        t1, p1 = await csock.aio.create_datagram_endpoint(
            Recorder, local_addr=("127.0.0.1", 0), reuse_port=True
        )
        port = t1.get_extra_info("sockname")[1]
        t2, p2 = await csock.aio.create_datagram_endpoint(
            Recorder, local_addr=("127.0.0.1", port), reuse_port=True
        )
        assert t2.get_extra_info("sockname")[1] == port
        assert t2.get_extra_info("socket").getsockopt(std.SOL_SOCKET, std.SO_REUSEPORT) == 1
        with pytest.raises(OSError):
            await csock.aio.create_datagram_endpoint(Recorder, local_addr=("127.0.0.1", port))
        for t in (t1, t2):
            t.close()
        await p1.lost
        await p2.lost
    run(main())


@pytest.mark.parametrize("call", ["recv_batch", "recv_batch_into", "send_batch"])
def test_a_batch_call_on_something_not_a_socket_is_a_type_error(run: Any, call: str) -> None:
    async def main() -> None:
        with pytest.raises(TypeError, match="socket"):
            if call == "recv_batch":
                await csock.aio.recv_batch(None)  # type: ignore[arg-type]
            elif call == "recv_batch_into":
                await csock.aio.recv_batch_into(None, bytearray(10), 5)  # type: ignore[arg-type]
            else:
                await csock.aio.send_batch(None, [b"x"])  # type: ignore[arg-type]
    run(main())
