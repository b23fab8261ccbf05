"""csock.aio.recv_batch, recv_batch_into and send_batch: readiness waits on the loop, one
wake-up per batch, on both loops."""
from __future__ import annotations

import asyncio
import errno
import socket as std
from typing import Any

import pytest

import csock
import csock.aio
from csock.aio import _readiness

from .pairs import indexed_payload, nonblocking_pair, udp_pair

pytestmark = pytest.mark.timeout(60)


@pytest.mark.parametrize("kind", [std.SOCK_DGRAM, std.SOCK_SEQPACKET], ids=["dgram", "seqpacket"])
def test_batches_over_socketpair_10k_in_order(run: Any, kind: int) -> None:
    count = 10_000
    messages = [indexed_payload(i) for i in range(count)]

    async def main() -> None:
        a, b = nonblocking_pair(kind)
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
        assert not _readiness._waiting
        a.close()
        b.close()
    run(main())


def test_seqpacket_end_of_stream_is_empty_batch(run: Any) -> None:
    async def main() -> None:
        a, b = nonblocking_pair(std.SOCK_SEQPACKET)
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
        a, b = nonblocking_pair(std.SOCK_SEQPACKET)
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


def test_udp_10k_with_credit_window_all_arrive(run: Any) -> None:
    count, window = 10_000, 1000
    messages = [indexed_payload(i) for i in range(count)]

    async def main() -> None:
        a, b = udp_pair(blocking=False)
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
        a, b = nonblocking_pair(std.SOCK_DGRAM)
        msgs = [indexed_payload(i) for i in range(100)]
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


def test_recv_batch_into_waits_then_fills_the_buffer(run: Any) -> None:
    async def main() -> None:
        for kind in (std.SOCK_DGRAM, std.SOCK_SEQPACKET):
            a, b = nonblocking_pair(kind)
            buf = bytearray(16 * 32)
            task = asyncio.create_task(csock.aio.recv_batch_into(b, buf, 16))
            await asyncio.sleep(0.01)
            assert not task.done()
            msgs = [b"%03d" % i * (1 + i % 5) for i in range(20)]
            assert a.send_batch(msgs) == 20
            lengths = await asyncio.wait_for(task, 5)
            assert lengths == [len(m) for m in msgs]
            assert [bytes(buf[i * 16:i * 16 + n]) for i, n in enumerate(lengths)] == msgs
            assert not _readiness._waiting
            a.close()
            b.close()
    run(main())


def test_concurrent_waiters_on_one_socket(run: Any) -> None:
    async def main() -> None:
        a, b = nonblocking_pair(std.SOCK_DGRAM)
        tasks = [asyncio.create_task(csock.aio.recv_batch(b, max_messages=1)) for _ in range(3)]
        await asyncio.sleep(0.01)
        a.send_batch([b"1", b"2", b"3"])
        results = await asyncio.wait_for(asyncio.gather(*tasks), 5)
        assert sorted(bytes(r[0].data) for r in results) == [b"1", b"2", b"3"]
        assert not _readiness._waiting
        a.close()
        b.close()
    run(main())


def test_send_batch_waits_for_writability(run: Any) -> None:
    async def main() -> None:
        a, b = nonblocking_pair(std.SOCK_DGRAM)
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
        a, b = nonblocking_pair(std.SOCK_DGRAM)
        b.close()
        with pytest.raises(OSError) as info:
            await csock.aio.send_batch(a, [b"x"])
        assert info.value.errno in (errno.ECONNREFUSED, errno.ENOTCONN, errno.EPIPE)
        a.close()
    run(main())
