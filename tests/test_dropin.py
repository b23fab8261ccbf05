"""Drop-in fidelity: where csock could differ from the stdlib `socket` module, it behaves the
same (API.md section 1), on real sockets; each difference found once has a test here."""
from __future__ import annotations

import ast
import asyncio
import copy
import fcntl
import importlib.util
import os
import pickle
import re
import socket as stdlib_socket
import struct
import subprocess
import sys
import termios
import threading
import time
from multiprocessing.reduction import ForkingPickler
from pathlib import Path
from typing import Any
from unittest import mock

import pytest

import csock
from tests.tracing import needs_strace, strace

from .children import child_env, script_output
from .pairs import BAD_RECEIVE_BUFFERS, outcome

PY311 = sys.version_info >= (3, 11)


def run_snippet(code: str) -> subprocess.CompletedProcess[str]:
    """`python -c code` in a fresh interpreter with this csock importable."""
    env = child_env()
    return subprocess.run([sys.executable, "-c", code], capture_output=True,
                          text=True, timeout=60, env=env)


# --- recv(0) and recv_into() of an empty buffer: b"" / 0 at once, no system call -------------

def test_recv_of_zero_bytes_leaves_a_udp_datagram_queued() -> None:
    a, b = csock.socketpair(csock.AF_UNIX, csock.SOCK_DGRAM)
    with a, b:
        a.send(b"datagram")
        assert b.recv(0) == b""
        assert b.recv_into(bytearray()) == 0
        assert b.recv_into(memoryview(bytearray(8))[:0]) == 0
        assert b.recv(100) == b"datagram"        # still queued: no recv(2) consumed it


def test_recv_of_zero_bytes_returns_at_once_in_every_mode() -> None:
    a, b = csock.socketpair()
    with a, b:
        late = threading.Timer(2.0, a.sendall, (b"late",))   # frees a recv(2) that would block
        late.start()
        try:
            started = time.monotonic()
            assert b.recv(0) == b""                 # blocking, nothing queued
            assert b.recv_into(bytearray()) == 0
            b.settimeout(0.05)
            assert b.recv(0) == b""                 # no TimeoutError
            assert b.recv_into(bytearray()) == 0
            b.setblocking(False)
            assert b.recv(0) == b""                 # no BlockingIOError
            assert b.recv_into(bytearray()) == 0
            assert time.monotonic() - started < 1.0
        finally:
            late.cancel()
            late.join()


def test_recv_of_zero_bytes_on_a_closed_socket_is_empty_as_in_the_stdlib() -> None:
    sock = csock.socket()
    sock.close()
    assert sock.recv(0) == b""
    assert sock.recv_into(bytearray()) == 0
    with pytest.raises(OSError):
        sock.recv(1)


@needs_strace
def test_recv_of_zero_bytes_makes_no_system_call(tmp_path: Any) -> None:
    trace, out = strace(tmp_path, (
        "import csock\n"
        "a, b = csock.socketpair()\n"
        "a.send(b'x')\n"
        "print('MARK', flush=True)\n"
        "print(b.recv(0), b.recv_into(bytearray()), b.recv_into(bytearray(4), 0, 0))\n"),
        "recvfrom,write")
    assert out.splitlines()[-1] == "b'' 0 1"
    after_mark = trace[trace.index("MARK"):]
    # the last call only: recv_into(buf, 0) reads len(buf)
    assert after_mark.count("recvfrom(") == 1


def test_recv_of_zero_bytes_still_checks_its_arguments() -> None:
    with pytest.raises(TypeError):
        csock.socket.recv(object(), 0)   # type: ignore[arg-type]
    a, b = csock.socketpair()
    with a, b:
        with pytest.raises(TypeError):
            b.recv_into(b"")                        # read-only, even when empty
        with pytest.raises(ValueError):
            b.recv(-1)


# nbytes (or ancbufsize) and flags that are wrong too: the buffer's error still comes first
OTHER_RECEIVE_ARGUMENTS = [(), (-1,), (1.5,), (2**70,), (100,), (0, "x"), (0, 2**40), (-1, 2**40)]


def _receive_outcome(module: Any, call: str, buffer: Any, more: tuple[Any, ...]) -> str:
    """call(buffer, *more) on a module's socket with a datagram queued, which stays queued."""
    a, b = module.socketpair(module.AF_UNIX, module.SOCK_DGRAM)
    with a, b:
        b.send(b"queued")
        a.setblocking(False)
        args = ([buffer] if call == "recvmsg_into" else buffer, *more)
        result = outcome(lambda: getattr(a, call)(*args))
        assert a.recv(100) == b"queued"
    return result


@pytest.mark.parametrize("buffer", BAD_RECEIVE_BUFFERS)
@pytest.mark.parametrize("call", ["recv_into", "recvfrom_into", "recvmsg_into"])
def test_a_bad_receive_buffer_is_the_stdlibs_type_error_first(call: str, buffer: str) -> None:
    """A buffer that is not writable (a released view too) is the stdlib's TypeError, raised
    before any fault of the arguments after it (a negative nbytes was ValueError)."""
    make = BAD_RECEIVE_BUFFERS[buffer]
    for more in OTHER_RECEIVE_ARGUMENTS:
        assert _receive_outcome(csock, call, make(), more) == \
            _receive_outcome(stdlib_socket, call, make(), more), more


def test_loop_sock_recv_of_zero_bytes_returns_at_once() -> None:
    a, b = csock.socketpair()

    async def receive_nothing() -> bytes:
        loop = asyncio.get_running_loop()
        return await asyncio.wait_for(loop.sock_recv(b, 0), 1.0)

    with a, b:
        b.setblocking(False)
        assert asyncio.run(receive_nothing()) == b""


# --- multiprocessing: csock sockets pass to children ------------------------------------------

@pytest.fixture
def resource_sharer() -> Any:
    """Stops the thread and socket multiprocessing starts to hand fds over (DupFd) after the
    test, so that the suite's fd count comes back."""
    yield
    from multiprocessing import resource_sharer as sharer
    sharer.stop()


CHILD_PROGRAM = """
import multiprocessing, sys
import csock

def child_sends_through(sock, results):
    results.send(type(sock).__qualname__)
    sock.sendall(b"from the child")
    sock.close()

def receive_and_send(inbox, results):
    child_sends_through(inbox.recv(), results)

if __name__ == "__main__":
    method = sys.argv[1]
    context = multiprocessing.get_context(method)
    parent, child = csock.socketpair()
    results_reader, results_writer = context.Pipe(duplex=False)
    inbox_reader, inbox_writer = context.Pipe(duplex=False)
    if method == "spawn":               # pickled as a Process argument
        process = context.Process(target=child_sends_through, args=(child, results_writer))
    else:                               # forked first, then sent through a Pipe (pickled there)
        process = context.Process(target=receive_and_send, args=(inbox_reader, results_writer))
    process.start()
    if method == "fork":
        inbox_writer.send(child)
    process.join(60)
    if process.is_alive():
        process.kill()
    assert process.exitcode == 0, process.exitcode
    child.close()
    parent.settimeout(10)
    print(results_reader.recv(), parent.recv(100).decode())
"""


@pytest.mark.parametrize("method", ["spawn", "fork"])
def test_a_csock_socket_passes_to_a_multiprocessing_child(method: str, tmp_path: Any) -> None:
    """In a program of its own (multiprocessing's helpers, the resource tracker among them,
    stay with that process): the child gets a StreamSocket and sends through it."""
    program = tmp_path / "child_program.py"
    program.write_text(CHILD_PROGRAM)
    env = child_env()
    out = subprocess.run([sys.executable, str(program), method], capture_output=True, text=True,
                         timeout=120, env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["StreamSocket", "from", "the", "child"]


def base_class_socket(fd: int) -> csock.socket:
    """A socket of exactly csock.socket (the class a type without its own class gets)."""
    sock = stdlib_socket.socket.__new__(csock.socket)
    stdlib_socket.socket.__init__(sock, fileno=fd)
    return sock


@pytest.mark.parametrize("kind", ["socket", "StreamSocket", "DatagramSocket", "SeqPacketSocket"])
def test_forking_pickler_rebuilds_the_same_csock_class(kind: str, resource_sharer: None) -> None:
    family, sock_type = {"DatagramSocket": (csock.AF_UNIX, csock.SOCK_DGRAM),
                         "SeqPacketSocket": (csock.AF_UNIX, csock.SOCK_SEQPACKET),
                         }.get(kind, (csock.AF_UNIX, csock.SOCK_STREAM))
    a, b = csock.socketpair(family, sock_type)
    with a, b:
        sock = a if kind != "socket" else base_class_socket(a.detach())
        with sock:
            data = ForkingPickler.dumps(sock)
            rebuilt = pickle.loads(data)            # in-process: the resource sharer dups the fd
            with rebuilt:
                # csock.socket(...) itself picks the class for the type, in the child too
                assert type(rebuilt) is (csock.StreamSocket if kind == "socket" else type(sock))
                rebuilt.send(b"rebuilt")
                assert b.recv(100) == b"rebuilt"


STDLIB_SOCKET_TO_A_CHILD_AFTER_THE_PATCH = """
import pickle, socket
a, b = socket.socketpair()                  # the stdlib's class, made before the patch
import csock
for name in ("socket", "socketpair", "create_connection", "create_server", "fromfd"):
    setattr(socket, name, getattr(csock, name))
from multiprocessing.reduction import ForkingPickler     # first imported after the patch
rebuilt = pickle.loads(ForkingPickler.dumps(a))
print(type(rebuilt).__module__, type(rebuilt).__name__)
rebuilt.send(b"rebuilt")
print(b.recv(100).decode())
"""


def test_forking_pickler_still_passes_stdlib_sockets_after_the_patch(tmp_path: Path) -> None:
    """multiprocessing.reduction registers its reducer for socket.socket, csock's class once
    patched in: a socket of the stdlib's class could no longer go to a child ("cannot pickle
    'socket' object"). It is rebuilt there as the class it was."""
    lines = script_output(tmp_path, STDLIB_SOCKET_TO_A_CHILD_AFTER_THE_PATCH)
    assert lines == ["socket socket", "rebuilt"]


@pytest.mark.parametrize("kind", [csock.SOCK_STREAM, csock.SOCK_DGRAM, csock.SOCK_SEQPACKET])
def test_plain_pickle_still_refuses_a_csock_socket(kind: int) -> None:
    """With the stdlib's words: csock's classes are what socket.socket() returns (a user's
    subclass is named, as the stdlib names it)."""
    class Mine(csock.socket):
        pass

    a, b = csock.socketpair(csock.AF_UNIX, kind)
    with a, b, Mine() as mine:
        for refuse in (pickle.dumps, copy.copy, copy.deepcopy):
            with pytest.raises(TypeError, match="^cannot pickle 'socket' object$"):
                refuse(a)
        with pytest.raises(TypeError, match="^cannot pickle 'Mine' object$"):
            pickle.dumps(mine)


def test_socket_methods_refuse_keywords_as_the_stdlibs_do() -> None:
    a, b = csock.socketpair()
    with a, b, stdlib_socket.socket() as plain:
        for sock in (a, plain):
            for name, keywords in [("setsockopt", {"level": 1, "optname": 2, "value": 1}),
                                   ("getsockopt", {"level": 1, "optname": 2}),
                                   ("settimeout", {"value": 1}), ("setblocking", {"flag": 1}),
                                   ("bind", {"address": ""}), ("listen", {"backlog": 1})]:
                with pytest.raises(TypeError, match="takes no keyword arguments"):
                    getattr(sock, name)(**keywords)


# --- create_connection: the last error, or all of them ----------------------------------------

@pytest.fixture
def two_failing_addresses(monkeypatch: pytest.MonkeyPatch) -> None:
    """getaddrinfo gives a refused TCP address, then an AF_UNIX path that does not exist."""
    refusing = stdlib_socket.socket()
    refusing.bind(("127.0.0.1", 0))                 # bound, never listening: ECONNREFUSED
    entries = [(stdlib_socket.AF_INET, stdlib_socket.SOCK_STREAM, 0, "", refusing.getsockname()),
               (stdlib_socket.AF_UNIX, stdlib_socket.SOCK_STREAM, 0, "", "/nonexistent/csock-test")]
    monkeypatch.setattr(csock, "getaddrinfo", lambda *args, **kwargs: entries)
    yield
    refusing.close()


def test_create_connection_raises_the_last_error(two_failing_addresses: None) -> None:
    with pytest.raises(FileNotFoundError):
        csock.create_connection(("two.invalid", 80))


@pytest.mark.skipif(not PY311, reason="all_errors is new in 3.11")
def test_create_connection_with_all_errors_raises_every_one(two_failing_addresses: None) -> None:
    with pytest.raises(ExceptionGroup) as caught:  # noqa: F821
        csock.create_connection(("two.invalid", 80), all_errors=True)
    assert [type(error) for error in caught.value.exceptions] == [
        ConnectionRefusedError,
        FileNotFoundError,
    ]


@pytest.mark.skipif(PY311, reason="3.10's create_connection has no all_errors")
def test_create_connection_takes_no_all_errors_before_311() -> None:
    with pytest.raises(TypeError):
        csock.create_connection(("127.0.0.1", 1), all_errors=True)


# --- the stdlib module patched with csock's attributes ----------------------------------------

@pytest.fixture
def patched_stdlib(monkeypatch: pytest.MonkeyPatch) -> None:
    """The stdlib module's attributes replaced with csock's, as monkey-patching libraries do."""
    for name in ("socket", "socketpair", "create_connection", "create_server", "fromfd"):
        monkeypatch.setattr(stdlib_socket, name, getattr(csock, name))


@pytest.fixture
def csock_as_socket_module(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "socket", csock)


def test_patched_stdlib_socketpair_and_create_server_do_not_recurse(patched_stdlib: None) -> None:
    a, b = stdlib_socket.socketpair()
    with a, b:
        assert type(a) is csock.StreamSocket
        a.sendall(b"pair")
        assert b.recv(10) == b"pair"
    with stdlib_socket.create_server(("127.0.0.1", 0)) as server:
        assert type(server) is csock.StreamSocket
        with stdlib_socket.create_connection(server.getsockname()) as client:
            conn, _ = server.accept()
            with conn:
                client.sendall(b"server")
                assert conn.recv(10) == b"server"
    with csock.socket() as sock, stdlib_socket.fromfd(sock.fileno(),
                                                      csock.AF_INET, csock.SOCK_STREAM) as dup:
        assert type(dup) is csock.StreamSocket


def test_dup_and_the_inheritable_flag_work_with_the_stdlib_patched(patched_stdlib: None) -> None:
    """csock's dup() and fd-flag calls run the stdlib class's own methods: not the patched
    module's socket.socket's (csock's, so they called themselves)."""
    a, b = stdlib_socket.socketpair()
    with a, b, a.dup() as duplicate:
        assert type(duplicate) is csock.StreamSocket
        assert not duplicate.get_inheritable()
        duplicate.set_inheritable(True)
        assert duplicate.get_inheritable()
        duplicate.sendall(b"dup")
        assert b.recv(10) == b"dup"


def test_csock_aio_and_uring_take_stdlib_sockets_with_the_stdlib_patched(
        request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Sockets of the stdlib's own class (made before the patch) are still socket objects to
    csock.aio and csock.uring's fallback, as to the calls they make."""
    import csock.aio
    import csock.uring
    a = stdlib_socket.socket(stdlib_socket.AF_INET, stdlib_socket.SOCK_DGRAM)
    b = stdlib_socket.socket(stdlib_socket.AF_INET, stdlib_socket.SOCK_DGRAM)
    request.getfixturevalue("patched_stdlib")
    monkeypatch.setattr(csock.uring, "_fallback_forced", True)

    async def through_aio() -> list[bytes]:
        await csock.aio.send_batch(b, [(b"aio", a.getsockname())])
        got = await asyncio.wait_for(csock.aio.recv_batch(a), 10)
        return [bytes(datagram.data) for datagram in got]

    with a, b:
        a.bind(("127.0.0.1", 0))
        a.setblocking(False)
        b.setblocking(False)
        assert asyncio.run(through_aio()) == [b"aio"]
        assert csock.uring.send_many([(b, b"ring", a.getsockname())]) == [4]
        assert a.recv(10) == b"ring"


@pytest.mark.parametrize("mode", ["patched_stdlib", "csock_as_socket_module"])
def test_a_mocked_getaddrinfo_reaches_create_connection(mode: str,
                                                        request: pytest.FixtureRequest) -> None:
    request.getfixturevalue(mode)
    with csock.create_server(("127.0.0.1", 0)) as server:
        entries = [(csock.AF_INET, csock.SOCK_STREAM, 6, "", server.getsockname())]
        with mock.patch("socket.getaddrinfo", return_value=entries) as resolver:
            module = sys.modules["socket"]
            with module.create_connection(("mocked.invalid", 80)) as client:
                conn, _ = server.accept()
                with conn:
                    client.sendall(b"mocked")
                    assert conn.recv(10) == b"mocked"
        resolver.assert_called_once()


@pytest.mark.parametrize("mode", ["patched_stdlib", "csock_as_socket_module"])
def test_a_replaced_socket_class_reaches_create_connection(mode: str,
                                                           request: pytest.FixtureRequest) -> None:
    """As CPython's test_create_connection_timeout does: socket.socket replaced by a class
    whose connect times out; create_connection must make that class and raise TimeoutError."""
    request.getfixturevalue(mode)
    module = sys.modules["socket"]

    class TimingOut(csock.socket):
        def connect(self, *args: Any) -> None:
            raise TimeoutError("timed out")

    entries = [(csock.AF_INET, csock.SOCK_STREAM, 6, "", ("127.0.0.1", 9))]
    with mock.patch.object(module, "socket", TimingOut), \
            mock.patch.object(module, "getaddrinfo", return_value=entries):
        with pytest.raises(TimeoutError):
            module.create_connection(("127.0.0.1", 9))


@pytest.mark.parametrize("mode", ["patched_stdlib", "csock_as_socket_module"])
def test_a_mocked_socket_class_reaches_create_server_and_socketpair(
        mode: str, request: pytest.FixtureRequest) -> None:
    """As the stdlib's: create_server() and socketpair() make their sockets with socket.socket
    as a test replaced it (mock.patch("socket.socket")), and return what it made."""
    request.getfixturevalue(mode)
    module = sys.modules["socket"]
    with mock.patch("socket.socket") as made:
        server = module.create_server(("127.0.0.1", 0))
        pair = module.socketpair()
    passed_fds = [call.args[3] for call in made.call_args_list if len(call.args) == 4]
    for fd in passed_fds:                           # (the mock keeps the pair's fds open)
        os.close(fd)
    assert server is made.return_value
    assert made.call_args_list[0] == mock.call(csock.AF_INET, csock.SOCK_STREAM)
    server.bind.assert_called_once_with(("127.0.0.1", 0))
    server.listen.assert_called_once_with()
    assert pair == (made.return_value, made.return_value)
    assert made.call_count == 3 and len(passed_fds) == 2


@pytest.mark.parametrize("mode", ["patched_stdlib", "csock_as_socket_module"])
def test_a_mocked_socket_class_reaches_has_dualstack_ipv6(
        mode: str, request: pytest.FixtureRequest) -> None:
    request.getfixturevalue(mode)
    module = sys.modules["socket"]
    with mock.patch("socket.socket") as made:
        assert module.has_dualstack_ipv6() is True
    made.assert_called_once_with(csock.AF_INET6, csock.SOCK_STREAM)
    probe = made.return_value.__enter__.return_value
    probe.setsockopt.assert_called_once_with(csock.IPPROTO_IPV6, csock.IPV6_V6ONLY, 0)


needs_fallback_socketpair = pytest.mark.skipif(
    not hasattr(stdlib_socket, "_fallback_socketpair"),
    reason="this Python's socket module has no _fallback_socketpair (gh-122133 added it: 3.13,"
           " and 3.12/3.11 releases since)")


@needs_fallback_socketpair
def test_the_fallback_socketpair_makes_csock_sockets(csock_as_socket_module: None) -> None:
    """socket._fallback_socketpair (socketpair over TCP, for platforms without one, and for
    tests) makes the module's sockets, as the stdlib's."""
    module = sys.modules["socket"]
    a, b = module._fallback_socketpair(module.AF_INET)
    with a, b:
        assert type(a) is type(b) is csock.StreamSocket
        a.sendall(b"fallback")
        assert b.recv(10) == b"fallback"


@needs_fallback_socketpair
def test_the_fallback_socketpair_refuses_an_intruder(csock_as_socket_module: None) -> None:
    """As CPython's test_injected_authentication_failure: a connection that reaches the
    listener first is refused, seen through the module's socket class as patched."""
    module = sys.modules["socket"]
    getsockname = module.socket.getsockname
    intruders: list[Any] = []

    def connect_an_intruder_first(self: Any) -> Any:
        name = getsockname(self)
        if not intruders:
            intruders.append(module.socket(self.family, self.type, self.proto))
            intruders[0].setblocking(False)
            try:
                intruders[0].connect(name[:2])
            except (BlockingIOError, InterruptedError):
                pass
            intruders[0].setblocking(True)
        return name

    try:
        with mock.patch.object(module.socket, "getsockname", connect_an_intruder_first):
            with pytest.raises(OSError):
                module._fallback_socketpair()
    finally:
        for intruder in intruders:
            intruder.close()
    assert len(intruders) == 1


# --- sys.modules["socket"] = csock: csock itself still finds the stdlib module ----------------

def test_csock_modules_imported_after_the_swap_take_stdlib_sockets() -> None:
    """csock.aio and csock.uring imported only once `socket` is csock: their checks still know
    a stdlib socket (made before the swap) for one, as when they are imported first."""
    proc = run_snippet(
        "import asyncio, sys\n"
        "import socket as stdlib_socket\n"
        "import csock\n"
        "sys.modules['socket'] = csock\n"
        "import csock.aio, csock.uring\n"
        "csock.uring._fallback_forced = True    # (its own check: the ring checks in C)\n"
        "a = stdlib_socket.socket(stdlib_socket.AF_INET, stdlib_socket.SOCK_DGRAM)\n"
        "b = stdlib_socket.socket(stdlib_socket.AF_INET, stdlib_socket.SOCK_DGRAM)\n"
        "a.bind(('127.0.0.1', 0)); a.setblocking(False); b.setblocking(False)\n"
        "async def main():\n"
        "    print(await csock.aio.send_batch(b, [(b'aio', a.getsockname())]))\n"
        "    got = await asyncio.wait_for(csock.aio.recv_batch(a), 10)\n"
        "    print([bytes(datagram.data) for datagram in got])\n"
        "asyncio.run(main())\n"
        "print(csock.uring.send_many([(b, b'ring', a.getsockname())]), a.recv(10))\n")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["1", "[b'aio']", "[4] b'ring'"]


def test_reloading_csock_as_the_socket_module_keeps_the_stdlibs_names() -> None:
    """importlib.reload(socket) re-runs csock's __init__ as the stdlib's re-runs socket.py:
    the stdlib's private names still come through, a missing one is an AttributeError."""
    proc = run_snippet(
        "import importlib, sys\n"
        "import socket as stdlib_socket\n"
        "import csock\n"
        "sys.modules['socket'] = csock\n"
        "import socket\n"
        "importlib.reload(socket)\n"
        "print(socket is csock, socket.socket is csock.StreamSocket.__base__)\n"
        "print(socket._GLOBAL_DEFAULT_TIMEOUT is stdlib_socket._GLOBAL_DEFAULT_TIMEOUT,\n"
        "      socket.getaddrinfo is stdlib_socket.getaddrinfo,\n"
        "      hasattr(socket, 'no_such_name'))\n"
        "try:\n"
        "    socket.no_such_name\n"
        "except AttributeError as error:\n"
        "    print(error)\n"
        "with socket.socket() as sock:\n"
        "    print(type(sock).__name__)\n")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.splitlines() == ["True True", "True True False",
                                        "module 'csock' has no attribute 'no_such_name'",
                                        "StreamSocket"]


STDLIB_HOME = Path(csock.__file__).parent / "_stdlib.py"
CYTHON_SOURCES = Path(__file__).resolve().parent.parent / "src"


def test_no_csock_module_imports_socket_but_its_one_home() -> None:
    """`import socket` finds csock itself once a program has swapped it in: every csock module
    takes the stdlib's from csock/_stdlib.py, imported with csock itself (before any swap)."""
    offenders = []
    for path in Path(csock.__file__).parent.rglob("*.py"):
        if path == STDLIB_HOME:
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = ([alias.name for alias in node.names] if isinstance(node, ast.Import)
                     else [node.module] if isinstance(node, ast.ImportFrom) and not node.level
                     else [])
            if "socket" in names:
                offenders.append(f"{path.name}:{node.lineno}")
    for path in [*CYTHON_SOURCES.rglob("*.pyx"), *CYTHON_SOURCES.rglob("*.pxi")]:
        # (Cython's modules import the C module, _socket, which no program swaps)
        if re.search(r"^\s*(import socket\b|from socket import)",
                     path.read_text(), re.MULTILINE):
            offenders.append(path.name)
    assert STDLIB_HOME.is_file()
    assert offenders == []


# --- subclasses of csock.socket ---------------------------------------------------------------

class TimedSocket(csock.socket):
    """A user's subclass with its own constructor arguments."""

    def __init__(self, timeout: float | None = None, kind: str = "tcp") -> None:
        super().__init__(csock.AF_INET, csock.SOCK_DGRAM if kind == "udp" else csock.SOCK_STREAM)
        self.settimeout(timeout)


def test_a_subclass_with_its_own_constructor_gets_exactly_its_class() -> None:
    with TimedSocket(2.5, kind="udp") as udp, TimedSocket(timeout=1.5) as tcp:
        assert type(udp) is TimedSocket and udp.type == csock.SOCK_DGRAM and udp.gettimeout() == 2.5
        assert (
            type(tcp) is TimedSocket and tcp.type == csock.SOCK_STREAM and tcp.gettimeout() == 1.5
        )
        udp.bind(("127.0.0.1", 0))
        udp.sendto(b"own class", udp.getsockname())
        assert udp.recv(100) == b"own class"


def test_csock_socket_itself_still_returns_the_class_for_the_type() -> None:
    with csock.socket(csock.AF_INET, csock.SOCK_STREAM) as tcp, \
            csock.socket(type=csock.SOCK_DGRAM) as udp, \
            csock.socket(csock.AF_UNIX, csock.SOCK_SEQPACKET) as seq, \
            csock.socket(fileno=os.dup(udp.fileno())) as adopted, \
            csock.StreamSocket(csock.AF_INET) as direct:
        assert type(tcp) is csock.StreamSocket
        assert type(udp) is csock.DatagramSocket
        assert type(seq) is csock.SeqPacketSocket
        assert type(adopted) is csock.DatagramSocket
        assert type(direct) is csock.StreamSocket


# --- what cannot be matched: checks of the exact type -----------------------------------------

@pytest.mark.skipif(importlib.util.find_spec("trio") is None, reason="trio is not installed")
def test_trio_rejects_csock_sockets_by_their_exact_type() -> None:
    # trio.socket.from_stdlib_socket checks `type(sock) is socket.socket` on purpose (it refuses
    # ssl.SSLSocket the same way); csock's sockets are subclasses (README, drop-in notes).
    proc = run_snippet(
        "import sys, csock\n"
        "sys.modules['socket'] = csock\n"
        "import trio\n"
        "async def main():\n"
        "    try:\n"
        "        trio.socket.socket()\n"
        "    except TypeError as error:\n"
        "        print('TypeError:', error)\n"
        "trio.run(main)\n")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "TypeError: expected object of type 'socket.socket', not 'StreamSocket'\n"


# --- smaller differences ------------------------------------------------------------------------

@pytest.mark.parametrize("call, arguments", [
    ("send", {"data": b"x"}), ("sendall", {"data": b"x"}), ("recv", {"bufsize": 1}),
    ("send", {"flags": 0}), ("recv", {"flags": 0})])
def test_send_and_recv_take_no_keyword_arguments(call: str, arguments: dict[str, Any]) -> None:
    a, b = csock.socketpair()
    with a, b:
        b.sendall(b"queued")
        positional = {"send": (b"x",),
                      "sendall": (b"x",), "recv": (1,)}[call] if "flags" in arguments else ()
        with pytest.raises(TypeError, match="keyword"):
            getattr(a, call)(*positional, **arguments)


def test_recv_into_takes_keyword_arguments_as_the_stdlib_does() -> None:
    a, b = csock.socketpair()
    with a, b:
        a.sendall(b"abc")
        buffer = bytearray(4)
        assert b.recv_into(buffer=buffer, nbytes=2, flags=0) == 2
        assert buffer[:2] == b"ab"


def test_recv_on_a_listening_socket_with_a_timeout_waits_it_out() -> None:
    with csock.create_server(("127.0.0.1", 0)) as server:
        server.settimeout(0.2)
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            server.recv(1)
        with pytest.raises(TimeoutError):
            server.recv_into(bytearray(1))
        assert time.monotonic() - started >= 0.35
    with csock.socket() as unconnected:             # ENOTCONN at once, as the stdlib's poll says
        unconnected.settimeout(5)
        started = time.monotonic()
        with pytest.raises(OSError) as caught:
            unconnected.recv(1)
        assert caught.value.errno == 107 and time.monotonic() - started < 2


def test_send_on_a_listening_socket_with_a_timeout_waits_it_out() -> None:
    with csock.create_server(("127.0.0.1", 0)) as server:
        server.settimeout(0.2)
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            server.send(b"x")
        with pytest.raises(TimeoutError):
            server.sendall(b"x")
        assert time.monotonic() - started >= 0.35
    with csock.socket() as unconnected:             # EPIPE at once, as the stdlib's poll says
        unconnected.settimeout(5)
        started = time.monotonic()
        with pytest.raises(BrokenPipeError):
            unconnected.sendall(b"x")
        assert time.monotonic() - started < 2


def test_the_raw_socket_permission_error_keeps_the_stdlib_errno_and_strerror() -> None:
    code = (
        "import os, csock, errno\n"
        "if os.geteuid() == 0:\n"
        "    os.setgid(65534); os.setuid(65534)\n"
        "try:\n"
        "    csock.RawSocket(csock.AF_INET, csock.IPPROTO_ICMP)\n"
        "except PermissionError as error:\n"
        "    print(error.errno == errno.EPERM, error.strerror == os.strerror(errno.EPERM),\n"
        "          error.args)\n"
        "    notes = ' '.join(getattr(error, '__notes__', []))\n"
        "    print('CAP_NET_RAW' in notes or 'CAP_NET_RAW' in str(error))\n"
        "else:\n"
        "    print('no error')\n")
    proc = run_snippet(code)
    if "Permission denied" in proc.stderr and "csock" in proc.stderr:
        pytest.skip("the unprivileged user cannot read this worktree")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["True True (1, 'Operation not permitted')", "True"]


def _outcome(call: Any) -> tuple[str, int | None, bool]:
    """(exception type or result, errno, whether it waited out a 0.2 s timeout)."""
    started = time.monotonic()
    try:
        result: Any = call()
        kind, err = repr(result), None
    except OSError as error:
        kind, err = type(error).__name__, error.errno
    return kind, err, time.monotonic() - started >= 0.15


def _unix_socket(module: Any, kind: int, state: str, path: str) -> Any:
    sock = module.socket(module.AF_UNIX, kind)
    if state == "listening":
        sock.bind(path)
        sock.listen()
    sock.settimeout(0.2)
    return sock


@pytest.mark.parametrize("kind", ["SOCK_STREAM", "SOCK_SEQPACKET"])
@pytest.mark.parametrize("state", ["listening", "unconnected"])
@pytest.mark.parametrize("call", ["send", "sendall", "recv", "recv_into"])
def test_a_timed_call_on_an_unconnected_unix_socket_is_the_stdlibs(tmp_path: Any, kind: str,
                                                                   state: str, call: str) -> None:
    """As the stdlib, which polls first: a listening AF_UNIX socket waits out its timeout
    (csock, calling first, met ENOTCONN on send and EINVAL on recv and raised at once); an
    unconnected one fails at once."""
    calls = {"send": lambda s: s.send(b"x"), "sendall": lambda s: s.sendall(b"x"),
             "recv": lambda s: s.recv(1), "recv_into": lambda s: s.recv_into(bytearray(1))}
    outcomes = []
    for module, name in ((stdlib_socket, "std"), (csock, "csock")):
        with _unix_socket(module, getattr(module, kind), state, str(tmp_path / name)) as sock:
            outcomes.append(_outcome(lambda: calls[call](sock)))
    assert outcomes[1] == outcomes[0]


@pytest.mark.parametrize("family, kind", [("AF_INET", "SOCK_DGRAM"), ("AF_UNIX", "SOCK_DGRAM"),
                                          ("AF_UNIX", "SOCK_SEQPACKET")])
def test_sendall_of_nothing_sends_an_empty_message(family: str, kind: str) -> None:
    """The stdlib's sendall calls send(2) at least once: an empty datagram or record is a
    message (csock's sent nothing, and raised nothing on a closed socket)."""
    if family == "AF_INET":
        a = csock.socket(csock.AF_INET, csock.SOCK_DGRAM)
        b = csock.socket(csock.AF_INET, csock.SOCK_DGRAM)
        b.bind(("127.0.0.1", 0))
        a.connect(b.getsockname())
    else:
        a, b = csock.socketpair(csock.AF_UNIX, getattr(csock, kind))
    with a, b:
        b.settimeout(2)
        a.sendall(b"")
        a.sendall(b"after")
        assert b.recv(10) == b"" and b.recv(10) == b"after"
    with pytest.raises(OSError) as caught:
        a.sendall(b"")
    assert caught.value.errno == 9


@pytest.mark.parametrize("module", [stdlib_socket, csock], ids=["stdlib", "csock"])
def test_a_reader_woken_by_shutdown_then_close_sees_end_of_stream(module: Any) -> None:
    """shutdown(SHUT_RDWR) then close() is how programs stop a reader thread: its recv
    returns b"" (the end of stream it was woken with), not EBADF."""
    a, b = module.socketpair()
    results: list[Any] = []

    def reader() -> None:
        try:
            results.append(a.recv(10))
        except OSError as error:
            results.append(error)

    thread = threading.Thread(target=reader)
    thread.start()
    time.sleep(0.1)
    a.shutdown(module.SHUT_RDWR)
    a.close()
    thread.join(5)
    b.close()
    assert results == [b""]


@pytest.mark.parametrize("call", ["send", "sendall", "recv", "recv_into"])
@pytest.mark.parametrize("flags", [0.5, 2.9, "0"], ids=["float", "float-peek", "str"])
def test_flags_that_are_not_integers_are_a_type_error(call: str, flags: Any) -> None:
    """As the stdlib's: no float truncated into flags (2.9 became MSG_PEEK)."""
    a, b = csock.socketpair()
    with a, b:
        a.send(b"data")
        with pytest.raises(TypeError):
            {"send": lambda: b.send(b"x", flags), "sendall": lambda: b.sendall(b"x", flags),
             "recv": lambda: b.recv(1, flags),
             "recv_into": lambda: b.recv_into(bytearray(1), 1, flags)}[call]()
        assert b.recv(10) == b"data"


def test_flags_take_any_object_with_index_converted_once() -> None:
    calls = []

    class Flags:
        def __index__(self) -> int:
            calls.append(1)
            return 0

    a, b = csock.socketpair()
    with a, b:
        assert a.send(b"x", Flags()) == 1
        a.sendall(b"y", Flags())
        assert b.recv(2, Flags()) == b"xy"
    assert len(calls) == 3              # as the stdlib's (csock's sendall converted twice)


@pytest.mark.parametrize("adopt", ["dup", "fromfd", "accept"])
def test_a_kernel_send_timeout_on_an_adopted_fd_still_applies(adopt: str) -> None:
    """SO_SNDTIMEO set before the csock object existed (a dup(), fromfd(), or an accept()
    from a listener that had it: Linux copies it) ends a blocked sendall with
    BlockingIOError, as the stdlib's, also with another thread in the process."""
    timeout = struct.pack("ll", 0, 200_000)
    if adopt == "accept":
        server = stdlib_socket.create_server(("127.0.0.1", 0))
        server.setsockopt(stdlib_socket.SOL_SOCKET, stdlib_socket.SO_SNDTIMEO, timeout)
        with server, stdlib_socket.create_connection(server.getsockname()) as peer:
            sock = csock.socket(fileno=server.detach()).accept()[0]
            _check_sendall_times_out(sock)
        return
    a, peer = stdlib_socket.socketpair()
    a.setsockopt(stdlib_socket.SOL_SOCKET, stdlib_socket.SO_SNDTIMEO, timeout)
    with a, peer:
        sock = csock.socket(fileno=os.dup(a.fileno())) if adopt == "dup" else \
            csock.fromfd(a.fileno(), csock.AF_UNIX, csock.SOCK_STREAM)
        _check_sendall_times_out(sock)


def _check_sendall_times_out(sock: Any) -> None:
    idle = threading.Thread(target=time.sleep, args=(3,), daemon=True)   # a second thread
    idle.start()
    outcome: list[Any] = []
    worker = threading.Thread(target=lambda: outcome.append(_outcome(
        lambda: sock.sendall(b"x" * 50_000_000))))
    with sock:
        worker.start()
        worker.join(5)
        assert outcome and outcome[0][0] == "BlockingIOError", outcome
SENDFILE_CASES = {
    "whole file": {},
    "offset": {"offset": 1000},
    "offset and count": {"offset": 1000, "count": 5000},
    "count past the end": {"count": 1 << 20},
}


def read_to_end(sock: Any, chunks: list[bytes]) -> None:
    chunks.extend(iter(lambda: sock.recv(1 << 16), b""))


@pytest.mark.parametrize("timeout", [None, 5.0])
@pytest.mark.parametrize("case", list(SENDFILE_CASES))
def test_sendfile_sends_and_positions_the_file_as_the_stdlibs(case: str, timeout: float | None,
                                                                tmp_path: Any) -> None:
    """csock's sendfile() loop sends the same bytes, returns the same count and leaves the
    file at the same position as the stdlib's, in blocking and timeout mode."""
    path = tmp_path / "payload"
    path.write_bytes(os.urandom(100000))
    results = []
    for make_pair in (stdlib_socket.socketpair, csock.socketpair):
        a, b = make_pair()
        a.settimeout(timeout)
        chunks: list[bytes] = []
        reader = threading.Thread(target=read_to_end, args=(b, chunks))
        reader.start()
        with a, b, open(path, "rb") as file:
            sent = a.sendfile(file, **SENDFILE_CASES[case])
            a.shutdown(stdlib_socket.SHUT_WR)
            reader.join(10)
            results.append((sent, b"".join(chunks), file.tell()))
    assert results[0] == results[1]
    assert results[1][0] == len(results[1][1]) > 0


def test_sendfile_of_a_file_without_a_descriptor_falls_back_to_send() -> None:
    """A file object sendfile(2) cannot take (no fileno: BytesIO) is sent with send()."""
    import io
    a, b = csock.socketpair()
    with a, b:
        assert a.sendfile(io.BytesIO(b"in memory"), 3) == 6
        assert b.recv(100) == b"memory"


def test_sendfile_refuses_a_non_blocking_socket_as_the_stdlibs(tmp_path: Any) -> None:
    path = tmp_path / "payload"
    path.write_bytes(b"x")
    a, b = csock.socketpair()
    a.setblocking(False)
    with a, b, open(path, "rb") as file, pytest.raises(ValueError, match="non-blocking"):
        a.sendfile(file)


def test_the_constructor_signature_is_the_stdlibs() -> None:
    """inspect (help(), IDEs, mock's autospec) showed the dispatching __new__'s (*args,
    **kwargs); a subclass with its own __init__ still shows its own."""
    import inspect

    class Mine(csock.socket):
        def __init__(self, host: str, port: int = 0) -> None:
            super().__init__()

    expected = inspect.signature(stdlib_socket.socket)
    assert str(expected) == "(family=-1, type=-1, proto=-1, fileno=None)"
    assert inspect.signature(csock.socket) == expected
    assert list(inspect.signature(Mine).parameters) == ["host", "port"]
    with csock.socket() as sock:
        assert not hasattr(sock, "__signature__")


def test_sendfile_of_a_write_only_file_fails_as_the_stdlibs(tmp_path: Any) -> None:
    """sendfile(2) of a file opened write-only fails with EBADF before a byte goes: the stdlib
    gives up for send(), whose read raises io.UnsupportedOperation, and so must csock (it
    took that EBADF for its socket's, closed)."""
    path = tmp_path / "payload"

    def attempt(module: Any) -> str:
        a, b = module.socketpair()
        with a, b, open(path, "wb", buffering=0) as file:
            file.write(b"y" * 1000)             # (not empty: sendfile(2) is tried)
            return outcome(lambda: a.sendfile(file))  # noqa: B023 - called right here
    assert attempt(csock) == attempt(stdlib_socket)


@pytest.mark.parametrize("at_end", [False, True])
def test_sendfile_on_a_closed_socket_fails_as_the_stdlibs(tmp_path: Any, at_end: bool) -> None:
    """The stdlib raises ValueError at once and leaves the file alone; csock gave up to the
    send() fallback, which read a block (moving the file) before EBADF, or, at the end of
    the file, returned 0 on a closed socket."""
    path = tmp_path / "payload"
    path.write_bytes(b"x" * 1000)

    def attempt(module: Any) -> tuple[str, int]:
        a, b = module.socketpair()
        b.close()
        a.close()
        with open(path, "rb") as file:
            if at_end:
                file.seek(0, 2)
            result = outcome(lambda: a.sendfile(file))  # noqa: B023 - called right here
            return result, file.tell()
    assert attempt(csock) == attempt(stdlib_socket)


BAD_SEND_ARGUMENTS = {
    "sendmsg": [(), ("x",), ([b"x"], [], "0"), ([b"x"], [], 2 ** 40), ([b"x"], [], 0, None, 1),
                ([b"x"], "anc"), ([b"x"], [], 1.5)],
    "sendto": [(), (b"x",), ("x", ("127.0.0.1", 9)), (b"x", "0", ("127.0.0.1", 9)),
               (b"x", 2 ** 40, ("127.0.0.1", 9)), (b"x", 0, ("127.0.0.1", 9), 1),
               (b"x", "not an address")],
}


@pytest.mark.parametrize("call", list(BAD_SEND_ARGUMENTS))
def test_sendmsg_and_sendto_refuse_bad_arguments_as_the_stdlibs(call: str) -> None:
    """csock adds MSG_NOSIGNAL to sendmsg/sendto but refuses every malformed call with the
    stdlib's exception and message (keyword arguments included)."""
    def outcome(sock: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[type, str]:
        with pytest.raises((TypeError, ValueError, OverflowError, OSError)) as info:
            getattr(sock, call)(*args, **kwargs)
        return type(info.value), str(info.value)

    cases = [(args, {}) for args in BAD_SEND_ARGUMENTS[call]] + [((b"x",), {"flags": 0})]
    std = stdlib_socket.socket(stdlib_socket.AF_INET, stdlib_socket.SOCK_DGRAM)
    ours = csock.socket(csock.AF_INET, csock.SOCK_DGRAM)
    with std, ours:
        for args, kwargs in cases:
            assert outcome(ours, args, kwargs) == outcome(std, args, kwargs), args


def test_sendmsg_and_sendto_still_send_with_and_without_flags() -> None:
    """The forms the stdlib takes still send what they did (flags or'ed with MSG_NOSIGNAL)."""
    rx = csock.socket(csock.AF_INET, csock.SOCK_DGRAM)
    tx = csock.socket(csock.AF_INET, csock.SOCK_DGRAM)
    with rx, tx:
        rx.bind(("127.0.0.1", 0))
        rx.settimeout(5)
        to = rx.getsockname()
        assert tx.sendto(b"one", to) == 3
        assert tx.sendto(b"two", 0, to) == 3
        assert tx.sendmsg([b"thr", b"ee"], [], 0, to) == 5
        tx.connect(to)
        assert tx.sendmsg([b"four"]) == 4
        assert tx.sendmsg([b"five"], ()) == 4
        assert [rx.recv(100) for _ in range(5)] == [b"one", b"two", b"three", b"four", b"five"]


@pytest.mark.parametrize("how", ["MSG_DONTWAIT", "O_NONBLOCK", "SO_SNDTIMEO_NEW", "on-a-dup"])
def test_a_blocking_sendall_in_a_threaded_process_keeps_the_stdlibs_would_block(how: str) -> None:
    """With another thread in the process a blocking sendall sleeps in csock's poll (where
    close() wakes it), but not where the stdlib's would not sleep, or would sleep in the
    kernel: the caller's MSG_DONTWAIT, a file made non-blocking behind the socket, a kernel
    send timeout set with SO_SNDTIMEO_NEW or on a dup. Each raises BlockingIOError."""
    a, peer = csock.socketpair()
    flags = 0
    if how == "MSG_DONTWAIT":
        flags = csock.MSG_DONTWAIT
    elif how == "O_NONBLOCK":
        os.set_blocking(a.fileno(), False)
    elif how == "SO_SNDTIMEO_NEW":
        a.setsockopt(csock.SOL_SOCKET, 67, struct.pack("qq", 0, 200_000))
    else:
        with a.dup() as alias:
            alias.setsockopt(csock.SOL_SOCKET, csock.SO_SNDTIMEO, struct.pack("ll", 0, 200_000))
    with peer:
        assert a.gettimeout() is None
        idle = threading.Thread(target=time.sleep, args=(3,), daemon=True)   # a second thread
        idle.start()
        outcome: list[Any] = []
        worker = threading.Thread(target=lambda: outcome.append(_outcome(
            lambda: a.sendall(b"x" * 50_000_000, flags))))
        with a:
            worker.start()
            worker.join(5)
            assert outcome and outcome[0][0] == "BlockingIOError", outcome


def _queued(sock: Any) -> int:
    """Bytes waiting in sock's receive queue (FIONREAD)."""
    return struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.FIONREAD, b"\0" * 4))[0]


def _wait_until(condition: Any, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "the condition never came"
        time.sleep(0.001)


# A timeout set while a blocking call runs: settimeout(t) from another thread puts O_NONBLOCK
# on the file, and the call's next system call meets EAGAIN. The stdlib reads the socket's
# timeout afresh then (sock_call_ex): t > 0, it goes on and waits; 0, BlockingIOError.
TIMEOUT_SET_MEANWHILE = [(5.0, "completed"), (0.0, "BlockingIOError")]


@pytest.mark.parametrize("new_timeout, expected", TIMEOUT_SET_MEANWHILE)
@pytest.mark.parametrize("call", ["sendall", "send_buffers"])
def test_a_blocking_send_loop_goes_on_under_a_timeout_set_meanwhile(call: str,
                                                                    new_timeout: float,
                                                                    expected: str) -> None:
    """A blocking sendall or send_buffers waiting for room when another thread calls
    settimeout(5) sends everything (it raised BlockingIOError half-way); after settimeout(0)
    it raises BlockingIOError, .sent saying what went."""
    data = os.urandom(8 << 20)                  # far more than the socket holds
    a, b = csock.socketpair()
    outcome: list[Any] = []

    def send() -> None:
        try:
            if call == "sendall":
                a.sendall(data)
            else:
                a.send_buffers([data[i:i + (1 << 20)] for i in range(0, len(data), 1 << 20)])
            outcome.append(("completed", len(data)))
        except OSError as error:
            outcome.append((type(error).__name__, getattr(error, "sent", None)))

    with a, b:
        sender = threading.Thread(target=send, daemon=True)
        sender.start()
        _wait_until(lambda: _queued(b) > 0)     # under way, blocking: it cannot finish alone
        time.sleep(0.2)                         # (asleep, the socket full)
        a.settimeout(new_timeout)
        b.settimeout(1)
        got = bytearray(b.recv(1 << 16))
        time.sleep(0.2)                         # it wakes, fills that room, meets EAGAIN
        try:
            while len(got) < len(data):
                got += b.recv(1 << 16)
        except TimeoutError:                    # (the sender stopped half-way)
            pass
        sender.join(10)
        assert outcome and outcome[0][0] == expected, outcome
        assert got == data[:outcome[0][1]]


@pytest.mark.parametrize("new_timeout, expected", TIMEOUT_SET_MEANWHILE)
@pytest.mark.parametrize("call", ["recv_exactly", "FramedStream.recv"])
def test_a_blocking_receive_loop_goes_on_under_a_timeout_set_meanwhile(call: str,
                                                                       new_timeout: float,
                                                                       expected: str) -> None:
    """A blocking recv_exactly or FramedStream.recv that has part of its bytes when another
    thread calls settimeout(5) receives the rest (it raised BlockingIOError); after
    settimeout(0) it raises BlockingIOError."""
    message = os.urandom(1 << 20)
    wire = (len(message).to_bytes(4, "big") if call == "FramedStream.recv" else b"") + message
    a, b = csock.socketpair()
    outcome: list[Any] = []

    def receive() -> None:
        try:
            if call == "recv_exactly":
                got = a.recv_exactly(len(message))
            else:
                got = csock.FramedStream(a).recv()
            outcome.append(("completed", bytes(got)))
        except OSError as error:
            outcome.append((type(error).__name__, None))

    with a, b:
        receiver = threading.Thread(target=receive, daemon=True)
        receiver.start()
        b.sendall(wire[:1000])
        _wait_until(lambda: _queued(a) == 0)    # taken: the call is under way, blocking
        a.settimeout(new_timeout)
        b.settimeout(5)
        b.sendall(wire[1000:] if expected == "completed" else wire[1000:2000])
        receiver.join(10)
        assert outcome == [(expected, message if expected == "completed" else None)]


# Run in a child: before the fix the child froze whole (the GIL held in a blocking call).
TIMED_CALL_ON_A_FILE_MADE_BLOCKING = """
import sys, threading, time
import csock
call = sys.argv[1]
a, b = csock.socketpair()
if call == "send":
    a.setblocking(False)
    while True:                              # fill the socket
        try:
            a.send(b"x" * 65536)
        except BlockingIOError:
            break
a.settimeout(0.5)
duplicate = a.dup()
duplicate.setblocking(True)                  # the shared file is blocking again
ticks = []
threading.Thread(target=lambda: [ticks.append(time.sleep(0.05)) for _ in range(20)],
                 daemon=True).start()
start = time.monotonic()
try:
    a.recv(100) if call == "recv" else a.send(b"y" * 100)
except TimeoutError:
    print("TimeoutError", round(time.monotonic() - start, 1), len(ticks) >= 5)
"""


@pytest.mark.parametrize("call", ["recv", "send"])
def test_a_timed_call_on_a_file_made_blocking_by_another_holder_times_out(call, tmp_path):
    """A timed socket's small calls run with the GIL held, trusting O_NONBLOCK (put on the
    file by settimeout): another holder's setblocking(True) took it away, and the call blocked
    in the kernel with the GIL held, every thread of the process frozen. As the stdlib: a
    TimeoutError after the timeout, the other threads running meanwhile."""
    assert script_output(tmp_path, "import signal; signal.alarm(5)\n"
                         + TIMED_CALL_ON_A_FILE_MADE_BLOCKING, call) == ["TimeoutError 0.5 True"]


@pytest.mark.parametrize("call", ["recv", "recv_into"])
@pytest.mark.parametrize("flags, error", [("bad", TypeError), (2**40, OverflowError)])
def test_a_receive_of_nothing_still_checks_its_flags(call: str, flags: Any, error: Any) -> None:
    a, b = csock.socketpair()
    with a, b, pytest.raises(error):
        if call == "recv":
            b.recv(0, flags)
        else:
            b.recv_into(bytearray(), 0, flags)


def test_sendfile_with_an_offset_that_is_not_an_integer_sends_nothing(tmp_path: Any) -> None:
    path = tmp_path / "data"
    path.write_bytes(b"x" * 100_000)
    a, b = csock.socketpair()
    with a, b, open(path, "rb") as file:
        with pytest.raises(TypeError):
            a.sendfile(file, 1.5)
        b.setblocking(False)
        with pytest.raises(BlockingIOError):
            b.recv(10)


def test_sendfile_with_a_count_past_ssize_t_does_as_the_stdlibs(tmp_path: Any) -> None:
    """A count of 2**63: before 3.13 the stdlib hands it to os.sendfile, which raises
    OverflowError before any byte (csock's sendfile(2) took it as a size_t and sent the file);
    3.13's sends in 1 GiB chunks, so the whole file."""
    path = tmp_path / "data"
    path.write_bytes(b"0123456789")
    seen = []
    for module in (stdlib_socket, csock):
        a, b = module.socketpair()
        with a, b, open(path, "rb") as file:
            what = outcome(lambda a=a, file=file: a.sendfile(file, 0, 2 ** 63))
            b.setblocking(False)
            try:
                got = b.recv(10)
            except BlockingIOError:
                got = None
            seen.append((what, file.tell(), got))
    assert seen[1] == seen[0]


def test_sendmsg_and_sendto_pass_negative_flags_as_the_stdlibs_do() -> None:
    """MSG_NOSIGNAL is or'ed in as a plain int (an IntFlag drops bit 31 of -1 on 3.11+, and
    the kernel then saw other flags): the same error as the stdlib's."""
    outcomes = []
    for module in (stdlib_socket, csock):
        with module.socket(module.AF_INET, module.SOCK_DGRAM) as tx:
            outcomes.append(_outcome(lambda: tx.sendmsg([b"m"], [], -1, ("127.0.0.1", 9))))
    assert outcomes[1] == outcomes[0]


def test_a_closed_socket_answers_the_stdlibs_calls_as_the_stdlib() -> None:
    """The stdlib's C calls csock runs counted in flight keep their own behaviour on a closed
    socket: connect_ex returns EBADF's number, bad arguments raise their own errors first."""
    calls = [lambda s: s.connect_ex(("127.0.0.1", 1)), lambda s: s.sendto(b"x"),
             lambda s: s.recvfrom(-1), lambda s: s.connect("x"), lambda s: s.shutdown("x"),
             lambda s: s.setsockopt("x"), lambda s: s.sendto(b"x", ("127.0.0.1", 9))]
    outcomes = []
    for module in (stdlib_socket, csock):
        s = module.socket(module.AF_INET, module.SOCK_DGRAM)
        s.close()
        results = []
        for call in calls:
            try:
                results.append(("returned", call(s)))
            except Exception as error:          # noqa: BLE001  (compared, whatever it is)
                results.append((type(error).__name__, getattr(error, "errno", None)))
        outcomes.append(results)
    assert outcomes[1] == outcomes[0]


def test_accept_calls_the_sockets_own_accept_hook() -> None:
    """As the stdlib's accept(), which calls self._accept(): a subclass may override it."""
    log: list[str] = []

    class Listener(csock.socket):
        def _accept(self) -> Any:
            log.append("_accept")
            return super()._accept()  # type: ignore[misc]

    with Listener() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        with csock.create_connection(listener.getsockname()):
            conn, _ = listener.accept()
            conn.close()
    assert log == ["_accept"]


def test_detach_with_a_call_in_flight_keeps_the_fds_inheritability() -> None:
    a, b = csock.socketpair()
    a.set_inheritable(True)
    a.settimeout(5)
    thread = threading.Thread(target=lambda: pytest.raises(OSError, a.recv, 10))
    thread.start()
    time.sleep(0.1)
    fd = a.detach()
    thread.join(10)
    try:
        assert os.get_inheritable(fd)
    finally:
        os.close(fd)
        b.close()
