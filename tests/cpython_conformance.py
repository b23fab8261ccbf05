"""Run CPython's own test suites on the stdlib `socket` and with csock substituted, and compare.

    python -m tests.cpython_conformance --all          # the whole set, both modes (CI's step)
    python -m tests.cpython_conformance                # the fast subset (the pytest file's set)
    python -m tests.cpython_conformance --suite test_selectors --modes module --keep DIR

csock is substituted two ways, the two ways programs do it:

- ``patch``: the stdlib module's attributes are replaced (``socket.socket = csock.socket``,
  ``socketpair``, ``create_connection``, ``create_server``, ``fromfd``), as monkey-patching
  libraries do;
- ``module``: ``sys.modules["socket"] = csock`` before the test modules (and ssl, asyncio, ...)
  import socket, so every ``socket.socket(...)`` in them makes a csock socket.

Each suite runs in its own subprocess per mode (two at a time: the machine has 2 CPUs), a
small unittest runner records each test id's outcome as one JSON line, and a test that passes on
the stdlib and does not pass (fails, errors, skips, hangs or is not run) with csock is a
difference. A new difference is re-run alone once before it counts (when a suite has only a
few), so a test that is merely timing-sensitive on a loaded machine does not fail the check; nor
does one that the stdlib, run again then too, no longer passes either (the machine changed: a
host name that stopped resolving). Both are reported as flaky.
Differences listed in KNOWN_DIFFERENCES (each naming its csock defect) are reported but do not
fail the check; any other difference does. The exit status is 1 on an unknown difference.

A test that hangs is stopped after PER_TEST_TIMEOUT seconds (faulthandler ends its process),
recorded as an error, and the suite goes on in a new process from the next test.
"""
from __future__ import annotations

import argparse
import concurrent.futures
import faulthandler
import fnmatch
import importlib
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
import types
import unittest
from pathlib import Path

MODES = ("stdlib", "patch", "module")
CSOCK_MODES = ("patch", "module")

# The names csock defines differently from the stdlib module, that patch mode replaces: the ones
# that return sockets. (csock's has_dualstack_ipv6 and _fallback_socketpair stay out: the
# stdlib's make their sockets with its module's socket, csock's once replaced. Every other name is
# the same object.)
PATCHED_NAMES = ("socket", "socketpair", "create_connection", "create_server", "fromfd")

ASYNCIO = ["sock_lowlevel", "sendfile", "streams", "server", "events", "unix_events",
           "base_events", "selector_events", "ssl", "sslproto"]

# Multiprocessing's connection tests live in test._test_multiprocessing; the modules that
# install them (test_multiprocessing_fork, ...) are not shipped by every Python build here, so
# the runner installs them itself (start method fork: the children inherit the substitution).
MP_CONNECTION = "multiprocessing_connection"
MP_CONNECTION_CLASSES = ("Connection", "Listener", "Poll", "OtherTest", "TestWait")

# suite name -> the unittest names it loads (a module absent from this Python is left out)
SUITES: dict[str, list[str]] = {
    "test_socket": ["test.test_socket"],
    "test_socketserver": ["test.test_socketserver"],
    "test_httplib": ["test.test_httplib"],
    "test_ssl": ["test.test_ssl"],
    "test_selectors": ["test.test_selectors"],
    "test_asyncio": [f"test.test_asyncio.test_{name}" for name in ASYNCIO],
    "test_ftplib": ["test.test_ftplib"],
    "test_smtplib": ["test.test_smtplib"],
    "test_logging": ["test.test_logging"],
    "test_xmlrpc": ["test.test_xmlrpc"],
    "test_wsgiref": ["test.test_wsgiref"],
    MP_CONNECTION: [MP_CONNECTION],
}

# The fast subset (tests/test_cpython_conformance.py, the README's test command and every
# Python's nox session): test_socket's core classes, test_selectors, asyncio's sock_* calls.
FAST_SUITES: dict[str, list[str]] = {
    "test_socket_core": [f"test.test_socket.{cls}" for cls in (
        "GeneralModuleTests", "BasicTCPTest", "BasicTCPTest2", "BasicUDPTest",
        "BasicSocketPairTest",
        "NonBlockingTCPTests", "FileObjectClassTestCase", "UnbufferedFileObjectClassTestCase",
        "NetworkConnectionNoServer", "NetworkConnectionAttributesTest", "TCPTimeoutTest",
        "UDPTimeoutTest", "ContextManagersTest", "InheritanceTest", "TestSocketSharing",
        "SendfileUsingSendTest", "SendfileUsingSendfileTest", "CreateServerTest",
        "CreateServerFunctionalTest", "TestUnixDomain", "SendmsgTCPTest", "RecvmsgTCPTest",
        "RecvmsgSCMRightsStreamTest")],
    "test_selectors": ["test.test_selectors"],
    "test_asyncio.test_sock_lowlevel": ["test.test_asyncio.test_sock_lowlevel"],
}

# Excluded from every run, with the reason (a substring of the test id -> why).
EXCLUDED = {
    # No vsock transport here: the stdlib's own run blocks forever in accept/connect.
    "VSOCK": "vsock tests hang with the stdlib on this machine (no vsock transport)",
}

# Differences known today, each naming the csock defect that causes it:
#     (mode or "*", test id or fnmatch pattern, text csock's outcome contains or "") -> defect
# The check reports them and stays green for them only; the integrator removes an entry when
# the fix for its defect lands (a run lists as "stale" the entries whose tests passed on the
# stdlib and no longer differ).
# An entry applies on every Python version.
KNOWN_DIFFERENCES: dict[tuple[str, str, str], str] = {}   # none left: every stdlib pass passes

# A stdlib pass's seconds per suite here (3.11), to start the longest first.
# (test_ftplib is early because its patch-mode run waits out a client timeout per test today.)
SECONDS = {"test_asyncio": 60, "test_ftplib": 50, "test_socket": 40, "test_ssl": 25,
           "test_logging": 20,
           "test_socket_core": 20, "test_selectors": 15, "test_socketserver": 10, MP_CONNECTION: 10}

# A suite's new differences are re-run alone when there are this many at most (more are a
# defect, not flakiness, and re-running tests that time out would double the run).
RECHECK_AT_MOST = 10

PER_TEST_TIMEOUT = 90       # seconds; CPython's slowest tests here take about 20
SUITE_TIMEOUT = 1800        # seconds for one suite's process, a backstop behind the per-test one


# --- the child: run one suite in one mode, one JSON line per event ---------------------------

def substitute(mode: str) -> None:
    """Make `socket` csock the way `mode` says (nothing for the stdlib)."""
    if mode == "stdlib":
        return
    import csock
    if mode == "module":
        sys.modules["socket"] = csock
    elif mode == "patch":
        import socket
        for name in PATCHED_NAMES:
            setattr(socket, name, getattr(csock, name))
    else:
        raise ValueError(f"unknown mode {mode!r}")


def multiprocessing_connection_module() -> types.ModuleType:
    """A module holding multiprocessing's connection tests for the fork start method."""
    from test import _test_multiprocessing
    module = types.ModuleType(MP_CONNECTION)
    sys.modules[MP_CONNECTION] = module      # unittest finds setUpModule through sys.modules
    module.__dict__["__name__"] = MP_CONNECTION
    _test_multiprocessing.install_tests_in_module_dict(module.__dict__, "fork")
    return module


def load(names: list[str]) -> list[unittest.TestCase]:
    loader = unittest.TestLoader()
    tests: list[unittest.TestCase] = []
    for name in names:
        if name == MP_CONNECTION:
            module = multiprocessing_connection_module()
            found = [t for t in flatten(loader.loadTestsFromModule(module))
                     if any(part in type(t).__name__ for part in MP_CONNECTION_CLASSES)]
        else:
            if not module_exists(name):     # e.g. test.test_asyncio.test_ssl on 3.10
                continue
            found = list(flatten(loader.loadTestsFromName(name)))
            broken = [t for t in found if type(t).__name__ == "_FailedTest"]
            if broken:   # a name that does not load must not pass as a test failing both ways
                raise ImportError(f"{name} does not load: {broken[0]._exception}")
        tests += [t for t in found if not excluded(t.id())]
    return tests


def module_exists(name: str) -> bool:
    """Whether `name` (a module, or a module's attribute such as a test class) is in this
    Python's test package."""
    while name:
        try:
            return importlib.util.find_spec(name) is not None
        except ImportError:     # the parent is a module, not a package: name is an attribute
            name = name.rpartition(".")[0]
    return False


def flatten(suite):
    for item in suite:
        if isinstance(item, unittest.TestSuite):
            yield from flatten(item)
        else:
            yield item


def excluded(test_id: str) -> bool:
    return any(pattern in test_id for pattern in EXCLUDED)


class Recorder(unittest.TestResult):
    """Writes {"start": id} before each test and {"id": id, "outcome": ...} after it, flushed,
    so a process that dies in a test leaves a record of which one."""

    def __init__(self, stream, timeout: float) -> None:
        super().__init__()
        self.stream = stream
        self.timeout = timeout

    def write(self, **record) -> None:
        self.stream.write(json.dumps(record) + "\n")
        self.stream.flush()

    def startTest(self, test):
        super().startTest(test)
        faulthandler.dump_traceback_later(self.timeout, exit=True)
        self.write(start=test.id())

    def stopTest(self, test):
        super().stopTest(test)
        # re-armed, not cancelled: a class or module fixture that hangs is stopped too
        faulthandler.dump_traceback_later(self.timeout, exit=True)

    def outcome(self, test, outcome: str) -> None:
        self.write(id=getattr(test, "id", lambda: str(test))(), outcome=outcome)

    def addSuccess(self, test):
        self.outcome(test, "pass")

    def addFailure(self, test, err):
        self.outcome(test, "fail: " + self._exc_info_to_string(err, test)[-1500:])

    def addError(self, test, err):
        self.outcome(test, "error: " + self._exc_info_to_string(err, test)[-1500:])

    def addSkip(self, test, reason):
        self.outcome(test, f"skip: {reason}")

    def addExpectedFailure(self, test, err):
        self.outcome(test, "pass")

    def addUnexpectedSuccess(self, test):
        self.outcome(test, "fail: unexpected success")

    def addSubTest(self, test, subtest, err):
        if err is not None:   # a failing subtest fails its test
            kind = "fail" if issubclass(err[0], test.failureException) else "error"
            self.outcome(test,
                         f"{kind}: {subtest.id()}: " + self._exc_info_to_string(err, test)[-1500:])


def child(mode: str, out: Path, names: list[str], only: set[str] | None, timeout: float) -> None:
    """Run the tests of `names` not yet recorded in `out`, appending to it."""
    substitute(mode)
    records = read_records(out)
    done = set(records["outcomes"]) | set(records["hung"])
    tests = load(names)
    if only is not None:
        tests = [t for t in tests if t.id() in only]
    with open(out, "a") as stream:
        recorder = Recorder(stream, timeout)
        if not records["planned"]:
            recorder.write(planned=[t.id() for t in tests])
        todo = [t for t in tests if t.id() not in done]
        faulthandler.dump_traceback_later(timeout, exit=True)
        unittest.TestSuite(todo).run(recorder)
        faulthandler.cancel_dump_traceback_later()
        recorder.write(finished=True)


def read_records(path: Path) -> dict:
    """planned ids, outcomes {id: outcome}, hung ids (started, never finished), finished flag.

    A test whose outcome is recorded twice (a failing subtest, then the test's own result)
    keeps the worst one."""
    records: dict = {"planned": [], "outcomes": {}, "hung": [], "finished": False}
    if not path.exists():
        return records
    started: list[str] = []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except ValueError:      # a line cut short by the process dying
            continue
        if "planned" in record:
            records["planned"] = record["planned"]
        elif "start" in record:
            started.append(record["start"])
        elif "id" in record:
            previous = records["outcomes"].get(record["id"])
            if previous is None or previous == "pass" or previous.startswith("skip"):
                records["outcomes"][record["id"]] = record["outcome"]
        elif "hung" in record:
            started.append(record["hung"])
        elif record.get("finished"):
            records["finished"] = True
    records["hung"] = list(dict.fromkeys(t for t in started if t not in records["outcomes"]))
    return records


# --- the parent: run the children, compare -------------------------------------------------

def run_suite(mode: str, suite: str, names: list[str], workdir: Path,
              only: set[str] | None = None, tag: str = "") -> dict[str, str]:
    """Run one suite in one mode in child processes until every planned test has an outcome:
    a child that dies in a test (hang or crash) is followed by another that starts after it."""
    out = workdir / f"{suite}.{mode}{tag}.jsonl"
    out.unlink(missing_ok=True)
    root = str(Path(__file__).resolve().parent.parent)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [root] + os.environ.get("PYTHONPATH", "").split(os.pathsep)))
    only_file = None
    if only is not None:
        only_file = workdir / f"{suite}.{mode}{tag}.only.json"
        only_file.write_text(json.dumps(sorted(only)))
    cwd = workdir / f"cwd.{suite}.{mode}{tag}"   # CPython's tests write files in the cwd
    cwd.mkdir(exist_ok=True)
    log = workdir / f"{suite}.{mode}{tag}.log"
    deadline = time.monotonic() + SUITE_TIMEOUT
    while True:
        before = read_records(out)
        cmd = [sys.executable, "-X", "faulthandler", str(Path(__file__).resolve()),
               "--child", mode, str(out), "--timeout", str(PER_TEST_TIMEOUT),
               *(["--only", str(only_file)] if only_file else []), *names]
        with open(log, "a") as log_stream:
            try:
                subprocess.run(cmd, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=log_stream,
                               stderr=subprocess.STDOUT,
                               timeout=max(1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
        records = read_records(out)
        if records["finished"] or time.monotonic() > deadline:
            break
        hung = [t for t in records["hung"] if t not in before["hung"]]
        if not hung:
            # died outside a test (a fixture, the import): blame the first test left, go on
            left = [
                t
                for t in records["planned"]
                if t not in records["outcomes"] and t not in records["hung"]
            ]
            if not left:
                break
            hung = left[:1]
            with open(out, "a") as stream:
                stream.write(json.dumps({"hung": hung[0]}) + "\n")
    if not records["planned"]:
        raise RuntimeError(f"{suite} ({mode}) loaded no test:\n" + log.read_text()[-3000:])
    outcomes = dict(records["outcomes"])
    for test_id in records["hung"]:
        outcomes.setdefault(test_id, f"error: hung or crashed the process (see {log.name})")
    for test_id in records["planned"]:
        outcomes.setdefault(test_id, "not run")
    return outcomes


def known(mode: str, test_id: str, outcome: str) -> tuple[str, str, str] | None:
    """The KNOWN_DIFFERENCES entry that explains this difference, if one does."""
    for key in KNOWN_DIFFERENCES:
        entry_mode, pattern, text = key
        if entry_mode in ("*", mode) and fnmatch.fnmatchcase(test_id, pattern) and text in outcome:
            return key
    return None


def differences(stdlib: dict[str, str], other: dict[str, str]) -> dict[str, str]:
    """Tests that pass on the stdlib and do not pass with csock: id -> csock's outcome."""
    return {t: other.get(t, "not run") for t, outcome in stdlib.items()
            if outcome == "pass" and other.get(t) != "pass"}


def compare(suites: dict[str, list[str]], modes=CSOCK_MODES, workdir: Path | None = None,
            jobs: int = 2, recheck: bool = True, log=print) -> dict:
    """Run `suites` on the stdlib and in `modes`, `jobs` processes at a time; return a report:
    {"outcomes": {mode: {suite: {id: outcome}}}, "differences": {mode: {suite: {id: outcome}}},
     "unknown": [...], "known": [...], "flaky": [...], "stale": [...], "seconds": float}."""
    workdir = Path(workdir or tempfile.mkdtemp(prefix="conformance-"))
    workdir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    outcomes: dict[str, dict[str, dict[str, str]]] = {m: {} for m in ("stdlib", *modes)}
    # the longest suites first, so the two workers finish together
    order = sorted(suites, key=lambda s: -SECONDS.get(s, 10))
    jobs_list = [(mode, suite) for suite in order for mode in ("stdlib", *modes)]
    with concurrent.futures.ThreadPoolExecutor(max_workers=jobs) as pool:
        futures = {pool.submit(run_suite, mode, suite, suites[suite], workdir): (mode, suite)
                   for mode, suite in jobs_list}
        for future in concurrent.futures.as_completed(futures):
            mode, suite = futures[future]
            outcomes[mode][suite] = future.result()
            counts = count(outcomes[mode][suite])
            log(f"  {suite:34} {mode:7} {counts}  ({time.monotonic() - started:.0f} s)")

    report = {"outcomes": outcomes, "differences": {}, "unknown": [], "known": [], "flaky": [],
              "stale": [], "python": sys.version.split()[0]}
    matched: set[tuple[str, str, str]] = set()
    for mode in modes:
        report["differences"][mode] = {}
        for suite in suites:
            found = differences(outcomes["stdlib"][suite], outcomes[mode][suite])
            unknown = {t for t, outcome in found.items() if known(mode, t, outcome) is None}
            if recheck and 0 < len(unknown) <= RECHECK_AT_MOST:
                for t in recheck_alone(mode, suite, suites[suite], workdir, unknown):
                    report["flaky"].append(f"{mode}: {t}")
                    del found[t]
            report["differences"][mode][suite] = found
            for t, outcome in sorted(found.items()):
                entry = known(mode, t, outcome)
                if entry is None:
                    report["unknown"].append(f"{mode}: {t}")
                else:
                    report["known"].append(f"{mode}: {t}")
                    matched.add(entry)
    # an entry is stale when its tests ran here and none of them differs any more
    passed_on_stdlib = [
        t for suite in suites for t, o in outcomes["stdlib"][suite].items() if o == "pass"
    ]
    report["stale"] = [list(key) for key in KNOWN_DIFFERENCES if key not in matched
                       and (key[0] == "*" or key[0] in modes)
                       and any(fnmatch.fnmatchcase(t, key[1]) for t in passed_on_stdlib)]
    report["seconds"] = round(time.monotonic() - started, 1)
    return report


def recheck_alone(mode: str, suite: str, names: list[str], workdir: Path,
                  tests: set[str]) -> set[str]:
    """Which of tests, differences found in a suite's run, are not csock's: each passes when
    run again alone in a fresh process (merely timing-sensitive on a loaded machine), or the
    stdlib does not pass it either when it is run again now (the machine changed meanwhile:
    a host name that stopped resolving, say)."""
    again = run_suite(mode, suite, names, workdir, only=tests, tag=".recheck")
    flaky = {t for t in tests if again.get(t) == "pass"}
    left = tests - flaky
    if left:
        stdlib_now = run_suite("stdlib", suite, names, workdir, only=left, tag=".recheck")
        flaky |= {t for t in left if stdlib_now.get(t) != "pass"}
    return flaky


def count(outcomes: dict[str, str]) -> str:
    kinds = [o.split(":")[0] for o in outcomes.values()]
    return " ".join(
        f"{k} {kinds.count(k)}" for k in ("pass", "fail", "error", "skip", "not run") if k in kinds
    )


def summary(report: dict) -> str:
    """One line per difference (NEW or known, with the defect), the flaky and stale ones, totals."""
    lines = []
    for mode, by_suite in report["differences"].items():
        for found in by_suite.values():
            for t, outcome in sorted(found.items()):
                entry = known(mode, t, outcome)
                last = outcome.strip().splitlines()[-1][:200] if outcome.strip() else outcome
                lines.append(f"{'known' if entry else 'NEW':5} {mode:6} {t}: {last}")
    for key, defect in KNOWN_DIFFERENCES.items():
        lines.append(f"known difference {key}: {defect}")
    for t in report["flaky"]:
        lines.append(f"flaky (passed alone, or the stdlib fails it now too) {t}")
    for key in report["stale"]:
        lines.append(f"stale KNOWN_DIFFERENCES entry (matched nothing in this run): {tuple(key)}")
    lines.append(f"python {report['python']}: {len(report['unknown'])} new differences, "
                 f"{len(report['known'])} known, {len(report['flaky'])} flaky, "
                 f"{len(report['stale'])} stale entries, {report['seconds']} s")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--all", action="store_true",
                        help="the whole set (default: the fast subset)")
    parser.add_argument("--suite", action="append", help="only this suite (repeatable)")
    parser.add_argument("--modes", nargs="+", default=list(CSOCK_MODES), choices=CSOCK_MODES)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--keep", type=Path, help="keep the per-suite records and logs here")
    parser.add_argument("--report", type=Path, help="write the JSON report here")
    parser.add_argument("--no-recheck", action="store_true")
    parser.add_argument("--child", nargs=2, metavar=("MODE", "OUT"), help=argparse.SUPPRESS)
    parser.add_argument("--only", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--timeout", type=float, default=PER_TEST_TIMEOUT, help=argparse.SUPPRESS)
    parser.add_argument("names", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        only = set(json.loads(args.only.read_text())) if args.only else None
        child(args.child[0], Path(args.child[1]), args.names, only, args.timeout)
        return 0
    suites = dict(SUITES if args.all else FAST_SUITES)
    if args.suite:
        everything = {**SUITES, **FAST_SUITES}
        suites = {s: everything[s] for s in args.suite}
    with tempfile.TemporaryDirectory(prefix="conformance-") as tmp:
        report = compare(suites, tuple(args.modes), args.keep or Path(tmp), args.jobs,
                         recheck=not args.no_recheck)
    print(summary(report))
    if args.report:
        args.report.write_text(json.dumps(report, indent=1, sort_keys=True))
    return 1 if report["unknown"] else 0


if __name__ == "__main__":
    sys.exit(main())
