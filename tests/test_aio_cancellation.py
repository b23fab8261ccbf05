"""Cancelling a csock.aio call loses nothing: a cancelled receive leaves every byte for the
next call, a cancelled send sends nothing, on both loops."""
from __future__ import annotations

import asyncio
import gc
import socket as std
import struct
from typing import Any

import pytest

import csock
import csock.aio
from csock.aio import _readiness

from .pairs import fd_count, framed_pair, nonblocking_pair

pytestmark = [pytest.mark.timeout(60), pytest.mark.usefixtures("aio_engine")]


def test_recv_batch_cancelled_loses_nothing(run: Any) -> None:
    async def main() -> None:
        a, b = nonblocking_pair(std.SOCK_DGRAM)
        task = asyncio.create_task(csock.aio.recv_batch(b))
        await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert not _readiness._waiting          # reader removed
        a.send(b"after")
        batch = await asyncio.wait_for(csock.aio.recv_batch(b), 5)
        assert [bytes(d.data) for d in batch] == [b"after"]
        a.close()
        b.close()
    run(main())


def test_a_wait_left_pending_on_a_closed_loop_keeps_no_fd(loop_kind: str) -> None:
    """A csock.aio.recv_batch still waiting when its program drops the socket and closes the
    loop without cancelling it: the fd closes once the garbage is collected, as with the
    loop's own sock_recv (a module-wide registry kept the wait, its socket and the loop)."""
    async def leave_a_receive_waiting() -> None:
        a, b = nonblocking_pair(std.SOCK_DGRAM)
        asyncio.ensure_future(csock.aio.recv_batch(b))
        await asyncio.sleep(0.01)
        a.close()

    before = fd_count()
    if loop_kind == "uvloop":
        import uvloop
        loop = uvloop.new_event_loop()
    else:
        loop = asyncio.new_event_loop()
    loop.run_until_complete(leave_a_receive_waiting())
    loop.close()
    del loop
    gc.collect()
    assert not _readiness._waiting
    assert fd_count() <= before + (2 if loop_kind == "uvloop" else 0)   # (uvloop's own pipe)


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


def test_framed_send_cancelled_before_acceptance_sends_nothing(run: Any) -> None:
    async def main() -> None:
        a, b = framed_pair(write_limit=1 << 20)
        a.socket.setsockopt(std.SOL_SOCKET, std.SO_SNDBUF, 4096)
        first = bytes([1]) * 2_000_000
        sending = asyncio.create_task(a.send(first))  # accepted; most of it in the backlog
        await asyncio.sleep(0.02)
        assert a.pending_send > 1 << 20
        second = asyncio.create_task(a.send(bytes([2]) * 10))
        await asyncio.sleep(0.02)
        assert not second.done()                     # the backlog must drain first
        second.cancel()
        with pytest.raises(asyncio.CancelledError):
            await second
        third = asyncio.create_task(a.send(bytes([3]) * 10))
        got = [bytes(await asyncio.wait_for(b.recv(), 10)) for _ in range(2)]
        await asyncio.wait_for(sending, 5)
        await asyncio.wait_for(third, 5)
        assert got == [first, bytes([3]) * 10]       # the cancelled message never went out
        a.close()
        b.close()
    run(main())


def test_framed_cancelled_after_the_callback_received_loses_nothing(run: Any) -> None:
    """The readiness callback reads for the waiting recv; a cancel that lands before the
    coroutine resumes keeps those messages (and errors) for the next call."""
    async def main() -> None:
        raw, sock = csock.socketpair()
        stream = csock.aio.FramedStream(sock, engine="epoll")  # (its readiness callback)
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
