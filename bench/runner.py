"""Run workloads side by side: processes pinned to different CPUs, implementations interleaved
over rounds, every timed window at least WINDOW seconds long.

A window is sized by time, not by a fixed count: before the rounds, each (workload,
implementation) is calibrated (a probe run, then runs with the count grown until the measured
side's window lasts WINDOW seconds); each round then runs that count, and a round whose window
still came out shorter (the machine got faster, or the probe was noisy) is run again with a
larger count. The probe runs are discarded (they also warm the page cache and the CPUs).
The C programs, the Python sides and the asyncio programs are all sized the same way."""
from __future__ import annotations

import json
import os
import select
import shutil
import socket
import statistics
import struct
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .workloads import Workload

CHECKOUT = Path(__file__).resolve().parent.parent     # the source checkout: csock and bench/
C_SOURCES = CHECKOUT / "bench" / "c"
C_BUILD = C_SOURCES / "bin"
# what the C programs include: a change rebuilds them (uring_abi.h: csock's io_uring ABI)
C_HEADERS = (C_SOURCES / "common.h", CHECKOUT / "src" / "includes" / "uring_abi.h")
WINDOW = 1.0           # seconds: the shortest timed window a published figure may come from
OVERSHOOT = 1.25       # a grown count aims this far past the window, so one step usually does


class BenchError(RuntimeError):
    """A run failed: a data mismatch, a crash or a hang. Never averaged away."""


@dataclass
class Result:
    workload: str
    implementation: str
    round: int
    count: int
    elapsed: float
    rate: float
    lost: int = 0          # units sent that never arrived (UDP only)
    # echo rows: user + system seconds the server process(es) used over the timed window
    server_cpu: float | None = None


# What one run measured: the measured side's elapsed time, the units that arrived, and the
# server's CPU seconds over the window (echo rows; else None).
Outcome = tuple[float, int, "float | None"]


def build_c_programs(names: list[str], log: Callable[[str], None]) -> dict[str, str]:
    """Compile bench/c/<name>.c with the system compiler; {} (and a message) if impossible."""
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if not C_SOURCES.is_dir():
        log(f"C reference programs not found ({C_SOURCES}): the C column is left out")
        return {}
    if compiler is None:
        log("no C compiler on this machine: the C column is left out")
        return {}
    C_BUILD.mkdir(exist_ok=True)
    built = {}
    for name in names:
        source, binary = C_SOURCES / f"{name}.c", C_BUILD / name
        newest = max(path.stat().st_mtime for path in (source, *C_HEADERS))
        if not binary.exists() or binary.stat().st_mtime < newest:
            proc = subprocess.run([compiler, "-O2", "-Wall", "-o", str(binary), str(source)],
                                  capture_output=True, text=True)
            if proc.returncode != 0:
                raise BenchError(f"building {source} failed:\n{proc.stderr}")
        built[name] = str(binary)
    return built


def pin(cpu: int | None) -> Callable[[], None] | None:
    if cpu is None:
        return None
    return lambda: os.sched_setaffinity(0, {cpu})


def cpus() -> tuple[int | None, int | None]:
    """(server CPU, client CPU): two different CPUs when there are two."""
    available = sorted(os.sched_getaffinity(0))
    if len(available) < 2:
        return None, None
    return available[1], available[0]


def is_c(implementation: str) -> bool:
    return implementation == "c" or implementation.startswith("c-")


def command(workload: Workload, implementation: str, role: str, count: int, where: str,
            c_binaries: dict[str, str]) -> list[str]:
    """The argv of one side. The C program runs the C rows, and every row's client where the
    workload says so (c_client: a sender faster than any receiver measured); the C rows of the
    echo workloads ("tcp-many") have a Python client, which drives every server alike."""
    c_side = is_c(implementation) and not (workload.transport == "tcp-many" and role == "client")
    if c_side or (workload.c_client and role == "client"):      # the C program (a variant)
        binary = c_binaries[str(workload.c_program)]
        if workload.transport == "inproc":            # bench/c/packet.c parse|build N
            return [binary, workload.name.split("-")[1], str(count)]
        variant = [implementation[2:]] if implementation.startswith("c-") else []
        return [binary, role, str(count), where, *workload.c_args, *variant]
    return [sys.executable, "-m", "bench.side", workload.name, implementation, role,
            str(count), where]


def endpoints(workload: Workload) -> tuple[list[socket.socket], str, str]:
    """The sockets the two processes inherit, and what each is told (WHERE): a TCP listener
    and its port, or the two ends of a connected UDP or SEQPACKET pair. For "tcp-many" a
    port, held by a bound (not listening) SO_REUSEPORT socket until the servers listen."""
    if workload.transport == "udp-many":
        return ingest_endpoints()
    if workload.transport == "tcp-many":
        holder = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        holder.bind(("127.0.0.1", 0))
        port = str(holder.getsockname()[1])
        return [holder], port, port
    if workload.transport == "tcp":
        listener = socket.create_server(("127.0.0.1", 0), backlog=1)
        return [listener], str(listener.fileno()), str(listener.getsockname()[1])
    if workload.transport == "raw":
        # the port: bound by a UDP socket here, so the kernel answers no ICMP unreachables;
        # a datagram socketpair carries the receiver's credits (SO_RCVTIMEO on the sender's end)
        sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sink.bind(("127.0.0.1", 0))
        a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        b.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, struct.pack("ll", 1, 0))
        port = sink.getsockname()[1]
        return [sink, a, b], f"{port}:{a.fileno()}", f"{port}:{b.fileno()}"
    if workload.transport == "seqpacket":
        a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    else:
        a, b = (socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(2))
        for s in (a, b):
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)   # capped by rmem_max
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, struct.pack("ll", 1, 0))
            s.bind(("127.0.0.1", 0))
        a.connect(b.getsockname())
        b.connect(a.getsockname())
    return [a, b], str(a.fileno()), str(b.fileno())


def ingest_endpoints() -> tuple[list[socket.socket], str, str]:
    """udp-ingest-64: INGEST_SOCKETS bound UDP receivers, one unbound sender, and a datagram
    socketpair for the phases' notices (SO_RCVTIMEO 1 s on the sender's end; see ingest.py).
    The receiver is told "FD,FD,...:CONTROL_FD", the sender "FD:PORT,PORT,...:CONTROL_FD"."""
    from .workloads import INGEST_SOCKETS

    receivers = []
    for _ in range(INGEST_SOCKETS):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        s.bind(("127.0.0.1", 0))
        receivers.append(s)
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sender.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
    mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    theirs.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, struct.pack("ll", 1, 0))
    fds = ",".join(str(s.fileno()) for s in receivers)
    ports = ",".join(str(s.getsockname()[1]) for s in receivers)
    return ([*receivers, sender, mine, theirs], f"{fds}:{mine.fileno()}",
            f"{sender.fileno()}:{ports}:{theirs.fileno()}")


def worker_environment() -> dict[str, str]:
    """The workers import bench and csock from this checkout: `python -m bench.side` is run in
    it (so its directory comes first on sys.path, before any other "bench") with PYTHONPATH
    naming it too."""
    return dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [
        str(CHECKOUT), os.environ.get("PYTHONPATH")])))


def run_once(workload: Workload, implementation: str, count: int, c_binaries: dict[str, str],
             timeout: float = 600) -> Outcome:
    """One run: server and client processes on two CPUs; the measured side's elapsed time, how
    many units arrived, and (echo rows) the server's CPU seconds over the window."""
    server_cpu, client_cpu = cpus()
    env = worker_environment()
    if not workload.pinned:
        server_cpu = client_cpu = None
    if workload.transport == "inproc":
        return run_alone(workload, implementation, count, c_binaries, env, server_cpu, timeout)
    if workload.transport == "tcp-many":
        return run_many(workload, implementation, count, c_binaries, env, server_cpu, client_cpu,
                        timeout)
    inherited, server_where, client_where = endpoints(workload)
    try:
        fds = [s.fileno() for s in inherited]
        server = subprocess.Popen(
            command(workload, implementation, "server", count, server_where, c_binaries),
            pass_fds=fds, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            preexec_fn=pin(server_cpu), env=env, cwd=CHECKOUT)
        client = subprocess.Popen(
            command(workload, implementation, "client", count, client_where, c_binaries),
            pass_fds=fds, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            preexec_fn=pin(client_cpu), env=env, cwd=CHECKOUT)
    finally:
        for s in inherited:
            s.close()
    outputs = {}
    for role, proc in (("client", client), ("server", server)):
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            server.kill()
            client.kill()
            raise BenchError(f"{workload.name}/{implementation}: the {role} hung") from None
        if proc.returncode != 0:
            server.kill()
            client.kill()
            raise BenchError(f"{workload.name}/{implementation} {role} failed "
                             f"(exit {proc.returncode}):\n{err.decode()[-2000:]}")
        outputs[role] = out.decode()
    return measured_result(workload, implementation, count, outputs[workload.measured])


def run_many(workload: Workload, implementation: str, count: int, c_binaries: dict[str, str],
             env: dict[str, str], server_cpu: int | None, client_cpu: int | None,
             timeout: float) -> Outcome:
    """The asyncio echo workloads: K server processes (csock-xK; else one) bind one port with
    SO_REUSEPORT and print "ready"; then the client opens its connections; the servers stop
    when their stdin is closed. The client is told the servers' pids (BENCH_SERVER_PIDS): it
    reads their CPU time when its clock starts and when it stops."""
    from .aio import SERVER_PIDS, server_processes

    holders, port, _ = endpoints(workload)
    servers: list[subprocess.Popen[bytes]] = []
    client: subprocess.Popen[bytes] | None = None

    def fail(message: str, proc: subprocess.Popen[bytes] | None = None) -> BenchError:
        for p in servers + ([client] if client else []):
            p.kill()
        detail = ""
        if proc is not None:
            _, err = proc.communicate()
            detail = f" (exit {proc.returncode}):\n{err.decode()[-2000:]}"
        return BenchError(f"{workload.name}/{implementation}: {message}{detail}")

    try:
        for _ in range(server_processes(implementation)):
            servers.append(subprocess.Popen(
                command(workload, implementation, "server", count, port, c_binaries),
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                preexec_fn=pin(server_cpu), env=env, cwd=CHECKOUT))
        for server in servers:
            assert server.stdout is not None
            if not select.select([server.stdout], [], [], 120)[0]:
                raise fail("a server did not start in 120 s")
            if server.stdout.readline().strip() != b"ready":
                raise fail("a server did not start", server)
    finally:
        for s in holders:
            s.close()
    pids = ",".join(str(server.pid) for server in servers)
    client = subprocess.Popen(command(workload, implementation, "client", count, port, c_binaries),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              preexec_fn=pin(client_cpu), env=dict(env, **{SERVER_PIDS: pids}),
                              cwd=CHECKOUT)
    try:
        out, err = client.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        raise fail("the client hung") from None
    if client.returncode != 0:
        raise fail(f"client failed (exit {client.returncode}):\n{err.decode()[-2000:]}")
    for server in servers:
        try:
            _, err = server.communicate(timeout=60)      # closes its stdin: it stops
        except subprocess.TimeoutExpired:
            raise fail("a server did not stop") from None
        if server.returncode != 0:
            raise fail(f"server failed (exit {server.returncode}):\n{err.decode()[-2000:]}")
    return measured_result(workload, implementation, count, out.decode())


def run_alone(workload: Workload, implementation: str, count: int, c_binaries: dict[str, str],
              env: dict[str, str], cpu: int | None, timeout: float) -> Outcome:
    """An in-memory workload: one process on one CPU."""
    proc = subprocess.Popen(command(workload, implementation, "single", count, "-", c_binaries),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, preexec_fn=pin(cpu),
                            env=env, cwd=CHECKOUT)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise BenchError(f"{workload.name}/{implementation}: hung") from None
    if proc.returncode != 0:
        raise BenchError(f"{workload.name}/{implementation} failed (exit {proc.returncode}):\n"
                         f"{err.decode()[-2000:]}")
    return measured_result(workload, implementation, count, out.decode())


def measured_result(workload: Workload, implementation: str, count: int, output: str) -> Outcome:
    """(elapsed, units that arrived or were processed, server CPU seconds or None) from the
    measured side's JSON line."""
    lines = output.strip().splitlines()
    if not lines:
        raise BenchError(
            f"{workload.name}/{implementation}: the {workload.measured} reported nothing"
        )
    measured = json.loads(lines[-1])
    received = int(measured.get("received", measured["count"]))
    partial = workload.transport in LOSSY + ("inproc",)  # losses; slow libraries do fewer
    if (
        measured["count"] != count
        or received > count
        or received <= 0
        or (not partial and received != count)
    ):
        raise BenchError(f"{workload.name}/{implementation}: moved {received} of {count}")
    cpu = measured.get("server_cpu")
    return float(measured["elapsed"]), received, None if cpu is None else float(cpu)


LOSSY = ("udp", "raw", "udp-many")     # transports that may lose units: counted, not an error


def run(workloads: list[Workload], rounds: int, quick: bool, scale: float,
        progress: Callable[..., Any], log: Callable[[str], None],
        window: float = WINDOW) -> list[Result]:
    """Calibrate every (workload, implementation), then run `rounds` interleaved rounds; each
    round's order is rotated, so no implementation always runs first or last. `quick` only
    sets the probe counts (the windows are as long: quick means fewer rounds); `scale` shrinks
    the probes and `window` the windows, for the tests' tiny runs."""
    programs = sorted({w.c_program for w in workloads if w.c_program})
    c_binaries = build_c_programs(programs, log)
    plan = []
    for w in workloads:
        if w.transport == "raw" and not raw_sockets_allowed():
            log(f"{w.name}: left out: raw sockets need CAP_NET_RAW (root)")
            continue
        if w.c_client and w.c_program not in c_binaries:
            log(f"{w.name}: left out: its sender is the C program, which could not be built")
            continue
        impls = [i for i in w.implementations if installed(i, log)
                 and (not w.name.startswith("aio-") or not uses_uvloop(i)
                      or installed("uvloop", log))
                 and runnable(w, i, log)]
        impls += [i for i in ("c", *w.c_variants)
                  if w.c_program in c_binaries and runnable(w, i, log)]
        plan.append((w, impls))
    probe = {w.name: max(1, int((w.count_quick if quick else w.count_full) * scale))
             for w, _ in plan}
    counts: dict[tuple[str, str], int] = {}
    results = []
    calibrations = sum(len(impls) for _, impls in plan)
    with progress(total=(rounds + 1) * calibrations) as bar:
        for w, impls in plan:
            for impl in impls:
                counts[w.name, impl] = probe[w.name]
                if window > 0:  # (the tests' tiny runs skip the sizing)
                    bar.set_description(f"sizing {w.name}/{impl}")
                    counts[w.name, impl], _ = sized_run(
                        w, impl, probe[w.name], c_binaries, window
                    )
                bar.update(1)
        for r in range(rounds):
            for w, impls in plan:
                shift = r % len(impls)  # interleave: each round starts elsewhere
                for impl in impls[shift:] + impls[:shift]:
                    bar.set_description(f"{w.name}/{impl}")
                    count, (elapsed, received, cpu) = sized_run(
                        w, impl, counts[w.name, impl], c_binaries, window
                    )
                    counts[w.name, impl] = count
                    lost = count - received if w.transport in LOSSY else 0
                    results.append(
                        Result(w.name, impl, r, count, elapsed, w.rate(received, elapsed), lost,
                               cpu)
                    )
                    bar.update(1)
    return results


def sized_run(
    workload: Workload, implementation: str, count: int, c_binaries: dict[str, str], window: float
) -> tuple[int, Outcome]:
    """run_once with `count` units, grown and run again until the measured window lasts at
    least `window` seconds: (the count used, what that run measured)."""
    while True:
        outcome = run_once(workload, implementation, count, c_binaries)
        if outcome[0] >= window:
            return count, outcome
        count = grown(count, outcome[0], window)


def grown(count: int, elapsed: float, window: float) -> int:
    """The count whose window should last OVERSHOOT × window, judged from a run of `count`
    that took `elapsed`; at most 1000 times more per step (a probe of a few µs says little)."""
    factor = min(1000.0, OVERSHOOT * window / max(elapsed, 1e-9))
    return max(count + 1, int(count * factor))


def runnable(workload: Workload, implementation: str, log: Callable[[str], None]) -> bool:
    """Whether a row can run here; a row that cannot is left out, with the reason logged once:
    an engine named while csock.aio has no engine keyword, or io_uring unavailable (a kernel
    without it, kernel.io_uring_disabled, a seccomp filter) for a uring row or a C program
    that uses it."""
    uses_uring = "uring" in implementation or (
        is_c(implementation) and "uring" in str(workload.c_program))
    named_engine = workload.name.startswith("aio-") and implementation in ("csock-uring",
                                                                           "csock-epoll")
    datagram = workload.transport == "udp"
    if named_engine and not engine_keyword(datagram):
        where = "create_datagram_endpoint" if datagram else "the framed server"
        return leave_out(f"{workload.name}/{implementation}",
                         f"csock.aio's {where} has no engine keyword (no io_uring engine)", log)
    if uses_uring and not uring_available():
        return leave_out(f"{workload.name}/{implementation}",
                         "io_uring is unavailable here (csock.uring.available() is False)", log)
    return True


def leave_out(row: str, reason: str, log: Callable[[str], None]) -> bool:
    if reason not in _missing_logged:
        _missing_logged.add(reason)
        log(f"left out: {reason}: {row} and any other such row")
    return False


def engine_keyword(datagram: bool) -> bool:
    from .aio import engine_keyword_supported

    return engine_keyword_supported(datagram)


def uring_available() -> bool:
    import csock.uring

    return csock.uring.available()


def uses_uvloop(implementation: str) -> bool:
    """The asyncio implementations that run on uvloop (csock.aio's csock, csock-xK; uvloop)."""
    from .aio import flavour

    return flavour(implementation)[1] == "uvloop"


def raw_sockets_allowed() -> bool:
    try:
        socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW).close()
    except PermissionError:
        return False
    return True


_OPTIONAL = {"dpkt": "dpkt", "scapy": "scapy", "uvloop": "uvloop"}
_missing_logged: set[str] = set()


def installed(implementation: str, log: Callable[[str], None]) -> bool:
    """Optional comparison libraries (dpkt, scapy, uvloop) run only when installed."""
    module = _OPTIONAL.get(implementation)
    if module is None:
        return True
    try:
        __import__(module)
    except ImportError:
        if module not in _missing_logged:
            _missing_logged.add(module)
            log(f"{module} is not installed: its column is left out (pip install {module})")
        return False
    return True


def per_round(results: list[Result]) -> dict[tuple[str, str], list[float]]:
    """Each (workload, implementation)'s rates, in round order."""
    grouped: dict[tuple[str, str], list[float]] = {}
    for res in sorted(results, key=lambda r: r.round):
        grouped.setdefault((res.workload, res.implementation), []).append(res.rate)
    return grouped


def medians(results: list[Result]) -> dict[tuple[str, str], float]:
    return {key: statistics.median(rates) for key, rates in per_round(results).items()}
