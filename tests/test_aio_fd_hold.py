"""csock.aio's epoll engine holds the fd a loop watches (a LoopWatch) only as long as the loop
watches it, and lets it go in every way a program can leave it: a detach() between waits, a
loop closed before the socket, a transport that failed to be made, a forked child's close()."""
from __future__ import annotations

import asyncio
import gc
import os
import sys
import threading
import time
from typing import Any

import pytest

import csock
import csock.aio

pytestmark = pytest.mark.timeout(60)


def new_loop(loop_kind: str) -> asyncio.AbstractEventLoop:
    if loop_kind == "uvloop":
        import uvloop
        return uvloop.new_event_loop()
    return asyncio.new_event_loop()


def is_open(fd: int) -> bool:
    return os.path.exists(f"/proc/self/fd/{fd}")


def test_detach_between_waits_gives_the_sockets_own_number(run: Any) -> None:
    """Between waits nothing watches the number: detach() hands it over itself, as the
    stdlib's does (the stream held it for good, and detach() gave a dup and closed it)."""
    async def main() -> None:
        raw, sock = csock.socketpair()
        stream = csock.aio.FramedStream(sock, engine="epoll")
        raw.sendall(b"\0\0\0\1x")
        assert bytes(await stream.recv()) == b"x"
        raw.sendall(b"\0\0\0\1y")                   # readable with nobody waiting:
        await asyncio.sleep(0.02)                   # the reader is removed
        number = sock.fileno()
        assert sock.detach() == number and is_open(number)
        os.close(number)
        raw.close()
    run(main())


@pytest.mark.parametrize("waiting_in", ["recv_batch", "FramedStream.recv"])
def test_closing_the_socket_after_its_loop_closed_closes_the_fd(
        loop_kind: str, waiting_in: str) -> None:
    """A wait left pending when the loop was closed, then the socket closed: the fd closes at
    once and nothing is reported (the hand-over resolved the closed loop's futures, raised
    "Event loop is closed" as unraisable, and the wait's fd stayed open for good)."""
    reported: list[Any] = []
    sock = csock.socket(csock.AF_UNIX, csock.SOCK_DGRAM) if waiting_in == "recv_batch" \
        else csock.socketpair()[0]
    sock.setblocking(False)
    number = sock.fileno()
    kept: list[Any] = []

    async def leave_a_wait() -> None:
        if waiting_in == "recv_batch":
            kept.append(asyncio.ensure_future(csock.aio.recv_batch(sock)))
        else:
            stream = csock.aio.FramedStream(sock, engine="epoll")
            kept.extend([stream, asyncio.ensure_future(stream.recv())])
        await asyncio.sleep(0.02)

    loop = new_loop(loop_kind)
    loop.run_until_complete(leave_a_wait())
    loop.close()
    hook, sys.unraisablehook = sys.unraisablehook, reported.append
    try:
        sock.close()
        gc.collect()
    finally:
        sys.unraisablehook = hook
    assert not reported and not is_open(number)


def test_a_datagram_endpoint_that_failed_to_be_made_holds_nothing(run: Any) -> None:
    """A protocol with no way to receive: create_datagram_endpoint raises TypeError, and the
    transport half made is not told of its socket's later close (its connection_lost was
    called on a protocol that never had connection_made)."""
    lost: list[Any] = []

    class Deaf(asyncio.BaseProtocol):
        def connection_lost(self, exc: Exception | None) -> None:
            lost.append(exc)

    async def main() -> None:
        sock = csock.socket(csock.AF_INET, csock.SOCK_DGRAM)
        sock.bind(("127.0.0.1", 0))
        number = sock.fileno()
        with pytest.raises(TypeError):
            await csock.aio.create_datagram_endpoint(Deaf, sock=sock, engine="epoll")
        sock.close()
        await asyncio.sleep(0.02)
        assert not lost and not is_open(number)
    run(main())


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
def test_a_forked_childs_close_leaves_the_parents_loop_watching(loop_kind: str) -> None:
    """fork() while the parent's stream waits (its loop stopped between runs): the child closes
    the socket while a call of its own runs on it, which runs the close hooks; the parent's
    watch, inherited, is not the child's to act on (it removed the parent's registration from
    the epoll instance both share, and the parent's recv never woke)."""
    loop = new_loop(loop_kind)
    a, b = csock.socketpair()

    async def start() -> tuple[Any, Any]:
        stream = csock.aio.FramedStream(a, engine="epoll")
        task = asyncio.ensure_future(stream.recv())
        await asyncio.sleep(0.02)
        return stream, task

    stream, task = loop.run_until_complete(start())
    pid = os.fork()
    if pid == 0:
        try:
            a.settimeout(5)
            threading.Thread(target=lambda: a.recv(1), daemon=True).start()
            time.sleep(0.1)
            a.close()                                # deferred: the close hooks run
        finally:
            os._exit(0)
    os.waitpid(pid, 0)
    b.sendall(b"\0\0\0\5hello")
    try:
        assert bytes(loop.run_until_complete(asyncio.wait_for(task, 5))) == b"hello"
    finally:
        stream.close()
        b.close()
        loop.close()
