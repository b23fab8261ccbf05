"""csock.aio.FramedStream: the wire format, end of stream, size limits, send backlog and
write limits, concurrent callers, close, on both loops."""
from __future__ import annotations

import asyncio
import errno
import random
import socket as std
import struct
import time
from typing import Any

import pytest

import csock
import csock.aio

from .pairs import CLOSERS, close_from, framed_pair, take_number, tcp_pair

pytestmark = [pytest.mark.timeout(60), pytest.mark.usefixtures("aio_engine")]


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
        for k, (got, want) in enumerate(zip(held, messages, strict=True)):
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
        await stream.drain()                        # (the blocking read below stops the loop)
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


def test_framed_addresses_outlive_a_reset_and_close(run: Any) -> None:
    """get_extra_info('peername'/'sockname') answered None once the peer had reset the
    connection (getpeername: ENOTCONN), exactly when a handler logs who it was; asyncio's
    transports keep both from the start."""
    async def main() -> list[Any]:
        client, server = tcp_pair()
        stream = csock.aio.FramedStream(server)
        expected = [client.getsockname(), server.getsockname()]
        client.setsockopt(std.SOL_SOCKET, std.SO_LINGER, struct.pack("ii", 1, 0))
        client.close()
        with pytest.raises(ConnectionResetError):
            await asyncio.wait_for(stream.recv(), 5)
        names = [stream.get_extra_info("peername"), stream.get_extra_info("sockname")]
        stream.close()
        await stream.wait_closed()
        names += [stream.get_extra_info("peername"), stream.get_extra_info("nonsense", 7)]
        return [expected * 2, names]
    expected, names = run(main())
    assert names == expected[:3] + [7]


def test_framed_reset_inside_a_frame_is_not_a_clean_end(run: Any) -> None:
    """A whole frame, part of the next, then the peer's RST: the frame, ConnectionResetError,
    then IncompleteReadError (the cut frame), as the blocking FramedStream says. The uring
    engine said EOFError there: a reader looping until the end took the cut connection for a
    whole one."""
    wire = b"\0\0\0\2ok" + b"\0\0\0\5hi"

    def outcomes(calls: list[Any]) -> list[Any]:
        results = []
        for call in calls:
            try:
                results.append(bytes(call()))
            except Exception as error:
                results.append(type(error).__name__)
        return results

    def reset_after(client: Any) -> None:
        client.sendall(wire)
        client.setsockopt(std.SOL_SOCKET, std.SO_LINGER, struct.pack("ii", 1, 0))
        client.close()
        time.sleep(0.1)

    client, server = tcp_pair()
    reset_after(client)
    with server:
        blocking = csock.FramedStream(server)
        expected = outcomes([blocking.recv] * 4)
    assert expected[:3] == [b"ok", "ConnectionResetError", "IncompleteReadError"]

    async def main() -> list[Any]:
        client, server = tcp_pair()
        stream = csock.aio.FramedStream(server)
        reset_after(client)
        results = []
        for _ in range(4):
            try:
                results.append(bytes(await asyncio.wait_for(stream.recv(), 5)))
            except Exception as error:
                results.append(type(error).__name__)
        stream.close()
        await stream.wait_closed()
        return results
    assert run(main()) == expected


def test_framed_frame_then_reset_gives_the_frame_then_the_reset(run: Any) -> None:
    """A frame and the peer's RST together: the frame, then ConnectionResetError. On uvloop
    the readiness engine's next recv waited for ever: libuv ends a poll at its first POLLERR
    (after a last callback, which took the frame), and the reader was never registered again."""
    async def main() -> list[Any]:
        outcomes = []
        for _ in range(10):
            client, server = tcp_pair()
            stream = csock.aio.FramedStream(server)
            first = asyncio.create_task(stream.recv())
            await asyncio.sleep(0.01)                 # (waiting: the reader is registered)
            client.setsockopt(std.SOL_SOCKET, std.SO_LINGER, struct.pack("ii", 1, 0))
            client.sendall(b"\0\0\0\2hi")
            client.close()                              # RST right behind the frame
            outcomes.append(bytes(await asyncio.wait_for(first, 5)))
            try:
                await asyncio.wait_for(stream.recv(), 5)
            except Exception as error:
                outcomes.append(type(error).__name__)
            stream.close()
            await stream.wait_closed()
        return outcomes
    assert run(main()) == [b"hi", "ConnectionResetError"] * 10


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


@pytest.mark.parametrize("closer", CLOSERS)
def test_framed_socket_closed_under_a_waiting_recv(run: Any, closer: str) -> None:
    """The socket itself closed (not the stream) while a recv waits: the recv raises
    OSError(EBADF), so does the next, the peer sees the end of stream, and the loop no longer
    watches the number: a connection that takes it is served (on the readiness engine the
    loop's registration outlived the file: the recv hung, asyncio's next registration on the
    number raised FileNotFoundError, uvloop aborted the process)."""
    async def main() -> None:
        peer, sock = tcp_pair()
        stream = csock.aio.FramedStream(sock)
        waiting = asyncio.create_task(stream.recv())
        await asyncio.sleep(0.02)
        number = sock.fileno()
        close_from(closer, sock)
        with pytest.raises(OSError) as caught:
            await asyncio.wait_for(waiting, 2)
        assert caught.value.errno == errno.EBADF
        with pytest.raises(OSError) as caught:
            await stream.recv()
        assert caught.value.errno == errno.EBADF
        await asyncio.sleep(0.02)              # (a close from another thread: the loop's turn)
        peer.settimeout(2)
        assert peer.recv(10) == b""
        taker, other = take_number(number, *tcp_pair())
        sending = csock.aio.FramedStream(taker)
        receiving = csock.aio.FramedStream(other)
        message = bytes(range(256)) * 4096 * 12       # 12 MiB: the sender registers a writer
        sent = asyncio.create_task(sending.send(message))
        assert bytes(await asyncio.wait_for(receiving.recv(), 10)) == message
        await sent
        for each in (stream, sending, receiving):
            each.close()
        peer.close()

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


def test_framed_close_after_the_loop_is_gone(run: Any) -> None:
    a, b = framed_pair()

    async def main() -> None:
        task = asyncio.create_task(b.recv())
        await asyncio.sleep(0.01)
        await a.send(b"x")
        assert bytes(await task) == b"x"
        # b's reader is still registered (it stays between calls) when the loop closes.

    run(main())                                 # the loop is closed when run returns
    b.close()
    a.close()
    assert a.socket.fileno() == -1 and b.socket.fileno() == -1


def test_framed_recv_after_close_raises_connection_aborted_even_after_eof(run: Any) -> None:
    """The same error on both engines: a closed FramedStream says it is closed, whether or
    not it saw the end of stream first."""
    async def main() -> None:
        a, b = framed_pair()
        a.close()
        await a.wait_closed()
        with pytest.raises(EOFError):
            await asyncio.wait_for(b.recv(), 5)
        b.close()
        await b.wait_closed()
        for call in (b.recv(), b.recv_many()):
            with pytest.raises(ConnectionAbortedError):
                await asyncio.wait_for(call, 5)
    run(main())


def test_framed_recv_cancelled_as_the_stream_closes_raises_cancelled(run: Any) -> None:
    """close() and cancel() in one iteration while recv waits: the task is cancelled (as
    asyncio.timeout, TaskGroup and wait_for need), on both engines."""
    async def main() -> None:
        a, b = framed_pair()
        task = asyncio.create_task(b.recv())
        await asyncio.sleep(0.01)
        b.close()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await b.wait_closed()
        a.close()
    run(main())


@pytest.mark.parametrize("bad", [0, -1])
def test_framed_recv_many_checks_max_messages_with_messages_kept(run: Any, bad: int) -> None:
    """Messages received for a recv_many cancelled before it resumed are kept for the next
    call; a next call with max_messages below 1 is still a ValueError (on epoll, 0 returned
    [], the end-of-stream value, and -1 a slice), and the kept messages stay for a good one."""
    async def main() -> None:
        raw, peer = csock.socketpair()
        stream = csock.aio.FramedStream(peer)
        task = asyncio.create_task(stream.recv_many())
        await asyncio.sleep(0.01)
        raw.sendall(b"\0\0\0\1x\0\0\0\1y")
        while stream._read_waiter is None or not stream._read_waiter.done():
            await asyncio.sleep(0)                # handed over, the task not yet resumed
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        with pytest.raises(ValueError, match="at least 1"):
            await stream.recv_many(bad)
        assert [bytes(m) for m in await stream.recv_many()] == [b"x", b"y"]
        stream.close()
        raw.close()
    run(main())


def test_framed_length_above_max_size_then_end_of_stream_is_too_large(run: Any) -> None:
    """A length above max_size, then the peer's close: FrameTooLargeError from the first
    call (the length is checked as it arrives), not IncompleteReadError."""
    async def main() -> None:
        x, y = csock.socketpair()
        stream = csock.aio.FramedStream(y, max_size=1000)
        x.sendall(struct.pack("!I", 2000))
        await asyncio.sleep(0.05)
        x.close()
        for call in (stream.recv, stream.recv_many):
            with pytest.raises(csock.FrameTooLargeError):
                await asyncio.wait_for(call(), 5)
        stream.close()
        await stream.wait_closed()
    run(main())


def test_close_after_the_loop_closed_with_sends_pending_closes_the_socket(run: Any) -> None:
    """A stream whose loop closed while a large send was pending (asyncio.run returned): its
    close() closes the socket at once, as on epoll; the uring stream waited for a send
    completion no closed ring could deliver (socket and fd open until the GC's finalizer)."""
    a, peer = csock.socketpair()
    streams = []

    async def main() -> None:
        stream = csock.aio.FramedStream(a, write_limit=0)
        streams.append(stream)
        asyncio.ensure_future(stream.send(b"y" * 5_000_000))   # (the kernel takes part)
        await asyncio.sleep(0.1)

    run(main())                                 # (then the loop is closed)
    streams[0].close()
    assert a.fileno() == -1
    received = bytearray()
    with peer:
        peer.settimeout(10)
        while chunk := peer.recv(1 << 20):      # until end of stream: close(2) happened
            received += chunk
    assert 0 < len(received) < 4 + 5_000_000 and set(received[4:]) == {ord("y")}
