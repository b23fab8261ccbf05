"""StreamSocket: the stdlib calls on the hot path, send_buffers, recv_exactly (API §0, §2)."""
from __future__ import annotations

import array
import os
import signal
import socket as stdlib_socket
import struct
import subprocess
import sys
import threading
import time

import pytest

import csock
from csock import _fastio

from .pairs import BAD_RECEIVE_BUFFERS, STREAM_FAMILIES, outcome, stream_pair


@pytest.fixture(params=STREAM_FAMILIES)
def pair(request):
    with stream_pair(request.param) as p:
        yield p


def recv_all(sock, n):
    chunks = []
    while n:
        chunk = sock.recv(n)
        assert chunk, "unexpected end of stream"
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def test_type_specific_classes():
    with csock.socket() as s:
        assert type(s) is csock.StreamSocket and isinstance(s, stdlib_socket.socket)
    a, b = csock.socketpair()
    with a, b:
        assert type(a) is csock.StreamSocket
        assert type(a.dup()) is csock.StreamSocket
    assert csock.StreamSocket.send is _fastio.sock_send
    assert csock.StreamSocket.recv_into is _fastio.sock_recv_into


def test_send_recv_roundtrip(pair):
    a, b = pair
    assert a.send(b"hello") == 5
    assert recv_all(b, 5) == b"hello"
    data = os.urandom(3_000_000)
    t = threading.Thread(target=a.sendall, args=(data,))
    t.start()
    got = bytearray()
    buf = bytearray(65536)
    while len(got) < len(data):
        n = b.recv_into(buf)
        got += buf[:n]
    t.join()
    assert bytes(got) == data


def test_send_buffers_every_bytes_like_type(pair):
    a, b = pair
    parts = [b"ab", bytearray(b"cd"), memoryview(b"--ef--")[2:4],
             array.array("H", [0x4847]), b"", b"ij"]
    expected = b"abcdef" + array.array("H", [0x4847]).tobytes() + b"ij"
    assert a.send_buffers(parts) == len(expected)
    assert recv_all(b, len(expected)) == expected


def test_send_buffers_more_than_iov_max(pair):
    a, b = pair
    parts = [i.to_bytes(4, "big") for i in range(5000)]   # IOV_MAX is 1024 on Linux
    expected = b"".join(parts)
    t = threading.Thread(target=lambda: a.send_buffers(parts))
    t.start()
    assert recv_all(b, len(expected)) == expected
    t.join()


def test_send_buffers_resumes_partial_writes(pair):
    a, b = pair
    parts = [os.urandom(1 << 20) for _ in range(8)]       # far more than the socket buffers
    result = {}
    t = threading.Thread(target=lambda: result.setdefault("n", a.send_buffers(parts)))
    t.start()
    got = recv_all(b, 8 << 20)
    t.join()
    assert result["n"] == 8 << 20 and got == b"".join(parts)


def test_send_buffers_bad_item_sends_nothing(pair):
    a, b = pair
    with pytest.raises(TypeError):
        a.send_buffers([b"first", "not bytes", b"third"])
    with pytest.raises(TypeError):
        a.send_buffers([b"first", 42])
    b.setblocking(False)
    with pytest.raises(BlockingIOError):
        b.recv(100)


def test_send_buffers_non_blocking_returns_count_moved(pair):
    a, b = pair
    a.setblocking(False)
    total = a.send_buffers([b"\x00" * (1 << 20)] * 64)
    assert 0 < total < 64 << 20
    with pytest.raises(BlockingIOError):
        a.send_buffers([b"more"])
    a.setblocking(True)


def test_send_buffers_timeout_raises(pair):
    a, b = pair
    a.settimeout(0.2)
    start = time.monotonic()
    with pytest.raises(TimeoutError):
        a.send_buffers([b"\x00" * (1 << 20)] * 64)
    assert time.monotonic() - start < 5   # one deadline for the call, not per write


def test_recv_exactly(pair):
    a, b = pair
    a.sendall(b"abc")
    threading.Timer(0.05, a.sendall, args=(b"defgh",)).start()
    assert b.recv_exactly(8) == b"abcdefgh"
    buf = bytearray(4)
    a.sendall(b"wxyz")
    assert b.recv_exactly_into(buf) is None and buf == b"wxyz"
    assert b.recv_exactly(0) == b""


def test_recv_exactly_end_of_stream(pair):
    a, b = pair
    a.sendall(b"partial")
    a.shutdown(csock.SHUT_WR)
    with pytest.raises(csock.IncompleteReadError) as info:
        b.recv_exactly(100)
    assert info.value.partial == b"partial" and isinstance(info.value, EOFError)
    buf = bytearray(10)
    with pytest.raises(csock.IncompleteReadError) as info:
        b.recv_exactly_into(buf)
    assert info.value.partial == b""


def test_recv_exactly_timeout_raises_with_the_bytes_read(pair):
    """Nothing is kept hidden on the socket: the bytes a timed-out recv_exactly read are in the
    error, and every receive method goes on with the bytes that follow, in order."""
    a, b = pair
    b.settimeout(0.1)
    a.sendall(b"abc")
    with pytest.raises(TimeoutError) as info:
        b.recv_exactly(6)
    assert info.value.partial == b"abc"
    a.sendall(b"defghij")
    assert b.recv(1) == b"d"
    assert b.recvfrom(1)[0] == b"e"
    assert b.recvmsg(1)[0] == b"f"
    buf = bytearray(1)
    assert b.recvfrom_into(buf)[0] == 1 and buf == b"g"
    assert b.recvmsg_into([buf])[0] == 1 and buf == b"h"
    assert b.recv_into(buf) == 1 and buf == b"i"
    assert b.recv_exactly(1) == b"j"


def test_recv_exactly_into_timeout_raises_with_the_bytes_placed(pair):
    a, b = pair
    b.settimeout(0.1)
    a.sendall(b"wxy")
    buf = bytearray(b"-" * 6)
    with pytest.raises(TimeoutError) as info:
        b.recv_exactly_into(buf)
    assert info.value.partial == b"wxy" and buf == b"wxy---"   # also at the buffer's front
    a.sendall(b"z")
    assert b.recv(10) == b"z"


def test_recv_exactly_non_blocking_raises_with_the_bytes_read(pair):
    a, b = pair
    b.setblocking(False)
    with pytest.raises(BlockingIOError) as info:
        b.recv_exactly(3)
    assert info.value.partial == b""
    a.sendall(b"ab")
    time.sleep(0.05)
    with pytest.raises(BlockingIOError) as info:
        b.recv_exactly(3)
    assert info.value.partial == b"ab"
    buf = bytearray(3)
    with pytest.raises(BlockingIOError) as info:
        b.recv_exactly_into(buf)
    assert info.value.partial == b""
    a.sendall(b"cde")
    time.sleep(0.05)
    assert b.recvfrom(10)[0] == b"cde"


def test_readiness_after_a_timed_out_recv_exactly_is_the_kernels(pair):
    """select() (so selectors and asyncio) sees what a receive would get: no bytes are held
    back where the kernel's readiness cannot see them."""
    import select
    a, b = pair
    b.settimeout(0.1)
    a.sendall(b"12")
    with pytest.raises(TimeoutError):
        b.recv_exactly(4)
    assert select.select([b], [], [], 0)[0] == []
    b.setblocking(False)
    with pytest.raises(BlockingIOError):
        b.recv(10)                      # nothing readable, as select said
    a.sendall(b"34")
    assert select.select([b], [], [], 5)[0] == [b]
    assert b.recv(10) == b"34"


@pytest.mark.timeout(120, method="thread")      # takes SIGALRM, pytest-timeout's own
def test_recv_exactly_other_errors_carry_the_bytes_read_too():
    """A signal handler that raises ends the call; the bytes it read are on the exception."""
    class Alarm(Exception):
        pass

    def handler(signum, frame):
        raise Alarm()

    a, b = csock.socketpair()
    old = signal.signal(signal.SIGALRM, handler)
    try:
        with a, b:
            a.sendall(b"half")
            signal.setitimer(signal.ITIMER_REAL, 0.05)
            with pytest.raises(Alarm) as info:
                b.recv_exactly(8)
            assert info.value.partial == b"half"
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def test_bad_arguments():
    a, b = csock.socketpair()
    with a, b:
        with pytest.raises(ValueError):
            b.recv(-1)
        with pytest.raises(ValueError):
            b.recv_exactly(-1)
        with pytest.raises(TypeError):
            a.send("text")
        with pytest.raises(TypeError):
            b.recv_exactly_into(b"read-only")
        with pytest.raises(ValueError):
            b.recv_into(bytearray(4), 5)


@pytest.mark.parametrize("buffer", BAD_RECEIVE_BUFFERS)
def test_recv_exactly_into_a_bad_buffer_is_recv_intos_type_error(buffer):
    """As recv_into's (the stdlib's): TypeError for a buffer it cannot write, a released view
    too (it was ValueError), and nothing is read."""
    make = BAD_RECEIVE_BUFFERS[buffer]
    a, b = csock.socketpair()
    with a, b, stdlib_socket.socket(fileno=os.dup(b.fileno())) as std:
        a.sendall(b"queued")
        expected = outcome(lambda: std.recv_into(make()))
        assert expected.startswith("TypeError: recv_into() argument 1 must be read-write")
        assert outcome(lambda: b.recv_exactly_into(make())) == \
            expected.replace("recv_into", "recv_exactly_into")
        b.setblocking(False)
        assert b.recv(100) == b"queued"


def test_peer_reset():
    with csock.create_server(("127.0.0.1", 0)) as server:
        a = csock.create_connection(server.getsockname())
        b, _ = server.accept()
        with a, b:
            b.setsockopt(csock.SOL_SOCKET, csock.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            a.sendall(b"unread")
            b.close()                   # unread data + linger 0: RST
            time.sleep(0.05)
            with pytest.raises(ConnectionResetError):
                a.recv_exactly(10)


def test_closed_peer_broken_pipe_without_sigpipe():
    code = (
        "import signal, csock\n"
        "signal.signal(signal.SIGPIPE, signal.SIG_DFL)\n"
        "a, b = csock.socketpair(); b.close()\n"
        "for call in (lambda: a.send(b'x'), lambda: a.sendall(b'x'),\n"
        "             lambda: a.send_buffers([b'x'])):\n"
        "    try:\n        call()\n    except BrokenPipeError:\n        print('EPIPE')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["EPIPE"] * 3


def test_gil_released_while_blocked(pair):
    a, b = pair
    ticks = []
    stop = threading.Event()

    def spin():
        while not stop.is_set():
            ticks.append(1)
            time.sleep(0.001)

    t = threading.Thread(target=spin)
    t.start()
    threading.Timer(0.3, a.sendall, args=(b"wake",)).start()
    assert b.recv_exactly(4) == b"wake"
    stop.set()
    t.join()
    assert len(ticks) > 20


@pytest.mark.timeout(120, method="thread")      # takes SIGALRM, pytest-timeout's own
def test_signal_interrupts_blocked_recv_exactly():
    a, b = csock.socketpair()

    class Interrupted(Exception):
        pass

    def handler(signum, frame):
        raise Interrupted

    old = signal.signal(signal.SIGALRM, handler)
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.1)
        with pytest.raises(Interrupted):
            b.recv_exactly(10)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
        a.close()
        b.close()


@pytest.mark.timeout(120, method="thread")      # takes SIGALRM, pytest-timeout's own
def test_eintr_storm_keeps_data_intact(pair):
    a, b = pair
    calls = []
    old = signal.signal(signal.SIGALRM, lambda *_: calls.append(1))
    data = os.urandom(16 << 20)
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.0005, 0.0005)
        t = threading.Thread(target=a.sendall, args=(data,))
        t.start()
        got = b.recv_exactly(len(data))
        t.join()
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    assert len(got) == len(data)
    # on failure, the index of the first bad byte
    assert got == data, next(i for i in range(len(data)) if got[i] != data[i])
    assert calls


def test_use_after_close_is_ebadf():
    a, b = csock.socketpair()
    b.close()
    a.close()
    with pytest.raises(OSError) as info:
        a.send(b"x")
    assert info.value.errno == 9


def test_kernel_timeout_surfaces_as_blocking_io_error(pair):
    a, b = pair
    b.setsockopt(csock.SOL_SOCKET, csock.SO_RCVTIMEO, struct.pack("@ll", 0, 50_000))   # timeval
    start = time.monotonic()
    with pytest.raises(BlockingIOError):
        b.recv(10)
    assert time.monotonic() - start >= 0.04
    a.sendall(b"ab")
    with pytest.raises(BlockingIOError) as info:
        b.recv_exactly(3)
    assert info.value.partial == b"ab"      # handed back, not kept on the socket
    a.sendall(b"c")
    assert b.recv_exactly(1) == b"c"
    stream = csock.FramedStream(b)
    a.sendall(b"\x00\x00\x00\x02x")
    with pytest.raises(BlockingIOError):
        stream.recv()
    a.sendall(b"y")
    assert stream.recv() == b"xy"


def kernel_send_timeout(sock, seconds=0.05):
    """setsockopt(SO_SNDTIMEO): the socket stays blocking, the kernel ends a send's wait."""
    tv = struct.pack("@ll", int(seconds), int(seconds % 1 * 1_000_000))
    sock.setsockopt(csock.SOL_SOCKET, csock.SO_SNDTIMEO, tv)


@pytest.mark.parametrize("zerocopy", [False, True])
def test_send_buffers_cut_by_a_kernel_send_timeout_raises(pair, zerocopy):
    """Blocking mode: send_buffers sends everything or raises (API §0). SO_SNDTIMEO passing
    with the peer not reading is BlockingIOError, as the stdlib's sendall raises, with .sent
    the bytes that went first: exactly those reach the peer, nothing after them."""
    a, b = pair
    kernel_send_timeout(a)
    chunks = [bytes([i]) * 1_000_000 for i in range(8)]
    with pytest.raises(BlockingIOError) as info:
        a.send_buffers(chunks, zerocopy=zerocopy)
    sent = info.value.sent
    assert 0 < sent < 8_000_000
    b.settimeout(10)
    assert b.recv_exactly(sent) == b"".join(chunks)[:sent]
    b.settimeout(0.1)
    with pytest.raises(TimeoutError):
        b.recv(1)
    a.setblocking(False)                    # non-blocking: the partial count, as documented
    assert 0 < a.send_buffers(chunks) < 8_000_000


def test_submodules_reachable_after_plain_import():
    code = "import csock; print(csock.packet.parse.__name__, csock.aio.recv_batch.__name__)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          env=dict(os.environ,
                                   PYTHONPATH=os.path.dirname(os.path.dirname(csock.__file__))))
    assert proc.stdout.split() == ["parse", "recv_batch"], proc.stderr


# --- blocking calls first tried with the GIL held (io_try_held) ---------------------------------

def test_blocking_recv_with_waitall_still_waits_for_everything():
    a, b = csock.socketpair()
    with a, b:
        threading.Timer(0.05, lambda: (a.send(b"abc"), time.sleep(0.05), a.send(b"defgh"))).start()
        assert b.recv(8, stdlib_socket.MSG_WAITALL) == b"abcdefgh"


def test_blocking_recv_returns_queued_bytes_and_then_blocks():
    a, b = csock.socketpair()
    with a, b:
        a.send(b"queued")
        buf = bytearray(16)
        assert b.recv_into(buf) == 6 and buf[:6] == b"queued"
        threading.Timer(0.05, lambda: a.send(b"later")).start()
        assert b.recv(16) == b"later"          # nothing queued: the held try gave way to the wait


def test_blocking_datagram_send_waits_for_room_instead_of_failing():
    a, b = csock.socketpair(stdlib_socket.AF_UNIX, stdlib_socket.SOCK_DGRAM)
    with a, b:
        a.setblocking(False)
        sent = 0
        try:
            while True:
                a.send(b"%08d" % sent)
                sent += 1
        except BlockingIOError:
            pass
        a.setblocking(True)                     # the queue is full: the held try gets EAGAIN
        drained: list[bytes] = []

        def drain() -> None:
            time.sleep(0.1)
            drained.extend(b.recv(8) for _ in range(sent))
        reader = threading.Thread(target=drain)
        reader.start()
        assert a.send(b"last") == 4             # ...and the send then waits for room
        reader.join()
        assert drained == [b"%08d" % i for i in range(sent)] and b.recv(8) == b"last"


@pytest.mark.parametrize("call", ["send_buffers", "sendall"])
def test_a_timeout_after_part_of_a_send_says_how_many_bytes_went(call):
    """send_buffers and sendall with a timeout send everything or raise TimeoutError; the
    error's .sent is the byte count that went first (what the peer then reads)."""
    a, b = csock.socketpair()
    with a, b:
        a.settimeout(0.3)
        data = bytes(range(256)) * 40_000
        with pytest.raises(TimeoutError) as caught:
            if call == "send_buffers":
                a.send_buffers([data[:5_000_000], data[5_000_000:]])
            else:
                a.sendall(data)
        b.setblocking(False)
        got = bytearray()
        while True:
            try:
                chunk = b.recv(1 << 20)
            except BlockingIOError:
                break
            got += chunk
        assert 0 < caught.value.sent == len(got) and got == data[:len(got)]
