"""API §1 proof: CPython's own test suites pass with csock substituted for `socket`, both ways
(the stdlib module's attributes replaced; `sys.modules["socket"]` replaced), every test they
pass on the stdlib in the same run, apart from the differences KNOWN_DIFFERENCES names.

Here the fast subset (test_socket's core classes, test_selectors, asyncio's sock_* calls);
the whole set is `python -m tests.cpython_conformance --all`, its own step in .ci/run.
tests/cpython_conformance.py runs the suites (two processes at a time) and compares."""
from __future__ import annotations

import json
import textwrap

import pytest

from tests import cpython_conformance as conformance


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    pytest.importorskip("test.test_socket", reason="CPython's test package is not installed")
    return conformance.compare(conformance.FAST_SUITES,
                               workdir=tmp_path_factory.mktemp("conformance"))


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_the_stdlib_run_ran_the_subset(report):
    stdlib = report["outcomes"]["stdlib"]
    passed = {
        suite: sum(o == "pass" for o in outcomes.values()) for suite, outcomes in stdlib.items()
    }
    assert passed["test_socket_core"] > 200, passed
    assert passed["test_selectors"] > 50, passed
    assert passed["test_asyncio.test_sock_lowlevel"] >= 25, passed    # 30 tests on 3.10, 39 on 3.11


@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.parametrize("mode", conformance.CSOCK_MODES)
def test_every_stdlib_pass_passes_with_csock(report, mode):
    new = {t: outcome for suite in report["differences"][mode].values()
           for t, outcome in suite.items() if conformance.known(mode, t, outcome) is None}
    assert not new, conformance.summary(report)[-8000:]


# --- the runner and the comparison themselves ------------------------------------------------

def test_a_difference_is_a_stdlib_pass_that_does_not_pass_with_csock():
    stdlib = {"a": "pass", "b": "pass", "c": "pass",
              "d": "skip: no IPv6", "e": "fail: x", "f": "pass"}
    other = {"a": "pass", "b": "fail: boom", "c": "skip: why", "d": "error: y", "e": "pass"}
    assert conformance.differences(stdlib, other) == {"b": "fail: boom",
                                                      "c": "skip: why", "f": "not run"}


def test_known_differences_match_by_mode_id_pattern_and_outcome(monkeypatch):
    monkeypatch.setattr(conformance, "KNOWN_DIFFERENCES", {
        ("patch", "*", "RecursionError"): "recursion",
        ("*", "test.test_socket.*.testRecv0", ""): "recv(0)",
    })
    assert conformance.known("patch", "test.x.T.t",
                             "error: RecursionError: deep") == ("patch", "*", "RecursionError")
    assert conformance.known("module", "test.x.T.t", "error: RecursionError: deep") is None
    assert conformance.known("patch", "test.x.T.t", "fail: AssertionError") is None
    assert conformance.known("module", "test.test_socket.A.testRecv0", "fail") == (
        "*",
        "test.test_socket.*.testRecv0",
        "",
    )


def test_a_hanging_test_is_an_error_and_the_suite_goes_on(tmp_path, monkeypatch):
    """The runner stops a test that outlives PER_TEST_TIMEOUT, records it, and runs the rest
    in a new process; a crash is recorded the same way."""
    (tmp_path / "fake_suite.py").write_text(textwrap.dedent("""
        import os, time, unittest
        class T(unittest.TestCase):
            def test_1_passes(self): pass
            def test_2_hangs(self): time.sleep(60)
            def test_3_fails(self): self.fail("no")
            def test_4_crashes(self): os.abort()
            def test_5_passes(self): pass
    """))
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    monkeypatch.setattr(conformance, "PER_TEST_TIMEOUT", 2)
    outcomes = conformance.run_suite("stdlib", "fake", ["fake_suite"], tmp_path)
    assert [outcomes[f"fake_suite.T.{name}"].split(":")[0] for name in
            ("test_1_passes", "test_2_hangs", "test_3_fails", "test_4_crashes", "test_5_passes")] \
        == ["pass", "error", "fail", "error", "pass"]
    assert "hung or crashed" in outcomes["fake_suite.T.test_2_hangs"]


def test_a_recheck_tells_the_machine_and_timing_apart_from_csock(tmp_path, monkeypatch):
    """Rechecked differences: one that passes alone is flaky, and so is one the stdlib no
    longer passes either (the machine changed: here a file went away); one that fails only
    with csock substituted stays a difference."""
    (tmp_path / "fake_env_suite.py").write_text(textwrap.dedent("""
        import os, socket, unittest
        class T(unittest.TestCase):
            def test_machine(self): self.assertTrue(os.path.exists(os.environ["FAKE_MARK"]))
            def test_timing(self): pass
            def test_csock(self): self.assertEqual(socket.__name__, "socket")
    """))
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    monkeypatch.setenv("FAKE_MARK", str(tmp_path / "gone"))
    tests = {f"fake_env_suite.T.test_{name}" for name in ("machine", "timing", "csock")}
    flaky = conformance.recheck_alone("module", "fake", ["fake_env_suite"], tmp_path, tests)
    assert flaky == {"fake_env_suite.T.test_machine", "fake_env_suite.T.test_timing"}


def test_a_suite_that_loads_no_test_fails_the_run(tmp_path):
    with pytest.raises(RuntimeError, match="loaded no test"):
        conformance.run_suite("stdlib", "broken", ["test.test_socket.NoSuchTestClass"], tmp_path)


def test_the_records_of_a_process_that_died_say_which_test_it_died_in(tmp_path):
    path = tmp_path / "records.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in [
        {"planned": ["a", "b", "c"]}, {"start": "a"}, {"id": "a", "outcome": "pass"},
        {"start": "b"}]) + '\n{"id": "b", "outc')
    records = conformance.read_records(path)
    assert (
        records["outcomes"] == {"a": "pass"}
        and records["hung"] == ["b"]
        and not records["finished"]
    )
