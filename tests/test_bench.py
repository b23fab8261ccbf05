"""The benchmark runner itself: tiny runs of every workload (C programs built, data verified,
table printed), and a corrupted stream is caught, never averaged away."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import csock
from csock._bench import workers

ROOT = Path(csock.__file__).parent.parent


def run_cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "csock", "bench", *args], capture_output=True,
                          text=True, timeout=timeout, env=env)


def test_tiny_run_of_every_workload(tmp_path):
    out = tmp_path / "bench.json"
    proc = run_cli("--quick", "--rounds", "1", "--scale", "0.02", "--json", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "× C" in proc.stdout and "target framed" in proc.stdout
    document = json.loads(out.read_text())
    runs = {(r["workload"], r["implementation"]) for r in document["runs"]}
    assert {("framed", "csock"), ("framed", "stdlib-tuned"), ("bulk", "csock"), ("pingpong", "csock"),
            ("udp", "csock"), ("seqpacket", "csock"), ("udp-pingpong", "csock"),
            ("seqpacket-pingpong", "csock"), ("packet-parse", "csock"), ("packet-build", "csock"),
            ("packet-parse", "stdlib-tuned"), ("aio-echo", "csock-asyncio"), ("aio-echo", "asyncio"),
            ("aio-echo-pingpong", "csock-asyncio"), ("aio-udp", "csock-asyncio"),
            ("aio-udp", "asyncio")} <= runs
    if uvloop_installed():
        assert {("aio-echo", "csock"), ("aio-echo", "uvloop"), ("aio-udp", "csock"), ("aio-udp", "uvloop"),
                ("aio-scale", "csock-x1"), ("aio-scale", "csock-x2")} <= runs
        assert "target aio-echo" in proc.stdout and "target aio-udp" in proc.stdout
        assert "scale-out aio-scale" in proc.stdout
        assert document["ratios"]["aio-echo"]["uvloop"] > 0
    if any(impl == "c" for _, impl in runs):
        assert ("framed", "c") in runs and ("aio-udp", "c") in runs
    assert all(r["elapsed"] >= 0 and r["rate"] > 0 for r in document["runs"])   # one batch may hold a tiny run
    assert document["ratios"]["framed"]["stdlib-naive"] > 0


def uvloop_installed() -> bool:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return False
    return True


def test_processes_option_sets_the_scale_out_rows(tmp_path):
    pytest.importorskip("uvloop")
    out = tmp_path / "bench.json"
    proc = run_cli("--only", "aio-scale", "--processes", "3", "--rounds", "1", "--scale", "0.005",
                   "--json", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = {r["implementation"] for r in json.loads(out.read_text())["runs"]}
    assert runs == {"csock-x1", "csock-x2", "csock-x3"}
    assert "3 process(es)" in proc.stdout


def test_echo_checker_catches_a_wrong_echo():
    from csock._bench import aio

    message = aio.messages_for(7, 3)[2]
    aio.check(7, 2, message)
    with pytest.raises(workers.DataMismatch, match="expected echo 1"):
        aio.check(7, 1, message)
    with pytest.raises(workers.DataMismatch, match="bytes"):
        aio.check(7, 2, message[:-1])
    assert aio.split(250) == [100, 100, 50] and aio.split(3) == [3]


@pytest.mark.asan_unsafe
def test_plot(tmp_path):
    pytest.importorskip("matplotlib")
    png = tmp_path / "bench.png"
    proc = run_cli("--only", "pingpong", "--rounds", "1", "--scale", "0.01", "--plot", str(png))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_verifier_catches_a_corrupted_stream():
    a, b = csock.socketpair()
    with a, b:
        stream = csock.FramedStream(a)
        stream.send_many([workers.SEQ.pack(i) + workers.FILLER for i in (0, 1, 3)])   # 2 lost
        a.close()
        with pytest.raises(workers.DataMismatch, match="expected 2, got 3"):
            workers.framed_csock_server(b, 4)


def test_a_failing_side_fails_the_run(monkeypatch):
    from csock._bench import runner
    from csock._bench.workloads import WORKLOADS

    framed = next(w for w in WORKLOADS if w.name == "framed")
    with pytest.raises(runner.BenchError):
        runner.run_once(framed, "no-such-implementation", 10, {}, timeout=60)
    echo = next(w for w in WORKLOADS if w.name == "aio-echo")
    with pytest.raises(runner.BenchError, match="did not start"):
        runner.run_once(echo, "no-such-implementation", 10, {}, timeout=60)


@pytest.mark.parametrize("library", ["csock", "stdlib"])
def test_udp_receivers_catch_a_sequence_going_back(library):
    import asyncio

    from csock._bench import aio

    async def feed() -> None:
        state = aio.Receiver(10, asyncio.get_running_loop().create_future())
        sent: list[bytes] = []
        state.send = sent.append
        seqs = [workers.SEQ.pack(i) + b"p" * 56 for i in (0, 1, 3, 2)]
        if library == "csock":
            a, b = csock.socketpair(csock.AF_UNIX, csock.SOCK_DGRAM)
            with a, b:
                a.send_batch(seqs)
                protocol = aio.CsockReceiver(state)
                with pytest.raises(workers.DataMismatch, match="at least 4, got 2"):
                    protocol.datagrams_received(b.recv_batch(max_messages=8, bufsize=64))
        else:
            receiver = aio.StdlibReceiver(state)
            for data in seqs[:3]:
                receiver.datagram_received(data, None)
            with pytest.raises(workers.DataMismatch, match="at least 4, got 2"):
                receiver.datagram_received(seqs[3], None)
            assert state.received == 3 and state.next == 4

    asyncio.run(feed())


def test_only_c_rows_run_the_c_program():
    from csock._bench.runner import command
    from csock._bench.workloads import WORKLOADS

    for w in WORKLOADS:
        binaries = {str(w.c_program): "/path/to/c-program"}
        for impl in w.implementations:
            assert command(w, impl, "server", 10, "3", binaries)[0] == sys.executable, (w.name, impl)
        if w.c_program:
            for impl in ("c", *w.c_variants):
                assert command(w, impl, "server", 10, "3", binaries)[0] == "/path/to/c-program"


def test_slots_stamp_each_batch_with_its_numbers_then_zeros():
    slots = workers.Slots(3000, size=64)
    slots.stamp(0, 1024)
    views = slots.stamp(2000, 3)
    assert [bytes(v) for v in views] == [workers.SEQ.pack(i) + bytes(56) for i in (2000, 2001, 2002)]
    assert bytes(slots.views[3]) == workers.SEQ.pack(3) + bytes(56)      # untouched by the second


@pytest.mark.parametrize("kind, numbers, received", [
    (csock.SOCK_SEQPACKET, [0, 1, 2, 3, 4], 5),
    (csock.SOCK_SEQPACKET, [0, 1, 2, 4, 3], None),        # out of order
    (csock.SOCK_SEQPACKET, [0, 1, 3, 4, 5], None),        # a record missing: not on SEQPACKET
    (csock.SOCK_DGRAM, [0, 1, 4, 5, 6], 5),               # UDP loses two: counted, not an error
    (csock.SOCK_DGRAM, [0, 1, 3, 2, 6], None),            # ... but never goes back
])
def test_the_into_receiver_checks_every_sequence_number(kind, numbers, received):
    """oneway_csock_into_server compares a whole batch's numbers with the expected ones at
    once and unpacks the batch only when they differ: a loss is counted, a disorder raised."""
    a, b = csock.socketpair(csock.AF_UNIX, kind)
    with a, b:
        a.send_batch([workers.SEQ.pack(i) + bytes(56) for i in numbers])
        if received is None:
            with pytest.raises(workers.DataMismatch):
                workers.oneway_csock_into_server(b, 7)
        else:
            assert workers.oneway_csock_into_server(b, 7 if kind == csock.SOCK_DGRAM else 5)[1] == received


def test_target_lines_judge_the_csock_row_and_show_the_other_csock_rows():
    from csock._bench.report import target_lines
    from csock._bench.workloads import WORKLOADS

    seqpacket = next(w for w in WORKLOADS if w.name == "seqpacket")
    rates = {("seqpacket", "c"): 1000.0, ("seqpacket", "csock"): 860.0, ("seqpacket", "csock-into"): 1000.0,
             ("seqpacket", "stdlib-naive"): 500.0}
    assert target_lines([seqpacket], rates) == [
        "target seqpacket: csock ≥ 0.95× c: 0.86× (NOT met); csock-into 1.00× (met)"]
    del rates["seqpacket", "csock-into"]
    assert target_lines([seqpacket], rates) == ["target seqpacket: csock ≥ 0.95× c: 0.86× (NOT met)"]
