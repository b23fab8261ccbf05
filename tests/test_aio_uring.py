"""csock.aio's io_uring engine: choosing it, one kernel entry for many streams, close and
cancellation, back-pressure, connections closing under load, fork, Ctrl-C, a soak; on both
loops. (The FramedStream, server and cancellation suites also run whole on this engine: the
``aio_engine`` fixture.)"""
from __future__ import annotations

import asyncio
import ctypes
import errno
import gc
import os
import random
import re
import resource
import signal
import struct
import subprocess
import sys
import textwrap
import threading
import time
import weakref
from pathlib import Path
from typing import Any

import pytest

import csock
import csock.aio
import csock.uring
from csock.aio import _uring_engine, _uring_framed

from .children import child_env, script_output
from .pairs import fd_count, framed_pair, outcome
from .tracing import needs_strace, strace

pytestmark = [
    pytest.mark.timeout(90),
    pytest.mark.skipif(not _uring_engine.usable(),
                       reason="io_uring, or an operation csock.aio's engine needs, is unavailable"),
]

TAG = struct.Struct("!II")          # (connection, sequence) at the head of each test message


def ring_fds() -> int:
    """io_uring instances this process has open."""
    count = 0
    for name in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{name}") == "anon_inode:[io_uring]":
                count += 1
        except OSError:
            pass
    return count


async def echo(stream: csock.aio.FramedStream) -> None:
    while messages := await stream.recv_many():
        await stream.send_many(messages)


# --- choosing the engine --------------------------------------------------------------------

def test_engine_choice_and_the_forced_fallback(run: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    async def exchange(engine: str) -> tuple[str, bytes]:
        a, b = framed_pair(engine=engine)
        await a.send(b"ping")
        got = bytes(await asyncio.wait_for(b.recv(), 5))
        kind = type(a).__name__
        a.close()
        b.close()
        await a.wait_closed()
        await b.wait_closed()
        return kind, got

    assert run(exchange("uring")) == ("UringFramedStream", b"ping")
    assert run(exchange("auto")) == ("UringFramedStream", b"ping")
    assert run(exchange("epoll")) == ("FramedStream", b"ping")
    # Where io_uring is missing (ENOSYS, a seccomp filter, io_uring_disabled), "auto" takes
    # the readiness path and works; "uring" says why it cannot.
    monkeypatch.setattr(csock.uring, "_fallback_forced", True)
    assert run(exchange("auto")) == ("FramedStream", b"ping")
    a, b = csock.socketpair()
    with pytest.raises(OSError, match="io_uring"):
        csock.aio.FramedStream(a, engine="uring")
    with pytest.raises(ValueError, match="engine"):
        csock.aio.FramedStream(a, engine="io_uring")
    a.close()
    b.close()


def test_auto_asks_whether_io_uring_is_available_each_time(
        run: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """csock.uring.available() is the public answer to "can io_uring be used here": made
    False after the engine was chosen once in this process, "auto" must hear it."""
    async def kind() -> str:
        a, b = framed_pair(engine="auto")
        name = type(a).__name__
        a.close()
        b.close()
        await a.wait_closed()
        await b.wait_closed()
        return name

    assert run(kind()) == "UringFramedStream"
    monkeypatch.setattr(csock.uring, "available", lambda: False)
    assert run(kind()) == "FramedStream"
    assert not _uring_engine.usable()


def test_a_server_on_auto_falls_back_whole(run: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(csock.uring, "_fallback_forced", True)

    async def main() -> tuple[str, str]:
        server = await csock.aio.start_framed_server(echo, "127.0.0.1", 0, engine="auto")
        port = server.sockets[0].getsockname()[1]
        client = await csock.aio.open_framed_connection("127.0.0.1", port, engine="auto")
        await client.send(b"x" * 100)
        assert bytes(await asyncio.wait_for(client.recv(), 5)) == b"x" * 100
        kinds = server.engine, client.engine
        client.close()
        server.close()
        await server.wait_closed()
        return kinds

    assert run(main()) == ("epoll", "epoll")



@pytest.mark.parametrize(("named", "default"), [("epoll", "auto"), ("uring", "epoll")])
def test_a_server_serves_on_the_engine_it_was_given(
        run: Any, monkeypatch: pytest.MonkeyPatch, named: str, default: str) -> None:
    # The streams a server hands its handler take the server's engine, not the default: a
    # server on "epoll" once gave its handlers io_uring streams under the "auto" default.
    if not _uring_engine.usable():
        pytest.skip("io_uring, or an operation csock.aio's engine needs, is unavailable")
    monkeypatch.setattr(csock.aio.framed, "default_engine", default)
    served: list[str] = []

    async def record_and_echo(stream: csock.aio.FramedStream) -> None:
        served.append(stream.engine)
        await echo(stream)

    async def main() -> bytes:
        server = await csock.aio.start_framed_server(record_and_echo, "127.0.0.1", 0,
                                                     engine=named)
        port = server.sockets[0].getsockname()[1]
        client = await csock.aio.open_framed_connection("127.0.0.1", port)
        await client.send(b"which engine")
        got = bytes(await asyncio.wait_for(client.recv(), 5))
        client.close()
        server.close()
        await server.wait_closed()
        return got

    assert run(main()) == b"which engine"
    assert served == [named]

def test_the_default_engine_is_io_uring_where_it_can_run(run: Any) -> None:
    if not _uring_engine.usable():
        pytest.skip("io_uring, or an operation csock.aio's engine needs, is unavailable")

    async def main() -> tuple[str, str, str]:
        server = await csock.aio.start_framed_server(echo, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        client = await csock.aio.open_framed_connection("127.0.0.1", port)
        transport, _ = await csock.aio.create_datagram_endpoint(
            asyncio.DatagramProtocol, local_addr=("127.0.0.1", 0))
        engines = server.engine, client.engine, transport.engine
        transport.close()
        client.close()
        server.close()
        await server.wait_closed()
        return engines

    assert csock.aio.framed.default_engine == "auto"
    assert run(main()) == ("uring", "uring", "uring")


# A child whose seccomp filter fails io_uring_setup(2) (number 425 on every architecture's
# unified table) with the errno given, as Docker's default profile does with EPERM: the
# default engine must fall back to epoll there, for streams, servers and datagram endpoints.
# CSOCK_URING=0 in the environment must do the same without a filter.
FILTERED_IO_URING = textwrap.dedent("""
    import asyncio, ctypes, errno, sys
    import csock.aio, csock.uring

    def refuse_io_uring_setup(err):
        insn = ctypes.c_uint64
        def bpf(code, jt, jf, k):
            return code | jt << 16 | jf << 24 | k << 32
        program = (insn * 4)(
            bpf(0x20, 0, 0, 0),                      # A = seccomp_data.nr
            bpf(0x15, 0, 1, 425),                    # A == __NR_io_uring_setup ?
            bpf(0x06, 0, 0, 0x00050000 | err),       # SECCOMP_RET_ERRNO | err
            bpf(0x06, 0, 0, 0x7FFF0000))             # SECCOMP_RET_ALLOW
        class Program(ctypes.Structure):
            _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]
        libc = ctypes.CDLL(None, use_errno=True)
        prog = Program(4, ctypes.addressof(program))
        if libc.prctl(38, 1, 0, 0, 0) or libc.prctl(22, 2, ctypes.byref(prog), 0, 0):
            raise OSError(ctypes.get_errno(), "seccomp")   # PR_SET_NO_NEW_PRIVS, SECCOMP

    async def echo(stream):
        while messages := await stream.recv_many():
            await stream.send_many(messages)

    class Collect(asyncio.DatagramProtocol):
        def __init__(self):
            self.got = asyncio.get_running_loop().create_future()
        def datagrams_received(self, datagrams):
            self.got.set_result([bytes(d.data) for d in datagrams])

    async def main():
        server = await csock.aio.start_framed_server(echo, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        client = await csock.aio.open_framed_connection("127.0.0.1", port)
        await client.send(b"over tcp")
        echoed = bytes(await asyncio.wait_for(client.recv(), 5))
        transport, protocol = await csock.aio.create_datagram_endpoint(
            Collect, local_addr=("127.0.0.1", 0))
        sender = csock.socket(csock.AF_INET, csock.SOCK_DGRAM)
        sender.sendto(b"over udp", transport.get_extra_info("sockname"))
        datagrams = await asyncio.wait_for(protocol.got, 5)
        print(server.engine, client.engine, transport.engine, echoed, datagrams)
        sender.close()
        transport.close()
        client.close()
        server.close()
        await server.wait_closed()

    if sys.argv[1] == "CSOCK_URING=0":          # the operator's switch, in the environment
        err = errno.EPERM
    else:
        err = getattr(errno, sys.argv[1])
        refuse_io_uring_setup(err)
    try:
        csock.uring.Ring(8, 0)
    except OSError as error:
        assert error.errno == err, error
    else:
        raise AssertionError("the filter let io_uring_setup through")
    assert not csock.uring.available()
    with __import__("pytest").raises(OSError, match="io_uring"):
        a, b = csock.socketpair()
        csock.aio.FramedStream(a, engine="uring")
    asyncio.run(main())
""")


@pytest.mark.parametrize("refusal", ["EPERM", "ENOSYS", "CSOCK_URING=0"])
def test_the_default_engine_falls_back_where_seccomp_refuses_io_uring(
        tmp_path: Path, refusal: str) -> None:
    switch = dict([refusal.split("=")]) if "=" in refusal else {}
    lines = script_output(tmp_path, FILTERED_IO_URING, refusal, **switch)
    assert lines[0] == "epoll epoll epoll b'over tcp' [b'over udp']"


# A process where io_uring works but this loop's ring cannot be made: every fd number is taken
# (EMFILE), so io_uring_setup fails while the epoll engine needs no new fd. "auto" must serve
# on epoll there; it once made a uring stream whose first recv raised EMFILE.
NO_FD_FOR_A_RING = textwrap.dedent("""
    import asyncio, errno, os, resource
    import csock, csock.aio, csock.uring
    from csock.aio import _datagram_uring, _uring_engine, _uring_framed   # (no fd to import)

    class Collect(asyncio.DatagramProtocol):
        def __init__(self):
            self.got = asyncio.get_running_loop().create_future()
        def datagrams_received(self, datagrams):
            self.got.set_result([bytes(d.data) for d in datagrams])

    def take_every_fd():
        limit = max(int(name) for name in os.listdir("/proc/self/fd")) + 8
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))
        fillers = []
        while True:
            try:
                fillers.append(os.open(os.devnull, os.O_RDONLY))
            except OSError as error:
                assert error.errno == errno.EMFILE, error
                return fillers

    async def main():
        assert _uring_engine.usable()
        a, b = csock.socketpair()
        udp_a, udp_b = (csock.socket(csock.AF_INET, csock.SOCK_DGRAM) for _ in range(2))
        udp_a.bind(("127.0.0.1", 0))
        fillers = take_every_fd()
        try:
            udp_b.sendto(b"for recv_many", udp_a.getsockname())
            await asyncio.sleep(0.01)
            print([[bytes(data) for data, _ in got] for got in csock.uring.recv_many([udp_a])])
            try:
                csock.aio.FramedStream(a, engine="uring")
            except OSError as error:
                print("uring:", errno.errorcode[error.errno])
            x, y = csock.aio.FramedStream(a), csock.aio.FramedStream(b)
            await x.send(b"over a stream")
            got = bytes(await asyncio.wait_for(y.recv(), 5))
            transport, protocol = await csock.aio.create_datagram_endpoint(Collect, sock=udp_a)
            udp_b.sendto(b"a datagram", udp_a.getsockname())
            datagrams = await asyncio.wait_for(protocol.got, 5)
            print(x.engine, y.engine, transport.engine, got, datagrams)
            transport.close()
            x.close()
            y.close()
        finally:
            for fd in fillers:
                os.close(fd)

    asyncio.run(main())
""")


def test_the_default_engine_falls_back_where_the_loop_gets_no_ring(tmp_path: Path) -> None:
    assert script_output(tmp_path, NO_FD_FOR_A_RING) == [
        "[[b'for recv_many']]", "uring: EMFILE",
        "epoll epoll epoll b'over a stream' [b'a datagram']"]



# A process with little address space (RLIMIT_AS, as a container or a supervisor sets): the
# loop's ring once mapped all 4,096 of its 32 KiB buffers at once, 128 MiB, and could not be
# made with 100 MiB to spare (then "auto" served on epoll; before that, recv raised ENOMEM).
LITTLE_ADDRESS_SPACE = textwrap.dedent("""
    import asyncio, resource
    import csock, csock.aio

    def address_space():
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmSize:"):
                    return int(line.split()[1]) * 1024

    async def main():
        room = address_space() + 100 * 2**20
        resource.setrlimit(resource.RLIMIT_AS, (room, room))
        a, b = csock.socketpair()
        x, y = csock.aio.FramedStream(a), csock.aio.FramedStream(b)
        messages = [bytes([i]) * (i * 997 + 1) for i in range(200)] + [b"m" * (4 << 20)]
        got = []
        async def take():
            while len(got) < len(messages):
                got.extend(bytes(m) for m in await y.recv_many())
        await asyncio.gather(x.send_many(messages), asyncio.wait_for(take(), 30))
        print(x.engine, y.engine, got == messages)
        x.close()
        y.close()

    asyncio.run(main())
""")


@pytest.mark.asan_unsafe
def test_a_loop_s_ring_fits_in_a_little_address_space(tmp_path: Path) -> None:
    assert script_output(tmp_path, LITTLE_ADDRESS_SPACE) == ["uring uring True"]


def test_a_stream_or_server_refused_at_its_making_leaves_no_ring_open(run: Any) -> None:
    # Made in a running loop, a stream or server makes the loop's ring as its engine is chosen:
    # when it is then refused, that ring has no user and must close, not wait for the loop.
    async def main() -> tuple[int, int]:
        rings_before = ring_fds()           # (uvloop's libuv has a ring of its own for files)
        udp = csock.socket(csock.AF_INET, csock.SOCK_DGRAM)
        a, b = csock.socketpair()
        with udp, a, b:
            with pytest.raises(ValueError, match="SOCK_STREAM"):
                csock.aio.FramedStream(udp, engine="uring")
            with pytest.raises(ValueError, match="write_limit"):
                csock.aio.FramedStream(a, write_limit=-1)
            with csock.create_server(("127.0.0.1", 0)) as taken, pytest.raises(OSError):
                await csock.aio.start_framed_server(echo, "127.0.0.1", taken.getsockname()[1],
                                                    engine="uring")
            await asyncio.sleep(0.01)
            return rings_before, ring_fds()

    rings_before, rings_after = run(main())
    assert rings_after == rings_before

# --- one kernel entry for many streams -------------------------------------------------------

MANY_STREAMS = textwrap.dedent("""
    import asyncio, os, sys
    import csock, csock.aio
    N = 40
    MARK = os.open(os.devnull, os.O_WRONLY)
    BIG = bytes(range(256)) * 2048                       # 512 KiB: more than a socket holds
    async def main():
        pairs = [csock.socketpair() for _ in range(N)]
        senders = [csock.aio.FramedStream(a, engine="uring", write_limit=1 << 24)
                   for a, _ in pairs]
        os.write(MARK, b"begin")
        await asyncio.gather(*(s.send(BIG) for s in senders))
        await asyncio.sleep(0.05)
        os.write(MARK, b"end")
        assert all(s.pending_send > 0 for s in senders)  # the rest waits in ring sends
        receivers = [csock.aio.FramedStream(b, engine="uring") for _, b in pairs]
        got = await asyncio.gather(*(r.recv() for r in receivers))
        assert all(bytes(g) == BIG for g in got)
        for s in senders + receivers:
            s.close()
    asyncio.run(main())
    print("ok")
""")


@needs_strace
def test_what_the_kernel_would_not_take_goes_in_one_io_uring_enter(tmp_path: Path) -> None:
    """40 streams each send 512 KiB to peers not reading yet: each offers it at once with
    sendmsg(2) over the message's own buffer (the frame's header, then its 524,288 bytes: no
    packed copy; a second call finds the socket full), and the 40 remainders go to the kernel
    as ring sends with a handful of io_uring_enter calls (not one per stream), then arrive
    whole."""
    text, out = strace(tmp_path, MANY_STREAMS, "io_uring_enter,sendto,sendmsg,write")
    assert out.strip() == "ok"
    window = text[text.index('"begin"'):text.index('"end"')]
    enters = re.findall(r"\bio_uring_enter\(", window)
    in_place = re.findall(r"\bsendmsg\(\d+, \{[^\n]*iov_len=4\}, \{[^\n]*iov_len=524288\}\], "
                          r"msg_iovlen=2", window)
    assert len(in_place) == 40, window[-2000:]
    assert len(re.findall(r"\bsendmsg\(", window)) <= 80, window[-2000:]
    assert not re.search(r"\bsendto\(", window), window[-2000:]
    assert 1 <= len(enters) <= 6, window[-3000:]


SMALL_AND_ODD_SENDS = textwrap.dedent("""
    import asyncio, os, pickle
    import csock, csock.aio
    MARK = os.open(os.devnull, os.O_WRONLY)
    async def main():
        a, b = (csock.aio.FramedStream(s, engine="uring") for s in csock.socketpair())
        os.write(MARK, b"begin")
        await a.send_many([b"one", b"two"])
        await a.send(b"three")
        await a.send(pickle.PickleBuffer(b"p" * 100_000))     # a buffer without a length
        os.write(MARK, b"end")
        got = []
        while len(got) < 4:
            got += [bytes(m) for m in await b.recv_many()]
        assert got == [b"one", b"two", b"three", b"p" * 100_000], got
        a.close(); b.close()
    asyncio.run(main())
    print("ok")
""")


@needs_strace
def test_small_sends_are_packed_into_one_send_each(tmp_path: Path) -> None:
    """Messages below SEND_IN_PLACE, and a buffer whose length len() cannot tell, are packed
    and offered with one send(2) per call (sendmsg over their buffers cost a ping-pong more
    than the copy)."""
    text, out = strace(tmp_path, SMALL_AND_ODD_SENDS, "sendto,sendmsg,write")
    assert out.strip() == "ok"
    window = text[text.index('"begin"'):text.index('"end"')]
    assert len(re.findall(r"\bsendto\(", window)) == 3, window[-2000:]
    assert not re.search(r"\bsendmsg\(", window), window[-2000:]


FAILING_AFTER_PART = textwrap.dedent("""
    import asyncio, sys, warnings
    import csock, csock.aio
    warnings.simplefilter("error")                      # a coroutine never awaited fails too
    BIG = bytes(range(256)) * 4096                      # 1 MiB: more than a socket holds
    async def main(engine):
        a, b = csock.socketpair()
        sender = csock.aio.FramedStream(a, engine=engine)
        receiver = csock.aio.FramedStream(b, engine=engine)
        try:
            await sender.send(BIG)
        except ConnectionResetError:
            print("raised")
        got = await asyncio.wait_for(receiver.recv(), 10)
        assert bytes(got) == BIG, len(got)
        await sender.send(b"after")
        assert bytes(await receiver.recv()) == b"after"
        sender.close(); receiver.close()
    asyncio.run(main(sys.argv[1]))
    print("ok")
""")


@needs_strace
@pytest.mark.parametrize("engine", ["uring", "epoll"])
def test_a_send_failing_after_part_still_sends_the_whole_frame(
        tmp_path: Path, engine: str) -> None:
    """The kernel takes part of a 1 MiB frame, then the next sendmsg(2) fails (strace makes
    it return ECONNRESET): send() raises, and the frame's rest still goes out (on the ring,
    or when the socket is writable), so the peer reads the whole frame, never a cut one."""
    text, out = strace(tmp_path, FAILING_AFTER_PART, "sendmsg", engine,
                       inject="sendmsg:error=ECONNRESET:when=2")
    assert out.split() == ["raised", "ok"], text[-2000:]
    sends = re.findall(r"\bsendmsg\(.*", text)
    assert re.search(r"= \d+$", sends[0]) and "ECONNRESET" in sends[1], text[-2000:]


RECEIVES = textwrap.dedent("""
    import asyncio, os, sys
    import csock, csock.aio
    N = 40
    MARK = os.open(os.devnull, os.O_WRONLY)
    async def main():
        pairs = [[csock.aio.FramedStream(s, engine="uring") for s in csock.socketpair()]
                 for _ in range(N)]
        for a, b in pairs:                               # every receive armed, warmed up
            await a.send(b"warm")
            assert bytes(await b.recv()) == b"warm"
        os.write(MARK, b"begin")
        await asyncio.gather(*(a.send_many([b"%d" % i] * 3) for i, (a, b) in enumerate(pairs)))
        got = await asyncio.gather(*(b.recv_many() for a, b in pairs))
        os.write(MARK, b"end")
        assert [[bytes(m) for m in g] for g in got] == [[b"%d" % i] * 3 for i in range(N)], got
        for a, b in pairs:
            a.close(); b.close()
    asyncio.run(main())
    print("ok")
""")


@needs_strace
def test_receives_on_many_streams_make_no_system_call_each(tmp_path: Path) -> None:
    """40 streams each receive: no recv(2)/recvmsg(2) at all, the multishot receives' 40
    completions come through a handful of io_uring_enter calls."""
    text, out = strace(tmp_path, RECEIVES, "io_uring_enter,recvfrom,recvmsg,write")
    assert out.strip() == "ok"
    window = text[text.index('"begin"'):text.index('"end"')]
    assert not re.search(r"\b(recvfrom|recvmsg)\(", window), window[-2000:]
    assert len(re.findall(r"\bio_uring_enter\(", window)) <= 6, window[-3000:]


def test_a_handler_that_raises_is_logged_and_the_others_still_run(
        run: Any, caplog: pytest.LogCaptureFixture) -> None:
    if not _uring_engine.usable():
        pytest.skip("io_uring, or an operation csock.aio's engine needs, is unavailable")

    async def main() -> list[int]:
        driver = _uring_engine.driver_for(asyncio.get_running_loop()).acquire()
        a, b = csock.socketpair()
        sent: list[int] = []

        def buggy(completion: Any) -> None:
            raise RuntimeError("a handler's bug")

        driver.start(driver.ring.send(a, b"x"), buggy)
        driver.start(driver.ring.send(a, b"yz"), lambda c: sent.append(c.value))
        for _ in range(500):
            await asyncio.sleep(0.01)
            if sent:
                break
        assert b.recv(10) == b"xyz"
        driver.release()
        a.close()
        b.close()
        return sent

    assert run(main()) == [2]
    assert "a handler's bug" in caplog.text


# --- close and cancellation -----------------------------------------------------------------

def receiving_uring_stream() -> tuple[csock.socket, csock.aio.FramedStream, asyncio.Task[Any]]:
    """A uring FramedStream over a socketpair, a task waiting in its recv, and the other end
    (in a running loop)."""
    raw, sock = csock.socketpair()
    stream = csock.aio.FramedStream(sock, engine="uring")
    return raw, stream, asyncio.create_task(stream.recv())


async def close_and_see_end_of_stream(stream: csock.aio.FramedStream, waiting: asyncio.Task[Any],
                                      raw: csock.socket) -> None:
    """close() the uring stream that waiting (its recv) waits on: the recv raises
    ConnectionAbortedError, and its fd closes once the receive ended, so the peer raw sees
    end of stream (FIN)."""
    sock = stream._sock
    stream.close()
    with pytest.raises(ConnectionAbortedError):
        await waiting
    raw.settimeout(2)
    assert raw.recv(10) == b""
    assert sock.fileno() == -1
    await asyncio.sleep(0.02)


def test_close_cancels_the_receive_and_the_peer_sees_end_of_stream(run: Any) -> None:
    rings_before = ring_fds()

    async def main() -> None:
        raw, stream, waiting = receiving_uring_stream()
        await asyncio.sleep(0.02)                  # the multishot recv is armed
        driver = _uring_engine.driver_for(asyncio.get_running_loop())
        assert driver.pending == 1
        await close_and_see_end_of_stream(stream, waiting, raw)
        assert driver.ring.closed                  # its last user gone: no fd outlives them
        raw.close()

    run(main())
    assert ring_fds() == rings_before


async def receive_once_and_leave_open(a: csock.socket, peer: csock.socket,
                                      loops: list[weakref.ref[asyncio.AbstractEventLoop]]) -> None:
    """A message received on a uring stream over a, which is never closed (its multishot recv
    stays armed); the running loop is added to loops (weakly)."""
    loops.append(weakref.ref(asyncio.get_running_loop()))
    stream = csock.aio.FramedStream(a, engine="uring")
    peer.sendall(b"\0\0\0\x03one")
    assert bytes(await stream.recv()) == b"one"


def test_a_stream_left_open_when_its_loop_closes_lets_its_socket_close(run: Any) -> None:
    """A uring stream never closed, its multishot recv armed, when its loop closes (as
    asyncio.run closes it): the loop's ring is closed with the loop, its receive cancelled, so
    that bytes the peer sends afterwards stay in the socket for the program, the socket's
    close() closes the fd at once (the peer sees end of stream), the loop can be collected,
    and nothing stays open."""
    rings_before = ring_fds()
    fds: list[int] = []
    for _ in range(4):
        a, peer = csock.socketpair()
        loops: list[weakref.ref[asyncio.AbstractEventLoop]] = []
        run(receive_once_and_leave_open(a, peer, loops))
        with peer:
            peer.sendall(b"\0\0\0\x03two")
            a.settimeout(2)
            assert a.recv(100) == b"\0\0\0\x03two"           # not taken by an orphan recv
            number = a.fileno()
            a.close()
            assert not os.path.exists(f"/proc/self/fd/{number}")
            peer.settimeout(2)
            assert peer.recv(10) == b""
        gc.collect()
        assert loops[0]() is None
        assert ring_fds() == rings_before
        fds.append(fd_count())
    assert fds[1:] == fds[:1] * 3           # (after the first: uvloop's signal pipe, made once)


def test_a_loop_dropped_without_close_is_collected_with_its_ring(recwarn: Any) -> None:
    """A loop left unclosed with a uring stream open (run_until_complete, then dropped): the
    GC collects it, and its ring is closed then, so that the socket's close() closes the fd
    (the peer sees end of stream) and no ring fd stays open. The ring's requests' handlers
    refer to the stream, so the loop: held by the ring, which a module-level reference and
    the loop's finalizer kept alive, they made the loop reachable for ever. (asyncio's loop
    only: an unclosed uvloop loop is never collected, csock or not, its libuv handles holding
    it.)"""
    rings_before = ring_fds()
    fds_before = fd_count()
    a, peer = csock.socketpair()

    async def main() -> csock.aio.FramedStream:
        stream = csock.aio.FramedStream(a, engine="uring")
        receiving = asyncio.ensure_future(stream.recv())
        await asyncio.sleep(0.05)               # the multishot recv is armed in the kernel
        receiving.cancel()
        with pytest.raises(asyncio.CancelledError):
            await receiving
        return stream

    loop = asyncio.new_event_loop()
    stream = loop.run_until_complete(main())
    del stream
    dropped = weakref.ref(loop)
    del loop
    gc.collect()
    assert dropped() is None
    assert ring_fds() == rings_before
    with peer:
        a.close()
        peer.settimeout(2)
        assert peer.recv(10) == b""
    assert fd_count() == fds_before


def test_closing_the_socket_under_a_waiting_recv_raises_in_it(
        run: Any, caplog: pytest.LogCaptureFixture) -> None:
    """The socket itself closed (not the stream) while a recv waits: close() cancels the
    multishot recv, which cannot be armed again on a closed socket, so the waiting recv raises
    OSError(EBADF) (no handler traceback logged, no hang), and the peer sees end of stream."""
    async def main() -> None:
        raw, stream, waiting = receiving_uring_stream()
        await asyncio.sleep(0.02)                  # the multishot recv is armed
        stream._sock.close()
        with pytest.raises(OSError) as caught:
            await asyncio.wait_for(waiting, 2)
        assert caught.value.errno == errno.EBADF
        with pytest.raises(OSError):
            await stream.recv()                    # and so does the next one
        raw.settimeout(2)
        assert raw.recv(10) == b""
        stream.close()
        raw.close()

    with caplog.at_level("ERROR", logger="csock.aio"):
        run(main())
    assert not caplog.records


def test_closing_the_socket_as_a_large_frame_arrives_raises_in_the_waiting_recv(
        run: Any) -> None:
    """The socket closed itself while a 4 MiB frame arrives, at 40 moments: the waiting recv
    raises OSError(EBADF) or returns the frame, never waits on. (The multishot recv ends after
    recv_limit bytes; the Ring does not arm it again on a socket being closed, and its last
    completion, a partial frame with no more to come, left the recv waiting for ever.)"""
    frame = struct.pack("!I", 4 << 20) + b"h" * (4 << 20)

    async def once(delay: float) -> str:
        raw, stream, waiting = receiving_uring_stream()
        await asyncio.sleep(0.005)                 # the multishot recv is armed
        sender = threading.Thread(target=lambda: outcome(lambda: raw.sendall(frame)))
        sender.start()
        await asyncio.sleep(delay)
        stream.socket.close()
        try:
            message = await asyncio.wait_for(waiting, 2)
            assert len(message) == 4 << 20
            return "returned"
        except OSError as error:
            assert error.errno == errno.EBADF
            return "EBADF"
        finally:
            raw.close()
            sender.join()
            stream.close()

    async def main() -> None:
        for tried in range(40):
            await once((tried % 20) * 0.0005)

    run(main())


def test_close_while_the_kernel_receives_into_a_large_frame(run: Any) -> None:
    # The rest of a 5 MiB frame is received into the stream's arena by a plain recv: close()
    # cancels it like the multishot one, the fd closes (FIN), and nothing outlives the stream.
    rings_before = ring_fds()

    async def main() -> None:
        raw, stream, waiting = receiving_uring_stream()
        head = struct.pack("!I", 5 << 20) + b"h" * (600 * 1024)   # past recv_limit
        sender = threading.Thread(target=raw.sendall, args=(head,))
        sender.start()
        while sender.is_alive():
            await asyncio.sleep(0.01)              # (the loop reaps meanwhile)
        await asyncio.sleep(0.05)
        framed = stream._framed
        assert framed.buffered >= 256 * 1024
        with pytest.raises(RuntimeError, match="io_uring recv"):
            framed.feed(b"x")                      # the arena is lent to the kernel
        await close_and_see_end_of_stream(stream, waiting, raw)
        with pytest.raises(csock.IncompleteReadError):   # not RuntimeError: the loan ended
            framed.feed_eof()                      # with the cancelled recv
        raw.close()

    run(main())
    assert ring_fds() == rings_before      # (conftest checks every other fd)


def test_a_recv_cancelled_after_the_messages_arrived_loses_nothing(run: Any) -> None:
    async def main() -> None:
        a, b = framed_pair(engine="uring")
        task = asyncio.create_task(b.recv_many())
        await asyncio.sleep(0.01)
        await a.send_many([b"one", b"two"])
        # Until the completion handed the messages to the waiting task, not yet resumed.
        while b._read_waiter is None or not b._read_waiter.done():
            await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert [bytes(m) for m in await b.recv_many()] == [b"one", b"two"]
        a.close()
        b.close()
        await a.wait_closed()
        await b.wait_closed()

    run(main())


def test_abort_with_a_send_in_flight_closes_at_once(run: Any) -> None:
    async def main() -> None:
        raw, sock = csock.socketpair()
        raw.setsockopt(csock.SOL_SOCKET, csock.SO_RCVBUF, 4096)
        stream = csock.aio.FramedStream(sock, engine="uring", write_limit=1 << 24)
        await stream.send(bytes(4 << 20))          # the peer never reads: stays in flight
        await asyncio.sleep(0.02)
        assert stream.pending_send > 0
        stream.abort()
        await asyncio.wait_for(stream.wait_closed(), 2)
        await asyncio.sleep(0.02)
        assert sock.fileno() == -1
        assert asyncio.get_running_loop() not in _uring_engine._drivers   # ring closed
        raw.close()

    run(main())


# --- back-pressure ---------------------------------------------------------------------------

def test_receiving_pauses_above_the_high_water_mark(run: Any,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    # Receiving pauses by cancelling the receive: what the kernel posted meanwhile still comes,
    # at most every ring buffer's worth.
    monkeypatch.setattr(_uring_framed, "READ_HIGH_WATER", 64 * 1024)
    monkeypatch.setattr(_uring_engine, "RING_BUFFERS", 8)
    monkeypatch.setattr(_uring_engine, "RING_BUFFER_SIZE", 4096)
    messages = [struct.pack("!I", i) + bytes([i & 0xFF]) * 1000 for i in range(3000)]

    async def main() -> None:
        a, b = framed_pair(engine="uring", write_limit=1 << 24)
        probe = asyncio.create_task(b.recv())       # arm the receive
        await a.send(b"first")
        assert bytes(await probe) == b"first"
        await a.send_many(messages)                 # 3 MB that b does not read for a while
        await asyncio.sleep(0.2)
        assert b._paused
        assert b._inbox_bytes <= 64 * 1024 + 8 * 4096
        assert a.pending_send > 0                   # TCP pushes back on the sender
        got: list[bytes] = []
        while len(got) < len(messages):
            got += [bytes(m) for m in await asyncio.wait_for(b.recv_many(), 5)]
        assert got == messages
        a.close()
        b.close()
        await a.wait_closed()
        await b.wait_closed()

    run(main())


def test_the_high_water_mark_counts_what_each_queued_message_costs(run: Any) -> None:
    """Empty frames (4 bytes each on the wire) to a reader that does not read: the mark
    counted wire bytes only, and a million MessageViews (60 MiB) queued before 4 MiB of them
    paused the receive. Each message counts its bytes and MESSAGE_COST."""
    budget = _uring_framed.READ_HIGH_WATER // _uring_framed.MESSAGE_COST

    async def main() -> None:
        raw, peer = csock.socketpair()
        b = csock.aio.FramedStream(peer, engine="uring")
        probe = asyncio.create_task(b.recv())       # arm the receive
        raw.sendall(b"\0\0\0\0")
        assert bytes(await asyncio.wait_for(probe, 5)) == b""
        stop = threading.Event()

        def flood() -> None:
            raw.settimeout(0.1)
            while not stop.is_set():
                try:
                    raw.sendall(b"\0\0\0\0" * 16384)
                except OSError:
                    pass

        flooder = threading.Thread(target=flood)
        flooder.start()
        try:
            await asyncio.sleep(1.5)
            queued = len(b._inbox)
        finally:
            stop.set()
            flooder.join(10)
            raw.close()
            b.close()
            await b.wait_closed()
        assert queued <= 2 * budget, f"{queued} messages queued"

    run(main())


@pytest.mark.parametrize("engine", ["epoll", "uring"])
def test_a_frame_above_the_high_water_mark_arriving_slowly_is_received(
        run: Any, monkeypatch: pytest.MonkeyPatch, engine: str) -> None:
    # Bytes of a frame still partial are nothing recv could take: pausing on them waited for
    # ever (a 6 MiB frame trickling in hung the uring stream).
    monkeypatch.setattr(_uring_framed, "READ_HIGH_WATER", 64 * 1024)
    size, chunk = 1 << 20, 16 * 1024
    body = bytes(random.Random(3).randbytes(size))

    async def main() -> None:
        raw, peer = csock.socketpair()
        b = csock.aio.FramedStream(peer, engine=engine)
        raw.setblocking(False)
        loop = asyncio.get_running_loop()

        async def trickle() -> None:
            await loop.sock_sendall(raw, struct.pack("!I", size))
            for start in range(0, size, chunk):
                await loop.sock_sendall(raw, body[start:start + chunk])
                await asyncio.sleep(0.001)          # each piece its own arrival
            await loop.sock_sendall(raw, struct.pack("!I", 2) + b"ok")

        sender = asyncio.create_task(trickle())
        assert bytes(await asyncio.wait_for(b.recv(), 20)) == body
        assert bytes(await asyncio.wait_for(b.recv(), 5)) == b"ok"
        await sender
        raw.close()
        b.close()
        await b.wait_closed()

    run(main())


def test_large_frames_mixed_with_small_ones_arrive_exactly(run: Any) -> None:
    # Once a multishot recv ends (Ring.recv_limit), the rest of a frame larger than a ring
    # buffer is received straight into the stream's arena, then receiving goes back to the
    # ring's buffers: across those switches every byte arrives, in order.
    rng = random.Random(5)
    sizes = [1 << 20, 3, 5 << 20, 300_000, 0, 40_000, (1 << 20) + 1, 7] * 2
    messages = [rng.randbytes(n) for n in sizes]

    async def main() -> None:
        a, b = framed_pair(engine="uring", write_limit=1 << 20)
        sender = asyncio.create_task(a.send_many(messages))
        got: list[bytes] = []
        while len(got) < len(messages):
            got += [bytes(m) for m in await asyncio.wait_for(b.recv_many(), 10)]
        await sender
        assert [len(m) for m in got] == sizes and got == messages
        a.close()
        b.close()
        await a.wait_closed()
        await b.wait_closed()

    run(main())


def sizes_at_the_thresholds() -> list[int]:
    """Message sizes on either side of each size where the uring stream changes course: a
    ring buffer (received in place or into the arena), SEND_IN_PLACE (packed or sent from the
    message's own buffer) and the multishot receive's limit (re-armed, maybe into the arena)."""
    with csock.uring.Ring(8, 0) as ring:
        recv_limit = ring.recv_limit or 256 * 1024       # (0: this kernel takes no limit)
    edges = [_uring_engine.RING_BUFFER_SIZE, _uring_framed.SEND_IN_PLACE, recv_limit, 1 << 20]
    return [0, 1] + [edge + d - 4 for edge in edges for d in (-1, 0, 1)] + [3 << 20]


@pytest.mark.parametrize("seed", range(3))
def test_frames_at_every_threshold_arrive_exactly_between_engines(run: Any, seed: int) -> None:
    # Random runs of messages at the sizes where the uring stream switches path, sent with
    # send or send_many (bytes or bytearray) and received with recv or recv_many, between
    # every pair of engines with uring on one side: each arrives whole and in order.
    rng = random.Random(seed)
    sizes = sizes_at_the_thresholds()

    async def trial(sending: str, receiving: str) -> None:
        a, b = csock.socketpair()
        sender = csock.aio.FramedStream(a, engine=sending,
                                        write_limit=rng.choice([0, 1 << 16, 1 << 24]))
        receiver = csock.aio.FramedStream(b, engine=receiving)
        messages = [rng.randbytes(rng.choice(sizes)) for _ in range(rng.randrange(1, 10))]

        async def send_all() -> None:
            i = 0
            while i < len(messages):
                run_of = messages[i:i + rng.randrange(1, 4)]
                if rng.random() < 0.5:
                    await sender.send_many(run_of)
                else:
                    for m in run_of:
                        await sender.send(bytearray(m) if rng.random() < 0.3 else m)
                i += len(run_of)

        async def receive_all() -> list[bytes]:
            got: list[bytes] = []
            while len(got) < len(messages):
                if rng.random() < 0.5:
                    got.append(bytes(await receiver.recv()))
                else:
                    got += [bytes(m) for m in await receiver.recv_many()]
            return got

        _, got = await asyncio.wait_for(asyncio.gather(send_all(), receive_all()), 10)
        assert [len(m) for m in got] == [len(m) for m in messages]
        assert got == messages
        for stream in (sender, receiver):
            stream.close()
            await stream.wait_closed()

    async def main() -> None:
        for _ in range(30):
            await trial(*rng.choice([("uring", "uring"), ("uring", "epoll"), ("epoll", "uring")]))

    run(main())


def test_every_buffer_held_rearms_the_receive(run: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """With 2 ring buffers of 4 KiB for 20 streams receiving at once, the kernel runs out of
    buffers (ENOBUFS ends a multishot receive): each is armed again, nothing is lost."""
    monkeypatch.setattr(_uring_engine, "RING_BUFFERS", 2)
    monkeypatch.setattr(_uring_engine, "RING_BUFFER_SIZE", 4096)
    rng = random.Random(7)
    payloads = [[rng.randbytes(rng.randrange(1, 9000)) for _ in range(40)] for _ in range(20)]

    async def main() -> None:
        pairs = [framed_pair(engine="uring", write_limit=1 << 24) for _ in payloads]

        async def drain(b: Any, n: int) -> list[bytes]:
            got: list[bytes] = []
            while len(got) < n:
                got += [bytes(m) for m in await asyncio.wait_for(b.recv_many(), 10)]
            return got

        readers = [asyncio.create_task(drain(b, len(p)))
                   for (_, b), p in zip(pairs, payloads, strict=True)]
        await asyncio.sleep(0.01)
        for (a, _), p in zip(pairs, payloads, strict=True):
            await a.send_many(p)
        assert await asyncio.gather(*readers) == payloads
        for a, b in pairs:
            a.close()
            b.close()
            await a.wait_closed()
            await b.wait_closed()

    run(main())


def test_600_streams_receiving_at_once_keep_their_receives_armed(
        run: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """600 streams that each receive a message between two reaps take 600 ring buffers at
    once. Once the first two such rounds have grown the buffers offered (doubled once a
    reap), the third finds enough: no receive ends with ENOBUFS (each would cost a re-arm,
    an exception and a loop iteration; with 512 buffers at most, a server of many
    connections paid that every round)."""
    streams = 600
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 4 * streams:
        pytest.skip(f"RLIMIT_NOFILE allows {hard} files, the test needs {4 * streams}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 4 * streams), hard))
    ended: list[int] = []
    on_receive_error = _uring_framed.UringFramedStream._on_receive_error

    def spy(self: Any, error: OSError) -> None:
        ended.append(error.errno)
        on_receive_error(self, error)

    monkeypatch.setattr(_uring_framed.UringFramedStream, "_on_receive_error", spy)

    async def one_round(pairs: list[Any], round_: int) -> list[bytes]:
        readers = [asyncio.create_task(b.recv()) for _, b in pairs]
        await asyncio.sleep(0.01)                   # every receive armed
        for conn, (a, _) in enumerate(pairs):
            await a.send(TAG.pack(conn, round_))    # send(2) at once: no yield between them
        return [bytes(m) for m in await asyncio.wait_for(asyncio.gather(*readers), 10)]

    async def main() -> list[int]:
        pairs = [framed_pair(engine="uring") for _ in range(streams)]
        try:
            for round_ in range(3):
                ended.clear()
                got = await one_round(pairs, round_)
                assert got == [TAG.pack(conn, round_) for conn in range(streams)]
            return ended
        finally:
            for a, b in pairs:
                a.close()
                b.close()
                await a.wait_closed()
                await b.wait_closed()

    try:
        assert run(main()) == []                    # in the last round
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


# --- connections closing under load ---------------------------------------------------------

def test_no_byte_reaches_another_connection_when_connections_close_under_load(run: Any) -> None:
    """200 clients echo tagged messages through a uring server while a third of them abort
    mid-stream and new ones connect: every echo a client gets is its own, in order, and no fd
    or request is left behind."""
    before = fd_count()

    async def client(port: int, conn: int, abort_after: int | None) -> int:
        stream = await csock.aio.open_framed_connection("127.0.0.1", port, engine="uring")
        seq = 0
        try:
            for _ in range(20):
                burst = [TAG.pack(conn, seq + i) + os.urandom(conn % 50) for i in range(10)]
                await stream.send_many(burst)
                got = 0
                while got < len(burst):
                    for message in await asyncio.wait_for(stream.recv_many(), 10):
                        assert TAG.unpack_from(message) == (conn, seq), \
                            f"connection {conn} got {TAG.unpack_from(message)}, wanted {seq}"
                        seq += 1
                        got += 1
                if abort_after is not None and seq >= abort_after:
                    stream.abort()
                    return seq
        finally:
            stream.close()
            await stream.wait_closed()
        return seq

    async def main() -> list[int]:
        server = await csock.aio.start_framed_server(echo, "127.0.0.1", 0, engine="uring",
                                                     backlog=1024)
        port = server.sockets[0].getsockname()[1]
        rng = random.Random(3)
        plans = [rng.choice([None, None, rng.randrange(10, 150)]) for _ in range(200)]
        counts = await asyncio.gather(*(client(port, k, plan) for k, plan in enumerate(plans)))
        for count, plan in zip(counts, plans, strict=True):
            assert count == (200 if plan is None else (plan + 9) // 10 * 10)
        server.close()
        await asyncio.wait_for(server.wait_closed(), 10)
        await asyncio.sleep(0.05)
        assert asyncio.get_running_loop() not in _uring_engine._drivers   # ring closed
        return counts

    run(main())
    assert fd_count() <= before + 1            # (uvloop's own signal pipe, made once)


# --- fork -----------------------------------------------------------------------------------

@pytest.mark.parametrize("engine", ["epoll", "uring"])
def test_a_forked_child_serves_on_its_own_ring(engine: str) -> None:
    """A server forks a child that runs its own loop and server (a forking server's shape): the
    child's engine builds its own ring and never touches the parent's; both serve, and the
    parent's connections survive the child's exit."""
    async def round_trip(port: int, data: bytes) -> bytes:
        stream = await csock.aio.open_framed_connection("127.0.0.1", port, engine=engine)
        await stream.send(data)
        got = bytes(await asyncio.wait_for(stream.recv(), 5))
        stream.close()
        await stream.wait_closed()
        return got

    async def child_main() -> None:
        server = await csock.aio.start_framed_server(echo, "127.0.0.1", 0, engine=engine)
        assert await round_trip(server.sockets[0].getsockname()[1], b"child") == b"child"
        server.close()
        await server.wait_closed()

    async def main() -> None:
        server = await csock.aio.start_framed_server(echo, "127.0.0.1", 0, engine=engine)
        port = server.sockets[0].getsockname()[1]
        kept = await csock.aio.open_framed_connection("127.0.0.1", port, engine=engine)
        await kept.send(b"before")
        assert bytes(await kept.recv()) == b"before"
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                asyncio.run(child_main())
                code = 0
            finally:
                os._exit(code)
        while True:                                   # keep serving while the child runs
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            await asyncio.sleep(0.01)
        assert os.waitstatus_to_exitcode(status) == 0
        await kept.send(b"after")
        assert bytes(await asyncio.wait_for(kept.recv(), 5)) == b"after"
        assert await round_trip(port, b"again") == b"again"
        kept.close()
        await kept.wait_closed()
        server.close()
        await server.wait_closed()

    asyncio.run(main())


# --- Ctrl-C ------------------------------------------------------------------------------------

SERVE_UNTIL_INTERRUPTED = textwrap.dedent("""
    import asyncio, signal, sys
    import csock, csock.aio
    # A shell without job control starts background jobs, and so this test run and its
    # children, with SIGINT ignored: Ctrl-C must be Python's here whatever ran the tests.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    async def echo(stream):
        while m := await stream.recv_many():
            await stream.send_many(m)
    async def main():
        server = await csock.aio.start_framed_server(echo, "127.0.0.1", 0, engine="uring")
        print("ready", flush=True)
        await server.serve_forever()
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        print("interrupted", flush=True)
""")


def test_ctrl_c_stops_a_uring_server() -> None:
    env = child_env()
    proc = subprocess.Popen([sys.executable, "-c", SERVE_UNTIL_INTERRUPTED], env=env,
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(0.1)
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=10)
    finally:
        proc.kill()
    assert "interrupted" in out


# --- soak ------------------------------------------------------------------------------------

def rss_kib() -> int:
    """Resident memory, after glibc gave back the free memory it keeps (malloc_trim): what is
    still held, not what the allocator caches for reuse."""
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except AttributeError:
        pass                                    # (not glibc)
    with open("/proc/self/status") as f:
        return int(next(line for line in f if line.startswith("VmRSS")).split()[1])


def test_fds_and_memory_stay_flat_over_many_connections(run: Any) -> None:
    async def rounds(count: int) -> list[tuple[int, int]]:
        server = await csock.aio.start_framed_server(echo, "127.0.0.1", 0, engine="uring",
                                                     backlog=1024)
        port = server.sockets[0].getsockname()[1]

        async def one(k: int) -> None:
            stream = await csock.aio.open_framed_connection("127.0.0.1", port, engine="uring")
            await stream.send_many([TAG.pack(k, i) for i in range(20)])
            got = 0
            while got < 20:
                got += len(await asyncio.wait_for(stream.recv_many(), 10))
            stream.close()
            await stream.wait_closed()

        samples = []
        for _ in range(count):
            await asyncio.gather(*(one(k) for k in range(200)))
            await asyncio.sleep(0.02)
            samples.append((fd_count(), rss_kib()))
        server.close()
        await server.wait_closed()
        return samples

    samples = run(rounds(6))
    fds = [fd for fd, _ in samples[1:]]
    assert max(fds) == min(fds), samples
    assert samples[-1][1] - samples[1][1] < 4096, samples    # < 4 MiB over 1,000 connections
