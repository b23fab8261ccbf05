"""The benchmark harness (bench/, launched by python -m csock bench): tiny runs of every
workload (C programs built, data verified, table printed), a corrupted stream caught, never
averaged away, and its command line."""
from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest

import csock

ROOT = Path(csock.__file__).parent.parent
if not (ROOT / "bench" / "c").is_dir():       # csock from a wheel (cibuildwheel's test run)
    pytest.skip("the benchmark harness lives in the source checkout, beside the csock it runs",
                allow_module_level=True)

from bench import workers  # noqa: E402


def run_cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "csock", "bench", *args], capture_output=True,
                          text=True, timeout=timeout, env=env)


def test_every_micro_benchmark_runs():
    """bench/test_micro.py's benchmarks, each run once untimed (they are timed only by hand,
    so nothing else would see one break)."""
    pytest.importorskip("pytest_benchmark")
    done = subprocess.run([sys.executable, "-m", "pytest", str(ROOT / "bench" / "test_micro.py"),
                           "--benchmark-disable", "-q", "-p", "no:cacheprovider", "-p",
                           "no:randomly"], capture_output=True, text=True, timeout=120,
                          cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert done.returncode == 0, done.stdout[-3000:]
    assert " passed" in done.stdout and "failed" not in done.stdout


def test_tiny_run_of_every_workload(tmp_path):
    from bench.workloads import WORKLOADS

    out = tmp_path / "bench.json"
    proc = run_cli(
        "--quick", "--rounds", "1", "--scale", "0.02", "--window", "0", "--json", str(out)
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "× C" in proc.stdout and "target framed" in proc.stdout
    document = json.loads(out.read_text())
    runs = {(r["workload"], r["implementation"]) for r in document["runs"]}
    assert {
        ("framed", "csock"),
        ("framed", "stdlib-tuned"),
        ("bulk", "csock"),
        ("pingpong", "csock"),
        ("udp", "csock"),
        ("seqpacket", "csock"),
        ("udp-pingpong", "csock"),
        ("seqpacket-pingpong", "csock"),
        ("packet-parse", "csock"),
        ("packet-build", "csock"),
        ("packet-parse", "stdlib-tuned"),
        ("aio-echo", "csock-asyncio"),
        ("aio-echo", "asyncio"),
        ("aio-echo-pingpong", "csock-asyncio"),
        ("aio-udp", "csock-asyncio"),
        ("aio-udp", "asyncio"),
    } <= runs
    if uvloop_installed():
        assert {
            ("aio-echo", "csock"),
            ("aio-echo", "uvloop"),
            ("aio-udp", "csock"),
            ("aio-udp", "uvloop"),
            ("aio-scale", "csock-x1"),
            ("aio-scale", "csock-x2"),
        } <= runs
        assert "target aio-echo" in proc.stdout and "target aio-udp" in proc.stdout
        assert "scale-out aio-scale" in proc.stdout
        assert document["ratios"]["aio-echo"]["uvloop"]["median"] > 0
    if any(impl == "c" for _, impl in runs):
        assert ("framed", "c") in runs and ("aio-udp", "c") in runs
    assert all(
        r["elapsed"] >= 0 and r["rate"] > 0 for r in document["runs"]
    )  # one batch may hold a tiny run
    echo = {w.name for w in WORKLOADS if w.transport == "tcp-many"}      # every aio echo row
    assert {"aio-echo", "aio-echo-pingpong", "aio-scale"} <= echo
    assert all((r["server_cpu"] is not None) == (r["workload"] in echo) for r in document["runs"])
    assert document["ratios"]["framed"]["stdlib-naive"]["median"] > 0


def uvloop_installed() -> bool:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return False
    return True


def test_processes_option_sets_the_scale_out_rows(tmp_path):
    pytest.importorskip("uvloop")
    out = tmp_path / "bench.json"
    proc = run_cli(
        "--only",
        "aio-scale",
        "--processes",
        "3",
        "--rounds",
        "1",
        "--scale",
        "0.005",
        "--window",
        "0",
        "--json",
        str(out),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = {r["implementation"] for r in json.loads(out.read_text())["runs"]}
    assert runs == {"csock-x1", "csock-x2", "csock-x3"}
    assert "3 process(es)" in proc.stdout


def test_echo_checker_catches_a_wrong_echo():
    from bench import aio

    message = aio.messages_for(7, 3)[2]
    aio.check(7, 2, message)
    with pytest.raises(workers.DataMismatch, match="expected echo 1"):
        aio.check(7, 1, message)
    with pytest.raises(workers.DataMismatch, match="bytes"):
        aio.check(7, 2, message[:-1])
    assert aio.split(250) == [3] * 50 + [2] * 50 and aio.split(3) == [1, 1, 1]
    assert [len(b) for b in aio.bursts(list(range(250)))] == [100, 100, 50]


@pytest.mark.asan_unsafe
def test_plot(tmp_path):
    pytest.importorskip("matplotlib")
    png = tmp_path / "bench.png"
    proc = run_cli(
        "--only",
        "pingpong",
        "--rounds",
        "1",
        "--scale",
        "0.01",
        "--window",
        "0",
        "--plot",
        str(png),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_verifier_catches_a_corrupted_stream():
    a, b = csock.socketpair()
    with a, b:
        stream = csock.FramedStream(a)
        stream.send_many([workers.SEQ.pack(i) + workers.FILLER for i in (0, 1, 3)])  # 2 lost
        a.close()
        with pytest.raises(workers.DataMismatch, match="expected 2, got 3"):
            workers.framed_csock_server(b, 4)


def test_a_failing_side_fails_the_run(monkeypatch):
    from bench import runner
    from bench.workloads import WORKLOADS

    framed = next(w for w in WORKLOADS if w.name == "framed")
    with pytest.raises(runner.BenchError):
        runner.run_once(framed, "no-such-implementation", 10, {}, timeout=60)
    echo = next(w for w in WORKLOADS if w.name == "aio-echo")
    with pytest.raises(runner.BenchError, match="did not start"):
        runner.run_once(echo, "no-such-implementation", 10, {}, timeout=60)


@pytest.mark.parametrize("library", ["csock", "stdlib"])
def test_udp_receivers_catch_a_sequence_going_back(library):
    import asyncio

    from bench import aio

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
    from bench.runner import command
    from bench.workloads import BY_NAME, WORKLOADS

    for w in WORKLOADS:
        binaries = {str(w.c_program): "/path/to/c-program"}
        for impl in w.implementations:
            assert command(w, impl, "server", 10, "3", binaries)[0] == sys.executable, (
                w.name,
                impl,
            )
        if w.c_program:
            for impl in ("c", *w.c_variants):
                assert command(w, impl, "server", 10, "3", binaries)[0] == "/path/to/c-program"
    # the echo workloads' C server is driven by the Python client; udp-ingest-64's C sender
    # feeds every row
    echo, ingest = BY_NAME["aio-echo-1k"], BY_NAME["udp-ingest-64"]
    assert command(echo, "c", "client", 10, "3", {"uring_echo": "/c"})[0] == sys.executable
    for impl in (*ingest.implementations, "c"):
        assert command(ingest, impl, "client", 10, "3", {"udp_ingest": "/c"})[0] == "/c"


def test_slots_stamp_each_batch_with_its_numbers_then_zeros():
    slots = workers.Slots(3000, size=64)
    slots.stamp(0, 1024)
    views = slots.stamp(2000, 3)
    assert [bytes(v) for v in views] == [
        workers.SEQ.pack(i) + bytes(56) for i in (2000, 2001, 2002)
    ]
    assert bytes(slots.views[3]) == workers.SEQ.pack(3) + bytes(56)  # untouched by the second


@pytest.mark.parametrize(
    "kind, numbers, received",
    [
        (csock.SOCK_SEQPACKET, [0, 1, 2, 3, 4], 5),
        (csock.SOCK_SEQPACKET, [0, 1, 2, 4, 3], None),  # out of order
        (csock.SOCK_SEQPACKET, [0, 1, 3, 4, 5], None),  # a record missing: not on SEQPACKET
        (csock.SOCK_DGRAM, [0, 1, 4, 5, 6], 5),  # UDP loses two: counted, not an error
        (csock.SOCK_DGRAM, [0, 1, 3, 2, 6], None),  # ... but never goes back
    ],
)
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
            assert (
                workers.oneway_csock_into_server(b, 7 if kind == csock.SOCK_DGRAM else 5)[1]
                == received
            )


def test_target_lines_judge_the_csock_row_and_show_the_other_csock_rows():
    from bench.report import Figures, target_lines
    from bench.workloads import WORKLOADS

    seqpacket = next(w for w in WORKLOADS if w.name == "seqpacket")
    rates = {
        ("seqpacket", "c"): 1000.0,
        ("seqpacket", "csock"): 860.0,
        ("seqpacket", "csock-into"): 1000.0,
        ("seqpacket", "stdlib-naive"): 500.0,
    }
    assert target_lines([seqpacket], Figures.from_medians(rates)) == [
        "target seqpacket: csock ≥ 0.95× c: 0.86× (0.86–0.86) (NOT met); "
        "csock-into 1.00× (1.00–1.00) (met)"
    ]
    del rates["seqpacket", "csock-into"]
    assert target_lines([seqpacket], Figures.from_medians(rates)) == [
        "target seqpacket: csock ≥ 0.95× c: 0.86× (0.86–0.86) (NOT met)"
    ]


# --- timed windows, spreads over rounds, figures generated from bench.json -----------------

WINDOW = 0.05  # seconds: the tests' windows (a published run's are runner.WINDOW, 1 s)


@pytest.fixture(scope="module")
def sized_run_json(tmp_path_factory):
    """A two-round run of one small workload with windows of WINDOW seconds, as --json wrote it."""
    out = tmp_path_factory.mktemp("bench") / "bench.json"
    proc = run_cli(
        "--only",
        "seqpacket-pingpong",
        "--rounds",
        "2",
        "--scale",
        "0.01",
        "--window",
        str(WINDOW),
        "--json",
        str(out),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out, proc.stdout


def test_every_timed_window_lasts_the_minimum_and_each_round_is_kept(sized_run_json):
    """Counts are sized by time: a probe of 1% of the quick count (50 round trips) is grown
    until the window lasts WINDOW, for the C program and the Python sides alike."""
    out, stdout = sized_run_json
    document = json.loads(out.read_text())
    assert document["format"] == 2 and document["window"] == WINDOW
    runs = document["runs"]
    impls = {r["implementation"] for r in runs}
    assert {"csock", "stdlib-naive"} <= impls
    for impl in impls:
        mine = [r for r in runs if r["implementation"] == impl]
        assert sorted(r["round"] for r in mine) == [0, 1], impl
        assert all(r["elapsed"] >= WINDOW and r["count"] > 50 for r in mine), mine
    assert "slowest" in stdout and "fastest" in stdout and "min–max" in stdout


def test_rounds_are_interleaved_and_sides_pinned_to_different_cpus(monkeypatch):
    """Each implementation is sized once, then every round runs each once, in an order rotated
    from round to round; short windows are run again, longer."""
    from bench import runner
    from bench.workloads import BY_NAME

    if len(os.sched_getaffinity(0)) >= 2:
        server, client = runner.cpus()
        assert server is not None and client is not None and server != client
        for cpu in (server, client):  # what each side's process gets
            proc = subprocess.run(
                [sys.executable, "-c", "import os; print(sorted(os.sched_getaffinity(0)))"],
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
                preexec_fn=runner.pin(cpu),
            )
            assert proc.stdout.strip() == f"[{cpu}]"
    calls = []

    def run_once(workload, impl, count, c_binaries, timeout=600):
        calls.append((impl, count))
        return count / 1000, count, None  # 1000 units a second

    monkeypatch.setattr(runner, "run_once", run_once)
    monkeypatch.setattr(runner, "build_c_programs", lambda names, log: {})
    results = runner.run(
        [BY_NAME["framed"]], 3, True, 0.001, lambda **kw: NoBar(), log=print, window=1.0
    )
    impls = ["csock", "stdlib-naive", "stdlib-tuned"]
    assert calls[:2] == [("csock", 100), ("csock", 1250)]  # sized: probe, then grown
    assert [r.implementation for r in results] == impls + impls[1:] + impls[:1] + impls[2:] + impls[
        :2
    ]
    assert all(r.elapsed >= 1.0 and r.count == 1250 for r in results)


class NoBar:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        pass

    def set_description(self, text):
        pass

    def update(self, n):
        pass


def test_a_count_grows_to_fill_the_window():
    from bench.runner import OVERSHOOT, grown

    assert grown(100, 0.01, 1.0) == int(100 * OVERSHOOT * 100)
    assert grown(100, 1e-9, 1.0) == 100 * 1000  # at most 1000x per step
    assert grown(1, 0.9, 1.0) == 2  # always at least one more


def test_spreads_are_over_rounds_and_ratios_paired_by_round():
    from bench.report import SPREAD, Figures, table
    from bench.runner import Result
    from bench.workloads import BY_NAME

    framed = BY_NAME["framed"]
    rates = {
        "csock": [100.0, 200.0, 150.0],
        "c": [100.0, 100.0, 100.0],
        "stdlib-tuned": [50.0, 52.0, 51.0],
    }
    figures = Figures(
        Result("framed", impl, r, 1, 1.0, rate)
        for impl, by_round in rates.items()
        for r, rate in enumerate(by_round)
    )
    ratio = figures.ratio("framed", "csock", "c")
    assert (ratio.low, ratio.median, ratio.high) == (1.0, 1.5, 2.0)
    assert figures.noisy(framed, "csock") and not figures.noisy(framed, "stdlib-tuned")
    assert not figures.noisy(framed, "c")  # csock is no reference: its 2x is csock's
    lines = table([framed], figures).splitlines()
    tuned = next(line for line in lines if line.strip().startswith("stdlib-tuned"))
    assert "!" not in tuned.split("×")[0]
    assert " ! " in next(line for line in lines if line.strip().startswith("csock"))
    assert lines[-1].startswith(f"!: max/min over rounds above {SPREAD}")


def test_published_figures_agree_with_the_committed_bench_json():
    """README.md and docs/benchmarks.md hold exactly what bench/figures.py makes of
    docs/bench.json: edit bench.json (by a run), then run python -m bench.figures."""
    proc = subprocess.run(
        [sys.executable, "-m", "bench.figures", "--check"],
        capture_output=True,
        check=False,
        text=True,
        timeout=120,
        cwd=ROOT,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
    )
    assert proc.returncode == 0, proc.stderr


def test_figures_check_fails_on_a_hand_edit_and_regenerates_from_a_run(
    sized_run_json, tmp_path, monkeypatch
):
    from bench import figures

    readme, benchmarks = tmp_path / "README.md", tmp_path / "benchmarks.md"
    readme.write_text((ROOT / "README.md").read_text())
    benchmarks.write_text((ROOT / "docs" / "benchmarks.md").read_text())
    monkeypatch.setattr(figures, "README", readme)
    monkeypatch.setattr(figures, "BENCHMARKS", benchmarks)
    monkeypatch.setattr(figures, "CHECKOUT", tmp_path)
    monkeypatch.setattr(figures, "PLOT", tmp_path / "benchmarks.png")
    monkeypatch.setattr(figures, "draw_plot", lambda document, path: path.write_bytes(b"png"))
    assert figures.main(["--check"]) == 0
    text = readme.read_text()
    block = text.index(figures.BEGIN)
    first_ratio = text.index("×", block)
    readme.write_text(
        text[: first_ratio - 1]
        + ("1" if text[first_ratio - 1] != "1" else "2")
        + text[first_ratio:]
    )
    assert figures.main(["--check"]) == 1  # a figure typed by hand
    out, _ = sized_run_json
    assert figures.main(["--check", "--json", str(out)]) == 1
    assert figures.main(["--json", str(out)]) == 0  # regenerated from the tiny run
    assert figures.main(["--check", "--json", str(out)]) == 0
    generated = benchmarks.read_text()
    assert "SEQPACKET ping-pong, 32 B | csock |" in generated and "Provisional" not in generated
    assert readme.read_text().count(figures.BEGIN) == 1


def test_figures_need_their_markers(tmp_path, monkeypatch):
    from bench import figures

    bare = tmp_path / "README.md"
    bare.write_text("# no markers\n")
    monkeypatch.setattr(figures, "README", bare)
    with pytest.raises(figures.FiguresError, match="needs one line"):
        figures.generated(figures.load(figures.BENCH_JSON))


# --- the command line ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "option, value",
    [("--rounds", "-1"), ("--rounds", "0"), ("--rounds", "two"), ("--processes", "0")],
)
def test_counts_must_be_positive_integers(option, value):
    """--rounds -1 once printed an empty table and --rounds 0 ran 5: both are usage errors."""
    proc = run_cli("--only", "framed", "--scale", "0.001", option, value, timeout=60)
    assert proc.returncode == 2, proc.stdout
    assert f"argument {option}: must be a positive integer, not " in proc.stderr.splitlines()[-1]
    assert proc.stdout == ""


@pytest.mark.parametrize("option", ["--json", "--plot"])
def test_output_paths_are_checked_before_the_run(option, tmp_path):
    """A missing directory is a usage error at once, not a traceback after the whole run."""
    missing = tmp_path / "no-such-dir" / "out"
    proc = run_cli(
        "--only", "framed", "--rounds", "1", "--scale", "0.001", option, str(missing), timeout=60
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.splitlines()[-1] == (
        f"python -m csock bench: error: {option} {missing}: directory "
        f"'{missing.parent}' does not exist"
    )
    assert proc.stdout == "" and "Traceback" not in proc.stderr
    directory = run_cli("--only", "framed", option, str(tmp_path), timeout=60)
    assert directory.returncode == 2 and "is a directory" in directory.stderr


def test_help_lists_every_workload_with_its_title():
    from bench.workloads import WORKLOADS

    proc = run_cli("--help", timeout=60)
    assert proc.returncode == 0 and proc.stdout.startswith("usage: python -m csock bench ")
    listed = proc.stdout.split("workloads (--only NAME ...):\n", 1)[1].splitlines()
    assert [line.split()[0] for line in listed] == [w.name for w in WORKLOADS]
    assert all(line.split(None, 1)[1] == w.title for line, w in zip(listed, WORKLOADS, strict=True))


def test_without_bench_beside_the_package_the_launcher_names_the_checkout(tmp_path):
    """An installed wheel has csock but no bench/: exit 2, saying how to get a checkout."""
    import shutil

    shutil.copytree(
        ROOT / "csock", tmp_path / "csock", ignore=shutil.ignore_patterns("__pycache__")
    )
    env = dict(os.environ, PYTHONPATH=str(tmp_path))
    proc = subprocess.run(
        [sys.executable, "-m", "csock", "bench", "--quick"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=tmp_path,
    )
    assert proc.returncode == 2, proc.stderr
    assert (
        "git clone" in proc.stderr
        and 'pip install -e ".[bench]" && python -m csock bench' in proc.stderr
    )
    assert proc.stdout == "" and "Traceback" not in proc.stderr


PLOT_CHECK = """
from matplotlib.colors import to_hex

from bench import report
from bench.workloads import BY_NAME

impls = ["csock", "csock-into", "csock-plain", "csock-asyncio", "stdlib-naive", "stdlib-tuned",
         "dpkt", "scapy", "uvloop", "asyncio", "c", "c-gso"]
shown = [BY_NAME["udp"], BY_NAME["framed"]]
rates = {(w.name, impl): 1000.0 * (k + 1) for w in shown for k, impl in enumerate(impls)}
rates[("framed", "c")] = 500.0
del rates[("framed", "stdlib-naive")]
fig = report.draw(shown, rates)
fig.canvas.draw()
renderer = fig.canvas.get_renderer()
(ax,) = fig.axes
bars = [(bar, container.get_label()) for container in ax.containers for bar in container]
colours = {label: to_hex(bar.get_facecolor()) for bar, label in bars}
assert len(set(colours.values())) == len(impls), colours
assert all(to_hex(bar.get_facecolor()) == colours[label] for bar, label in bars)
assert colours["csock"] == report.COLOURS["csock"] != colours["c"] == report.COLOURS["c"]
assert [t.get_text() for t in ax.get_legend().get_texts()] == impls
legend = ax.get_legend().get_window_extent(renderer)
assert not any(legend.overlaps(bar.get_window_extent(renderer)) for bar, _ in bars)
print("OK")
"""


@pytest.mark.asan_unsafe
def test_plot_gives_each_implementation_its_own_colour_and_hides_no_bar():
    """Every implementation has one colour in every plot (csock's and C's once matched, the
    cycle of ten wrapping), and the legend covers no bar. In a child process: matplotlib keeps
    files open."""
    pytest.importorskip("matplotlib")
    proc = subprocess.run(
        [sys.executable, "-c", PLOT_CHECK],
        capture_output=True,
        text=True,
        timeout=120,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
        cwd=ROOT,
    )
    assert proc.returncode == 0 and proc.stdout == "OK\n", proc.stderr[-3000:]


def test_a_round_shorter_than_the_window_is_run_again_longer(monkeypatch):
    from bench import runner
    from bench.workloads import BY_NAME

    windows = iter([0.5, 0.9, 1.1])  # the machine got faster, then settled
    counts = []

    def run_once(workload, impl, count, c_binaries, timeout=600):
        counts.append(count)
        return next(windows), count, None

    monkeypatch.setattr(runner, "run_once", run_once)
    count, outcome = runner.sized_run(BY_NAME["framed"], "csock", 1000, {}, 1.0)
    assert counts == [1000, 2500, 3472] and (count, outcome) == (3472, (1.1, 3472, None))


# --- issue 18: the io_uring rows, the server's CPU time per message, the C limit rows ---------


def uring_available() -> bool:
    import csock.uring

    return csock.uring.available()


def engine_rows_expected() -> set[str]:
    """The engine rows that run here: csock-epoll where csock.aio takes engine=, csock-uring
    where io_uring works too (on a kernel without it the epoll row still runs)."""
    from bench.aio import engine_keyword_supported

    if not engine_keyword_supported():
        return set()
    return {"csock-uring", "csock-epoll"} if uring_available() else {"csock-epoll"}


@pytest.fixture(scope="module")
def c_programs():
    from bench.runner import build_c_programs

    built = build_c_programs(["uring_echo", "udp_ingest"], print)
    if not built:
        pytest.skip("no C compiler")
    return built


@pytest.mark.parametrize("workload",
                         ["aio-echo-1k", "aio-reqresp-1k", "aio-pingpong-1", "aio-stream-1",
                          "aio-bulk-1"])
def test_echo_rows_report_the_servers_cpu_time_per_message(workload, tmp_path):
    """A tiny run of each echo workload of issue 18: every row's client read the server's CPU
    time around its window, and the JSON and the table carry it per message; the uring rows
    run where csock.aio has its engine and io_uring works, and are left out, saying why,
    elsewhere."""
    pytest.importorskip("uvloop")
    out = tmp_path / "bench.json"
    proc = run_cli("--only", workload, "--rounds", "1", "--scale", "0.01", "--window", "0",
                   "--json", str(out), timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    document = json.loads(out.read_text())
    runs = {r["implementation"]: r for r in document["runs"]}
    expected = {"uvloop"}
    single = workload in ("aio-pingpong-1", "aio-stream-1", "aio-bulk-1")
    if uring_available() and not single:
        expected.add("c")
    expected |= engine_rows_expected()
    if "csock-uring" not in expected:
        assert "has no engine keyword" in proc.stderr or "io_uring is unavailable" in proc.stderr
    assert set(runs) == expected
    assert all(r["server_cpu"] is not None and r["server_cpu"] >= 0 for r in runs.values())
    cpu_rows = {c["implementation"] for c in document["server_cpu_us_per_msg"]}
    assert cpu_rows == expected and "µs/msg" in proc.stdout
    goals = {(t["row"], t["reference"]) for t in document["targets"] if t["workload"] == workload}
    assert ("csock-uring", "csock-epoll" if single else "uvloop") in goals


def test_udp_ingest_rows_check_every_datagram(tmp_path, c_programs):
    out = tmp_path / "bench.json"
    proc = run_cli("--only", "udp-ingest-64", "--rounds", "1", "--scale", "0.01", "--window", "0",
                   "--json", str(out), timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = {r["implementation"]: r for r in json.loads(out.read_text())["runs"]}
    expected = {"csock", "stdlib-naive", "c"} | ({"csock-uring"} if uring_available() else set())
    assert set(runs) == expected
    assert all(r["count"] - r["lost"] > 0 for r in runs.values())
    if uring_available():
        assert "target udp-ingest-64: csock-uring ≥ 1.0× c" in proc.stdout


def test_the_ingest_tally_accepts_losses_and_refuses_a_wrong_datagram():
    """The Python rows' check of udp-ingest-64: a loss is counted, not refused; a wrong
    length, socket or order raises."""
    from bench.ingest import SIZE, Tally

    def datagram(seq: int, size: int = SIZE) -> bytes:
        return workers.SEQ.pack(seq) + bytes(size - 8)

    tally = Tally(4)
    tally.take(1, [datagram(1), datagram(5), datagram(9)])
    tally.take(1, [memoryview(datagram(13)), datagram(21)])          # 17 was lost
    assert tally.received == 5 and tally.next[1] == 25
    for wrong in ([datagram(25, SIZE - 1)],                            # length
                  [datagram(26)],                                      # another socket's
                  [datagram(29), datagram(25)],                        # order
                  [datagram(21)]):                                     # again
        with pytest.raises(workers.DataMismatch):
            tally.take(1, wrong)


def echo_server(binary: str):
    """bench/c/uring_echo.c serving a free port; (process, port) once it says "ready"."""
    with socket_on_free_port() as port:
        proc = subprocess.Popen([binary, "server", "0", str(port)], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert proc.stdout.readline() == b"ready\n", proc.stderr.read()
    return proc, port


class socket_on_free_port:
    """A port held by a bound SO_REUSEPORT socket (as the runner's) until the server binds."""

    def __enter__(self) -> int:
        self.holder = csock.socket(csock.AF_INET, csock.SOCK_STREAM)
        self.holder.setsockopt(csock.SOL_SOCKET, csock.SO_REUSEADDR, 1)
        self.holder.setsockopt(csock.SOL_SOCKET, csock.SO_REUSEPORT, 1)
        self.holder.bind(("127.0.0.1", 0))
        return self.holder.getsockname()[1]

    def __exit__(self, *exc: object) -> None:
        self.holder.close()


def test_c_uring_echo_server_echoes_every_frame_exactly(c_programs):
    """The C limit row's server: whole frames back, byte for byte, however they are split on
    the way in; frames of 0 bytes to 60 KiB; connections served at once; stops when its stdin
    closes."""
    if not uring_available():
        pytest.skip("io_uring is unavailable here")
    proc, port = echo_server(c_programs["uring_echo"])
    try:
        frames = [struct.pack("!I", len(body)) + body for body in
                  (b"", b"x", bytes(range(256)) * 3, os.urandom(60_000), b"last")]
        wire = b"".join(frames)
        conns = [csock.create_connection(("127.0.0.1", port), timeout=10) for _ in range(3)]
        conns[0].sendall(wire)                           # all at once
        for i in range(0, len(wire), 7919):              # in pieces that split headers and bodies
            conns[1].sendall(wire[i:i + 7919])
        for conn in conns[:2]:
            assert conn.recv_exactly(len(wire)) == wire
        conns[2].sendall(frames[2][:10])                  # a partial frame is not echoed ...
        conns[2].settimeout(0.2)
        with pytest.raises(TimeoutError):
            conns[2].recv(1)
        conns[2].settimeout(10)
        conns[2].sendall(frames[2][10:])                  # ... until it is whole
        assert conns[2].recv_exactly(len(frames[2])) == frames[2]
        for conn in conns:
            conn.close()
        _, err = proc.communicate(timeout=10)           # stdin closed: it stops
        assert proc.returncode == 0, err
    finally:
        proc.kill()
        proc.wait()


def test_c_ingest_program_counts_every_datagram_and_catches_a_wrong_one(c_programs):
    from bench.runner import ingest_endpoints

    binary = c_programs["udp_ingest"]
    inherited, server_where, client_where = ingest_endpoints()
    fds = [s.fileno() for s in inherited]
    try:
        server = subprocess.Popen([binary, "server", "5000", server_where], pass_fds=fds,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        client = subprocess.run([binary, "client", "5000", client_where], pass_fds=fds,
                                capture_output=True, timeout=60)
        out, err = server.communicate(timeout=60)
        assert client.returncode == 0 and server.returncode == 0, (client.stderr, err)
        result = json.loads(out)
        assert result["count"] == 5000 and result["received"] == 5000
        # datagram 1 belongs to socket 1: sent to socket 0, the receiver refuses it
        receivers, control = inherited[:64], inherited[-1]      # control: the sender's end
        server = subprocess.Popen([binary, "server", "1", server_where], pass_fds=fds,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        sender = csock.socket(csock.AF_INET, csock.SOCK_DGRAM)
        with sender:
            sender.sendto(workers.SEQ.pack(1) + bytes(56), receivers[0].getsockname())
        control.send(workers.SEQ.pack(1))                       # "phase sent: 1 datagram"
        _, err = server.communicate(timeout=60)
        assert server.returncode == 1 and b"DATA MISMATCH in sequence" in err
    finally:
        for s in inherited:
            s.close()


@pytest.mark.parametrize("impl", ["csock-uring", "csock", "stdlib-naive"])
def test_python_ingest_receivers_take_every_socket_and_check_each_datagram(impl):
    """Each receiver's rounds read all 64 sockets until every datagram sent is there; Tally
    refuses a datagram on the wrong socket, a sequence going back, or a wrong length."""
    import select

    from bench import ingest

    if impl == "csock-uring" and not uring_available():
        pytest.skip("io_uring is unavailable here")
    socks = []
    for _ in range(64):
        s = csock.socket(csock.AF_INET, csock.SOCK_DGRAM)
        s.bind(("127.0.0.1", 0))
        s.setblocking(False)
        socks.append(s)
    sender = csock.socket(csock.AF_INET, csock.SOCK_DGRAM)
    try:
        sender.send_batch([(workers.SEQ.pack(i) + bytes(56), socks[i % 64].getsockname())
                           for i in range(640)])
        round_ = ingest.ROUNDS[impl](socks)
        tally = ingest.Tally(64)
        waiter = select.epoll()
        for s in socks:
            waiter.register(s.fileno(), select.EPOLLIN)
        with waiter:
            assert ingest.drain(tally, 640, round_, waiter) == 0     # none lost
        assert tally.received == 640 and tally.next[5] == 640 + 5
        assert [bytes(d) for got in round_() for d in got] == []      # all taken
        with pytest.raises(workers.DataMismatch, match="socket 3"):
            tally.take(3, [workers.SEQ.pack(640 + 4) + bytes(56)])     # socket 4's
        with pytest.raises(workers.DataMismatch, match="at least 643"):
            tally.take(3, [workers.SEQ.pack(3) + bytes(56)])           # gone back
        with pytest.raises(workers.DataMismatch, match="65 bytes"):
            tally.take(3, [workers.SEQ.pack(643) + bytes(57)])
    finally:
        for s in (*socks, sender):
            s.close()


def test_server_cpu_is_read_from_proc_stat_of_the_named_processes(monkeypatch):
    import time

    from bench import aio

    monkeypatch.delenv(aio.SERVER_PIDS, raising=False)
    assert aio.server_cpu() is None and aio.cpu_used(None) is None
    monkeypatch.setenv(aio.SERVER_PIDS, f"{os.getpid()},{os.getpid()}")
    before = aio.server_cpu()
    spent = time.process_time()
    while time.process_time() - spent < 0.1:
        pass
    used = aio.cpu_used(before)
    tick = 1 / os.sysconf("SC_CLK_TCK")       # /proc/<pid>/stat counts clock ticks
    assert used is not None and 0.1 - 2 * tick <= used / 2 <= 0.2 + 2 * tick


def test_cpu_per_message_is_shown_beside_the_rate_and_judged_with_the_targets():
    from bench.report import Figures, target_lines
    from bench.runner import Result
    from bench.workloads import BY_NAME

    w = BY_NAME["aio-echo-1k"]
    figures = Figures([
        Result(w.name, "csock-uring", 0, 1000, 1.0, 900.0, server_cpu=0.002),    # 2 µs/msg
        Result(w.name, "csock-epoll", 0, 1000, 1.0, 400.0, server_cpu=0.005),
        Result(w.name, "uvloop", 0, 1000, 1.0, 100.0, server_cpu=0.010),
    ])
    assert figures.cpu(w.name, "csock-uring").median == pytest.approx(2.0)
    assert figures.cpu_ratio(w.name, "csock-uring", "uvloop").median == pytest.approx(5.0)
    assert target_lines([w], figures) == [
        "target aio-echo-1k: csock-uring ≥ 3.0× uvloop: 9.00× (9.00–9.00) (met); "
        "server CPU/msg 5.00× (5.00–5.00) (met)",
        "target aio-echo-1k: csock-uring ≥ 2.0× csock-epoll: 2.25× (2.25–2.25) (met); "
        "server CPU/msg 2.50× (2.50–2.50) (met)",
    ]


def test_a_partial_run_merges_into_the_published_json(sized_run_json):
    """figures --merge: the workloads a partial run ran replace theirs, the rest stay."""
    from bench import figures

    published = figures.load(figures.BENCH_JSON)
    part = json.loads(sized_run_json[0].read_text())
    merged = figures.merge(published, part)
    kept = [r for r in published["runs"] if r["workload"] != "seqpacket-pingpong"]

    def rows(runs):
        return [(r["workload"], r["implementation"], r["round"], r["rate"]) for r in runs]

    assert rows(merged["runs"]) == rows([*kept, *part["runs"]])
    assert merged["merged"][-1]["workloads"] == ["seqpacket-pingpong"]
    assert merged["date"] == published["date"] and merged["format"] == published["format"]
    text = "\n".join(figures.benchmarks_block(merged))   # the published pages, made from it
    assert "The rows of seqpacket-pingpong are from a later `python -m csock bench " \
        "--rounds 2 --only seqpacket-pingpong`" in text     # (the command as it was run)


def test_the_pages_name_only_the_merged_runs_rows_still_come_from():
    from bench import figures

    document = {"runs": [], "merged": [
        {"workloads": ["a", "b"], "command": "first", "date": "1"},
        {"workloads": ["c"], "command": "second", "date": "2"},
        {"workloads": ["b", "c"], "command": "third", "date": "3"},
    ]}
    text = figures.header(document)[0]
    assert "The rows of a are from a later `first` (1), merged in." in text
    assert "`second`" not in text                      # every row of it replaced since
    assert text.endswith("The rows of b, c are from a later `third` (3), merged in.")


def test_the_pages_say_how_many_rounds_each_rows_run_had():
    from bench.report import rounds_text

    def runs(workload, rounds):
        return [{"workload": workload, "round": k} for k in range(rounds)]

    assert rounds_text(runs("a", 3) + runs("b", 3)) == "3 rounds"
    assert rounds_text(runs("a", 3) + runs("b", 3) + runs("d", 5) + runs("c", 5)) == \
        "3 rounds (5 for c, d)"


def test_a_cpu_time_below_one_clock_tick_gives_no_cpu_ratio():
    from bench.report import Figures
    from bench.runner import Result

    figures = Figures([Result("aio-echo", "csock", 0, 10, 0.01, 1000.0, server_cpu=0.0),
                       Result("aio-echo", "uvloop", 0, 10, 0.01, 100.0, server_cpu=0.01)])
    assert figures.cpu("aio-echo", "csock").median == 0.0
    assert figures.cpu_ratio("aio-echo", "csock", "uvloop") is None


def test_uring_rows_are_left_out_with_a_reason_where_io_uring_or_the_engine_is_missing(
    monkeypatch,
):
    """A machine without io_uring (or a csock.aio without engine=) runs every other row and
    says which rows it left out, and why."""
    from bench import runner
    from bench.workloads import BY_NAME

    logged: list[str] = []
    monkeypatch.setattr(runner, "_missing_logged", set())
    monkeypatch.setattr(runner, "uring_available", lambda: False)
    monkeypatch.setattr(runner, "engine_keyword", lambda datagram: True)
    echo, ingest = BY_NAME["aio-echo-1k"], BY_NAME["udp-ingest-64"]
    assert not runner.runnable(echo, "csock-uring", logged.append)
    assert not runner.runnable(echo, "c", logged.append)              # bench/c/uring_echo.c
    assert not runner.runnable(ingest, "csock-uring", logged.append)
    for w, impl in ((echo, "csock-epoll"), (echo, "uvloop"), (ingest, "c"), (ingest, "csock")):
        assert runner.runnable(w, impl, logged.append), (w.name, impl)
    assert logged == ["left out: io_uring is unavailable here (csock.uring.available() is "
                      "False): aio-echo-1k/csock-uring and any other such row"]
    monkeypatch.setattr(runner, "engine_keyword", lambda datagram: not datagram)
    assert not runner.runnable(BY_NAME["aio-udp"], "csock-epoll", logged.append)
    assert runner.runnable(echo, "csock-epoll", logged.append)
    assert "create_datagram_endpoint has no engine keyword" in logged[-1]
