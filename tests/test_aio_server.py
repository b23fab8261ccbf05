"""csock.aio.start_framed_server and open_framed_connection: echo over many connections,
handler errors, close and abort, serve_forever, SO_REUSEPORT, AF_UNIX, on both loops."""
from __future__ import annotations

import asyncio
import logging
import os
import socket as std
import struct
from typing import Any

import pytest

import csock
import csock.aio

from .children import child_env
from .pairs import CLOSERS, close_from, fd_count

pytestmark = [pytest.mark.timeout(60), pytest.mark.usefixtures("aio_engine")]


def fd_baseline(run: Any) -> int:
    """The fd count once the loop kind's process-wide descriptors exist (libuv opens a
    signal pipe the first time a uvloop loop runs, and keeps it)."""
    run(asyncio.sleep(0))
    return fd_count()


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


@pytest.mark.parametrize("backlog", [0, -5])
def test_a_backlog_below_one_still_serves(run: Any, backlog: int) -> None:
    """backlog sizes listen(2) only (the kernel queues connections with listen(0) too): the
    epoll engine's accept loop ran range(backlog) times, so it accepted nothing, and its
    reader, always ready, spun the CPU."""
    async def main() -> None:
        server = await csock.aio.start_framed_server(echo, "127.0.0.1", 0, backlog=backlog)
        async with server:
            await asyncio.wait_for(echo_clients(server.sockets[0].getsockname()[1], 3, 2), 10)

    run(main())


@pytest.mark.parametrize("argument, error", [
    ({"max_size": -1}, ValueError), ({"max_size": 2**32}, ValueError),
    ({"write_limit": -1}, ValueError), ({"handler": None}, TypeError),
    ({"backlog": 1.5}, TypeError)])
def test_start_framed_server_refuses_bad_arguments_before_listening(
        run: Any, argument: dict[str, Any], error: type[Exception]) -> None:
    """As FramedStream(max_size=-1) does at once: the server used to listen, then accept and
    close every client, the error going to the log once per connection."""
    before = fd_baseline(run)
    kwargs = {"handler": echo, **argument}

    async def main() -> None:
        with pytest.raises(error):
            await csock.aio.start_framed_server(host="127.0.0.1", port=0, **kwargs)

    run(main())
    assert fd_count() == before


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


def test_server_handler_exception_logged_connection_closed(
    run: Any, caplog: pytest.LogCaptureFixture
) -> None:
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


def _peer_sees_end(peer: std.socket) -> bool:
    """Whether peer's connection was ended by the other side (EOF, or a reset from a listener
    closed with it still queued)."""
    peer.setblocking(True)
    peer.settimeout(2)
    try:
        return peer.recv(1) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def test_server_close_serves_nothing_accepted_after_it(run: Any) -> None:
    # Connections whose accepts completed before close() but were not yet dispatched (uring:
    # still in the CQ) were handed to handlers after close(), and wait_closed() never returned.
    before = fd_baseline(run)
    started: list[bool] = []

    async def handler(stream: csock.aio.FramedStream) -> None:
        started.append(server.is_serving())
        await stream.recv_many()

    async def main() -> None:
        nonlocal server
        at_start = fd_count()
        server = await csock.aio.start_framed_server(handler, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        peers = []
        for _ in range(50):
            peer = std.socket()
            peer.setblocking(False)
            peer.connect_ex(("127.0.0.1", port))
            peers.append(peer)
        await asyncio.sleep(0)
        server.close()
        server.abort_clients()
        await asyncio.wait_for(server.wait_closed(), 5)
        await asyncio.sleep(0.05)
        assert server.connections == 0
        assert False not in started                 # no handler began after close()
        for peer in peers:
            assert _peer_sees_end(peer)
            peer.close()
        await asyncio.sleep(0.05)
        assert fd_count() == at_start               # (and the uring driver's ring is closed)

    server: Any = None
    run(main())
    assert fd_count() == before


def test_server_handler_cancelled_before_it_starts_closes_its_connection(run: Any) -> None:
    # A handler task cancelled before its first step never ran _run's finally: the stream was
    # never closed (uring: the driver kept a user, so the loop's ring stayed open).
    async def handler(stream: csock.aio.FramedStream) -> None:
        raise AssertionError("never started")

    async def main() -> None:
        at_start = fd_count()
        server = await csock.aio.start_framed_server(handler, "127.0.0.1", 0)
        ours, peer = csock.socketpair()
        ours.setblocking(False)
        server._serve(ours)             # as an accept does: the task is made, not yet run
        server.abort_clients()          # cancelled before its first step
        server.close()
        await asyncio.wait_for(server.wait_closed(), 5)
        assert server.connections == 0
        assert ours.fileno() == -1
        assert _peer_sees_end(peer)
        peer.close()
        await asyncio.sleep(0.05)
        assert fd_count() == at_start

    run(main())


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


SERVE_PID = """
import asyncio, os, sys
import csock.aio

async def handler(stream):
    async for message in stream:
        await stream.send(str(os.getpid()).encode())

async def main():
    port = int(sys.argv[1])
    server = await csock.aio.start_framed_server(handler, "127.0.0.1", port, reuse_port=True)
    print(server.sockets[0].getsockname()[1], flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    server.close()

asyncio.run(main())
"""


def test_reuse_port_two_processes_serve_one_port(run: Any) -> None:
    import subprocess
    import sys
    env = child_env()
    procs = []
    try:
        procs.append(subprocess.Popen([sys.executable, "-c", SERVE_PID, "0"], env=env, text=True,
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE))
        port = int(procs[0].stdout.readline())  # type: ignore[union-attr]
        procs.append(subprocess.Popen([sys.executable, "-c", SERVE_PID, str(port)], env=env,
                                      text=True,
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


@pytest.mark.parametrize("host", ["127.0.0.1", None])
@pytest.mark.parametrize("port", [70000, -1])
def test_a_port_out_of_range_is_refused_not_wrapped(run: Any, host: Any, port: int) -> None:
    """As the stdlib's bind()/connect(): OverflowError (getaddrinfo(3) would listen on, or
    connect to, port % 65536)."""
    async def handler(stream: Any) -> None:
        pass

    async def main() -> None:
        with pytest.raises(OverflowError, match="0-65535"):
            await csock.aio.start_framed_server(handler, host, port)
        with pytest.raises(OverflowError, match="0-65535"):
            await csock.aio.open_framed_connection(host or "127.0.0.1", port)
    before = fd_baseline(run)
    run(main())
    assert fd_count() == before


async def echo_each(stream: csock.aio.FramedStream) -> None:
    async for message in stream:
        await stream.send(message)


@pytest.mark.parametrize("closer", CLOSERS)
def test_a_listener_closed_under_the_server_lets_its_number_serve_anew(
        run: Any, closer: str, caplog: pytest.LogCaptureFixture) -> None:
    """A listening socket closed itself (not through the server), with a connection queued:
    its fd closes, nothing is logged, and a server whose listener takes the number accepts
    (on epoll the loop kept watching the bare number: the new listener's connections were
    never accepted; closed from another thread, the accept before the loop's hand-over
    logged "accept() failed")."""
    async def main() -> None:
        server = await csock.aio.start_framed_server(echo_each, "127.0.0.1", 0)
        listener = server.sockets[0]
        number = listener.fileno()
        queued = csock.create_connection(listener.getsockname())
        close_from(closer, listener)
        await asyncio.sleep(0.05)                  # (another thread's close: the loop's turn)
        assert not os.path.exists(f"/proc/self/fd/{number}")
        second = await csock.aio.start_framed_server(echo_each, "127.0.0.1", 0)
        assert second.sockets[0].fileno() == number
        client = await asyncio.wait_for(
            csock.aio.open_framed_connection(*second.sockets[0].getsockname()), 3)
        await client.send(b"to the newcomer")
        assert bytes(await asyncio.wait_for(client.recv(), 3)) == b"to the newcomer"
        client.close()
        queued.close()
        for each in (server, second):
            each.close()
            await each.wait_closed()

    with caplog.at_level("WARNING"):
        run(main())
    assert not caplog.records
