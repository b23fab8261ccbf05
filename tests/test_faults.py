"""Faults with real processes and sockets: a peer killed mid-transfer, resets, absurd
arguments. For each: the exception, and that no byte already accepted was lost or duplicated."""
from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest

import csock

from .children import child_env
from .pairs import fd_count, tcp_pair

WRITER = textwrap.dedent("""
    import csock, sys, struct
    sock = csock.fromfd(int(sys.argv[1]), csock.AF_UNIX, csock.SOCK_STREAM)
    stream = csock.FramedStream(sock)
    i = 0
    while True:
        stream.send_many([struct.pack("!Q", i + k) * 8 for k in range(100)])
        i += 100
""")


def test_peer_killed_mid_transfer_loses_and_duplicates_nothing():
    a, b = csock.socketpair()
    with a, b:
        proc = subprocess.Popen([sys.executable,
                                 "-c", WRITER, str(a.fileno())], pass_fds=[a.fileno()])
        a.close()
        stream = csock.FramedStream(b)
        received = []
        try:
            while len(received) < 20_000:
                received.extend(stream.recv_many())
            proc.send_signal(signal.SIGKILL)
            while True:
                batch = stream.recv_many()
                if not batch:
                    break
                received.extend(batch)
        except csock.IncompleteReadError as e:
            assert len(e.partial) < 4 + 64        # only the frame the kill cut
        finally:
            proc.kill()
            proc.wait()
        for i, message in enumerate(received):     # in order, none lost, none twice
            assert message == i.to_bytes(8, "big") * 8


def test_reset_in_the_middle_of_a_frame():
    with csock.create_server(("127.0.0.1", 0)) as server:
        a = csock.create_connection(server.getsockname())
        b, _ = server.accept()
        with a, b:
            stream = csock.FramedStream(b)
            a.sendall(b"\x00\x00\x00\x05ab")
            a.setsockopt(csock.SOL_SOCKET, csock.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            time.sleep(0.05)
            a.close()
            with pytest.raises((ConnectionResetError, csock.IncompleteReadError)):
                stream.recv()


def test_reset_during_bulk_send():
    with csock.create_server(("127.0.0.1", 0)) as server:
        a = csock.create_connection(server.getsockname())
        b, _ = server.accept()
        with a:
            b.setsockopt(csock.SOL_SOCKET, csock.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            threading.Timer(0.1, b.close).start()
            with pytest.raises((ConnectionResetError, BrokenPipeError)):
                a.send_buffers([b"\x00" * (1 << 20)] * 256)


@pytest.mark.parametrize("call", [
    lambda s: s.recv(-1),
    lambda s: s.recv_exactly(-5),
    lambda s: s.recv_into(bytearray(2), 3),
    lambda s: csock.FramedStream(s).recv_many(-1),
    lambda s: csock.FramedStream(s, max_size=-1),
    lambda s: csock.FramedStream(s, max_size=2**40),
    lambda s: s.send_buffers([b"x"] * (2**20 + 1)),
])
def test_absurd_arguments_raise_value_error(call):
    a, b = csock.socketpair()
    with a, b:
        with pytest.raises(ValueError):
            call(b)


# Every callable of csock._fastio, _packet and _uring, private ones included, called with
# arguments of the wrong type or size: each call may raise or return, never crash the
# interpreter. The calls run in a child process, which prints each call before making it, so a
# crash fails this test and names the call instead of killing pytest.
BAD_ARGUMENTS_CHILD = textwrap.dedent("""
    import itertools, socket as stdlib_socket, sys
    import csock
    from csock import _fastio, _packet, _uring

    def made_by_new(cls):
        try:
            return cls.__new__(cls)
        except Exception:
            return None

    def sockets():
        stream, peer = csock.socketpair()
        dgram, dgram_peer = csock.socketpair(csock.AF_UNIX, csock.SOCK_DGRAM)
        records, records_peer = csock.socketpair(csock.AF_UNIX, csock.SOCK_SEQPACKET)
        plain, plain_peer = stdlib_socket.socketpair()
        closed = csock.socket()
        closed.close()
        made = [stream, peer, dgram, dgram_peer, records, records_peer, plain, plain_peer]
        for s in made:
            s.setblocking(False)                     # nothing may wait for data
        return [stream, dgram, records, plain, closed], made

    socks, keep = sockets()
    # (the wrong-type objects any call may get; the first ones also in threes)
    FEW = [None, -1, 2**64, "text", b"x" * 140, [b"x" * 140], (None,), memoryview(b"abcdef")[::-1],
           socks[1]]
    MANY = FEW + [0, 2**31, -2**63, "", b"", bytearray(3), [], [None], [1, 2], (), (None, None),
                  ("", -1), {}, object(), 1.5, int, _fastio.Datagram, *socks,
                  *(made_by_new(c) for c in (_fastio.Datagram, _fastio.MessageView, _packet.IPv4,
                                             _fastio.SPPHeader, _fastio.BatchReceiver))]

    def call(name, f, args):
        names = []
        for a in args:
            try:
                names.append(repr(a)[:40])
            except Exception:
                names.append(type(a).__name__)
        print(f"{name}({', '.join(names)})", flush=True)
        try:
            f(*args)
        except Exception:
            pass

    def argument_lists(many, most=3):
        yield ()
        for a in many:
            yield (a,)
        yield from itertools.product(many, FEW)
        if most == 3:
            yield from itertools.product(FEW, repeat=3)

    def methods(obj):
        # the methods csock's classes define (not those inherited from object)
        own = {attr for cls in type(obj).__mro__ if cls is not object for attr in vars(cls)}
        for attr in sorted(own - {"__new__", "__init__", "__init_subclass__"}):
            try:
                m = getattr(obj, attr)
            except Exception:
                continue
            if callable(m):
                yield attr, m

    for module, name in [(m, n) for m in (_fastio, _packet, _uring) for n in dir(m)]:
        f = getattr(module, name)
        if not callable(f) or name in ("__loader__", "__build_class__", "__import__"):
            continue
        if isinstance(f, type) and issubclass(f, BaseException):
            continue
        for args in argument_lists(MANY):
            call(name, f, args)
        obj = made_by_new(f) if isinstance(f, type) else None
        if obj is not None:                          # an instance csock never initialised
            for attr, m in methods(obj):
                for args in argument_lists(FEW, most=2):
                    call(f"{name}().{attr}", m, args)
    print("survived", flush=True)
""")


def test_every_fastio_callable_survives_arguments_of_the_wrong_type():
    from csock import _fastio, _packet, _uring
    child = subprocess.run([sys.executable, "-c", BAD_ARGUMENTS_CHILD], capture_output=True,
                           text=True, timeout=300,
                           cwd=os.path.dirname(os.path.dirname(csock.__file__)))
    calls = child.stdout.splitlines()
    assert child.returncode == 0 and calls[-1:] == ["survived"], (
        f"exit {child.returncode} at {calls[-1:]}: {child.stderr[-2000:]}")
    called = {line.split("(")[0].split("()")[0] for line in calls}
    for module in (_fastio, _packet, _uring):
        for name in dir(module):
            f = getattr(module, name)
            if name.startswith("__") or not callable(f):
                continue
            if isinstance(f, type) and issubclass(f, BaseException):
                continue
            assert name in called, f"{module.__name__}.{name} was not called"


def test_no_fd_growth_over_many_pairs():
    before = fd_count()
    for _ in range(2000):
        a, b = csock.socketpair()
        csock.FramedStream(a).send(b"x")
        csock.FramedStream(b).recv()
        a.close()
        b.close()
    assert fd_count() == before


@pytest.mark.parametrize("kind",
                         ["stream recv", "dgram recv_batch",
                          "dgram recv_batch_into", "recv_exactly"])
def test_close_from_another_thread_wakes_a_timed_call_with_ebadf(kind):
    """close(2) alone leaves a thread blocked in recv(2) hanging on Linux; a timed csock call
    sleeps in poll(2) beside a wake eventfd, so close() wakes it and the call raises EBADF (no
    hang, no crash, no read from a reused fd), without shutting the connection down."""
    import threading

    family_type = (
        (csock.AF_UNIX, csock.SOCK_DGRAM) if "dgram" in kind else (csock.AF_UNIX, csock.SOCK_STREAM)
    )
    a, b = csock.socketpair(*family_type)
    b.settimeout(60)
    outcome = []

    def blocked():
        try:
            if kind.endswith("recv_batch_into"):
                outcome.append(b.recv_batch_into(bytearray(1024), 64))
            elif "recv_batch" in kind:
                outcome.append(b.recv_batch())
            elif kind == "recv_exactly":
                outcome.append(b.recv_exactly(100))
            else:
                outcome.append(b.recv(100))
        except BaseException as error:          # noqa: BLE001 - the outcome is the assertion
            outcome.append(error)

    with a:
        if kind == "recv_exactly":
            a.sendall(b"part")                    # accepted bytes are held, then EBADF
        thread = threading.Thread(target=blocked)
        thread.start()
        time.sleep(0.2)
        b.close()
        thread.join(10)
        assert not thread.is_alive(), "the blocked call hung after close()"
    assert (
        len(outcome) == 1 and isinstance(outcome[0], OSError) and outcome[0].errno == errno.EBADF
    ), outcome


@pytest.mark.slow
@pytest.mark.timeout(120, method="thread")      # takes SIGALRM, pytest-timeout's own
def test_eintr_storm_during_a_1_gib_transfer():
    """An interval timer fires every 100 µs while 1 GiB crosses a socketpair: no call fails,
    every byte arrives once, in order (each 1 MiB chunk carries its index)."""
    chunk, chunks = 1 << 20, 1024
    ticks = []
    a, b = csock.socketpair()
    pattern = bytearray(os.urandom(chunk))

    def send_all():
        for i in range(chunks):
            pattern[:8] = i.to_bytes(8, "big")
            a.sendall(pattern)

    old = signal.signal(signal.SIGALRM, lambda *args: ticks.append(1))
    received = bytearray(chunk)
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.0001, 0.0001)
        sender = threading.Thread(target=send_all)
        sender.start()
        for i in range(chunks):
            b.recv_exactly_into(received)
            assert int.from_bytes(received[:8], "big") == i
            assert received[8:] == pattern[8:]
        sender.join(60)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
        a.close()
        b.close()
    assert len(ticks) > 100


def test_every_send_path_raises_broken_pipe_and_no_sigpipe_reaches_the_process():
    """With SIGPIPE at its default action (which kills the process), every csock send path
    to a closed peer raises BrokenPipeError: MSG_NOSIGNAL is on every send."""
    code = textwrap.dedent("""
        import signal, csock
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)
        def stream():
            a, b = csock.socketpair(); b.close(); return a
        def records():
            a, b = csock.socketpair(csock.AF_UNIX, csock.SOCK_SEQPACKET); b.close(); return a
        calls = {
            "send": lambda: stream().send(b"x"),
            "sendall": lambda: stream().sendall(b"x" * 100000),
            "send_buffers": lambda: stream().send_buffers([b"x", bytearray(70000)]),
            "send_buffers_zerocopy": lambda: stream().send_buffers([b"x"], zerocopy=True),
            "framed_send": lambda: csock.FramedStream(stream()).send(b"x"),
            "framed_send_many": lambda: csock.FramedStream(stream()).send_many([b"x"] * 5000),
            "seqpacket_send": lambda: records().send(b"x"),
            "seqpacket_send_batch": lambda: records().send_batch([b"x", b"y"]),
            "send_record": lambda: records().send_record(b"x"),
        }
        for name, call in calls.items():
            try:
                call()
                print(name, "no error")
            except BrokenPipeError:
                print(name, "EPIPE")
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                         env=child_env())
    assert out.returncode == 0, out.stderr            # -SIGPIPE would mean the process was killed
    lines = out.stdout.split("\n")
    assert [line for line in lines if line] == [f"{name} EPIPE" for name in (
        "send", "sendall", "send_buffers", "send_buffers_zerocopy", "framed_send",
        "framed_send_many",
        "seqpacket_send", "seqpacket_send_batch", "send_record")], out.stdout


REGISTER_FOREIGN_SLOT_CHILD = textwrap.dedent("""
    from csock import _fastio
    class Big:
        __slots__ = tuple(f"s{i}" for i in range(4000))
    class Borrower:
        pass
    Borrower._csock_state = Big.__dict__["s3999"]     # another type's slot, 32 KB further on
    try:
        _fastio.register_socket_class(Borrower)
    except (TypeError, ValueError) as error:
        print("refused:", error)
    for obj in [Borrower() for _ in range(1000)]:
        try:
            _fastio.socket_state(obj)
        except TypeError:
            pass
    print("survived", flush=True)
""")


def test_register_socket_class_refuses_a_slot_of_another_type():
    """A private function too must not crash: a class whose _csock_state is another type's
    slot descriptor would have csock write past the end of each instance."""
    child = subprocess.run([sys.executable, "-c", REGISTER_FOREIGN_SLOT_CHILD],
                           capture_output=True, text=True, timeout=60, env=child_env())
    assert child.returncode == 0, child.stderr[-2000:]
    assert child.stdout.splitlines()[0].startswith("refused:")
    assert child.stdout.splitlines()[-1] == "survived"


def test_register_socket_class_keeps_the_first_class():
    """Registering another class must not switch csock's own sockets' state tracking off."""
    class Other:
        __slots__ = ("_csock_state",)
    with pytest.raises(ValueError, match="already registered"):
        csock._fastio.register_socket_class(Other)
    a, b = csock.socketpair()
    with a, b:
        csock._fastio.socket_state(a)
        assert type(a._csock_state) is csock._fastio.SocketState


STATE_SLOT_DROPPED_UNDER_A_CALL_CHILD = textwrap.dedent("""
    import csock, gc, sys, threading, time

    def drop_state(sock):
        member = csock.socket.__dict__["_csock_state"].fget
        for drop in (lambda: delattr(sock, "_csock_state"),
                     lambda: setattr(sock, "_csock_state", None),
                     lambda: member.__self__.__delete__(sock)):
            try:
                drop()
            except AttributeError:
                print("refused", flush=True)
        gc.collect()
        junk = [bytearray(200) for _ in range(2000)]

    if sys.argv[1] == "thread":
        a, b = csock.socketpair()
        receiver = threading.Thread(target=lambda: print("received", a.recv(10), flush=True))
        receiver.start()
        time.sleep(0.2)
        drop_state(a)                   # under the recv blocked in another thread
        b.send(b"hello")
        receiver.join(5)
    else:
        a, b = csock.socketpair(csock.AF_UNIX, csock.SOCK_DGRAM)

        def messages():
            drop_state(a)               # under send_batch, which runs this iterator
            yield b"x"
        print("sent", a.send_batch(messages()), flush=True)
    print(type(a._csock_state).__name__, flush=True)
""")


@pytest.mark.parametrize("when", ["thread", "iterator"])
def test_the_state_slot_cannot_be_dropped_under_a_call(when):
    """A call keeps a borrowed pointer to its socket's SocketState: deleting or replacing the
    private _csock_state slot while it ran freed the state under it (a segfault in io_leave).
    The slot is read-only from Python."""
    child = subprocess.run([sys.executable, "-c", STATE_SLOT_DROPPED_UNDER_A_CALL_CHILD, when],
                           capture_output=True, text=True, timeout=60, env=child_env())
    assert child.returncode == 0, child.stderr[-2000:]
    done = "received b'hello'" if when == "thread" else "sent 1"
    assert child.stdout.splitlines() == ["refused"] * 3 + [done, "SocketState"]


@pytest.mark.parametrize("view_type", ["ReadOnlyView", "MessageView"])
def test_an_uninitialised_view_compares_equal_to_empty_bytes(view_type):
    """(memcmp with a NULL pointer is undefined, even for 0 bytes: the sanitizer build
    aborts on it.)"""
    cls = getattr(csock._fastio, view_type)
    view = cls.__new__(cls)
    assert view == b""
    assert view != b"x"


def test_fromfd_of_a_non_socket_leaks_no_fd():
    r, w = os.pipe()
    try:
        before = fd_count()
        for _ in range(5):
            with pytest.raises(OSError) as caught:
                csock.fromfd(r, csock.AF_INET, csock.SOCK_STREAM)
            assert caught.value.errno == errno.ENOTSOCK
        assert fd_count() == before
    finally:
        os.close(r)
        os.close(w)


# --- sendmsg, sendto and sendfile (the stdlib's calls, on csock sockets): no SIGPIPE -----------

def broken_tcp_pair():
    """A TCP socket whose peer has closed (the first send after that draws the RST), and
    the peer's address."""
    a, b = tcp_pair()
    b.close()
    return a, a.getpeername()


def until_broken_pipe(send):
    """Call send() until it raises BrokenPipeError (the first may go out before the RST)."""
    for _ in range(100):
        try:
            send()
        except BrokenPipeError:
            return
        time.sleep(0.01)
    pytest.fail("no BrokenPipeError")


def sendfile_source(directory):
    path = directory / "payload"
    path.write_bytes(b"F" * 100000)
    return open(path, "rb")                     # noqa: SIM115 - closed by the caller


STDLIB_SEND_CALLS = {
    "sendmsg": lambda s, _, __: s.sendmsg([b"x", b"y"]),
    "sendmsg flags": lambda s, _, __: s.sendmsg([b"x"], [], 0),
    "sendto": lambda s, _, peer: s.sendto(b"x", peer),
    "sendto flags": lambda s, _, peer: s.sendto(b"x", 0, peer),
    "sendfile": lambda s, file, _: (file.seek(0), s.sendfile(file)),
    "sendfile timed": lambda s, file, _: (file.seek(0), s.settimeout(5), s.sendfile(file)),
}


@pytest.mark.parametrize("call", list(STDLIB_SEND_CALLS))
def test_stdlib_send_calls_to_a_closed_peer_raise_broken_pipe_without_sigpipe(call, tmp_path):
    """sendmsg, sendto and sendfile to a closed peer raise BrokenPipeError and deliver no
    SIGPIPE to a handler the program installed (sendmsg/sendto lacked MSG_NOSIGNAL; sendfile(2)
    has no flags at all)."""
    signals = []
    old = signal.signal(signal.SIGPIPE, lambda signum, frame: signals.append(signum))
    sock, peer = broken_tcp_pair()
    try:
        with sendfile_source(tmp_path) as file:
            until_broken_pipe(lambda: STDLIB_SEND_CALLS[call](sock, file, peer))
        for _ in range(100):                    # (a handler runs between bytecodes)
            time.sleep(0.001)
    finally:
        signal.signal(signal.SIGPIPE, old)
        sock.close()
    assert signals == []


def test_sendfile_leaves_a_sigpipe_that_was_pending_before_it(tmp_path):
    """A SIGPIPE already pending (blocked) when sendfile meets EPIPE is the program's: it is
    still pending afterwards (the one sendfile(2) raised is merged into it, not consumed)."""
    signals = []
    old = signal.signal(signal.SIGPIPE, lambda signum, frame: signals.append(signum))
    sock, _ = broken_tcp_pair()
    try:
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGPIPE})
        signal.pthread_kill(threading.get_ident(), signal.SIGPIPE)
        with sendfile_source(tmp_path) as file:
            until_broken_pipe(lambda: (file.seek(0), sock.sendfile(file)))
        assert signal.SIGPIPE in signal.sigpending()
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGPIPE})
        for _ in range(100):
            time.sleep(0.001)
        signal.signal(signal.SIGPIPE, old)
        sock.close()
    assert signals == [signal.SIGPIPE]


def test_stdlib_send_calls_to_a_closed_peer_do_not_kill_a_process_with_sigpipe_default():
    """With SIGPIPE at its default action (which kills the process), sendmsg, sendto and
    sendfile to a closed peer raise BrokenPipeError and the process lives."""
    code = textwrap.dedent("""
        import signal, tempfile, time, csock
        from tests.pairs import tcp_pair
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)
        file = tempfile.TemporaryFile()
        file.write(b"F" * 100000)
        calls = {
            "sendmsg": lambda s, peer: s.sendmsg([b"x"]),
            "sendto": lambda s, peer: s.sendto(b"x", peer),
            "sendfile": lambda s, peer: (file.seek(0), s.sendfile(file)),
        }
        for name, call in calls.items():
            sock, other = tcp_pair()
            peer = sock.getpeername()
            other.close()
            for _ in range(100):
                try:
                    call(sock, peer)
                except BrokenPipeError:
                    print(name, "EPIPE")
                    break
                time.sleep(0.01)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                         env=child_env(), cwd=os.path.dirname(os.path.dirname(__file__)))
    assert out.returncode == 0, (out.returncode, out.stderr)    # -13: killed by SIGPIPE
    assert out.stdout.split() == ["sendmsg", "EPIPE", "sendto", "EPIPE", "sendfile", "EPIPE"]
